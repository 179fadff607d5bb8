//! End-to-end tests of `berth apply` and `berth sync` against local git fixtures (a forge folder
//! of repositories made by the test, reached through an `insteadOf` rewrite of
//! `https://github.com/` in the server's git config; no network): the issue's three example
//! apps, idempotence, all-or-nothing on failing files, `--clobber`, `--dry-run`, an apply file
//! in a git repository, and a sync picking up new commits (scheduled and `sync run`), kept
//! across a server restart. No app is started: applies fetch and check, they do not build.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A folder of git repositories standing in for github.com, and the git config that sends
/// `https://github.com/ORG/REPO` there.
struct Forge {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    gitconfig: String,
}

impl Forge {
    fn new() -> Forge {
        let tmp = tempfile::Builder::new().prefix("berth-e2e-apply-").tempdir().unwrap();
        let root = tmp.path().join("forge");
        fs::create_dir_all(&root).unwrap();
        let gitconfig = tmp.path().join("gitconfig");
        fs::write(
            &gitconfig,
            format!(
                "[url \"file://{}/\"]\n\tinsteadOf = https://github.com/\n[protocol \"file\"]\n\tallow = always\n",
                root.display()
            ),
        )
        .unwrap();
        Forge { root, gitconfig: gitconfig.display().to_string(), _tmp: tmp }
    }

    /// A repository `org/repo` with `files` (relative path, content) committed on `branch`.
    fn repo(&self, name: &str, branch: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.root.join(name);
        fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", branch]);
        self.commit(&dir, files, "first");
        dir
    }

    /// Writes `files` into the repository and commits; returns the commit id.
    fn commit(&self, dir: &Path, files: &[(&str, &str)], message: &str) -> String {
        for (path, content) in files {
            let f = dir.join(path);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, content).unwrap();
        }
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-qm", message]);
        git(dir, &["rev-parse", "HEAD"])
    }

    fn start(&self, extra_env: &[(&str, &str)]) -> Berth {
        let mut env = vec![("GIT_CONFIG_GLOBAL", self.gitconfig.as_str()), ("GIT_CONFIG_NOSYSTEM", "1")];
        env.extend_from_slice(extra_env);
        Berth::start_with_env("", &env)
    }
}

/// The files of a built-in spec's fixture app, to commit into a repository (under `prefix`).
fn fixture_files(spec: &str, prefix: &str) -> Vec<(String, String)> {
    let dir = fixture_app(spec);
    fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (format!("{prefix}{}", p.file_name().unwrap().to_str().unwrap()), fs::read_to_string(&p).unwrap()))
        .collect()
}

