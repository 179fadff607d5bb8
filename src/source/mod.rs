//! Fetching an app's source into a snapshot folder that berth keeps, so that builds and
//! restarts need no network: a local folder is copied; a git source is fetched with the `git`
//! program (so the user's credential helpers, SSH keys and `url.<base>.insteadOf` rewrites
//! apply) at a branch or commit. Never builds.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context};
use tokio::process::Command;

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

/// Fetches `source` into a new folder under `snapshots_root` (which it creates). On error
/// nothing is left behind.
pub async fn fetch(
    source: &SourceSpec,
    branch: Option<&str>,
    commit: Option<&str>,
    snapshots_root: &Path,
) -> anyhow::Result<Snapshot> {
    std::fs::create_dir_all(snapshots_root)?;
    let work = tempfile::Builder::new().prefix(".fetch-").tempdir_in(snapshots_root)?;
    let (content, commit) = match source {
        SourceSpec::None => bail!("this app has no source"),
        SourceSpec::Local(path) => {
            if !path.is_dir() {
                bail!("source folder {} does not exist", path.display());
            }
            let dest = work.path().join("src");
            copy_tree(path, &dest).with_context(|| format!("cannot copy the source folder {}", path.display()))?;
            (dest, None)
        }
        SourceSpec::Git { repo, subdir } => {
            let clone = work.path().join("clone");
            let commit = git_fetch(repo, branch, commit, &clone).await?;
            let content = if subdir.is_empty() { clone.clone() } else { clone.join(subdir) };
            if !content.is_dir() {
                bail!("folder {subdir} does not exist in {repo} at {commit}");
            }
            let _ = std::fs::remove_dir_all(clone.join(".git"));
            (content, Some(commit))
        }
    };
    let name = match &commit {
        Some(c) => format!("{}-{}", &c[..c.len().min(12)], random_suffix()),
        None => format!("local-{}", random_suffix()),
    };
    let dir = snapshots_root.join(name);
    std::fs::rename(&content, &dir)?;
    Ok(Snapshot { dir, commit })
}

async fn git(args: &[&str], cwd: Option<&Path>) -> anyhow::Result<String> {
    let mut cmd = Command::new("git");
    cmd.args(args).stdin(Stdio::null()).env("GIT_TERMINAL_PROMPT", "0");
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let out = cmd.output().await.context("cannot run git: is it installed?")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // git's first `fatal:`/`error:` line says what went wrong; later lines are advice.
        let line = err
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("fatal:") || l.starts_with("error:"))
            .or_else(|| err.lines().map(str::trim).find(|l| !l.is_empty()))
            .unwrap_or("");
        bail!("git {} failed: {line}", args.first().unwrap_or(&""));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Clones `repo` at `commit` (wins) or `branch` (default: the remote's default branch) into
/// `dest`; returns the commit id checked out.
async fn git_fetch(repo: &str, branch: Option<&str>, commit: Option<&str>, dest: &Path) -> anyhow::Result<String> {
    let dest_s = dest.to_string_lossy().to_string();
    match (commit, branch) {
        (Some(commit), _) => {
            git(&["clone", "--quiet", "--no-checkout", repo, &dest_s], None)
                .await
                .with_context(|| format!("cannot fetch {repo}"))?;
            git(&["checkout", "--quiet", "--detach", commit], Some(dest))
                .await
                .with_context(|| format!("commit {commit} not found in {repo}"))?;
        }
        (None, Some(branch)) => {
            git(&["clone", "--quiet", "--depth", "1", "--branch", branch, repo, &dest_s], None)
                .await
                .with_context(|| format!("cannot fetch branch {branch} of {repo}"))?;
        }
        (None, None) => {
            git(&["clone", "--quiet", "--depth", "1", repo, &dest_s], None)
                .await
                .with_context(|| format!("cannot fetch {repo}"))?;
        }
    }
    git(&["rev-parse", "HEAD"], Some(dest)).await
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

fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..8).map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)])).collect()
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
        let first = git(&["rev-parse", "main"], Some(&repo)).await.unwrap();
        let url = format!("file://{}", repo.display());
        let root = tmp.path().join("snapshots");
        let spec = SourceSpec::Git { repo: url.clone(), subdir: "sub".into() };
        let main = fetch(&spec, None, None, &root).await.unwrap();
        assert_eq!(std::fs::read_to_string(main.dir.join("f")).unwrap(), "one\n");
        assert_eq!(main.commit.as_deref(), Some(first.as_str()));
        let dev = fetch(&spec, Some("dev"), None, &root).await.unwrap();
        assert_eq!(std::fs::read_to_string(dev.dir.join("f")).unwrap(), "two\n");
        let pinned = fetch(&spec, Some("dev"), Some(&first), &root).await.unwrap();
        assert_eq!(std::fs::read_to_string(pinned.dir.join("f")).unwrap(), "one\n");
        let err = fetch(&spec, Some("nope"), None, &root).await.unwrap_err();
        assert!(format!("{err:#}").contains("branch nope"), "{err:#}");
        let err = fetch(&spec, None, Some("0123456789abcdef0123456789abcdef01234567"), &root).await.unwrap_err();
        assert!(format!("{err:#}").contains("not found"), "{err:#}");
        let local = fetch(&SourceSpec::Local(repo.join("sub")), None, None, &root).await.unwrap();
        assert!(local.dir.join("f").exists());
        assert!(fetch(&SourceSpec::Local(tmp.path().join("missing")), None, None, &root).await.is_err());
        let leftovers = std::fs::read_dir(&root)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".fetch"))
            .count();
        assert_eq!(leftovers, 0, "failed fetches leave nothing behind");
    }
}
