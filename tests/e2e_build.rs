//! End-to-end tests of building from source: content-addressed images shared between apps,
//! reload after a source change (new image, old container and image removed), failed builds
//! (502 with the build error, not retried until a reload), the HTML "Starting" page while an
//! image builds, and bad input at create.
//!
//! Every test builds from its own copy of the `container` fixture with a unique marker, so
//! its image name is its own (no test depends on another one's images).

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Generous bound for a first request that builds a small image.
const BUILD_WAIT: Duration = Duration::from_secs(300);

fn is_build_image_name(name: &str) -> bool {
    name.strip_prefix("berth-build:").is_some_and(|h| h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit()))
}

fn create_container_app(b: &Berth, src: &Path, app_path: &str) {
    b.cli_ok(&["app", "create", "--spec", "container", src.to_str().unwrap(), app_path]);
}

/// Inserts `line` just before the `CMD` line of the Containerfile in `dir`.
fn insert_before_cmd(dir: &Path, line: &str) {
    let file = dir.join("Containerfile");
    let text = fs::read_to_string(&file).unwrap();
    let cmd_line = text.lines().find(|l| l.starts_with("CMD")).expect("fixture Containerfile has a CMD").to_string();
    fs::write(&file, text.replace(&cmd_line, &format!("{line}\n{cmd_line}"))).unwrap();
}

/// A second app with the same source and spec builds nothing: same image name, same image
/// id, no build output for it, one build in the server log. Two apps whose first requests
/// arrive together share one build too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_source_and_spec_build_once() {
    let t0 = Instant::now();
    // Declared before the server: dropped after it, once its containers are gone.
    let mut cleanup = ImageCleanup(Vec::new());
    let b = Berth::start_with("start_timeout_secs = 300");
    let marker = format!("berth-e2e-dedup-{}", nonce());
    let src = container_app_with_marker(&marker);

    let (a, d) = ("/dedup-a", "dedup-b.localhost:/");
    create_container_app(&b, src.path(), a);
    create_container_app(&b, src.path(), d);
    let (img_a, img_b) = (b.app_image(a), b.app_image(d));
    cleanup.add(&img_a);
    b.ensure(is_build_image_name(&img_a), format!("image of {a} should be berth-build:<16 hex>, got {img_a:?}"));
    b.ensure(img_a == img_b, format!("same source + spec must give the same image name: {img_a} vs {img_b}"));
    b.ensure(image_id(&img_a).is_none(), format!("{img_a} exists before any request (nothing may build at create)"));
    b.ensure(b.app_state(a) == "stopped", format!("state at create: {}", b.app_state(a)));
    let out = b.build_log(a);
    b.ensure(
        !out.ok() && out.stderr.contains("has no build output"),
        format!("`app logs --build {a}` before any build should fail with \"has no build output\": {out}"),
    );

    let client = slow_client(&["dedup-b.localhost"], BUILD_WAIT);
    let url_a = b.http_url("localhost", "/dedup-a/x");
    let g = get_until_marker(&client, &url_a, &marker, BUILD_WAIT).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 200 && g.body.contains(&marker) && g.body.contains("path=/x")),
        format!("GET {url_a}: expected 200 with {marker} and path=/x, got {g:?}"),
    );
    let id_after_a = image_id(&img_a);
    b.ensure(id_after_a.is_some(), format!("{img_a} does not exist after the first app served"));
    let log_a = b.build_log(a);
    b.ensure(
        log_a.ok() && log_a.stdout.contains(&img_a),
        format!("`app logs --build {a}` should show the build of {img_a}: {log_a}"),
    );
    b.ensure(b.builds_logged(&img_a) == 1, format!("expected 1 build of {img_a} in the server log"));

    let url_b = b.http_url("dedup-b.localhost", "/x");
    let g = get_until_marker(&client, &url_b, &marker, BUILD_WAIT).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 200 && g.body.contains(&marker)),
        format!("GET {url_b}: expected 200 with {marker}, got {g:?}"),
    );
    let out = b.build_log(d);
    b.ensure(
        !out.ok() && out.stderr.contains("has no build output") && is_single_error_line(&out.stderr),
        format!("the second app must not have built: `app logs --build {d}` should fail with \"has no build output\": {out}"),
    );
    b.ensure(image_id(&img_a) == id_after_a, format!("the image id of {img_a} changed after the second app started"));
    b.ensure(b.builds_logged(&img_a) == 1, format!("the second app built {img_a} again (server log)"));
    let (ca, cb) = (b.single_container(&b.app_id(a)), b.single_container(&b.app_id(d)));
    b.ensure(ca != cb, "the two apps must have their own containers");
    b.ensure(
        container_image_id(&ca) == id_after_a && container_image_id(&cb) == id_after_a,
        format!(
            "both containers must run image {id_after_a:?}: {:?} / {:?}",
            container_image_id(&ca),
            container_image_id(&cb)
        ),
    );

    // Two more apps on another fresh source, first requests at the same time: one build.
    let marker2 = format!("berth-e2e-dedup2-{}", nonce());
    let src2 = container_app_with_marker(&marker2);
    let (c, e) = ("/dedup-c", "/dedup-d");
    create_container_app(&b, src2.path(), c);
    create_container_app(&b, src2.path(), e);
    let img2 = b.app_image(c);
    cleanup.add(&img2);
    b.ensure(img2 == b.app_image(e) && img2 != img_a, format!("images: {img2} vs {} vs {img_a}", b.app_image(e)));
    let (url_c, url_e) = (b.http_url("localhost", "/dedup-c/"), b.http_url("localhost", "/dedup-d/"));
    let (gc, ge) = tokio::join!(
        get_until_marker(&client, &url_c, &marker2, BUILD_WAIT),
        get_until_marker(&client, &url_e, &marker2, BUILD_WAIT)
    );
    b.ensure(
        matches!(&gc, Ok(g) if g.status == 200) && matches!(&ge, Ok(g) if g.status == 200),
        format!("concurrent first requests: {gc:?} / {ge:?}"),
    );
    let with_output = [c, e].iter().filter(|p| b.build_log(p).ok()).count();
    b.ensure(
        with_output == 1,
        format!("exactly one of two concurrent apps should have built {img2}, {with_output} did"),
    );
    b.ensure(b.builds_logged(&img2) == 1, format!("expected exactly 1 build of {img2} in the server log"));
    eprintln!("TIMING same_source_and_spec_build_once {:.1}s", t0.elapsed().as_secs_f64());
}