fn as_refs(files: &[(String, String)]) -> Vec<(&str, &str)> {
    files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

/// The issue's example repositories: streamlit-example (branch master) and fasthtml with its
/// app in examples/.
fn example_repos(forge: &Forge) {
    forge.repo("streamlit/streamlit-example", "master", &as_refs(&fixture_files("python-streamlit", "")));
    forge.repo("AnswerDotAI/fasthtml", "main", &as_refs(&fixture_files("python-fasthtml", "examples/")));
}

/// The issue's example file, with `internal_url` for the proxy app.
fn examples_file(internal_url: &str) -> String {
    format!(
        r#"
limits = {{"cpus": "1", "memory": "512m"}}
app("/misc/streamlit_example", "github.com/streamlit/streamlit-example", git_branch="master",
    spec="python-streamlit", container_opts=limits)
app("fasthtml.:", "github.com/AnswerDotAI/fasthtml/examples", spec="python-fasthtml",
    params={{"APP_MODULE": "basic_ws:app"}}, container_opts=limits)
app("/internal", "-", spec="proxy", params={{"url": "{internal_url}"}})
"#
    )
}

fn write_file(dir: &Path, name: &str, content: &str) -> String {
    let f = dir.join(name);
    fs::write(&f, content).unwrap();
    f.display().to_string()
}

/// The params of the version the app's stage serves.
#[track_caller]
fn stage_params(b: &Berth, app_path: &str) -> Value {
    let vs = b.version_list(app_path);
    vs.iter().find(|v| v["stage"] == Value::Bool(true)).map(|v| v["params"].clone()).unwrap_or(Value::Null)
}

/// Every app's versions, to compare before and after a command that must change nothing.
fn all_versions(b: &Berth) -> Vec<String> {
    b.app_list().iter().map(|a| b.version_list_raw(&json_str(&a["app_path"]))).collect()
}

#[test]
fn issue_examples_apply_then_reapply_changes_nothing() {
    let forge = Forge::new();
    example_repos(&forge);
    let b = forge.start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "apps.star", &examples_file("http://127.0.0.1:8080"));

    let out = b.cli_ok(&["apply", &file]);
    b.ensure(out.stdout.contains("3 app(s) created, 0 updated, 0 unchanged."), format!("first apply: {out}"));
    let s = b.app("/misc/streamlit_example");
    b.ensure(
        s["spec"] == "python-streamlit"
            && s["git_branch"] == "master"
            && s["container_options"]["cpus"] == "1"
            && s["container_options"]["memory"] == "512m"
            && !json_str(&s["git_commit"]).is_empty(),
        format!("streamlit app as declared: {s}"),
    );
    let f = b.app("fasthtml.localhost:/");
    b.ensure(
        f["params"]["APP_MODULE"] == "basic_ws:app" && f["source_url"] == "github.com/AnswerDotAI/fasthtml/examples",
        format!("fasthtml app as declared: {f}"),
    );
    let p = b.app("/internal");
    b.ensure(p["spec"] == "proxy" && p["params"]["url"] == "http://127.0.0.1:8080", format!("proxy app: {p}"));

    // The same file again: no changes, no new version.
    let (list, versions) = (b.app_list_raw(), all_versions(&b));
    let out = b.cli_ok(&["apply", &file]);
    b.ensure(
        out.stdout.contains("No changes.") && out.stdout.contains("0 app(s) created, 0 updated, 3 unchanged."),
        format!("second apply: {out}"),
    );
    b.ensure(b.app_list_raw() == list && all_versions(&b) == versions, "a second apply changed something");

    // A changed file, dry run: the plan is printed, nothing changes.
    fs::write(&file, examples_file("http://127.0.0.1:8081")).unwrap();
    let out = b.cli_ok(&["apply", "--dry-run", &file]);
    b.ensure(
        out.stdout.contains("update    /internal") && out.stdout.contains("8081") && out.stdout.contains("dry-run"),
        format!("dry run: {out}"),
    );
    b.ensure(b.app_list_raw() == list && all_versions(&b) == versions, "--dry-run changed something");

    // An APP_GLOB that leaves the changed app out applies nothing.
    let out = b.cli_ok(&["apply", &file, "/misc/*"]);
    b.ensure(out.stdout.contains("0 app(s) created, 0 updated, 1 unchanged."), format!("glob apply: {out}"));
    b.ensure(all_versions(&b) == versions, "an apply limited by a glob changed an app it leaves out");

    // Applied: staged on /internal only; prod keeps serving the old value.
    let out = b.cli_ok(&["apply", &file]);
    b.ensure(out.stdout.contains("0 app(s) created, 1 updated, 2 unchanged."), format!("apply of a change: {out}"));
    b.ensure(stage_params(&b, "/internal")["url"] == "http://127.0.0.1:8081", "the change is not on stage");
    b.ensure(b.app("/internal")["params"]["url"] == "http://127.0.0.1:8080", "prod changed without --promote");
    b.ensure(b.prod_and_stage_versions("/internal") == (vec![1], vec![2]), "expected prod 1, stage 2");

    // --promote with nothing new promotes nothing and adds no version; a change with --promote
    // reaches prod.
    fs::write(&file, examples_file("http://127.0.0.1:8082")).unwrap();
    let out = b.cli_ok(&["apply", "--promote", "--approve", &file]);
    b.ensure(out.stdout.contains("promoted"), format!("apply --promote: {out}"));
    b.ensure(b.app("/internal")["params"]["url"] == "http://127.0.0.1:8082", "prod did not follow with --promote");
    b.ensure(b.prod_and_stage_versions("/internal") == (vec![3], vec![3]), "expected prod and stage at 3");

    // A changed git_branch fetches the source again, at the new branch.
    let repo = forge.root.join("streamlit/streamlit-example");
    git(&repo, &["checkout", "-qb", "dev"]);
    let cdev = forge.commit(&repo, &[("NEW.md", "dev\n")], "dev");
    git(&repo, &["checkout", "-q", "master"]);
    let dev_file = examples_file("http://127.0.0.1:8082").replace("git_branch=\"master\"", "git_branch=\"dev\"");
    fs::write(&file, dev_file).unwrap();
    let out = b.cli_ok(&["apply", &file]);
    b.ensure(out.stdout.contains("git_branch \"master\" -> \"dev\""), format!("branch change: {out}"));
    let vs = b.version_list("/misc/streamlit_example");
    let stage = vs.iter().find(|v| v["stage"] == Value::Bool(true)).cloned().unwrap_or(Value::Null);
    b.ensure(json_str(&stage["git_commit"]) == cdev, format!("stage should be at the dev commit {cdev}: {stage}"));
}

