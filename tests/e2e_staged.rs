//! End-to-end tests of staged config: every app has a prod and a stage (`<path>_cl_stage`),
//! each change lands on stage as a new version, `app promote` moves prod to it.
//!
//! The examples are those of the "App Environment Params", "Container Build Args" and
//! "Container Options" sections of Clace's container overview, with `berth` for `clace` and the
//! `python-fasthtml` fixture (tests/fixtures/apps/python-fasthtml: `basic_ws.py`,
//! `basic_app.py`) in place of the fasthtml examples' GitHub URL. Then: no failed request
//! through a promote, versions (list, switch, revert), a version that cannot start, dry runs.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// The first request to a fasthtml app may wait for its image build (pip install).
const CONTAINER_TOML: &str = "start_timeout_secs = 600";
/// How long a test waits for a first answer (build + start).
const SETTLE: Duration = Duration::from_secs(600);

const WS_MARKER: &str = "berth-fixture-fasthtml-basic_ws";
const APP_MARKER: &str = "berth-fixture-fasthtml-basic_app";
const HOST: &str = "fasthtmlapp.localhost";
const APP_PATH: &str = "fasthtmlapp.localhost:/";

fn fasthtml_src() -> String {
    fixture_app("python-fasthtml").to_str().expect("utf-8 fixture path").to_string()
}

/// `berth app create --approve --spec python-fasthtml --param APP_MODULE=basic_ws:app
/// [extra...] <fixture> APP_PATH`; returns the app id.
#[track_caller]
fn create_fasthtml(b: &Berth, app_path: &str, extra: &[&str]) -> String {
    let src = fasthtml_src();
    let mut args =
        vec!["app", "create", "--approve", "--spec", "python-fasthtml", "--param", "APP_MODULE=basic_ws:app"];
    args.extend_from_slice(extra);
    args.push(&src);
    args.push(app_path);
    b.cli_ok(&args);
    b.app_id(app_path)
}

/// The first real (non-503) answer to GET `url`; fails the test unless it is a 200.
async fn get_200(b: &Berth, client: &reqwest::Client, url: &str) -> Got {
    match get_settled(client, url, SETTLE).await {
        Ok(g) if g.status == 200 => g,
        Ok(g) => b.fail(format!("GET {url}: expected 200, got {}: {:.800}", g.status, g.body)),
        Err(e) => b.fail(format!("GET {url}: {e}")),
    }
}

/// GET `url` (200 expected) and check which fixture module answered.
async fn expect_marker(b: &Berth, client: &reqwest::Client, url: &str, marker: &str, ctx: &str) {
    let g = get_200(b, client, url).await;
    let other = if marker == WS_MARKER { APP_MARKER } else { WS_MARKER };
    b.ensure(
        g.body.contains(marker) && !g.body.contains(other),
        format!("{ctx}: GET {url} should be served by {marker}, got: {:.800}", g.body),
    );
}

/// GET `url` (the fixture's `/env`, 200 expected) and parse it.
async fn env_of(b: &Berth, client: &reqwest::Client, url: &str) -> BTreeMap<String, String> {
    let g = get_200(b, client, url).await;
    let env = parse_env_listing(&g.body);
    b.ensure(env.contains_key("PATH"), format!("GET {url} does not look like an env listing: {:.800}", g.body));
    env
}

#[track_caller]
fn expect_env(b: &Berth, env: &BTreeMap<String, String>, key: &str, want: Option<&str>, ctx: &str) {
    b.ensure(
        env.get(key).map(String::as_str) == want,
        format!("{ctx}: env {key} should be {want:?}, got {:?}; whole env: {env:?}", env.get(key)),
    );
}

/// The line of `param list` output for `name` (first column), if any.
fn param_line<'a>(listing: &'a str, name: &str) -> Option<&'a str> {
    listing.lines().find(|l| l.split_whitespace().next() == Some(name))
}

