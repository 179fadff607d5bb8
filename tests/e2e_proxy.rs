//! End-to-end tests of proxy apps against an in-process upstream on 127.0.0.1.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// Shared state of the in-process upstream.
#[derive(Default)]
struct UpstreamState {
    /// Set just before the last chunk of `/stream` is sent.
    last_sent: AtomicBool,
    /// Notified by the test once it received the first chunk of `/stream`.
    first_seen: Notify,
    /// Every request path (with query) the upstream received.
    seen: std::sync::Mutex<Vec<String>>,
}

struct Upstream {
    port: u16,
    state: Arc<UpstreamState>,
}

const STREAM_BODY: &str = "chunk-0\nchunk-1\nchunk-2\nchunk-3\nlast\n";

/// Starts a tiny HTTP/1 upstream on 127.0.0.1:
/// - `/stream`: sends `chunk-0`, waits (max 10 s) until the test saw it, then
///   the other chunks with delays;
/// - `/status/NNN`: answers with that status;
/// - `/hang`: never answers;
/// - `/sse`: server-sent events: one at once, then one every 300 ms, `SSE_EVENTS` in all;
/// - anything else: a JSON echo of method, path (with query) and headers.
async fn start_upstream() -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(UpstreamState::default());
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let st = st.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(req, st.clone()));
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(sock), svc).await;
            });
        }
    });
    Upstream { port, state }
}

type Body = BoxBody<Bytes, Infallible>;

const SSE_EVENTS: usize = 8;

async fn handle(req: Request<Incoming>, st: Arc<UpstreamState>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    st.seen.lock().unwrap().push(req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default());
    if path == "/hang" {
        std::future::pending::<()>().await;
    }
    if path == "/sse" {
        let stream = futures_util::stream::unfold(0usize, |i| async move {
            if i == SSE_EVENTS {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(format!("data: event-{i}\n\n")))), i + 1))
        });
        let body = StreamBody::new(stream).boxed();
        return Ok(Response::builder().header("content-type", "text/event-stream").body(body).unwrap());
    }
    if path == "/stream" {
        st.last_sent.store(false, Ordering::SeqCst);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(8);
        tokio::spawn(async move {
            let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"chunk-0\n")))).await;
            let _ = tokio::time::timeout(Duration::from_secs(10), st.first_seen.notified()).await;
            for i in 1..4 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = tx.send(Ok(Frame::data(Bytes::from(format!("chunk-{i}\n"))))).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            st.last_sent.store(true, Ordering::SeqCst);
            let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"last\n")))).await;
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
        let body = StreamBody::new(stream).boxed();
        return Ok(Response::builder().header("content-type", "text/plain").body(body).unwrap());
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let code: u16 = code.parse().unwrap_or(500);
        return Ok(Response::builder()
            .status(code)
            .body(Full::new(Bytes::from(format!("status {code}"))).boxed())
            .unwrap());
    }
    let mut headers = serde_json::Map::new();
    for name in req.headers().keys() {
        let vals: Vec<String> =
            req.headers().get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        headers.insert(name.as_str().to_string(), Value::String(vals.join(", ")));
    }
    let echo = json!({
        "method": req.method().as_str(),
        "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "headers": headers,
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(echo.to_string())).boxed())
        .unwrap())
}

/// GET `url` and parse the upstream's JSON echo (asserts 200).
async fn echo(b: &Berth, client: &reqwest::Client, url: &str) -> Value {
    let resp = match client.get(url).send().await {
        Ok(r) => r,
        Err(e) => b.fail(format!("GET {url} failed: {e:?}")),
    };
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    b.ensure(status == 200, format!("GET {url}: expected 200 from the upstream, got {status}: {text:.300}"));
    match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => b.fail(format!("GET {url}: body is not the upstream's JSON echo ({e}): {text:.300}")),
    }
}

async fn status_of(b: &Berth, client: &reqwest::Client, url: &str) -> u16 {
    match client.get(url).send().await {
        Ok(r) => r.status().as_u16(),
        Err(e) => b.fail(format!("GET {url} failed: {e:?}")),
    }
}

fn hdr<'a>(v: &'a Value, name: &str) -> &'a str {
    v["headers"][name].as_str().unwrap_or("")
}

fn create_proxy(b: &Berth, up: u16, app_path: &str, extra: &[&str]) {
    let url = format!("url=http://127.0.0.1:{up}");
    let mut args = vec!["app", "create", "--spec", "proxy", "--param", &url];
    args.extend_from_slice(extra);
    args.push("-");
    args.push(app_path);
    b.cli_ok(&args);
}

