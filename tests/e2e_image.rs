//! End-to-end tests of image apps: on-demand start, HTTPS + HTTP/2, idle
//! shutdown, the paused tier, WebSockets, concurrent first requests, restart, logs, delete.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const POLL: Duration = Duration::from_millis(200);

/// Test 1: nothing runs at create; the first HTTPS request starts exactly one
/// container (published on 127.0.0.1); HTTP/2 is negotiated over HTTPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_starts_on_first_request_https_and_h2() {
    let b = Berth::start();
    let app_path = "nginxapp.localhost:/";
    let host = "nginxapp.localhost";
    b.cli_ok(&[
        "app",
        "create",
        "--spec",
        "image",
        "--approve",
        "--param",
        "image=nginx",
        "--param",
        "port=80",
        "-",
        app_path,
    ]);
    let entry = b.app(app_path);
    let id = json_str(&entry["id"]);
    b.ensure(!id.is_empty(), format!("app has no id: {entry}"));
    b.ensure(entry["spec"] == "image", format!("app list entry: spec should be \"image\": {entry}"));
    b.ensure(
        entry["domain"] == "nginxapp.localhost" && entry["path"] == "/",
        format!("app list entry: domain/path wrong: {entry}"),
    );
    b.ensure(
        entry["app_path"] == "nginxapp.localhost:/",
        format!("app list entry: app_path should be \"nginxapp.localhost:/\": {entry}"),
    );
    b.ensure(
        entry["params"]["image"] == "nginx" && json_str(&entry["params"]["port"]) == "80",
        format!("app list entry: params should hold image=nginx, port=80: {entry}"),
    );
    b.ensure(entry["state"] == "stopped", format!("a freshly created app should be \"stopped\": {entry}"));
    b.ensure(b.instance_id().is_some(), "the server did not write $BERTH_HOME/instance_id after start");

    let cs = b.containers(&id);
    b.ensure(cs.is_empty(), format!("no container may exist before the first request, found {cs:?}"));

    let client = b.client(&[host]);
    let url = b.https_url(host, "/");
    let resp = client.get(&url).send().await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => b.fail(format!("GET {url} failed: {e:?}")),
    };
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    b.ensure(
        status == 200 && body.contains("Welcome to nginx"),
        format!("GET {url}: expected 200 with \"Welcome to nginx\", got {status}: {body:.300}"),
    );

    let cs = b.containers(&id);
    b.ensure(
        cs.len() == 1 && cs[0].1 == "running",
        format!("after the first request exactly one running container expected, found {cs:?}"),
    );
    let cid = cs[0].0.clone();
    let state = b.app_state(app_path);
    b.ensure(state == "running", format!("app state after a served request: expected running, got {state}"));

    // Published on 127.0.0.1 only, with some host port.
    let port = docker(&["port", &cid]);
    b.ensure(
        port.ok() && !port.stdout.trim().is_empty() && port.stdout.lines().all(|l| l.contains("127.0.0.1:")),
        format!("container ports must be published on 127.0.0.1: `docker port {cid}`: {port}"),
    );

    // The HTTP listener serves the same app.
    let url = b.http_url(host, "/");
    match client.get(&url).send().await {
        Ok(r) if r.status() == 200 => {}
        other => b.fail(format!("GET {url}: expected 200, got {other:?}")),
    }

    // HTTP/2 over TLS via ALPN.
    match h2_get(b.https_port, host, "/").await {
        Ok(r) => b.ensure(
            r.alpn.as_deref() == Some("h2")
                && r.version == hyper::Version::HTTP_2
                && r.status == 200
                && r.body.contains("Welcome to nginx"),
            format!("HTTPS with ALPN [h2, http/1.1]: expected h2 + 200 + nginx page, got {r:?}"),
        ),
        Err(e) => b.fail(format!("HTTP/2 request to https://{host}:{}/ failed: {e}", b.https_port)),
    }

    // Still a single container.
    let cs = b.containers(&id);
    b.ensure(cs.len() == 1 && cs[0].0 == cid, format!("expected only container {cid}, found {cs:?}"));
}

