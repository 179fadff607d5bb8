//! End-to-end tests of dev mode (`app create --dev`) on Docker: an edit of the app's folder
//! is served within 2 s without a command; an edit that breaks the build shows the build
//! error on the app's page until a good save; a dev app has no stage, refuses promote, is not
//! idle-stopped, and its folder survives `app delete`; a git source or `-` is refused with
//! Clace's messages and nothing is created.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::*;

const BUILD_WAIT: Duration = Duration::from_secs(300);

/// GETs `url` every 50 ms until `done` accepts the answer or `timeout`; returns the last
/// answer and when it came.
async fn poll(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    done: impl Fn(&Got) -> bool,
) -> (Option<Got>, Duration) {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < timeout {
        if let Ok(g) = get(client, url, &[]).await {
            if done(&g) {
                return (Some(g), start.elapsed());
            }
            last = Some(g);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (last, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_app_follows_its_folder() {
    let t0 = Instant::now();
    let mut cleanup = ImageCleanup(Vec::new());
    let mut b = Berth::start_with("start_timeout_secs = 300");
    let n = nonce();
    let m = |s: &str| format!("berth-e2e-dev-{s}-{n}");
    let src = container_app_with_marker(&m("one"));
    let app = "/devapp";
    // A 1 s idle time that a dev app must ignore.
    let dir = src.path().display().to_string();
    b.cli_ok(&["app", "create", "--dev", "--spec", "container", "--conf", "container.idle_shutdown_secs=1", &dir, app]);
    cleanup.add(b.app_image(app));
    let client = slow_client(&[], BUILD_WAIT);
    let url = b.http_url("localhost", app);
    let g = get_until_marker(&client, &url, &m("one"), BUILD_WAIT).await;
    b.ensure(matches!(&g, Ok(g) if g.status == 200), format!("the dev app should serve its folder: {g:?}"));

    // An edit: served within 2 s, without a command.
    set_container_marker(src.path(), &m("two"));
    let (g, took) =
        poll(&client, &url, Duration::from_secs(30), |g| g.status == 200 && g.body.contains(&m("two"))).await;
    cleanup.add(b.app_image(app));
    eprintln!("TIMING dev edit served after {:.2}s", took.as_secs_f64());
    b.ensure(g.is_some_and(|g| g.body.contains(&m("two"))), "the edit was never served");
    b.ensure(took < Duration::from_secs(2), format!("the edit was served after {took:?}, not within 2 s"));

    // A broken build: the page shows the build error (with the failing step's output).
    let containerfile = src.path().join("Containerfile");
    let good = fs::read_to_string(&containerfile).unwrap();
    let broken_step = m("broken");
    fs::write(&containerfile, good.replace("EXPOSE 8080", &format!("RUN echo {broken_step} && exit 3\nEXPOSE 8080")))
        .unwrap();
    let (g, _) =
        poll(&client, &url, Duration::from_secs(60), |g| g.status >= 500 && g.body.contains(&broken_step)).await;
    b.ensure(
        g.as_ref().is_some_and(|g| (g.status == 500 || g.status == 502) && g.body.contains(&broken_step)),
        format!("a failed build should show its output on the app's page: {g:?}"),
    );
    // Still failing a moment later (not retried into a starting page).
    let again = get(&client, &url, &[]).await;
    b.ensure(
        matches!(&again, Ok(g) if g.status == 502 && g.body.contains(&broken_step)),
        format!("the build error should stay until the next good save: {again:?}"),
    );

    // A folder that does not check out (no port known): its error on the page.
    fs::write(&containerfile, good.replace("EXPOSE 8080", "")).unwrap();
    let (g, _) =
        poll(&client, &url, Duration::from_secs(30), |g| g.status == 502 && g.body.contains("port not specified"))
            .await;
    b.ensure(g.is_some(), format!("a Containerfile without a port should show its error on the page: {g:?}"));

    // The fix (and a new marker) restores the app.
    fs::write(&containerfile, &good).unwrap();
    set_container_marker(src.path(), &m("three"));
    let (g, took) =
        poll(&client, &url, Duration::from_secs(60), |g| g.status == 200 && g.body.contains(&m("three"))).await;
    cleanup.add(b.app_image(app));
    b.ensure(g.is_some(), format!("the fixed app should serve again: {g:?} after {took:?}"));

    // A restart serves the image built last and adopts its container (stored with the app).
    let app_id = b.app_id(app);
    let one = wait_until(Duration::from_secs(30), Duration::from_millis(100), || b.containers(&app_id).len() == 1);
    b.ensure(one.is_some(), format!("replaced dev containers should be removed: {:?}", b.containers(&app_id)));
    let before = b.single_container(&app_id);
    b.stop_server();
    b.start_server();
    let g = get_until_marker(&client, &url, &m("three"), Duration::from_secs(60)).await;
    b.ensure(matches!(&g, Ok(g) if g.status == 200), format!("after a restart the dev app should serve: {g:?}"));
    b.ensure(
        b.single_container(&app_id) == before,
        format!("a restart should adopt the dev app's container {before}: {:?}", b.containers(&app_id)),
    );

    // No stage, never promoted, not idle-stopped.
    let stage = get(&client, &b.http_url("localhost", "/devapp_cl_stage"), &[]).await;
    b.ensure(matches!(&stage, Ok(g) if g.status == 404), format!("a dev app has no stage: {stage:?}"));
    let out = b.cli(&["app", "promote", app]);
    b.ensure(
        out.code == 1 && is_single_error_line(&out.stderr) && out.stderr.contains("dev app"),
        format!("promote of a dev app should fail saying why: {out}"),
    );
    let out = b.cli(&["param", "update", "--promote", "X", "1", app]);
    b.ensure(out.code == 1 && out.stderr.contains("dev app"), format!("param update --promote of a dev app: {out}"));
    let out = b.cli(&["version", "switch", "1", app]);
    b.ensure(out.code == 1 && out.stderr.contains("dev app"), format!("version switch of a dev app: {out}"));
    // A param update applies at once (prod and stage are the one deployment).
    b.cli_ok(&["param", "update", "DEV_PARAM", "1", app]);
    let (prod, stage) = b.prod_and_stage_versions(app);
    b.ensure(
        prod == stage && prod.len() == 1,
        format!("a dev app's param update must serve at once: {prod:?} {stage:?}"),
    );
    let g = get_until_marker(&client, &url, &m("three"), Duration::from_secs(60)).await;
    b.ensure(matches!(&g, Ok(g) if g.status == 200), format!("the dev app should serve after a param update: {g:?}"));
    // Quiet for longer than the 1 s idle time the dev app ignores.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    b.ensure(b.app_state(app) == "running", format!("a dev app must not be idle-stopped: {}", b.app_state(app)));
    let out = b.cli(&["app", "reload", "--promote", app]);
    b.ensure(out.code == 1 && out.stderr.contains("dev app"), format!("reload --promote of a dev app: {out}"));
    b.cli_ok(&["app", "reload", app]);

    // Delete leaves the developer's folder alone.
    b.cli_ok(&["app", "delete", app]);
    b.ensure(src.path().join("server.py").exists(), "app delete removed the dev app's folder");
    eprintln!("TIMING dev_app_follows_its_folder {:.1}s", t0.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_needs_a_local_folder() {
    let b = Berth::start();
    for (source, spec, expected) in [
        ("https://github.com/org/repo", "container", "cannot create dev mode app from git source"),
        ("github.com/org/repo/app", "container", "cannot create dev mode app from git source"),
        ("-", "image", "cannot create dev mode app with no source url"),
    ] {
        let out = b.cli(&["app", "create", "-d", "--spec", spec, "--param", "image=nginx", source, "/dev1"]);
        b.ensure(
            out.code == 1 && is_single_error_line(&out.stderr) && out.stderr.contains(expected),
            format!("dev create from {source}: expected exit 1 with {expected:?}: {out}"),
        );
    }
    b.ensure(b.app_list().is_empty(), format!("a refused dev create left an app: {}", b.app_list_raw()));
}
