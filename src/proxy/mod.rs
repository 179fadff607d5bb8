//! Forwarding one request to an upstream: URI and header rewriting, pooled HTTP/1.1 clients
//! (a connection-affine one for HTTP upstreams, see [`client`], and hyper-util's pooled client
//! for HTTPS upstreams), streaming bodies both ways, and WebSocket/upgrade tunnels.
//! It never decides which app a request belongs to: the caller hands it a [`Target`].

pub mod body;
pub mod client;
pub mod headers;
pub mod path;
mod upgrade;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::apps::activity::ActivityGuard;
use crate::config::ProxyConfig;
use body::{GuardedBody, ProxyBody};

/// Where and how to forward one request.
#[derive(Debug, Clone)]
pub struct Target {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path the upstream is mounted at (`""` for its root).
    pub base_path: String,
    /// The app path: stripped from the request path before forwarding when `strip_app`, and
    /// sent as `X-Forwarded-Prefix`.
    pub app_path: String,
    pub strip_app: bool,
    pub preserve_host: bool,
    /// How long to wait for the upstream's response headers (not its body).
    pub response_timeout: Duration,
}

impl Target {
    pub fn from_uri(uri: &Uri, app_path: &str, preserve_host: bool, response_timeout: Duration) -> Target {
        Target {
            scheme: uri.scheme().cloned().unwrap_or(Scheme::HTTP),
            authority: uri.authority().cloned().expect("checked when the app was created"),
            base_path: uri.path().trim_end_matches('/').to_string(),
            app_path: app_path.to_string(),
            strip_app: true,
            preserve_host,
            response_timeout,
        }
    }
}

/// The client side of the request being forwarded.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    pub ip: IpAddr,
    pub https: bool,
    /// The local port the client connected to (`X-Forwarded-Port`).
    pub port: u16,
}

/// Why a request could not be forwarded; the caller names the app in the answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("invalid request path: {0}")]
    BadPath(String),
    #[error("upstream error: {0}")]
    Upstream(String),
    #[error("the upstream sent no response headers within {} s (proxy.response_timeout_secs)", .0.as_secs())]
    Timeout(Duration),
}

impl ForwardError {
    pub fn status(&self) -> StatusCode {
        match self {
            ForwardError::BadPath(_) => StatusCode::BAD_REQUEST,
            ForwardError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ForwardError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Proxy {
    /// Plain-HTTP upstreams (apps' containers, most proxy apps).
    http: Arc<client::Pool>,
    /// HTTPS upstreams (proxy apps with an `https://` URL).
    https: Client<HttpsConnector<HttpConnector>, Incoming>,
}

impl Proxy {
    pub fn new(config: &ProxyConfig) -> anyhow::Result<Proxy> {
        let idle_timeout = Duration::from_secs(config.idle_timeout_secs);
        let pool = client::Pool::new(config.max_idle_per_host, idle_timeout, CONNECT_TIMEOUT);
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_host)
            .build(https);
        Ok(Proxy { http: pool, https: client })
    }

    /// Forwards `req` to `target`. The guard (if any) lives as long as the response body or
    /// the upgraded tunnel. Dropping the returned future (the client left) cancels the
    /// upstream request; so does the response timeout, which bounds only the wait for the
    /// response headers (a streamed body or a tunnel may last as long as it likes). On every
    /// error the guard is dropped before this returns, so the app can go idle.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        target: &Target,
        client: ClientInfo,
        guard: Option<ActivityGuard>,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        let original_host = req
            .headers()
            .get(header::HOST)
            .cloned()
            .or_else(|| req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
        let upgrade = if req.version() == Version::HTTP_11 { headers::upgrade_protocol(req.headers()) } else { None };
        let path_and_query = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let strip = if target.strip_app { target.app_path.as_str() } else { "/" };
        let path = headers::upstream_path(path_and_query, strip, &target.base_path);
        let https = target.scheme == Scheme::HTTPS;
        // The connection-affine client writes the URI as is: origin-form (`/path?query`).
        let uri = if https {
            Uri::builder().scheme(Scheme::HTTPS).authority(target.authority.clone()).path_and_query(path).build()
        } else {
            Uri::try_from(path).map_err(http::Error::from)
        };
        let uri = match uri {
            Ok(uri) => uri,
            Err(e) => return Err(ForwardError::BadPath(e.to_string())),
        };
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let h = &mut parts.headers;
        headers::remove_hop_by_hop(h);
        headers::set_forwarded(
            h,
            &headers::Forwarding {
                client: client.ip,
                https: client.https,
                port: client.port,
                host: original_host.as_ref(),
                prefix: &target.app_path,
            },
        );
        let host = match (&original_host, target.preserve_host) {
            (Some(orig), true) => orig.clone(),
            _ => HeaderValue::from_str(target.authority.as_str()).expect("authority is a valid header"),
        };
        h.insert(header::HOST, host);
        if let Some(proto) = &upgrade {
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, proto.clone());
        }

        let req = Request::from_parts(parts, body);
        let request = async {
            if https {
                self.https.request(req).await.map(|resp| (resp, None)).map_err(|e| crate::errors::with_causes(&e))
            } else {
                self.http
                    .send(&target.authority, req)
                    .await
                    .map(|(resp, lease)| (resp, Some(lease)))
                    .map_err(|e| crate::errors::with_causes(&e))
            }
        };
        let (mut resp, lease) = match tokio::time::timeout(target.response_timeout, request).await {
            Ok(Ok(sent)) => sent,
            Ok(Err(e)) => {
                tracing::debug!("upstream {} failed: {e}", target.authority);
                return Err(ForwardError::Upstream(e));
            }
            Err(_) => return Err(ForwardError::Timeout(target.response_timeout)),
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut resp);
                tokio::spawn(upgrade::tunnel(client_upgrade, upstream_upgrade, guard));
                let (parts, _) = resp.into_parts();
                return Ok(Response::from_parts(parts, body::empty()));
            }
        }

