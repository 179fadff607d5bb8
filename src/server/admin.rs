//! The admin API (axum) on the unix socket: create, list, delete, logs, stop. Only reachable
//! through the socket file (mode 0600), never over TCP. Handlers translate HTTP to `apps` calls.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{
    AppList, ChangeResponse, CreateAppRequest, CreateAppResponse, DeleteResponse, ErrorBody, ParamsResponse,
    ReloadResponse, SpecInfo, SpecParam, VersionInfo, WebhookSecretResponse,
};
use crate::apps::builder::{BuildLog, BuildStatus};
use crate::apps::{AppError, Apps, ChangeOutcome, ConfigChange, VersionTarget};
use crate::config::Config;

pub struct AdminState {
    pub apps: Arc<Apps>,
    pub config: Arc<Config>,
    pub stop: CancellationToken,
    /// The admin changes running to their end (see [`to_the_end`]). The admin API owns them:
    /// server shutdown waits for them (bounded) before the app tasks stop and the store closes.
    pub changes: TaskTracker,
    /// Where every admin change is recorded (see [`crate::audit`]).
    pub audit: crate::audit::AuditLog,
}

impl AdminState {
    /// Waits up to `grace` for the admin changes still running; returns how many were left.
    pub async fn finish_changes(&self, grace: std::time::Duration) -> usize {
        self.changes.close();
        let _ = tokio::time::timeout(grace, self.changes.wait()).await;
        self.changes.len()
    }
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/v1/apps", get(list).post(create).delete(delete))
        .route("/v1/apps/logs", get(logs))
        .route("/v1/apps/reload", post(reload))
        .route("/v1/apps/promote", post(promote))
        .route("/v1/apps/webhook-secret", post(webhook_secret))
        .route("/v1/apps/params", get(params).post(param_update))
        .route("/v1/apps/metadata", post(metadata_update))
        .route("/v1/versions", get(versions))
        .route("/v1/versions/switch", post(version_switch))
        .route("/v1/specs", get(specs))
        .route("/v1/server/stop", post(stop))
        .route("/v1/apply", post(super::admin_declare::apply))
        .route(
            "/v1/syncs",
            get(super::admin_declare::sync_list)
                .post(super::admin_declare::sync_schedule)
                .delete(super::admin_declare::sync_delete),
        )
        .route("/v1/syncs/run", post(super::admin_declare::sync_run))
        .route("/v1/audit", get(audit_list))
        .layer(axum::middleware::from_fn_with_state(state.audit.clone(), crate::audit::record))
        .with_state(state)
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(e) => {
                tracing::error!("admin request failed: {e:#}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = match &self {
            AppError::Internal(e) => format!("{e:#}"),
            other => other.to_string(),
        };
        (status, Json(ErrorBody { message })).into_response()
    }
}

