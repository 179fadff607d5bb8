//! End-to-end tests of the admin API under a hung source: one app's git fetch that never
//! ends holds up no other app's change; a create whose client goes away (or that times out)
//! kills its git processes and leaves no folder; the path it reserved is free again; changes
//! to one app wait for each other; a change whose client goes away after it began still
//! completes, also when the server is stopped at once (shutdown waits for it). Also the
//! seed's single-dash proxy example, param-name checks, and owner-only home files.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A "git server" that accepts connections and never answers: a fetch from it hangs.
struct SilentGitServer {
    _listener: TcpListener,
    url: String,
}

impl SilentGitServer {
    fn start() -> SilentGitServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://127.0.0.1:{}/org/repo", listener.local_addr().unwrap().port());
        SilentGitServer { _listener: listener, url }
    }
}

/// Command lines of live processes (zombies have none) that mention `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) && !cmdline.contains("e2e_admin") {
                found.push(cmdline);
            }
        }
    }
    found
}

/// Starts `berth app create --spec container <url> <path>` in the background.
fn spawn_create(b: &Berth, url: &str, app_path: &str) -> Child {
    spawn_quiet(b, &["app", "create", "--spec", "container", url, app_path])
}

/// Waits until git is fetching from `url` (the create holds its path and is in its fetch).
fn wait_for_git(b: &Berth, url: &str) {
    let seen = wait_until(Duration::from_secs(15), Duration::from_millis(20), || !processes_mentioning(url).is_empty());
    b.ensure(seen.is_some(), format!("no git process fetching {url} appeared"));
}

/// Runs one CLI command, asserting success and an answer in under a second.
#[track_caller]
fn quick(b: &Berth, args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = b.cli(args);
    let took = start.elapsed();
    b.ensure(out.ok(), format!("`berth {}` failed while another app's fetch hangs: {out}", args.join(" ")));
    b.ensure(
        took < Duration::from_secs(1),
        format!("`berth {}` took {took:?} while another app's fetch hangs (limit 1 s)", args.join(" ")),
    );
    took
}

/// Issue 7 item 2: while one create hangs in its git fetch, `app list` and changes to other
/// apps (create, param update, promote, delete) answer at once; a second create at the same
/// path is refused at once. Then the client of the hung create goes away: its git processes
/// are killed, nothing is left under `sources/`, and the path can be created.
#[test]
fn a_hung_fetch_holds_up_no_other_app_and_dies_with_its_client() {
    let b = Berth::start();
    let git_server = SilentGitServer::start();
    let url = git_server.url.clone();
    b.cli_ok(&["app", "create", "--spec", "proxy", "--param", "url=http://127.0.0.1:9", "-", "/changed"]);
    b.cli_ok(&["app", "create", "--spec", "proxy", "--param", "url=http://127.0.0.1:9", "-", "/doomed"]);

    let mut hung = spawn_create(&b, &url, "/hung");
    wait_for_git(&b, &url);

    // In order: each change depends on the one before (promote needs the staged param).
    let commands: [&[&str]; 6] = [
        &["app", "list"],
        &["app", "create", "--spec", "proxy", "--param", "url=http://127.0.0.1:9", "-", "/other"],
        &["app", "create", "--spec", "image", "--param", "image=nginx", "--param", "port=80", "-", "/img"],
        &["param", "update", "GREETING", "hello", "/changed"],
        &["app", "promote", "/changed"],
        &["app", "delete", "/doomed"],
    ];
    let took: Vec<Duration> = commands.iter().map(|args| quick(&b, args)).collect();
    let prod_stage = b.prod_and_stage_versions("/changed");
    b.ensure(prod_stage == (vec![2], vec![2]), format!("promote did not move prod to version 2: {prod_stage:?}"));
    b.ensure(b.find_app("/doomed").is_none(), "/doomed was not deleted");

    // The same path, while its create is in progress: refused at once, not queued.
    let start = Instant::now();
    let out = b.cli(&["app", "create", "--spec", "proxy", "--param", "url=http://127.0.0.1:9", "-", "/hung"]);
    b.ensure(
        out.code == 1 && is_single_error_line(&out.stderr) && out.stderr.contains("being created at /hung"),
        format!("a create at the path of a create in progress must be refused: {out}"),
    );
    b.ensure(start.elapsed() < Duration::from_secs(1), format!("the refusal took {:?}", start.elapsed()));
    b.ensure(hung.try_wait().unwrap().is_none(), "the hung create ended on its own");

    // The client goes away: the server drops the request, which kills git and cleans up.
    hung.kill().unwrap();
    hung.wait().unwrap();
    let clean = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        processes_mentioning(&url).is_empty() && b.source_entries().is_empty()
    });
    b.ensure(
        clean.is_some(),
        format!(
            "after the client went away: git processes {:?}, entries under sources/ {:?}",
            processes_mentioning(&url),
            b.source_entries()
        ),
    );
    b.ensure(b.find_app("/hung").is_none(), "the cancelled create made an app");
    b.cli_ok(&["app", "create", "--spec", "proxy", "--param", "url=http://127.0.0.1:9", "-", "/hung"]);
    eprintln!("TIMING admin commands during a hung fetch: {took:?}");
}

