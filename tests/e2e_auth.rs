//! App authentication end to end: the system (admin password) login and OpenID Connect
//! against a real provider (the `oidc-provider` npm package, tests/fixtures/oidc). Apps here
//! are `proxy` apps in front of a header echo run by the test, so no container is needed.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain HTTP upstream on 127.0.0.1 that answers every request with its headers as JSON.
async fn header_echo() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let mut headers = serde_json::Map::new();
                for line in text.lines().skip(1) {
                    if let Some((k, v)) = line.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), Value::String(v.trim().to_string()));
                    }
                }
                let body = Value::Object(headers).to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

/// A client that keeps cookies, accepts the self-signed certificate and maps `localhost`
/// to 127.0.0.1; `follow` makes it follow redirects.
fn cookie_client(follow: bool) -> reqwest::Client {
    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .danger_accept_invalid_certs(true)
        .redirect(if follow { reqwest::redirect::Policy::limited(20) } else { reqwest::redirect::Policy::none() })
        .timeout(Duration::from_secs(30))
        .resolve("localhost", lo)
        .build()
        .unwrap()
}

fn create_proxy(b: &Berth, upstream: u16, app_path: &str, extra: &[&str]) -> CmdOut {
    let url = format!("url=http://127.0.0.1:{upstream}");
    let mut args = vec!["app", "create", "--spec", "proxy", "--param", &url];
    args.extend_from_slice(extra);
    args.extend(["-", app_path]);
    b.cli(&args)
}

/// The admin password the server printed at its first start.
fn first_password(b: &Berth) -> String {
    let log = b.log();
    log.lines()
        .find_map(|l| l.strip_prefix("Admin password: "))
        .map(|p| p.trim().to_string())
        .unwrap_or_else(|| b.fail("the server printed no admin password at first start"))
}

async fn login(client: &reqwest::Client, b: &Berth, password: &str) -> reqwest::Response {
    client
        .post(b.https_url("localhost", "/_berth/login"))
        .form(&[("user", "admin"), ("password", password), ("next", "/private/x")])
        .send()
        .await
        .unwrap()
}

async fn status(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap_or_else(|e| panic!("GET {url}: {e:?}")).status().as_u16()
}

async fn echo_headers(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Value {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "GET {url}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not the echo ({e}): {text}"))
}

const FORGED: [(&str, &str); 2] = [("X-Berth-User", "mallory"), ("X-Berth-Email", "mallory@evil.example")];

