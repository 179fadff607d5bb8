//! End-to-end tests of Clace-format spec folders (`app.star`, `params.star`): a folder
//! written for the test with typed params, used by path (`--spec /dir`) and through
//! `spec_dirs`; Clace's messages for bad params; the one warning line for what berth ignores;
//! a source's own `params.star`; and Clace's own python-streamlit spec (heredoc Containerfile)
//! built on the classic builder and served through berth.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const PARAMS_STAR: &str = r#"
param("image", description="The image to run")
param("port", type=INT, description="The port inside the container")
param("workers", type=INT, default=2, description="Worker count")
param("debug", type=BOOLEAN, default=False)
param("tags", type=LIST, default=["a", "b"])
param("labels", type=DICT, default={"team": "x"})
param("app_name", default="Typed")
param("secrets", type=LIST, default=[["regex:.*"]])
"#;

const APP_STAR: &str = r#"
load("proxy.in", "proxy")
load("container.in", "container")
load("exec.in", "exec")

def handler(req):
    return exec.run("ls", [])

app = ace.app(param.app_name,
    routes=[ace.proxy("/", proxy.config(container.URL)), ace.api("/run", handler)],
    container=container.config(container.IMAGE_PREFIX + param.image, port=param.port),
    permissions=[ace.permission("proxy.in", "config", [container.URL]),
                 ace.permission("container.in", "config", [container.IMAGE_PREFIX + param.image]),
                 ace.permission("exec.in", "run")])
"#;

/// Writes a Clace-format spec folder `root/name`.
fn write_spec(root: &Path, name: &str, params_star: &str, app_star: &str) -> String {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("params.star"), params_star).unwrap();
    std::fs::write(dir.join("app.star"), app_star).unwrap();
    dir.display().to_string()
}