#[test]
fn failing_files_change_nothing() {
    let forge = Forge::new();
    example_repos(&forge);
    let b = forge.start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let good = "app(\"/internal\", \"-\", spec=\"proxy\", params={\"url\": \"http://127.0.0.1:8080\"})\n";
    let file = write_file(dir.path(), "apps.star", good);
    b.cli_ok(&["apply", &file]);
    let (list, versions, sources) = (b.app_list_raw(), all_versions(&b), b.source_entries());

    // Each bad file also declares a valid new app and a change to /internal, which must not
    // happen either.
    let prefix =
        "app(\"/new\", \"github.com/streamlit/streamlit-example\", spec=\"python-streamlit\", git_branch=\"master\")\n\
                  app(\"/internal\", \"-\", spec=\"proxy\", params={\"url\": \"http://127.0.0.1:9999\"})\n";
    let cases = [
        ("syntax error", "app(\"/x\", \"-\", spec=\"proxy\"\n", "apps.star:"),
        ("unknown spec", "app(\"/x\", \"-\", spec=\"no-such-spec\")\n", "no-such-spec"),
        ("bad param", "app(\"/x\", \"-\", spec=\"proxy\", params={\"url\": \"not a url\"})\n", "url"),
        ("path conflict", "app(\"/internal/sub\", \"-\", spec=\"proxy\", params={\"url\": \"http://127.0.0.1:1\"})\n", "conflicts"),
        ("fetch error", "app(\"/x\", \"github.com/nobody/missing\", spec=\"python-streamlit\")\n", "nobody/missing"),
        // Found only while making the changes (the image is pulled then): the app created and
        // the version staged before it are undone.
        (
            "missing image",
            "app(\"/img\", \"-\", spec=\"image\", params={\"image\": \"127.0.0.1:1/berth-e2e-no-such-image:1\", \"port\": \"80\"})\n",
            "berth-e2e-no-such-image",
        ),
        ("duplicate path", "app(\"/new\", \"-\", spec=\"proxy\", params={\"url\": \"http://127.0.0.1:1\"})\n", "declared twice"),
        ("unknown auth", "app(\"/x\", \"-\", spec=\"proxy\", params={\"url\": \"http://127.0.0.1:1\"}, auth=\"oidc_nope\")\n", "invalid authentication type"),
    ];
    for (what, bad, needle) in cases {
        fs::write(&file, format!("{prefix}{bad}")).unwrap();
        let out = b.cli(&["apply", &file]);
        b.ensure(
            out.code == 1 && is_single_error_line(&out.stderr) && out.stderr.contains(needle),
            format!("{what}: expected one error line with {needle:?}: {out}"),
        );
        b.ensure(out.stderr.contains("apps.star:"), format!("{what}: the error should name the file and line: {out}"));
        b.ensure(b.app_list_raw() == list, format!("{what}: the app list changed"));
        b.ensure(all_versions(&b) == versions, format!("{what}: a version was added"));
        b.ensure(
            b.source_entries() == sources,
            format!("{what}: files were left in sources/: {:?}", b.source_entries()),
        );
    }
    // A path taken by an app the file does not name.
    fs::write(&file, "app(\"/internal/x\", \"-\", spec=\"proxy\", params={\"url\": \"http://127.0.0.1:1\"})\n")
        .unwrap();
    let out = b.cli(&["apply", &file]);
    b.ensure(
        out.code == 1 && is_single_error_line(&out.stderr) && out.stderr.contains("App already exists at /internal"),
        format!("a path under an existing app: {out}"),
    );
    b.ensure(b.app_list_raw() == list, "a conflicting apply changed the app list");
    b.ensure(
        b.log().lines().any(|l| l.contains("app deleted") && l.contains("app=/new")),
        "the missing-image case should have created /new and then undone it",
    );
    let out = b.cli(&["apply", "/nonexistent/apps.star"]);
    b.ensure(out.code == 1 && is_single_error_line(&out.stderr), format!("missing file: {out}"));
}