/// Changing one source file and reloading builds a new image as the app's stage version
/// (served at `<path>_cl_stage`; prod unchanged, and the output names the image built);
/// `reload --promote` moves prod to it; the old prod container and the old image are removed
/// after the switch. A reload without changes reuses the image and keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_after_source_change_builds_new_image_and_retires_old() {
    let t0 = Instant::now();
    // Declared before the server: dropped after it, once its containers are gone.
    let mut cleanup = ImageCleanup(Vec::new());
    let b = Berth::start_with("start_timeout_secs = 300");
    let n = nonce();
    let (m1, m2) = (format!("berth-e2e-reload-one-{n}"), format!("berth-e2e-reload-two-{n}"));
    let src = container_app_with_marker(&m1);
    let app = "/reload-src";
    create_container_app(&b, src.path(), app);
    let img1 = b.app_image(app);
    cleanup.add(&img1);
    let client = slow_client(&[], BUILD_WAIT);
    let url = b.http_url("localhost", "/reload-src/");
    let stage_url = b.http_url("localhost", &format!("{}/", stage_path(app)));
    let g = get_until_marker(&client, &url, &m1, BUILD_WAIT).await;
    b.ensure(matches!(&g, Ok(g) if g.status == 200), format!("GET {url}: expected 200 with {m1}: {g:?}"));
    let app_id = b.app_id(app);
    let c1 = b.single_container(&app_id);
    b.ensure(image_id(&img1).is_some(), format!("{img1} missing after the first start"));

    // Change one file. A dry-run reload fetches and checks it, and changes nothing.
    set_container_marker(src.path(), &m2);
    let versions_before = b.cli_ok(&["version", "list", app]).stdout;
    let dry = b.cli_ok(&["app", "reload", "--dry-run", app]);
    b.ensure(dry.stdout.contains("dry-run mode"), format!("`app reload --dry-run` should say so: {dry}"));
    b.ensure(
        b.cli_ok(&["version", "list", app]).stdout == versions_before,
        "`app reload --dry-run` must not add a version",
    );
    b.ensure(
        b.app(app)["stage_version"] == 1 && b.app_image(app) == img1,
        format!("`app reload --dry-run` must leave stage and prod as they were: {}", b.app(app)),
    );
    // A plain reload builds the stage version.
    let t_reload = Instant::now();
    let out = b.cli_ok(&["app", "reload", app]);
    let reload_took = t_reload.elapsed();
    b.ensure(
        out.stdout.contains(&format!("Reloaded {app}")) && out.stdout.contains(" built."),
        format!("`app reload` output should say \"Reloaded {app}...: image <name> built.\": {out}"),
    );
    let g = get(&client, &stage_url, &[]).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 200 && g.body.contains(&m2)),
        format!("after reload the stage {stage_url} should serve the new marker {m2}: {g:?}"),
    );
    let g = get(&client, &url, &[]).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 200 && g.body.contains(&m1)),
        format!("after a reload without --promote prod {url} should still serve {m1}: {g:?}"),
    );
    b.ensure(container_running(&c1), format!("a reload without --promote stopped or removed prod's container {c1}"));
    let stage = b.variant_containers(&app_id, "stage");
    b.ensure(stage.len() == 1, format!("expected one stage container after serving the stage: {stage:?}"));
    let img2 = container_image_name(&stage[0].0).unwrap_or_default();
    cleanup.add(&img2);
    b.ensure(
        img2 != img1 && is_build_image_name(&img2) && image_id(&img2).is_some(),
        format!("a changed source must give a new image: prod {img1}, stage {img2:?}"),
    );
    // Checked at the end, so that the rest of the test still runs when only this is wrong.
    let mut deferred = Vec::new();
    if !out.stdout.contains(&format!("image {img2} built")) {
        deferred.push(format!(
            "`app reload` should name the image it built ({img2}, the stage's), not prod's ({img1}): {out}"
        ));
    }

    // Promote through reload: prod follows, the old container and image go away.
    let out = b.cli_ok(&["app", "reload", "--promote", app]);
    b.ensure(
        out.stdout.contains(&format!("image {img2} reused")),
        format!("`reload --promote` of the same source should reuse {img2}: {out}"),
    );
    b.ensure(
        b.app_image(app) == img2,
        format!("prod's image after reload --promote: {} (want {img2})", b.app_image(app)),
    );
    let g = get(&client, &url, &[]).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 200 && g.body.contains(&m2)),
        format!("after reload --promote prod {url} should serve {m2}: {g:?}"),
    );
    let gone = wait_until(Duration::from_secs(20), Duration::from_millis(250), || {
        !container_exists(&c1) && image_id(&img1).is_none()
    });
    b.ensure(
        gone.is_some(),
        format!(
            "within 20 s after the switch the old container {c1} (exists: {}) and the old image {img1} (exists: {}) should be removed",
            container_exists(&c1),
            image_id(&img1).is_some()
        ),
    );
    let prod = b.variant_containers(&app_id, "prod");
    b.ensure(
        prod.len() == 1 && prod[0].0 != c1 && prod[0].2 == "running",
        format!("after the switch exactly one running (new) prod container expected, found {prod:?}"),
    );

    // A reload without changes reuses the image, and the image stays.
    let out = b.cli_ok(&["app", "reload", "--promote", app]);
    b.ensure(
        out.stdout.contains(&format!("image {img2} reused")),
        format!("reload of an unchanged source should say \"image {img2} reused\": {out}"),
    );
    b.ensure(b.app_image(app) == img2, "image changed on an unchanged reload");
    let g = get(&client, &url, &[]).await;
    b.ensure(matches!(&g, Ok(g) if g.status == 200 && g.body.contains(&m2)), format!("after the no-op reload: {g:?}"));
    std::thread::sleep(Duration::from_secs(3));
    b.ensure(image_id(&img2).is_some(), format!("the unchanged reload removed the image {img2} that is still in use"));
    let g = get(&client, &url, &[]).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 200 && g.body.contains(&m2)),
        format!("3 s after the no-op reload: {g:?}"),
    );
    let prod = b.variant_containers(&app_id, "prod");
    b.ensure(prod.len() == 1 && prod[0].2 == "running", format!("after the no-op reload: prod containers {prod:?}"));
    eprintln!(
        "TIMING reload_after_source_change_builds_new_image_and_retires_old {:.1}s (reload {:.1}s)",
        t0.elapsed().as_secs_f64(),
        reload_took.as_secs_f64()
    );
    b.ensure(deferred.is_empty(), deferred.join("\n"));
}