#[tokio::test]
async fn system_auth_password_login_cookie_headers_logout_and_reset() {
    let upstream = header_echo().await;
    let b = Berth::start();
    let password = first_password(&b);
    assert!(password.len() >= 16, "a strong generated password: {password}");
    let stored = std::fs::read_to_string(b.home_path.join("auth/admin_password.argon2")).unwrap();
    assert!(stored.starts_with("$argon2") && !stored.contains(&password), "only a hash is stored");
    assert!(create_proxy(&b, upstream, "/open", &[]).ok());
    assert!(create_proxy(&b, upstream, "/private", &["--auth", "system"]).ok());
    let client = cookie_client(false);

    // auth=none: served, and client-sent identity headers never reach the app.
    let open = echo_headers(&client, &b.https_url("localhost", "/open/"), &FORGED).await;
    assert!(open.get("x-berth-user").is_none() && open.get("x-berth-email").is_none(), "{open}");

    // Unauthenticated: non-browsers get 401, browsers are sent to the login, plain HTTP is refused.
    let private = b.https_url("localhost", "/private/x");
    assert_eq!(status(&client, &private, &[("accept", "application/json")]).await, 401);
    let resp = client.get(&private).header("accept", "text/html").send().await.unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/_berth/login?next=%2Fprivate%2Fx");
    assert_eq!(status(&client, &b.http_url("localhost", "/private/x"), &[]).await, 403);
    let ws = [
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    assert_eq!(status(&client, &private, &ws).await, 401, "WebSocket upgrades are authenticated too");
    let page = client.get(b.https_url("localhost", "/_berth/login")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("type=\"password\""));

    // Wrong password: 401 and no cookie.
    let wrong = login(&client, &b, "not-the-password").await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    assert_eq!(status(&client, &private, &[]).await, 401);

    // Right password: a Secure, HttpOnly, SameSite=Lax session cookie and a redirect back.
    let ok = login(&client, &b, &password).await;
    assert_eq!(ok.status(), 303);
    assert_eq!(ok.headers()["location"], "/private/x");
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_string();
    for flag in ["Secure", "HttpOnly", "SameSite=Lax", "Max-Age=86400"] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
    assert!(!cookie.contains("admin"), "the cookie is encrypted: {cookie}");
    let seen = echo_headers(&client, &private, &FORGED).await;
    assert_eq!(seen["x-berth-user"], "admin", "{seen}");
    assert!(seen.get("x-berth-email").is_none(), "the forged email is removed: {seen}");
    // A tampered cookie is no session.
    let (name, value) = cookie.split(';').next().unwrap().split_once('=').unwrap();
    let tampered = format!("{name}={}x", &value[..value.len() - 1]);
    let plain = client_for(&[]);
    assert_eq!(status(&plain, &private, &[("cookie", &tampered)]).await, 401);
    assert_eq!(status(&plain, &private, &[("cookie", &format!("{name}={value}"))]).await, 200);

    // Logout clears it.
    let out = client.get(b.https_url("localhost", "/_berth/logout")).send().await.unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(status(&client, &private, &[]).await, 401);

    // `berth server password` (server running) replaces it: the old one fails, the new works.
    let reset = b.cli_ok(&["server", "password"]);
    let new = reset.stdout.lines().find_map(|l| l.strip_prefix("Admin password: ")).unwrap().trim().to_string();
    assert_ne!(new, password);
    assert_eq!(login(&client, &b, &password).await.status(), 401);
    let stolen = format!("{name}={value}");
    assert_eq!(status(&plain, &private, &[("cookie", &stolen)]).await, 401, "a new password ends old sessions");
    assert_eq!(login(&client, &b, &new).await.status(), 303);
    assert_eq!(status(&client, &private, &[]).await, 200);
}

#[tokio::test]
async fn auth_setting_default_unknown_provider_and_staged_update() {
    let upstream = header_echo().await;
    let b = Berth::start_with("\n[security]\napp_default_auth = \"system\"\n");
    let client = cookie_client(false);

    // The default comes from [security] app_default_auth.
    assert!(create_proxy(&b, upstream, "/dflt", &[]).ok());
    assert_eq!(status(&client, &b.https_url("localhost", "/dflt/"), &[]).await, 401);
    assert!(create_proxy(&b, upstream, "/pub", &["--auth", "none"]).ok());
    assert_eq!(status(&client, &b.https_url("localhost", "/pub/"), &[]).await, 200);

    // An unknown provider is refused at create, with one clear line, and nothing is made.
    let out = create_proxy(&b, upstream, "/bad", &["--auth", "oidc_nope"]);
    assert!(!out.ok(), "{out}");
    assert!(out.stderr.contains("invalid authentication type \"oidc_nope\""), "{out}");
    assert!(is_single_error_line(&out.stderr), "{out}");
    assert!(b.find_app("/bad").is_none());

    // update-metadata auth is staged: stage first, prod after promote.
    b.cli_ok(&["app", "update-metadata", "auth", "system", "/pub"]);
    assert_eq!(status(&client, &b.https_url("localhost", "/pub/"), &[]).await, 200, "prod unchanged");
    assert_eq!(status(&client, &b.https_url("localhost", &format!("{}/", stage_path("/pub"))), &[]).await, 401);
    b.cli_ok(&["app", "promote", "/pub"]);
    assert_eq!(status(&client, &b.https_url("localhost", "/pub/"), &[]).await, 401, "prod after promote");
    let bad = b.cli(&["app", "update-metadata", "auth", "oidc_nope", "/pub"]);
    assert!(!bad.ok() && bad.stderr.contains("invalid authentication type"), "{bad}");
    b.cli_ok(&["app", "update-metadata", "auth", "--promote", "default", "/pub"]);
    assert_eq!(status(&client, &b.https_url("localhost", "/pub/"), &[]).await, 401, "default: system");
}

// ---------------------------------------------------------------------------
// OpenID Connect against a real provider (tests/fixtures/oidc/provider.js).
// ---------------------------------------------------------------------------

const OIDC_SECRET_ENV: &str = "BERTH_TEST_OIDC_SECRET";

/// A running `provider.js`; killed on drop.
struct OidcProvider {
    child: std::process::Child,
    port: u16,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OidcProvider {
    /// Starts the provider on a free port with `env` (ID_TOKEN_MODE, ISSUER_HOST) and waits until
    /// its discovery document answers.
    async fn start(redirect_uri: &str, env: &[(&str, &str)]) -> OidcProvider {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oidc");
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "oidc-provider is not installed: run `npm ci --prefix tests/fixtures/oidc` (.ci/run does)"
        );
        let port = free_port();
        let mut cmd = std::process::Command::new("node");
        cmd.arg("provider.js")
            .current_dir(&dir)
            .env("PORT", port.to_string())
            .env("REDIRECT_URIS", redirect_uri)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let provider = OidcProvider { child: cmd.spawn().expect("run node provider.js"), port };
        let url = format!("http://127.0.0.1:{port}/.well-known/openid-configuration");
        let client = client_for(&[]);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if matches!(client.get(&url).send().await, Ok(r) if r.status() == 200) {
                return provider;
            }
            assert!(std::time::Instant::now() < deadline, "the OpenID provider did not answer {url} in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn provider_toml(name: &str, issuer: &str, extra: &str) -> String {
    format!(
        "\n[auth.{name}]\nissuer = \"{issuer}\"\nclient_id = \"berth\"\nclient_secret_env = \"{OIDC_SECRET_ENV}\"\n\
         scopes = [\"email\", \"profile\", \"groups\"]\n{extra}\n"
    )
}

/// A browser-like client: follows redirects, keeps cookies, asks for HTML; every URL it
/// visits is recorded.
fn browser() -> (reqwest::Client, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let visited = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = visited.clone();
    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        record.lock().unwrap().push(attempt.url().to_string());
        if attempt.previous().len() > 20 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    });
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("accept", "text/html,application/xhtml+xml".parse().unwrap());
    let client = reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .danger_accept_invalid_certs(true)
        .redirect(policy)
        .default_headers(headers)
        .timeout(Duration::from_secs(60))
        .resolve("localhost", lo)
        .build()
        .unwrap();
    (client, visited)
}

async fn text_of(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    (resp.status().as_u16(), resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn oidc_login_through_a_real_provider_sets_identity_and_refuses_a_replayed_state() {
    let upstream = header_echo().await;
    let mut b = Berth::configure("");
    let callback = b.https_url("localhost", "/_berth/auth/callback");
    let idp = OidcProvider::start(&callback, &[]).await;
    let config = [
        provider_toml("oidc_test", &idp.issuer(), "session_lifetime_secs = 600"),
        provider_toml("oidc_picky", &idp.issuer(), "emails = [\"bob@example.com\"]\ndomains = [\"corp.example\"]"),
        provider_toml("oidc_ops", &idp.issuer(), "groups = [\"ops\"]"),
    ]
    .concat();
    append_config(&b, &config);
    b.start_server_with_env(&[(OIDC_SECRET_ENV, "berth-secret")]);
    assert!(create_proxy(&b, upstream, "/sso", &["--auth", "oidc_test"]).ok());
    assert!(create_proxy(&b, upstream, "/picky", &["--auth", "oidc_picky"]).ok());
    assert!(create_proxy(&b, upstream, "/ops", &["--auth", "oidc_ops"]).ok());
    let app = b.https_url("localhost", "/sso/page");

    // Non-browsers get 401 without a session.
    assert_eq!(status(&client_for(&[]), &app, &[("accept", "application/json")]).await, 401);

    // A browser is sent through the provider's login and back, and the app sees who it is.
    let (browser, visited) = browser();
    let (code, body) = text_of(&browser, &app, &FORGED).await;
    assert_eq!(code, 200, "login through the provider: {body}\nvisited: {:?}", visited.lock().unwrap());
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["x-berth-user"], "alice", "{seen}");
    assert_eq!(seen["x-berth-email"], "alice@example.com", "{seen}");
    let urls = visited.lock().unwrap().clone();
    let auth_url =
        urls.iter().find(|u| u.starts_with(&format!("{}/auth?", idp.issuer()))).expect("sent to the provider");
    for part in ["code_challenge_method=S256", "code_challenge=", "nonce=", "state=oidc_test.", "response_type=code"] {
        assert!(auth_url.contains(part), "{part} missing in {auth_url}");
    }
    let callback_url = urls.iter().find(|u| u.starts_with(&callback)).expect("came back to the callback").clone();
    assert!(callback_url.contains("code="), "{callback_url}");

    // The session holds: no new trip to the provider.
    let before = visited.lock().unwrap().len();
    assert_eq!(text_of(&browser, &app, &[]).await.0, 200);
    assert_eq!(visited.lock().unwrap().len(), before, "no redirect with a session");

    // Replaying the callback (same state, same code) is refused.
    let (code, body) = text_of(&browser, &callback_url, &[]).await;
    assert_eq!(code, 400, "replayed state: {body}");
    assert!(body.contains("already used"), "{body}");

    // The allow-lists: alice (alice@example.com, group ops) is not on oidc_picky's lists, but
    // in oidc_ops's group.
    let (code, body) = text_of(&browser, &b.https_url("localhost", "/picky/"), &[]).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("not allowed"), "{body}");
    let (code, body) = text_of(&browser, &b.https_url("localhost", "/ops/"), &[]).await;
    assert_eq!(code, 200, "{body}");

    // Logout (back to the app): the session is gone, so the app sends the browser to the
    // provider again (which still knows alice and logs her in at once).
    let before = visited.lock().unwrap().len();
    let logout = b.https_url("localhost", "/_berth/logout?next=%2Fsso%2Fpage");
    assert_eq!(text_of(&browser, &logout, &[]).await.0, 200);
    let after: Vec<String> = visited.lock().unwrap()[before..].to_vec();
    assert!(after.iter().any(|u| u.starts_with(&format!("{}/auth?", idp.issuer()))), "{after:?}");

    // A login started in one browser and finished in another is refused (login CSRF).
    let starter = cookie_client(false);
    let start = b.https_url("localhost", "/_berth/login?provider=oidc_test&next=%2Fsso%2F");
    let started = starter.get(&start).send().await.unwrap();
    assert_eq!(started.status(), 303);
    let to_idp = started.headers()["location"].to_str().unwrap().to_string();
    assert!(to_idp.starts_with(&idp.issuer()), "{to_idp}");
    let (other, _) = self::browser();
    let (code, body) = text_of(&other, &to_idp, &[]).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("started in another browser"), "{body}");
}

