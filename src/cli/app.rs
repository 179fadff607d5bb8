//! `berth app ...`: create, list, delete and logs.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use http::Method;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use super::client::AdminClient;
use super::output::{self, Format};
use crate::api::{
    AppList, ChangeResponse, CreateAppRequest, CreateAppResponse, DeleteResponse, ReloadResponse, WebhookSecretResponse,
};

const DRY_RUN_NOTE: &str = "*** dry-run mode, changes have NOT been committed. ***";

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Create an app. Nothing starts until its first request.
    ///
    /// Example: berth app create --spec image --approve --param image=nginx --param port=80 - nginxapp.localhost:/
    Create(CreateArgs),
    /// List apps, optionally only those matching a glob such as `*:**` or `/tools/*`.
    List(ListArgs),
    /// Delete an app and remove its containers.
    Delete(DeleteArgs),
    /// Fetch the app's source again and build it as a new stage version; the current version
    /// serves until the new one is ready, and keeps serving if the fetch or build fails.
    Reload(ReloadArgs),
    /// Make prod serve what stage serves. The new prod container starts and passes its health
    /// check before traffic moves to it.
    Promote(PromoteArgs),
    /// Stage a change to build args (carg), container options (copt) or app config (conf).
    #[command(subcommand)]
    UpdateMetadata(MetadataCommand),
    /// Show an app's container output.
    Logs(LogsArgs),
    /// Create the app's reload webhook secret (or replace it with --rotate) and print it once.
    /// A `POST /_berth/webhook/reload?app=APP` signed with it (GitHub's X-Hub-Signature-256)
    /// reloads the app.
    WebhookSecret(WebhookSecretArgs),
}

#[derive(Debug, Args)]
pub struct WebhookSecretArgs {
    /// Replace the app's existing secret (the old one stops working at once).
    #[arg(long)]
    rotate: bool,
    /// Reloads through the webhook also promote the new version to prod.
    #[arg(long, short = 'p')]
    promote: bool,
    /// The app's `[domain:]/path`.
    app_path: String,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The app spec, e.g. image, proxy, container, python-flask, python-streamlit, go
    /// (`berth spec list` shows them all).
    #[arg(long)]
    spec: Option<String>,
    /// The git branch to fetch (default: the repository's default branch).
    #[arg(long, short = 'b')]
    branch: Option<String>,
    /// The git commit to fetch; wins over --branch.
    #[arg(long, short = 'c')]
    commit: Option<String>,
    /// A build arg for the Containerfile, KEY=VALUE; repeatable (e.g. PYTHON_VERSION=3.11.1).
    #[arg(long = "carg", alias = "container-arg", value_name = "KEY=VALUE")]
    cargs: Vec<String>,
    /// A container option, KEY[=VALUE]; repeatable (e.g. cpu-shares=1000, memory=512m, read-only).
    #[arg(long = "copt", alias = "container-option", value_name = "KEY[=VALUE]")]
    copts: Vec<String>,
    /// A param, KEY=VALUE; repeatable. Every param reaches the container as an env var.
    #[arg(long = "param", short = 'p', value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// A per-app setting, KEY=VALUE; repeatable: container.idle_shutdown_secs,
    /// container.health_url, container.start_timeout_secs.
    #[arg(long = "conf", alias = "app-config", value_name = "KEY=VALUE")]
    conf: Vec<String>,
    /// Who may reach the app: none, system (the admin password) or an [auth.oidc_<name>]
    /// provider; default: [security] app_default_auth.
    #[arg(long)]
    auth: Option<String>,
    /// Approve the app's permissions (accepted for compatibility; berth's specs need none).
    #[arg(long, short = 'a')]
    approve: bool,
    /// Check everything and print what would be created, without creating it.
    #[arg(long)]
    dry_run: bool,
    /// Dev mode: the app is built from the local folder as it is and rebuilt and restarted
    /// whenever a file in it changes. A dev app has no stage and is never promoted.
    #[arg(long, short = 'd')]
    dev: bool,
    /// The app's source: a local folder, a git URL (`github.com/org/repo/sub/dir`,
    /// `https://host/org/repo`, `git@host:org/repo`, `file:///path`), or `-` for specs that
    /// need none (image, proxy).
    source: String,
    /// Where the app is served: `[domain:]/path`, e.g. `nginxapp.localhost:/` or `/tools/nginx`.
    app_path: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Table)]
    format: Format,
    /// `[domainGlob:]pathGlob`; `*` stays within a path segment, `**` crosses them. Default: all.
    glob: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Print what would be deleted, without deleting.
    #[arg(long)]
    dry_run: bool,
    /// The app's `[domain:]/path`.
    app_path: String,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// Print what would be promoted, without promoting.
    #[arg(long)]
    dry_run: bool,
    /// The app's `[domain:]/path`.
    app_path: String,
}