/// Test 2a: with the paused tier off (`stop_paused_after_secs=0`), an idle app's container
/// stops after idle_shutdown_secs; the next request starts the SAME container again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_shutdown_then_same_container_restarts() {
    let b = Berth::start();
    let app_path = "idleapp.localhost:/";
    let host = "idleapp.localhost";
    let conf = ["--conf", "container.idle_shutdown_secs=3", "--conf", "container.stop_paused_after_secs=0"];
    let id = b.create_image_app("nginx", 80, app_path, &conf);
    let client = b.client(&[host]);
    let url = b.https_url(host, "/");

    let resp = client.get(&url).send().await;
    let status = resp.as_ref().ok().map(|r| r.status().as_u16());
    b.ensure(status == Some(200), format!("first GET {url}: expected 200, got {resp:?}"));
    let served_at = Instant::now();
    let cid = b.single_container(&id);
    b.ensure(container_running(&cid), format!("container {cid} should run after the first request"));

    // Not stopped too early: still running well inside the idle period.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    b.ensure(container_running(&cid), format!("container {cid} stopped after only 1.5 s with idle_shutdown_secs=3"));

    let stopped = wait_until_async(Duration::from_secs(15), POLL, || !container_running(&cid)).await;
    let after = served_at.elapsed();
    b.ensure(
        stopped.is_some(),
        format!("container {cid} still running {after:?} after the last request (idle_shutdown_secs=3)"),
    );
    b.ensure(
        after >= Duration::from_millis(2500) && after <= Duration::from_secs(12),
        format!("idle stop should happen ~3-8 s after the last request, happened after {after:?}"),
    );
    eprintln!("idle app: container stopped {after:?} after the last response");
    b.ensure(container_exists(&cid), format!("idle shutdown must stop, not remove, container {cid}"));
    let st = wait_until_async(Duration::from_secs(3), POLL, || b.app_state(app_path) == "stopped").await;
    b.ensure(st.is_some(), format!("app state after idle stop: expected \"stopped\", got {:?}", b.app_state(app_path)));

    // Wake it up again: same container.
    let resp = client.get(&url).send().await;
    let ok = match resp {
        Ok(r) => r.status() == 200 && r.text().await.unwrap_or_default().contains("Welcome to nginx"),
        Err(_) => false,
    };
    b.ensure(ok, format!("GET {url} after idle stop: expected 200 with the nginx page"));
    let cs = b.containers(&id);
    b.ensure(
        cs.len() == 1 && cs[0].0 == cid && cs[0].1 == "running",
        format!("after waking, expected the same single running container {cid}, found {cs:?}"),
    );
}

/// Test 2c: the paused tier. An idle app is paused (the engine shows it Paused, the app list
/// says paused), the next request unpauses the SAME container and gets 200, and a paused app
/// is stopped after stop_paused_after_secs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_tier_pauses_wakes_and_stops_after_the_limit() {
    let b = Berth::start();
    let app_path = "pauseapp.localhost:/";
    let host = "pauseapp.localhost";
    let conf = ["--conf", "container.idle_shutdown_secs=2", "--conf", "container.stop_paused_after_secs=4"];
    let id = b.create_image_app("nginx", 80, app_path, &conf);
    let client = b.client(&[host]);
    let url = b.https_url(host, "/");
    let get_ok = |what: &'static str| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let started = Instant::now();
            let resp = client.get(&url).send().await;
            let ok = match resp {
                Ok(r) => r.status() == 200 && r.text().await.unwrap_or_default().contains("Welcome to nginx"),
                Err(_) => false,
            };
            (ok, started.elapsed(), what)
        }
    };

    let (ok, _, _) = get_ok("first").await;
    b.ensure(ok, format!("first GET {url}: expected 200 with the nginx page"));
    let cid = b.single_container(&id);

    let paused = wait_until_async(Duration::from_secs(15), POLL, || container_paused(&cid)).await;
    b.ensure(paused.is_some(), format!("container {cid} not paused 15 s after the last request (idle 2 s)"));
    b.ensure(container_exists(&cid) && !container_running(&cid), format!("container {cid} should be paused"));
    let st = wait_until_async(Duration::from_secs(3), POLL, || b.app_state(app_path) == "paused").await;
    b.ensure(st.is_some(), format!("app state while paused: expected \"paused\", got {:?}", b.app_state(app_path)));

    // Wake on request: the same container, unpaused.
    let (ok, took, _) = get_ok("wake").await;
    b.ensure(ok, format!("GET {url} on a paused app: expected 200 with the nginx page"));
    eprintln!("paused app: woken and answered in {took:?}");
    b.ensure(container_running(&cid), format!("container {cid} should run (unpaused) after the request"));
    let cs = b.containers(&id);
    b.ensure(cs.len() == 1 && cs[0].0 == cid, format!("waking must reuse container {cid}, found {cs:?}"));

    // Paused again when idle, then stopped after stop_paused_after_secs.
    let paused = wait_until_async(Duration::from_secs(15), POLL, || container_paused(&cid)).await;
    b.ensure(paused.is_some(), format!("container {cid} not paused again 15 s after the last request"));
    let paused_at = Instant::now();
    let stopped = wait_until_async(Duration::from_secs(20), POLL, || {
        docker(&["inspect", "-f", "{{.State.Running}}", &cid]).stdout.trim() == "false"
    })
    .await;
    let after = paused_at.elapsed();
    b.ensure(stopped.is_some(), format!("paused container {cid} not stopped {after:?} after it paused (limit 4 s)"));
    b.ensure(
        after >= Duration::from_millis(3000),
        format!("paused container {cid} stopped after only {after:?} (limit 4 s)"),
    );
    b.ensure(container_exists(&cid), format!("the paused tier must stop, not remove, container {cid}"));
    let st = wait_until_async(Duration::from_secs(3), POLL, || b.app_state(app_path) == "stopped").await;
    b.ensure(
        st.is_some(),
        format!("app state after the paused stop: expected \"stopped\", got {:?}", b.app_state(app_path)),
    );
    let (ok, _, _) = get_ok("restart").await;
    b.ensure(ok, format!("GET {url} after the paused stop: expected 200"));
}