#[tokio::test]
async fn oidc_refuses_wrong_issuer_expired_token_and_bad_signature() {
    let upstream = header_echo().await;
    let mut b = Berth::configure("");
    let callback = b.https_url("localhost", "/_berth/auth/callback");
    let (wrong_issuer, expired, bad_signature) = tokio::join!(
        OidcProvider::start(&callback, &[("ISSUER_HOST", "localhost")]),
        OidcProvider::start(&callback, &[("ID_TOKEN_MODE", "expired")]),
        OidcProvider::start(&callback, &[("ID_TOKEN_MODE", "badsig")]),
    );
    // Berth is told the issuer `http://127.0.0.1:<port>`; that provider's discovery document
    // says it is `http://localhost:<port>`.
    let mismatched = wrong_issuer.issuer();
    let config = [
        provider_toml("oidc_wrongiss", &mismatched, ""),
        provider_toml("oidc_expired", &expired.issuer(), ""),
        provider_toml("oidc_badsig", &bad_signature.issuer(), ""),
    ]
    .concat();
    append_config(&b, &config);
    b.start_server_with_env(&[(OIDC_SECRET_ENV, "berth-secret")]);
    for name in ["wrongiss", "expired", "badsig"] {
        assert!(create_proxy(&b, upstream, &format!("/{name}"), &["--auth", &format!("oidc_{name}")]).ok());
    }

    let (browser, _) = browser();
    let (code, body) = text_of(&browser, &b.https_url("localhost", "/wrongiss/"), &[]).await;
    assert_eq!(code, 502, "wrong issuer: {body}");
    assert!(body.contains("discovery failed") && body.contains("unexpected issuer URI `http://localhost:"), "{body}");

    let (code, body) = text_of(&browser, &b.https_url("localhost", "/expired/"), &[]).await;
    assert_eq!(code, 401, "expired ID token: {body}");
    assert!(body.contains("ID token rejected") && body.to_lowercase().contains("expire"), "{body}");

    let (code, body) = text_of(&browser, &b.https_url("localhost", "/badsig/"), &[]).await;
    assert_eq!(code, 401, "bad signature: {body}");
    assert!(body.contains("ID token rejected") && body.to_lowercase().contains("signature"), "{body}");

    // None of them left a session behind.
    for name in ["expired", "badsig"] {
        let url = b.https_url("localhost", &format!("/{name}/"));
        assert_eq!(status(&browser, &url, &[("accept", "application/json")]).await, 401, "{name}");
    }
}

