//! Webhooks on the app listeners: `POST /_berth/webhook/reload?app=<[domain:]path>` reloads an
//! app (and promotes it when its webhook says so), `POST /_berth/webhook/sync?id=<sync id>`
//! runs a sync (`berth sync schedule`) once, with the sync's own secret. Requests are authenticated by an
//! HMAC-SHA256 of the raw body in GitHub's `X-Hub-Signature-256: sha256=<hex>` format, checked
//! in constant time. A wrong, missing or malformed signature, an unknown app or an app without
//! a secret all get the same 401, and nothing runs. The work runs as a tracked admin change
//! (server shutdown waits for it); the webhook answers 202 at once.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::apps::Apps;
use crate::proxy::body::ProxyBody;
use crate::proxy::error_response;

/// Every path under this prefix is berth's, whatever app is at `/`.
pub const PREFIX: &str = "/_berth/";
/// The largest webhook body read (GitHub caps its payloads at 25 MB, push events are far
/// smaller); a larger one gets 413.
pub const MAX_BODY: usize = 1024 * 1024;
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Why a signature was refused. Callers answer every variant with the same 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("missing X-Hub-Signature-256 header")]
    MissingSignature,
    #[error("malformed signature: expected sha256=<64 hex digits>")]
    MalformedSignature,
    #[error("signature does not match")]
    WrongSignature,
    #[error("empty secret")]
    EmptySecret,
}

/// Checks GitHub's `X-Hub-Signature-256` header (`sha256=<hex HMAC-SHA256 of body>`) against
/// `secret`, in constant time.
pub fn verify_signature(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::EmptySecret);
    }
    let header = header.ok_or(WebhookError::MissingSignature)?;
    let hex_digest = header.trim().strip_prefix("sha256=").ok_or(WebhookError::MalformedSignature)?;
    let signature = hex::decode(hex_digest).map_err(|_| WebhookError::MalformedSignature)?;
    if signature.len() != 32 {
        return Err(WebhookError::MalformedSignature);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&signature).map_err(|_| WebhookError::WrongSignature)
}

/// What the webhook routes need.
pub struct Webhooks {
    pub apps: Arc<Apps>,
    /// The admin changes tracked for shutdown (shared with the admin API).
    pub changes: TaskTracker,
}

/// The 202 answer's body.
#[derive(Debug, Serialize, Deserialize)]
pub struct Accepted {
    /// `reload` or `sync`.
    pub action: String,
    /// The app (reload) or sync id.
    pub target: String,
    pub promote: bool,
    pub status: String,
}

#[derive(Deserialize)]
struct WebhookQuery {
    app: Option<String>,
    id: Option<String>,
}

enum Action {
    Reload,
    Sync,
}

const UNAUTHORIZED: &str = "webhook refused: invalid signature or unknown target";

impl Webhooks {
    /// Answers a request under [`PREFIX`].
    pub async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let action = match req.uri().path() {
            "/_berth/webhook/reload" => Action::Reload,
            "/_berth/webhook/sync" => Action::Sync,
            _ => return error_response(StatusCode::NOT_FOUND, "no such berth route"),
        };
        if req.method() != Method::POST {
            let mut resp = error_response(StatusCode::METHOD_NOT_ALLOWED, "webhooks take POST");
            resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
            return resp;
        }
        let query: WebhookQuery = match serde_urlencoded::from_str(req.uri().query().unwrap_or("")) {
            Ok(q) => q,
            Err(e) => return error_response(StatusCode::BAD_REQUEST, &format!("bad webhook query: {e}")),
        };
        let signature = req.headers().get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
        let ping = req.headers().get("x-github-event").is_some_and(|v| v.as_bytes() == b"ping");
        let body = match read_body(req.into_body()).await {
            Ok(body) => body,
            Err(resp) => return resp,
        };
        match action {
            Action::Reload => {
                let Some(app) = query.app.filter(|a| !a.trim().is_empty()) else {
                    return error_response(StatusCode::BAD_REQUEST, "the app query parameter is required");
                };
                let Some(target) = self.apps.webhook_target(&app).await else {
                    return unauthorized_after_checking(&body, signature.as_deref());
                };
                if verify_signature(target.webhook.secret.as_bytes(), &body, signature.as_deref()).is_err() {
                    return unauthorized();
                }
                let promote = target.webhook.promote;
                if ping {
                    return accepted(StatusCode::OK, "reload", &target.app_path, promote, "pong");
                }
                let (apps, path) = (self.apps.clone(), target.app_path.clone());
                self.changes.spawn(async move {
                    tracing::info!(app = %path, promote, "reload requested by webhook");
                    let cancel = CancellationToken::new();
                    match apps.reload(&path, (None, None), (promote, false), cancel).await {
                        Ok(o) => tracing::info!(app = %path, version = o.version, promoted = o.promoted, "webhook reload done"),
                        Err(e) => tracing::warn!(app = %path, "webhook reload failed: {e}"),
                    }
                });
                accepted(StatusCode::ACCEPTED, "reload", &target.app_path, promote, "reload started")
            }
            Action::Sync => {
                let Some(id) = query.id.filter(|i| !i.trim().is_empty()) else {
                    return error_response(StatusCode::BAD_REQUEST, "the id query parameter is required");
                };
                let Ok(secret) = crate::apps::sync_webhook_secret(&self.apps, &id).await else {
                    return unauthorized_after_checking(&body, signature.as_deref());
                };
                if verify_signature(secret.as_bytes(), &body, signature.as_deref()).is_err() {
                    return unauthorized();
                }
                if ping {
                    return accepted(StatusCode::OK, "sync", &id, false, "pong");
                }
                let (apps, sync_id) = (self.apps.clone(), id.clone());
                self.changes.spawn(async move {
                    tracing::info!(sync = %sync_id, "sync requested by webhook");
                    match crate::apps::run_sync(&apps, &sync_id).await {
                        Ok(o) => tracing::info!(sync = %sync_id, applied = o.applied.is_some(), "webhook sync done"),
                        Err(e) => tracing::warn!(sync = %sync_id, "webhook sync failed: {e}"),
                    }
                });
                accepted(StatusCode::ACCEPTED, "sync", &id, false, "sync started")
            }
        }
    }
}

