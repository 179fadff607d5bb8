//! The audit log: every admin change (a non-GET request on the admin socket) is recorded at one
//! place, [`record`], an axum middleware on the admin router, with the command, its target app,
//! who asked (the local user on the socket, from `SO_PEERCRED`), when, and how it ended. A
//! tracked task ([`spawn_pruner`]) removes events older than `[audit] retention_days`, at start
//! and then daily. Stored in the `audit_events` table (see [`crate::store::audit`]).

use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use axum::Json;
use serde::Deserialize;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::api::ErrorBody;
use crate::app_path::PathGlob;
use crate::apps::AppError;
use crate::store::audit::{AuditEvent, AuditResult};
use crate::store::Store;

/// Bound for a request body the middleware reads to find the target app (create sends JSON).
const BODY_LIMIT: usize = 16 * 1024 * 1024;
/// How often the pruner runs after the first run at start.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Who is on the other end of an admin connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester {
    /// A local process on the admin socket: its user's name, or `uid:N` when it has none.
    LocalUser(String),
    /// The peer's credentials could not be read.
    Unknown,
}

impl Requester {
    pub fn name(&self) -> &str {
        match self {
            Requester::LocalUser(name) => name,
            Requester::Unknown => "unknown",
        }
    }

    fn from_uid(uid: u32) -> Requester {
        match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(Some(user)) => Requester::LocalUser(user.name),
            _ => Requester::LocalUser(format!("uid:{uid}")),
        }
    }
}

impl Connected<IncomingStream<'_, UnixListener>> for Requester {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(cred) => Requester::from_uid(cred.uid()),
            Err(e) => {
                tracing::warn!("cannot read the admin client's credentials: {e}");
                Requester::Unknown
            }
        }
    }
}

/// The audit log's handle: the store it writes to.
#[derive(Clone)]
pub struct AuditLog {
    pub store: Store,
}

/// The query parameters the middleware looks at.
#[derive(Debug, Default, Deserialize)]
struct ChangeQuery {
    path: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// The JSON body fields the middleware looks at (create sends the app path in its body).
#[derive(Debug, Default, Deserialize)]
struct ChangeBody {
    path: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// The CLI command an admin request is; an unknown route is named by method and path.
fn command_name(method: &http::Method, route: &str, kind: Option<&str>) -> String {
    use http::Method;
    let name = match (method, route) {
        (&Method::POST, "/v1/apps") => "app create",
        (&Method::DELETE, "/v1/apps") => "app delete",
        (&Method::POST, "/v1/apps/reload") => "app reload",
        (&Method::POST, "/v1/apps/promote") => "app promote",
        (&Method::POST, "/v1/apps/params") => "param update",
        (&Method::POST, "/v1/apps/metadata") => {
            return format!("app update-metadata {}", kind.unwrap_or_default()).trim_end().to_string()
        }
        (&Method::POST, "/v1/versions/switch") => "version switch",
        (&Method::POST, "/v1/server/stop") => "server stop",
        _ => return format!("{method} {route}"),
    };
    name.to_string()
}

/// Middleware on the admin router: runs the request and records a change (any method but
/// GET and HEAD) with its result. A failure to record is logged, never the change's failure.
pub async fn record(
    State(log): State<AuditLog>,
    ConnectInfo(who): ConnectInfo<Requester>,
    req: Request,
    next: Next,
) -> Response {
    if matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
        return next.run(req).await;
    }
    let at = crate::store::now_secs();
    let method = req.method().clone();
    let route = req.uri().path().to_string();
    let query: ChangeQuery = req.uri().query().and_then(|q| serde_urlencoded::from_str(q).ok()).unwrap_or_default();
    let (req, body) = if query.path.is_none() {
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
            Ok(b) => b,
            Err(e) => {
                let message = format!("cannot read the request body: {e}");
                return (http::StatusCode::BAD_REQUEST, Json(ErrorBody { message })).into_response();
            }
        };
        let parsed: ChangeBody = serde_json::from_slice(&bytes).unwrap_or_default();
        (Request::from_parts(parts, Body::from(bytes)), parsed)
    } else {
        (req, ChangeBody::default())
    };
    let mut command = command_name(&method, &route, query.kind.as_deref());
    if query.dry_run || body.dry_run {
        command.push_str(" (dry run)");
    }
    let app = query.path.or(body.path).unwrap_or_default();

    let resp = next.run(req).await;
    let (resp, result, message) = if resp.status().is_success() {
        (resp, AuditResult::Ok, String::new())
    } else {
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, BODY_LIMIT).await.unwrap_or_default();
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|e| e.message)
            .unwrap_or_else(|_| format!("{}: {}", parts.status, String::from_utf8_lossy(&bytes).trim()));
        (Response::from_parts(parts, Body::from(bytes)), AuditResult::Error, message)
    };
    let event = AuditEvent { at, user: who.name().to_string(), command, app, result, message };
    if let Err(e) = log.store.insert_audit(&event).await {
        tracing::warn!(command = %event.command, "cannot record the admin change in the audit log: {e:#}");
    }
    resp
}

/// `GET /v1/audit`: the query of `berth audit list`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// A glob over the recorded app paths.
    pub app: Option<String>,
    /// Unix seconds; events at or after.
    pub since: Option<i64>,
}

/// Lists the recorded events, oldest first.
pub async fn list(log: &AuditLog, q: ListQuery) -> Result<Vec<AuditEvent>, AppError> {
    let glob = q.app.as_deref().map(PathGlob::new).transpose().map_err(AppError::BadRequest)?;
    let events = log.store.audit_since(q.since.unwrap_or(0)).await.map_err(AppError::Internal)?;
    Ok(events.into_iter().filter(|e| glob.as_ref().is_none_or(|g| g.matches(&e.app))).collect())
}

/// Removes the events older than `retention_days` now and then every day, until `stop`;
/// a retention of 0 keeps every event.
pub fn spawn_pruner(store: Store, retention_days: u64, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if retention_days == 0 {
            return;
        }
        let keep = i64::try_from(retention_days.saturating_mul(86_400)).unwrap_or(i64::MAX);
        loop {
            match store.prune_audit(crate::store::now_secs().saturating_sub(keep)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("audit log: removed {n} event(s) older than {retention_days} days"),
                Err(e) => tracing::warn!("audit log pruning failed: {e:#}"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(PRUNE_EVERY) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn routes_are_named_as_cli_commands() {
        assert_eq!(command_name(&Method::POST, "/v1/apps", None), "app create");
        assert_eq!(command_name(&Method::DELETE, "/v1/apps", None), "app delete");
        assert_eq!(command_name(&Method::POST, "/v1/apps/metadata", Some("conf")), "app update-metadata conf");
        assert_eq!(command_name(&Method::POST, "/v1/apply", None), "POST /v1/apply");
    }

    #[test]
    fn the_current_user_is_named() {
        assert_eq!(Requester::from_uid(0), Requester::LocalUser("root".into()));
        assert_eq!(Requester::from_uid(4_000_000_000).name(), "uid:4000000000");
    }
}
