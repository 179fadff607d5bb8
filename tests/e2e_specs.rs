//! End-to-end tests of every built-in spec that builds: the sample app in
//! `tests/fixtures/apps/<spec>` is built by berth and answers through berth both at a path
//! (`/<name>`) and at a domain root (`<name>.localhost:/`), with the fixture's marker.
//! Streamlit is exercised over its WebSocket, Gradio through its SSE queue API.
//!
//! One server per test; the two apps of a test share one image (same source, same spec), so
//! it is built once. Images of the fixtures are left in place, so later runs reuse them.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Bound for a first request that builds a big image (streamlit, gradio) from scratch.
const BIG_BUILD: Duration = Duration::from_secs(1500);
const CONFIG: &str = "start_timeout_secs = 1500";

/// Creates the fixture app of `spec` at `/<name>` and at `<name>.localhost:/`; checks both
/// share one image name. Returns (path app, domain app, domain host).
fn create_pair(b: &Berth, spec: &str, name: &str, extra: &[&str]) -> (String, String, String) {
    let src = fixture_app(spec);
    let (path_app, host) = (format!("/{name}"), format!("{name}.localhost"));
    let domain_app = format!("{host}:/");
    for app in [&path_app, &domain_app] {
        let mut args = vec!["app", "create", "--spec", spec];
        args.extend_from_slice(extra);
        args.push(src.to_str().unwrap());
        args.push(app);
        b.cli_ok(&args);
    }
    let (i1, i2) = (b.app_image(&path_app), b.app_image(&domain_app));
    b.ensure(
        i1 == i2 && i1.starts_with("berth-build:"),
        format!("{spec}: the path and domain apps should share one berth-build image: {i1} vs {i2}"),
    );
    (path_app, domain_app, host)
}

/// After both apps served: the image was built at most once (not at all if an earlier run
/// left it), and the second app built nothing.
fn assert_built_once(b: &Berth, spec: &str, second_app: &str, image: &str) {
    let builds = b.builds_logged(image);
    b.ensure(builds <= 1, format!("{spec}: {image} was built {builds} times by one server"));
    let out = b.build_log(second_app);
    b.ensure(
        !out.ok() && out.stderr.contains("has no build output"),
        format!("{spec}: the second app ({second_app}) should not have built anything: {out}"),
    );
}

/// GETs `url` (waiting through the build) and checks 200, the marker and `fragments`.
async fn expect_body(b: &Berth, client: &reqwest::Client, url: &str, marker: &str, fragments: &[&str]) -> Got {
    let g = get_until_marker(client, url, marker, BIG_BUILD).await;
    match g {
        Ok(g) if g.status == 200 && g.body.contains(marker) && fragments.iter().all(|f| g.body.contains(f)) => g,
        other => b.fail(format!("GET {url}: expected 200 with {marker} and {fragments:?}, got {other:?}")),
    }
}

