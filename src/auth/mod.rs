//! App authentication: a gate between routing's answer (which app) and the proxy. Per app,
//! `auth` is `none`, `system` (the admin user and password, [`password`]) or an OpenID Connect
//! provider `oidc_<name>` ([`oidc`]). A logged-in user holds a session cookie ([`session`]);
//! the identity reaches the app as `X-Berth-User` and `X-Berth-Email`, and copies of those
//! headers sent by clients are always removed. The gate also serves `/_berth/login`,
//! `/_berth/logout` and `/_berth/auth/callback` on every host.

pub mod oidc;
pub mod password;
pub mod session;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;

pub use oidc::OidcProviderConfig;

use crate::config::{Config, Home};
use crate::proxy::body::{full, ProxyBody};
use crate::proxy::{error_response, ClientInfo};
use session::Session;

pub const USER_HEADER: HeaderName = HeaderName::from_static("x-berth-user");
pub const EMAIL_HEADER: HeaderName = HeaderName::from_static("x-berth-email");
pub const LOGIN_PATH: &str = "/_berth/login";
pub const LOGOUT_PATH: &str = "/_berth/logout";
pub const CALLBACK_PATH: &str = "/_berth/auth/callback";

/// The app config key (`--conf auth=...`, `--auth`, `update-metadata auth`) holding an app's auth.
pub const APP_CONFIG_KEY: &str = "auth";

/// The provider name of the system (admin password) login.
const SYSTEM: &str = "system";

/// Bound for reading a login form.
const FORM_LIMIT: usize = 16 * 1024;
const FORM_TIMEOUT: Duration = Duration::from_secs(10);
/// Password checks running at once (each argon2 check takes about 19 MiB and tens of ms of
/// CPU); more logins wait, so a flood of them cannot take the machine's memory.
const CONCURRENT_PASSWORD_CHECKS: usize = 4;

/// Who may reach an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthPolicy {
    None,
    System,
    /// An `[auth.oidc_<name>]` provider, by its entry name.
    Oidc(String),
}

impl AuthPolicy {
    /// The policy for an app's `auth` setting (`None`/`default`: `[security] app_default_auth`).
    /// An OIDC provider must be configured.
    pub fn resolve(setting: Option<&str>, config: &Config) -> Result<AuthPolicy, String> {
        let value = match setting.map(str::trim) {
            None | Some("") | Some("default") => config.security.app_default_auth.trim(),
            Some(v) => v,
        };
        match value {
            "" | "none" => Ok(AuthPolicy::None),
            SYSTEM => Ok(AuthPolicy::System),
            name if name.starts_with("oidc_") && config.auth.contains_key(name) => Ok(AuthPolicy::Oidc(name.into())),
            name => {
                let known: Vec<&str> = config.auth.keys().map(String::as_str).collect();
                Err(format!(
                    "invalid authentication type {name:?}: use none, system or a configured [auth.oidc_<name>] provider{}",
                    if known.is_empty() { " (none configured)".to_string() } else { format!(" ({})", known.join(", ")) }
                ))
            }
        }
    }

    /// The name shown and stored (`none`, `system`, `oidc_<name>`).
    pub fn name(&self) -> &str {
        match self {
            AuthPolicy::None => "none",
            AuthPolicy::System => SYSTEM,
            AuthPolicy::Oidc(name) => name,
        }
    }
}

/// The identity a request carries to the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub email: Option<String>,
}

/// The gate: the cookie key, the system login and the OIDC providers.
pub struct Auth {
    home: Home,
    key: cookie::Key,
    system_lifetime: Duration,
    providers: BTreeMap<String, oidc::Provider>,
    password_checks: tokio::sync::Semaphore,
    password_generation: std::sync::Mutex<Option<(std::time::SystemTime, String)>>,
}

impl Auth {
    /// Loads (or makes, at first start) the cookie key and the admin password; a new password
    /// is printed once on stdout.
    pub fn load(home: &Home, config: &Config) -> anyhow::Result<Auth> {
        let key = session::load_key(home)?;
        if let Some(password) = password::ensure(home)? {
            println!("Admin user    : {}\nAdmin password: {password}", password::ADMIN_USER);
            println!("(printed once; `berth server password` makes a new one)");
        }
        let mut providers = BTreeMap::new();
        for (name, provider) in &config.auth {
            anyhow::ensure!(name.starts_with("oidc_"), "[auth.{name}]: provider names start with oidc_");
            providers.insert(name.clone(), oidc::Provider::new(name, provider)?);
        }
        Ok(Auth {
            home: home.clone(),
            key,
            system_lifetime: Duration::from_secs(config.security.session_lifetime_secs.max(1)),
            providers,
            password_checks: tokio::sync::Semaphore::new(CONCURRENT_PASSWORD_CHECKS),
            password_generation: std::sync::Mutex::new(None),
        })
    }

