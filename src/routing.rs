//! The route table: (host, path) → app. Lookups never lock or wait: the table is immutable
//! and swapped atomically (`ArcSwap` in `apps`) on every change. A change does not rebuild it:
//! [`RouteTable::updated`] makes a new table that shares every untouched shard with the old
//! one, so creating or deleting one app costs the same with 10 or 10,000 apps. Routes sit in
//! hash maps keyed by (host, app path), split into [`SHARDS`] shards by a hash of the key. A
//! lookup probes the request path's segment-aligned prefixes, longest first, so its cost
//! depends on the request path's depth and not on the number of apps.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Shards of a table: an update copies one shard's map (about routes / `SHARDS` entries) and
/// the list of shard pointers.
pub const SHARDS: usize = 256;

/// Maps hosts and path prefixes to a value (an app at run time).
pub struct RouteTable<T> {
    default_domain: Arc<str>,
    shards: Vec<Arc<Shard<T>>>,
    /// `depths[n]`: how many routes have an app path with `n` slashes. Prefixes of a request
    /// path deeper than the deepest app path are never probed.
    depths: Vec<usize>,
    len: usize,
}

type Shard<T> = HashMap<RouteKey, Arc<T>>;

/// A route's key: the host (the default domain for apps without one) and the app path.
#[derive(Clone, PartialEq, Eq)]
struct RouteKey {
    host: Arc<str>,
    path: Arc<str>,
}

/// (host, path) as borrowed strings: the key a lookup probes with, without allocating.
trait KeyView {
    fn parts(&self) -> (&str, &str);
}

impl KeyView for RouteKey {
    fn parts(&self) -> (&str, &str) {
        (&self.host, &self.path)
    }
}

impl KeyView for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl<'a> Borrow<dyn KeyView + 'a> for RouteKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

impl Hash for dyn KeyView + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state)
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyView + '_ {}

impl Hash for RouteKey {
    /// The same hash as the key's [`KeyView`], so that borrowed probes find it.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state)
    }
}

/// The shard of a key: FNV-1a over host, a separator and path (cheap, and independent of the
/// maps' own randomly seeded hashing).
fn shard_of(host: &str, path: &str) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for b in host.bytes().chain([0xff]).chain(path.bytes()) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (h as usize) % SHARDS
}

fn slashes(path: &str) -> usize {
    path.bytes().filter(|&b| b == b'/').count()
}

impl<T> Clone for RouteTable<T> {
    fn clone(&self) -> Self {
        RouteTable {
            default_domain: self.default_domain.clone(),
            shards: self.shards.clone(),
            depths: self.depths.clone(),
            len: self.len,
        }
    }
}

impl<T> RouteTable<T> {
    /// `routes` holds (domain, path, value); an empty domain means the default domain. Paths
    /// are app paths (they start with `/`). Should a (host, path) pair come twice, the first
    /// one is kept.
    pub fn build(default_domain: &str, routes: impl IntoIterator<Item = (String, String, Arc<T>)>) -> Self {
        let mut shards: Vec<Shard<T>> = (0..SHARDS).map(|_| HashMap::new()).collect();
        let mut table =
            RouteTable { default_domain: default_domain.into(), shards: Vec::new(), depths: Vec::new(), len: 0 };
        for (domain, path, value) in routes {
            let key = table.key(&domain, &path);
            let shard = &mut shards[shard_of(&key.host, &key.path)];
            if let std::collections::hash_map::Entry::Vacant(slot) = shard.entry(key) {
                table.count(&path, 1);
                slot.insert(value);
            }
        }
        table.shards = shards.into_iter().map(Arc::new).collect();
        table
    }

    pub fn empty(default_domain: &str) -> Self {
        Self::build(default_domain, std::iter::empty())
    }