/// A build that fails answers 502 with the build error in the body; later requests get the
/// same 502 at once without a new build (even after the start backoff); a reload that still
/// fails exits 1; fix + reload builds the stage, which serves; promote moves prod to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_build_is_502_not_retried_until_reload() {
    let t0 = Instant::now();
    // A 1 s start backoff: if a failed build were treated like a failed start it would be
    // retried after it; it must not be.
    // Declared before the server: dropped after it, once its containers are gone.
    let mut cleanup = ImageCleanup(Vec::new());
    let b = Berth::start_with("start_timeout_secs = 300\nfailure_backoff_secs = 1");
    let n = nonce();
    let marker = format!("berth-e2e-fixed-{n}");
    let boom = format!("berth-e2e-boom-{n}");
    let src = container_app_with_marker(&marker);
    let good_containerfile = fs::read_to_string(src.path().join("Containerfile")).unwrap();
    insert_before_cmd(src.path(), &format!("RUN echo {boom}-output && exit 3"));
    let app = "/broken";
    create_container_app(&b, src.path(), app);
    let img = b.app_image(app);
    cleanup.add(&img);

    let client = slow_client(&[], BUILD_WAIT);
    let url = b.http_url("localhost", "/broken/");
    let first = get(&client, &url, &[]).await;
    let first = match first {
        Ok(g) => g,
        Err(e) => b.fail(e),
    };
    b.ensure(
        first.status == 502 && first.body.contains("build failed") && first.body.contains(&format!("{boom}-output")),
        format!(
            "GET {url}: expected 502 whose body has \"build failed\" and the RUN's output {boom}-output, got {first:?}"
        ),
    );
    b.ensure(b.app_state(app) == "failed", format!("state after a failed build: {}", b.app_state(app)));
    let log1 = b.build_log(app);
    b.ensure(
        log1.ok() && log1.stdout.contains(&format!("{boom}-output")),
        format!("`app logs --build` should show the failed build's output: {log1}"),
    );
    let builds = b.builds_logged(&img);
    b.ensure(builds == 1, format!("expected 1 build of {img} in the server log, found {builds}"));

    for round in 0..3 {
        if round == 1 {
            // Past the start backoff.
            std::thread::sleep(Duration::from_secs(3));
        }
        let accept = if round == 2 { "text/html" } else { "*/*" };
        let g = get(&client, &url, &[("accept", accept)]).await;
        b.ensure(
            matches!(&g, Ok(g) if g.status == 502 && g.body.contains("build failed") && g.took < Duration::from_secs(2)),
            format!("request {round} (Accept {accept}) after the failed build: expected a quick 502 with the build error, got {g:?}"),
        );
        let now = b.builds_logged(&img);
        b.ensure(now == 1, format!("request {round} after the failed build started a new build ({now} builds logged)"));
        let log = b.build_log(app);
        b.ensure(
            log.stdout == log1.stdout,
            format!("request {round}: the build log changed (a new build ran):\n{log}"),
        );
    }
    b.ensure(image_id(&img).is_none(), format!("{img} exists although its build failed"));

    // A reload that still fails exits 1 and the app stays failed.
    let out = b.cli(&["app", "reload", app]);
    b.ensure(
        out.code == 1 && out.stderr.starts_with("error: ") && out.stderr.contains("build failed"),
        format!("reload of a still broken source: expected exit 1 with error: ... build failed: {out}"),
    );
    b.ensure(b.builds_logged(&img) == 2, format!("the reload should have run one more build of {img}"));

    // Fix and reload: the stage builds and serves; promote moves prod to it.
    fs::write(src.path().join("Containerfile"), good_containerfile).unwrap();
    let out = b.cli_ok(&["app", "reload", app]);
    b.ensure(out.stdout.contains(" built."), format!("reload after the fix should build: {out}"));
    let stage_url = b.http_url("localhost", &format!("{}/", stage_path(app)));
    let g = get(&client, &stage_url, &[]).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 200 && g.body.contains(&marker)),
        format!("after fix + reload the stage {stage_url}: expected 200 with {marker}, got {g:?}"),
    );
    let out = b.cli_ok(&["app", "promote", app]);
    let img_fixed = b.app_image(app);
    cleanup.add(&img_fixed);
    b.ensure(img_fixed != img, format!("after fix + promote prod's image should be new (was {img}): {out}"));
    let g = get(&client, &url, &[]).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 200 && g.body.contains(&marker)),
        format!("after fix + reload + promote GET {url}: expected 200 with {marker}, got {g:?}"),
    );
    b.ensure(b.app_state(app) == "running", format!("state after fix + promote + request: {}", b.app_state(app)));
    eprintln!("TIMING failed_build_is_502_not_retried_until_reload {:.1}s", t0.elapsed().as_secs_f64());
}

