//! Failure and shutdown behaviour: a container that cannot start answers 502 with its log tail
//! and is not retried during the backoff; SIGTERM lets an in-flight request finish and exits 0;
//! an engine outage (a socket stand-in that goes away) answers 503 without backoff, and the app
//! serves soon after the engine answers again, also when the server started during the outage;
//! a create while the engine never answers is a 503 in the admin API and stores nothing.

mod common;

use std::time::{Duration, Instant};

use common::{is_single_error_line, unix_now, Berth};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_start_answers_502_with_logs_and_backs_off() {
    let image = crash_image();
    let berth = Berth::start_with("failure_backoff_secs = 30");
    let id = berth.create_image_app(image, 8080, "/broken", &["--param", "GREETING=hello-from-env"]);
    let since = unix_now();
    let client = berth.client(&[]);
    let url = berth.http_url("localhost", "/broken/");

    let started = Instant::now();
    let first = client.get(&url).send().await.expect("first request");
    let first_took = started.elapsed();
    let status = first.status();
    let retry_after = first.headers().get("retry-after").cloned();
    let body = first.text().await.unwrap();
    berth.ensure(status == 502, format!("expected 502, got {status}: {body}"));
    berth.ensure(body.contains("exited"), format!("502 body should say the container exited: {body}"));
    berth.ensure(
        body.contains("boom: hello-from-env"),
        format!("502 body carries the log tail (and params reach env): {body}"),
    );
    berth.ensure(retry_after.is_some(), "502 after a failed start carries Retry-After");
    berth.ensure(
        first_took < Duration::from_secs(10),
        format!("a container that exits fails fast, took {first_took:?}"),
    );

    let started = Instant::now();
    for _ in 0..5 {
        let again = client.get(&url).send().await.expect("retry request");
        berth.ensure(again.status() == 502, format!("still failing during the backoff: {}", again.status()));
    }
    berth.ensure(started.elapsed() < Duration::from_secs(1), "requests during the backoff are answered at once");
    berth.ensure(berth.app_state("/broken") == "failed", "app list shows the failed state");
    let starts = berth.start_events(&id, since);
    berth.ensure(starts == 1, format!("one start attempt during the backoff, saw {starts}"));
}

/// An image whose container prints a line (using a param from its env) and exits.
fn crash_image() -> &'static str {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    const TAG: &str = "berth-test-crash:1";
    BUILT.get_or_init(|| {
        let mut child = std::process::Command::new("docker")
            .args(["build", "-q", "-t", TAG, "-"])
            .env("DOCKER_BUILDKIT", "0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("docker build");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"FROM alpine\nCMD [\"sh\", \"-c\", \"echo boom: $GREETING; exit 3\"]\n")
            .unwrap();
        assert!(child.wait().unwrap().success(), "building {TAG} failed");
    });
    TAG
}

