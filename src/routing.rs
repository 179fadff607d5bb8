//! The route table: (host, path) → app. Built whole from the app list and swapped atomically
//! on every change, so a lookup never waits on I/O. Per host, app paths sit in a hash map; a
//! lookup probes the request path's segment-aligned prefixes, longest first, so its cost
//! depends on the request path's depth and not on the number of apps.

use std::collections::HashMap;
use std::sync::Arc;

/// Maps hosts and path prefixes to a value (an app at run time).
pub struct RouteTable<T> {
    default_domain: String,
    hosts: HashMap<String, HostRoutes<T>>,
    len: usize,
}

/// The app paths of one host.
struct HostRoutes<T> {
    /// App path → value.
    paths: HashMap<String, Arc<T>>,
    /// The most `/` any app path here holds: prefixes of a request path with more are never
    /// probed.
    max_slashes: usize,
}

impl<T> HostRoutes<T> {
    /// The longest app path that is `path` itself or a whole-segment prefix of it (`/` is a
    /// prefix of every path), as [`crate::app_path::path_has_prefix`] defines it.
    fn longest_prefix(&self, path: &str) -> Option<(&String, &Arc<T>)> {
        let probe = |candidate: &str| self.paths.get_key_value(candidate);
        // The `/` that ends the deepest prefix worth probing; without one, the whole path is
        // shallow enough to be an app path itself.
        let end = match path.bytes().enumerate().filter(|&(_, b)| b == b'/').nth(self.max_slashes) {
            Some((i, _)) => i + 1,
            None => {
                if let Some(hit) = probe(path) {
                    return Some(hit);
                }
                path.len()
            }
        };
        let mut rest = &path[..end];
        while let Some(i) = rest.rfind('/') {
            rest = &path[..i];
            if i == 0 {
                break;
            }
            if let Some(hit) = probe(rest) {
                return Some(hit);
            }
        }
        probe("/")
    }
}

impl<T> RouteTable<T> {
    /// `routes` holds (domain, path, value); an empty domain means the default domain. Paths
    /// are app paths (they start with `/`). Should a (host, path) pair come twice, the first
    /// one is kept.
    pub fn build(default_domain: &str, routes: impl IntoIterator<Item = (String, String, Arc<T>)>) -> Self {
        let mut hosts: HashMap<String, HostRoutes<T>> = HashMap::new();
        let mut len = 0;
        for (domain, path, value) in routes {
            let host = if domain.is_empty() { default_domain.to_string() } else { domain };
            let routes = hosts.entry(host).or_insert_with(|| HostRoutes { paths: HashMap::new(), max_slashes: 0 });
            routes.max_slashes = routes.max_slashes.max(path.bytes().filter(|&b| b == b'/').count());
            if let std::collections::hash_map::Entry::Vacant(slot) = routes.paths.entry(path) {
                slot.insert(value);
                len += 1;
            }
        }
        RouteTable { default_domain: default_domain.to_string(), hosts, len }
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
        self.hosts.get(host)?.longest_prefix(path).map(|(prefix, app)| (app, prefix.as_str()))
    }

    /// The hosts that have apps (the default domain where an app has none).
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.len
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