/// A pip install of a package that does not exist fails the build: 502 with pip's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pip_install_of_missing_package_is_502_with_the_error() {
    let t0 = Instant::now();
    // Declared before the server: dropped after it, once its containers are gone.
    let mut cleanup = ImageCleanup(Vec::new());
    let b = Berth::start_with("start_timeout_secs = 600");
    let pkg = format!("berth-e2e-no-such-package-{}", nonce());
    let src = tempfile::Builder::new().prefix("berth-e2e-src-").tempdir().unwrap();
    copy_dir(&fixture_app("python-flask"), src.path());
    fs::write(src.path().join("requirements.txt"), format!("flask\n{pkg}\n")).unwrap();
    let app = "/pipfail";
    b.cli_ok(&["app", "create", "--spec", "python-flask", src.path().to_str().unwrap(), app]);
    cleanup.add(b.app_image(app));
    let client = slow_client(&[], Duration::from_secs(600));
    let url = b.http_url("localhost", "/pipfail/");
    let g = get(&client, &url, &[]).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 502 && g.body.contains("build failed") && g.body.contains(&pkg)),
        format!("GET {url}: expected 502 with \"build failed\" and the missing package {pkg}, got {g:?}"),
    );
    let body = g.unwrap().body;
    b.ensure(
        body.contains("No matching distribution") || body.contains("Could not find a version"),
        format!("the 502 body should carry pip's error (\"No matching distribution found\"): {body}"),
    );
    let g = get(&client, &url, &[]).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 502 && g.took < Duration::from_secs(2)),
        format!("second request: expected a quick 502, got {g:?}"),
    );
    eprintln!("TIMING pip_install_of_missing_package_is_502_with_the_error {:.1}s", t0.elapsed().as_secs_f64());
}