/// An upstream that answers after `delay`.
async fn slow_upstream(delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                tokio::time::sleep(delay).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nslow").await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let mut berth = Berth::start();
    let port = slow_upstream(Duration::from_millis(1500)).await;
    berth.cli_ok(&[
        "app",
        "create",
        "--spec",
        "proxy",
        "--param",
        &format!("url=http://127.0.0.1:{port}"),
        "-",
        "/slow",
    ]);
    let client = berth.client(&[]);
    let url = berth.http_url("localhost", "/slow");
    let in_flight = tokio::spawn(async move { client.get(&url).send().await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = tokio::task::spawn_blocking(move || {
        let st = berth.sigterm_server();
        (st, berth)
    })
    .await
    .unwrap();
    let (exit, berth) = status;
    let answered = in_flight.await.unwrap();
    berth.ensure(matches!(answered, Ok(200)), format!("the in-flight request finished: {answered:?}"));
    berth.ensure(exit.code() == Some(0), format!("server exit status after SIGTERM: {exit:?}"));
    berth.ensure(!berth.home_path.join("run/berth.sock").exists(), "the admin socket is removed at shutdown");
}

/// A stand-in for the engine's socket that can go away and come back: forwards every
/// connection on its own unix socket to the real engine's.
struct EngineSocket {
    path: std::path::PathBuf,
    tasks: Option<tokio::task::JoinSet<()>>,
}

impl EngineSocket {
    fn new(dir: &std::path::Path) -> EngineSocket {
        let mut socket = EngineSocket { path: dir.join("engine.sock"), tasks: None };
        socket.up();
        socket
    }

    fn endpoint(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// The engine answers (again).
    fn up(&mut self) {
        let listener = tokio::net::UnixListener::bind(&self.path).expect("bind the engine stand-in socket");
        let mut tasks = tokio::task::JoinSet::new();
        let conns = std::sync::Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new()));
        let held = conns.clone();
        tasks.spawn(async move {
            let _held = held;
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                conns.lock().unwrap().spawn(async move {
                    let Ok(mut engine) = tokio::net::UnixStream::connect("/var/run/docker.sock").await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// The engine is gone: open connections are cut and new ones refused.
    fn down(&mut self) {
        drop(self.tasks.take());
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_outage_answers_503_without_backoff_and_starts_within_a_second_of_its_return() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = EngineSocket::new(dir.path());
    let berth =
        Berth::start_with(&format!("failure_backoff_secs = 30\n[engine]\nendpoint = \"{}\"", engine.endpoint()));
    let id = berth.create_image_app("nginx", 80, "/web", &[]);
    let client = berth.client(&[]);
    let url = berth.http_url("localhost", "/web/");

    engine.down();
    for _ in 0..3 {
        let resp = client.get(&url).send().await.expect("request during the outage");
        let status = resp.status();
        let retry_after = resp.headers().get("retry-after").cloned();
        let body = resp.text().await.unwrap();
        berth.ensure(status == 503, format!("expected 503 while the engine is down, got {status}: {body}"));
        berth.ensure(body.contains("container engine unavailable"), format!("the 503 says why: {body}"));
        berth.ensure(retry_after.is_some(), "the 503 carries Retry-After");
    }
    berth.ensure(berth.app_state("/web") != "failed", "an unreachable engine is not an app failure");

    engine.up();
    let first_ok = first_200_within(&client, &url, Duration::from_secs(10)).await;
    let took = first_ok.unwrap_or_else(|| berth.fail("no 200 within 10 s of the engine answering again"));
    // Noticing takes at most one ping interval (250 ms); the rest is creating and starting the
    // container, which a loaded machine can stretch. The issue's bound: 2 s.
    println!("first 200 {took:?} after the engine answered again");
    berth.ensure(took < Duration::from_secs(2), format!("first 200 {took:?} after the engine answered again"));
    berth.ensure(berth.containers(&id).len() == 1, "one container");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_while_the_engine_is_down_adopts_and_serves_once_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = EngineSocket::new(dir.path());
    let mut berth =
        Berth::start_with(&format!("failure_backoff_secs = 30\n[engine]\nendpoint = \"{}\"", engine.endpoint()));
    let id = berth.create_image_app("nginx", 80, "/web", &[]);
    let client = berth.client(&[]);
    let url = berth.http_url("localhost", "/web/");
    let first = client.get(&url).send().await.expect("first request");
    berth.ensure(first.status() == 200, format!("the app serves: {}", first.status()));
    let container = berth.single_container(&id);
    let stopped = tokio::task::spawn_blocking(move || {
        berth.stop_server();
        berth
    });
    let mut berth = stopped.await.unwrap();

    engine.down();
    let started = tokio::task::spawn_blocking(move || {
        berth.start_server();
        berth
    });
    let berth = started.await.unwrap();
    let resp = client.get(&url).send().await.expect("request while the engine is down");
    let status = resp.status();
    let body = resp.text().await.unwrap();
    berth.ensure(status == 503, format!("503 while the engine is down, got {status}: {body}"));

    engine.up();
    let first_ok = first_200_within(&client, &url, Duration::from_secs(10)).await;
    let took = first_ok.unwrap_or_else(|| berth.fail("no 200 within 10 s of the engine answering"));
    berth.ensure(took < Duration::from_secs(1), format!("first 200 {took:?} after the engine answered"));
    berth.ensure(berth.single_container(&id) == container, "the running container was adopted, not replaced");
}

/// The Docker implementation of the engine trait against the real engine: typed events (with
/// the exit code), pause and unpause, a stats sample, inspect after removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_engine_reports_typed_events_and_stats() {
    use berth::engine::{ContainerAction, ContainerSpec, Engine, EngineError};
    use futures_util::StreamExt;

    let engine = Engine::connect("").await.expect("connect to the engine");
    let marker = common::nonce();
    let spec = ContainerSpec {
        name: format!("berth-engine-test-{marker}"),
        image: "nginx".into(),
        port: 80,
        env: vec![],
        labels: std::collections::HashMap::from([("berth.test".to_string(), marker.clone())]),
        init: false,
        options: Default::default(),
    };
    // The subscription starts when the stream is first polled: collect in a task, and create
    // the container again if its `create` came before the subscription.
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let mut stream = engine.events(("berth.test", &marker));
    tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    let mut id = String::new();
    for attempt in 0..5 {
        let spec = ContainerSpec { name: format!("{}-{attempt}", spec.name), ..spec.clone() };
        id = engine.create(&spec).await.expect("create");
        let first = tokio::time::timeout(Duration::from_secs(2), events.recv()).await;
        if let Ok(Some(Ok(ev))) = first {
            assert_eq!((ev.container_id.as_str(), ev.action), (id.as_str(), ContainerAction::Create));
            break;
        }
        engine.remove(&id).await.unwrap();
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {}
    }
    let cleanup = scopeguard(id.clone());
    engine.start(&id).await.expect("start");
    let listed = engine.list_labelled(&[("berth.test", &marker)]).await.unwrap();
    assert_eq!(listed.len(), 1);
    engine.pause(&id).await.expect("pause");
    engine.unpause(&id).await.expect("unpause");
    let stats = engine.stats(&id).await.expect("stats");
    assert!(stats.memory_bytes > 0, "{stats:?}");
    engine.stop(&id, 1).await.expect("stop");
    engine.remove(&id).await.expect("remove");
    assert!(matches!(engine.inspect(&id, 80).await, Err(EngineError::NotFound(_))));
    let mut seen = vec![ContainerAction::Create];
    while !seen.contains(&ContainerAction::Destroy) {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
        let ev = ev.expect("events within 10 s").expect("the stream stays open").expect("an event");
        assert_eq!(ev.container_id, id);
        seen.push(ev.action);
    }
    drop(cleanup);
    for expected in [ContainerAction::Create, ContainerAction::Start, ContainerAction::Pause, ContainerAction::Unpause]
    {
        assert!(seen.contains(&expected), "{expected:?} in {seen:?}");
    }
    assert!(
        seen.iter().any(|a| matches!(a, ContainerAction::Die { exit_code: Some(_) })),
        "a die event with its exit code in {seen:?}"
    );
}

/// Removes the container when a test ends early.
fn scopeguard(id: String) -> impl Drop {
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker").args(["rm", "-f", &self.0]).output();
        }
    }
    Remove(id)
}

/// How long until `url` first answers 200, polled every 50 ms for up to `limit`.
async fn first_200_within(client: &reqwest::Client, url: &str, limit: Duration) -> Option<Duration> {
    let began = Instant::now();
    while began.elapsed() < limit {
        if let Ok(resp) = client.get(url).send().await {
            if resp.status() == 200 {
                return Some(began.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// With an engine that never answers (a socket path nobody listens on), the server starts, and
/// a create that needs the engine fails whole: the admin API answers 503 (not 400), the CLI
/// prints one line saying the engine is unavailable and exits 1, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_while_the_engine_is_down_answers_503_and_stores_nothing() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let nobody = dir.path().join("nobody.sock");
    let berth = Berth::start_with(&format!("[engine]\nendpoint = \"unix://{}\"", nobody.display()));

    let out =
        berth.cli(&["app", "create", "--spec", "image", "--param", "image=nginx", "--param", "port=80", "-", "/x"]);
    berth.ensure(out.code == 1, format!("create while the engine is down: exit {}: {out}", out.code));
    berth.ensure(is_single_error_line(&out.stderr), format!("one error line: {:?}", out.stderr));
    berth.ensure(
        out.stderr.contains("container engine unavailable") && out.stderr.contains("nobody.sock"),
        format!("the error names the engine being unavailable and where: {:?}", out.stderr),
    );

    let body = r#"{"source_url":"-","path":"/y","spec":"image","params":{"image":"nginx","port":"80"}}"#;
    let mut admin = std::os::unix::net::UnixStream::connect(berth.home_path.join("run/berth.sock")).unwrap();
    write!(
        admin,
        "POST /v1/apps HTTP/1.1\r\nHost: berth\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    admin.read_to_string(&mut answer).unwrap();
    berth.ensure(answer.starts_with("HTTP/1.1 503"), format!("the admin API answers 503: {answer}"));

    berth.ensure(berth.app_list().is_empty(), format!("nothing stored: {}", berth.app_list_raw()));
}