/// Runs an admin change in a task of its own, so that it is never left half-made when the
/// client goes away (hyper then drops this handler's future). Going away cancels the token the
/// change gets: a source fetch, the one long wait on something outside berth that a change
/// makes before it changes anything, stops on it; everything else runs to its end. The task
/// is tracked in `s.changes`, so server shutdown waits for it.
pub(super) async fn to_the_end<T, F, Fut>(s: &AdminState, change: F) -> Result<T, AppError>
where
    F: FnOnce(Arc<Apps>, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<T, AppError>> + Send + 'static,
    T: Send + 'static,
{
    let cancel = CancellationToken::new();
    let _cancel_when_dropped = cancel.clone().drop_guard();
    s.changes.spawn(change(s.apps.clone(), cancel)).await.map_err(|e| AppError::Internal(e.into()))?
}

#[derive(Deserialize)]
struct ListQuery {
    glob: Option<String>,
}

async fn list(State(s): State<Arc<AdminState>>, Query(q): Query<ListQuery>) -> Result<Json<AppList>, AppError> {
    Ok(Json(AppList { apps: s.apps.list(q.glob.as_deref())? }))
}

async fn create(
    State(s): State<Arc<AdminState>>,
    Json(req): Json<CreateAppRequest>,
) -> Result<Json<CreateAppResponse>, AppError> {
    let dry_run = req.dry_run;
    let app = to_the_end(&s, |apps, cancel| async move { apps.create(req, cancel).await }).await?;
    let host = if app.domain.is_empty() { s.config.default_domain.clone() } else { app.domain.clone() };
    let url = |scheme: &str, port: i32| (port > 0).then(|| format!("{scheme}://{host}:{port}{}", app.path));
    let spec_warnings = s.apps.catalog().lookup(Some(&app.spec)).map(|spec| spec.warnings.clone()).unwrap_or_default();
    Ok(Json(CreateAppResponse {
        spec_warnings,
        http_url: url("http", s.config.http.port),
        https_url: url("https", s.config.https.port),
        app,
        dry_run,
    }))
}

#[derive(Deserialize)]
struct PathQuery {
    path: String,
    #[serde(default)]
    dry_run: bool,
}

async fn delete(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<PathQuery>,
) -> Result<Json<DeleteResponse>, AppError> {
    let (path, dry_run) = (q.path.clone(), q.dry_run);
    let info = to_the_end(&s, |apps, _| async move { apps.delete(&path, dry_run).await }).await?;
    Ok(Json(DeleteResponse { deleted: vec![info], dry_run: q.dry_run }))
}

#[derive(Deserialize)]
struct ReloadQuery {
    path: String,
    branch: Option<String>,
    commit: Option<String>,
    #[serde(default)]
    promote: bool,
    #[serde(default)]
    dry_run: bool,
}

async fn reload(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<ReloadQuery>,
) -> Result<Json<ReloadResponse>, AppError> {
    let (path, refs, flags) = (q.path, (q.branch, q.commit), (q.promote, q.dry_run));
    let outcome = to_the_end(&s, |apps, cancel| async move { apps.reload(&path, refs, flags, cancel).await }).await?;
    Ok(Json(ReloadResponse {
        app: outcome.app,
        built: outcome.built,
        promoted: outcome.promoted,
        dry_run: q.dry_run,
        version: outcome.version,
        git_commit: outcome.git_commit,
        image: outcome.image,
    }))
}

fn change(o: ChangeOutcome, dry_run: bool, from_version: Option<i64>) -> Json<ChangeResponse> {
    Json(ChangeResponse { app: o.app, version: o.version, promoted: o.promoted, dry_run, from_version })
}

#[derive(Deserialize)]
struct ChangeQuery {
    path: String,
    #[serde(default)]
    dry_run: bool,
}

async fn promote(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<ChangeQuery>,
) -> Result<Json<ChangeResponse>, AppError> {
    let (path, dry_run) = (q.path, q.dry_run);
    let outcome = to_the_end(&s, |apps, _| async move { apps.promote(&path, dry_run).await }).await?;
    Ok(change(outcome, dry_run, None))
}

#[derive(Deserialize)]
struct WebhookSecretQuery {
    path: String,
    #[serde(default)]
    rotate: bool,
    #[serde(default)]
    promote: bool,
}

async fn webhook_secret(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<WebhookSecretQuery>,
) -> Result<Json<WebhookSecretResponse>, AppError> {
    let (path, rotate, promote) = (q.path, q.rotate, q.promote);
    let (app, secret) =
        to_the_end(&s, |apps, _| async move { apps.create_webhook_secret(&path, rotate, promote).await }).await?;
    let host = if app.domain.is_empty() { s.config.default_domain.clone() } else { app.domain.clone() };
    let query = serde_urlencoded::to_string([("app", app.app_path.as_str())]).expect("a string pair encodes");
    let urls = [("http", s.config.http.port), ("https", s.config.https.port)]
        .into_iter()
        .filter(|(_, port)| *port > 0)
        .map(|(scheme, port)| format!("{scheme}://{host}:{port}/_berth/webhook/reload?{query}"))
        .collect();
    Ok(Json(WebhookSecretResponse { app, secret, promote: q.promote, urls }))
}

#[derive(Deserialize)]
struct PathOnly {
    path: String,
}

async fn params(State(s): State<Arc<AdminState>>, Query(q): Query<PathOnly>) -> Result<Json<ParamsResponse>, AppError> {
    let (app, stage, prod) = s.apps.params(&q.path)?;
    Ok(Json(ParamsResponse { app, stage: stage.params, prod: prod.params }))
}

#[derive(Deserialize)]
struct ParamQuery {
    path: String,
    key: String,
    value: String,
    #[serde(default)]
    promote: bool,
    #[serde(default)]
    dry_run: bool,
}

async fn param_update(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<ParamQuery>,
) -> Result<Json<ChangeResponse>, AppError> {
    let c = ConfigChange::Param { key: q.key, value: q.value };
    let (path, promote, dry_run) = (q.path, q.promote, q.dry_run);
    let outcome = to_the_end(&s, |apps, _| async move { apps.update(&path, c, promote, dry_run).await }).await?;
    Ok(change(outcome, dry_run, None))
}

#[derive(Deserialize)]
struct MetadataQuery {
    path: String,
    /// `carg`, `copt` or `conf`.
    kind: String,
    #[serde(default)]
    promote: bool,
    #[serde(default)]
    dry_run: bool,
}

async fn metadata_update(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<MetadataQuery>,
    Json(entries): Json<Vec<(String, String)>>,
) -> Result<Json<ChangeResponse>, AppError> {
    let c = match q.kind.as_str() {
        "carg" => ConfigChange::BuildArgs(entries),
        "copt" => ConfigChange::Options(entries),
        "conf" => ConfigChange::AppConfig(entries),
        other => return Err(AppError::BadRequest(format!("unknown metadata kind {other} (carg, copt, conf)"))),
    };
    let (path, promote, dry_run) = (q.path, q.promote, q.dry_run);
    let outcome = to_the_end(&s, |apps, _| async move { apps.update(&path, c, promote, dry_run).await }).await?;
    Ok(change(outcome, dry_run, None))
}

async fn versions(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<PathOnly>,
) -> Result<Json<Vec<VersionInfo>>, AppError> {
    Ok(Json(s.apps.versions(&q.path).await?))
}

#[derive(Deserialize)]
struct SwitchQuery {
    path: String,
    /// A number, `previous`, `next` or `revert`.
    version: String,
    #[serde(default)]
    dry_run: bool,
}

async fn version_switch(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<SwitchQuery>,
) -> Result<Json<ChangeResponse>, AppError> {
    let target = match q.version.as_str() {
        "previous" => VersionTarget::Previous,
        "next" => VersionTarget::Next,
        "revert" => VersionTarget::Revert,
        n => VersionTarget::Number(n.parse().map_err(|_| {
            AppError::BadRequest(format!("invalid version {n}: expected a number, previous, next or revert"))
        })?),
    };
    let (path, dry_run) = (q.path, q.dry_run);
    let (from, outcome) =
        to_the_end(&s, |apps, _| async move { apps.switch_version(&path, target, dry_run).await }).await?;
    Ok(change(outcome, dry_run, Some(from)))
}

async fn specs(State(s): State<Arc<AdminState>>) -> Json<Vec<SpecInfo>> {
    Json(
        s.apps
            .catalog()
            .all()
            .map(|spec| SpecInfo {
                name: spec.name.clone(),
                help: spec.help.clone(),
                origin: spec.origin.clone(),
                params: spec
                    .params
                    .iter()
                    .map(|p| SpecParam {
                        name: p.name.clone(),
                        required: p.required,
                        default: p.default.clone(),
                        help: p.help.clone(),
                    })
                    .collect(),
            })
            .collect(),
    )
}

#[derive(Deserialize)]
struct LogsQuery {
    path: String,
    lines: Option<usize>,
    #[serde(default)]
    follow: bool,
    #[serde(default)]
    build: bool,
}

async fn logs(State(s): State<Arc<AdminState>>, Query(q): Query<LogsQuery>) -> Result<Response, AppError> {
    if q.build {
        let BuildLog { file, mut status } = s.apps.build_log(&q.path)?;
        // Decided before reading: a build that ends meanwhile has written its last line
        // before its status says so, and the follower reads on until it has that line.
        let running = status.borrow_and_update().as_ref().is_some_and(|st| !st.is_finished());
        let io_err = |e: std::io::Error| AppError::Internal(e.into());
        let mut log = tokio::fs::File::open(&file).await.map_err(io_err)?;
        let mut text = Vec::new();
        log.read_to_end(&mut text).await.map_err(io_err)?;
        let text = match q.lines {
            Some(n) => tail_lines(&text, n),
            None => text,
        };
        let first = futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes::Bytes::from(text)) });
        let body = if q.follow && running {
            Body::from_stream(first.chain(follow_build_log(log, status, s.stop.clone())))
        } else {
            Body::from_stream(first)
        };
        return Ok(Response::builder()
            .header("content-type", "text/plain; charset=utf-8")
            .body(body)
            .expect("static headers"));
    }
    let stream = s.apps.logs(&q.path, q.lines, q.follow)?;
    let stop = s.stop.clone();
    // End a followed stream when the server stops, so shutdown is not held up by it.
    let stream = stream.map_err(std::io::Error::other).take_until(async move { stop.cancelled().await });
    Ok(Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::from_stream(stream))
        .expect("static headers"))
}

