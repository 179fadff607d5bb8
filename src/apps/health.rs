//! Readiness probes: a raw HTTP/1.1 GET of the health path on the container's published port,
//! first at once, then backing off from 5 ms to at most 250 ms. Only a 2xx answer counts.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

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
    let mut delay = FIRST_DELAY;
    let mut last_alive_check = Instant::now();
    loop {
        let last = match tokio::time::timeout(PROBE_TIMEOUT, probe(addr, path)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => return Ok(()),
            Ok(Ok(status)) => format!("health check {path} answered {status}"),
            Ok(Err(e)) => format!("health check {path} failed: {e}"),
            Err(_) => format!("health check {path} timed out"),
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
        delay = (delay * 2).min(MAX_DELAY);
    }
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
