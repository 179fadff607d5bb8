//! Session cookies: the identity, its provider and its expiry, encrypted and authenticated
//! with AES-256-GCM (the `cookie` crate's private jar, keyed from `$BERTH_HOME/auth/session.key`).
//! One cookie per provider (`berth_session_system`, `berth_session_oidc_<name>`); the cookie's
//! name is part of the authenticated data, so a cookie of one provider never opens another's
//! apps. Every cookie is `Secure`, `HttpOnly`, `SameSite=Lax`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cookie::{Cookie, CookieJar, Key, SameSite};
use http::header::{self, HeaderMap};
use serde::{Deserialize, Serialize};

use crate::config::Home;

const COOKIE_PREFIX: &str = "berth_session_";

/// Who is logged in, through which provider, until when (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    pub email: Option<String>,
    pub provider: String,
    pub expires: u64,
    /// For system logins: which admin password it was made with
    /// ([`super::password::generation`]); a new password ends older sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The session cookie's name for a provider.
pub fn cookie_name(provider: &str) -> String {
    format!("{COOKIE_PREFIX}{provider}")
}

/// Reads the cookie key, making a random one at first start.
pub fn load_key(home: &Home) -> anyhow::Result<Key> {
    let path = home.auth_dir().join("session.key");
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() >= 64 => Ok(Key::from(&bytes[..64])),
        Ok(_) => anyhow::bail!("{} is too short: remove it to make a new one (logs everyone out)", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Key::generate();
            super::password::write_private(&path, key.master())?;
            Ok(key)
        }
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// The jar of the request's cookies.
pub fn request_jar(headers: &HeaderMap) -> CookieJar {
    let mut jar = CookieJar::new();
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for c in Cookie::split_parse(value.to_string()).flatten() {
            jar.add_original(c.into_owned());
        }
    }
    jar
}

/// The valid, unexpired session of `provider` in the request, if any.
pub fn read(key: &Key, headers: &HeaderMap, provider: &str) -> Option<Session> {
    let jar = request_jar(headers);
    let cookie = jar.private(key).get(&cookie_name(provider))?;
    let session: Session = serde_json::from_str(cookie.value()).ok()?;
    (session.provider == provider && session.expires > now_secs()).then_some(session)
}

/// The `Set-Cookie` value that stores `session` for `lifetime`.
pub fn set_cookie(key: &Key, session: &Session, lifetime: Duration) -> String {
    let value = serde_json::to_string(session).expect("a session serializes");
    let mut jar = CookieJar::new();
    jar.private_mut(key).add(secure_cookie(cookie_name(&session.provider), value, lifetime));
    jar.delta().next().expect("one cookie added").to_string()
}

/// The `Set-Cookie` value that removes `name`.
pub fn clear_cookie(name: String) -> String {
    secure_cookie(name, String::new(), Duration::ZERO).to_string()
}

/// Every session cookie name in the request (for logout).
pub fn session_cookie_names(headers: &HeaderMap) -> Vec<String> {
    request_jar(headers).iter().map(|c| c.name().to_string()).filter(|n| n.starts_with(COOKIE_PREFIX)).collect()
}

/// A `Secure; HttpOnly; SameSite=Lax; Path=/` cookie with `Max-Age`.
pub fn secure_cookie(name: String, value: String, lifetime: Duration) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX)))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers_with(set_cookie: &str) -> HeaderMap {
        let pair = set_cookie.split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("other=1; {pair}")).unwrap());
        h
    }

    #[test]
    fn round_trip_flags_tamper_expiry_and_provider() {
        let key = Key::generate();
        let s = Session {
            user: "admin".into(),
            email: None,
            provider: "system".into(),
            expires: now_secs() + 60,
            password: Some("g1".into()),
        };
        let set = set_cookie(&key, &s, Duration::from_secs(60));
        for flag in ["Secure", "HttpOnly", "SameSite=Lax", "Max-Age=60", "Path=/"] {
            assert!(set.contains(flag), "{flag} missing in {set}");
        }
        assert!(!set.contains("admin"), "the value is encrypted: {set}");
        assert_eq!(read(&key, &headers_with(&set), "system"), Some(s.clone()));
        assert_eq!(read(&Key::generate(), &headers_with(&set), "system"), None, "another key");
        assert_eq!(
            read(&key, &headers_with(&set.replacen("berth_session_system", "berth_session_oidc_x", 1)), "oidc_x"),
            None
        );
        let tampered = {
            let (name, rest) = set.split_once('=').unwrap();
            let flip = if rest.starts_with('A') { 'B' } else { 'A' };
            format!("{name}={flip}{}", &rest[1..])
        };
        assert_eq!(read(&key, &headers_with(&tampered), "system"), None);
        let old = Session { expires: now_secs() - 1, ..s };
        assert_eq!(read(&key, &headers_with(&set_cookie(&key, &old, Duration::from_secs(60))), "system"), None);
    }
}