/// Issue 7 item 3: a fetch longer than `[source] fetch_timeout_secs` fails with an error that
/// names the timeout, and leaves no process, no folder and no app.
#[test]
fn a_fetch_past_its_timeout_fails_cleanly() {
    let b = Berth::start_with("\n[source]\nfetch_timeout_secs = 2");
    let git_server = SilentGitServer::start();
    let start = Instant::now();
    let out = b.cli(&["app", "create", "--spec", "container", &git_server.url, "/slow"]);
    let took = start.elapsed();
    b.ensure(
        out.code == 1 && is_single_error_line(&out.stderr),
        format!("a timed-out create must fail with one error line: {out}"),
    );
    b.ensure(
        out.stderr.contains("timed out after 2s") && out.stderr.contains("fetch_timeout_secs"),
        format!("the error must name the timeout: {out}"),
    );
    b.ensure(took < Duration::from_secs(10), format!("the create took {took:?} with a 2 s fetch timeout"));
    b.ensure(processes_mentioning(&git_server.url).is_empty(), "git processes are left after the timeout");
    b.ensure(b.source_entries().is_empty(), format!("left under sources/: {:?}", b.source_entries()));
    b.ensure(b.app_list().is_empty(), "the timed-out create made an app");
}

/// A tiny HTTP upstream on 127.0.0.1 that answers every request with `body`.
fn upstream(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let answer =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    port
}

/// Issue 7 item 8: the seed's own proxy example, written with single-dash long options as
/// Clace's CLI accepts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_proxy_example_with_single_dash_options() {
    let b = Berth::start();
    let port = upstream("berth-e2e-upstream");
    let url = format!("url=http://127.0.0.1:{port}");
    let out = b.cli(&["app", "create", "--spec", "proxy", "--approve", "-param", &url, "-", "proxyapp.localhost:/"]);
    b.ensure(out.ok(), format!("the seed's proxy example must work: {out}"));
    let app = b.app("proxyapp.localhost:/");
    b.ensure(app["params"]["url"] == format!("http://127.0.0.1:{port}"), format!("params: {app}"));
    let got = get(&b.client(&["proxyapp.localhost"]), &b.http_url("proxyapp.localhost", "/"), &[]).await;
    b.ensure(
        matches!(&got, Ok(g) if g.status == 200 && g.body == "berth-e2e-upstream"),
        format!("GET through the proxy app: {got:?}"),
    );
    // Every long option takes one dash: -spec, -approve, -dry-run, -param=...
    let out =
        b.cli(&["app", "create", "-spec", "proxy", "-approve", "-dry-run", &format!("-param={url}"), "-", "/dry"]);
    b.ensure(out.ok() && out.stdout.contains("dry-run"), format!("single-dash -spec/-approve/-dry-run: {out}"));
    b.ensure(b.find_app("/dry").is_none(), "-dry-run created the app");
    b.cli_ok(&["param", "update", "-promote", "-dry-run", "GREETING", "hi", "proxyapp.localhost:/"]);
}