/// Test 6a: routing by domain and by path, over HTTP and HTTPS, path
/// stripping, X-Forwarded-* headers, Host rewriting / preserve_host, 404s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_routing_headers_and_404() {
    let up = start_upstream().await;
    let b = Berth::start();
    create_proxy(&b, up.port, "proxyapp.localhost:/", &[]);
    create_proxy(&b, up.port, "/prox", &[]);
    create_proxy(&b, up.port, "phost.localhost:/", &["--param", "preserve_host=true"]);

    let entry = b.app("proxyapp.localhost:/");
    b.ensure(
        entry["spec"] == "proxy" && entry["state"] == "-",
        format!("proxy app list entry: expected spec \"proxy\" and state \"-\": {entry}"),
    );
    b.ensure(
        entry["params"]["url"] == format!("http://127.0.0.1:{}", up.port).as_str(),
        format!("proxy app list entry: params.url should be the upstream url: {entry}"),
    );
    let entry = b.app("/prox");
    b.ensure(entry["path"] == "/prox", format!("app list entry of /prox: {entry}"));

    let client = b.client(&["proxyapp.localhost", "phost.localhost", "nosuch.localhost"]);
    let up_host = format!("127.0.0.1:{}", up.port);

    // By domain, HTTP.
    let url = b.http_url("proxyapp.localhost", "/hello/world?x=1&y=two");
    let v = echo(&b, &client, &url).await;
    b.ensure(v["path"] == "/hello/world?x=1&y=two", format!("{url}: upstream saw wrong path: {v}"));
    b.ensure(hdr(&v, "host") == up_host, format!("{url}: Host should be rewritten to {up_host}: {v}"));
    b.ensure(
        hdr(&v, "x-forwarded-for").contains("127.0.0.1"),
        format!("{url}: X-Forwarded-For should contain 127.0.0.1: {v}"),
    );
    b.ensure(hdr(&v, "x-forwarded-proto") == "http", format!("{url}: X-Forwarded-Proto should be http: {v}"));
    b.ensure(
        hdr(&v, "x-forwarded-host").starts_with("proxyapp.localhost"),
        format!("{url}: X-Forwarded-Host should be the original host: {v}"),
    );

    // By domain, HTTPS.
    let url = b.https_url("proxyapp.localhost", "/secure?q=1");
    let v = echo(&b, &client, &url).await;
    b.ensure(v["path"] == "/secure?q=1", format!("{url}: upstream saw wrong path: {v}"));
    b.ensure(hdr(&v, "x-forwarded-proto") == "https", format!("{url}: X-Forwarded-Proto should be https: {v}"));
    b.ensure(
        hdr(&v, "x-forwarded-host").starts_with("proxyapp.localhost"),
        format!("{url}: X-Forwarded-Host should be the original host: {v}"),
    );
    b.ensure(hdr(&v, "host") == up_host, format!("{url}: Host should be rewritten to {up_host}: {v}"));
    b.ensure(
        hdr(&v, "x-forwarded-for").contains("127.0.0.1"),
        format!("{url}: X-Forwarded-For should contain 127.0.0.1: {v}"),
    );

    // By path on the default domain (localhost and 127.0.0.1), prefix stripped.
    for (url, want) in [
        (b.http_url("localhost", "/prox/sub/x?y=2"), "/sub/x?y=2"),
        (b.https_url("localhost", "/prox/sub/x"), "/sub/x"),
        (b.http_url("127.0.0.1", "/prox/a"), "/a"),
        (b.http_url("localhost", "/prox"), "/"),
        (b.http_url("localhost", "/prox/"), "/"),
    ] {
        let v = echo(&b, &client, &url).await;
        b.ensure(v["path"] == want, format!("{url}: app path /prox must be stripped, upstream should see {want}: {v}"));
    }
    let url = b.https_url("localhost", "/prox/h");
    let v = echo(&b, &client, &url).await;
    b.ensure(hdr(&v, "x-forwarded-proto") == "https", format!("{url}: X-Forwarded-Proto: {v}"));
    b.ensure(hdr(&v, "host") == up_host, format!("{url}: Host should be rewritten to {up_host}: {v}"));

    // preserve_host=true keeps the client's Host.
    for url in [b.http_url("phost.localhost", "/p"), b.https_url("phost.localhost", "/p")] {
        let v = echo(&b, &client, &url).await;
        b.ensure(
            hdr(&v, "host").starts_with("phost.localhost"),
            format!("{url}: with preserve_host=true the upstream should see Host phost.localhost: {v}"),
        );
        b.ensure(v["path"] == "/p", format!("{url}: upstream saw wrong path: {v}"));
    }

    // Upstream status codes pass through.
    let url = b.http_url("proxyapp.localhost", "/status/418");
    let st = status_of(&b, &client, &url).await;
    b.ensure(st == 418, format!("{url}: upstream status 418 should pass through, got {st}"));

    // Unknown host / unknown path -> 404.
    for url in [
        b.http_url("nosuch.localhost", "/"),
        b.https_url("nosuch.localhost", "/prox"),
        b.http_url("localhost", "/other"),
        b.https_url("localhost", "/"),
        b.http_url("localhost", "/proxy"),
        b.http_url("127.0.0.1", "/nothing/here"),
    ] {
        let st = status_of(&b, &client, &url).await;
        b.ensure(st == 404, format!("{url}: unknown host/path should give 404, got {st}"));
    }
}

