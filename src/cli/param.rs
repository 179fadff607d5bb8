//! `berth param ...`: staged param updates and the stage/prod view of params.

use clap::{Args, Subcommand};
use http::Method;

use super::app::{print_change, StagedFlags};
use super::client::AdminClient;
use crate::api::{ChangeResponse, ParamsResponse};

#[derive(Debug, Subcommand)]
pub enum ParamCommand {
    /// Set a param on the app's stage (a value of - deletes it); --promote also sets it on prod.
    /// A value may be a secret: '{{secret "PROVIDER" "KEY"}}'.
    Update(UpdateArgs),
    /// Show the app's params on stage and on prod, side by side.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    flags: StagedFlags,
    key: String,
    /// The value; `-` deletes the param.
    #[arg(allow_hyphen_values = true)]
    value: String,
    /// The app's `[domain:]/path`.
    app_path: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The app's `[domain:]/path`.
    app_path: String,
}

pub async fn run(cmd: ParamCommand, client: &AdminClient) -> anyhow::Result<()> {
    match cmd {
        ParamCommand::Update(a) => {
            let query = [
                ("path", a.app_path),
                ("key", a.key),
                ("value", a.value),
                ("promote", a.flags.promote.to_string()),
                ("dry_run", a.flags.dry_run.to_string()),
            ];
            let r: ChangeResponse = client.json(Method::POST, "/v1/apps/params", &query, None::<&()>).await?;
            print_change(&r);
            Ok(())
        }
        ParamCommand::List(a) => {
            let r: ParamsResponse =
                client.json(Method::GET, "/v1/apps/params", &[("path", a.app_path)], None::<&()>).await?;
            let mut keys: Vec<&String> = r.stage.keys().chain(r.prod.keys()).collect();
            keys.sort();
            keys.dedup();
            if keys.is_empty() {
                println!("No param values for app {} : {}", r.app.app_path, r.app.id);
                return Ok(());
            }
            println!("Param values for app {} : {}", r.app.app_path, r.app.id);
            let width = keys.iter().map(|k| k.len()).max().unwrap_or(4).max(4);
            println!("  {:<width$}  {:<30}  PROD", "NAME", "STAGE");
            for k in keys {
                let show =
                    |m: &std::collections::BTreeMap<String, String>| m.get(k).cloned().unwrap_or_else(|| "-".into());
                let (stage, prod) = (show(&r.stage), show(&r.prod));
                let mark = if stage != prod { "  (staged)" } else { "" };
                println!("  {k:<width$}  {stage:<30}  {prod}{mark}");
            }
            Ok(())
        }
    }
}
