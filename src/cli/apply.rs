//! `berth apply`: applies a declarative apps file (Clace's format) and prints the plan and the
//! result. A local file's path is made absolute here; the server reads the file.

use clap::Args;
use http::Method;

use super::app::{dry_run_note, parse_kv};
use super::client::AdminClient;
use crate::api::{ApplyRequest, ApplyResponse};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Accepted for Clace compatibility (berth has no plugin permissions to approve).
    #[arg(long)]
    pub approve: bool,
    /// Promote the staged changes to prod at once.
    #[arg(long, short = 'p')]
    pub promote: bool,
    /// Print the plan without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Overwrite changes made with the CLI since the last apply.
    #[arg(long)]
    pub clobber: bool,
    /// The branch of a file in git.
    #[arg(long)]
    pub branch: Option<String>,
    /// KEY=VALUE for the file's config("KEY", default) calls (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// The apply file: a local path, or a file in a git repository
    /// (github.com/org/repo/path/apps.star).
    pub file: String,
    /// Apply only the declared apps matching this glob (`[domain:]path`, `*`, `**`).
    pub app_glob: Option<String>,
}

/// A local file (a path that exists, or one starting with `/`, `.` or `~`) as an absolute
/// path; anything else (a git URL) as it is.
pub(super) fn file_argument(file: &str) -> anyhow::Result<String> {
    let f = file.trim();
    if std::path::Path::new(f).is_file() {
        return Ok(std::path::absolute(f)?.display().to_string());
    }
    super::app::absolute_source(f)
}

pub async fn run(a: ApplyArgs, client: &AdminClient) -> anyhow::Result<()> {
    let req = ApplyRequest {
        file: file_argument(&a.file)?,
        branch: a.branch,
        params: parse_kv(&a.params, "param").map_err(anyhow::Error::msg)?,
        glob: a.app_glob,
        approve: a.approve,
        promote: a.promote,
        dry_run: a.dry_run,
        clobber: a.clobber,
    };
    let r: ApplyResponse = client.json(Method::POST, "/v1/apply", &(), Some(&req)).await?;
    print_apply(&r);
    Ok(())
}

/// The per-app lines and the counts of an apply (also used by `sync`).
pub(super) fn print_apply(r: &ApplyResponse) {
    match &r.commit {
        Some(c) => println!("Applying {} at commit {c}", r.file),
        None => println!("Applying {}", r.file),
    }
    for app in &r.apps {
        let version = app.version.map(|v| format!(" (stage version {v})")).unwrap_or_default();
        let promoted = if app.promoted { ", promoted" } else { "" };
        println!("  {:<9} {}{version}{promoted}", app.action, app.app_path);
        for c in &app.changes {
            println!("            {c}");
        }
        for k in &app.kept {
            println!("            kept: {k}");
        }
    }
    if r.created + r.updated == 0 {
        println!("No changes.");
    }
    println!("{} app(s) created, {} updated, {} unchanged.", r.created, r.updated, r.unchanged);
    dry_run_note(r.dry_run);
}
