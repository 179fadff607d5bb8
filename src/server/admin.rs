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
use tokio_util::sync::CancellationToken;

use crate::api::{
    AppList, CreateAppRequest, CreateAppResponse, DeleteResponse, ErrorBody, ReloadResponse, SpecInfo, SpecParam,
};
use crate::apps::{AppError, Apps};
use crate::config::Config;

pub struct AdminState {
    pub apps: Arc<Apps>,
    pub config: Arc<Config>,
    pub stop: CancellationToken,
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/v1/apps", get(list).post(create).delete(delete))
        .route("/v1/apps/logs", get(logs))
        .route("/v1/apps/reload", post(reload))
        .route("/v1/specs", get(specs))
        .route("/v1/server/stop", post(stop))
        .with_state(state)
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
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
    let app = s.apps.create(req).await?;
    let host = if app.domain.is_empty() { s.config.default_domain.clone() } else { app.domain.clone() };
    let url = |scheme: &str, port: i32| (port > 0).then(|| format!("{scheme}://{host}:{port}{}", app.path));
    Ok(Json(CreateAppResponse {
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
    let info = s.apps.delete(&q.path, q.dry_run).await?;
    Ok(Json(DeleteResponse { deleted: vec![info], dry_run: q.dry_run }))
}

#[derive(Deserialize)]
struct ReloadQuery {
    path: String,
    branch: Option<String>,
    commit: Option<String>,
}

async fn reload(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<ReloadQuery>,
) -> Result<Json<ReloadResponse>, AppError> {
    let outcome = s.apps.reload(&q.path, q.branch, q.commit).await?;
    Ok(Json(ReloadResponse { app: outcome.app, built: outcome.built }))
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
        let file = s.apps.build_log(&q.path)?;
        let text = tokio::fs::read(&file).await.map_err(|e| AppError::Internal(e.into()))?;
        let text = match q.lines {
            Some(n) => tail_lines(&text, n),
            None => text,
        };
        return Ok(Response::builder()
            .header("content-type", "text/plain; charset=utf-8")
            .body(Body::from(text))
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
