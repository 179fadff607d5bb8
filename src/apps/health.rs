//! Readiness probes: a raw HTTP/1.1 GET of the health path on the container's published port.
//! While nothing listens yet (the connect is refused, or the engine's port proxy accepts and
//! closes at once) the probe is retried after about 1 ms: a refused connect costs microseconds,
//! so readiness is seen within a few ms of the port opening. Once the app answers HTTP but not
//! yet 2xx, probes back off from 5 ms to at most 250 ms. Only a 2xx answer counts.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The pause between probes while nothing listens on the port.
const NOT_LISTENING_DELAY: Duration = Duration::from_millis(1);
/// The first pause after an answer that is not 2xx (or another failure); doubles up to the max.
const FIRST_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_millis(250);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the container is asked whether it still runs while probing.
const ALIVE_CHECK_EVERY: Duration = Duration::from_millis(500);

/// Probes until a 2xx answer, the deadline, or `alive` reporting that the container exited.
/// Returns the last probe's outcome as the error.
pub async fn wait_ready<F, Fut>(addr: SocketAddr, path: &str, deadline: Instant, mut alive: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut backoff = FIRST_DELAY;
    let mut last_alive_check = Instant::now();
    loop {
        let (last, delay) = match tokio::time::timeout(PROBE_TIMEOUT, probe(addr, path)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => return Ok(()),
            Ok(Err(e)) if not_listening(&e) => (format!("health check {path} failed: {e}"), NOT_LISTENING_DELAY),
            outcome => {
                let last = match outcome {
                    Ok(Ok(status)) => format!("health check {path} answered {status}"),
                    Ok(Err(e)) => format!("health check {path} failed: {e}"),
                    Err(_) => format!("health check {path} timed out"),
                };
                let delay = backoff;
                backoff = (backoff * 2).min(MAX_DELAY);
                (last, delay)
            }
        };
        if Instant::now() + delay >= deadline {
            return Err(last);
        }
        if last_alive_check.elapsed() >= ALIVE_CHECK_EVERY {
            last_alive_check = Instant::now();
            if !alive().await {
                return Err(format!("the container exited before it became ready ({last})"));
            }
        }
        tokio::time::sleep(delay).await;
    }
}

/// Whether a probe failed because nothing listens yet: the connect was refused, or the
/// engine's port proxy accepted and closed (or reset) the connection without an answer.
fn not_listening(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionReset | ConnectionAborted | UnexpectedEof | BrokenPipe)
}

/// One GET; returns the status code.
pub async fn probe(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: berth-health\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = [0u8; 64];
    let mut filled = 0;
    while filled < 12 {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed before a response"));
        }
        filled += n;
    }
    parse_status(&buf[..filled])
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response"))
}

fn parse_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.")?;
    rest.get(2..5)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn status_line() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.0 503 x"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0"), None);
    }

    async fn serve(status: &'static str, after: Duration) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let ready_at = Instant::now() + after;
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let reply = if Instant::now() >= ready_at { status } else { "HTTP/1.1 503 Starting\r\n\r\n" };
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn ready_quickly_once_2xx() {
        let addr = serve("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Duration::from_millis(100)).await;
        let started = Instant::now();
        wait_ready(addr, "/", Instant::now() + Duration::from_secs(5), || async { true }).await.unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(100) && took < Duration::from_millis(400), "took {took:?}");
    }

    /// The port refuses connections, then accepts and closes them at once (an engine's port
    /// proxy before the app listens), then serves: readiness is seen within a few ms of that.
    #[tokio::test]
    async fn ready_within_ms_of_the_port_opening() {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(60)).await;
            let l = TcpListener::bind(addr).await.unwrap();
            let closing_until = Instant::now() + Duration::from_millis(60);
            while Instant::now() < closing_until {
                if let Ok(Ok((s, _))) = tokio::time::timeout_at(closing_until, l.accept()).await {
                    drop(s);
                }
            }
            let _ = opened_tx.send(Instant::now());
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
            }
        });
        wait_ready(addr, "/", Instant::now() + Duration::from_secs(5), || async { true }).await.unwrap();
        let ready = Instant::now();
        let opened = opened_rx.await.unwrap();
        let late = ready - opened;
        assert!(late < Duration::from_millis(20), "readiness seen {late:?} after the app listened");
    }

    #[tokio::test]
    async fn non_2xx_is_not_ready() {
        let addr = serve("HTTP/1.1 500 Oops\r\n\r\n", Duration::ZERO).await;
        let err =
            wait_ready(addr, "/h", Instant::now() + Duration::from_millis(300), || async { true }).await.unwrap_err();
        assert!(err.contains("500"), "{err}");
    }

    #[tokio::test]
    async fn dead_container_fails_fast() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let started = Instant::now();
        let err =
            wait_ready(addr, "/", Instant::now() + Duration::from_secs(10), || async { false }).await.unwrap_err();
        assert!(err.contains("exited"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