/// While the image builds, a browser request (Accept: text/html) gets 503 with a small
/// self-refreshing "Starting" page at once; other requests wait and get the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_gets_starting_page_while_building() {
    let t0 = Instant::now();
    // Declared before the server: dropped after it, once its containers are gone.
    let mut cleanup = ImageCleanup(Vec::new());
    let b = Berth::start_with("start_timeout_secs = 300");
    let marker = format!("berth-e2e-slow-{}", nonce());
    let src = container_app_with_marker(&marker);
    insert_before_cmd(src.path(), "RUN sleep 5");
    let app = "slowbuild.localhost:/";
    create_container_app(&b, src.path(), app);
    cleanup.add(b.app_image(app));
    let client = slow_client(&["slowbuild.localhost"], BUILD_WAIT);
    let url = b.http_url("slowbuild.localhost", "/page");
    let html = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    let started = Instant::now();
    let resp = match client.get(&url).header("accept", html).send().await {
        Ok(r) => r,
        Err(e) => b.fail(format!("GET {url}: {e:?}")),
    };
    let took = started.elapsed();
    let status = resp.status().as_u16();
    let ctype = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let retry = resp.headers().get("retry-after").is_some();
    let body = resp.text().await.unwrap_or_default();
    b.ensure(
        status == 503
            && ctype.starts_with("text/html")
            && body.contains("Starting")
            && body.contains("http-equiv=\"refresh\"")
            && retry
            && took < Duration::from_secs(3),
        format!(
            "first browser request during the build: expected a quick 503 text/html \"Starting\" page with a refresh and Retry-After; got {status} {ctype:?} retry-after={retry} in {took:?}: {body}"
        ),
    );
    let state = b.app_state(app);
    b.ensure(state == "building", format!("state while the image builds: expected building, got {state}"));

    // A second browser request while still building: the page again, at once.
    let g = get(&client, &url, &[("accept", html)]).await;
    if b.app_state(app) == "building" {
        b.ensure(
            matches!(&g, Ok(g) if g.status == 503 && g.body.contains("Starting") && g.took < Duration::from_secs(3)),
            format!("second browser request during the build: {g:?}"),
        );
    }

    // A non-browser request waits for the build and the start.
    let g = get(&client, &url, &[("accept", "*/*")]).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 200 && g.body.contains(&marker) && g.body.contains("path=/page")),
        format!("a non-browser request during the build should wait and get 200 with {marker}: {g:?}"),
    );
    b.ensure(
        started.elapsed() >= Duration::from_secs(4),
        format!("the build has a RUN sleep 5 but the app served after {:?}", started.elapsed()),
    );
    // Once running, browsers get the app.
    let g = get(&client, &url, &[("accept", html)]).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 200 && g.body.contains(&marker)),
        format!("a browser request once the app runs: {g:?}"),
    );
    eprintln!("TIMING browser_gets_starting_page_while_building {:.1}s", t0.elapsed().as_secs_f64());
}