/// A server whose berth.toml lists `spec_dirs`.
fn start_with_spec_dirs(dirs: &[&str]) -> Berth {
    let mut b = Berth::configure("");
    let toml_path = b.home_path.join("berth.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    let list = dirs.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>().join(", ");
    std::fs::write(&toml_path, format!("spec_dirs = [{list}]\n{toml}")).unwrap();
    b.start_server();
    b
}

fn container_env(b: &Berth, app: &str) -> Vec<String> {
    let id = b.single_container(&b.app_id(app));
    serde_json::from_str(&inspect(&id, "{{json .Config.Env}}")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clace_spec_folder_with_typed_params() {
    let specs = tempfile::tempdir().unwrap();
    let dir = write_spec(specs.path(), "typed", PARAMS_STAR, APP_STAR);
    let b = start_with_spec_dirs(&[specs.path().to_str().unwrap()]);

    // Bad values are refused with Clace's messages, on one line, and nothing is created.
    for (param, msg) in [
        ("workers=many", "param workers is not an int"),
        ("tags={}", "param tags is not a json list"),
        ("labels=[1]", "param labels is not a json dict"),
    ] {
        let out = b.cli(&[
            "app",
            "create",
            "--spec",
            &dir,
            "--param",
            "image=nginx",
            "--param",
            "port=80",
            "--param",
            param,
            "-",
            "/bad",
        ]);
        b.ensure(!out.ok() && out.stderr.contains(msg) && is_single_error_line(&out.stderr), format!("{param}: {out}"));
    }
    let out = b.cli(&["app", "create", "--spec", &dir, "--param", "port=80", "-", "/bad"]);
    b.ensure(
        !out.ok() && out.stderr.contains("param image is a required param, a value has to be provided"),
        format!("missing image: {out}"),
    );
    b.ensure(b.find_app("/bad").is_none(), "nothing is created by a refused create");

    // By path: created, with one warning line naming what berth ignores.
    let out =
        b.cli_ok(&["app", "create", "--spec", &dir, "--param", "image=nginx", "--param", "port=80", "-", "/typed"]);
    let warnings: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("Warning:")).collect();
    b.ensure(
        warnings.len() == 1
            && warnings[0].contains("ace.api routes are not served")
            && warnings[0].contains("plugin exec.in is not run")
            && warnings[0].contains("permission exec.in.run is not used"),
        format!("one warning line expected: {out}"),
    );
    b.ensure(b.app("/typed")["spec"] == serde_json::json!(dir), "the app records the folder");

    // The app serves through berth, with the typed defaults in its env as Clace passes them.
    let client = slow_client(&["localhost"], Duration::from_secs(120));
    let got = get_until_marker(&client, &b.http_url("localhost", "/typed/"), "nginx", Duration::from_secs(120)).await;
    b.ensure(matches!(&got, Ok(g) if g.status == 200), format!("GET /typed/: {got:?}"));
    let env = container_env(&b, "/typed");
    for want in
        ["workers=2", "debug=false", "tags=[\"a\",\"b\"]", "labels={\"team\":\"x\"}", "app_name=Typed", "port=80"]
    {
        b.ensure(env.iter().any(|e| e == want), format!("{want} not in the container env {env:?}"));
    }
    b.ensure(
        !env.iter().any(|e| e.starts_with("secrets=")),
        format!("Clace's secrets allow-list is no env var: {env:?}"),
    );

    // Through spec_dirs, by the folder's name.
    let out = b.cli_ok(&[
        "app",
        "create",
        "--spec",
        "typed",
        "--param",
        "image=nginx",
        "--param",
        "port=80",
        "--param",
        "workers=4",
        "-",
        "/named",
    ]);
    b.ensure(out.stderr.contains("Warning: spec typed: berth ignores:"), format!("{out}"));
    let specs_out = b.cli_ok(&["spec", "list"]);
    b.ensure(specs_out.stdout.contains("typed"), format!("spec list: {specs_out}"));
}

#[test]
fn bad_clace_spec_folders_are_refused_on_one_line() {
    let specs = tempfile::tempdir().unwrap();
    let b = Berth::start();
    let bad_default = write_spec(specs.path(), "bad-default", "param('p1', type=INT, default='x')\n", APP_STAR);
    let out = b.cli(&["app", "create", "--spec", &bad_default, "-", "/x"]);
    b.ensure(
        !out.ok()
            && out.stderr.contains("param p1 is of type int but default value is not an int")
            && is_single_error_line(&out.stderr),
        format!("{out}"),
    );
    let bad_type = write_spec(specs.path(), "bad-type", "param('p1', type='FLOAT')\n", APP_STAR);
    let out = b.cli(&["app", "create", "--spec", &bad_type, "-", "/x"]);
    b.ensure(!out.ok() && out.stderr.contains("unknown type FLOAT for p1"), format!("{out}"));
    // A relative folder is sent as its absolute path.
    let out = b.cli_in(specs.path(), &["app", "create", "--spec", "./bad-type", "-", "/x"]);
    b.ensure(
        !out.ok() && out.stderr.contains(&format!("{bad_type}/params.star:1: unknown type FLOAT for p1")),
        format!("{out}"),
    );
    let no_app = write_spec(specs.path(), "no-app", "", "x = 1\n");
    let out = b.cli(&["app", "create", "--spec", &no_app, "-", "/x"]);
    b.ensure(!out.ok() && out.stderr.contains("app not defined, check app.star"), format!("{out}"));
    let static_spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clace-appspecs/static");
    let out = b.cli(&["app", "create", "--spec", static_spec.to_str().unwrap(), "-", "/x"]);
    b.ensure(!out.ok() && out.stderr.contains("is not supported by berth: static_only apps"), format!("{out}"));
    b.ensure(b.app_list().is_empty(), "nothing was created");
}

/// An app source with its own params.star: its params replace the spec's (as in Clace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_params_star_overrides_the_spec() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("Containerfile"), "FROM nginx\nEXPOSE 80\n").unwrap();
    // Clace's container app.star reads app_name, port, preserve_host and secrets: declared here too.
    std::fs::write(
        src.path().join("params.star"),
        "param('app_name', default='Mine')\nparam('port', type=INT, required=False)\n\
         param('preserve_host', type=BOOLEAN, default=False)\nparam('secrets', type=LIST, default=[])\n\
         param('greeting', default='hi')\nparam('needed', type=INT)\n",
    )
    .unwrap();
    let b = Berth::start();
    let clace_container = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clace-appspecs/container");
    let spec = clace_container.to_str().unwrap();
    let source = src.path().to_str().unwrap();
    let out = b.cli(&["app", "create", "--spec", spec, source, "/src"]);
    b.ensure(
        !out.ok() && out.stderr.contains("param needed is a required param, a value has to be provided"),
        format!("the source's required param: {out}"),
    );
    let out = b.cli(&["app", "create", "--spec", spec, "--param", "needed=x", source, "/src"]);
    b.ensure(!out.ok() && out.stderr.contains("param needed is not an int"), format!("{out}"));
    b.cli_ok(&["app", "create", "--spec", spec, "--param", "needed=3", source, "/src"]);
    let client = slow_client(&["localhost"], Duration::from_secs(300));
    let got = get_until_marker(&client, &b.http_url("localhost", "/src/"), "nginx", Duration::from_secs(300)).await;
    b.ensure(matches!(&got, Ok(g) if g.status == 200), format!("GET /src/: {got:?}"));
    let env = container_env(&b, "/src");
    b.ensure(env.iter().any(|e| e == "greeting=hi") && env.iter().any(|e| e == "needed=3"), format!("{env:?}"));
    b.ensure(env.iter().any(|e| e == "app_name=Mine"), format!("the spec's params.star is replaced: {env:?}"));
}

/// Clace's python-streamlit spec, unchanged (its Containerfile writes the start script with a
/// heredoc), builds on the engine's classic builder and serves through berth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clace_streamlit_spec_builds_and_serves() {
    let b = Berth::start_with("start_timeout_secs = 1500");
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clace-appspecs/python-streamlit");
    let src = fixture_app("python-streamlit");
    let out = b.cli_ok(&["app", "create", "--spec", spec.to_str().unwrap(), src.to_str().unwrap(), "/clst"]);
    b.ensure(out.stderr.contains("container.config volumes ignored"), format!("the volume is warned about: {out}"));
    let client = slow_client(&["localhost"], Duration::from_secs(1500));
    let url = b.http_url("localhost", "/clst/_stcore/health");
    let got = get_until_marker(&client, &url, "ok", Duration::from_secs(1500)).await;
    b.ensure(matches!(&got, Ok(g) if g.status == 200 && g.body.contains("ok")), format!("GET {url}: {got:?}"));
    let page = get_until_marker(
        &client,
        &b.http_url("localhost", "/clst/"),
        "<title>Streamlit</title>",
        Duration::from_secs(60),
    )
    .await;
    b.ensure(matches!(&page, Ok(g) if g.status == 200), format!("GET /clst/: {page:?}"));
}

