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

struct IdleSender<B> {
    sender: SendRequest<B>,
    since: Instant,
}

/// Idle HTTP/1.1 senders, per upstream authority, most recently used last. Keyed by the
/// authority's text: `Authority`'s own hash lowercases and hashes it byte by byte.
pub struct Pool<B = Incoming> {
    idle: Mutex<HashMap<Box<str>, VecDeque<IdleSender<B>>>>,
    max_idle_per_host: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

/// A connection's sender while a response is in flight; goes back to the pool when the
/// response body ends.
pub struct Lease<B = Incoming> {
    pool: Arc<Pool<B>>,
    authority: Authority,
    sender: SendRequest<B>,
}

impl<B> Pool<B>
where
    B: Body + Send + 'static,
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
    /// new one. Returns the response and the lease of its connection.
    pub async fn send(
        self: &Arc<Self>,
        authority: &Authority,
        mut req: Request<B>,
    ) -> Result<(Response<Incoming>, Lease<B>), SendError> {
        loop {
            let Some(mut sender) = self.checkout(authority) else { break };
            // Ready at once, or within moments of its last response; one still busy (say,
            // with the rest of an earlier request's body) or closed is let go.
            if !sender.is_ready() && !matches!(tokio::time::timeout(READY_WAIT, sender.ready()).await, Ok(Ok(()))) {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.lease(authority, sender))),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent, // closed before the request went out: next one
                    None => return Err(e.into_error().into()),
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

    fn checkout(&self, authority: &Authority) -> Option<SendRequest<B>> {
        let mut idle = self.idle.lock().expect("pool lock");
        let senders = idle.get_mut(authority.as_str())?;
        while let Some(idle) = senders.pop_back() {
            if !idle.sender.is_closed() && idle.since.elapsed() < self.idle_timeout {
                return Some(idle.sender);
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
pub struct PooledBody<B = Incoming> {
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