/// Test 6b: a streamed upstream response reaches the client chunk by chunk
/// (the first chunk arrives before the upstream sent the last one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_streams_chunks() {
    let up = start_upstream().await;
    let b = Berth::start();
    create_proxy(&b, up.port, "streamapp.localhost:/", &[]);
    let client = b.client(&["streamapp.localhost"]);

    for url in [b.http_url("streamapp.localhost", "/stream"), b.https_url("streamapp.localhost", "/stream")] {
        let mut resp = match client.get(&url).send().await {
            Ok(r) => r,
            Err(e) => b.fail(format!("GET {url} failed: {e:?}")),
        };
        b.ensure(resp.status() == 200, format!("GET {url}: status {}", resp.status()));
        let mut buf = Vec::new();
        let got_first =
            read_until(&mut resp, &mut buf, Duration::from_secs(20), |d| d.windows(8).any(|w| w == b"chunk-0\n")).await;
        let last_already_sent = up.state.last_sent.load(Ordering::SeqCst);
        up.state.first_seen.notify_one();
        b.ensure(got_first, format!("{url}: first chunk never arrived; got {:?}", String::from_utf8_lossy(&buf)));
        b.ensure(
            !last_already_sent,
            format!(
                "{url}: the first chunk only arrived after the upstream sent its last chunk \
                 (response buffered, not streamed); got {:?}",
                String::from_utf8_lossy(&buf)
            ),
        );
        let done = read_until(&mut resp, &mut buf, Duration::from_secs(20), |d| d.ends_with(b"last\n")).await;
        let text = String::from_utf8_lossy(&buf).into_owned();
        b.ensure(
            done && text == STREAM_BODY,
            format!("{url}: full streamed body should be {STREAM_BODY:?}, got {text:?}"),
        );
        // Consume the rest so the next iteration starts clean.
        while let Ok(Some(_)) = resp.chunk().await {}
    }
}

