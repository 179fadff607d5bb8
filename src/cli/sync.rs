//! `berth sync ...`: scheduled re-applies of an apply file (`schedule`, `list`, `run`,
//! `delete`).

use clap::{Args, Subcommand};
use http::Method;

use super::app::parse_kv;
use super::apply::{file_argument, print_apply};
use super::client::AdminClient;
use crate::api::{SyncInfo, SyncList, SyncRunResponse, SyncScheduleRequest, SyncScheduleResponse};

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Re-apply an apply file every N minutes (and now); prints its id and webhook secret.
    Schedule(ScheduleArgs),
    /// List the syncs with their last run, commit, result and error.
    List,
    /// Apply a sync's file now.
    Run(IdArgs),
    /// Delete a sync (its apps stay).
    Delete(IdArgs),
}

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// How often, in minutes (default 15).
    #[arg(long)]
    minutes: Option<f64>,
    /// Promote the staged changes to prod at once.
    #[arg(long, short = 'p')]
    promote: bool,
    /// Accepted for Clace compatibility.
    #[arg(long)]
    approve: bool,
    /// Overwrite changes made with the CLI since the last apply.
    #[arg(long)]
    clobber: bool,
    /// The branch of a file in git.
    #[arg(long)]
    branch: Option<String>,
    /// KEY=VALUE for the file's config("KEY", default) calls (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// The apply file: a local path, or a file in a git repository.
    file: String,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The sync's id (`sync list`).
    id: String,
}

pub async fn run(cmd: SyncCommand, client: &AdminClient) -> anyhow::Result<()> {
    match cmd {
        SyncCommand::Schedule(a) => {
            let req = SyncScheduleRequest {
                file: file_argument(&a.file)?,
                branch: a.branch,
                params: parse_kv(&a.params, "param").map_err(anyhow::Error::msg)?,
                minutes: a.minutes,
                promote: a.promote,
                approve: a.approve,
                clobber: a.clobber,
            };
            let r: SyncScheduleResponse = client.json(Method::POST, "/v1/syncs", &(), Some(&req)).await?;
            println!("Sync id        : {}", r.sync.id);
            println!("Webhook secret : {}", r.webhook_secret);
            println!("(the secret is shown only now)");
            if let Some(applied) = &r.first_run {
                print_apply(applied);
            }
            if let Some(e) = &r.first_error {
                println!("First run failed: {e}");
            }
            Ok(())
        }
        SyncCommand::List => {
            let r: SyncList = client.json(Method::GET, "/v1/syncs", &(), None::<&()>).await?;
            println!(
                "{:<26} {:>8} {:<10} {:<12} {:<10} {:<40} ERROR",
                "ID", "MINUTES", "LAST RUN", "COMMIT", "RESULT", "FILE"
            );
            for s in &r.syncs {
                print_sync(s);
            }
            Ok(())
        }
        SyncCommand::Run(a) => {
            let r: SyncRunResponse = client.json(Method::POST, "/v1/syncs/run", &[("id", a.id)], None::<&()>).await?;
            match &r.applied {
                Some(applied) => print_apply(applied),
                None => println!("No new commit: nothing applied."),
            }
            Ok(())
        }
        SyncCommand::Delete(a) => {
            let r: SyncInfo = client.json(Method::DELETE, "/v1/syncs", &[("id", a.id)], None::<&()>).await?;
            println!("Deleted sync {} ({})", r.id, r.file);
            Ok(())
        }
    }
}

fn print_sync(s: &SyncInfo) {
    let dash = || "-".to_string();
    let commit = s.last_commit.as_deref().map(|c| c[..c.len().min(12)].to_string()).unwrap_or_else(dash);
    println!(
        "{:<26} {:>8} {:<10} {:<12} {:<10} {:<40} {}",
        s.id,
        s.minutes,
        s.last_run_at.map(|t| t.to_string()).unwrap_or_else(dash),
        commit,
        s.last_result.clone().unwrap_or_else(dash),
        s.file,
        s.last_error.clone().unwrap_or_default()
    );
}