/// Test 2d: the paused memory budget. With `paused_memory_mb = 1`, nginx's paused memory
/// (several MB, from the engine's stats) is over it, so the container is stopped right after
/// it pauses instead of staying paused for stop_paused_after_secs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_memory_over_the_budget_stops_the_container() {
    let b = Berth::start_with("paused_memory_mb = 1");
    let app_path = "budgetapp.localhost:/";
    let host = "budgetapp.localhost";
    let conf = ["--conf", "container.idle_shutdown_secs=2", "--conf", "container.stop_paused_after_secs=3600"];
    let id = b.create_image_app("nginx", 80, app_path, &conf);
    let client = b.client(&[host]);
    let url = b.https_url(host, "/");
    let resp = client.get(&url).send().await;
    let status = resp.as_ref().ok().map(|r| r.status().as_u16());
    b.ensure(status == Some(200), format!("first GET {url}: expected 200, got {resp:?}"));
    let cid = b.single_container(&id);
    let stopped = wait_until_async(Duration::from_secs(20), POLL, || {
        docker(&["inspect", "-f", "{{.State.Running}}", &cid]).stdout.trim() == "false"
    })
    .await;
    b.ensure(
        stopped.is_some(),
        format!("container {cid} not stopped 20 s after the last request (paused_memory_mb = 1)"),
    );
    b.ensure(container_exists(&cid), format!("the budget must stop, not remove, container {cid}"));
    let logged = wait_until_async(Duration::from_secs(3), POLL, || b.log().contains("paused memory over budget")).await;
    b.ensure(logged.is_some(), "the server log should say the paused memory was over budget");
}

