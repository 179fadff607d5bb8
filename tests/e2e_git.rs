//! End-to-end tests of git sources: a local repository made by the test, served by `file://`
//! URL at the default branch, at a branch and at a commit; the same through an `insteadOf`
//! rewrite of a `github.com/org/repo/sub` source (git config in the server's environment);
//! `app reload` picking up new commits; bad branch / commit at create and at reload.
//!
//! The app in the repository is the `container` fixture with a marker per commit.

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

const BUILD_WAIT: Duration = Duration::from_secs(300);

/// A repository made by the test: `root` is the working tree, `app` the folder (inside it)
/// that holds the app.
struct Repo {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    app: PathBuf,
}

impl Repo {
    /// `git init` at `root` (created under a fresh temp dir as `rel`), with the container
    /// fixture in `subdir` and a first commit on main with `marker`.
    fn new(rel: &str, subdir: &str, marker: &str) -> Repo {
        let tmp = tempfile::Builder::new().prefix("berth-e2e-git-").tempdir().unwrap();
        let root = tmp.path().join(rel);
        let app = if subdir.is_empty() { root.clone() } else { root.join(subdir) };
        copy_dir(&fixture_app("container"), &app);
        fs::write(root.join("README.md"), "berth e2e test repository\n").unwrap();
        git(&root, &["init", "-q", "-b", "main"]);
        let r = Repo { _tmp: tmp, root, app };
        r.commit(marker);
        r
    }

    /// Sets the marker and commits on the current branch; returns the commit id.
    fn commit(&self, marker: &str) -> String {
        set_container_marker(&self.app, marker);
        git(&self.root, &["add", "-A"]);
        git(&self.root, &["commit", "-qm", marker]);
        git(&self.root, &["rev-parse", "HEAD"])
    }

    fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

fn create(b: &Berth, source: &str, app_path: &str, extra: &[&str]) {
    let mut args = vec!["app", "create", "--spec", "container"];
    args.extend_from_slice(extra);
    args.push(source);
    args.push(app_path);
    b.cli_ok(&args);
}

/// GETs `host`+`path` on the HTTP port until it serves `marker` (200).
async fn expect_marker(b: &Berth, client: &reqwest::Client, host: &str, path: &str, marker: &str) -> Got {
    let url = b.http_url(host, path);
    let g = get_until_marker(client, &url, marker, BUILD_WAIT).await;
    match g {
        Ok(g) if g.status == 200 && g.body.contains(marker) => g,
        other => b.fail(format!("GET {url}: expected 200 with {marker}, got {other:?}")),
    }
}

/// A `file://` repository at the default branch, at `--branch dev` and at `--commit <first>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_url_branch_and_commit() {
    let t0 = Instant::now();
    // Declared before the server: dropped after it, once its containers are gone.
    let mut cleanup = ImageCleanup(Vec::new());
    let b = Berth::start_with("start_timeout_secs = 300");
    let n = nonce();
    let (m1, mdev, m3) =
        (format!("berth-e2e-git-one-{n}"), format!("berth-e2e-git-dev-{n}"), format!("berth-e2e-git-three-{n}"));
    let repo = Repo::new("repo", "", &m1);
    let c1 = git(&repo.root, &["rev-parse", "HEAD"]);
    git(&repo.root, &["checkout", "-qb", "dev"]);
    let cdev = repo.commit(&mdev);
    git(&repo.root, &["checkout", "-q", "main"]);
    let c3 = repo.commit(&m3);
    let url = repo.url();

    create(&b, &url, "/g-main", &[]);
    create(&b, &url, "/g-dev", &["--branch", "dev"]);
    create(&b, &url, "gcommit.localhost:/", &["--commit", &c1]);
    // --commit wins over --branch.
    create(&b, &url, "/g-both", &["--branch", "dev", "--commit", &c1]);
    for p in ["/g-main", "/g-dev", "gcommit.localhost:/", "/g-both"] {
        cleanup.add(b.app_image(p));
    }