#[test]
fn cli_changes_are_kept_unless_clobber() {
    let forge = Forge::new();
    let b = forge.start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let decl = |x: &str| {
        format!("app(\"/p\", \"-\", spec=\"proxy\", params={{\"url\": \"http://127.0.0.1:1\", \"X\": \"{x}\"}})\n")
    };
    let file = write_file(dir.path(), "apps.star", &decl("1"));
    b.cli_ok(&["apply", &file]);
    b.cli_ok(&["param", "update", "X", "cli", "/p"]);

    // The file changes X too: the CLI's value is kept and reported.
    fs::write(&file, decl("3")).unwrap();
    let out = b.cli_ok(&["apply", &file]);
    b.ensure(out.stdout.contains("kept: param X"), format!("the kept CLI change should be reported: {out}"));
    b.ensure(stage_params(&b, "/p")["X"] == "cli", "the CLI's change was overwritten without --clobber");

    let out = b.cli_ok(&["apply", "--clobber", &file]);
    b.ensure(out.stdout.contains("1 updated"), format!("apply --clobber: {out}"));
    b.ensure(stage_params(&b, "/p")["X"] == "3", "--clobber did not apply the file's value");
    // A relative local source is resolved against the file's folder.
    copy_dir(&fixture_app("container"), &dir.path().join("app"));
    let local = write_file(dir.path(), "local.star", "app(\"/local\", \"./app\", spec=\"container\")\n");
    let p_versions = b.version_list_raw("/p");
    b.cli_ok(&["apply", &local]);
    b.ensure(
        b.version_list_raw("/p") == p_versions && b.find_app("/p").is_some(),
        "an app the file does not name changed",
    );
    let want = dir.path().join("app").display().to_string();
    b.ensure(
        json_str(&b.app("/local")["source_url"]) == want,
        format!("source of /local should be {want}: {}", b.app("/local")),
    );

    // A relative file path is resolved by the CLI against its working folder.
    let out = b.cli_in(dir.path(), &["apply", "apps.star"]);
    b.ensure(out.ok() && out.stdout.contains("No changes."), format!("after --clobber the file is applied: {out}"));

    // dev=True declares a dev app of a local folder; its changes are live at once (it has no
    // stage, and --promote leaves it alone); a file cannot turn an app's dev mode on or off.
    let dev =
        |x: &str| format!("app(\"/devapply\", \"./app\", spec=\"container\", dev=True, params={{\"X\": \"{x}\"}})\n");
    let devfile = write_file(dir.path(), "dev.star", &dev("1"));
    let out = b.cli_ok(&["apply", &devfile]);
    b.ensure(out.stdout.contains("1 app(s) created"), format!("apply of a dev app: {out}"));
    let id = json_str(&b.app("/devapply")["id"]);
    b.ensure(id.starts_with("app_dev_"), format!("dev=True should make a dev app: {}", b.app("/devapply")));
    fs::write(&devfile, dev("2")).unwrap();
    let out = b.cli_ok(&["apply", "--promote", &devfile]);
    b.ensure(out.stdout.contains("1 updated"), format!("apply of a changed dev app: {out}"));
    let prod =
        b.version_list("/devapply").iter().find(|v| v["prod"] == Value::Bool(true)).map(|v| v["params"]["X"].clone());
    b.ensure(
        prod == Some(Value::from("2")),
        format!("a dev app's change should be live: {:?}", b.version_list("/devapply")),
    );
    let flip = write_file(
        dir.path(),
        "flip.star",
        "app(\"/devapply\", \"./app\", spec=\"container\", params={\"X\": \"2\"})\n",
    );
    let versions = b.version_list_raw("/devapply");
    let out = b.cli(&["apply", &flip]);
    b.ensure(
        out.code == 1 && is_single_error_line(&out.stderr) && out.stderr.contains("it is a dev app"),
        format!("turning dev off through a file should be refused: {out}"),
    );
    b.ensure(b.version_list_raw("/devapply") == versions, "a refused apply changed the dev app");
    let out = b.cli(&[
        "apply",
        &write_file(dir.path(), "git-dev.star", "app(\"/gd\", \"github.com/o/r\", spec=\"container\", dev=True)\n"),
    ]);
    b.ensure(out.code == 1 && out.stderr.contains("dev mode"), format!("a dev app from git should be refused: {out}"));
}