/// Appends tables to the server's berth.toml (before it starts).
fn append_config(b: &Berth, text: &str) {
    let path = b.home_path.join("berth.toml");
    let mut toml = std::fs::read_to_string(&path).unwrap();
    toml.push_str(text);
    std::fs::write(&path, toml).unwrap();
}

/// A WebSocket echo upstream on 127.0.0.1; each handshake's `x-berth-user` is sent on `users`.
async fn websocket_echo(users: tokio::sync::mpsc::UnboundedSender<Option<String>>) -> u16 {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let users = users.clone();
            tokio::spawn(async move {
                // tungstenite's callback type fixes the (large) error type.
                #[allow(clippy::result_large_err)]
                let record = |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                    let user = req.headers().get("x-berth-user").map(|v| v.to_str().unwrap_or("").to_string());
                    let _ = users.send(user);
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn websocket_upgrades_need_the_session_and_carry_the_identity() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let (users_tx, mut users) = tokio::sync::mpsc::unbounded_channel();
    let upstream = websocket_echo(users_tx).await;
    let b = Berth::start();
    let password = first_password(&b);
    assert!(create_proxy(&b, upstream, "/live", &["--auth", "system"]).ok());
    let url = format!("wss://localhost:{}/live/socket", b.https_port);

    // Without a session the upgrade is refused before it reaches the app.
    let req = url.as_str().into_client_request().unwrap();
    match tokio_tungstenite::client_async(req, tls_connect_h1(b.https_port, "localhost").await).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401 without a session, got {other:?}"),
    }
    assert!(users.try_recv().is_err(), "the app saw no handshake");

    // With the session cookie (and a forged user header) it passes, as the logged-in user.
    let client = cookie_client(false);
    let ok = login(&client, &b, &password).await;
    assert_eq!(ok.status(), 303);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut().insert("x-berth-user", "mallory".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tls_connect_h1(b.https_port, "localhost").await)
        .await
        .unwrap_or_else(|e| panic!("WebSocket with a session: {e:?}"));
    assert_eq!(resp.status(), 101);
    assert_eq!(users.recv().await.unwrap().as_deref(), Some("admin"));
    ws.send(Message::Text("ping".into())).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap(), "ping");
}