/// The simple specs: one GET at the path app and one at the domain app.
async fn simple_spec(
    spec: &str,
    name: &str,
    extra: &[&str],
    sub: &str,
    marker: &str,
    at_path: &[&str],
    at_domain: &[&str],
) {
    let t0 = Instant::now();
    let b = Berth::start_with(CONFIG);
    let (path_app, domain_app, host) = create_pair(&b, spec, name, extra);
    let image = b.app_image(&path_app);
    let client = slow_client(&[&host], BIG_BUILD);
    let url = b.http_url("localhost", &format!("{path_app}{sub}"));
    expect_body(&b, &client, &url, marker, at_path).await;
    let t_path = t0.elapsed();
    // The domain app over HTTPS (same image: nothing to build).
    let url = b.https_url(&host, sub);
    expect_body(&b, &client, &url, marker, at_domain).await;
    assert_built_once(&b, spec, &domain_app, &image);
    for app in [&path_app, &domain_app] {
        let st = b.app_state(app);
        b.ensure(st == "running", format!("{spec}: {app} should be running, is {st}"));
    }
    eprintln!(
        "TIMING spec {spec}: {:.1}s (first app served after {:.1}s)",
        t0.elapsed().as_secs_f64(),
        t_path.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_container() {
    simple_spec(
        "container",
        "spcontainer",
        &[],
        "/x/y",
        "berth-fixture-container",
        &["path=/x/y", "app_path=/spcontainer\n"],
        &["path=/x/y", "app_path=\n"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_python_wsgi() {
    // strip_app = false: gunicorn splits SCRIPT_NAME (the app path) from PATH_INFO itself.
    simple_spec(
        "python-wsgi",
        "spwsgi",
        &[],
        "/x/y",
        "berth-fixture-wsgi",
        &["script_name=/spwsgi\n", "path_info=/x/y\n"],
        &["script_name=\n", "path_info=/x/y\n"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_python_asgi() {
    simple_spec(
        "python-asgi",
        "spasgi",
        &[],
        "/x/y",
        "berth-fixture-asgi",
        &["root_path=/spasgi\n", "route=/x/y\n"],
        &["root_path=\n", "route=/x/y\n"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_python_flask() {
    simple_spec("python-flask", "spflask", &[], "/x/y", "berth-fixture-flask", &["path=/x/y\n"], &["path=/x/y\n"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_python_fasthtml() {
    simple_spec("python-fasthtml", "spfasthtml", &[], "/plain", "berth-fixture-fasthtml", &[], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_python_fasthtml_page() {
    // The full page (not just the plain route) at the root of both apps.
    simple_spec("python-fasthtml", "spfasthtmlpage", &[], "/", "berth-fixture-fasthtml", &["<title>"], &["<title>"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_go() {
    simple_spec(
        "go",
        "spgo",
        &["--param", "port=8080", "--param", "APP_ARGS=-addr 0.0.0.0:8080"],
        "/x/y",
        "berth-fixture-go",
        &["path=/x/y\n", "app_path=/spgo\n"],
        &["path=/x/y\n", "app_path=\n"],
    )
    .await;
}

/// Opens `<prefix>/_stcore/stream` through berth (HTTP port, Host `host`), expects 101, sends
/// the rerun BackMsg and reads until a message carries `marker`.
async fn streamlit_ws(b: &Berth, host: &str, prefix: &str, marker: &str) {
    let ws_url = format!("ws://{host}:{}{prefix}/_stcore/stream", b.http_port);
    let req = ws_url.as_str().into_client_request().expect("ws request");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", b.http_port)).await.expect("connect to berth");
    let (mut ws, resp) = match tokio_tungstenite::client_async(req, tcp).await {
        Ok(x) => x,
        Err(e) => b.fail(format!("WebSocket handshake to {ws_url} through berth failed: {e:?}")),
    };
    b.ensure(resp.status().as_u16() == 101, format!("{ws_url}: handshake status {}", resp.status()));
    if let Err(e) = ws.send(Message::Binary(vec![0x5a, 0x00])).await {
        b.fail(format!("{ws_url}: sending the rerun message failed: {e:?}"));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut seen = 0usize;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => {
                seen += 1;
                if data.windows(marker.len()).any(|w| w == marker.as_bytes()) {
                    break;
                }
            }
            Ok(Some(Ok(Message::Close(c)))) => b.fail(format!("{ws_url}: closed before the marker: {c:?}")),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => b.fail(format!("{ws_url}: error before the marker: {e:?}")),
            Ok(None) => b.fail(format!("{ws_url}: stream ended before the marker")),
            Err(_) => b.fail(format!("{ws_url}: no message with {marker} within 30 s ({seen} binary messages)")),
        }
    }
    let _ = ws.close(None).await;
}

async fn streamlit_spec(spec: &str, name: &str, marker: &str) {
    let t0 = Instant::now();
    let b = Berth::start_with(CONFIG);
    let (path_app, domain_app, host) = create_pair(&b, spec, name, &[]);
    let image = b.app_image(&path_app);
    let client = slow_client(&[&host], BIG_BUILD);
    // strip_app = false: streamlit serves under its base path itself.
    expect_body(&b, &client, &b.http_url("localhost", &format!("{path_app}/_stcore/health")), "ok", &[]).await;
    let t_path = t0.elapsed();
    expect_body(&b, &client, &b.http_url("localhost", &format!("{path_app}/")), "<title>Streamlit</title>", &[]).await;
    streamlit_ws(&b, "localhost", &path_app, marker).await;

    expect_body(&b, &client, &b.http_url(&host, "/_stcore/health"), "ok", &[]).await;
    expect_body(&b, &client, &b.https_url(&host, "/"), "<title>Streamlit</title>", &[]).await;
    streamlit_ws(&b, &host, "", marker).await;
    assert_built_once(&b, spec, &domain_app, &image);
    eprintln!(
        "TIMING spec {spec}: {:.1}s (first app served after {:.1}s)",
        t0.elapsed().as_secs_f64(),
        t_path.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_python_streamlit() {
    streamlit_spec("python-streamlit", "spstreamlit", "berth-fixture-streamlit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_python_streamlit_poetry() {
    streamlit_spec("python-streamlit-poetry", "spstpoetry", "berth-fixture-streamlit-poetry").await;
}

/// Calls `greet` through gradio's queue (POST queue/join, then the SSE stream queue/data)
/// and through the REST call API, at `base` (`http://host:port[/prefix]`).
async fn gradio_calls(b: &Berth, client: &reqwest::Client, base: &str, who: &str) {
    let expected = format!("berth-fixture-gradio:{who}");
    // config: the root the frontend will call must be the client's address (X-Forwarded-Host).
    let url = format!("{base}/config");
    let g = get(client, &url, &[]).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 200 && g.body.contains(&format!("\"root\":\"{base}\""))),
        format!("GET {url}: config's root should be {base:?} (the client's host and the app path): {g:?}"),
    );

    let session = format!("berthe2e{}", nonce());
    let url = format!("{base}/gradio_api/queue/join");
    let body = serde_json::json!({"data": [who], "fn_index": 0, "session_hash": session, "event_data": null, "trigger_id": null});
    let resp = client.post(&url).json(&body).send().await;
    let join = match resp {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => b.fail(format!("POST {url}: {e:?}")),
    };
    b.ensure(
        join.0 == 200 && join.1.contains("event_id"),
        format!("POST {url}: expected 200 with an event_id: {join:?}"),
    );
    let url = format!("{base}/gradio_api/queue/data?session_hash={session}");
    let mut resp = match client.get(&url).header("accept", "text/event-stream").send().await {
        Ok(r) => r,
        Err(e) => b.fail(format!("GET {url}: {e:?}")),
    };
    let ctype = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    b.ensure(
        resp.status() == 200 && ctype.starts_with("text/event-stream"),
        format!("GET {url}: expected 200 text/event-stream, got {} {ctype}", resp.status()),
    );
    let mut buf = Vec::new();
    let done = read_until(&mut resp, &mut buf, Duration::from_secs(60), |b| {
        let s = String::from_utf8_lossy(b);
        s.contains("process_completed") && s.contains(&expected)
    })
    .await;
    b.ensure(
        done,
        format!("SSE {url}: no process_completed with {expected} within 60 s; got:\n{}", String::from_utf8_lossy(&buf)),
    );

    // The REST call API.
    let url = format!("{base}/gradio_api/call/greet");
    let resp = client.post(&url).json(&serde_json::json!({"data": [who]})).send().await;
    let text = match resp {
        Ok(r) if r.status() == 200 => r.text().await.unwrap_or_default(),
        other => b.fail(format!("POST {url}: {other:?}")),
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let Some(eid) = v["event_id"].as_str() else { b.fail(format!("POST {url}: no event_id in {text}")) };
    let url = format!("{base}/gradio_api/call/greet/{eid}");
    let mut resp = match client.get(&url).send().await {
        Ok(r) => r,
        Err(e) => b.fail(format!("GET {url}: {e:?}")),
    };
    let mut buf = Vec::new();
    let done = read_until(&mut resp, &mut buf, Duration::from_secs(60), |b| {
        let s = String::from_utf8_lossy(b);
        s.contains("event: complete") && s.contains(&expected)
    })
    .await;
    b.ensure(done, format!("GET {url}: no complete event with {expected}; got:\n{}", String::from_utf8_lossy(&buf)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_python_gradio() {
    let t0 = Instant::now();
    let spec = "python-gradio";
    let b = Berth::start_with(CONFIG);
    let (path_app, domain_app, host) = create_pair(&b, spec, "spgradio", &[]);
    let image = b.app_image(&path_app);
    let client = slow_client(&[&host], BIG_BUILD);
    let marker = "berth-fixture-gradio";
    // strip_app = false: gradio serves under GRADIO_ROOT_PATH=/spgradio itself.
    let base = b.http_url("localhost", &path_app);
    expect_body(&b, &client, &format!("{base}/"), marker, &[]).await;
    let t_path = t0.elapsed();
    gradio_calls(&b, &client, &base, "bob").await;

    let base = b.http_url(&host, "");
    expect_body(&b, &client, &format!("{base}/"), marker, &[]).await;
    gradio_calls(&b, &client, &base, "alice").await;
    assert_built_once(&b, spec, &domain_app, &image);
    eprintln!(
        "TIMING spec {spec}: {:.1}s (first app served after {:.1}s)",
        t0.elapsed().as_secs_f64(),
        t_path.as_secs_f64()
    );
}
