//! Fetching an app's source into a snapshot folder that berth keeps, so that builds and
//! restarts need no network: a local folder is copied; a git source is fetched with the `git`
//! program (so the user's credential helpers, SSH keys and `url.<base>.insteadOf` rewrites
//! apply) at a branch or commit, in its own process group with a timeout. Never builds.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::ids;

/// What a source string names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// `-`: no source.
    None,
    Local(PathBuf),
    /// A repository to clone and the folder inside it that holds the app.
    Git {
        repo: String,
        subdir: String,
    },
}

impl SourceSpec {
    /// Classifies a source as Clace does: `git@…`, `http(s)://…`, or `host.tld/org/repo[/sub]`
    /// are git; anything starting with `/`, `.` or `~` is local.
    pub fn parse(source: &str) -> Result<SourceSpec, String> {
        let s = source.trim();
        if s == "-" {
            return Ok(SourceSpec::None);
        }
        if s.starts_with('/') || s.starts_with('.') || s.starts_with('~') {
            return Ok(SourceSpec::Local(PathBuf::from(s)));
        }
        if let Some(rest) = s.strip_prefix("git@") {
            let (host, path) =
                rest.split_once(':').ok_or_else(|| format!("invalid git source {s}: expected git@host:org/repo"))?;
            let (repo, subdir) =
                split_repo(path).ok_or_else(|| format!("invalid git source {s}: expected git@host:org/repo"))?;
            return Ok(SourceSpec::Git { repo: format!("git@{host}:{repo}"), subdir });
        }
        for scheme in ["https://", "http://", "ssh://", "file://"] {
            if let Some(rest) = s.strip_prefix(scheme) {
                if scheme == "file://" {
                    return Ok(SourceSpec::Git { repo: s.trim_end_matches('/').to_string(), subdir: String::new() });
                }
                let (host, path) = rest
                    .split_once('/')
                    .ok_or_else(|| format!("invalid git source {s}: expected {scheme}host/org/repo"))?;
                let (repo, subdir) = split_repo(path)
                    .ok_or_else(|| format!("invalid git source {s}: expected {scheme}host/org/repo"))?;
                return Ok(SourceSpec::Git { repo: format!("{scheme}{host}/{repo}"), subdir });
            }
        }
        let first = s.split('/').next().unwrap_or("");
        if first.contains('.') && s.split('/').filter(|p| !p.is_empty()).count() >= 3 {
            let (host, path) = s.split_once('/').expect("has a slash");
            let (repo, subdir) = split_repo(path).expect("has org and repo");
            return Ok(SourceSpec::Git { repo: format!("https://{host}/{repo}"), subdir });
        }
        Err(format!("invalid source {s}: expected -, a local folder (starting with /, . or ~) or a git URL"))
    }
}

/// `org/repo[.git]/sub/dir` into (`org/repo`, `sub/dir`).
fn split_repo(path: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.len() < 2 {
        return None;
    }
    let repo = format!("{}/{}", parts[0], parts[1]);
    Some((repo, parts[2..].join("/")))
}

/// A fetched source: its folder and, for git, the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub dir: PathBuf,
    pub commit: Option<String>,
}

/// Refuses a branch or commit that git could read as an option (`--upload-pack=...`).
pub fn check_ref(what: &str, value: Option<&str>) -> Result<(), String> {
    match value {
        Some(v) if v.trim().is_empty() => Err(format!("invalid {what}: it is empty")),
        Some(v) if v.starts_with('-') => Err(format!("invalid {what} {v:?}: it must not start with -")),
        _ => Ok(()),
    }
}

/// How long a fetch may take, and what cancels it (the admin client went away).
pub struct FetchLimits<'a> {
    pub timeout: Duration,
    pub cancel: &'a CancellationToken,
}

