//! Header rules for forwarding: hop-by-hop headers removed, client-sent forwarding headers
//! replaced by berth's own (`X-Forwarded-*`, `X-Real-IP`, `Forwarded`), upgrade
//! detection. Pure functions over `HeaderMap`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, not the message (RFC 9110 7.6.1). Named by
/// `HeaderName` constants: removing by `&str` parses and hashes the name on every request.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The `Upgrade` value when the request asks to switch protocols (`Connection: upgrade`).
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if wants {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass of name comparisons finds which are there (usually none, or `Connection`).
    let mut present = [false; HOP_BY_HOP.len()];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // `close` and `keep-alive` (the usual tokens) name no header to remove.
        .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, there)| *there) {
        headers.remove(name);
    }
}

/// The forwarding headers a client may send; berth removes them all and sets its own, so an
/// app never sees a client-chosen address, scheme, host, port or prefix.
static FORWARDING: [HeaderName; 7] = [
    header::FORWARDED,
    X_FORWARDED_FOR,
    X_FORWARDED_HOST,
    X_FORWARDED_PORT,
    X_FORWARDED_PREFIX,
    X_FORWARDED_PROTO,
    X_REAL_IP,
];
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// What berth knows about the client side of a request, as forwarding headers tell it.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    pub client: IpAddr,
    pub https: bool,
    /// The port the client connected to.
    pub port: u16,
    /// The Host the client asked for.
    pub host: Option<&'a HeaderValue>,
    /// The app path (`X-Forwarded-Prefix` below the root, none at `/`).
    pub prefix: &'a str,
}

/// Replaces every client-sent forwarding header by berth's own: `X-Forwarded-For`,
/// `X-Real-IP`, `-Proto`, `-Host`, `-Port`, `Forwarded` (RFC 7239) and, below the root, `-Prefix`.
pub fn set_forwarded(headers: &mut HeaderMap, fwd: &Forwarding) {
    if headers.keys().any(|name| FORWARDING.contains(name)) {
        for name in &FORWARDING {
            headers.remove(name);
        }
    }
    let proto = if fwd.https { "https" } else { "http" };
    let client_text = fwd.client.to_string();
    let client_text = client_text.as_str();
    let client = HeaderValue::from_str(client_text).expect("an IP address is a valid header value");
    headers.insert(X_FORWARDED_FOR, client.clone());
    headers.insert(X_REAL_IP, client);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    headers.insert(X_FORWARDED_PORT, HeaderValue::from(fwd.port));
    if let Some(host) = fwd.host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    if fwd.prefix != "/" {
        if let Ok(v) = HeaderValue::from_str(fwd.prefix) {
            headers.insert(X_FORWARDED_PREFIX, v);
        }
    }
    let host = fwd.host.and_then(|h| h.to_str().ok());
    let mut forwarded = String::with_capacity(48 + host.map_or(0, str::len));
    forwarded.push_str("for=");
    match fwd.client {
        IpAddr::V4(_) => forwarded.push_str(client_text),
        IpAddr::V6(_) => {
            forwarded.push_str("\"[");
            forwarded.push_str(client_text);
            forwarded.push_str("]\"");
        }
    }
    forwarded.push_str(";proto=");
    forwarded.push_str(proto);
    if let Some(host) = host {
        forwarded.push_str(";host=\"");
        forwarded.extend(host.chars().filter(|c| *c != '"' && *c != '\\'));
        forwarded.push('"');
    }
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, v);
    }
}

/// The request path as the upstream sees it: the app path stripped (when asked), then
/// appended to the upstream's base path. Keeps the query.
pub fn upstream_path(path_and_query: &str, strip: &str, base: &str) -> String {
    let rest =
        if strip != "/" && path_and_query.starts_with(strip) { &path_and_query[strip.len()..] } else { path_and_query };
    let rest = if rest.is_empty() || rest.starts_with('?') { format!("/{rest}") } else { rest.to_string() };
    let base = base.trim_end_matches('/');
    format!("{base}{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));

        // An upstream's usual `Connection: keep-alive` (and `Keep-Alive`) go, the rest stays.
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("content-length", HeaderValue::from_static("5"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["content-length"]);
    }

    #[test]
    fn upgrade_needs_connection_token() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(upgrade_protocol(&h).is_none());
        h.insert("connection", HeaderValue::from_static("keep-alive, Upgrade"));
        assert_eq!(upgrade_protocol(&h).unwrap(), "websocket");
    }

    #[test]
    fn client_forwarding_headers_are_replaced() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-port", "1"),
            ("x-forwarded-prefix", "/evil"),
            ("x-real-ip", "10.0.0.2"),
            ("forwarded", "for=10.0.0.3"),
        ] {
            h.append(name, HeaderValue::from_static(value));
        }
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.4"));
        let host = HeaderValue::from_static("app.localhost:25223");
        let fwd = |prefix| Forwarding {
            client: "127.0.0.1".parse().unwrap(),
            https: false,
            port: 25222,
            host: Some(&host),
            prefix,
        };
        set_forwarded(&mut h, &fwd("/app"));
        let all = |h: &HeaderMap, name: &str| {
            h.get_all(name).iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>()
        };
        assert_eq!(all(&h, "x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(all(&h, "x-real-ip"), ["127.0.0.1"]);
        assert_eq!(all(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["app.localhost:25223"]);
        assert_eq!(all(&h, "x-forwarded-port"), ["25222"]);
        assert_eq!(all(&h, "x-forwarded-prefix"), ["/app"]);
        assert_eq!(all(&h, "forwarded"), ["for=127.0.0.1;proto=http;host=\"app.localhost:25223\""]);

        // At the root a client's prefix is removed, not passed on.
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-prefix", HeaderValue::from_static("/evil"));
        set_forwarded(&mut h, &fwd("/"));
        assert!(!h.contains_key("x-forwarded-prefix"));

        let mut h = HeaderMap::new();
        let v6 = Forwarding { client: "::1".parse().unwrap(), https: true, port: 443, host: None, prefix: "/" };
        set_forwarded(&mut h, &v6);
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=https");
        assert_eq!(h["x-forwarded-for"], "::1");
    }

    #[test]
    fn paths() {
        assert_eq!(upstream_path("/app/x?q=1", "/app", ""), "/x?q=1");
        assert_eq!(upstream_path("/app", "/app", ""), "/");
        assert_eq!(upstream_path("/app?q", "/app", ""), "/?q");
        assert_eq!(upstream_path("/x", "/", ""), "/x");
        assert_eq!(upstream_path("/app/x", "/app", "/base/"), "/base/x");
    }
}