/// Shared flags of staged changes.
#[derive(Debug, Args)]
pub struct StagedFlags {
    /// Promote the change to prod at once.
    #[arg(long, short = 'p')]
    pub promote: bool,
    /// Check and print the change, without making it.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum MetadataCommand {
    /// Build args: KEY=VALUE... APP_PATH (a value of - deletes the arg).
    #[command(alias = "container-arg")]
    Carg(MetadataArgs),
    /// Container options: KEY[=VALUE]... APP_PATH (a value of - deletes the option).
    #[command(alias = "container-option")]
    Copt(MetadataArgs),
    /// App config: KEY=VALUE... APP_PATH, e.g. container.idle_shutdown_secs=600.
    #[command(alias = "app-config")]
    Conf(MetadataArgs),
    /// Who may reach the app: AUTH APP_PATH, AUTH is none, system, default or oidc_<name>.
    Auth(MetadataArgs),
}

#[derive(Debug, Args)]
pub struct MetadataArgs {
    #[command(flatten)]
    flags: StagedFlags,
    /// One or more KEY[=VALUE] entries, then the app's `[domain:]/path` last.
    #[arg(num_args = 2.., required = true, value_name = "ARG")]
    args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// Promote the new version to prod once it runs.
    #[arg(long, short = 'p')]
    promote: bool,
    /// Fetch and check the source and print what would be built, without building or
    /// changing anything.
    #[arg(long)]
    dry_run: bool,
    /// Fetch this branch (and remember it for later reloads).
    #[arg(long, short = 'b')]
    branch: Option<String>,
    /// Fetch this commit.
    #[arg(long, short = 'c')]
    commit: Option<String>,
    /// The app's `[domain:]/path`.
    app_path: String,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Show the output of the app's last image build instead of the container's.
    #[arg(long)]
    build: bool,
    /// Keep printing new output until interrupted.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Show only the last N lines.
    #[arg(long, short = 'n', value_name = "N")]
    lines: Option<usize>,
    /// The app's `[domain:]/path`.
    app_path: String,
}

