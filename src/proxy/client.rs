//! The upstream client for plain-HTTP upstreams: HTTP/1.1 connections made with hyper's
//! low-level `client::conn::http1`, and a small pool of idle senders per upstream. A request
//! goes straight from the serving task to its connection's task; the sender goes back to the
//! pool when the response body ends (no task per request to watch for that, no pool-wide
//! bookkeeping beyond one short lock). HTTPS upstreams use the general pooled client in
//! [`super::Proxy`].

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Why a request could not be sent to a plain-HTTP upstream.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to {authority}: {source}")]
    Connect { authority: Authority, source: std::io::Error },
    #[error("cannot connect to {0}: timed out")]
    ConnectTimeout(Authority),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// How long a request waits for an idle connection that is not ready yet.
const READY_WAIT: Duration = Duration::from_millis(50);

/// A connection idle at least this long may be closed by the upstream (its keep-alive timeout,
/// or an app woken from pause) just as a request goes out on it: a request without a body is
/// then sent again once, on a fresh connection. Connections reused sooner (under load) are
/// not prepared for that, so the hot path copies nothing.
const RESEND_IF_IDLE: Duration = Duration::from_secs(1);

/// A request body that can say whether the request may be sent again: only a request that
/// has no body (nothing of it was consumed by the failed attempt).
pub trait Resendable: Sized {
    /// An empty body to send the request again with; `None` when the request has a body.
    fn resend(&self) -> Option<Self>;
}

/// What the proxy sends upstream: the client's streamed body, or none (a request without a
/// body, which may be sent again on a fresh connection).
pub enum UpstreamBody {
    Streamed(Incoming),
    Empty,
}

impl UpstreamBody {
    pub fn new(body: Incoming) -> UpstreamBody {
        if body.is_end_stream() {
            UpstreamBody::Empty
        } else {
            UpstreamBody::Streamed(body)
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Streamed(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Streamed(body) => body.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Streamed(body) => body.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}

impl Resendable for UpstreamBody {
    fn resend(&self) -> Option<Self> {
        matches!(self, UpstreamBody::Empty).then_some(UpstreamBody::Empty)
    }
}

/// A copy of a safe request without a body, to send it again.
fn resend_copy<B: Resendable>(req: &Request<B>) -> Option<Request<B>> {
    if !matches!(*req.method(), http::Method::GET | http::Method::HEAD | http::Method::OPTIONS) {
        return None;
    }
    let mut copy = Request::new(req.body().resend()?);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

struct IdleSender<B> {
    sender: SendRequest<B>,
    since: Instant,
}

/// Idle HTTP/1.1 senders, per upstream authority, most recently used last. Keyed by the
/// authority's text: `Authority`'s own hash lowercases and hashes it byte by byte.
pub struct Pool<B = UpstreamBody> {
    idle: Mutex<HashMap<Box<str>, VecDeque<IdleSender<B>>>>,
    max_idle_per_host: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

/// A connection's sender while a response is in flight; goes back to the pool when the
/// response body ends.
pub struct Lease<B = UpstreamBody> {
    pool: Arc<Pool<B>>,
    authority: Authority,
    sender: SendRequest<B>,
}

impl<B> Pool<B>
where
    B: Body + Resendable + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(max_idle_per_host: usize, idle_timeout: Duration, connect_timeout: Duration) -> Arc<Self> {
        let pool = Arc::new(Pool { idle: Mutex::default(), max_idle_per_host, idle_timeout, connect_timeout });
        // Close idle connections of upstreams nobody asks for any more.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(reap_idle(Arc::downgrade(&pool), (idle_timeout / 2).max(Duration::from_secs(1))));
        }
        pool
    }

    /// Sends `req` (origin-form URI, `Host` set) to `authority` on an idle connection or a
    /// new one. Returns the response and the lease of its connection. A safe request without
    /// a body that went out on a long-idle connection which then closed without answering is
    /// sent again once, on a new connection (see [`RESEND_IF_IDLE`]).
    pub async fn send(
        self: &Arc<Self>,
        authority: &Authority,
        mut req: Request<B>,
    ) -> Result<(Response<Incoming>, Lease<B>), SendError> {
        loop {
            let Some((mut sender, idle_for)) = self.checkout(authority) else { break };
            // Ready at once, or within moments of its last response; one still busy (say,
            // with the rest of an earlier request's body) or closed is let go.
            if !sender.is_ready() && !matches!(tokio::time::timeout(READY_WAIT, sender.ready()).await, Ok(Ok(()))) {
                continue;
            }
            let again = if idle_for >= RESEND_IF_IDLE { resend_copy(&req) } else { None };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.lease(authority, sender))),
                Err(mut e) => match (e.take_message(), again) {
                    (Some(unsent), _) => req = unsent, // closed before the request went out: next one
                    (None, Some(again)) if closed_unanswered(e.error()) => {
                        tracing::debug!("upstream {authority} closed an idle connection unanswered; sending again");
                        // The other idle connections are as old: let them go too.
                        self.idle.lock().expect("pool lock").remove(authority.as_str());
                        req = again;
                        break;
                    }
                    (None, _) => return Err(e.into_error().into()),
                },
            }
        }
        let mut sender = self.connect(authority).await?;
        let resp = sender.send_request(req).await?;
        Ok((resp, self.lease(authority, sender)))
    }

