//! App paths: the `[domain:]/path` syntax users type, its validation, the conflict rule between
//! two apps, and the glob syntax used by multi-app commands. Pure logic, no I/O.

use std::fmt;

/// Where an app is served: a domain (empty means the default domain) and a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct AppPath {
    pub domain: String,
    pub path: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AppPathError {
    #[error("invalid app path {0}, expected one \":\"")]
    TooManyColons(String),
    #[error("invalid app path {0}, expected path to start with \"/\"")]
    NoLeadingSlash(String),
    #[error("invalid app path {0}: path cannot contain '{1}'")]
    DotSegment(String, &'static str),
    #[error("invalid app path {0}: path cannot end with '/.'")]
    EndsWithDot(String),
    #[error("invalid app path {0}: last section of path cannot contain _cl_, reserved path")]
    Reserved(String),
    #[error("invalid app path {0}: domain {1} is not a valid host name")]
    BadDomain(String, String),
    #[error("invalid app path {0}: path contains characters that are not allowed (allowed: ASCII letters, digits and -._~!$&'()*+,;=@/)")]
    BadChars(String),
    #[error("invalid app path {0}: path is longer than {MAX_PATH_LEN} bytes")]
    TooLong(String),
}

/// The longest app path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 256;

/// Whether `c` may appear in an app path: the characters a request path carries as they are
/// (RFC 3986 unreserved and sub-delims, `@`, `/`). Anything else (non-ASCII, `%`, spaces)
/// reaches berth percent-encoded, so an app at such a path could never be routed to.
fn allowed_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=@/".contains(c)
}

impl AppPath {
    /// Parses `[domain:]path` as the CLI and API accept it. A domain that ends with `.` gets the
    /// default domain appended (`demo.` becomes `demo.localhost`).
    pub fn parse(input: &str, default_domain: &str) -> Result<AppPath, AppPathError> {
        let path = Self::parse_lookup(input, default_domain)?;
        if !path.path.chars().all(allowed_path_char) {
            return Err(AppPathError::BadChars(input.to_string()));
        }
        if path.path.len() > MAX_PATH_LEN {
            return Err(AppPathError::TooLong(input.to_string()));
        }
        Ok(path)
    }

    /// Like [`AppPath::parse`] without the character set and length rules of new app paths,
    /// for naming an existing app: one created before those rules can still be found and
    /// deleted.
    pub fn parse_lookup(input: &str, default_domain: &str) -> Result<AppPath, AppPathError> {
        let trimmed = input.trim();
        let (domain, path) = match trimmed.split_once(':') {
            None => ("", trimmed),
            Some((d, p)) => {
                if p.contains(':') {
                    return Err(AppPathError::TooManyColons(input.to_string()));
                }
                (d, p)
            }
        };
        let mut domain = domain.trim().to_ascii_lowercase();
        if domain.ends_with('.') {
            domain.push_str(default_domain);
        }
        if !domain.is_empty() && !valid_host(&domain) {
            return Err(AppPathError::BadDomain(input.to_string(), domain));
        }
        let mut path = path.trim().trim_end_matches('/').to_string();
        if path.is_empty() {
            path = "/".to_string();
        }
        if !path.starts_with('/') {
            return Err(AppPathError::NoLeadingSlash(input.to_string()));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control() || "?#%".contains(c)) {
            return Err(AppPathError::BadChars(input.to_string()));
        }
        for bad in ["/..", "../", "/./", "//"] {
            if path.contains(bad) {
                return Err(AppPathError::DotSegment(input.to_string(), bad));
            }
        }
        if path.ends_with("/.") {
            return Err(AppPathError::EndsWithDot(input.to_string()));
        }
        if path.rsplit('/').next().unwrap_or("").contains("_cl_") {
            return Err(AppPathError::Reserved(input.to_string()));
        }
        Ok(AppPath { domain, path })
    }

    /// The domain requests must carry to reach this app.
    pub fn effective_domain<'a>(&'a self, default_domain: &'a str) -> &'a str {
        if self.domain.is_empty() {
            default_domain
        } else {
            &self.domain
        }
    }