pub async fn run(cmd: AppCommand, client: &AdminClient) -> anyhow::Result<()> {
    match cmd {
        AppCommand::Create(a) => create(a, client).await,
        AppCommand::List(a) => {
            let list: AppList = client.json(Method::GET, "/v1/apps", &[("glob", a.glob)], None::<&()>).await?;
            print!("{}", output::apps(a.format, &list.apps)?);
            Ok(())
        }
        AppCommand::Delete(a) => {
            let query = [("path", a.app_path), ("dry_run", a.dry_run.to_string())];
            let resp: DeleteResponse = client.json(Method::DELETE, "/v1/apps", &query, None::<&()>).await?;
            for app in &resp.deleted {
                println!("Deleting {} - {}", app.app_path, app.id);
            }
            println!("{} app(s) deleted.", resp.deleted.len());
            dry_run_note(resp.dry_run);
            Ok(())
        }
        AppCommand::Promote(a) => {
            let query = [("path", a.app_path), ("dry_run", a.dry_run.to_string())];
            let r: ChangeResponse = client.json(Method::POST, "/v1/apps/promote", &query, None::<&()>).await?;
            if r.promoted {
                println!("Promoting {}", r.app.app_path);
            } else {
                println!("Nothing to promote for {}: prod serves the stage's version {}", r.app.app_path, r.version);
            }
            println!("{} app(s) promoted.", r.promoted as u8);
            dry_run_note(r.dry_run);
            Ok(())
        }
        AppCommand::UpdateMetadata(cmd) => {
            let (kind, a) = match cmd {
                MetadataCommand::Carg(a) => ("carg", a),
                MetadataCommand::Copt(a) => ("copt", a),
                MetadataCommand::Conf(a) => ("conf", a),
                MetadataCommand::Auth(a) => ("auth", a),
            };
            let (path, entries) = a.args.split_last().expect("clap requires two or more");
            let body: Vec<(String, String)> = match kind {
                "auth" => {
                    let [auth] = entries else {
                        anyhow::bail!("update-metadata auth takes one value, then the app path")
                    };
                    // `default` follows [security] app_default_auth: the app's own setting goes.
                    let auth = if auth.trim() == "default" { "-" } else { auth.as_str() };
                    vec![(crate::auth::APP_CONFIG_KEY.to_string(), auth.to_string())]
                }
                "copt" => parse_options(entries).map_err(anyhow::Error::msg)?.into_iter().collect(),
                _ => parse_kv(entries, if kind == "carg" { "container arg" } else { "app config" })
                    .map_err(anyhow::Error::msg)?
                    .into_iter()
                    .collect(),
            };
            let kind = if kind == "auth" { "conf" } else { kind };
            let query = [
                ("path", path.clone()),
                ("kind", kind.to_string()),
                ("promote", a.flags.promote.to_string()),
                ("dry_run", a.flags.dry_run.to_string()),
            ];
            let r: ChangeResponse = client.json(Method::POST, "/v1/apps/metadata", &query, Some(&body)).await?;
            print_change(&r);
            Ok(())
        }
        AppCommand::Reload(a) => {
            let query = [
                ("path", Some(a.app_path)),
                ("branch", a.branch),
                ("commit", a.commit),
                ("promote", Some(a.promote.to_string())),
                ("dry_run", Some(a.dry_run.to_string())),
            ];
            let resp: ReloadResponse = client.json(Method::POST, "/v1/apps/reload", &query, None::<&()>).await?;
            let what = match (resp.dry_run, resp.built) {
                (true, _) => "would be used",
                (false, true) => "built",
                (false, false) => "reused",
            };
            let image = resp.image.as_deref().unwrap_or("-");
            let commit = resp.git_commit.as_deref().map(|c| format!(" at commit {}", &c[..c.len().min(12)]));
            println!(
                "Reloaded {}{}: stage version {}, image {image} {what}.",
                resp.app.app_path,
                commit.unwrap_or_default(),
                resp.version
            );
            if resp.promoted {
                println!("Promoted apps: {}", resp.app.app_path);
            }
            dry_run_note(resp.dry_run);
            Ok(())
        }
        AppCommand::WebhookSecret(a) => {
            let query = [("path", a.app_path), ("rotate", a.rotate.to_string()), ("promote", a.promote.to_string())];
            let r: WebhookSecretResponse =
                client.json(Method::POST, "/v1/apps/webhook-secret", &query, None::<&()>).await?;
            println!("Webhook secret for {} (shown only now):", r.app.app_path);
            println!("{}", r.secret);
            for url in &r.urls {
                println!("URL: {url}");
            }
            let promote = if r.promote { "reloads and promotes" } else { "reloads stage" };
            println!("A POST signed with it (X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>) {promote}.");
            Ok(())
        }
        AppCommand::Logs(a) => {
            let query = [
                ("path", Some(a.app_path)),
                ("lines", a.lines.map(|n| n.to_string())),
                ("follow", Some(a.follow.to_string())),
                ("build", Some(a.build.to_string())),
            ];
            let mut body = client.send(Method::GET, "/v1/apps/logs", &query, None).await?.into_body();
            let mut stdout = tokio::io::stdout();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    stdout.write_all(&data).await?;
                    stdout.flush().await?;
                }
            }
            Ok(())
        }
    }
}

async fn create(a: CreateArgs, client: &AdminClient) -> anyhow::Result<()> {
    let params = parse_kv(&a.params, "param").map_err(anyhow::Error::msg)?;
    let mut app_config = parse_kv(&a.conf, "app config").map_err(anyhow::Error::msg)?;
    if let Some(auth) = a.auth {
        app_config.insert(crate::auth::APP_CONFIG_KEY.to_string(), auth);
    }
    let build_args = parse_kv(&a.cargs, "container arg").map_err(anyhow::Error::msg)?;
    let container_options = parse_options(&a.copts).map_err(anyhow::Error::msg)?;
    let source_url = absolute_source(&a.source)?;
    let req = CreateAppRequest {
        source_url,
        path: a.app_path,
        spec: a.spec.as_deref().map(spec_arg).transpose()?,
        build_args,
        container_options,
        git_branch: a.branch,
        git_commit: a.commit,
        params,
        app_config,
        approve: a.approve,
        dry_run: a.dry_run,
        dev: a.dev,
    };
    let resp: CreateAppResponse = client.json(Method::POST, "/v1/apps", &(), Some(&req)).await?;
    println!("      App: {}", resp.app.app_path);
    if let Some(url) = &resp.http_url {
        println!(" HTTP Url: {url}");
    }
    if let Some(url) = &resp.https_url {
        println!("HTTPS Url: {url}");
    }
    if !resp.spec_warnings.is_empty() {
        eprintln!("Warning: spec {}: berth ignores: {}", resp.app.spec, resp.spec_warnings.join("; "));
    }
    println!("App created. No approval required");
    dry_run_note(resp.dry_run);
    Ok(())
}