async fn audit_list(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<crate::audit::ListQuery>,
) -> Result<Json<Vec<crate::store::audit::AuditEvent>>, AppError> {
    Ok(Json(crate::audit::list(&s.audit, q).await?))
}

async fn stop(State(s): State<Arc<AdminState>>) -> Json<serde_json::Value> {
    tracing::info!("stop requested through the admin API");
    s.stop.cancel();
    Json(serde_json::json!({}))
}

fn tail_lines(text: &[u8], n: usize) -> Vec<u8> {
    let trimmed = text.strip_suffix(b"\n").unwrap_or(text);
    let start =
        trimmed.iter().enumerate().rev().filter(|(_, b)| **b == b'\n').nth(n.saturating_sub(1)).map(|(i, _)| i + 1);
    text[start.unwrap_or(0)..].to_vec()
}

/// How often a followed build log is checked for new output.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// New bytes of a growing build log, read from where the reader is, until the build's status
/// says it ended (succeeded, failed, timed out, cancelled) and the rest is read, or the
/// server stops.
fn follow_build_log(
    log: tokio::fs::File,
    status: watch::Receiver<Option<BuildStatus>>,
    stop: CancellationToken,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures_util::stream::unfold(Some((log, status)), move |state| {
        let stop = stop.clone();
        async move {
            let (mut log, mut status) = state?;
            loop {
                // Read after looking at the status: an ended build's last line is then read.
                let ended = status.has_changed().is_err()
                    || status.borrow_and_update().as_ref().is_none_or(BuildStatus::is_finished);
                let mut chunk = Vec::new();
                let read = async {
                    // A new build recreated the file: start over at its beginning.
                    if log.metadata().await?.len() < log.stream_position().await? {
                        log.rewind().await?;
                    }
                    log.read_to_end(&mut chunk).await
                };
                if let Err(e) = read.await {
                    return Some((Err(e), None));
                }
                if !chunk.is_empty() {
                    return Some((Ok(bytes::Bytes::from(chunk)), (!ended).then_some((log, status))));
                }
                if ended {
                    return None;
                }
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = status.changed() => {}
                    _ = tokio::time::sleep(FOLLOW_POLL) => {}
                }
            }
        }
    })
}