/// Runs the berth CLI for `home` outside of `&Berth` (for use from another task).
fn cli_at(home: PathBuf, args: Vec<String>) -> CmdOut {
    let out = Command::new(BERTH)
        .args(&args)
        .env("BERTH_HOME", &home)
        .env_remove("RUST_LOG")
        .env_remove("BERTH_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run berth");
    CmdOut {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The running prod container other than `old` (which may still be draining right after a
/// promote); fails the test unless there is exactly one.
#[track_caller]
fn new_prod_container(b: &Berth, id: &str, old: &str) -> String {
    let new: Vec<String> = b.running_variant(id, "prod").into_iter().filter(|c| c != old).collect();
    if new.len() != 1 {
        b.fail(format!(
            "after promote exactly one new running prod container expected (besides the old {old}): {:?}",
            b.containers_of_variant(id, "prod")
        ));
    }
    new[0].clone()
}

/// `--image` of the running container `id` (the image name it was created from).
fn container_image(id: &str) -> String {
    inspect(id, "{{.Config.Image}}")
}

// ---------------------------------------------------------------------------
// 1. App Environment Params
// ---------------------------------------------------------------------------

/// The overview's param example: create with `APP_MODULE=basic_ws:app`, `param update
/// APP_MODULE basic_app:app` lands on stage only (prod keeps serving basic_ws), `param list`
/// shows both, `-` deletes a param, `app promote` moves prod to basic_app. `CL_APP_PATH` is
/// empty for prod at `/` and `/_cl_stage` for its stage; `PORT` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_params_are_staged_listed_deleted_and_promoted() {
    let b = Berth::start_with(CONTAINER_TOML);
    let id = create_fasthtml(&b, APP_PATH, &[]);
    let client = slow_client(&[HOST], SETTLE);
    let prod = |p: &str| b.https_url(HOST, p);
    let stage = |p: &str| b.https_url(HOST, &format!("/_cl_stage{p}"));

    // Prod serves basic_ws, with its params in the env.
    expect_marker(&b, &client, &prod("/"), WS_MARKER, "after create, prod").await;
    let env = env_of(&b, &client, &prod("/env")).await;
    expect_env(&b, &env, "APP_MODULE", Some("basic_ws:app"), "prod after create");
    expect_env(&b, &env, "CL_APP_PATH", Some(""), "prod after create (app at /)");
    expect_env(&b, &env, "PORT", Some("5000"), "prod after create (python-fasthtml listens on 5000)");
    let e = b.app(APP_PATH);
    b.ensure(
        e["prod_version"] == e["stage_version"] && e["staged_changes"] == false,
        format!("after create prod and stage should be the same version with no staged changes: {e}"),
    );

    // clace param update APP_MODULE basic_app:app fasthtmlapp.localhost:/
    b.cli_ok(&["param", "update", "APP_MODULE", "basic_app:app", APP_PATH]);
    let e = b.app(APP_PATH);
    b.ensure(
        e["staged_changes"] == true
            && e["prod_version"] != e["stage_version"]
            && e["params"]["APP_MODULE"] == "basic_ws:app",
        format!("after param update: staged_changes true, prod params unchanged (basic_ws:app): {e}"),
    );

    // Stage serves basic_app with the new param; CL_APP_PATH is the stage path.
    expect_marker(&b, &client, &stage("/"), APP_MARKER, "after param update, stage").await;
    let senv = env_of(&b, &client, &stage("/env")).await;
    expect_env(&b, &senv, "APP_MODULE", Some("basic_app:app"), "stage after param update");
    expect_env(&b, &senv, "CL_APP_PATH", Some("/_cl_stage"), "stage of the app at /");
    expect_env(&b, &senv, "PORT", Some("5000"), "stage");

    // Prod is untouched.
    expect_marker(&b, &client, &prod("/"), WS_MARKER, "after param update (not promoted), prod").await;
    let env = env_of(&b, &client, &prod("/env")).await;
    expect_env(&b, &env, "APP_MODULE", Some("basic_ws:app"), "prod after a staged param update");
    expect_env(&b, &env, "CL_APP_PATH", Some(""), "prod after a staged param update");
    let prod_ctrs = b.running_variant(&id, "prod");
    let stage_ctrs = b.running_variant(&id, "stage");
    b.ensure(
        prod_ctrs.len() == 1 && stage_ctrs.len() == 1 && prod_ctrs != stage_ctrs,
        format!("one running prod and one running stage container expected: prod {prod_ctrs:?}, stage {stage_ctrs:?}"),
    );

    // param list shows stage and prod side by side.
    let listing = b.param_list(APP_PATH);
    let header = listing.lines().find(|l| l.contains("STAGE") && l.contains("PROD"));
    b.ensure(
        header.is_some_and(|h| h.find("STAGE") < h.find("PROD")),
        format!("param list should have a header with STAGE then PROD:\n{listing}"),
    );
    let line = param_line(&listing, "APP_MODULE").unwrap_or_default();
    b.ensure(
        matches!((line.find("basic_app:app"), line.find("basic_ws:app")), (Some(s), Some(p)) if s < p),
        format!("param list: APP_MODULE should show basic_app:app (stage) then basic_ws:app (prod):\n{listing}"),
    );

    // A second staged param, then deleted with `-`.
    b.cli_ok(&["param", "update", "GREETING", "hello-stage", APP_PATH]);
    let senv = env_of(&b, &client, &stage("/env")).await;
    expect_env(&b, &senv, "GREETING", Some("hello-stage"), "stage after param update GREETING");
    expect_env(&b, &senv, "APP_MODULE", Some("basic_app:app"), "stage keeps the earlier staged param");
    let env = env_of(&b, &client, &prod("/env")).await;
    expect_env(&b, &env, "GREETING", None, "prod after a staged param update GREETING");
    let listing = b.param_list(APP_PATH);
    b.ensure(
        param_line(&listing, "GREETING").is_some_and(|l| l.contains("hello-stage")),
        format!("param list should show GREETING=hello-stage on stage:\n{listing}"),
    );

    b.cli_ok(&["param", "update", "GREETING", "-", APP_PATH]);
    let senv = env_of(&b, &client, &stage("/env")).await;
    expect_env(&b, &senv, "GREETING", None, "stage after `param update GREETING -`");
    expect_env(&b, &senv, "APP_MODULE", Some("basic_app:app"), "stage after deleting another param");
    let listing = b.param_list(APP_PATH);
    b.ensure(
        !listing.contains("hello-stage"),
        format!("param list still shows the deleted param GREETING:\n{listing}"),
    );
    let versions = b.version_list(APP_PATH);
    let (_, stage_v) = b.prod_and_stage_versions(APP_PATH);
    let stage_entry = versions.iter().find(|v| stage_v.first().is_some_and(|s| v["version"].as_i64() == Some(*s)));
    b.ensure(
        stage_entry.is_some_and(|v| v["params"].get("GREETING").is_none() && v["params"]["APP_MODULE"] == "basic_app:app"),
        format!("version list: the stage version's params should have APP_MODULE=basic_app:app and no GREETING: {versions:?}"),
    );

    // Promote: prod serves basic_app; the first answer after promote returns is the new one.
    b.cli_ok(&["app", "promote", APP_PATH]);
    expect_marker(&b, &client, &prod("/"), APP_MARKER, "right after app promote, prod").await;
    let env = env_of(&b, &client, &prod("/env")).await;
    expect_env(&b, &env, "APP_MODULE", Some("basic_app:app"), "prod after promote");
    expect_env(&b, &env, "CL_APP_PATH", Some(""), "prod after promote");
    expect_env(&b, &env, "GREETING", None, "prod after promote (deleted on stage before)");
    let e = b.app(APP_PATH);
    b.ensure(
        e["staged_changes"] == false
            && e["prod_version"] == e["stage_version"]
            && e["params"]["APP_MODULE"] == "basic_app:app",
        format!("after promote: no staged changes, prod_version == stage_version, prod params basic_app:app: {e}"),
    );
    let listing = b.param_list(APP_PATH);
    b.ensure(
        param_line(&listing, "APP_MODULE").is_some_and(|l| !l.contains("basic_ws:app") && l.contains("basic_app:app")),
        format!("param list after promote should show basic_app:app on both sides:\n{listing}"),
    );
    // The replaced prod container goes away.
    let gone = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        !prod_ctrs.iter().any(|c| container_exists(c))
    });
    b.ensure(gone.is_some(), format!("the replaced prod container {prod_ctrs:?} still exists 30 s after promote"));
}