    /// Whether `path` is one of the gate's own pages.
    pub fn owns(path: &str) -> bool {
        matches!(path, LOGIN_PATH | LOGOUT_PATH | CALLBACK_PATH)
    }

    /// Serves the gate's own pages: the login form and its POST, logout, the OIDC callback.
    pub async fn handle(&self, req: Request<Incoming>, client: ClientInfo) -> Response<ProxyBody> {
        if !client.https {
            return error_response(StatusCode::FORBIDDEN, "log in over HTTPS");
        }
        let next = query_param(&req, "next").map(|n| safe_next(&n)).unwrap_or_else(|| "/".into());
        match (req.method().clone(), req.uri().path()) {
            (Method::GET, LOGIN_PATH) => match query_param(&req, "provider") {
                Some(name) if name != SYSTEM => match self.providers.get(&name) {
                    Some(p) => p.start(&req, &next).await,
                    None => error_response(StatusCode::NOT_FOUND, &format!("no auth provider {name}")),
                },
                _ => login_page(&next, None),
            },
            (Method::POST, LOGIN_PATH) => self.password_login(req).await,
            (_, LOGOUT_PATH) => {
                let mut resp = redirect(&next);
                for name in session::session_cookie_names(req.headers()) {
                    append_set_cookie(&mut resp, &session::clear_cookie(name));
                }
                resp
            }
            (Method::GET, CALLBACK_PATH) => {
                let result = match oidc::callback_provider(&req).and_then(|n| self.providers.get(&n)) {
                    Some(p) => p.callback(&req).await,
                    None => Err(oidc::CallbackError::UnknownState),
                };
                match result {
                    Ok((session, lifetime, next)) => {
                        let mut resp = redirect(&next);
                        append_set_cookie(&mut resp, &session::set_cookie(&self.key, &session, lifetime));
                        append_set_cookie(&mut resp, &session::clear_cookie(oidc::STATE_COOKIE.into()));
                        resp
                    }
                    Err(e) => {
                        tracing::info!("OIDC login refused: {e}");
                        error_response(e.status(), &format!("login failed: {e}"))
                    }
                }
            }
            _ => error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        }
    }

    async fn password_login(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        #[derive(Deserialize)]
        struct Form {
            #[serde(default)]
            user: Option<String>,
            password: String,
            #[serde(default)]
            next: Option<String>,
        }
        let body = match read_form(req.into_body()).await {
            Ok(b) => b,
            Err(e) => return error_response(StatusCode::BAD_REQUEST, &e),
        };
        let form: Form = match serde_urlencoded::from_bytes(&body) {
            Ok(f) => f,
            Err(e) => return error_response(StatusCode::BAD_REQUEST, &format!("bad login form: {e}")),
        };
        let next = safe_next(form.next.as_deref().unwrap_or("/"));
        let user = form.user.unwrap_or_else(|| password::ADMIN_USER.into());
        let (home, password) = (self.home.clone(), form.password);
        let checked_user = user.clone();
        // argon2 is deliberately slow: off the async workers, a few at a time.
        let Ok(_slot) = self.password_checks.acquire().await else {
            return error_response(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down");
        };
        let ok = tokio::task::spawn_blocking(move || password::check(&home, &checked_user, &password))
            .await
            .unwrap_or(false);
        if !ok {
            let mut resp = login_page(&next, Some("Wrong user or password."));
            *resp.status_mut() = StatusCode::UNAUTHORIZED;
            return resp;
        }
        let s = Session {
            user,
            email: None,
            provider: SYSTEM.into(),
            expires: session::now_secs() + self.system_lifetime.as_secs(),
            password: password::generation(&self.home, &self.password_generation),
        };
        let mut resp = redirect(&next);
        append_set_cookie(&mut resp, &session::set_cookie(&self.key, &s, self.system_lifetime));
        resp
    }

    /// Lets a request to an app with `policy` through (with the identity to pass on) or
    /// answers it: a browser is sent to the login, anything else gets 401.
    pub fn authorize<B>(
        &self,
        req: &Request<B>,
        policy: &AuthPolicy,
        client: ClientInfo,
    ) -> Result<Option<Identity>, Box<Response<ProxyBody>>> {
        let provider = match policy {
            AuthPolicy::None => return Ok(None),
            AuthPolicy::System => SYSTEM,
            AuthPolicy::Oidc(name) => name.as_str(),
        };
        if let Some(s) = session::read(&self.key, req.headers(), provider) {
            let current = match policy {
                AuthPolicy::System => s.password == password::generation(&self.home, &self.password_generation),
                _ => true,
            };
            if current {
                return Ok(Some(Identity { user: s.user, email: s.email }));
            }
        }
        if !client.https {
            return Err(Box::new(error_response(StatusCode::FORBIDDEN, "this app needs a login: use HTTPS")));
        }
        if !wants_html(req.headers()) {
            let mut resp = error_response(StatusCode::UNAUTHORIZED, "authentication required");
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Cookie realm=\"berth\""));
            return Err(Box::new(resp));
        }
        let next = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut location = format!("{LOGIN_PATH}?next={}", encode(next));
        if let AuthPolicy::Oidc(name) = policy {
            location.push_str(&format!("&provider={}", encode(name)));
        }
        Err(Box::new(redirect(&location)))
    }
}

