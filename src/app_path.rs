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
    #[error("invalid app path {0}: path contains characters that are not allowed")]
    BadChars(String),
}

impl AppPath {
    /// Parses `[domain:]path` as the CLI and API accept it. A domain that ends with `.` gets the
    /// default domain appended (`demo.` becomes `demo.localhost`).
    pub fn parse(input: &str, default_domain: &str) -> Result<AppPath, AppPathError> {
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
    domain: Option<String>,
    path: String,
}

impl AppGlob {
    pub fn parse(input: &str) -> Result<AppGlob, String> {
        let input = input.trim();
        if input.is_empty() || input.eq_ignore_ascii_case("all") {
            return Ok(AppGlob { domain: Some("*".into()), path: "/**".into() });
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
        Ok(AppGlob { domain, path })
    }

    pub fn matches(&self, app: &AppPath) -> bool {
        let domain_ok = match &self.domain {
            None => app.domain.is_empty(),
            Some(d) => glob_match(&format!("/{d}"), &format!("/{}", app.domain)),
        };
        domain_ok && glob_match(&self.path, &app.path)
    }
}

/// Doublestar matching on `/`-separated text: `*` and `?` within a segment, `**` as a whole segment
/// matches zero or more segments.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pat: Vec<&str> = pattern.split('/').collect();
    let txt: Vec<&str> = text.split('/').collect();
    match_segments(&pat, &txt)
}

fn match_segments(pat: &[&str], txt: &[&str]) -> bool {
    match pat.split_first() {
        None => txt.is_empty(),
        Some((&"**", rest)) => (0..=txt.len()).any(|skip| match_segments(rest, &txt[skip..])),
        Some((p, rest)) => match txt.split_first() {
            Some((t, trest)) => match_segment(p.as_bytes(), t.as_bytes()) && match_segments(rest, trest),
            None => false,
        },
    }
}

fn match_segment(p: &[u8], t: &[u8]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some((b'*', rest)) => (0..=t.len()).any(|i| match_segment(rest, &t[i..])),
        Some((b'?', rest)) => !t.is_empty() && match_segment(rest, &t[1..]),
        Some((c, rest)) => t.first() == Some(c) && match_segment(rest, &t[1..]),
    }
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
    }
}