/// `CL_APP_PATH` for a path app: `/fh` for prod, `/fh_cl_stage` for its stage; `--promote`
/// on a param update changes both at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_params_of_a_path_app_and_param_update_promote() {
    let b = Berth::start_with(CONTAINER_TOML);
    let app_path = "/fh";
    create_fasthtml(&b, app_path, &[]);
    let client = slow_client(&[], SETTLE);

    expect_marker(&b, &client, &b.https_url("localhost", "/fh/"), WS_MARKER, "prod /fh").await;
    let env = env_of(&b, &client, &b.https_url("localhost", "/fh/env")).await;
    expect_env(&b, &env, "CL_APP_PATH", Some("/fh"), "prod of the app at /fh");
    expect_env(&b, &env, "APP_MODULE", Some("basic_ws:app"), "prod of the app at /fh");
    let senv = env_of(&b, &client, &b.https_url("localhost", "/fh_cl_stage/env")).await;
    expect_env(&b, &senv, "CL_APP_PATH", Some("/fh_cl_stage"), "stage of the app at /fh");

    b.cli_ok(&["param", "update", "--promote", "APP_MODULE", "basic_app:app", app_path]);
    expect_marker(&b, &client, &b.https_url("localhost", "/fh/"), APP_MARKER, "prod after param update --promote")
        .await;
    expect_marker(
        &b,
        &client,
        &b.https_url("localhost", "/fh_cl_stage/"),
        APP_MARKER,
        "stage after param update --promote",
    )
    .await;
    let env = env_of(&b, &client, &b.http_url("localhost", "/fh/env")).await;
    expect_env(&b, &env, "APP_MODULE", Some("basic_app:app"), "prod after param update --promote");
    expect_env(&b, &env, "CL_APP_PATH", Some("/fh"), "prod after param update --promote");
    let e = b.app(app_path);
    b.ensure(
        e["staged_changes"] == false && e["prod_version"] == e["stage_version"],
        format!("after param update --promote prod and stage should be on the same version: {e}"),
    );
}

// ---------------------------------------------------------------------------
// 2. Container Build Args
// ---------------------------------------------------------------------------