    let e = b.app("/g-main");
    b.ensure(json_str(&e["git_commit"]) == c3, format!("/g-main: git_commit should be main's head {c3}: {e}"));
    let e = b.app("/g-dev");
    b.ensure(
        json_str(&e["git_commit"]) == cdev && e["git_branch"] == "dev",
        format!("/g-dev: git_commit should be {cdev} and git_branch dev: {e}"),
    );
    let e = b.app("gcommit.localhost:/");
    b.ensure(json_str(&e["git_commit"]) == c1, format!("gcommit.localhost:/: git_commit should be {c1}: {e}"));
    let e = b.app("/g-both");
    b.ensure(
        json_str(&e["git_commit"]) == c1,
        format!("/g-both (--branch dev --commit c1): git_commit should be {c1}: {e}"),
    );
    let images = [b.app_image("/g-main"), b.app_image("/g-dev"), b.app_image("gcommit.localhost:/")];
    b.ensure(
        images[0] != images[1] && images[1] != images[2] && images[0] != images[2],
        format!("three commits with different files must give three images: {images:?}"),
    );
    b.ensure(
        b.app_image("/g-both") == images[2],
        format!("same commit, same spec => same image: {} vs {}", b.app_image("/g-both"), images[2]),
    );

    let client = slow_client(&["gcommit.localhost"], BUILD_WAIT);
    expect_marker(&b, &client, "localhost", "/g-main/", &m3).await;
    let g = expect_marker(&b, &client, "localhost", "/g-dev/sub", &mdev).await;
    b.ensure(g.body.contains("path=/sub"), format!("/g-dev/sub should reach the app as /sub: {}", g.body));
    let g = expect_marker(&b, &client, "gcommit.localhost", "/", &m1).await;
    b.ensure(g.body.contains("app_path=\n"), format!("a domain-root app should get CL_APP_PATH=\"\": {}", g.body));
    expect_marker(&b, &client, "localhost", "/g-both/", &m1).await;
    // What was fetched at create stays: a later commit changes nothing without a reload.
    let m4 = format!("berth-e2e-git-four-{n}");
    repo.commit(&m4);
    let g = get(&client, &b.http_url("localhost", "/g-main/"), &[]).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 200 && g.body.contains(&m3)),
        format!("after a new commit (no reload) /g-main must still serve {m3}: {g:?}"),
    );
    let e = b.app("/g-main");
    b.ensure(json_str(&e["git_commit"]) == c3, format!("a new commit without reload changed git_commit: {e}"));
    eprintln!("TIMING file_url_branch_and_commit {:.1}s", t0.elapsed().as_secs_f64());
}