/// Fetches `source` into a new folder under `snapshots_root` (which it creates, owner-only).
/// A git fetch that takes longer than the timeout, or is cancelled, fails. On error nothing is
/// left behind: git and every process it started are killed, and the work folder (and
/// `snapshots_root`, if that is empty) are removed. The work runs in its own task, so that
/// this also holds when the returned future is dropped: the cleanup then happens in the
/// background.
pub async fn fetch(
    source: &SourceSpec,
    branch: Option<&str>,
    commit: Option<&str>,
    snapshots_root: &Path,
    limits: FetchLimits<'_>,
) -> anyhow::Result<Snapshot> {
    check_ref("branch", branch).map_err(anyhow::Error::msg)?;
    check_ref("commit", commit).map_err(anyhow::Error::msg)?;
    let cancel = limits.cancel.child_token();
    let _cancel_when_dropped = cancel.clone().drop_guard();
    let timeout = limits.timeout;
    let stop = Stop { deadline: tokio::time::Instant::now() + timeout, timeout, cancel };
    let (source, root) = (source.clone(), snapshots_root.to_path_buf());
    let (branch, commit) = (branch.map(str::to_string), commit.map(str::to_string));
    tokio::spawn(async move {
        let result = fetch_owned(&source, branch.as_deref(), commit.as_deref(), &root, &stop).await;
        if result.is_err() {
            remove_if_empty(&root);
        }
        result
    })
    .await
    .context("the fetch task failed")?
}

async fn fetch_owned(
    source: &SourceSpec,
    branch: Option<&str>,
    commit: Option<&str>,
    snapshots_root: &Path,
    stop: &Stop,
) -> anyhow::Result<Snapshot> {
    create_private_dir(snapshots_root)?;
    // Removed (with everything in it) when this function returns or its task is dropped.
    let work = tempfile::Builder::new().prefix(".fetch-").tempdir_in(snapshots_root)?;
    let (content, commit) = match source {
        SourceSpec::None => bail!("this app has no source"),
        SourceSpec::Local(path) => {
            if path.is_file() {
                bail!("source {} is a file, not a folder", path.display());
            }
            if !path.is_dir() {
                bail!("source folder {} does not exist", path.display());
            }
            let dest = work.path().join("src");
            let (from, to) = (path.clone(), dest.clone());
            tokio::task::spawn_blocking(move || copy_tree(&from, &to))
                .await?
                .with_context(|| format!("cannot copy the source folder {}", path.display()))?;
            (dest, None)
        }
        SourceSpec::Git { repo, subdir } => {
            let clone = work.path().join("clone");
            let commit = git_fetch(repo, branch, commit, &clone, stop).await?;
            let content = if subdir.is_empty() { clone.clone() } else { clone.join(subdir) };
            if !content.is_dir() {
                bail!("folder {subdir} does not exist in {repo} at {commit}");
            }
            let _ = std::fs::remove_dir_all(clone.join(".git"));
            (content, Some(commit))
        }
    };
    let name = match &commit {
        Some(c) => format!("{}-{}", &c[..c.len().min(12)], ids::random_id(8)),
        None => format!("local-{}", ids::random_id(8)),
    };
    let dir = snapshots_root.join(name);
    std::fs::rename(&content, &dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(Snapshot { dir, commit })
}

/// Creates `dir` (and its parents) and makes `dir` owner-only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

fn remove_if_empty(dir: &Path) {
    if std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false) {
        let _ = std::fs::remove_dir(dir);
    }
}

/// When a fetch must stop before git is done: its deadline, or its caller went away.
struct Stop {
    deadline: tokio::time::Instant,
    timeout: Duration,
    cancel: CancellationToken,
}

impl Stop {
    /// Waits until the fetch must stop and says why.
    async fn reached(&self, what: &str) -> anyhow::Error {
        tokio::select! {
            _ = tokio::time::sleep_until(self.deadline) => anyhow!(
                "{what} timed out after {}s (the [source] fetch_timeout_secs setting)",
                self.timeout.as_secs()
            ),
            _ = self.cancel.cancelled() => anyhow!("{what} was cancelled: the admin client went away"),
        }
    }
}

/// The umask git's checkouts are made with: the one berth was started with, so that the files
/// of a snapshot (which go into images as they are) keep their usual modes while everything
/// else berth writes is owner-only. See [`restrict_umask`].
static CHECKOUT_UMASK: AtomicU32 = AtomicU32::new(u32::MAX);

/// Makes every file and folder the process creates from now on owner-only (umask 077), and
/// remembers the previous umask for git's checkouts. Called once at server start.
pub fn restrict_umask() {
    // SAFETY: umask(2) only swaps the process's file mode mask; it cannot fail.
    let previous = unsafe { libc::umask(0o077) };
    CHECKOUT_UMASK.store(previous as u32, Ordering::Relaxed);
}

/// A git process group: killed as a whole (git starts `git-remote-http`, `ssh`, ...), so that
/// a stopped fetch leaves no process behind.
struct ProcessGroup {
    pgid: libc::pid_t,
    armed: bool,
}