/// The overview's build-arg example. The page uses `PYTHON_VERSION=3.11.1` at create and
/// `3.11.2` for the update; only `python:3.12.5-slim`, `python:3.12-slim` and
/// `python:3.11-slim` exist on this machine (no registry access), so this test uses
/// `3.11-slim` at create and `3.12-slim` for the update instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_args_change_the_build_and_are_staged() {
    // Declared before the server so that it is dropped after it (and its containers).
    let mut images = ImageCleanup(Vec::new());
    let b = Berth::start_with(CONTAINER_TOML);
    let id = create_fasthtml(&b, APP_PATH, &["--carg", "PYTHON_VERSION=3.11-slim"]);
    // The same app without the build arg, for comparison.
    create_fasthtml(&b, "plain.localhost:/", &[]);
    let img_311 = b.app_image(APP_PATH);
    let img_plain = b.app_image("plain.localhost:/");
    images.add(img_311.clone());
    b.ensure(
        !img_311.is_empty() && img_311 != img_plain,
        format!(
            "--carg PYTHON_VERSION=3.11-slim should give another image than no build arg: {img_311:?} vs {img_plain:?}"
        ),
    );
    let e = b.app(APP_PATH);
    b.ensure(
        e["build_args"]["PYTHON_VERSION"] == "3.11-slim",
        format!("app list: build_args should hold PYTHON_VERSION=3.11-slim: {e}"),
    );

    // Images are named by their inputs' hash: one left over from an earlier run is not rebuilt.
    let prebuilt = image_id(&img_311).is_some();
    let client = slow_client(&[HOST], SETTLE);
    expect_marker(&b, &client, &b.https_url(HOST, "/"), WS_MARKER, "prod built with 3.11-slim").await;
    let prod_ctr = b.single_running_variant(&id, "prod");
    b.ensure(
        container_image(&prod_ctr) == img_311,
        format!("the prod container runs {} instead of the app's image {img_311}", container_image(&prod_ctr)),
    );
    // Checked at the end (so the staging checks below still run): the build log names the
    // base image the build arg selected.
    let mut problems = Vec::new();
    let blog = b.build_log(APP_PATH);
    if prebuilt {
        eprintln!("note: {img_311} existed before the test, so no build ran and the build log is not checked");
    } else if !(blog.ok() && blog.stdout.contains("PYTHON_VERSION=3.11-slim")) {
        problems.push(format!(
            "`berth app logs --build {APP_PATH}` should show the build arg PYTHON_VERSION=3.11-slim: {blog}"
        ));
    }

    // clace app update-metadata carg PYTHON_VERSION=3.11.2 fasthtmlapp.localhost:/ (3.12-slim here)
    b.cli_ok(&["app", "update-metadata", "carg", "PYTHON_VERSION=3.12-slim", APP_PATH]);
    let e = b.app(APP_PATH);
    b.ensure(
        e["image"] == img_311.as_str()
            && e["build_args"]["PYTHON_VERSION"] == "3.11-slim"
            && e["staged_changes"] == true,
        format!("after a staged carg update prod's image and build args must not change: {e}"),
    );
    expect_marker(&b, &client, &b.https_url(HOST, "/_cl_stage/"), WS_MARKER, "stage built with 3.12-slim").await;
    let stage_ctr = b.single_running_variant(&id, "stage");
    let img_312 = container_image(&stage_ctr);
    images.add(img_312.clone());
    b.ensure(
        img_312 != img_311 && img_312 != img_plain,
        format!("the stage container should run a new image for PYTHON_VERSION=3.12-slim, runs {img_312}"),
    );
    b.ensure(
        b.running_variant(&id, "prod") == vec![prod_ctr.clone()] && container_image(&prod_ctr) == img_311,
        format!("prod's container must stay as it was until promote: {:?}", b.containers_of_variant(&id, "prod")),
    );
    expect_marker(&b, &client, &b.https_url(HOST, "/"), WS_MARKER, "prod after a staged carg update").await;

    b.cli_ok(&["app", "promote", APP_PATH]);
    let e = b.app(APP_PATH);
    b.ensure(
        e["image"] == img_312.as_str()
            && e["build_args"]["PYTHON_VERSION"] == "3.12-slim"
            && e["staged_changes"] == false,
        format!("after promote prod's image should be the stage's {img_312} with PYTHON_VERSION=3.12-slim: {e}"),
    );
    expect_marker(&b, &client, &b.https_url(HOST, "/"), WS_MARKER, "prod after promote").await;
    let new_prod = new_prod_container(&b, &id, &prod_ctr);
    b.ensure(
        container_image(&new_prod) == img_312,
        format!("after promote the prod container runs {} instead of {img_312}", container_image(&new_prod)),
    );
    b.ensure(problems.is_empty(), problems.join("\n"));
}

// ---------------------------------------------------------------------------
// 3. Container Options
// ---------------------------------------------------------------------------

