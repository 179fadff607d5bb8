//! `berth spec ...`: the specs the server knows (built-in and from `spec_dirs`).

use clap::Subcommand;
use http::Method;

use super::client::AdminClient;
use crate::api::SpecInfo;

#[derive(Debug, Subcommand)]
pub enum SpecCommand {
    /// List every spec with its params (required ones marked, defaults shown).
    List,
}

pub async fn run(cmd: SpecCommand, client: &AdminClient) -> anyhow::Result<()> {
    match cmd {
        SpecCommand::List => {
            let specs: Vec<SpecInfo> = client.json(Method::GET, "/v1/specs", &(), None::<&()>).await?;
            for spec in specs {
                println!("{:<24} {} [{}]", spec.name, spec.help, spec.origin);
                for p in spec.params {
                    let how = match (&p.default, p.required) {
                        (_, true) => "required".to_string(),
                        (Some(d), false) => format!("default {d}"),
                        (None, false) => "optional".to_string(),
                    };
                    println!("    {:<20} {:<24} {}", p.name, how, p.help);
                }
            }
            Ok(())
        }
    }
}