    fn lease(self: &Arc<Self>, authority: &Authority, sender: SendRequest<B>) -> Lease<B> {
        Lease { pool: self.clone(), authority: authority.clone(), sender }
    }

    /// The most recently used idle sender and how long it was idle.
    fn checkout(&self, authority: &Authority) -> Option<(SendRequest<B>, Duration)> {
        let mut idle = self.idle.lock().expect("pool lock");
        let senders = idle.get_mut(authority.as_str())?;
        while let Some(idle) = senders.pop_back() {
            let idle_for = idle.since.elapsed();
            if !idle.sender.is_closed() && idle_for < self.idle_timeout {
                return Some((idle.sender, idle_for));
            }
        }
        None
    }

    async fn connect(&self, authority: &Authority) -> Result<SendRequest<B>, SendError> {
        let port = authority.port_u16().unwrap_or(80);
        let connect = TcpStream::connect((authority.host(), port));
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(SendError::Connect { authority: authority.clone(), source }),
            Err(_) => return Err(SendError::ConnectTimeout(authority.clone())),
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new().handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!("upstream connection ended: {e}");
            }
        });
        Ok(sender)
    }
}

impl<B> Pool<B> {
    fn checkin(&self, authority: Authority, sender: SendRequest<B>) {
        if sender.is_closed() || self.max_idle_per_host == 0 {
            return;
        }
        let mut idle = self.idle.lock().expect("pool lock");
        let senders = match idle.get_mut(authority.as_str()) {
            Some(senders) => senders,
            None => idle.entry(authority.as_str().into()).or_default(),
        };
        if senders.len() >= self.max_idle_per_host {
            senders.pop_front();
        }
        senders.push_back(IdleSender { sender, since: Instant::now() });
    }
}

/// The connection closed (or its task ended) before any response to a request sent on it.
fn closed_unanswered(e: &hyper::Error) -> bool {
    e.is_incomplete_message() || e.is_canceled()
}

async fn reap_idle<B>(pool: Weak<Pool<B>>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut idle = pool.idle.lock().expect("pool lock");
        idle.retain(|_, senders| {
            senders.retain(|s| !s.sender.is_closed() && s.since.elapsed() < pool.idle_timeout);
            !senders.is_empty()
        });
    }
}

/// A response body from a pooled connection: when it ends, the connection's sender goes
/// back to the pool; when it is dropped before its end, the connection is closed with it.
pub struct PooledBody<B = UpstreamBody> {
    inner: Incoming,
    lease: Option<Lease<B>>,
}

impl<B> PooledBody<B> {
    pub fn new(inner: Incoming, lease: Lease<B>) -> PooledBody<B> {
        PooledBody { inner, lease: Some(lease) }
    }

    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.pool.checkin(lease.authority, lease.sender);
        }
    }
}

