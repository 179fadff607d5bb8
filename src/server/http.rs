//! The HTTP and HTTPS listeners and the request path: route → app → container → proxy.
//! Connections are served by hyper-util's auto builder (HTTP/1.1 with upgrades, and HTTP/2)
//! and registered with the graceful-shutdown watcher.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::apps::runtime::StartError;
use crate::apps::{AppBackend, Apps, Deployment};
use crate::proxy::body::ProxyBody;
use crate::proxy::path::PathError;
use crate::proxy::{self, error_response, ClientInfo, Proxy, Target};

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every listener shares: the apps (and their route table) and the proxy client.
pub struct Frontend {
    pub apps: Arc<Apps>,
    pub proxy: Proxy,
    /// `/_berth/...`: the webhooks, answered before any app is routed.
    pub webhooks: super::webhook::Webhooks,
    /// Pending ACME HTTP-01 answers, served before app routing.
    pub acme_http: Arc<crate::acme::HttpChallenges>,
    pub auth: Arc<crate::auth::Auth>,
}

impl Frontend {
    fn route(&self, host: &str, path: &str) -> Option<(Arc<Deployment>, String)> {
        let routes = self.apps.routes();
        routes.lookup(host, path).map(|(app, app_path)| (app.clone(), app_path.to_string()))
    }

    pub async fn handle(&self, mut req: Request<Incoming>, client: ClientInfo) -> Response<ProxyBody> {
        let started = std::time::Instant::now();
        if let Err(e) = normalize_request_path(&mut req) {
            return error_response(StatusCode::BAD_REQUEST, &e.to_string());
        }
        crate::auth::strip_identity(req.headers_mut());
        if req.uri().path() == crate::metrics::PATH {
            return crate::metrics::answer(&req, client, &self.apps);
        }
        if crate::auth::Auth::owns(req.uri().path()) {
            return self.auth.handle(req, client).await;
        }
        if req.uri().path().starts_with(super::webhook::PREFIX) {
            return self.webhooks.handle(req).await;
        }
        let path = req.uri().path();
        if let Some(key_authorization) = self.acme_http.answer(path) {
            let mut resp = Response::new(crate::proxy::body::full(key_authorization));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return resp;
        }
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("");
        let wait_for_build = !wants_html(&req);
        // A deployment retired (replaced by a promote, switch or change) between routing and
        // starting answers Gone: route again, to its replacement.
        for _ in 0..3 {
            let Some((app, app_path)) = self.route(host, path) else { break };
            let identity = match self.auth.authorize(&req, &app.auth, client) {
                Ok(identity) => identity,
                Err(resp) => return *resp,
            };
            if let Some(error) = app.dev_error.load().as_deref() {
                return error_response(StatusCode::BAD_GATEWAY, &format!("app {} cannot be built: {error}", app.path));
            }
            let (target, guard) = match &app.backend {
                AppBackend::Url(plan) => {
                    (Target::from_uri(&plan.url, &app_path, plan.preserve_host, app.response_timeout), None)
                }
                AppBackend::Container(rt) => {
                    let (addr, guard) = match rt.ensure_running(wait_for_build).await {
                        Ok(running) => running,
                        Err(StartError::Gone) => continue,
                        Err(e) => return crate::metrics::observe(&app, started, start_error(&app, e)),
                    };
                    let target = Target {
                        scheme: http::uri::Scheme::HTTP,
                        authority: addr.to_string().parse().expect("a socket address is an authority"),
                        base_path: String::new(),
                        app_path,
                        strip_app: rt.plan().strip_app,
                        preserve_host: app.preserve_host(),
                        response_timeout: app.response_timeout,
                    };
                    (target, Some(guard))
                }
            };
            crate::auth::set_identity(req.headers_mut(), identity);
            let resp = match self.proxy.forward(req, &target, client, guard).await {
                Ok(resp) => resp,
                Err(e) => error_response(e.status(), &format!("app {}: {e}", app.path)),
            };
            return crate::metrics::observe(&app, started, resp);
        }
        error_response(StatusCode::NOT_FOUND, "no matching app found")
    }
}

/// Normalizes the request's path in place (see [`crate::proxy::path`]): the path routed by
/// is the path forwarded.
fn normalize_request_path(req: &mut Request<Incoming>) -> Result<(), PathError> {
    let Cow::Owned(path) = proxy::path::normalize(req.uri().path())? else { return Ok(()) };
    if path != req.uri().path() {
        let mut parts = req.uri().clone().into_parts();
        let path_and_query = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        parts.path_and_query = Some(path_and_query.parse().map_err(|_| PathError::BadEscape)?);
        *req.uri_mut() = Uri::from_parts(parts).map_err(|_| PathError::BadEscape)?;
    }
    Ok(())
}

/// The answer when an app's container cannot serve: 502 with the failure (and when to
/// retry), the starting page, or 503 while a start takes longer than the wait bound or the
/// container engine does not answer (retried as soon as it does).
fn start_error(app: &Deployment, e: StartError) -> Response<ProxyBody> {
    match e {
        StartError::Failed { error, retry_at } => {
            let mut resp =
                error_response(StatusCode::BAD_GATEWAY, &format!("app {} failed to start: {error}", app.path));
            if let Some(retry_at) = retry_at {
                let secs = retry_at.saturating_duration_since(tokio::time::Instant::now()).as_secs().max(1);
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            resp
        }
        StartError::EngineUnavailable { error } => {
            let detail = error.strip_prefix("container engine unavailable: ").unwrap_or(&error);
            let mut resp = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("app {}: container engine unavailable ({detail}), retry shortly", app.path),
            );
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
        StartError::Building => starting_page(&app.path.to_string()),
        StartError::Timeout => {
            let mut resp = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("app {} is still starting, retry shortly", app.path),
            );
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            resp
        }
        StartError::Gone => error_response(StatusCode::NOT_FOUND, "no matching app found"),
    }
}

/// Browsers (Accept: text/html) get a page while an image builds instead of waiting.
fn wants_html(req: &Request<Incoming>) -> bool {
    crate::auth::wants_html(req.headers())
}

/// A small page that says the app is starting and reloads itself.
fn starting_page(app: &str) -> Response<ProxyBody> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
         <title>Starting {app}</title></head><body style=\"font-family:sans-serif;margin:3em\">\
         <h1>Starting {app}&hellip;</h1><p>The app's image is being built. This page refreshes by itself.</p>\
         </body></html>\n"
    );
    let mut resp = Response::new(crate::proxy::body::full(html));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Accepts connections until `cancel`; each connection is watched for graceful shutdown.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    frontend: Arc<Frontend>,
    graceful: Arc<GracefulShutdown>,
    cancel: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = cancel.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let port = stream.local_addr().map(|a| a.port()).unwrap_or_default();
        let client = ClientInfo { ip: peer.ip(), https: tls.is_some(), port };
        let frontend = frontend.clone();
        let service = service_fn(move |req| {
            let frontend = frontend.clone();
            async move { Ok::<_, Infallible>(frontend.handle(req, client).await) }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                None => watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service)).await,
                Some(acceptor) => {
                    let tls_stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    if tls_stream.get_ref().1.alpn_protocol() == Some(super::tls::ACME_TLS_ALPN) {
                        return; // a TLS-ALPN-01 validation ends with the handshake
                    }
                    watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), service)).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}