/// Bad input at create: exit 1, one `error:` line, nothing created (app list and snapshot
/// folders unchanged).
#[test]
fn bad_input_at_create_creates_nothing() {
    let t0 = Instant::now();
    let b = Berth::start();
    let tmp = tempfile::Builder::new().prefix("berth-e2e-bad-").tempdir().unwrap();
    let container_fixture = fixture_app("container");
    let container_src = container_fixture.to_str().unwrap().to_string();

    // A good baseline app (from a relative source path: the CLI makes it absolute).
    let repo_root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out =
        b.cli_in(repo_root, &["app", "create", "--spec", "container", "./tests/fixtures/apps/container", "/good"]);
    b.ensure(out.ok(), format!("create from a relative source path failed: {out}"));
    let good = b.app("/good");
    b.ensure(
        good["source_url"].as_str() == Some(container_src.as_str()),
        format!("a relative source should be stored absolute ({container_src}): {good}"),
    );
    let before: Vec<Value> = b.app_list();
    let mut sources_before = b.source_entries();
    b.ensure(!sources_before.is_empty(), "the good app has no snapshot under $BERTH_HOME/sources");

    // A git repository with one commit on main.
    let repo = tmp.path().join("repo");
    copy_dir(&container_fixture, &repo);
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "one"]);
    let repo_url = format!("file://{}", repo.display());

    // Containerfile that does not parse.
    let unparsable = tmp.path().join("unparsable");
    copy_dir(&container_fixture, &unparsable);
    let cf = fs::read_to_string(unparsable.join("Containerfile")).unwrap();
    fs::write(unparsable.join("Containerfile"), cf.replace("WORKDIR /app", "WORKDIR /app\nFROBNICATE now")).unwrap();
    // go without go.mod.
    let nogomod = tmp.path().join("nogomod");
    fs::create_dir_all(&nogomod).unwrap();
    fs::copy(fixture_app("go").join("main.go"), nogomod.join("main.go")).unwrap();
    // container without port and EXPOSE.
    let noport = tmp.path().join("noport");
    copy_dir(&container_fixture, &noport);
    let cf = fs::read_to_string(noport.join("Containerfile")).unwrap();
    let cf: String = cf.lines().filter(|l| !l.starts_with("EXPOSE")).map(|l| format!("{l}\n")).collect();
    fs::write(noport.join("Containerfile"), cf).unwrap();

    let missing = tmp.path().join("no-such-folder");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let cases: Vec<(&str, Vec<String>, &[&str])> = vec![
        (
            "source folder that does not exist",
            vec!["--spec".into(), "container".into(), s(&missing), "/bad1".into()],
            &["no-such-folder"],
        ),
        (
            "relative source folder that does not exist",
            vec!["--spec".into(), "container".into(), "./no-such-folder-rel".into(), "/bad2".into()],
            &["no-such-folder-rel"],
        ),
        (
            "git branch that does not exist",
            vec![
                "--spec".into(),
                "container".into(),
                "--branch".into(),
                "nosuchbranch".into(),
                repo_url.clone(),
                "/bad3".into(),
            ],
            &["nosuchbranch"],
        ),
        (
            "git commit that does not exist",
            vec![
                "--spec".into(),
                "container".into(),
                "--commit".into(),
                "0123456789abcdef0123456789abcdef01234567".into(),
                repo_url.clone(),
                "/bad4".into(),
            ],
            &["0123456789abcdef0123456789abcdef01234567"],
        ),
        (
            "git repository that does not exist",
            vec!["--spec".into(), "container".into(), format!("file://{}", s(&missing)), "/bad5".into()],
            &[],
        ),
        (
            "unknown spec",
            vec!["--spec".into(), "nosuchspec".into(), container_src.clone(), "/bad6".into()],
            &["nosuchspec"],
        ),
        (
            "Containerfile that does not parse",
            vec!["--spec".into(), "container".into(), s(&unparsable), "/bad7".into()],
            &["FROBNICATE"],
        ),
        (
            "go app without go.mod",
            vec!["--spec".into(), "go".into(), "--param".into(), "port=8080".into(), s(&nogomod), "/bad8".into()],
            &["go.mod"],
        ),
        (
            "container spec with no port and no EXPOSE",
            vec!["--spec".into(), "container".into(), s(&noport), "/bad9".into()],
            &["port"],
        ),
    ];
    let mut failures = Vec::new();
    for (what, args, needles) in &cases {
        let mut full: Vec<&str> = vec!["app", "create"];
        full.extend(args.iter().map(String::as_str));
        let out = b.cli_in(tmp.path(), &full);
        let mut problems = Vec::new();
        if out.code != 1 {
            problems.push(format!("exit code {} (want 1)", out.code));
        }
        if !is_single_error_line(&out.stderr) {
            problems.push("stderr is not exactly one `error: ` line".to_string());
        }
        for n in *needles {
            if !out.stderr.contains(n) {
                problems.push(format!("error does not mention {n:?}"));
            }
        }
        let after = b.app_list();
        if after != before {
            problems.push(format!("app list changed: {after:?}"));
        }
        let sources_after = b.source_entries();
        if sources_after != sources_before {
            let new: Vec<_> = sources_after.iter().filter(|p| !sources_before.contains(p)).collect();
            problems.push(format!("left behind under $BERTH_HOME/sources: {new:?}"));
            sources_before = sources_after;
        }
        if !problems.is_empty() {
            failures.push(format!("{what}: {} -- `berth {}`\n{out}", problems.join("; "), full.join(" ")));
        } else {
            eprintln!("ok: {what}: {}", out.stderr.trim());
        }
    }
    b.ensure(failures.is_empty(), format!("bad input cases failed:\n{}", failures.join("\n\n")));
    eprintln!("TIMING bad_input_at_create_creates_nothing {:.1}s", t0.elapsed().as_secs_f64());
}

