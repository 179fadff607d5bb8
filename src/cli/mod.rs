//! The command line: one file per command group. Commands talk to the server over the admin
//! socket (see `client`); they never touch the engine or the database directly.

mod app;
mod client;
mod output;
mod param;
mod server;
mod spec;
mod version;

use clap::{Parser, Subcommand};

use crate::config::Home;

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "A self-hosted app server: builds apps from source, runs them on demand behind HTTPS, stops them when idle",
    long_about = "berth builds apps from their source (a folder or a git URL) with a spec, or runs a \
                  container image or proxies a URL, behind one HTTPS endpoint. A container starts on \
                  its app's first request and stops after it has been idle. Config changes land on \
                  the app's stage (<path>_cl_stage) and reach prod with `berth app promote`.\n\n\
                  Home folder: $BERTH_HOME (default ~/.berth) with berth.toml, the database, certificates \
                  and run/berth.sock, the admin socket every command talks to."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, reload, promote and delete apps; stage metadata changes; read logs.
    #[command(subcommand)]
    App(app::AppCommand),
    /// Start or stop the server.
    #[command(subcommand)]
    Server(server::ServerCommand),
    /// Staged param updates and the stage/prod view of params.
    #[command(subcommand)]
    Param(param::ParamCommand),
    /// List an app's versions, switch prod between them, revert.
    #[command(subcommand)]
    Version(version::VersionCommand),
    /// Show the app specs the server knows.
    #[command(subcommand)]
    Spec(spec::SpecCommand),
}

/// Runs the CLI and returns the process exit code: 0 on success, 1 on any error (one line
/// on stderr).
pub fn main() -> i32 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand { 1 } else { 0 };
            }
            // clap's message spans lines (the error, then what is missing, then usage): keep
            // what comes before the usage, on one line.
            let rendered = e.render().to_string();
            let message: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:"))
                .filter(|l| !l.is_empty())
                .collect();
            let message = message.join(" ");
            eprintln!("error: {} (see --help)", message.trim_start_matches("error: "));
            return 1;
        }
    };
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").trim_end());
            1
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let home = Home::from_env()?;
    match cli.command {
        Command::Server(cmd) => server::run(cmd, home),
        Command::App(cmd) => with_client(&home, |client| async move { app::run(cmd, &client).await }),
        Command::Param(cmd) => with_client(&home, |client| async move { param::run(cmd, &client).await }),
        Command::Version(cmd) => with_client(&home, |client| async move { version::run(cmd, &client).await }),
        Command::Spec(cmd) => with_client(&home, |client| async move { spec::run(cmd, &client).await }),
    }
}

fn with_client<F, Fut>(home: &Home, f: F) -> anyhow::Result<()>
where
    F: FnOnce(client::AdminClient) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(f(client::AdminClient::new(home.socket())))
}