/// The whole body, at most [`MAX_BODY`] bytes (413 beyond).
async fn read_body(body: Incoming) -> Result<bytes::Bytes, Response<ProxyBody>> {
    let too_large =
        || error_response(StatusCode::PAYLOAD_TOO_LARGE, &format!("webhook body larger than {MAX_BODY} bytes"));
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(error_response(StatusCode::BAD_REQUEST, &format!("cannot read the webhook body: {e}"))),
    }
}

fn unauthorized() -> Response<ProxyBody> {
    error_response(StatusCode::UNAUTHORIZED, UNAUTHORIZED)
}

/// The 401 for an unknown target, after the same HMAC work as for a known one, so that the
/// answer's timing does not tell which targets exist.
fn unauthorized_after_checking(body: &[u8], signature: Option<&str>) -> Response<ProxyBody> {
    let _ = verify_signature(b"no such webhook target", body, signature);
    unauthorized()
}

fn accepted(status: StatusCode, action: &str, target: &str, promote: bool, what: &str) -> Response<ProxyBody> {
    let body = Accepted { action: action.into(), target: target.into(), promote, status: what.into() };
    let json = serde_json::to_string(&body).expect("plain data serializes");
    let mut resp = Response::new(crate::proxy::body::full(format!("{json}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented example ("Validating webhook deliveries").
    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const PAYLOAD: &[u8] = b"Hello, World!";
    const SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_test_vector_verifies() {
        assert_eq!(verify_signature(SECRET, PAYLOAD, Some(SIGNATURE)), Ok(()));
        assert_eq!(
            verify_signature(
                SECRET,
                PAYLOAD,
                Some(&format!(" {} ", SIGNATURE.to_uppercase().replace("SHA256=", "sha256=")))
            ),
            Ok(())
        );
    }

    #[test]
    fn wrong_body_secret_or_signature_is_refused() {
        assert_eq!(verify_signature(SECRET, b"Hello, World?", Some(SIGNATURE)), Err(WebhookError::WrongSignature));
        assert_eq!(verify_signature(b"another secret", PAYLOAD, Some(SIGNATURE)), Err(WebhookError::WrongSignature));
        let flipped = SIGNATURE.replace("757107", "757108");
        assert_eq!(verify_signature(SECRET, PAYLOAD, Some(&flipped)), Err(WebhookError::WrongSignature));
    }

    #[test]
    fn missing_or_malformed_signature_is_refused() {
        assert_eq!(verify_signature(SECRET, PAYLOAD, None), Err(WebhookError::MissingSignature));
        for bad in [
            "",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha256=",
            "sha256=zz",
            "sha256=757107ea",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1700",
        ] {
            assert_eq!(verify_signature(SECRET, PAYLOAD, Some(bad)), Err(WebhookError::MalformedSignature), "{bad:?}");
        }
    }

    #[test]
    fn an_empty_secret_verifies_nothing() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"").unwrap();
        mac.update(PAYLOAD);
        let header = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(verify_signature(b"", PAYLOAD, Some(&header)), Err(WebhookError::EmptySecret));
    }
}