impl ProcessGroup {
    fn kill(&mut self) {
        if self.armed {
            // SAFETY: kill(2) on the process group git leads (not yet reaped: its pid is ours).
            unsafe { libc::killpg(self.pgid, libc::SIGKILL) };
        }
    }

    fn alive(&self) -> bool {
        // SAFETY: signal 0 only checks that a member of the group exists.
        unsafe { libc::killpg(self.pgid, 0) == 0 }
    }

    /// Waits (bounded) until no process of the group is left.
    async fn gone(&mut self) {
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.alive() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.armed = false;
    }
}

impl Drop for ProcessGroup {
    /// Only reached with `armed` when the fetch task itself is dropped (runtime shutdown).
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs git in its own process group until it ends or `stop` says so; then the whole group is
/// killed. Returns stdout, or git's first error line.
async fn git(args: &[&str], cwd: Option<&Path>, stop: &Stop) -> anyhow::Result<String> {
    let what = format!("git {}", args.first().unwrap_or(&""));
    let mut cmd = Command::new("git");
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("GIT_TERMINAL_PROMPT", "0")
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let umask = CHECKOUT_UMASK.load(Ordering::Relaxed);
    if umask != u32::MAX {
        // SAFETY: umask(2) is async-signal-safe, as pre_exec requires.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(umask as libc::mode_t);
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().context("cannot run git: is it installed?")?;
    let pgid = child.id().context("git exited at once")? as libc::pid_t;
    let mut group = ProcessGroup { pgid, armed: true };
    let (mut stdout, mut stderr) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let finished = {
        let run = async {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let (o, e, status) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err), child.wait());
            o?;
            e?;
            anyhow::Ok((status?, out, err))
        };
        tokio::select! {
            done = run => Ok(done),
            why = stop.reached(&what) => Err(why),
        }
    };
    let (status, out, err) = match finished {
        Ok(done) => {
            group.armed = false;
            done?
        }
        Err(why) => {
            group.kill();
            let _ = child.wait().await;
            group.gone().await;
            return Err(why);
        }
    };
    if !status.success() {
        let err = String::from_utf8_lossy(&err);
        // git's first `fatal:`/`error:` line says what went wrong; later lines are advice.
        let line = err
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("fatal:") || l.starts_with("error:"))
            .or_else(|| err.lines().map(str::trim).find(|l| !l.is_empty()))
            .unwrap_or("");
        bail!("{what} failed: {line}");
    }
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// Clones `repo` at `commit` (wins) or `branch` (default: the remote's default branch) into
/// `dest`; returns the commit id checked out. Branch and commit are never read as options.
async fn git_fetch(
    repo: &str,
    branch: Option<&str>,
    commit: Option<&str>,
    dest: &Path,
    stop: &Stop,
) -> anyhow::Result<String> {
    let dest_s = dest.to_string_lossy().to_string();
    match (commit, branch) {
        (Some(commit), _) => {
            git(&["clone", "--quiet", "--no-checkout", "--", repo, &dest_s], None, stop)
                .await
                .with_context(|| format!("cannot fetch {repo}"))?;
            git(&["checkout", "--quiet", "--detach", "--end-of-options", commit], Some(dest), stop)
                .await
                .with_context(|| format!("commit {commit} not found in {repo}"))?;
        }
        (None, Some(branch)) => {
            let branch_arg = format!("--branch={branch}");
            git(&["clone", "--quiet", "--depth", "1", &branch_arg, "--", repo, &dest_s], None, stop)
                .await
                .with_context(|| format!("cannot fetch branch {branch} of {repo}"))?;
        }
        (None, None) => {
            git(&["clone", "--quiet", "--depth", "1", "--", repo, &dest_s], None, stop)
                .await
                .with_context(|| format!("cannot fetch {repo}"))?;
        }
    }
    git(&["rev-parse", "HEAD"], Some(dest), stop).await
}

