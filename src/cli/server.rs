//! `berth server ...`: start (foreground) and stop.

use std::time::Duration;

use clap::Subcommand;
use http::Method;

use super::client::AdminClient;
use crate::config::Home;

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Run the server in the foreground (HTTP, HTTPS and the admin socket) until SIGTERM,
    /// SIGINT or `berth server stop`.
    Start,
    /// Stop the running server: it stops accepting, lets in-flight requests finish, and exits.
    Stop,
}

pub fn run(cmd: ServerCommand, home: Home) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cmd {
        ServerCommand::Start => {
            init_logging();
            rt.block_on(crate::server::run(home))
        }
        ServerCommand::Stop => rt.block_on(async {
            let client = AdminClient::new(home.socket());
            client.send(Method::POST, "/v1/server/stop", &(), None).await?;
            // The server removes its socket as its last step; wait for that (bounded).
            let grace = home.load_config().map(|c| c.server.shutdown_grace_secs).unwrap_or(10);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(grace + 15);
            while home.socket().exists() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::ensure!(!home.socket().exists(), "the server was asked to stop but is still shutting down");
            println!("server stopped");
            Ok(())
        }),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,hyper=warn,bollard=warn,rustls=error"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
