//! `berth version ...`: list an app's versions, switch prod to one, revert.

use clap::{Args, Subcommand};
use http::Method;

use super::app::dry_run_note;
use super::client::AdminClient;
use super::output::Format;
use crate::api::{ChangeResponse, VersionInfo};

#[derive(Debug, Subcommand)]
pub enum VersionCommand {
    /// List the app's versions; the one prod serves is marked =====>, the stage's with (stage).
    List(ListArgs),
    /// Make prod serve version N (or previous / next). The new container starts and passes its
    /// health check before traffic moves.
    Switch(SwitchArgs),
    /// Make prod serve the version it served before its last change.
    Revert(RevertArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Table)]
    format: Format,
    app_path: String,
}

#[derive(Debug, Args)]
pub struct SwitchArgs {
    #[arg(long)]
    dry_run: bool,
    /// A version number, `previous` or `next`.
    version: String,
    app_path: String,
}

#[derive(Debug, Args)]
pub struct RevertArgs {
    #[arg(long)]
    dry_run: bool,
    app_path: String,
}

pub async fn run(cmd: VersionCommand, client: &AdminClient) -> anyhow::Result<()> {
    match cmd {
        VersionCommand::List(a) => {
            let list: Vec<VersionInfo> =
                client.json(Method::GET, "/v1/versions", &[("path", a.app_path)], None::<&()>).await?;
            print!("{}", super::output::versions(a.format, &list)?);
            Ok(())
        }
        VersionCommand::Switch(a) => switch(client, a.app_path, a.version, a.dry_run, "Switched").await,
        VersionCommand::Revert(a) => switch(client, a.app_path, "revert".into(), a.dry_run, "Reverted").await,
    }
}

async fn switch(client: &AdminClient, path: String, version: String, dry_run: bool, verb: &str) -> anyhow::Result<()> {
    let query = [("path", path), ("version", version), ("dry_run", dry_run.to_string())];
    let r: ChangeResponse = client.json(Method::POST, "/v1/versions/switch", &query, None::<&()>).await?;
    let from = r.from_version.unwrap_or(r.version);
    println!("{verb} {} from version {from} to version {}", r.app.app_path, r.version);
    dry_run_note(r.dry_run);
    Ok(())
}
