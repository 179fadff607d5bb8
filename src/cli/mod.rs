//! The command line: one file per command group. Commands talk to the server over the admin
//! socket (see `client`); they never touch the engine or the database directly.

mod app;
mod apply;
mod audit;
mod client;
mod output;
mod param;
mod server;
mod spec;
mod sync;
mod version;

use std::ffi::OsString;

use clap::{CommandFactory, Parser, Subcommand};

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
    /// Create and update apps from a declarative file (Clace's apply format).
    Apply(apply::ApplyArgs),
    /// Re-apply an apply file on a schedule.
    #[command(subcommand)]
    Sync(sync::SyncCommand),
    /// The recorded admin changes: who changed what, when, and how it ended.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

/// Runs the CLI and returns the process exit code: 0 on success, 1 on any error (one line
/// on stderr).
pub fn main() -> i32 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = match Cli::try_parse_from(double_dash_long_options(std::env::args_os().collect())) {
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

/// Clace's CLI (Go's flag package) takes long options with one dash: `-param url=...`,
/// `-spec proxy`, `-approve`, `-dry-run`. Rewrites `-name` and `-name=value` to `--name...`
/// when `name` is a long option (or alias) of the subcommand being run. Everything else is
/// left as it is: `-` (no source), short flags (`-p`), the value after an option that takes
/// one, and anything after `--`.
fn double_dash_long_options(args: Vec<OsString>) -> Vec<OsString> {
    let mut command = Cli::command();
    let mut args = args.into_iter();
    let mut out: Vec<OsString> = args.next().into_iter().collect();
    let mut rest: Vec<OsString> = Vec::new();
    for arg in args.by_ref() {
        match arg.to_str().and_then(|a| command.find_subcommand(a)).cloned() {
            Some(sub) => {
                command = sub;
                out.push(arg);
            }
            None => {
                rest.push(arg);
                break;
            }
        }
    }
    rest.extend(args);
    let long = |name: &str| {
        command
            .get_arguments()
            .find(|a| a.get_long() == Some(name) || a.get_all_aliases().unwrap_or_default().contains(&name))
    };
    let short_takes_value =
        |c: char| command.get_arguments().any(|a| a.get_short() == Some(c) && a.get_action().takes_values());
    let mut rest = rest.into_iter();
    let mut value_next = false;
    while let Some(arg) = rest.next() {
        let Some(text) = arg.to_str().filter(|_| !value_next) else {
            value_next = false;
            out.push(arg);
            continue;
        };
        if text == "--" {
            out.push(arg);
            out.extend(rest.by_ref());
            break;
        }
        let (name, has_value) = match text.split_once('=') {
            Some((name, _)) => (name, true),
            None => (text, false),
        };
        if let Some(name) = name.strip_prefix("--") {
            value_next = !has_value && long(name).is_some_and(|a| a.get_action().takes_values());
            out.push(arg);
        } else if let Some(name) = name.strip_prefix('-').filter(|n| n.chars().count() > 1) {
            match long(name) {
                Some(a) => {
                    value_next = !has_value && a.get_action().takes_values();
                    out.push(format!("-{text}").into());
                }
                None => out.push(arg),
            }
        } else {
            let mut chars = name.chars();
            value_next = !has_value
                && chars.next() == Some('-')
                && matches!((chars.next(), chars.next()), (Some(c), None) if short_takes_value(c));
            out.push(arg);
        }
    }
    out
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let home = Home::from_env()?;
    match cli.command {
        Command::Server(cmd) => server::run(cmd, home),
        Command::App(cmd) => with_client(&home, |client| async move { app::run(cmd, &client).await }),
        Command::Param(cmd) => with_client(&home, |client| async move { param::run(cmd, &client).await }),
        Command::Version(cmd) => with_client(&home, |client| async move { version::run(cmd, &client).await }),
        Command::Spec(cmd) => with_client(&home, |client| async move { spec::run(cmd, &client).await }),
        Command::Apply(args) => with_client(&home, |client| async move { apply::run(args, &client).await }),
        Command::Sync(cmd) => with_client(&home, |client| async move { sync::run(cmd, &client).await }),
        Command::Audit(cmd) => with_client(&home, |client| async move { audit::run(cmd, &client).await }),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(line: &str) -> String {
        let args = line.split(' ').map(OsString::from).collect();
        let out: Vec<String> = double_dash_long_options(args).into_iter().map(|a| a.into_string().unwrap()).collect();
        out.join(" ")
    }

    #[test]
    fn single_dash_long_options_as_in_clace() {
        assert_eq!(
            rewrite("berth app create -spec proxy -approve -param url=http://127.0.0.1:9 - proxyapp.localhost:/"),
            "berth app create --spec proxy --approve --param url=http://127.0.0.1:9 - proxyapp.localhost:/"
        );
        assert_eq!(
            rewrite("berth app create -spec=image -dry-run -branch=main -container-arg A=1 -p port=80 - /x"),
            "berth app create --spec=image --dry-run --branch=main --container-arg A=1 -p port=80 - /x"
        );
        assert_eq!(
            rewrite("berth param update -promote -dry-run K V /x"),
            "berth param update --promote --dry-run K V /x"
        );
        assert_eq!(rewrite("berth app list -format json"), "berth app list --format json");
        assert_eq!(
            rewrite("berth apply -promote -approve -clobber -param k=v -branch main apps.star /x*"),
            "berth apply --promote --approve --clobber --param k=v --branch main apps.star /x*"
        );
        assert_eq!(
            rewrite("berth sync schedule -minutes 5 -promote f.star"),
            "berth sync schedule --minutes 5 --promote f.star"
        );
    }

    #[test]
    fn values_unknown_names_and_after_double_dash_stay() {
        // The value of an option is never rewritten, even when it looks like one.
        assert_eq!(rewrite("berth app create -param -approve - /x"), "berth app create --param -approve - /x");
        assert_eq!(rewrite("berth app create -p -spec - /x"), "berth app create -p -spec - /x");
        // Not a long option of this subcommand.
        assert_eq!(rewrite("berth app create -nope - /x"), "berth app create -nope - /x");
        assert_eq!(rewrite("berth app list -promote"), "berth app list -promote");
        assert_eq!(rewrite("berth app create -- -spec"), "berth app create -- -spec");
        assert_eq!(rewrite("berth -spec"), "berth -spec");
    }

    #[test]
    fn rewritten_lines_parse() {
        let args = "berth app create -spec proxy -approve -param url=http://127.0.0.1:9 - p.localhost:/";
        let cli = Cli::try_parse_from(double_dash_long_options(args.split(' ').map(OsString::from).collect()));
        assert!(cli.is_ok(), "{cli:?}");
        Cli::command().debug_assert();
    }
}
