//! `berth server ...`: start (foreground), stop, and a new admin password.

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
    /// Make a new password for the admin user (system auth), print it once and store only
    /// its hash in the home; the running server uses it from the next login on.
    Password,
}

pub fn run(cmd: ServerCommand, home: Home) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cmd {
        ServerCommand::Start => {
            init_logging();
            rt.block_on(crate::server::run(home))
        }
        ServerCommand::Password => {
            let password = crate::auth::password::generate();
            crate::auth::password::store(&home, &password)?;
            println!("Admin user    : {}\nAdmin password: {password}", crate::auth::password::ADMIN_USER);
            Ok(())
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

/// Crates whose debug and trace output can carry request and response bodies or headers: the
/// engine client logs the container create request (with resolved secrets in its env) and
/// inspect responses; the HTTP stacks log frames. Capped at info whatever `BERTH_LOG` says, so
/// no resolved secret reaches the log at any level.
const BODY_LOGGING_TARGETS: &[&str] = &["bollard", "hyper", "hyper_util", "h2", "reqwest", "rustls", "tower", "axum"];

/// The cap on [`BODY_LOGGING_TARGETS`], applied on top of the `BERTH_LOG` filter.
fn body_logging_cap() -> tracing_subscriber::filter::Targets {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    BODY_LOGGING_TARGETS.iter().fold(Targets::new().with_default(LevelFilter::TRACE), |caps, target| {
        caps.with_target(*target, LevelFilter::INFO)
    })
}

fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,hyper=warn,bollard=warn,rustls=error"));
    tracing_subscriber::registry()
        .with(filter)
        .with(body_logging_cap())
        .with(tracing_subscriber::fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr))
        .init();
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    #[test]
    fn body_logging_crates_are_capped_at_info() {
        let cap = super::body_logging_cap();
        for target in ["bollard", "bollard::docker", "hyper::proto::h1", "hyper_util::client", "h2::codec"] {
            assert!(!cap.would_enable(target, &Level::DEBUG), "{target} debug");
            assert!(!cap.would_enable(target, &Level::TRACE), "{target} trace");
            assert!(cap.would_enable(target, &Level::INFO), "{target} info");
        }
        assert!(cap.would_enable("berth::apps", &Level::TRACE));
        assert!(cap.would_enable("sqlx::query", &Level::DEBUG));
    }
}