#[cfg(test)]
mod build_log_follow_tests {
    use std::io::Write;
    use std::time::Duration;

    use futures_util::StreamExt;

    use super::*;

    /// Collects a followed log until it ends (bounded).
    async fn collect(stream: impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>>) -> Option<String> {
        let all = tokio::time::timeout(Duration::from_secs(5), stream.collect::<Vec<_>>()).await.ok()?;
        Some(all.into_iter().map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap()).collect())
    }

    #[tokio::test]
    async fn follow_reads_only_new_bytes_and_ends_with_the_build() {
        for end in [
            BuildStatus::Succeeded,
            BuildStatus::Failed { error: "x".into() },
            BuildStatus::TimedOut { after: Duration::from_secs(1) },
            BuildStatus::Cancelled,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a.build.log");
            let mut writer = std::fs::File::create(&path).unwrap();
            writeln!(writer, "already read").unwrap();
            let mut reader = tokio::fs::File::open(&path).await.unwrap();
            reader.read_to_end(&mut Vec::new()).await.unwrap();
            let (status, rx) = watch::channel(Some(BuildStatus::Running));
            let follow = tokio::spawn(collect(follow_build_log(reader, rx, CancellationToken::new())));
            writeln!(writer, "step 1").unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            writeln!(writer, "last line").unwrap();
            status.send_replace(Some(end.clone()));
            let text = follow.await.unwrap();
            assert_eq!(text.as_deref(), Some("step 1\nlast line\n"), "{end:?}");
        }
    }

    #[tokio::test]
    async fn follow_ends_when_the_server_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.build.log");
        std::fs::write(&path, "").unwrap();
        let (_status, rx) = watch::channel(Some(BuildStatus::Running));
        let stop = CancellationToken::new();
        let follow =
            tokio::spawn(collect(follow_build_log(tokio::fs::File::open(&path).await.unwrap(), rx, stop.clone())));
        stop.cancel();
        assert_eq!(follow.await.unwrap().as_deref(), Some(""));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineError;

    fn status_and_message(e: AppError) -> (StatusCode, String) {
        let message = e.to_string();
        (e.into_response().status(), message)
    }

    #[test]
    fn engine_unavailable_is_503_with_its_cause() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = EngineError::Connect {
            endpoint: "unix:///run/docker.sock".into(),
            source: bollard::errors::Error::IOError { err: refused },
        };
        let (status, message) = status_and_message(e.into());
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(message.contains("unix:///run/docker.sock") && message.contains("connection refused"), "{message}");
    }

    #[test]
    fn an_engine_refusal_is_400() {
        let e = EngineError::Pull { image: "nope:1".into(), message: "pull access denied".into() };
        let (status, message) = status_and_message(e.into());
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.contains("pull access denied"), "{message}");
    }
}