/// `github.com/org/repo/sub` (and `https://github.com/org/repo/sub`) fetched through an
/// `insteadOf` rewrite in the server's git config: the app in `sub` is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_url_through_insteadof_rewrite() {
    let t0 = Instant::now();
    let n = nonce();
    let (m1, mdev) = (format!("berth-e2e-gh-one-{n}"), format!("berth-e2e-gh-dev-{n}"));
    // Layout: <tmp>/forge/bertheorg/berthrepo with the app in sub/app.
    let repo = Repo::new("forge/bertheorg/berthrepo", "sub/app", &m1);
    let c1 = git(&repo.root, &["rev-parse", "HEAD"]);
    git(&repo.root, &["checkout", "-qb", "feature"]);
    let cdev = repo.commit(&mdev);
    git(&repo.root, &["checkout", "-q", "main"]);
    let forge = repo.root.parent().unwrap().parent().unwrap().to_path_buf();
    let gitconfig = forge.parent().unwrap().join("gitconfig");
    fs::write(
        &gitconfig,
        format!(
            "[url \"file://{}/\"]\n\tinsteadOf = https://github.com/\n[protocol \"file\"]\n\tallow = always\n",
            forge.display()
        ),
    )
    .unwrap();
    let gc = gitconfig.to_str().unwrap().to_string();
    // Declared before the server: dropped after it, once its containers are gone.
    let mut cleanup = ImageCleanup(Vec::new());
    let b =
        Berth::start_with_env("start_timeout_secs = 300", &[("GIT_CONFIG_GLOBAL", &gc), ("GIT_CONFIG_NOSYSTEM", "1")]);

    create(&b, "github.com/bertheorg/berthrepo/sub/app", "/gh", &[]);
    create(&b, "https://github.com/bertheorg/berthrepo/sub/app", "ghfeature.localhost:/", &["--branch", "feature"]);
    cleanup.add(b.app_image("/gh"));
    cleanup.add(b.app_image("ghfeature.localhost:/"));
    let e = b.app("/gh");
    b.ensure(json_str(&e["git_commit"]) == c1, format!("/gh: git_commit should be {c1}: {e}"));
    let e = b.app("ghfeature.localhost:/");
    b.ensure(
        json_str(&e["git_commit"]) == cdev && e["git_branch"] == "feature",
        format!("ghfeature: git_commit {cdev}, branch feature expected: {e}"),
    );

    let client = slow_client(&["ghfeature.localhost"], BUILD_WAIT);
    let g = expect_marker(&b, &client, "localhost", "/gh/hello", &m1).await;
    b.ensure(
        g.body.contains("path=/hello") && g.body.contains("app_path=/gh"),
        format!("/gh/hello: expected path=/hello, app_path=/gh: {}", g.body),
    );
    expect_marker(&b, &client, "ghfeature.localhost", "/", &mdev).await;

    // A subdir that does not exist in the repository fails cleanly.
    let before = b.app_list();
    let out = b.cli(&["app", "create", "--spec", "container", "github.com/bertheorg/berthrepo/nope", "/gh-nope"]);
    b.ensure(
        out.code == 1 && is_single_error_line(&out.stderr) && out.stderr.contains("nope"),
        format!("a missing subfolder should fail with one error line naming it: {out}"),
    );
    b.ensure(b.app_list() == before, "a failed create changed the app list");
    eprintln!("TIMING github_url_through_insteadof_rewrite {:.1}s", t0.elapsed().as_secs_f64());
}