    /// Two apps conflict when they share an effective domain and one path is a segment-aligned
    /// prefix of the other (`/` conflicts with every path).
    pub fn conflicts_with(&self, other: &AppPath, default_domain: &str) -> bool {
        self.effective_domain(default_domain) == other.effective_domain(default_domain)
            && (path_has_prefix(&self.path, &other.path) || path_has_prefix(&other.path, &self.path))
    }

    /// Where the app's stage is served: `<path>_cl_stage` (`/_cl_stage` for the root).
    pub fn stage(&self) -> AppPath {
        let path = if self.path == "/" { "/_cl_stage".to_string() } else { format!("{}_cl_stage", self.path) };
        AppPath { domain: self.domain.clone(), path }
    }

    /// `CL_APP_PATH` for the container: the path, or `""` for the root.
    pub fn env_path(&self) -> &str {
        if self.path == "/" {
            ""
        } else {
            &self.path
        }
    }
}

impl fmt::Display for AppPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.domain.is_empty() {
            write!(f, "{}", self.path)
        } else {
            write!(f, "{}:{}", self.domain, self.path)
        }
    }
}

/// True when `prefix` is `path` itself or a whole-segment prefix of it.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    prefix == "/" || path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

fn valid_host(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A `[domainGlob:]pathGlob` pattern: `*` stays within a segment, `**` crosses `/`.
/// `""` and `all` match every app. Without a domain part only apps without a domain match.
#[derive(Debug, Clone)]
pub struct AppGlob {
    domain: Option<PathGlob>,
    path: PathGlob,
}

impl AppGlob {
    pub fn parse(input: &str) -> Result<AppGlob, String> {
        let input = input.trim();
        if input.is_empty() || input.eq_ignore_ascii_case("all") {
            return Ok(AppGlob { domain: Some(PathGlob::new("*")?), path: PathGlob::new("/**")? });
        }
        let (domain, path) = match input.split_once(':') {
            None => (None, input),
            Some((d, p)) => {
                if p.contains(':') {
                    return Err("path glob has to be in the format of domain:path".into());
                }
                (Some(d.to_ascii_lowercase()), p)
            }
        };
        let path = match path {
            "" => "/".to_string(),
            "*" => "/*".to_string(),
            p if p.starts_with('/') => p.trim_end_matches('/').to_string(),
            p => format!("/{}", p.trim_end_matches('/')),
        };
        let path = if path.is_empty() { "/".to_string() } else { path };
        Ok(AppGlob { domain: domain.as_deref().map(PathGlob::new).transpose()?, path: PathGlob::new(&path)? })
    }

    pub fn matches(&self, app: &AppPath) -> bool {
        let domain_ok = match &self.domain {
            None => app.domain.is_empty(),
            Some(d) => d.matches(&app.domain),
        };
        domain_ok && self.path.matches(&app.path)
    }
}

/// A glob over `/`-separated text, compiled once by `globset` (matching is linear in the
/// text): `*` and `?` stay within a segment, `**` as a whole segment matches zero or more
/// segments. Every other character is literal.
#[derive(Debug, Clone)]
pub struct PathGlob {
    /// The pattern; a trailing `/**` also matches the text without it (zero segments).
    set: globset::GlobSet,
}

impl PathGlob {
    pub fn new(pattern: &str) -> Result<PathGlob, String> {
        let mut builder = globset::GlobSetBuilder::new();
        let translated = translate(pattern);
        let mut add = |p: &str| -> Result<(), String> {
            let glob = globset::GlobBuilder::new(p)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!("invalid glob {pattern:?}: {e}"))?;
            builder.add(glob);
            Ok(())
        };
        add(&translated)?;
        if let Some(base) = translated.strip_suffix("/**") {
            add(base)?;
        }
        Ok(PathGlob { set: builder.build().map_err(|e| format!("invalid glob {pattern:?}: {e}"))? })
    }

    pub fn matches(&self, text: &str) -> bool {
        self.set.is_match(text)
    }
}