/// A git source's params.star counts too: the spec requires `needed`, the source's
/// params.star gives it a default, so the create needs no `--param needed`; a bad value is
/// refused with the source's type, once fetched, leaving nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_source_params_star_is_read_after_the_fetch() {
    let specs = tempfile::tempdir().unwrap();
    let app_star = "load('proxy.in', 'proxy')\nload('container.in', 'container')\n\
                    app = ace.app('g', routes=[ace.proxy('/', proxy.config(container.URL))], container=container.config(container.AUTO))\n";
    let spec = write_spec(specs.path(), "needs", "param('needed')\n", app_star);
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(repo.path().join("Containerfile"), "FROM nginx\nEXPOSE 80\n").unwrap();
    std::fs::write(repo.path().join("params.star"), "param('needed', type=INT, default=5)\n").unwrap();
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-qm", "app"]);
    let url = format!("file://{}", repo.path().display());
    let b = Berth::start();
    let out = b.cli(&["app", "create", "--spec", &spec, "--param", "needed=five", &url, "/g"]);
    b.ensure(!out.ok() && out.stderr.contains("param needed is not an int"), format!("{out}"));
    b.ensure(b.app_list().is_empty() && b.source_entries().is_empty(), "nothing is left by the refused create");
    b.cli_ok(&["app", "create", "--spec", &spec, &url, "/g"]);
    let client = slow_client(&["localhost"], Duration::from_secs(300));
    let got = get_until_marker(&client, &b.http_url("localhost", "/g/"), "nginx", Duration::from_secs(300)).await;
    b.ensure(matches!(&got, Ok(g) if g.status == 200), format!("GET /g/: {got:?}"));
    let env = container_env(&b, "/g");
    b.ensure(env.iter().any(|e| e == "needed=5"), format!("{env:?}"));
}