/// `app reload` fetches the branch again: a new commit's marker is served by the stage, and
/// with `--promote` by prod, and `git_commit` changes; `--branch` and `--commit` switch; a reload at a bad branch or commit exits 1 and
/// the current version keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_picks_up_new_commits() {
    let t0 = Instant::now();
    // Declared before the server: dropped after it, once its containers are gone.
    let mut cleanup = ImageCleanup(Vec::new());
    let b = Berth::start_with("start_timeout_secs = 300");
    let n = nonce();
    let m = |s: &str| format!("berth-e2e-rl-{s}-{n}");
    let app_repo = Repo::new("apprepo", "", &m("one"));
    let a1 = git(&app_repo.root, &["rev-parse", "HEAD"]);
    git(&app_repo.root, &["checkout", "-qb", "dev"]);
    let adev = app_repo.commit(&m("dev"));
    git(&app_repo.root, &["checkout", "-q", "main"]);

    let app = "gitreload.localhost:/";
    create(&b, &app_repo.url(), app, &[]);
    cleanup.add(b.app_image(app));
    let client = slow_client(&["gitreload.localhost"], BUILD_WAIT);
    expect_marker(&b, &client, "gitreload.localhost", "/", &m("one")).await;
    let e = b.app(app);
    b.ensure(json_str(&e["git_commit"]) == a1, format!("git_commit after create should be {a1}: {e}"));
    let app_id = b.app_id(app);
    let old_container = b.single_container(&app_id);
    let old_image = b.app_image(app);

    // A new commit on main, then reload: the stage serves it, prod does not (yet).
    let a2 = app_repo.commit(&m("two"));
    let out = b.cli_ok(&["app", "reload", app]);
    // Checked at the end, so that the rest of the test still runs when only this is wrong.
    let mut deferred = Vec::new();
    if !(out.stdout.contains(&format!("at commit {}", &a2[..12])) && out.stdout.contains(" built.")) {
        deferred.push(format!(
            "a reload without --promote should name the commit it fetched ({}) and the image it built: {out}",
            &a2[..12]
        ));
    }
    expect_marker(&b, &client, "gitreload.localhost", "/_cl_stage/", &m("two")).await;
    let g = get(&client, &b.http_url("gitreload.localhost", "/"), &[]).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 200 && g.body.contains(&m("one"))),
        format!("a reload without --promote must leave prod on the old commit: {g:?}"),
    );
    // --promote: prod follows.
    let out = b.cli_ok(&["app", "reload", "--promote", app]);
    b.ensure(
        out.stdout.contains(&format!("at commit {}", &a2[..12])),
        format!("reload --promote output should name commit {}: {out}", &a2[..12]),
    );
    cleanup.add(b.app_image(app));
    let e = b.app(app);
    b.ensure(json_str(&e["git_commit"]) == a2, format!("git_commit after reload --promote should be {a2}: {e}"));
    b.ensure(b.app_image(app) != old_image, format!("a new commit with a changed file must give a new image: {e}"));
    expect_marker(&b, &client, "gitreload.localhost", "/", &m("two")).await;
    let gone = wait_until(Duration::from_secs(20), Duration::from_millis(250), || {
        !container_exists(&old_container) && image_id(&old_image).is_none()
    });
    b.ensure(
        gone.is_some(),
        format!("the superseded container {old_container} and image {old_image} should be removed after the switch"),
    );

    // Reload at a branch that does not exist: exit 1, the current version keeps serving.
    let out = b.cli(&["app", "reload", "--branch", "nosuchbranch", app]);
    b.ensure(
        out.code == 1 && is_single_error_line(&out.stderr) && out.stderr.contains("nosuchbranch"),
        format!("reload --branch nosuchbranch: expected exit 1 with one error line naming it: {out}"),
    );
    let e = b.app(app);
    b.ensure(json_str(&e["git_commit"]) == a2, format!("a failed reload changed git_commit: {e}"));
    let g = get(&client, &b.http_url("gitreload.localhost", "/"), &[]).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 200 && g.body.contains(&m("two"))),
        format!("after a failed reload the current version must keep serving: {g:?}"),
    );
    // A failed reload with --branch must not remember the branch: a plain reload stays on main.
    let out = b.cli_ok(&["app", "reload", app]);
    b.ensure(
        out.stdout.contains(&format!("at commit {}", &a2[..12])),
        format!("a plain reload after a failed --branch reload should stay on main at {}: {out}", &a2[..12]),
    );
    let e = b.app(app);
    b.ensure(e["git_branch"] != "nosuchbranch", format!("a failed reload remembered its branch: {e}"));

    // Reload at a commit that does not exist.
    let bad = "0123456789abcdef0123456789abcdef01234567";
    let out = b.cli(&["app", "reload", "--commit", bad, app]);
    b.ensure(
        out.code == 1 && is_single_error_line(&out.stderr),
        format!("reload --commit <missing>: expected exit 1 with one error line: {out}"),
    );
    let g = get(&client, &b.http_url("gitreload.localhost", "/"), &[]).await;
    b.ensure(
        matches!(&g, Ok(g) if g.status == 200 && g.body.contains(&m("two"))),
        format!("after a failed --commit reload the current version must keep serving: {g:?}"),
    );

    // Switch to the dev branch, then pin the first commit.
    let out = b.cli_ok(&["app", "reload", "--promote", "--branch", "dev", app]);
    cleanup.add(b.app_image(app));
    let e = b.app(app);
    b.ensure(
        json_str(&e["git_commit"]) == adev && e["git_branch"] == "dev",
        format!("after reload --branch dev: git_commit {adev}, git_branch dev expected: {e}\n{out}"),
    );
    expect_marker(&b, &client, "gitreload.localhost", "/", &m("dev")).await;
    let out = b.cli_ok(&["app", "reload", "--promote", "--commit", &a1, app]);
    cleanup.add(b.app_image(app));
    b.ensure(out.stdout.contains(&format!("at commit {}", &a1[..12])), format!("reload --commit {a1}: {out}"));
    let e = b.app(app);
    b.ensure(json_str(&e["git_commit"]) == a1, format!("after reload --commit: git_commit {a1} expected: {e}"));
    expect_marker(&b, &client, "gitreload.localhost", "/", &m("one")).await;
    eprintln!("TIMING reload_picks_up_new_commits {:.1}s", t0.elapsed().as_secs_f64());
    b.ensure(deferred.is_empty(), deferred.join("\n"));
}