/// Issue 7 item 7: param names must be environment variable names, checked by the server at
/// create and at param update; nothing is stored for a refused one.
#[test]
fn param_names_must_be_env_names() {
    let b = Berth::start();
    b.cli_ok(&["app", "create", "--spec", "proxy", "--param", "url=http://127.0.0.1:9", "-", "/p"]);
    let before = (b.app_list(), b.version_list("/p"));
    let mut failures = Vec::new();
    let mut check = |what: String, out: CmdOut| {
        let ok = out.code == 1 && is_single_error_line(&out.stderr) && out.stderr.contains("invalid param name");
        if !ok {
            failures.push(format!("{what}: expected one `invalid param name` error line: {out}"));
        }
    };
    for key in ["A B", "1X", "A\nB", "A-B"] {
        let param = format!("{key}=1");
        let args =
            ["app", "create", "--spec", "proxy", "--param", "url=http://127.0.0.1:9", "--param", &param, "-", "/q"];
        check(format!("create with param {key:?}"), b.cli(&args));
    }
    for key in ["A B", "1X", "A=B", "A\nB", ""] {
        check(format!("param update {key:?}"), b.cli(&["param", "update", key, "1", "/p"]));
    }
    let after = (b.app_list(), b.version_list("/p"));
    b.ensure(failures.is_empty(), failures.join("\n"));
    b.ensure(after == before, format!("a refused param changed something: {after:?}"));
    b.cli_ok(&["param", "update", "GOOD_NAME_1", "1", "/p"]);
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display())).permissions().mode() & 0o777
}

/// Issue 7 item 7: the database, build logs and source snapshots are owner-only, when made
/// and (for a home whose modes were loosened) after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_files_are_owner_only() {
    let mut b = Berth::start();
    let marker = format!("berth-e2e-modes-{}", nonce());
    let src = container_app_with_marker(&marker);
    let mut images = ImageCleanup(Vec::new());
    b.cli_ok(&["app", "create", "--spec", "container", src.path().to_str().unwrap(), "/modes"]);
    images.add(b.app_image("/modes"));
    let client = slow_client(&[], Duration::from_secs(300));
    let got = get_until_marker(&client, &b.http_url("localhost", "/modes/"), &marker, Duration::from_secs(300)).await;
    b.ensure(matches!(&got, Ok(g) if g.status == 200), format!("the app did not build and serve: {got:?}"));

    let id = b.app_id("/modes");
    let home = b.home_path.clone();
    let snapshot =
        std::fs::read_dir(home.join("sources").join(&id)).unwrap().flatten().next().expect("a snapshot").path();
    let expected: Vec<(std::path::PathBuf, u32)> = vec![
        (home.join("metadata"), 0o700),
        (home.join("metadata/berth.db"), 0o600),
        (home.join("logs"), 0o700),
        (home.join("logs").join(format!("{id}.build.log")), 0o600),
        (home.join("sources"), 0o700),
        (home.join("sources").join(&id), 0o700),
        (snapshot.clone(), 0o700),
    ];
    let wrong = |expected: &[(std::path::PathBuf, u32)]| -> Vec<String> {
        expected
            .iter()
            .filter(|(p, m)| mode(p) != *m)
            .map(|(p, m)| format!("{} is {:o}, expected {m:o}", p.display(), mode(p)))
            .collect()
    };
    let after_create = wrong(&expected);
    b.ensure(after_create.is_empty(), format!("after create and build:\n{}", after_create.join("\n")));
    // A snapshot's own files keep the source's modes: they go into the image as they are.
    b.ensure(mode(&snapshot.join("server.py")) == mode(&src.path().join("server.py")), "snapshot file modes changed");

    b.stop_server();
    for (p, _) in &expected {
        let loose = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(loose)).unwrap();
    }
    b.start_server();
    let after_restart = wrong(&expected);
    b.ensure(after_restart.is_empty(), format!("after a restart of a loosened home:\n{}", after_restart.join("\n")));
}

