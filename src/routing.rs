//! The route table: (host, path) → app. Built whole from the app list and swapped atomically
//! on every change, so a lookup is a hash probe plus a short scan and never waits on I/O.

use std::collections::HashMap;
use std::sync::Arc;

use crate::app_path::path_has_prefix;

/// Maps hosts and path prefixes to a value (an app at run time).
pub struct RouteTable<T> {
    default_domain: String,
    /// Per host: (path, value), longest path first.
    hosts: HashMap<String, Vec<(String, Arc<T>)>>,
}

impl<T> RouteTable<T> {
    /// `routes` holds (domain, path, value); an empty domain means the default domain.
    pub fn build(default_domain: &str, routes: impl IntoIterator<Item = (String, String, Arc<T>)>) -> Self {
        let mut hosts: HashMap<String, Vec<(String, Arc<T>)>> = HashMap::new();
        for (domain, path, value) in routes {
            let host = if domain.is_empty() { default_domain.to_string() } else { domain };
            hosts.entry(host).or_default().push((path, value));
        }
        for list in hosts.values_mut() {
            list.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        }
        RouteTable { default_domain: default_domain.to_string(), hosts }
    }

    pub fn empty(default_domain: &str) -> Self {
        Self::build(default_domain, std::iter::empty())
    }

    /// The app for a request: `host` as sent (any port is ignored; `127.0.0.1` and `::1` mean
    /// the default domain), then the longest app path that is a whole-segment prefix of `path`.
    /// Returns the app and its path.
    pub fn lookup(&self, host: &str, path: &str) -> Option<(&Arc<T>, &str)> {
        let host = normalize_host(host);
        let host = match host.as_str() {
            "127.0.0.1" | "::1" | "[::1]" | "" => self.default_domain.as_str(),
            h => h,
        };
        self.hosts
            .get(host)?
            .iter()
            .find(|(prefix, _)| path_has_prefix(path, prefix))
            .map(|(prefix, app)| (app, prefix.as_str()))
    }

    pub fn len(&self) -> usize {
        self.hosts.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Lower-cases a Host header value and drops its port and a trailing dot. An IPv6 address
/// comes in brackets (`[::1]:8443`); written bare it has no port.
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else if host.matches(':').count() > 1 {
        host
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        }
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable<&'static str> {
        RouteTable::build(
            "localhost",
            [
                ("".into(), "/a".into(), Arc::new("a")),
                ("".into(), "/a/b".into(), Arc::new("ab")),
                ("x.localhost".into(), "/".into(), Arc::new("x")),
            ],
        )
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let t = table();
        assert_eq!(**t.lookup("localhost", "/a").unwrap().0, "a");
        assert_eq!(**t.lookup("localhost:8443", "/a/c").unwrap().0, "a");
        assert_eq!(**t.lookup("LOCALHOST", "/a/b/c").unwrap().0, "ab");
        assert_eq!(t.lookup("localhost", "/a/b").unwrap().1, "/a/b");
        assert!(t.lookup("localhost", "/ab").is_none());
        assert!(t.lookup("localhost", "/").is_none());
    }

    #[test]
    fn hosts() {
        let t = table();
        assert_eq!(**t.lookup("x.localhost:25223", "/anything").unwrap().0, "x");
        assert_eq!(**t.lookup("127.0.0.1:80", "/a").unwrap().0, "a");
        assert_eq!(**t.lookup("[::1]:80", "/a").unwrap().0, "a");
        assert!(t.lookup("unknown.example", "/a").is_none(), "unknown hosts are not mapped to the default domain");
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn host_normalization() {
        assert_eq!(normalize_host("Ex.COM.:443"), "ex.com");
        assert_eq!(normalize_host("[::1]:8080"), "::1");
        assert_eq!(normalize_host("a.localhost"), "a.localhost");
        assert_eq!(normalize_host("::1"), "::1", "a bare IPv6 address has no port to drop");
        assert_eq!(normalize_host("FE80::1:80"), "fe80::1:80");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(host in "\\PC{0,40}") {
                let _ = normalize_host(&host);
                let _ = table().lookup(&host, "/a");
            }

            #[test]
            fn ports_case_and_trailing_dot_do_not_matter(
                name in "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z0-9]{1,8}){0,3}",
                port in proptest::option::of(any::<u16>()),
                dot in any::<bool>(),
                upper in any::<bool>(),
            ) {
                let mut host = if upper { name.to_ascii_uppercase() } else { name.clone() };
                if dot { host.push('.'); }
                if let Some(port) = port { host = format!("{host}:{port}"); }
                prop_assert_eq!(normalize_host(&host), name.clone());
                prop_assert_eq!(normalize_host(&normalize_host(&host)), name);
            }

            #[test]
            fn ipv6_in_brackets(ip in any::<std::net::Ipv6Addr>(), port in proptest::option::of(any::<u16>())) {
                let host = match port {
                    Some(port) => format!("[{ip}]:{port}"),
                    None => format!("[{ip}]"),
                };
                prop_assert_eq!(normalize_host(&host), ip.to_string());
                prop_assert_eq!(normalize_host(&ip.to_string()), ip.to_string());
            }
        }
    }
}