/// Today's glob syntax in globset's: `**` only as a whole segment, a run of `*` inside a
/// segment is one `*`, and globset's other special characters are escaped.
fn translate(pattern: &str) -> String {
    let segments: Vec<String> = pattern
        .split('/')
        .map(|segment| {
            if segment == "**" {
                return segment.to_string();
            }
            let mut out = String::with_capacity(segment.len());
            for c in segment.chars() {
                match c {
                    '*' if out.ends_with('*') && !out.ends_with("\\*") => {}
                    '*' | '?' => out.push(c),
                    '[' | ']' | '{' | '}' | '\\' | '!' | ',' => {
                        out.push('\\');
                        out.push(c);
                    }
                    c => out.push(c),
                }
            }
            out
        })
        .collect();
    segments.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<AppPath, AppPathError> {
        AppPath::parse(s, "localhost")
    }

    #[test]
    fn parses_domain_and_path() {
        assert_eq!(
            p("nginxapp.localhost:/").unwrap(),
            AppPath { domain: "nginxapp.localhost".into(), path: "/".into() }
        );
        assert_eq!(p("/abc/").unwrap(), AppPath { domain: "".into(), path: "/abc".into() });
        assert_eq!(p("demo.:").unwrap(), AppPath { domain: "demo.localhost".into(), path: "/".into() });
        assert_eq!(p("Ex.COM:/a").unwrap().domain, "ex.com");
    }

    #[test]
    fn rejects_bad_paths() {
        assert!(matches!(p("a:b:/c"), Err(AppPathError::TooManyColons(_))));
        assert!(matches!(p("abc"), Err(AppPathError::NoLeadingSlash(_))));
        assert!(matches!(p("/a/../b"), Err(AppPathError::DotSegment(..))));
        assert!(matches!(p("/a/./b"), Err(AppPathError::DotSegment(..))));
        assert!(matches!(p("/a/."), Err(AppPathError::EndsWithDot(_))));
        assert!(matches!(p("/a_cl_stage"), Err(AppPathError::Reserved(_))));
        assert!(matches!(p("bad_host!:/a"), Err(AppPathError::BadDomain(..))));
        assert!(matches!(p("/a b"), Err(AppPathError::BadChars(_))));
    }

    #[test]
    fn stage_paths() {
        assert_eq!(p("/").unwrap().stage().path, "/_cl_stage");
        assert_eq!(p("a.localhost:/x").unwrap().stage().to_string(), "a.localhost:/x_cl_stage");
    }

    #[test]
    fn conflicts_are_segment_aligned_and_domain_scoped() {
        let root = p("/").unwrap();
        let a = p("/a").unwrap();
        assert!(root.conflicts_with(&a, "localhost"));
        assert!(a.conflicts_with(&p("/a/b").unwrap(), "localhost"));
        assert!(!a.conflicts_with(&p("/ab").unwrap(), "localhost"));
        assert!(!a.conflicts_with(&p("x.localhost:/a").unwrap(), "localhost"));
        assert!(a.conflicts_with(&p("localhost:/a").unwrap(), "localhost"));
    }

    #[test]
    fn globs() {
        let m = |g: &str, s: &str| AppGlob::parse(g).unwrap().matches(&p(s).unwrap());
        assert!(m("*", "/abc"));
        assert!(!m("*", "/abc/def"));
        assert!(!m("*", "d.localhost:/abc"));
        assert!(m("/abc*", "/abc2"));
        assert!(m("/abc/**", "/abc"));
        assert!(m("/abc/**", "/abc/def/xyz"));
        assert!(m("*:*", "d.localhost:/x"));
        assert!(m("all", "d.localhost:/x/y"));
        assert!(m("", "/x/y"));
        assert!(m("nginx*:**", "nginxapp.localhost:/"));
        assert!(m("/a/**/b", "/a/b"));
        assert!(m("/a/**/b", "/a/x/y/b"));
        assert!(!m("/a/**/b", "/a/x/c"));
        assert!(m("/a?c", "/abc"));
        assert!(!m("/a?c", "/a/c"));
        assert!(m("/a**c", "/abbc"));
        assert!(!m("/a**c", "/ab/c"), "** inside a segment stays within it");
        assert!(!m("/{a,b}", "/a"), "braces are literal");
        assert!(!m("/[ab]", "/a"), "brackets are literal");
    }

    #[test]
    fn glob_matching_is_not_exponential() {
        let glob = AppGlob::parse("/*a*a*a*a*a*a*a*a*a*a*b").unwrap();
        let long = AppPath { domain: String::new(), path: format!("/{}", "a".repeat(200)) };
        let started = std::time::Instant::now();
        assert!(!glob.matches(&long));
        assert!(started.elapsed() < std::time::Duration::from_millis(500), "took {:?}", started.elapsed());
    }

    #[test]
    fn path_chars_and_length() {
        assert!(matches!(p("/ünï"), Err(AppPathError::BadChars(_))), "non-ASCII paths cannot be routed");
        assert!(matches!(p("/a%20b"), Err(AppPathError::BadChars(_))));
        assert!(matches!(p("/a<b"), Err(AppPathError::BadChars(_))));
        assert!(p("/a-b_c.d~e/f(1)+x@y").is_ok());
        assert!(p(&format!("/{}", "a".repeat(MAX_PATH_LEN - 1))).is_ok());
        assert!(matches!(p(&format!("/{}", "a".repeat(MAX_PATH_LEN))), Err(AppPathError::TooLong(_))));
        assert_eq!(AppPath::parse_lookup("/ünï", "localhost").unwrap().path, "/ünï", "an old app can be named");
    }

    /// The hand-written matcher globs used before globset: the reference for today's semantics.
    fn reference_match(pattern: &str, text: &str) -> bool {
        fn segments(pat: &[&str], txt: &[&str]) -> bool {
            match pat.split_first() {
                None => txt.is_empty(),
                Some((&"**", rest)) => (0..=txt.len()).any(|skip| segments(rest, &txt[skip..])),
                Some((p, rest)) => match txt.split_first() {
                    Some((t, trest)) => segment(p.as_bytes(), t.as_bytes()) && segments(rest, trest),
                    None => false,
                },
            }
        }
        fn segment(p: &[u8], t: &[u8]) -> bool {
            match p.split_first() {
                None => t.is_empty(),
                Some((b'*', rest)) => (0..=t.len()).any(|i| segment(rest, &t[i..])),
                Some((b'?', rest)) => !t.is_empty() && segment(rest, &t[1..]),
                Some((c, rest)) => t.first() == Some(c) && segment(rest, &t[1..]),
            }
        }
        let pat: Vec<&str> = pattern.split('/').collect();
        let txt: Vec<&str> = text.split('/').collect();
        segments(&pat, &txt)
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn pieces(options: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
            proptest::collection::vec(proptest::sample::select(options), 0..max).prop_map(|v| v.concat())
        }

        proptest! {
            #[test]
            fn parse_never_panics(input in "\\PC{0,300}") {
                let _ = AppPath::parse(&input, "localhost");
            }

            #[test]
            fn display_parses_back(
                domain in "(([a-z0-9]{1,8}\\.){0,2}[a-z]{1,5}\\.?)?",
                segments in proptest::collection::vec("[A-Za-z0-9._~!$&'()*+,;=@-]{1,12}", 0..5),
            ) {
                let path = format!("/{}", segments.join("/"));
                let input = if domain.is_empty() { path } else { format!("{domain}:{path}") };
                if let Ok(parsed) = AppPath::parse(&input, "localhost") {
                    prop_assert_eq!(AppPath::parse(&parsed.to_string(), "localhost"), Ok(parsed));
                }
            }

            /// Patterns and texts as callers make them: segments without empty ones, rooted
            /// (app paths, `/` alone included) or relative (`.dockerignore`).
            #[test]
            fn globset_keeps_the_old_semantics(
                rooted in any::<bool>(),
                pattern in proptest::collection::vec(pieces(&["a", "b", "*", "**", "?", "[", "{a,b}", "\\"], 4), 1..4),
                text in proptest::collection::vec(pieces(&["a", "b", "[", "{a,b}", "\\"], 4), 0..4),
            ) {
                let join = |parts: &[String]| {
                    let parts: Vec<&str> = parts.iter().map(String::as_str).filter(|p| !p.is_empty()).collect();
                    if rooted { format!("/{}", parts.join("/")) } else { parts.join("/") }
                };
                let (pattern, text) = (join(&pattern), join(&text));
                let glob = PathGlob::new(&pattern).unwrap();
                prop_assert_eq!(glob.matches(&text), reference_match(&pattern, &text), "pattern {:?} text {:?}", pattern, text);
            }
        }
    }
}