    /// A copy of this table with the routes `remove` ((domain, path), as in [`Self::build`])
    /// taken out, then `insert` put in (replacing a route at the same host and path). Only the
    /// shards these routes fall in are copied; every other shard is shared with `self`.
    pub fn updated<'a>(
        &self,
        remove: impl IntoIterator<Item = (&'a str, &'a str)>,
        insert: impl IntoIterator<Item = (String, String, Arc<T>)>,
    ) -> Self {
        let mut next = self.clone();
        for (domain, path) in remove {
            let host = next.host(domain);
            let shard = Arc::make_mut(&mut next.shards[shard_of(&host, path)]);
            if shard.remove(&(&*host, path) as &dyn KeyView).is_some() {
                next.count(path, -1);
            }
        }
        for (domain, path, value) in insert {
            let key = next.key(&domain, &path);
            let shard = Arc::make_mut(&mut next.shards[shard_of(&key.host, &key.path)]);
            if shard.insert(key, value).is_none() {
                next.count(&path, 1);
            }
        }
        next
    }

    fn host(&self, domain: &str) -> Arc<str> {
        if domain.is_empty() {
            self.default_domain.clone()
        } else {
            domain.into()
        }
    }

    fn key(&self, domain: &str, path: &str) -> RouteKey {
        RouteKey { host: self.host(domain), path: path.into() }
    }

    /// Counts a route at `path` in or out.
    fn count(&mut self, path: &str, delta: isize) {
        let depth = slashes(path);
        if self.depths.len() <= depth {
            self.depths.resize(depth + 1, 0);
        }
        self.depths[depth] = self.depths[depth].saturating_add_signed(delta);
        self.len = self.len.saturating_add_signed(delta);
        while self.depths.last() == Some(&0) {
            self.depths.pop();
        }
    }

    /// The app for a request: `host` as sent (any port is ignored; `127.0.0.1` and `::1` mean
    /// the default domain), then the longest app path that is a whole-segment prefix of `path`
    /// (as [`crate::app_path::path_has_prefix`] defines it). Returns the app and its path.
    pub fn lookup(&self, host: &str, path: &str) -> Option<(&Arc<T>, &str)> {
        let host = normalize_host(host);
        let host = match host.as_str() {
            "127.0.0.1" | "::1" | "[::1]" | "" => &*self.default_domain,
            h => h,
        };
        let probe = |candidate: &str| {
            self.shards[shard_of(host, candidate)]
                .get_key_value(&(host, candidate) as &dyn KeyView)
                .map(|(key, app)| (app, &*key.path))
        };
        // The most `/` an app path holds; `depths` is empty when there are no routes.
        let max_slashes = self.depths.len().checked_sub(1)?;
        // The `/` that ends the deepest prefix worth probing; without one, the whole path is
        // shallow enough to be an app path itself.
        let end = match path.bytes().enumerate().filter(|&(_, b)| b == b'/').nth(max_slashes) {
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

    /// Every route: (host, app path, value), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &Arc<T>)> {
        self.shards.iter().flat_map(|shard| shard.iter()).map(|(key, value)| (&*key.host, &*key.path, value))
    }

    /// The value at exactly (domain, path), `domain` as in [`Self::build`].
    pub fn get(&self, domain: &str, path: &str) -> Option<&Arc<T>> {
        let host = if domain.is_empty() { &*self.default_domain } else { domain };
        self.shards[shard_of(host, path)].get(&(host, path) as &dyn KeyView)
    }

    /// The hosts that have apps (the default domain where an app has none).
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        let hosts: std::collections::BTreeSet<&str> =
            self.shards.iter().flat_map(|shard| shard.keys().map(|key| &*key.host)).collect();
        hosts.into_iter()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `self` and `other` share shard `i` (the same map, not a copy).
    #[cfg(test)]
    pub(crate) fn shares_shard(&self, other: &Self, i: usize) -> bool {
        Arc::ptr_eq(&self.shards[i], &other.shards[i])
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

    #[test]
    fn an_update_copies_only_the_shards_it_touches() {
        let routes = many_apps();
        let before = RouteTable::build("localhost", routes.clone());
        let added = ("".to_string(), "/new-app".to_string(), Arc::new("/new-app".to_string()));
        let after = before.updated([("", "/app0"), ("localhost", "/app0_cl_stage")], [added]);
        assert_eq!((before.len(), after.len()), (20_000, 19_999));
        let touched = [
            shard_of("localhost", "/app0"),
            shard_of("localhost", "/app0_cl_stage"),
            shard_of("localhost", "/new-app"),
        ];
        for i in 0..SHARDS {
            assert_eq!(after.shares_shard(&before, i), !touched.contains(&i), "shard {i}");
        }
        assert!(after.lookup("localhost", "/app0/x").is_none());
        assert!(after.lookup("localhost", "/app0_cl_stage").is_none());
        assert_eq!(after.lookup("localhost", "/new-app/x").unwrap().1, "/new-app");
        assert_eq!(before.lookup("localhost", "/app0/x").unwrap().1, "/app0", "the old table is unchanged");
        assert!(before.lookup("localhost", "/new-app").is_none());
        assert_eq!(after.iter().count(), 19_999);
        assert!(after.iter().all(|(host, path, app)| host == "localhost" && **app == path));
        assert_eq!(after.get("", "/new-app").map(|a| a.as_str()), Some("/new-app"));
        assert_eq!(after.get("localhost", "/new-app").map(|a| a.as_str()), Some("/new-app"));
        assert!(after.get("", "/new-app/x").is_none(), "get is exact, not a prefix lookup");
        // Replacing a route keeps the count; removing one that is not there changes nothing.
        let replaced = after.updated([("", "/nothing-here")], [("".into(), "/new-app".into(), Arc::new("v2".into()))]);
        assert_eq!(replaced.len(), 19_999);
        assert_eq!(**replaced.lookup("localhost", "/new-app").unwrap().0, "v2");
    }

    #[test]
    fn removing_the_deepest_route_stops_probing_that_deep() {
        let t = RouteTable::build("localhost", [("".into(), "/a/b/c".into(), Arc::new("deep"))]);
        assert_eq!(t.depths.len(), 4);
        let t = t.updated([("", "/a/b/c")], [("".into(), "/a".into(), Arc::new("a"))]);
        assert_eq!(t.depths, vec![0, 1]);
        assert_eq!(**t.lookup("localhost", "/a/b/c/d").unwrap().0, "a");
        let t = t.updated([("", "/a")], []);
        assert!(t.is_empty() && t.depths.is_empty());
        assert!(t.lookup("localhost", "/a").is_none());
    }

    #[test]
    fn one_update_costs_far_less_than_a_rebuild() {
        // Creating an app used to rebuild the whole table: with 10,000 apps (20,000 routes)
        // that made bulk creates quadratic. An update copies one or two shards.
        let routes = many_apps();
        let started = std::time::Instant::now();
        let mut t = RouteTable::build("localhost", routes);
        let build = started.elapsed();
        let started = std::time::Instant::now();
        for i in 0..200 {
            let path = format!("/extra{i}");
            t = t.updated([], [(String::new(), path.clone(), Arc::new(path))]);
        }
        let update = started.elapsed() / 200;
        println!("20,000 routes: build {build:?}, one update {update:?}");
        assert_eq!(t.len(), 20_200);
        assert!(update * 10 < build, "an update ({update:?}) is not much cheaper than a build ({build:?})");
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

            /// A table changed route by route routes like one built from the final set.
            #[test]
            fn updates_match_a_fresh_build(
                steps in proptest::collection::vec((app_path(), any::<bool>()), 1..30),
                requests in proptest::collection::vec(request_path(), 1..20),
            ) {
                let mut routes: Vec<(String, &'static str)> = Vec::new();
                let mut t = RouteTable::empty("localhost");
                for (i, (path, add)) in steps.into_iter().enumerate() {
                    let name = ["a", "b", "c", "d", "e", "f"][i % 6];
                    routes.retain(|(p, _)| *p != path);
                    if add {
                        routes.push((path.clone(), name));
                        t = t.updated([], [(String::new(), path, Arc::new(name))]);
                    } else {
                        t = t.updated([("", path.as_str())], []);
                    }
                }
                prop_assert_eq!(t.len(), routes.len());
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