/// GET over a raw connection to berth's HTTP port, so the path is sent exactly as written
/// (HTTP clients resolve `%2e%2e` themselves). Returns status and body.
async fn raw_get(b: &Berth, host: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", b.http_port)).await.expect("connect to berth");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    sock.write_all(req.as_bytes()).await.expect("send request");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), sock.read_to_end(&mut buf)).await;
    b.ensure(read.is_ok(), format!("GET {path}: no complete answer within 20 s"));
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Issue 7: an upstream that accepts and never answers gets 504 after the app's
/// `proxy.response_timeout_secs`; a server-sent event stream that lasts longer than the
/// timeout is not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_response_timeout_answers_504_but_streams_go_on() {
    let up = start_upstream().await;
    let b = Berth::start();
    create_proxy(&b, up.port, "slow.localhost:/", &["--conf", "proxy.response_timeout_secs=1"]);
    let client = slow_client(&["slow.localhost"], Duration::from_secs(30));

    let url = b.http_url("slow.localhost", "/hang");
    let started = std::time::Instant::now();
    let resp = match client.get(&url).send().await {
        Ok(r) => r,
        Err(e) => b.fail(format!("GET {url} failed: {e:?}")),
    };
    let took = started.elapsed();
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    b.ensure(status == 504, format!("GET {url}: a hanging upstream should give 504, got {status}: {text}"));
    b.ensure(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        format!("GET {url}: 504 should come after about the 1 s timeout, took {took:?}"),
    );
    b.ensure(
        text.contains("slow.localhost:/") && text.contains("1 s") && text.contains("proxy.response_timeout_secs"),
        format!("GET {url}: the 504 should name the app and the timeout: {text}"),
    );

    let url = b.http_url("slow.localhost", "/sse");
    let started = std::time::Instant::now();
    let mut resp = match client.get(&url).send().await {
        Ok(r) => r,
        Err(e) => b.fail(format!("GET {url} failed: {e:?}")),
    };
    b.ensure(resp.status() == 200, format!("GET {url}: status {}", resp.status()));
    let mut buf = Vec::new();
    let last = format!("event-{}\n\n", SSE_EVENTS - 1);
    let done = read_until(&mut resp, &mut buf, Duration::from_secs(20), |d| d.ends_with(last.as_bytes())).await;
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let events = text.matches("data: event-").count();
    b.ensure(
        done && events == SSE_EVENTS,
        format!("GET {url}: all {SSE_EVENTS} events should arrive (stream not cut), got {events}: {text:?}"),
    );
    b.ensure(took > Duration::from_millis(1500), format!("GET {url}: the stream should outlast the timeout: {took:?}"));

    let v = b.app("slow.localhost:/");
    b.ensure(
        v.to_string().contains("proxy.response_timeout_secs"),
        format!("the app's config should list proxy.response_timeout_secs: {v}"),
    );
}

/// Issue 7: forwarding headers a client sends are replaced by berth's own, at `/` and below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_forwarding_headers_are_replaced() {
    let up = start_upstream().await;
    let b = Berth::start();
    create_proxy(&b, up.port, "fwd.localhost:/", &[]);
    create_proxy(&b, up.port, "/fp", &[]);
    let client = b.client(&["fwd.localhost"]);
    let spoofed = [
        ("x-forwarded-for", "10.9.9.9"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-port", "1"),
        ("x-forwarded-prefix", "/evil"),
        ("x-real-ip", "10.9.9.9"),
        ("forwarded", "for=10.9.9.9;proto=https"),
    ];
    for (host, path, prefix) in [("fwd.localhost", "/x", None), ("localhost", "/fp/x", Some("/fp"))] {
        let url = b.http_url(host, path);
        let mut req = client.get(&url);
        for (name, value) in spoofed {
            req = req.header(name, value);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => b.fail(format!("GET {url} failed: {e:?}")),
        };
        let text = resp.text().await.unwrap_or_default();
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| b.fail(format!("{url}: not an echo ({e}): {text}")));
        let want_host = format!("{host}:{}", b.http_port);
        let port = b.http_port.to_string();
        let forwarded = format!("for=127.0.0.1;proto=http;host=\"{want_host}\"");
        for (name, want) in [
            ("x-forwarded-for", "127.0.0.1"),
            ("x-real-ip", "127.0.0.1"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", want_host.as_str()),
            ("x-forwarded-port", port.as_str()),
            ("x-forwarded-prefix", prefix.unwrap_or("")),
            ("forwarded", forwarded.as_str()),
        ] {
            b.ensure(hdr(&v, name) == want, format!("{url}: {name} should be {want:?} (client value replaced): {v}"));
        }
        b.ensure(
            !text.contains("10.9.9.9") && !text.contains("evil"),
            format!("{url}: a client value got through: {v}"),
        );
    }
}