/// The overview's container-option example: `--copt cpu-shares=1000` at create, then
/// `update-metadata copt cpu-shares=500` staged (stage 500, prod 1000) until `app promote`.
/// Unknown options and host-access options are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_options_map_to_the_engine_and_are_staged() {
    let b = Berth::start_with(CONTAINER_TOML);
    let id = create_fasthtml(&b, APP_PATH, &["--copt", "cpu-shares=1000"]);
    let e = b.app(APP_PATH);
    b.ensure(
        json_str(&e["container_options"]["cpu-shares"]) == "1000",
        format!("app list: container_options should hold cpu-shares=1000: {e}"),
    );
    let client = slow_client(&[HOST], SETTLE);
    expect_marker(&b, &client, &b.https_url(HOST, "/"), WS_MARKER, "prod with cpu-shares=1000").await;
    let prod_ctr = b.single_running_variant(&id, "prod");
    let shares = inspect(&prod_ctr, "{{.HostConfig.CpuShares}}");
    b.ensure(shares == "1000", format!("prod container HostConfig.CpuShares: expected 1000, got {shares}"));

    // clace app update-metadata copt cpu-shares=500 fasthtmlapp.localhost:/
    b.cli_ok(&["app", "update-metadata", "copt", "cpu-shares=500", APP_PATH]);
    let e = b.app(APP_PATH);
    b.ensure(
        json_str(&e["container_options"]["cpu-shares"]) == "1000" && e["staged_changes"] == true,
        format!("after a staged copt update prod's container_options stay cpu-shares=1000: {e}"),
    );
    expect_marker(&b, &client, &b.https_url(HOST, "/_cl_stage/"), WS_MARKER, "stage with cpu-shares=500").await;
    let stage_ctr = b.single_running_variant(&id, "stage");
    let shares = inspect(&stage_ctr, "{{.HostConfig.CpuShares}}");
    b.ensure(shares == "500", format!("stage container HostConfig.CpuShares: expected 500, got {shares}"));
    b.ensure(
        b.running_variant(&id, "prod") == vec![prod_ctr.clone()],
        format!("prod's container must not change before promote: {:?}", b.containers_of_variant(&id, "prod")),
    );
    let shares = inspect(&prod_ctr, "{{.HostConfig.CpuShares}}");
    b.ensure(shares == "1000", format!("prod container before promote: CpuShares should stay 1000, got {shares}"));

    // Refused options change nothing.
    let before = b.version_list_raw(APP_PATH);
    let out = b.cli(&["app", "update-metadata", "copt", "no-such-option=1", APP_PATH]);
    b.ensure(
        out.code == 1
            && out.stderr.contains("no-such-option")
            && ["cpu-shares", "memory", "pids-limit", "read-only", "cap-drop"].iter().all(|k| out.stderr.contains(k)),
        format!("an unknown container option should exit 1 naming it and listing the known ones: {out}"),
    );
    for opt in ["privileged", "network=host", "pid=host", "volume=/:/host"] {
        let out = b.cli(&["app", "update-metadata", "copt", opt, APP_PATH]);
        let name = opt.split('=').next().unwrap();
        b.ensure(
            out.code == 1 && out.stderr.contains(name) && out.stderr.contains("allow_host_access"),
            format!("copt {opt} should be refused (exit 1, naming {name} and allow_host_access): {out}"),
        );
    }
    let out = b.cli(&[
        "app",
        "create",
        "--spec",
        "image",
        "--approve",
        "--param",
        "image=nginx",
        "--param",
        "port=80",
        "--copt",
        "privileged",
        "-",
        "priv.localhost:/",
    ]);
    b.ensure(out.code == 1, format!("app create --copt privileged should be refused: {out}"));
    b.ensure(b.find_app("priv.localhost:/").is_none(), "a refused app create must not create the app");
    let after = b.version_list_raw(APP_PATH);
    b.ensure(before == after, format!("refused options changed the versions:\nbefore {before}\nafter {after}"));

    // Promote: prod's (new) container gets 500.
    b.cli_ok(&["app", "promote", APP_PATH]);
    expect_marker(&b, &client, &b.https_url(HOST, "/"), WS_MARKER, "prod after promote").await;
    let new_prod = new_prod_container(&b, &id, &prod_ctr);
    let shares = inspect(&new_prod, "{{.HostConfig.CpuShares}}");
    b.ensure(shares == "500", format!("prod container after promote: CpuShares expected 500, got {shares}"));
    let e = b.app(APP_PATH);
    b.ensure(
        json_str(&e["container_options"]["cpu-shares"]) == "500",
        format!("after promote app list container_options should be cpu-shares=500: {e}"),
    );
    let gone = wait_until(Duration::from_secs(30), Duration::from_millis(200), || !container_exists(&prod_ctr));
    b.ensure(gone.is_some(), format!("the replaced prod container {prod_ctr} still exists 30 s after promote"));
}

/// More options reach the engine's HostConfig (image app, so no build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_options_memory_pids_cap_drop_reach_host_config() {
    let b = Berth::start_with(CONTAINER_TOML);
    let app_path = "opts.localhost:/";
    let id = b.create_image_app(
        "nginx",
        80,
        app_path,
        &["--copt", "memory=256m", "--copt", "pids-limit=200", "--copt", "cap-drop=NET_RAW"],
    );
    let client = b.client(&["opts.localhost"]);
    let g = get_200(&b, &client, &b.https_url("opts.localhost", "/")).await;
    b.ensure(g.body.contains("Welcome to nginx"), format!("nginx page expected: {:.300}", g.body));
    let c = b.single_running_variant(&id, "prod");
    let mem = inspect(&c, "{{.HostConfig.Memory}}");
    let pids = inspect(&c, "{{.HostConfig.PidsLimit}}");
    let capdrop = inspect(&c, "{{json .HostConfig.CapDrop}}");
    b.ensure(mem == "268435456", format!("memory=256m: HostConfig.Memory expected 268435456, got {mem}"));
    b.ensure(pids == "200", format!("pids-limit=200: HostConfig.PidsLimit expected 200, got {pids}"));
    b.ensure(capdrop.contains("NET_RAW"), format!("cap-drop=NET_RAW: HostConfig.CapDrop is {capdrop}"));
}