#[test]
fn apply_from_git_and_sync_picks_up_new_commits() {
    let forge = Forge::new();
    let decl = |url: &str| format!("app(\"/synced\", \"-\", spec=\"proxy\", params={{\"url\": \"{url}\"}})\n");
    let repo = forge.repo("berthorg/config", "main", &[("deploy/apps.star", &decl("http://127.0.0.1:1"))]);
    let mut b = forge.start(&[("BERTH_TEST_SHORT_SYNC", "1")]);
    let file = "github.com/berthorg/config/deploy/apps.star";

    // Apply from a file in git.
    let out = b.cli_ok(&["apply", file]);
    b.ensure(out.stdout.contains("1 app(s) created") && out.stdout.contains("at commit"), format!("git apply: {out}"));
    b.ensure(b.app("/synced")["params"]["url"] == "http://127.0.0.1:1", "app from the git file");
    let out = b.cli(&["apply", "--branch", "nope", file]);
    b.ensure(
        out.code == 1 && is_single_error_line(&out.stderr) && out.stderr.contains("nope"),
        format!("bad branch: {out}"),
    );

    // A sync every 3 s (test setting): prints its id and secret, runs at once (no changes).
    let out = b.cli_ok(&["sync", "schedule", "--minutes", "0.05", "--promote", file]);
    let id = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Sync id        : "))
        .map(str::to_string)
        .unwrap_or_else(|| b.fail(format!("no sync id printed: {out}")));
    b.ensure(
        out.stdout.contains("Webhook secret : ") && out.stdout.contains("No changes."),
        format!("schedule: {out}"),
    );

    // A new commit is picked up by the schedule, and promoted.
    let c2 = forge.commit(&repo, &[("deploy/apps.star", &decl("http://127.0.0.1:2"))], "two");
    let seen = wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
        b.app("/synced")["params"]["url"] == "http://127.0.0.1:2"
    });
    b.ensure(seen.is_some(), "the scheduled sync did not apply the new commit within 60 s");
    let list = b.cli_ok(&["sync", "list"]).stdout;
    b.ensure(list.contains(&id) && list.contains(&c2[..12]) && list.contains("applied"), format!("sync list: {list}"));

    // `sync run` applies at once.
    b.cli_ok(&["sync", "delete", &id]);
    let schedule_out = b.cli_ok(&["sync", "schedule", "--minutes", "60", file]);
    let id = schedule_out.stdout.lines().find_map(|l| l.strip_prefix("Sync id        : ")).unwrap().to_string();
    forge.commit(&repo, &[("deploy/apps.star", &decl("http://127.0.0.1:3"))], "three");
    let out = b.cli_ok(&["sync", "run", &id]);
    b.ensure(out.stdout.contains("1 updated"), format!("sync run: {out}"));
    b.ensure(stage_params(&b, "/synced")["url"] == "http://127.0.0.1:3", "sync run did not stage the new commit");

    // The sync's webhook: a wrong signature gets 401 and runs nothing; the sync's own secret
    // runs it (202) and the new commit is staged.
    let secret =
        schedule_out.stdout.lines().find_map(|l| l.strip_prefix("Webhook secret : ")).unwrap().trim().to_string();
    forge.commit(&repo, &[("deploy/apps.star", &decl("http://127.0.0.1:4"))], "four");
    let versions = b.version_list_raw("/synced");
    let body = br#"{"ref":"refs/heads/main"}"#.to_vec();
    let (status, text) = post_sync_webhook(&b, &id, &body, &sign("not the secret", &body));
    b.ensure(status == 401, format!("a wrong signature must get 401: {status} {text}"));
    let (status, text) = post_sync_webhook(&b, "no-such-sync", &body, &sign(&secret, &body));
    b.ensure(status == 401, format!("an unknown sync must get 401: {status} {text}"));
    b.ensure(b.version_list_raw("/synced") == versions, "a refused sync webhook changed the app");
    let (status, text) = post_sync_webhook(&b, &id, &body, &sign(&secret, &body));
    b.ensure(status == 202 && text.contains("sync started"), format!("signed sync webhook: {status} {text}"));
    let seen = wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        stage_params(&b, "/synced")["url"] == "http://127.0.0.1:4"
    });
    b.ensure(seen.is_some(), "the sync webhook did not stage the new commit within 60 s");

    // A broken commit: `sync run` fails with the file's error, `sync list` shows it, nothing
    // changes.
    let versions = b.version_list_raw("/synced");
    forge.commit(&repo, &[("deploy/apps.star", "app(\"/synced\", \"-\", spec=\"nope\")\n")], "broken");
    let out = b.cli(&["sync", "run", &id]);
    b.ensure(
        out.code == 1 && is_single_error_line(&out.stderr) && out.stderr.contains("nope"),
        format!("broken sync run: {out}"),
    );
    let list = b.cli_ok(&["sync", "list"]).stdout;
    b.ensure(list.contains("failed") && list.contains("nope"), format!("sync list should show the failure: {list}"));
    b.ensure(b.version_list_raw("/synced") == versions, "a failed sync changed the app");
    let out = b.cli(&["sync", "schedule", "github.com/berthorg/config/deploy/missing.star"]);
    b.ensure(out.code == 1 && is_single_error_line(&out.stderr), format!("schedule of a missing file: {out}"));
    let syncs = b.cli_ok(&["sync", "list"]).stdout.lines().count();
    b.ensure(syncs == 2, format!("a refused schedule stored a sync: {}", b.cli_ok(&["sync", "list"]).stdout));

    // Kept across a restart.
    b.stop_server();
    b.start_server_with_env(&[("GIT_CONFIG_GLOBAL", forge.gitconfig.as_str()), ("GIT_CONFIG_NOSYSTEM", "1")]);
    let list = b.cli_ok(&["sync", "list"]).stdout;
    b.ensure(list.contains(&id) && list.contains(file), format!("sync list after a restart: {list}"));
    let out = b.cli(&["sync", "schedule", "--minutes", "0.5", file]);
    b.ensure(
        out.code == 1 && out.stderr.contains("whole number"),
        format!("short interval without the test setting: {out}"),
    );
    b.cli_ok(&["sync", "delete", &id]);
    let out = b.cli(&["sync", "run", &id]);
    b.ensure(out.code == 1 && out.stderr.contains("sync not found"), format!("deleted sync: {out}"));
}

fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs a signed body to `/_berth/webhook/sync?id=`; returns the status and body.
fn post_sync_webhook(b: &Berth, id: &str, body: &[u8], signature: &str) -> (u16, String) {
    let url = b.http_url("127.0.0.1", &format!("/_berth/webhook/sync?id={id}"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(&url)
            .header("x-hub-signature-256", signature)
            .header("x-github-event", "push")
            .body(body.to_vec())
            .send()
            .await
            .unwrap_or_else(|e| b.fail(format!("POST {url}: {e}")));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    })
}
