//! The admin API's request and response types, shared by the CLI (client) and the server.
//! Plain data: no I/O here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Path prefix of every admin route (served only on the unix socket).
pub const PREFIX: &str = "/v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateAppRequest {
    pub source_url: String,
    pub path: String,
    pub spec: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Per-app settings such as `container.idle_shutdown_secs`.
    #[serde(default)]
    pub app_config: BTreeMap<String, String>,
    /// Build args (`--carg`), for specs that build an image.
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// Container options (`--copt key[=value]`; an empty value is a bare flag).
    #[serde(default)]
    pub container_options: BTreeMap<String, String>,
    pub git_branch: Option<String>,
    pub git_commit: Option<String>,
    #[serde(default)]
    pub approve: bool,
    #[serde(default)]
    pub dry_run: bool,
    /// Dev mode (`--dev`): built from the local folder as it is and rebuilt on every change;
    /// no stage, never promoted.
    #[serde(default)]
    pub dev: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateAppResponse {
    pub app: AppInfo,
    pub http_url: Option<String>,
    pub https_url: Option<String>,
    pub dry_run: bool,
    /// What berth ignores in the app's (Clace-format) spec; printed as one warning line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spec_warnings: Vec<String>,
}

/// One app as `app list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppInfo {
    pub id: String,
    pub domain: String,
    pub path: String,
    /// `[domain:]path`, as typed on the command line.
    pub app_path: String,
    pub spec: String,
    pub source_url: String,
    pub params: BTreeMap<String, String>,
    pub app_config: BTreeMap<String, String>,
    /// Runtime state: `stopped`, `starting`, `running`, `stopping`, `failed`, or `-` for apps
    /// without a container.
    pub state: String,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
    pub git_branch: Option<String>,
    /// The commit fetched for git sources.
    pub git_commit: Option<String>,
    pub build_args: BTreeMap<String, String>,
    pub container_options: BTreeMap<String, String>,
    /// The image the app runs (for built apps: named by the hash of its build inputs).
    pub image: Option<String>,
    /// The versions prod and stage serve; they differ while changes are staged.
    pub prod_version: i64,
    pub stage_version: i64,
    pub staged_changes: bool,
    /// The stage's runtime state (see `state`).
    pub stage_state: String,
}

/// What a staged change, promote or version switch did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeResponse {
    pub app: AppInfo,
    /// The version stage now serves (for switches: prod); for a dry run, the one it would.
    pub version: i64,
    pub promoted: bool,
    pub dry_run: bool,
    /// For switches: the version prod served before.
    pub from_version: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParamsResponse {
    pub app: AppInfo,
    pub stage: BTreeMap<String, String>,
    pub prod: BTreeMap<String, String>,
}

/// One version of an app. Secrets appear as their `{{secret ...}}` templates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: i64,
    /// Whether prod / stage serve this version.
    pub prod: bool,
    pub stage: bool,
    pub reason: String,
    pub created_at: i64,
    pub git_commit: Option<String>,
    pub params: BTreeMap<String, String>,
    pub build_args: BTreeMap<String, String>,
    pub container_options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadResponse {
    pub app: AppInfo,
    /// Whether an image was built (false: the image for these inputs existed).
    pub built: bool,
    pub promoted: bool,
    pub dry_run: bool,
    /// The new stage version, its fetched commit and image (for a dry run: what it would be).
    pub version: i64,
    pub git_commit: Option<String>,
    pub image: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpecInfo {
    pub name: String,
    pub help: String,
    /// `built-in` or the folder it was loaded from.
    pub origin: String,
    pub params: Vec<SpecParam>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpecParam {
    pub name: String,
    pub required: bool,
    pub default: Option<String>,
    pub help: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppList {
    pub apps: Vec<AppInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteResponse {
    pub deleted: Vec<AppInfo>,
    pub dry_run: bool,
}

/// Every non-2xx answer carries this body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}

/// `POST /v1/apply`: apply a declarative file (`berth apply`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ApplyRequest {
    /// An absolute path on the server's machine, or a file in a git repository
    /// (`github.com/org/repo/path/apps.star`).
    pub file: String,
    /// The branch of a git file (default: the repository's default branch).
    pub branch: Option<String>,
    /// Values for `config(key, default)` (`--param key=value`).
    pub params: BTreeMap<String, String>,
    /// Only the declared apps matching this glob are applied.
    pub glob: Option<String>,
    pub approve: bool,
    pub promote: bool,
    pub dry_run: bool,
    pub clobber: bool,
}

/// What `berth apply` did (or, for a dry run, would do) to one declared app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppliedApp {
    pub app_path: String,
    /// `create`, `update` or `unchanged`.
    pub action: String,
    /// For updates: the changes staged.
    pub changes: Vec<String>,
    /// Values changed with the CLI since the last apply that were kept (no `--clobber`).
    pub kept: Vec<String>,
    /// The version stage serves afterwards (None for a dry run).
    pub version: Option<i64>,
    pub promoted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyResponse {
    pub file: String,
    /// The commit a git file was read at.
    pub commit: Option<String>,
    pub dry_run: bool,
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub apps: Vec<AppliedApp>,
}

/// `POST /v1/syncs`: schedule a sync (`berth sync schedule`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncScheduleRequest {
    pub file: String,
    pub branch: Option<String>,
    pub params: BTreeMap<String, String>,
    /// How often, in minutes (default 15).
    pub minutes: Option<f64>,
    pub promote: bool,
    pub approve: bool,
    pub clobber: bool,
}

/// One sync as `sync list` shows it. The webhook secret is only in [`SyncScheduleResponse`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SyncInfo {
    pub id: String,
    pub file: String,
    pub branch: Option<String>,
    pub minutes: f64,
    pub promote: bool,
    pub last_run_at: Option<i64>,
    pub last_commit: Option<String>,
    /// `applied`, `unchanged` (the file's commit did not change), `failed`; None before the
    /// first run.
    pub last_result: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncScheduleResponse {
    pub sync: SyncInfo,
    /// The secret that signs `/_berth/webhook/sync` requests; shown only here.
    pub webhook_secret: String,
    /// The first run, made at once.
    pub first_run: Option<ApplyResponse>,
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncList {
    pub syncs: Vec<SyncInfo>,
}

/// What `sync run` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncRunResponse {
    pub sync: SyncInfo,
    /// None when the file's commit had not changed (and the run was not forced).
    pub applied: Option<ApplyResponse>,
}

/// `app webhook-secret`: the app's new webhook secret, shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookSecretResponse {
    pub app: AppInfo,
    pub secret: String,
    /// Reloads through the webhook also promote.
    pub promote: bool,
    /// The webhook's URLs on the HTTP and HTTPS listeners (those enabled).
    pub urls: Vec<String>,
}