/// Issue 7 item 2: changes to one app are serialised. While the app's reload hangs in its
/// fetch, a param update of the same app waits (and other apps' changes do not); when the
/// reload's client goes away, the reload is cancelled, changes nothing, and the param update
/// runs.
#[test]
fn changes_to_one_app_wait_for_each_other() {
    let git_server = SilentGitServer::start();
    // The app's repository, reached through an `insteadOf` rewrite of the silent server's URL
    // while the rewrite is in the server's git config; without it the fetch hangs.
    let forge = tempfile::Builder::new().prefix("berth-e2e-forge-").tempdir().unwrap();
    let repo = forge.path().join("org/repo");
    copy_dir(&fixture_app("container"), &repo);
    set_container_marker(&repo, &format!("berth-e2e-serial-{}", nonce()));
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "one"]);
    let gitconfig = forge.path().join("gitconfig");
    let base = git_server.url.trim_end_matches("org/repo");
    let rewrite = format!(
        "[url \"file://{}/\"]\n\tinsteadOf = {base}\n[protocol \"file\"]\n\tallow = always\n",
        forge.path().display()
    );
    std::fs::write(&gitconfig, &rewrite).unwrap();
    let gc = gitconfig.to_str().unwrap();
    let b = Berth::start_with_env("", &[("GIT_CONFIG_GLOBAL", gc), ("GIT_CONFIG_NOSYSTEM", "1")]);
    b.cli_ok(&["app", "create", "--spec", "container", &git_server.url, "/same"]);
    b.cli_ok(&["app", "create", "--spec", "proxy", "--param", "url=http://127.0.0.1:9", "-", "/neighbour"]);
    let id = b.app_id("/same");
    let snapshots = || std::fs::read_dir(b.home_path.join("sources").join(&id)).unwrap().count();
    b.ensure(snapshots() == 1, "create made one snapshot");

    std::fs::write(&gitconfig, "").unwrap();
    let spawn = |args: &[&str]| {
        Command::new(BERTH)
            .args(args)
            .env("BERTH_HOME", &b.home_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth")
    };
    let mut reload = spawn(&["app", "reload", "/same"]);
    wait_for_git(&b, &git_server.url);
    let mut update = spawn(&["param", "update", "GREETING", "hello", "/same"]);
    quick(&b, &["param", "update", "GREETING", "hello", "/neighbour"]);
    // The update of /same must still be waiting for the reload: give it time to answer.
    std::thread::sleep(Duration::from_millis(1500));
    b.ensure(update.try_wait().unwrap().is_none(), "a param update ran while a reload of the same app was fetching");
    b.ensure(b.version_list("/same").len() == 1, "a change of /same was stored during its reload");

    reload.kill().unwrap();
    reload.wait().unwrap();
    let done = wait_until(Duration::from_secs(10), Duration::from_millis(50), || update.try_wait().unwrap().is_some());
    b.ensure(done.is_some(), "the param update did not run after the reload was cancelled");
    let status = update.wait().unwrap();
    let mut err = String::new();
    update.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    b.ensure(status.success(), format!("the param update failed: {err}"));
    let versions = b.version_list("/same");
    b.ensure(versions.len() == 2, format!("expected the create and the param update only: {versions:?}"));
    b.ensure(versions[1]["params"]["GREETING"] == "hello", format!("version 2: {}", versions[1]));
    let clean = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        processes_mentioning(&git_server.url).is_empty() && snapshots() == 1
    });
    b.ensure(
        clean.is_some(),
        format!("the cancelled reload left git {:?} or a folder", processes_mentioning(&git_server.url)),
    );
}