/// Removes client-sent identity headers (every request, whatever the app's auth).
pub fn strip_identity(headers: &mut HeaderMap) {
    headers.remove(USER_HEADER);
    headers.remove(EMAIL_HEADER);
}

/// Puts the identity on the request forwarded to the app.
pub fn set_identity(headers: &mut HeaderMap, identity: Option<Identity>) {
    let Some(id) = identity else { return };
    if let Ok(v) = HeaderValue::from_str(&id.user) {
        headers.insert(USER_HEADER, v);
    }
    if let Some(Ok(v)) = id.email.as_deref().map(HeaderValue::from_str) {
        headers.insert(EMAIL_HEADER, v);
    }
}

/// Browsers (Accept: text/html) get pages and redirects; other clients get status codes.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html"))
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// `next` only ever points back into this host (no `//host` or scheme: no open redirect).
fn safe_next(next: &str) -> String {
    if next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\") && !next.contains(['\r', '\n']) {
        next.to_string()
    } else {
        "/".into()
    }
}

fn query_param<B>(req: &Request<B>, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.uri().query().unwrap_or("")).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

async fn read_form(body: Incoming) -> Result<Bytes, String> {
    let limited = http_body_util::Limited::new(body, FORM_LIMIT);
    match tokio::time::timeout(FORM_TIMEOUT, limited.collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) => Err(format!("cannot read the login form: {e}")),
        Err(_) => Err("the login form was not sent in time".into()),
    }
}

fn redirect(location: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(crate::proxy::body::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn append_set_cookie(resp: &mut Response<ProxyBody>, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn login_page(next: &str, error: Option<&str>) -> Response<ProxyBody> {
    let error = error.map(|e| format!("<p style=\"color:#b00\">{}</p>", html_escape(e))).unwrap_or_default();
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>Log in</title></head><body style=\"font-family:sans-serif;margin:3em;max-width:24em\">\
         <h1>Log in</h1>{error}<form method=\"post\" action=\"{LOGIN_PATH}\">\
         <p><label>User<br><input name=\"user\" value=\"admin\" autocomplete=\"username\"></label></p>\
         <p><label>Password<br><input name=\"password\" type=\"password\" autocomplete=\"current-password\" autofocus></label></p>\
         <input type=\"hidden\" name=\"next\" value=\"{}\"><p><button type=\"submit\">Log in</button></p>\
         </form></body></html>\n",
        html_escape(next)
    );
    let mut resp = Response::new(full(html));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_resolution_and_refusal() {
        let mut c = Config::default();
        assert_eq!(AuthPolicy::resolve(None, &c), Ok(AuthPolicy::None));
        assert_eq!(AuthPolicy::resolve(Some("system"), &c), Ok(AuthPolicy::System));
        let err = AuthPolicy::resolve(Some("oidc_corp"), &c).unwrap_err();
        assert!(err.contains("invalid authentication type \"oidc_corp\""), "{err}");
        assert!(AuthPolicy::resolve(Some("github"), &c).is_err());
        c.security.app_default_auth = "system".into();
        assert_eq!(AuthPolicy::resolve(Some("default"), &c), Ok(AuthPolicy::System));
        assert_eq!(AuthPolicy::resolve(Some("none"), &c), Ok(AuthPolicy::None));
        c.auth.insert("oidc_corp".into(), toml::from_str("issuer = \"https://idp\"\nclient_id = \"x\"").unwrap());
        assert_eq!(AuthPolicy::resolve(Some("oidc_corp"), &c), Ok(AuthPolicy::Oidc("oidc_corp".into())));
    }

    #[test]
    fn next_stays_on_this_host() {
        assert_eq!(safe_next("/app/x?y=1"), "/app/x?y=1");
        for bad in ["//evil.example/", "https://evil.example/", "/\\evil", "evil"] {
            assert_eq!(safe_next(bad), "/", "{bad}");
        }
    }

    #[test]
    fn identity_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(USER_HEADER, HeaderValue::from_static("mallory"));
        h.insert(EMAIL_HEADER, HeaderValue::from_static("m@evil"));
        strip_identity(&mut h);
        assert!(h.get(USER_HEADER).is_none() && h.get(EMAIL_HEADER).is_none());
        set_identity(&mut h, Some(Identity { user: "alice".into(), email: Some("a@example.com".into()) }));
        assert_eq!(h.get(USER_HEADER).unwrap(), "alice");
        assert_eq!(h.get(EMAIL_HEADER).unwrap(), "a@example.com");
    }
}