        let (mut parts, body) = resp.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        let body = match lease {
            Some(lease) => GuardedBody::new(client::PooledBody::new(body, lease), guard).boxed(),
            None => GuardedBody::new(body, guard).boxed(),
        };
        Ok(Response::from_parts(parts, body))
    }
}

/// A plain-text error answer.
pub fn error_response(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(body::full(format!("{message}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;
    use crate::apps::activity::Activity;

    /// A request whose upstream never answers gets the timeout, and its activity guard is
    /// dropped with it: the app stops counting it as in flight (and can go idle).
    #[tokio::test]
    async fn timed_out_request_stops_counting_as_in_flight() {
        let hanging = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = hanging.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = hanging.accept().await {
                held.push(sock);
            }
        });

        let proxy = Proxy::new(&ProxyConfig::default()).unwrap();
        let activity = Arc::new(Activity::default());
        let target = Target {
            scheme: Scheme::HTTP,
            authority: upstream.to_string().parse().unwrap(),
            base_path: String::new(),
            app_path: "/".into(),
            strip_app: true,
            preserve_host: false,
            response_timeout: Duration::from_millis(300),
        };
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        let served = activity.clone();
        tokio::spawn(async move {
            let (sock, peer) = front.accept().await.unwrap();
            let service = hyper::service::service_fn(move |req| {
                let (proxy, target, guard) = (proxy.clone(), target.clone(), served.enter());
                let client = ClientInfo { ip: peer.ip(), https: false, port: front_addr.port() };
                async move {
                    Ok::<_, Infallible>(match proxy.forward(req, &target, client, Some(guard)).await {
                        Ok(resp) => resp,
                        Err(e) => error_response(e.status(), &e.to_string()),
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(sock), service).await;
        });

        let sock = tokio::net::TcpStream::connect(front_addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(sock)).await.unwrap();
        tokio::spawn(conn);
        let req = Request::get("/hang").header("host", "app.localhost").body(Empty::<Bytes>::new()).unwrap();
        let pending = tokio::spawn(async move { sender.send_request(req).await });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while activity.in_flight() == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(activity.in_flight(), 1, "the request counts while it waits for the upstream");
        let resp = tokio::time::timeout(Duration::from_secs(5), pending).await.unwrap().unwrap().unwrap();
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(activity.in_flight(), 0, "a timed-out request no longer counts as in flight");
    }
}
