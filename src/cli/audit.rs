//! `berth audit list`: the recorded admin changes (see [`crate::audit`]).

use clap::{Subcommand, ValueEnum};
use http::Method;
use serde::Serialize;

use super::client::AdminClient;
use crate::store::audit::{AuditEvent, AuditResult};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List the recorded admin changes, oldest first.
    List {
        /// Only changes to apps whose path matches this glob (e.g. `/x*`, `example.com:**`).
        #[arg(long)]
        app: Option<String>,
        /// Only changes since this long ago (`90m`, `2h`, `7d`) or since this time (RFC 3339).
        #[arg(long, value_parser = parse_since)]
        since: Option<i64>,
        #[arg(long, value_enum, default_value_t)]
        format: AuditFormat,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum AuditFormat {
    #[default]
    Table,
    Json,
}

#[derive(Serialize)]
struct AuditQuery<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    app: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<i64>,
}

/// `--since`: a duration back from now, or an RFC 3339 time; as unix seconds.
fn parse_since(text: &str) -> Result<i64, String> {
    parse_since_at(text, std::time::SystemTime::now())
}

fn parse_since_at(text: &str, now: std::time::SystemTime) -> Result<i64, String> {
    let at = match humantime::parse_duration(text) {
        Ok(ago) => now.checked_sub(ago).ok_or_else(|| format!("{text} reaches before 1970"))?,
        Err(_) => humantime::parse_rfc3339_weak(text)
            .map_err(|_| format!("invalid time {text:?}: expected a duration (90m, 2h, 7d) or an RFC 3339 time"))?,
    };
    let secs = at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Ok(i64::try_from(secs).unwrap_or(i64::MAX))
}

pub async fn run(cmd: AuditCommand, client: &AdminClient) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::List { app, since, format } => {
            let query = AuditQuery { app: app.as_deref(), since };
            let events: Vec<AuditEvent> = client.json(Method::GET, "/v1/audit", &query, None::<&()>).await?;
            print!("{}", render(format, &events)?);
            Ok(())
        }
    }
}

fn render(format: AuditFormat, events: &[AuditEvent]) -> anyhow::Result<String> {
    Ok(match format {
        AuditFormat::Json => serde_json::to_string_pretty(events)? + "\n",
        AuditFormat::Table => {
            let mut out = format!(
                "{:<20} {:<12} {:<28} {:<30} {:<6} {}\n",
                "TIME", "USER", "COMMAND", "APP", "RESULT", "MESSAGE"
            );
            for e in events {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(e.at).unwrap_or(0));
                let result = match e.result {
                    AuditResult::Ok => "ok",
                    AuditResult::Error => "error",
                };
                out.push_str(&format!(
                    "{:<20} {:<12} {:<28} {:<30} {result:<6} {}\n",
                    humantime::format_rfc3339_seconds(at).to_string(),
                    e.user,
                    e.command,
                    e.app,
                    e.message.replace('\n', " ")
                ));
            }
            out
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        assert_eq!(parse_since_at("2h", now), Ok(1_000_000 - 7200));
        assert_eq!(parse_since_at("7d", now), Ok(1_000_000 - 7 * 86_400));
        assert_eq!(parse_since_at("1970-01-02T00:00:00Z", now), Ok(86_400));
        let err = parse_since_at("yesterday", now).unwrap_err();
        assert!(err.contains("yesterday") && err.contains("RFC 3339"), "{err}");
    }
}