/// Test 2b: an open WebSocket keeps the app running (not paused) past its idle time;
/// after it closes, the container is paused (the paused tier is on by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_keeps_app_awake_then_idles() {
    let image = ensure_wsecho_image();
    let b = Berth::start();
    let app_path = "wsapp.localhost:/";
    let host = "wsapp.localhost";
    let idle = 3u64;
    let idle_conf = format!("container.idle_shutdown_secs={idle}");
    let id = b.create_image_app(image, 8080, app_path, &["--conf", &idle_conf]);

    let client = b.client(&[host]);
    let url = b.http_url(host, "/");
    let resp = client.get(&url).send().await;
    let ok = match resp {
        Ok(r) => r.status() == 200 && r.text().await.unwrap_or_default() == "ok",
        Err(_) => false,
    };
    b.ensure(ok, format!("GET {url} (wsecho): expected 200 \"ok\""));
    let cid = b.single_container(&id);

    // WebSocket through the HTTP listener.
    let ws_url = format!("ws://{host}:{}/ws", b.http_port);
    let req = ws_url.as_str().into_client_request().expect("ws request");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", b.http_port)).await.expect("connect to berth HTTP port");
    let (mut ws, resp) = match tokio_tungstenite::client_async(req, tcp).await {
        Ok(x) => x,
        Err(e) => b.fail(format!("WebSocket handshake to {ws_url} through berth failed: {e:?}")),
    };
    b.ensure(resp.status().as_u16() == 101, format!("WebSocket handshake status {:?}", resp.status()));

    let hold = Duration::from_secs(2 * idle + 1);
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < hold {
        n += 1;
        let msg = format!("hello-{n}");
        if let Err(e) = ws.send(Message::Text(msg.clone())).await {
            b.fail(format!("WebSocket send #{n} failed after {:?}: {e:?}", t0.elapsed()));
        }
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
        match echoed {
            Ok(Some(Ok(Message::Text(t)))) if t == msg => {}
            other => {
                b.fail(format!("WebSocket echo #{n} after {:?}: expected Text({msg:?}), got {other:?}", t0.elapsed()))
            }
        }
        b.ensure(
            container_running(&cid),
            format!(
                "container {cid} stopped while a WebSocket was open ({:?} into the connection, idle {idle}s)",
                t0.elapsed()
            ),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let cs = b.containers(&id);
    b.ensure(
        cs.len() == 1 && cs[0].0 == cid && cs[0].1 == "running",
        format!("during the WebSocket: expected one running container {cid}, found {cs:?}"),
    );

    let _ = ws.close(None).await;
    // Drain until the close handshake finishes (or the stream ends).
    let _ = tokio::time::timeout(Duration::from_secs(3), async { while let Some(Ok(_)) = ws.next().await {} }).await;
    drop(ws);
    let closed_at = Instant::now();

    let paused = wait_until_async(Duration::from_secs(idle + 12), POLL, || container_paused(&cid)).await;
    b.ensure(
        paused.is_some(),
        format!("container {cid} not paused {:?} after the WebSocket closed (idle {idle}s)", closed_at.elapsed()),
    );
    eprintln!("ws app: container paused {:?} after the WebSocket closed", closed_at.elapsed());
}

/// Test 3: 200 concurrent first requests to a stopped app: all succeed, one
/// container, one start event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_start_one_container() {
    let b = Berth::start();
    let app_path = "concapp.localhost:/";
    let host = "concapp.localhost";
    let since = unix_now() - Duration::from_secs(1);
    let id = b.create_image_app("nginx", 80, app_path, &[]);
    let cs = b.containers(&id);
    b.ensure(cs.is_empty(), format!("no container may exist before the first request, found {cs:?}"));

    let client = b.client(&[host]);
    let url = b.http_url(host, "/");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = client.clone();
        let url = format!("{url}?req={i}");
        tasks.push(tokio::spawn(async move {
            match client.get(&url).send().await {
                Ok(r) => {
                    let st = r.status().as_u16();
                    let body = r.text().await.unwrap_or_default();
                    (st, body.contains("Welcome to nginx"), String::new())
                }
                Err(e) => (0, false, format!("{e:?}")),
            }
        }));
    }
    let mut failures = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let (st, ok, err) = t.await.expect("request task");
        if st != 200 || !ok {
            failures.push(format!("#{i}: status {st} page_ok {ok} {err}"));
        }
    }
    b.ensure(
        failures.is_empty(),
        format!(
            "{} of 200 concurrent first requests failed; first ones: {:?}",
            failures.len(),
            &failures[..failures.len().min(10)]
        ),
    );
    let cs = b.containers(&id);
    b.ensure(
        cs.len() == 1 && cs[0].1 == "running",
        format!("expected exactly one running container after 200 concurrent first requests, found {cs:?}"),
    );
    let starts = b.start_events(&id, since);
    b.ensure(starts == 1, format!("expected exactly one engine `start` event for app {id}, got {starts}"));
}

/// Test 4: after `berth server stop` and a new start with the same home, the
/// app keeps its single container and is served again. SIGTERM exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_single_container() {
    let mut b = Berth::start();
    let app_path = "restartapp.localhost:/";
    let host = "restartapp.localhost";
    let id = b.create_image_app("nginx", 80, app_path, &[]);
    let client = b.client(&[host]);
    let url = b.https_url(host, "/");
    let resp = client.get(&url).send().await;
    let status = resp.as_ref().ok().map(|r| r.status().as_u16());
    b.ensure(status == Some(200), format!("GET {url} before restart: expected 200, got {resp:?}"));
    let cid = b.single_container(&id);
    let inst = b.instance_id().map(str::to_string);

    let status = b.stop_server();
    b.ensure(status.success(), format!("server exited with {status} after `berth server stop`"));
    let out = b.cli(&["app", "list"]);
    b.ensure(
        out.code == 1 && is_single_error_line(&out.stderr),
        format!("`app list` after stop: expected exit 1 and one error line, got {out}"),
    );

    b.start_server();
    b.ensure(
        b.instance_id().map(str::to_string) == inst,
        format!("instance id changed across restart: {inst:?} -> {:?}", b.instance_id()),
    );
    let id2 = b.app_id(app_path);
    b.ensure(id2 == id, format!("app id changed across restart: {id} -> {id2}"));
    let cs = b.containers(&id);
    b.ensure(
        cs.len() == 1 && cs[0].0 == cid,
        format!("after restart expected the single container {cid}, found {cs:?}"),
    );

    let resp = client.get(&url).send().await;
    let ok = match resp {
        Ok(r) => r.status() == 200 && r.text().await.unwrap_or_default().contains("Welcome to nginx"),
        Err(_) => false,
    };
    b.ensure(ok, format!("GET {url} through the restarted server: expected 200 with the nginx page"));
    let cs = b.containers(&id);
    b.ensure(
        cs.len() == 1 && cs[0].0 == cid && cs[0].1 == "running",
        format!("after a request through the restarted server expected running container {cid}, found {cs:?}"),
    );

    let status = b.sigterm_server();
    b.ensure(status.success(), format!("server exited with {status} after SIGTERM (expected 0)"));
}