/// Runs `berth app logs --build --follow APP` until it exits by itself; fails the test if it
/// still runs after `bound`. Returns its output and how long it ran.
fn follow_build_log(b: &Berth, app: &str, bound: Duration) -> (String, Duration) {
    let out = tempfile::NamedTempFile::new().expect("temp file for the follow output");
    let started = Instant::now();
    let mut child = std::process::Command::new(BERTH)
        .args(["app", "logs", "--build", "--follow", app])
        .env("BERTH_HOME", &b.home_path)
        .stdin(std::process::Stdio::null())
        .stdout(out.reopen().expect("reopen temp file"))
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn berth app logs --build --follow");
    let ended = wait_until(bound, Duration::from_millis(50), || child.try_wait().expect("try_wait").is_some());
    let took = started.elapsed();
    if ended.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let text = fs::read_to_string(out.path()).unwrap_or_default();
    b.ensure(
        ended.is_some(),
        format!("`berth app logs --build --follow {app}` still ran after {bound:?}; output so far:\n{text}"),
    );
    (text, took)
}

/// Creates a copy of the `container` fixture whose build runs `run` (a RUN line) first, as an
/// app at `app`, and sends its first request in the background (which starts the build);
/// returns once the build runs (its log exists and the app is building).
fn start_build(b: &Berth, cleanup: &mut ImageCleanup, app: &str, run: &str) -> tempfile::TempDir {
    let src = container_app_with_marker(&format!("berth-e2e-follow-{}", nonce()));
    insert_before_cmd(src.path(), run);
    create_container_app(b, src.path(), app);
    cleanup.add(b.app_image(app));
    let url = b.http_url("localhost", &format!("{app}/"));
    tokio::spawn(async move {
        let _ = get(&slow_client(&[], BUILD_WAIT), &url, &[]).await;
    });
    let running = wait_until(Duration::from_secs(60), Duration::from_millis(50), || {
        b.build_log(app).ok() && b.app_state(app) == "building"
    });
    b.ensure(running.is_some(), format!("the build of {app} did not start within 60 s: state {}", b.app_state(app)));
    src
}

