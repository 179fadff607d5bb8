//! End-to-end tests against Podman's Docker-compatible API instead of Docker: an image app
//! (create, first request 200, idle stop, restart, delete) and an app built from source (the
//! `container` fixture: build through Podman, serve, build log, delete).
//!
//! They need Podman's API socket (`../shared/tools/configure-podman.sh --service --load-images`,
//! which `.ci/run` runs); without it they print why and pass, unless `BERTH_TEST_REQUIRE_PODMAN`
//! is set (as `.ci/run` does). `BERTH_TEST_PODMAN_SOCKET` points them at another socket path.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const BUILD_WAIT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(200);

/// Podman's API socket, or `None` (with a printed reason) when there is none.
fn podman_socket(test: &str) -> Option<PathBuf> {
    let path = PathBuf::from(
        std::env::var("BERTH_TEST_PODMAN_SOCKET").unwrap_or_else(|_| "/run/podman/podman.sock".to_string()),
    );
    if path.exists() {
        Some(path)
    } else if std::env::var_os("BERTH_TEST_REQUIRE_PODMAN").is_some() {
        panic!("{test}: BERTH_TEST_REQUIRE_PODMAN is set but there is no Podman API socket at {}", path.display());
    } else {
        eprintln!(
            "SKIPPED {test}: no Podman API socket at {} (start one with \
             ../shared/tools/configure-podman.sh --service --load-images)",
            path.display()
        );
        None
    }
}

/// A berth server whose engine is Podman.
fn berth_on_podman(socket: &std::path::Path, container_extra: &str) -> Berth {
    Berth::start_with(&format!("{container_extra}\n\n[engine]\nendpoint = \"unix://{}\"\n", socket.display()))
}

/// Runs the podman CLI against the same (rootful) storage the API serves.
fn podman(args: &[&str]) -> CmdOut {
    let out = Command::new("podman").args(args).output().unwrap_or_else(|e| panic!("cannot run podman {args:?}: {e}"));
    CmdOut {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Ids of the app's containers in Podman, running or not.
fn podman_containers(app_id: &str) -> Vec<String> {
    let out = podman(&["ps", "-a", "-q", "--no-trunc", "--filter", &format!("label=berth.app.id={app_id}")]);
    assert!(out.ok(), "podman ps failed: {out}");
    out.stdout.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

fn podman_running(id: &str) -> bool {
    let out = podman(&["inspect", "-f", "{{.State.Running}}", id]);
    out.ok() && out.stdout.trim() == "true"
}

/// Removes the listed images from Podman's storage on drop.
struct PodmanImages(Vec<String>);

impl Drop for PodmanImages {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = podman(&["rmi", "-f", image]);
        }
    }
}

/// An image app on Podman: nothing runs at create; the first request starts one container
/// (published on 127.0.0.1) and answers 200; it stops when idle (not removed); the next
/// request starts it again; delete removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_image_app_starts_idles_and_deletes() {
    let Some(socket) = podman_socket("podman_image_app_starts_idles_and_deletes") else { return };
    let t0 = Instant::now();
    let b = berth_on_podman(&socket, "");
    let (app, host) = ("podnginx.localhost:/", "podnginx.localhost");
    let id = b.create_image_app(
        "nginx",
        80,
        app,
        &["--conf", "container.idle_shutdown_secs=3", "--conf", "container.stop_paused_after_secs=0"],
    );
    b.ensure(podman_containers(&id).is_empty(), "a container exists in Podman before the first request");

    let client = b.client(&[host]);
    let url = b.https_url(host, "/");
    let g = get(&client, &url, &[]).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 200 && g.body.contains("Welcome to nginx")),
        format!("GET {url} on Podman: expected 200 with the nginx page, got {g:?}"),
    );
    let cs = podman_containers(&id);
    b.ensure(cs.len() == 1 && podman_running(&cs[0]), format!("expected one running Podman container: {cs:?}"));
    let cid = cs[0].clone();
    let port = podman(&["port", &cid]);
    b.ensure(
        port.ok() && !port.stdout.trim().is_empty() && port.stdout.lines().all(|l| l.contains("127.0.0.1:")),
        format!("the container must publish on 127.0.0.1 only: `podman port {cid}`: {port}"),
    );

    let stopped = wait_until_async(Duration::from_secs(20), POLL, || !podman_running(&cid)).await;
    b.ensure(stopped.is_some(), format!("container {cid} still runs 20 s after the last request (idle 3 s)"));
    b.ensure(
        wait_until_async(Duration::from_secs(5), POLL, || b.app_state(app) == "stopped").await.is_some(),
        format!("app state after the idle stop: expected stopped, got {}", b.app_state(app)),
    );
    b.ensure(podman_containers(&id) == vec![cid.clone()], "an idle stop must stop the container, not remove it");

    let g = get(&client, &url, &[]).await;
    b.ensure(matches!(&g, Ok(g) if g.status == 200), format!("GET {url} after the idle stop: expected 200, got {g:?}"));
    b.ensure(podman_running(&cid), format!("the same container {cid} should run again"));

    b.cli_ok(&["app", "delete", app]);
    let gone = wait_until_async(Duration::from_secs(20), POLL, || podman_containers(&id).is_empty()).await;
    b.ensure(gone.is_some(), format!("containers left in Podman after delete: {:?}", podman_containers(&id)));
    eprintln!("TIMING podman_image_app_starts_idles_and_deletes {:.1}s", t0.elapsed().as_secs_f64());
}