/// A branch or commit that does not exist fails create cleanly: exit 1, one error line,
/// nothing created, no snapshot left under `$BERTH_HOME/sources`.
#[test]
fn bad_branch_or_commit_fails_create_cleanly() {
    let t0 = Instant::now();
    let b = Berth::start();
    let n = nonce();
    let repo = Repo::new("repo", "", &format!("berth-e2e-bad-{n}"));
    let url = repo.url();
    let head = git(&repo.root, &["rev-parse", "HEAD"]);
    let short_missing = "deadbee";
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("missing branch", vec!["--branch", "no-such-branch"], "no-such-branch"),
        ("missing commit", vec!["--commit", "0123456789abcdef0123456789abcdef01234567"], "0123456789abcdef"),
        ("missing short commit", vec!["--commit", short_missing], short_missing),
    ];
    let mut failures = Vec::new();
    for (what, extra, needle) in &cases {
        let mut args = vec!["app", "create", "--spec", "container"];
        args.extend_from_slice(extra);
        args.push(&url);
        args.push("/badgit");
        let out = b.cli(&args);
        let list = b.app_list();
        let sources = b.source_entries();
        let ok = out.code == 1 && is_single_error_line(&out.stderr) && out.stderr.contains(needle);
        if !ok || !list.is_empty() || !sources.is_empty() {
            failures.push(format!(
                "{what}: exit 1 + one error line naming {needle:?}: {}; app list empty: {}; $BERTH_HOME/sources entries: {sources:?}\n{out}",
                ok,
                list.is_empty()
            ));
        }
    }
    // The same repository at an existing branch and commit works (so the failures above are
    // about the branch/commit only).
    b.cli_ok(&["app", "create", "--spec", "container", "--branch", "main", &url, "/goodgit"]);
    b.cli_ok(&["app", "create", "--spec", "container", "--commit", &head[..10], &url, "/goodgit2"]);
    let e = b.app("/goodgit2");
    b.ensure(json_str(&e["git_commit"]) == head, format!("--commit <10-char prefix> should resolve to {head}: {e}"));
    b.ensure(failures.is_empty(), format!("bad git input at create:\n{}", failures.join("\n\n")));
    eprintln!("TIMING bad_branch_or_commit_fails_create_cleanly {:.1}s", t0.elapsed().as_secs_f64());
}

/// Issue 7 item 7: a branch or commit can never be read as a git option, at create and at
/// reload: `--commit=--upload-pack=touch <file>` and the like are refused with one line,
/// nothing runs, nothing is created or changed.
#[test]
fn branch_and_commit_are_never_git_options() {
    let b = Berth::start();
    let repo = Repo::new("repo", "", &format!("berth-e2e-opt-{}", nonce()));
    let url = repo.url();
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("pwned");
    let evil = format!("--upload-pack=touch {}", marker.display());
    let mut failures = Vec::new();
    let mut refused = |what: &str, out: CmdOut| {
        if !(out.code == 1 && is_single_error_line(&out.stderr) && out.stderr.contains("must not start with -")) {
            failures.push(format!("{what}: expected one `must not start with -` error line: {out}"));
        }
    };
    for flag in ["--commit", "--branch"] {
        let arg = format!("{flag}={evil}");
        refused(&format!("create {arg}"), b.cli(&["app", "create", "--spec", "container", &arg, &url, "/opt"]));
    }
    b.ensure(b.app_list().is_empty(), "a refused create made an app");
    b.ensure(b.source_entries().is_empty(), format!("left under sources/: {:?}", b.source_entries()));
    create(&b, &url, "/opt", &[]);
    let versions = b.version_list("/opt");
    for flag in ["--commit", "--branch"] {
        let arg = format!("{flag}={evil}");
        refused(&format!("reload {arg}"), b.cli(&["app", "reload", &arg, "/opt"]));
        refused(&format!("reload {flag}=-x"), b.cli(&["app", "reload", &format!("{flag}=-x"), "/opt"]));
    }
    b.ensure(failures.is_empty(), failures.join("\n"));
    b.ensure(!marker.exists(), "git ran the injected command");
    b.ensure(b.version_list("/opt") == versions, "a refused reload added a version");
}