/// With `[container] allow_host_access = true` a host-access option is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_access_options_allowed_by_config() {
    let b = Berth::start_with("allow_host_access = true");
    let app_path = "priv.localhost:/";
    b.create_image_app("nginx", 80, app_path, &[]);
    let out = b.cli(&["app", "update-metadata", "copt", "privileged", app_path]);
    b.ensure(out.ok(), format!("copt privileged should be accepted with allow_host_access = true: {out}"));
    let e = b.version_list(app_path);
    b.ensure(
        e.iter().any(|v| v["stage"] == true && v["container_options"].get("privileged").is_some()),
        format!("the stage version should hold the privileged option: {e:?}"),
    );
}

// ---------------------------------------------------------------------------
// 4. Promote without downtime
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Sample {
    started: Instant,
    result: Result<(u16, String), String>,
}

/// Four client loops hit prod for the whole of a promote (and the old container's removal):
/// no error status, no transport error, and responses switch to the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promote_under_load_has_no_failed_request() {
    let b = Berth::start_with(CONTAINER_TOML);
    let id = create_fasthtml(&b, APP_PATH, &[]);
    let client = slow_client(&[HOST], SETTLE);
    let url = b.http_url(HOST, "/");
    expect_marker(&b, &client, &url, WS_MARKER, "prod before the change").await;
    let old_prod = b.single_running_variant(&id, "prod");
    b.cli_ok(&["param", "update", "APP_MODULE", "basic_app:app", APP_PATH]);

    let stop = Arc::new(AtomicBool::new(false));
    let load_client = client_for(&[HOST]);
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (stop, c, url) = (stop.clone(), load_client.clone(), url.clone());
        loops.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let result = match c.get(&url).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        match r.text().await {
                            Ok(body) => {
                                let which = if body.contains(APP_MARKER) {
                                    "new"
                                } else if body.contains(WS_MARKER) {
                                    "old"
                                } else {
                                    "other"
                                };
                                Ok((status, which.to_string()))
                            }
                            Err(e) => Err(format!("body: {e:?}")),
                        }
                    }
                    Err(e) => Err(format!("{e:?}")),
                };
                samples.push(Sample { started, result });
            }
            samples
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let promote_start = Instant::now();
    let home = b.home_path.clone();
    let out = tokio::task::spawn_blocking(move || cli_at(home, vec!["app".into(), "promote".into(), APP_PATH.into()]))
        .await
        .unwrap();
    let promote_end = Instant::now();
    // Keep the load on while the old container is drained and removed.
    let removed =
        wait_until_async(Duration::from_secs(30), Duration::from_millis(100), || !container_exists(&old_prod)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for l in loops {
        samples.extend(l.await.unwrap());
    }
    b.ensure(out.ok(), format!("app promote under load failed: {out}"));
    b.ensure(removed.is_some(), format!("the old prod container {old_prod} was not removed within 30 s of promote"));

    let errors: Vec<&Sample> = samples.iter().filter(|s| !matches!(s.result, Ok((200..=299, _)))).collect();
    let before = samples.iter().filter(|s| s.started < promote_start).count();
    let after: Vec<&Sample> = samples.iter().filter(|s| s.started > promote_end).collect();
    let old_seen = samples.iter().any(|s| matches!(&s.result, Ok((_, w)) if w == "old"));
    let new_seen = samples.iter().any(|s| matches!(&s.result, Ok((_, w)) if w == "new"));
    let stale_after: Vec<&&Sample> = after.iter().filter(|s| !matches!(&s.result, Ok((_, w)) if w == "new")).collect();
    let summary = format!(
        "{} requests ({before} before promote, {} during ({:?}), {} after); {} failed; first failures: {:?}",
        samples.len(),
        samples.len() - before - after.len(),
        promote_end - promote_start,
        after.len(),
        errors.len(),
        errors.iter().take(10).map(|s| &s.result).collect::<Vec<_>>()
    );
    b.ensure(samples.len() >= 40 && before > 0 && !after.is_empty(), format!("too little load: {summary}"));
    b.ensure(errors.is_empty(), format!("requests failed during the promote: {summary}"));
    b.ensure(old_seen && new_seen, format!("responses should switch from basic_ws to basic_app: {summary}"));
    b.ensure(
        stale_after.is_empty(),
        format!(
            "requests started after promote returned must get the new version; {} did not: {:?}; {summary}",
            stale_after.len(),
            stale_after.iter().take(5).map(|s| &s.result).collect::<Vec<_>>()
        ),
    );
}

// ---------------------------------------------------------------------------
// 5. Versions
// ---------------------------------------------------------------------------