    /// The route table as it was before the per-segment lookup: every app path of the host,
    /// longest first, the first whole-segment prefix wins. The reference for the tests below.
    fn lookup_by_scan<'a>(routes: &'a [(String, &'static str)], path: &str) -> Option<(&'static str, &'a str)> {
        let mut sorted: Vec<&(String, &'static str)> = routes.iter().collect();
        sorted.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        sorted
            .into_iter()
            .find(|(prefix, _)| crate::app_path::path_has_prefix(path, prefix))
            .map(|(prefix, app)| (*app, prefix.as_str()))
    }

    /// 10,000 apps on one domain (5,000 at `/app<i>`, 5,000 at `/team<i % 50>/svc<i>`), each with
    /// its stage, like `Apps` builds them.
    fn many_apps() -> Vec<(String, String, Arc<String>)> {
        (0..10_000)
            .map(|i| if i % 2 == 0 { format!("/app{i}") } else { format!("/team{}/svc{i}", i % 50) })
            .flat_map(|path| {
                let stage = format!("{path}_cl_stage");
                [(String::new(), path.clone(), Arc::new(path)), (String::new(), stage.clone(), Arc::new(stage))]
            })
            .collect()
    }

    #[test]
    fn ten_thousand_apps_every_one_found_near_misses_not() {
        let routes = many_apps();
        let t = RouteTable::build("localhost", routes.clone());
        assert_eq!(t.len(), 20_000);
        for (_, path, _) in &routes {
            for (request, host) in [
                (path.clone(), "localhost"),
                (format!("{path}/"), "127.0.0.1:25222"),
                (format!("{path}/static/js/app.js"), "LOCALHOST."),
                (format!("{path}/a/b/c/d/e/f/g/h?"), "[::1]:8443"),
            ] {
                let (app, prefix) = t.lookup(host, &request).unwrap_or_else(|| panic!("{request} not routed"));
                assert_eq!((app.as_str(), prefix), (path.as_str(), path.as_str()), "{request}");
            }
            for near_miss in [
                format!("{path}x"),
                format!("{path}-"),
                format!("{path}_cl_stagex"),
                path.to_ascii_uppercase(),
                path[..path.len() - 1].to_string(),
                format!("/x{path}"),
            ] {
                if let Some((app, _)) = t.lookup("localhost", &near_miss) {
                    // `/app1` + `0` is `/app10`, another app: then it must be that one.
                    assert_eq!(app.as_str(), near_miss, "{near_miss} routed to {app}");
                }
            }
            assert!(t.lookup("other.localhost", path).is_none());
        }
        for miss in ["/", "/team7", "/team7/", "/team7/svc8", "/team7svc7", "/app", "/app3/x", "/team2/svc1", ""] {
            assert!(t.lookup("localhost", miss).is_none(), "{miss} must not route");
        }
    }

    #[test]
    fn building_ten_thousand_apps_is_fast() {
        let routes = many_apps();
        let started = std::time::Instant::now();
        let t = RouteTable::build("localhost", routes);
        let built = started.elapsed();
        let started = std::time::Instant::now();
        for i in 0..10_000 {
            let path = if i % 2 == 0 { format!("/app{i}/x") } else { format!("/team{}/svc{i}/x", i % 50) };
            assert!(t.lookup("localhost", &path).is_some());
        }
        let looked_up = started.elapsed();
        println!("route table for 10,000 apps (20,000 routes): built in {built:?}, 10,000 lookups in {looked_up:?}");
        // Generous bounds: a debug build on a shared 2-core machine.
        assert!(built < std::time::Duration::from_secs(2), "building took {built:?}");
        assert!(looked_up < std::time::Duration::from_secs(2), "lookups took {looked_up:?}");
    }

    #[test]
    fn root_app_catches_what_no_other_app_takes() {
        let t = RouteTable::build(
            "localhost",
            [
                ("".into(), "/".into(), Arc::new("root")),
                ("".into(), "/_cl_stage".into(), Arc::new("root stage")),
                ("".into(), "/a/b/c/d".into(), Arc::new("deep")),
            ],
        );
        assert_eq!(t.lookup("localhost", "/").unwrap().1, "/");
        assert_eq!(**t.lookup("localhost", "/a/b/c").unwrap().0, "root");
        assert_eq!(**t.lookup("localhost", "/a/b/c/d/e/f/g").unwrap().0, "deep");
        assert_eq!(**t.lookup("localhost", "/_cl_stage/x").unwrap().0, "root stage");
        assert_eq!(**t.lookup("localhost", "*").unwrap().0, "root", "`/` is a prefix of every path");
        assert_eq!(**t.lookup("localhost", "").unwrap().0, "root");
    }

    #[test]
    fn first_of_two_equal_routes_wins() {
        let t = RouteTable::build(
            "localhost",
            [("".into(), "/a".into(), Arc::new("first")), ("localhost".into(), "/a".into(), Arc::new("second"))],
        );
        assert_eq!(**t.lookup("localhost", "/a").unwrap().0, "first");
        assert_eq!(t.len(), 1);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// App paths and request paths over a tiny alphabet, so prefixes collide often.
        fn app_path() -> impl Strategy<Value = String> {
            prop_oneof![
                1 => Just("/".to_string()),
                8 => proptest::collection::vec("[ab]{1,2}", 1..5).prop_map(|segs| format!("/{}", segs.join("/"))),
            ]
        }

        fn request_path() -> impl Strategy<Value = String> {
            prop_oneof![
                8 => proptest::collection::vec("[ab]{0,3}", 0..7).prop_map(|segs| format!("/{}", segs.join("/"))),
                1 => "[ab/*]{0,8}",
            ]
        }

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
            fn segment_lookup_is_the_longest_prefix_scan(
                paths in proptest::collection::vec(app_path(), 0..12),
                requests in proptest::collection::vec(request_path(), 1..20),
            ) {
                let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];
                let mut routes: Vec<(String, &'static str)> = Vec::new();
                for (path, name) in paths.into_iter().zip(names) {
                    if !routes.iter().any(|(p, _)| *p == path) {
                        routes.push((path, name));
                    }
                }
                let t = RouteTable::build(
                    "localhost",
                    routes.iter().map(|(p, n)| (String::new(), p.clone(), Arc::new(*n))),
                );
                for request in &requests {
                    let got = t.lookup("localhost", request).map(|(app, prefix)| (**app, prefix));
                    prop_assert_eq!(got, lookup_by_scan(&routes, request), "request {}", request);
                }
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