/// `app logs --build --follow` ends by itself when the build succeeds, fails or is cancelled
/// (the app deleted mid-build), each shortly after the build ends, with the build's last line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_log_follow_ends_on_success_failure_and_cancel() {
    let t0 = Instant::now();
    // Declared before the server: dropped after it, once its containers are gone.
    let mut cleanup = ImageCleanup(Vec::new());
    let b = Berth::start_with("start_timeout_secs = 300");

    let _ok_src = start_build(&b, &mut cleanup, "/follow-ok", "RUN sleep 3");
    let (text, took) = follow_build_log(&b, "/follow-ok", BUILD_WAIT);
    let last = text.lines().last().unwrap_or("");
    b.ensure(
        last.starts_with("built ") && text.contains("RUN sleep 3"),
        format!(
            "follow of a successful build should show its steps and end with \"built ...\" (after {took:?}):\n{text}"
        ),
    );

    let _fail_src = start_build(&b, &mut cleanup, "/follow-fail", "RUN sleep 3 && echo follow-boom && exit 3");
    let (text, took) = follow_build_log(&b, "/follow-fail", BUILD_WAIT);
    let last = text.lines().last().unwrap_or("");
    b.ensure(
        last.starts_with("build failed: ") && text.contains("follow-boom"),
        format!("follow of a failed build should show its output and end with \"build failed: ...\" (after {took:?}):\n{text}"),
    );

    let _cancel_src = start_build(&b, &mut cleanup, "/follow-cancel", "RUN sleep 120");
    let follower = {
        let (home, app) = (b.home_path.clone(), "/follow-cancel");
        std::thread::spawn(move || {
            let started = Instant::now();
            let out = std::process::Command::new(BERTH)
                .args(["app", "logs", "--build", "--follow", app])
                .env("BERTH_HOME", &home)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("run berth app logs --build --follow");
            (String::from_utf8_lossy(&out.stdout).into_owned(), started.elapsed())
        })
    };
    // Let the follower attach, then delete the app: its build is abandoned.
    std::thread::sleep(Duration::from_millis(500));
    let deleted = Instant::now();
    b.cli_ok(&["app", "delete", "/follow-cancel"]);
    let ended = wait_until(Duration::from_secs(20), Duration::from_millis(50), || follower.is_finished());
    b.ensure(
        ended.is_some(),
        format!("follow of a build whose app was deleted still ran {:?} after the delete", deleted.elapsed()),
    );
    let (text, _) = follower.join().expect("follower thread");
    b.ensure(
        text.lines().last() == Some("build cancelled"),
        format!("follow of a cancelled build should end with \"build cancelled\":\n{text}"),
    );
    eprintln!("TIMING build_log_follow_ends_on_success_failure_and_cancel {:.1}s", t0.elapsed().as_secs_f64());
}

/// A build that exceeds `build_timeout_secs` ends with "build timed out", and
/// `app logs --build --follow` ends with it (it used to follow forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_log_follow_ends_when_the_build_times_out() {
    let t0 = Instant::now();
    // Declared before the server: dropped after it, once its containers are gone.
    let mut cleanup = ImageCleanup(Vec::new());
    let timeout_secs = 8;
    let b = Berth::start_with(&format!("start_timeout_secs = 300\nbuild_timeout_secs = {timeout_secs}"));
    let app = "/follow-timeout";
    let _src = start_build(&b, &mut cleanup, app, "RUN sleep 300");
    let (text, took) = follow_build_log(&b, app, Duration::from_secs(timeout_secs + 20));
    b.ensure(
        text.lines().last().is_some_and(|l| l.starts_with("build timed out")),
        format!("follow of a timed-out build should end with \"build timed out ...\" (after {took:?}):\n{text}"),
    );
    let g = get(&slow_client(&[], BUILD_WAIT), &b.http_url("localhost", &format!("{app}/")), &[]).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 502 && g.body.contains("did not finish within")),
        format!("a request after the timed-out build: expected 502 naming the timeout, got {g:?}"),
    );
    eprintln!("TIMING build_log_follow_ends_when_the_build_times_out {:.1}s", t0.elapsed().as_secs_f64());
}

/// A build whose base image does not exist fails with the engine's reason and the image's
/// name (not "Docker stream error"), in the 502 body and in the build log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_base_image_error_names_the_image() {
    let t0 = Instant::now();
    let b = Berth::start_with("start_timeout_secs = 300");
    let app = "/nobase";
    b.create_with_missing_base_image(app);
    let g = get(&slow_client(&[], BUILD_WAIT), &b.http_url("localhost", "/nobase/"), &[]).await;
    let says_why = |text: &str| {
        text.contains("python:4invalid-slim")
            && (text.contains("not found") || text.contains("pull access denied"))
            && !text.contains("Docker stream error")
    };
    b.ensure(
        matches!(&g, Ok(g) if g.status == 502 && g.body.contains("build failed") && says_why(&g.body)),
        format!("GET: expected 502 naming python:4invalid-slim and \"not found\"/\"pull access denied\", got {g:?}"),
    );
    let log = b.build_log(app);
    let last = log.stdout.lines().last().unwrap_or("").to_string();
    b.ensure(
        log.ok() && last.starts_with("build failed: ") && says_why(&last),
        format!("`app logs --build`: the last line should name the image and the reason: {log}"),
    );
    eprintln!("TIMING missing_base_image_error_names_the_image {:.1}s", t0.elapsed().as_secs_f64());
}