/// `version list` (table and json), `version switch N`, `version revert`, `previous`/`next`:
/// prod serves the chosen version each time (checked by the fixture's marker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_list_switch_and_revert_serve_the_chosen_version() {
    let b = Berth::start_with(CONTAINER_TOML);
    create_fasthtml(&b, APP_PATH, &[]);
    let client = slow_client(&[HOST], SETTLE);
    let url = b.https_url(HOST, "/");
    expect_marker(&b, &client, &url, WS_MARKER, "version 1").await;

    let vs = b.version_list(APP_PATH);
    b.ensure(
        vs.len() == 1
            && vs[0]["prod"] == true
            && vs[0]["stage"] == true
            && vs[0]["params"]["APP_MODULE"] == "basic_ws:app",
        format!("after create: one version, prod and stage, APP_MODULE=basic_ws:app: {vs:?}"),
    );
    let v1 = vs[0]["version"].as_i64().unwrap_or_else(|| b.fail(format!("version is not a number: {vs:?}")));
    b.ensure(vs[0]["reason"].as_str().is_some_and(|r| !r.is_empty()), format!("version 1 has no reason: {vs:?}"));

    b.cli_ok(&["param", "update", "--promote", "APP_MODULE", "basic_app:app", APP_PATH]);
    expect_marker(&b, &client, &url, APP_MARKER, "after param update --promote").await;
    let vs = b.version_list(APP_PATH);
    let newest = vs.iter().filter_map(|v| v["version"].as_i64()).max().unwrap_or(0);
    b.ensure(vs.len() == 2 && newest > v1, format!("param update --promote should add one version: {vs:?}"));
    let v2 = newest;
    let (p, s) = b.prod_and_stage_versions(APP_PATH);
    b.ensure(p == vec![v2] && s == vec![v2], format!("prod and stage should both be version {v2}: {vs:?}"));
    let table = b.cli_ok(&["version", "list", APP_PATH]).stdout;
    let marked = table.lines().find(|l| l.contains("=====>")).unwrap_or_default();
    b.ensure(
        marked.split_whitespace().any(|w| w == v2.to_string()),
        format!("version list table should mark version {v2} as prod with =====>:\n{table}"),
    );

    // version switch N
    let out = b.cli_ok(&["version", "switch", &v1.to_string(), APP_PATH]);
    expect_marker(&b, &client, &url, WS_MARKER, &format!("right after `version switch {v1}` ({})", out.stdout.trim()))
        .await;
    let (p, s) = b.prod_and_stage_versions(APP_PATH);
    b.ensure(
        p == vec![v1] && s == vec![v2],
        format!("after switch {v1}: prod {p:?} (want {v1}), stage {s:?} (want {v2})"),
    );
    let e = b.app(APP_PATH);
    b.ensure(
        e["prod_version"].as_i64() == Some(v1) && e["params"]["APP_MODULE"] == "basic_ws:app",
        format!("app list after switch {v1}: prod_version {v1} with APP_MODULE=basic_ws:app: {e}"),
    );
    expect_marker(&b, &client, &b.https_url(HOST, "/_cl_stage/"), APP_MARKER, "stage after version switch").await;

    // version revert: back to what prod served before its last change (v2).
    b.cli_ok(&["version", "revert", APP_PATH]);
    expect_marker(&b, &client, &url, APP_MARKER, "right after `version revert`").await;
    let (p, _) = b.prod_and_stage_versions(APP_PATH);
    b.ensure(p == vec![v2], format!("after revert prod should be version {v2} again, is {p:?}"));

    // previous / next
    b.cli_ok(&["version", "switch", "previous", APP_PATH]);
    expect_marker(&b, &client, &url, WS_MARKER, "right after `version switch previous`").await;
    let (p, _) = b.prod_and_stage_versions(APP_PATH);
    b.ensure(p == vec![v1], format!("after switch previous prod should be version {v1}, is {p:?}"));
    b.cli_ok(&["version", "switch", "next", APP_PATH]);
    expect_marker(&b, &client, &url, APP_MARKER, "right after `version switch next`").await;
    let (p, _) = b.prod_and_stage_versions(APP_PATH);
    b.ensure(p == vec![v2], format!("after switch next prod should be version {v2}, is {p:?}"));
}

// ---------------------------------------------------------------------------
// 6. A version that cannot start
// ---------------------------------------------------------------------------