/// A change whose client goes away after the change began runs to its end: a promote whose
/// CLI is killed while the new prod container starts still moves prod (it is never left
/// half-made, with the new container started and prod not switched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promote_whose_client_goes_away_still_completes() {
    let b = Berth::start();
    let marker = format!("berth-e2e-promote-{}", nonce());
    let src = container_app_with_marker(&marker);
    let mut images = ImageCleanup(Vec::new());
    b.cli_ok(&["app", "create", "--spec", "container", src.path().to_str().unwrap(), "/prom"]);
    images.add(b.app_image("/prom"));
    let client = slow_client(&[], Duration::from_secs(300));
    let got = get_until_marker(&client, &b.http_url("localhost", "/prom/"), &marker, Duration::from_secs(300)).await;
    b.ensure(matches!(&got, Ok(g) if g.status == 200), format!("the app did not build and serve: {got:?}"));
    let id = b.app_id("/prom");
    b.cli_ok(&["param", "update", "GREETING", "hello", "/prom"]);

    let mut promote = spawn_quiet(&b, &["app", "promote", "/prom"]);
    // The new prod container exists: the promote is under way. Its client goes away.
    let started = wait_until(Duration::from_secs(30), Duration::from_millis(10), || {
        b.containers_of_variant(&id, "prod").len() == 2
    });
    b.ensure(started.is_some(), "the promote did not create the new prod container");
    promote.kill().unwrap();
    promote.wait().unwrap();
    let moved = wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        b.prod_and_stage_versions("/prom").0 == vec![2]
    });
    b.ensure(moved.is_some(), format!("prod did not move to version 2: {:?}", b.prod_and_stage_versions("/prom")));
    let gone = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        b.containers_of_variant(&id, "prod").len() == 1
    });
    b.ensure(gone.is_some(), format!("the old prod container stayed: {:?}", b.containers_of_variant(&id, "prod")));
}

/// Server shutdown waits for an admin change whose client went away: a promote whose CLI is
/// killed while the new prod container starts, followed at once by `server stop`, has moved
/// prod when the server is started again (the change's task is tracked, not dropped with the
/// runtime at exit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_change_whose_client_went_away() {
    let mut b = Berth::start();
    b.create_image_app("nginx", 80, "/fin", &[]);
    let id = b.app_id("/fin");
    let client = slow_client(&[], Duration::from_secs(60));
    let got = get_settled(&client, &b.http_url("localhost", "/fin/"), Duration::from_secs(60)).await;
    b.ensure(matches!(&got, Ok(g) if g.status == 200), format!("the app did not serve: {got:?}"));
    b.cli_ok(&["param", "update", "GREETING", "hello", "/fin"]);

    let mut promote = spawn_quiet(&b, &["app", "promote", "/fin"]);
    let started = wait_until(Duration::from_secs(30), Duration::from_millis(5), || {
        b.containers_of_variant(&id, "prod").len() == 2
    });
    b.ensure(started.is_some(), "the promote did not create the new prod container");
    promote.kill().unwrap();
    promote.wait().unwrap();
    b.sigterm_server();
    b.start_server();
    b.ensure(
        b.prod_and_stage_versions("/fin").0 == vec![2],
        format!("shutdown dropped the promote: prod is {:?}", b.prod_and_stage_versions("/fin")),
    );
}

/// Starts the CLI with `args` against `b`'s home, its output discarded: a client that a test
/// can kill while its change runs.
fn spawn_quiet(b: &Berth, args: &[&str]) -> Child {
    Command::new(BERTH)
        .args(args)
        .env("BERTH_HOME", &b.home_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the berth CLI")
}