/// Issue 7: encoded dot-segments and encoded slashes cannot move a request out of its app's
/// path (refused with 400, never forwarded); unreserved escapes are decoded before routing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_dot_segments_cannot_leave_the_app() {
    let up = start_upstream().await;
    let b = Berth::start();
    create_proxy(&b, up.port, "/app", &[]);
    let base = format!("url=http://127.0.0.1:{}/base", up.port);
    b.cli_ok(&["app", "create", "--spec", "proxy", "--param", &base, "-", "/other"]);

    for path in [
        "/app/%2e%2e/other",
        "/app/%2E./other",
        "/app/.%2e/other",
        "/app/..%2fother",
        "/app/..%2Fother/x",
        "/app/x%2f..%2f..%2fother",
        "/app/%2e%2e%5cother",
        "/other/%2e%2e/x",
        "/other/..%2f..%2fx",
        "/app/../other",
    ] {
        let (status, body) = raw_get(&b, "localhost", path).await;
        b.ensure(status == 400, format!("GET {path}: a dot-segment should be refused with 400, got {status}: {body}"));
    }
    let seen = up.state.seen.lock().unwrap().clone();
    b.ensure(seen.is_empty(), format!("refused paths must not reach the upstream, it saw {seen:?}"));

    let (status, body) = raw_get(&b, "localhost", "/%61pp/%7Eu/a%2Fb?q=%2e").await;
    b.ensure(status == 200, format!("GET /%61pp/...: unreserved escapes route to /app, got {status}: {body}"));
    b.ensure(
        body.contains("\"path\":\"/~u/a%2Fb?q=%2e\""),
        format!("GET /%61pp/...: upstream should see /~u/a%2Fb?q=%2e (inside /app, slash kept encoded): {body}"),
    );
    let (status, body) = raw_get(&b, "localhost", "/other/a%2fb").await;
    b.ensure(
        status == 200 && body.contains("\"path\":\"/base/a%2Fb\""),
        format!("GET /other/a%2fb should reach the upstream below its base path /base: {status} {body}"),
    );
}

/// Issue 7: a non-ASCII app path (never routable) and an overlong one are refused at create.
#[test]
fn non_ascii_and_long_app_paths_are_refused() {
    let b = Berth::start();
    let long = format!("/{}", "a".repeat(300));
    for (path, want) in [("/ünï", "not allowed"), ("/a%C3%BC", "not allowed"), (long.as_str(), "longer than 256")] {
        let out = b.cli(&["app", "create", "--spec", "proxy", "--param", "url=http://127.0.0.1:9", "-", path]);
        b.ensure(!out.ok(), format!("app create {path} should fail: {out}"));
        b.ensure(
            is_single_error_line(&out.stderr) && out.stderr.contains(want),
            format!("app create {path}: expected one error line with {want:?}: {out}"),
        );
        b.ensure(b.find_app(path).is_none(), format!("app {path} must not be created"));
    }
}

/// Issue 7: with `proxy.response_timeout_secs=1` a WebSocket lasting longer still works, a
/// request the container never answers gets 504, and afterwards the app goes idle (the
/// timed-out request no longer counts as in flight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_app_goes_idle_after_a_timed_out_request() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let image = ensure_wsecho_image();
    let b = Berth::start();
    let host = "hangapp.localhost";
    let conf = ["--conf", "container.idle_shutdown_secs=2", "--conf", "proxy.response_timeout_secs=1"];
    let id = b.create_image_app(image, 8080, "hangapp.localhost:/", &conf);
    let client = b.client(&[host]);
    let url = b.http_url(host, "/");
    let got = get_settled(&client, &url, Duration::from_secs(60)).await;
    b.ensure(matches!(&got, Ok(g) if g.status == 200), format!("GET {url}: the app should start: {got:?}"));
    let cid = b.single_container(&id);

    // A WebSocket open for longer than the response timeout is not cut.
    let ws_url = format!("ws://{host}:{}/ws", b.http_port);
    let req = ws_url.as_str().into_client_request().expect("ws request");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", b.http_port)).await.expect("connect to berth");
    let (mut ws, _) = match tokio_tungstenite::client_async(req, tcp).await {
        Ok(x) => x,
        Err(e) => b.fail(format!("WebSocket handshake to {ws_url} failed: {e:?}")),
    };
    let started = std::time::Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        n += 1;
        let msg = format!("m-{n}");
        if let Err(e) = ws.send(Message::Text(msg.clone())).await {
            b.fail(format!("WebSocket send #{n} failed after {:?}: {e:?}", started.elapsed()));
        }
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t == msg => {}
            other => b.fail(format!("WebSocket echo #{n} after {:?}: got {other:?}", started.elapsed())),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = ws.close(None).await;
    drop(ws);

    let url = b.http_url(host, "/hang");
    let started = std::time::Instant::now();
    let status = status_of(&b, &client, &url).await;
    b.ensure(status == 504, format!("GET {url}: a container that never answers should give 504, got {status}"));
    b.ensure(started.elapsed() < Duration::from_secs(5), format!("GET {url}: 504 took {:?}", started.elapsed()));

    let stopped =
        wait_until_async(Duration::from_secs(30), Duration::from_millis(200), || !container_running(&cid)).await;
    b.ensure(
        stopped.is_some(),
        format!("container {cid} still runs 30 s after a timed-out request (idle_shutdown_secs=2): still counted in flight?"),
    );
}