/// Promoting (or switching to) a version whose container cannot start (`user=nosuchuser`)
/// exits 1 and leaves prod serving what it served, in the same container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_of_a_version_that_cannot_start_keeps_prod_serving() {
    let b = Berth::start_with(CONTAINER_TOML);
    let app_path = "failing.localhost:/";
    let host = "failing.localhost";
    let id = b.create_image_app("nginx", 80, app_path, &[]);
    let client = b.client(&[host]);
    let url = b.https_url(host, "/");
    let g = get_200(&b, &client, &url).await;
    b.ensure(g.body.contains("Welcome to nginx"), format!("nginx page expected: {:.300}", g.body));
    let prod_ctr = b.single_running_variant(&id, "prod");
    let e0 = b.app(app_path);

    b.cli_ok(&["app", "update-metadata", "copt", "user=nosuchuser", app_path]);
    let (p_before, s_bad) = b.prod_and_stage_versions(app_path);
    let out = b.cli(&["app", "promote", app_path]);
    b.ensure(out.code == 1, format!("promoting a version whose container cannot start should exit 1: {out}"));
    b.ensure(is_single_error_line(&out.stderr), format!("promote failure should be one `error: ` line: {out}"));

    let g = get_200(&b, &client, &url).await;
    b.ensure(g.body.contains("Welcome to nginx"), format!("prod after a failed promote: {:.300}", g.body));
    b.ensure(
        b.running_variant(&id, "prod") == vec![prod_ctr.clone()],
        format!("prod must keep its container after a failed promote: {:?}", b.containers_of_variant(&id, "prod")),
    );
    let (p, s) = b.prod_and_stage_versions(app_path);
    b.ensure(p == p_before && s == s_bad, format!("versions after a failed promote: prod {p:?} stage {s:?}"));
    let e = b.app(app_path);
    b.ensure(
        e["prod_version"] == e0["prod_version"]
            && e["staged_changes"] == true
            && e["container_options"].get("user").is_none(),
        format!("app list after a failed promote: prod unchanged, staged changes kept: {e}"),
    );

    // The same through version switch.
    let bad = s_bad.first().copied().unwrap_or_default();
    let out = b.cli(&["version", "switch", &bad.to_string(), app_path]);
    b.ensure(out.code == 1, format!("switching prod to a version that cannot start should exit 1: {out}"));
    let g = get_200(&b, &client, &url).await;
    b.ensure(g.body.contains("Welcome to nginx"), format!("prod after a failed switch: {:.300}", g.body));
    let (p, _) = b.prod_and_stage_versions(app_path);
    b.ensure(p == p_before, format!("prod version after a failed switch: {p:?}, want {p_before:?}"));

    // And through --promote on the change itself.
    let out = b.cli(&["app", "update-metadata", "copt", "--promote", "user=nosuchuser2", app_path]);
    b.ensure(out.code == 1, format!("update-metadata --promote of a version that cannot start should exit 1: {out}"));
    let g = get_200(&b, &client, &url).await;
    b.ensure(g.body.contains("Welcome to nginx"), format!("prod after a failed --promote: {:.300}", g.body));
    b.ensure(
        b.running_variant(&id, "prod") == vec![prod_ctr.clone()],
        format!("prod must keep its container: {:?}", b.containers_of_variant(&id, "prod")),
    );
}

// ---------------------------------------------------------------------------
// 7. Dry runs
// ---------------------------------------------------------------------------

/// `--dry-run` on param update, update-metadata, promote, version switch and revert prints
/// what would change and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_change_nothing() {
    let b = Berth::start_with(CONTAINER_TOML);
    let app_path = "dry.localhost:/";
    let id = b.create_image_app("nginx", 80, app_path, &[]);
    // v2 on prod and stage, v3 on stage only: promote, switch and revert all have a target.
    b.cli_ok(&["param", "update", "--promote", "FOO", "bar", app_path]);
    b.cli_ok(&["param", "update", "FOO", "baz", app_path]);
    let snapshot = || (b.version_list_raw(app_path), b.app(app_path), b.param_list(app_path), b.containers(&id));
    let before = snapshot();
    let (p, s) = b.prod_and_stage_versions(app_path);
    b.ensure(p != s, format!("setup: prod and stage should differ: prod {p:?} stage {s:?}"));

    let cmds: Vec<Vec<&str>> = vec![
        vec!["param", "update", "--dry-run", "FOO", "qux", app_path],
        vec!["param", "update", "--dry-run", "FOO", "-", app_path],
        vec!["param", "update", "--dry-run", "--promote", "NEWP", "1", app_path],
        vec!["app", "update-metadata", "copt", "--dry-run", "cpu-shares=500", app_path],
        vec!["app", "update-metadata", "copt", "--dry-run", "--promote", "memory=256m", app_path],
        vec!["app", "update-metadata", "conf", "--dry-run", "container.idle_shutdown_secs=600", app_path],
        vec!["app", "promote", "--dry-run", app_path],
        vec!["version", "switch", "--dry-run", "1", app_path],
        vec!["version", "switch", "--dry-run", "previous", app_path],
        vec!["version", "revert", "--dry-run", app_path],
    ];
    for args in cmds {
        let out = b.cli(&args);
        b.ensure(out.ok(), format!("`berth {}` failed: {out}", args.join(" ")));
        b.ensure(
            out.stdout.to_lowercase().contains("dry-run") || out.stdout.to_lowercase().contains("dry run"),
            format!("`berth {}` should say it was a dry run: {out}", args.join(" ")),
        );
        let now = snapshot();
        b.ensure(
            now == before,
            format!("`berth {}` changed something:\nbefore: {:?}\nafter:  {:?}", args.join(" "), before, now),
        );
    }
}