/// The outcome line of a staged change (`param update`, `update-metadata`).
pub fn print_change(r: &ChangeResponse) {
    println!("Updated {} (stage version {})", r.app.app_path, r.version);
    if r.promoted {
        println!("Promoted apps: {}", r.app.app_path);
    }
    println!("1 app(s) updated, {} app(s) promoted.", r.promoted as u8);
    dry_run_note(r.dry_run);
}

pub fn dry_run_note(dry_run: bool) {
    if dry_run {
        println!("{DRY_RUN_NOTE}");
    }
}

/// A spec given as a folder (a path starting with `/`, `.` or `~`, or an existing folder
/// holding `app.star` or `spec.toml`) is sent as its absolute path; a name is sent as is.
fn spec_arg(spec: &str) -> anyhow::Result<String> {
    let s = spec.trim();
    let dir = std::path::Path::new(s);
    let is_spec_folder = dir.join("app.star").is_file() || dir.join("spec.toml").is_file();
    if s.starts_with('/') || s.starts_with('.') || s.starts_with('~') || is_spec_folder {
        absolute_source(s)
    } else {
        Ok(s.to_string())
    }
}

/// Local sources (a path starting with `/`, `.` or `~`, or an existing folder) are made
/// absolute relative to the CLI's working folder and must exist.
pub(super) fn absolute_source(source: &str) -> anyhow::Result<String> {
    let s = source.trim();
    let local = s.starts_with('/') || s.starts_with('.') || s.starts_with('~');
    if s == "-" || (!local && !std::path::Path::new(s).is_dir()) {
        return Ok(s.to_string());
    }
    let expanded = match s.strip_prefix('~') {
        Some(rest) => format!("{}{rest}", std::env::var("HOME").unwrap_or_default()),
        None => s.to_string(),
    };
    let path = std::path::absolute(&expanded)?;
    anyhow::ensure!(path.exists(), "path does not exist {}", path.display());
    Ok(path.display().to_string())
}

/// `K=V` entries (split on the first `=`) into a map: `--param`, `--conf`, `--carg`.
pub(super) fn parse_kv(entries: &[String], what: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for e in entries {
        match e.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                map.insert(k.trim().to_string(), v.to_string());
            }
            _ => return Err(format!("invalid {what} format: {e} (expected KEY=VALUE)")),
        }
    }
    Ok(map)
}

/// `K[=V]` entries for `--copt`: a bare key is a flag with an empty value.
fn parse_options(entries: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for e in entries {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        if k.trim().is_empty() {
            return Err(format!("invalid container option format: {e} (expected KEY[=VALUE])"));
        }
        map.insert(k.trim().to_string(), v.trim().trim_matches(|c| c == '"' || c == '\'').to_string());
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn kv_entries() {
        let entries = ["A=1".to_string(), " B =x=y".to_string(), "C=".to_string()];
        let map = parse_kv(&entries, "param").unwrap();
        assert_eq!(map["A"], "1");
        assert_eq!(map["B"], "x=y");
        assert_eq!(map["C"], "");
        assert_eq!(parse_kv(&["foo".into()], "param").unwrap_err(), "invalid param format: foo (expected KEY=VALUE)");
        assert!(parse_kv(&[" =1".into()], "param").is_err());
        assert_eq!(parse_options(&["read-only".into()]).unwrap()["read-only"], "");
    }

    proptest! {
        #[test]
        fn kv_never_panics(entries in proptest::collection::vec(any::<String>(), 0..5)) {
            let _ = parse_kv(&entries, "param");
            let _ = parse_options(&entries);
        }

        /// `KEY=VALUE` gives back the key (trimmed) and the value exactly, whatever it holds.
        #[test]
        fn kv_round_trips(key in "[^=]*[^=\\s][^=]*", value in any::<String>()) {
            let map = parse_kv(&[format!("{key}={value}")], "param").unwrap();
            prop_assert_eq!(map.len(), 1);
            prop_assert_eq!(map.get(key.trim()), Some(&value));
        }

        /// An entry without `=` is refused, naming the entry, on one line.
        #[test]
        fn kv_without_equals_is_refused(entry in "[^=\n]*") {
            let err = parse_kv(std::slice::from_ref(&entry), "param").unwrap_err();
            prop_assert!(err.contains(&entry));
            prop_assert_eq!(err.lines().count(), 1);
        }
    }
}
