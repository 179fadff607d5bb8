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

async fn handle(req: Request<Incoming>, st: Arc<UpstreamState>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
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