/// The commit `branch` (default: the remote's `HEAD`) of `repo` points at, asked with
/// `git ls-remote` (nothing is fetched), bounded and cancelled like a fetch.
pub async fn remote_commit(repo: &str, branch: Option<&str>, limits: FetchLimits<'_>) -> anyhow::Result<String> {
    check_ref("branch", branch).map_err(anyhow::Error::msg)?;
    let stop = Stop {
        deadline: tokio::time::Instant::now() + limits.timeout,
        timeout: limits.timeout,
        cancel: limits.cancel.child_token(),
    };
    let refname = branch.map(|b| format!("refs/heads/{b}")).unwrap_or_else(|| "HEAD".into());
    let out = git(&["ls-remote", "--end-of-options", repo, &refname], None, &stop)
        .await
        .with_context(|| format!("cannot ask {repo} for its commit"))?;
    out.split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{repo} has no {}", branch.map(|b| format!("branch {b}")).unwrap_or("HEAD".into())))
}

/// Copies a folder (without `.git`), keeping modes and symlinks.
fn copy_tree(src: &Path, dest: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dest)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ".git" {
            continue;
        }
        let (from, to) = (entry.path(), dest.join(&name));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&from, &to)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify() {
        assert_eq!(SourceSpec::parse("-").unwrap(), SourceSpec::None);
        assert_eq!(SourceSpec::parse("./app").unwrap(), SourceSpec::Local("./app".into()));
        assert_eq!(
            SourceSpec::parse("github.com/streamlit/streamlit-example").unwrap(),
            SourceSpec::Git { repo: "https://github.com/streamlit/streamlit-example".into(), subdir: "".into() }
        );
        assert_eq!(
            SourceSpec::parse("github.com/golang/example/helloserver").unwrap(),
            SourceSpec::Git { repo: "https://github.com/golang/example".into(), subdir: "helloserver".into() }
        );
        assert_eq!(
            SourceSpec::parse("https://github.com/AnswerDotAI/fasthtml/examples").unwrap(),
            SourceSpec::Git { repo: "https://github.com/AnswerDotAI/fasthtml".into(), subdir: "examples".into() }
        );
        assert_eq!(
            SourceSpec::parse("git@github.com:org/repo").unwrap(),
            SourceSpec::Git { repo: "git@github.com:org/repo".into(), subdir: "".into() }
        );
        assert!(matches!(SourceSpec::parse("file:///tmp/repo").unwrap(), SourceSpec::Git { .. }));
        assert!(SourceSpec::parse("app").is_err());
    }

    const T: Duration = Duration::from_secs(60);

    fn limits(cancel: &CancellationToken, timeout: Duration) -> FetchLimits<'_> {
        FetchLimits { timeout, cancel }
    }

    async fn sh(dir: &Path, script: &str) {
        let ok =
            tokio::process::Command::new("sh").arg("-c").arg(script).current_dir(dir).status().await.unwrap().success();
        assert!(ok, "{script}");
    }

    #[tokio::test]
    async fn git_branch_commit_and_local() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(repo.join("sub")).unwrap();
        sh(&repo, "git init -q -b main && git config user.email t@t && git config user.name t && echo one > sub/f && git add . && git commit -qm one && git checkout -qb dev && echo two > sub/f && git commit -qam two && git checkout -q main").await;
        let stop = Stop { deadline: tokio::time::Instant::now() + T, timeout: T, cancel: CancellationToken::new() };
        let first = git(&["rev-parse", "main"], Some(&repo), &stop).await.unwrap();
        let url = format!("file://{}", repo.display());
        let root = tmp.path().join("snapshots");
        let spec = SourceSpec::Git { repo: url.clone(), subdir: "sub".into() };
        let main = fetch(&spec, None, None, &root, limits(&CancellationToken::new(), T)).await.unwrap();
        assert_eq!(std::fs::read_to_string(main.dir.join("f")).unwrap(), "one\n");
        assert_eq!(main.commit.as_deref(), Some(first.as_str()));
        let dev = fetch(&spec, Some("dev"), None, &root, limits(&CancellationToken::new(), T)).await.unwrap();
        assert_eq!(std::fs::read_to_string(dev.dir.join("f")).unwrap(), "two\n");
        let pinned =
            fetch(&spec, Some("dev"), Some(&first), &root, limits(&CancellationToken::new(), T)).await.unwrap();
        assert_eq!(std::fs::read_to_string(pinned.dir.join("f")).unwrap(), "one\n");
        let err = fetch(&spec, Some("nope"), None, &root, limits(&CancellationToken::new(), T)).await.unwrap_err();
        assert!(format!("{err:#}").contains("branch nope"), "{err:#}");
        let err = fetch(
            &spec,
            None,
            Some("0123456789abcdef0123456789abcdef01234567"),
            &root,
            limits(&CancellationToken::new(), T),
        )
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("not found"), "{err:#}");
        let local =
            fetch(&SourceSpec::Local(repo.join("sub")), None, None, &root, limits(&CancellationToken::new(), T))
                .await
                .unwrap();
        assert!(local.dir.join("f").exists());
        assert!(fetch(
            &SourceSpec::Local(tmp.path().join("missing")),
            None,
            None,
            &root,
            limits(&CancellationToken::new(), T)
        )
        .await
        .is_err());
        let leftovers = std::fs::read_dir(&root)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".fetch"))
            .count();
        assert_eq!(leftovers, 0, "failed fetches leave nothing behind");
    }

    /// A git server that accepts connections and never answers.
    async fn silent_server() -> (tokio::net::TcpListener, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}/org/repo", listener.local_addr().unwrap().port());
        (listener, url)
    }

    /// Processes (not zombies) whose command line mentions `needle`.
    fn processes_mentioning(needle: &str) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if cmdline.contains(needle) {
                    found.push(cmdline);
                }
            }
        }
        found
    }

    fn repo_spec(url: &str) -> SourceSpec {
        SourceSpec::parse(url).unwrap()
    }

    #[tokio::test]
    async fn a_hanging_fetch_times_out_and_leaves_nothing() {
        let (_listener, url) = silent_server().await;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("app");
        let started = std::time::Instant::now();
        let err = fetch(&repo_spec(&url), None, None, &root, limits(&CancellationToken::new(), Duration::from_secs(1)))
            .await
            .unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("timed out after 1s") && err.contains("fetch_timeout_secs"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(processes_mentioning(&url).is_empty(), "git left running: {:?}", processes_mentioning(&url));
        assert!(!root.exists(), "the empty snapshot root is removed");
    }

    #[tokio::test]
    async fn a_dropped_fetch_kills_git_and_leaves_nothing() {
        let (_listener, url) = silent_server().await;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("app");
        let spec = repo_spec(&url);
        let never = CancellationToken::new();
        let fetching = fetch(&spec, None, None, &root, limits(&never, T));
        let waited = tokio::time::timeout(Duration::from_millis(500), fetching).await;
        assert!(waited.is_err(), "the fetch of a silent server cannot finish");
        let gone = async {
            while !processes_mentioning(&url).is_empty() || root.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), gone).await.unwrap_or_else(|_| {
            panic!("after the drop: processes {:?}, root exists: {}", processes_mentioning(&url), root.exists())
        });
    }

    #[tokio::test]
    async fn a_cancelled_fetch_kills_git_and_leaves_nothing() {
        let (_listener, url) = silent_server().await;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("app");
        let cancel = CancellationToken::new();
        let canceller = cancel.clone();
        let watched = url.clone();
        tokio::spawn(async move {
            while processes_mentioning(&watched).is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            canceller.cancel();
        });
        let err = fetch(&repo_spec(&url), None, None, &root, limits(&cancel, T)).await.unwrap_err();
        assert!(format!("{err:#}").contains("cancelled"), "{err:#}");
        assert!(processes_mentioning(&url).is_empty(), "git left running: {:?}", processes_mentioning(&url));
        assert!(!root.exists(), "the empty snapshot root is removed");
    }

    #[tokio::test]
    async fn branch_and_commit_are_never_options() {
        let tmp = tempfile::tempdir().unwrap();
        let marker = tmp.path().join("pwned");
        let evil = format!("--upload-pack=touch {}", marker.display());
        let spec = SourceSpec::Git { repo: format!("file://{}", tmp.path().display()), subdir: String::new() };
        let root = tmp.path().join("app");
        for (branch, commit) in [(Some(evil.as_str()), None), (None, Some(evil.as_str())), (None, Some("-x"))] {
            let err = fetch(&spec, branch, commit, &root, limits(&CancellationToken::new(), T))
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("must not start with -"), "{err}");
        }
        assert!(check_ref("commit", Some("")).is_err());
        assert!(check_ref("branch", Some("feature/-x")).is_ok());
        assert!(!marker.exists());
        assert!(!root.exists());
    }

    #[tokio::test]
    async fn a_file_is_not_a_source_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("app.py");
        std::fs::write(&file, "print(1)\n").unwrap();
        let err = fetch(
            &SourceSpec::Local(file.clone()),
            None,
            None,
            &tmp.path().join("app"),
            limits(&CancellationToken::new(), T),
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), format!("source {} is a file, not a folder", file.display()));
    }
}
