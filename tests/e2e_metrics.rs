//! End-to-end tests of `/_berth/metrics`: a real Prometheus server (the Debian package's
//! binary, started here on a free loopback port) scrapes berth with the configured bearer
//! token, and the request count, the container-state gauge and the wake phases of a real
//! container app are queried back through Prometheus's HTTP API. Without a token only
//! loopback clients are served (the 403 for others is a unit test: tests reach berth only on
//! 127.0.0.1); with one, a request without it gets 401.
//!
//! The Prometheus test is skipped when `prometheus` is not installed, unless
//! `BERTH_TEST_REQUIRE_PROMETHEUS` is set (as `.ci/run` does).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const TOKEN_ENV: &str = "BERTH_TEST_METRICS_TOKEN";

/// A Prometheus server with its own config and data folder, killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (host:port) every second, or `None` when the binary
    /// is missing and not required.
    fn start(target: &str, token: &str) -> Option<Prometheus> {
        let binary = std::env::var("BERTH_TEST_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        if Command::new(&binary).arg("--version").output().is_err() {
            assert!(
                std::env::var_os("BERTH_TEST_REQUIRE_PROMETHEUS").is_none(),
                "prometheus is not installed but BERTH_TEST_REQUIRE_PROMETHEUS is set"
            );
            eprintln!("skipped: prometheus is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: berth\n    metrics_path: /_berth/metrics\n\
                 \x20   authorization:\n      credentials: {token}\n\
                 \x20   static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn prometheus");
        Some(Prometheus { child, port, _dir: dir })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The value of an instant query's single result, if it has exactly one.
    async fn query(&self, client: &reqwest::Client, promql: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let resp = client.get(&url).query(&[("query", promql)]).send().await.ok()?;
        let body: Value = resp.json().await.ok()?;
        let result = body["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `promql` has a single result equal to `want`; returns the last value seen.
    async fn wait_for(&self, client: &reqwest::Client, promql: &str, want: f64) -> Option<f64> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut last = None;
        while std::time::Instant::now() < deadline {
            last = self.query(client, promql).await;
            if last == Some(want) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        last
    }
}

/// The value of one sample line (`name{labels} value`) of a text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

#[tokio::test]
async fn prometheus_scrapes_berth_with_the_token_and_reads_the_metrics_back() {
    let token = random_hex(24);
    let mut b = Berth::configure(&format!("\n[metrics]\ntoken_env = \"{TOKEN_ENV}\"\n"));
    b.start_server_with_env(&[(TOKEN_ENV, &token)]);
    let id = b.create_image_app("nginx", 80, "/web", &[]);
    let client = b.client(&["localhost"]);
    for _ in 0..3 {
        let got = get_settled(&client, &b.http_url("localhost", "/web/"), Duration::from_secs(60)).await;
        let got = got.unwrap_or_else(|e| b.fail(e));
        b.ensure(got.status == 200, format!("GET /web/: {}", got.status));
    }
    let container = b.single_container(&id);
    b.ensure(container_running(&container), "the container runs");

    let metrics_url = b.http_url("localhost", "/_berth/metrics");
    let refused = get(&client, &metrics_url, &[]).await.unwrap();
    assert_eq!(refused.status, 401, "no token: {}", refused.body);
    assert!(!refused.body.contains("berth_http_requests"), "{}", refused.body);
    let wrong = get(&client, &metrics_url, &[("authorization", "Bearer nope")]).await.unwrap();
    assert_eq!(wrong.status, 401);
    let bearer = format!("Bearer {token}");
    let text = get(&client, &metrics_url, &[("authorization", &bearer)]).await.unwrap();
    assert_eq!(text.status, 200, "{}", text.body);
    let twoxx = r#"berth_http_requests_total{app="/web",variant="prod",class="2xx"}"#;
    assert_eq!(sample(&text.body, twoxx), Some(3.0), "{}", text.body);
    assert_eq!(sample(&text.body, r#"berth_app_containers{state="running"}"#), Some(1.0), "{}", text.body);
    for phase in ["create", "start", "ready"] {
        let count = format!("berth_wake_phase_duration_seconds_count{{phase=\"{phase}\"}}");
        assert!(sample(&text.body, &count).is_some_and(|n| n >= 1.0), "no {phase} phase: {}", text.body);
    }
    let bytes = sample(&text.body, r#"berth_http_response_bytes_total{app="/web",variant="prod"}"#);
    assert!(bytes.is_some_and(|n| n > 0.0), "{}", text.body);

    let Some(prometheus) = Prometheus::start(&format!("127.0.0.1:{}", b.http_port), &token) else { return };
    let api = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
    let q = r#"berth_http_requests_total{app="/web",variant="prod",class="2xx"}"#;
    let seen = prometheus.wait_for(&api, q, 3.0).await;
    assert_eq!(seen, Some(3.0), "prometheus log:\n{}\n{}", prometheus.log(), b.diag());
    // One more request shows up in the next scrape.
    get_settled(&client, &b.http_url("localhost", "/web/"), Duration::from_secs(60)).await.unwrap();
    assert_eq!(prometheus.wait_for(&api, q, 4.0).await, Some(4.0), "{}", prometheus.log());
    let running = r#"berth_app_containers{state="running"}"#;
    assert_eq!(prometheus.wait_for(&api, running, 1.0).await, Some(1.0), "{}", prometheus.log());
    let starts = r#"berth_wake_phase_duration_seconds_count{phase="start"}"#;
    assert_eq!(prometheus.wait_for(&api, starts, 1.0).await, Some(1.0), "{}", prometheus.log());
    b.cli_ok(&["app", "delete", "/web"]);
}

#[tokio::test]
async fn without_a_token_loopback_clients_are_served_and_errors_are_counted() {
    let b = Berth::start();
    b.cli_ok(&["app", "create", "--spec", "proxy", "--param", "url=http://127.0.0.1:9", "-", "/down"]);
    let client = b.client(&["localhost"]);
    let got = get(&client, &b.http_url("localhost", "/down/"), &[]).await.unwrap();
    assert_eq!(got.status, 502, "{}", got.body);
    let text = get(&client, &b.http_url("localhost", "/_berth/metrics"), &[]).await.unwrap();
    assert_eq!(text.status, 200, "{}", text.body);
    assert!(text.content_type.starts_with("application/openmetrics-text"), "{}", text.content_type);
    let fivexx = r#"berth_http_requests_total{app="/down",variant="prod",class="5xx"}"#;
    assert_eq!(sample(&text.body, fivexx), Some(1.0), "{}", text.body);
    assert_eq!(sample(&text.body, r#"berth_http_requests_total{app="/down",variant="prod",class="2xx"}"#), Some(0.0));
}