/// Test 5: `app logs --lines N` shows nginx's access log line; `--follow`
/// streams new lines; `app delete` removes the containers and the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_then_delete() {
    let b = Berth::start();
    let app_path = "logsapp.localhost:/";
    let host = "logsapp.localhost";
    let id = b.create_image_app("nginx", 80, app_path, &[]);
    let client = b.client(&[host]);

    let marker = "logmarker-first-8c1d";
    let url = b.https_url(host, &format!("/?{marker}"));
    let resp = client.get(&url).send().await;
    let status = resp.as_ref().ok().map(|r| r.status().as_u16());
    b.ensure(status == Some(200), format!("GET {url}: expected 200, got {resp:?}"));

    let mut last = None;
    let found = wait_until(Duration::from_secs(8), POLL, || {
        let out = b.cli(&["app", "logs", "--lines", "5", app_path]);
        let hit = out.ok() && out.stdout.contains(marker);
        last = Some(out);
        hit
    });
    let last = last.unwrap();
    b.ensure(
        found.is_some(),
        format!("`berth app logs --lines 5 {app_path}` never showed the access log line with {marker}: {last}"),
    );
    let n = last.stdout.lines().filter(|l| !l.trim().is_empty()).count();
    b.ensure(n <= 5, format!("`--lines 5` printed {n} lines: {last}"));
    let line = last.stdout.lines().find(|l| l.contains(marker)).unwrap_or("");
    b.ensure(
        line.contains("GET /?") && line.contains(" 200 "),
        format!("access log line should show `GET /?{marker}` and status 200: {line:?}"),
    );

    // --follow streams lines written after it started.
    let mut follow = tokio::process::Command::new(BERTH)
        .args(["app", "logs", "--follow", "--lines", "1", app_path])
        .env("BERTH_HOME", &b.home_path)
        .env_remove("RUST_LOG")
        .env_remove("BERTH_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn berth app logs --follow");
    let mut stdout = follow.stdout.take().unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let marker2 = "logmarker-follow-51aa";
    let url2 = b.https_url(host, &format!("/?{marker2}"));
    let resp = client.get(&url2).send().await;
    let status = resp.as_ref().ok().map(|r| r.status().as_u16());
    b.ensure(status == Some(200), format!("GET {url2}: expected 200, got {resp:?}"));
    let mut seen = Vec::new();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(k) => {
                    seen.extend_from_slice(&buf[..k]);
                    if String::from_utf8_lossy(&seen).contains(marker2) {
                        return true;
                    }
                }
            }
        }
    })
    .await
    .unwrap_or(false);
    let exited = follow.try_wait().ok().flatten();
    let _ = follow.kill().await;
    b.ensure(
        got,
        format!(
            "`berth app logs --follow` did not stream the new access line with {marker2} within 10 s \
             (process exited: {exited:?}); output so far: {}",
            String::from_utf8_lossy(&seen)
        ),
    );

    // Delete removes the app and its containers.
    let cid = b.single_container(&id);
    b.cli_ok(&["app", "delete", app_path]);
    let gone = wait_until(Duration::from_secs(10), POLL, || b.containers(&id).is_empty());
    b.ensure(
        gone.is_some(),
        format!("`app delete` did not remove the app's containers within 10 s: {:?}", b.containers(&id)),
    );
    b.ensure(!container_exists(&cid), format!("container {cid} still exists after `app delete`"));
    b.ensure(b.find_app(app_path).is_none(), format!("app still listed after delete: {}", b.app_list_raw()));
    let url = b.https_url(host, "/");
    match client.get(&url).send().await {
        Ok(r) if r.status() == 404 => {}
        other => b.fail(format!("GET {url} after delete: expected 404, got {other:?}")),
    }
}