/// An app built from source through Podman's build API (which refuses an empty
/// `X-Registry-Config` header): the first request builds the `container` fixture and answers
/// 200 with its marker; the build log ends with "built"; delete removes the container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_builds_from_source_and_serves() {
    let Some(socket) = podman_socket("podman_builds_from_source_and_serves") else { return };
    let t0 = Instant::now();
    let mut images = PodmanImages(Vec::new());
    let b = berth_on_podman(&socket, "start_timeout_secs = 300");
    let marker = format!("berth-e2e-podman-{}", nonce());
    let src = container_app_with_marker(&marker);
    let app = "/podbuild";
    b.cli_ok(&["app", "create", "--spec", "container", src.path().to_str().unwrap(), app]);
    let image = b.app_image(app);
    images.0.push(image.clone());
    let id = b.app_id(app);

    let client = slow_client(&[], BUILD_WAIT);
    let url = b.http_url("localhost", "/podbuild/x");
    let g = get_until_marker(&client, &url, &marker, BUILD_WAIT).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 200 && g.body.contains(&marker)),
        format!(
            "GET {url} on Podman: expected 200 with {marker} (built from source), got {g:?}\nbuild log: {}",
            b.build_log(app)
        ),
    );
    b.ensure(podman(&["image", "exists", &image]).ok(), format!("image {image} is not in Podman's storage"));
    let log = b.build_log(app);
    b.ensure(
        log.ok() && log.stdout.lines().last().is_some_and(|l| l.starts_with("built ")),
        format!("`app logs --build` should end with \"built ...\": {log}"),
    );
    let cs = podman_containers(&id);
    b.ensure(cs.len() == 1 && podman_running(&cs[0]), format!("expected one running Podman container: {cs:?}"));

    b.cli_ok(&["app", "delete", app]);
    let gone = wait_until_async(Duration::from_secs(20), POLL, || podman_containers(&id).is_empty()).await;
    b.ensure(gone.is_some(), format!("containers left in Podman after delete: {:?}", podman_containers(&id)));
    eprintln!("TIMING podman_builds_from_source_and_serves {:.1}s", t0.elapsed().as_secs_f64());
}

/// A build through Podman whose base image does not exist fails with a message naming the
/// image and saying it was not found (Podman's own reason included), never an empty one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_missing_base_image_error_names_the_image() {
    let Some(socket) = podman_socket("podman_missing_base_image_error_names_the_image") else { return };
    let b = berth_on_podman(&socket, "start_timeout_secs = 300");
    let app = "/podnobase";
    b.create_with_missing_base_image(app);
    let g = get(&slow_client(&[], BUILD_WAIT), &b.http_url("localhost", "/podnobase/"), &[]).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 502
            && g.body.contains("build failed: ")
            && g.body.contains("python:4invalid-slim")
            && (g.body.contains("not found") || g.body.contains("pull access denied"))),
        format!("GET on Podman: expected 502 naming python:4invalid-slim and \"not found\", got {g:?}"),
    );
}