impl<B> Body for PooledBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Err(_))) => drop(self.lease.take()),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for PooledBody<B> {
    fn drop(&mut self) {
        // hyper stops polling a body whose length says it has ended: that is an end too.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Empty, Full};
    use tokio::net::TcpListener;

    use super::*;

    /// An upstream answering `hello` on every request, counting the connections it accepts;
    /// with `close`, it closes each connection after one response.
    async fn upstream(close: bool) -> (Authority, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(move |_req| async move {
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"hello")));
                    if close {
                        resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                    }
                    Ok::<_, Infallible>(resp)
                });
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(sock), service));
            }
        });
        (addr.to_string().parse().unwrap(), accepted)
    }

    impl Resendable for Empty<Bytes> {
        fn resend(&self) -> Option<Self> {
            Some(Empty::new())
        }
    }

    /// An upstream that answers the first request on each connection and closes the
    /// connection unanswered on the next one (a keep-alive timeout racing a request).
    async fn closes_reused_connections() -> (Authority, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    let mut answered = false;
                    while let Ok(n) = sock.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            if answered {
                                return; // closed without an answer
                            }
                            answered = true;
                            seen.clear();
                            let _ = sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").await;
                        }
                    }
                });
            }
        });
        (addr.to_string().parse().unwrap(), accepted)
    }

    #[tokio::test]
    async fn a_safe_request_on_a_long_idle_connection_closed_unanswered_is_sent_again() {
        let (authority, accepted) = closes_reused_connections().await;
        let pool = Pool::new(4, Duration::from_secs(60), Duration::from_secs(5));
        assert_eq!(fetch(&pool, &authority).await, "hello");
        tokio::time::sleep(RESEND_IF_IDLE + Duration::from_millis(100)).await;
        assert_eq!(fetch(&pool, &authority).await, "hello", "sent again on a new connection");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);

        // Not a safe method: the failure is reported, not retried.
        tokio::time::sleep(RESEND_IF_IDLE + Duration::from_millis(100)).await;
        let post = Request::post("/").header("host", authority.as_str()).body(Empty::new()).unwrap();
        let Err(err) = pool.send(&authority, post).await else { panic!("a closed connection answered") };
        assert!(err.to_string().contains("connection closed before message completed"), "{err}");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    fn get(authority: &Authority) -> Request<Empty<Bytes>> {
        Request::get("/").header("host", authority.as_str()).body(Empty::new()).unwrap()
    }

    async fn fetch(pool: &Arc<Pool<Empty<Bytes>>>, authority: &Authority) -> Bytes {
        let (resp, lease) = pool.send(authority, get(authority)).await.unwrap();
        PooledBody::new(resp.into_body(), lease).collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let (authority, accepted) = upstream(false).await;
        let pool = Pool::new(4, Duration::from_secs(60), Duration::from_secs(5));
        for _ in 0..5 {
            assert_eq!(fetch(&pool, &authority).await, "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_closed_connection_is_replaced() {
        let (authority, accepted) = upstream(true).await;
        let pool = Pool::new(4, Duration::from_secs(60), Duration::from_secs(5));
        for _ in 0..3 {
            assert_eq!(fetch(&pool, &authority).await, "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_does_not_return_its_connection() {
        let (authority, accepted) = upstream(false).await;
        let pool = Pool::new(4, Duration::from_secs(60), Duration::from_secs(5));
        let (resp, lease) = pool.send(&authority, get(&authority)).await.unwrap();
        drop(PooledBody::new(resp.into_body(), lease));
        assert!(pool.idle.lock().unwrap().values().all(|idle| idle.is_empty()));
        assert_eq!(fetch(&pool, &authority).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn idle_connections_expire() {
        let (authority, accepted) = upstream(false).await;
        let pool = Pool::new(4, Duration::from_millis(50), Duration::from_secs(5));
        assert_eq!(fetch(&pool, &authority).await, "hello");
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(fetch(&pool, &authority).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_upstream() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        drop(listener);
        let pool = Pool::new(4, Duration::from_secs(60), Duration::from_secs(5));
        let Err(err) = pool.send(&authority, get(&authority)).await else { panic!("a closed port answered") };
        assert!(err.to_string().starts_with(&format!("cannot connect to {authority}: ")), "{err}");
    }
}
