//! The spec catalog: the built-in specs (the top-level `specs/` folder, embedded in the
//! binary) plus spec folders named in berth.toml, the params each declares (required,
//! defaults, types), and the checks and defaults that turn an app's params into what runs.
//! Pure logic apart from reading spec folders at load.

mod catalog;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use catalog::Catalog;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Int,
    Bool,
    Url,
    /// Any whole number (Clace's INT for params other than `port`).
    Integer,
    /// A JSON list (Clace's LIST).
    List,
    /// A JSON object (Clace's DICT).
    Dict,
}

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct ParamDef {
    pub name: String,
    #[serde(default = "default_kind")]
    pub kind: ParamType,
    #[serde(default)]
    pub required: bool,
    pub default: Option<String>,
    #[serde(default)]
    pub help: String,
}

fn default_kind() -> ParamType {
    ParamType::String
}

/// Container settings a spec declares (`[container]` in spec.toml).
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub struct SpecContainer {
    /// Port used when neither the `port` param nor an EXPOSE gives one.
    pub port: Option<u16>,
    pub health_url: Option<String>,
    /// Strip the app path before forwarding (true) or forward it as is, for apps that serve
    /// under `CL_APP_PATH` themselves (false).
    #[serde(default = "yes")]
    pub strip_app: bool,
    /// Send the client's Host header upstream when no `preserve_host` param says otherwise.
    #[serde(default)]
    pub preserve_host: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecKind {
    /// Runs the image named by the `image` param; no source.
    Image,
    /// Forwards to the `url` param; no container, no source.
    Proxy,
    /// Builds an image from the app's source with the spec's (or the source's) Containerfile.
    Build,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub help: String,
    pub kind: SpecKind,
    pub params: Vec<ParamDef>,
    pub container: SpecContainer,
    /// Files the app's source must have (`go.mod` for go).
    pub requires: Vec<String>,
    /// Files copied into the build context before the app's source (source files win).
    pub files: BTreeMap<String, Vec<u8>>,
    /// `built-in` or the folder the spec was loaded from.
    pub origin: String,
    /// What berth ignores in a Clace-format spec (printed once at create).
    pub warnings: Vec<String>,
    /// The `app.star` of a Clace-format spec, evaluated again when an app's source brings
    /// its own `params.star`.
    pub app_star: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("invalid app spec {0} (known specs: {1})")]
    Unknown(String, String),
    #[error("--spec is required (known specs: {0})")]
    Missing(String),
    #[error("param {0} is a required param, a value has to be provided")]
    MissingParam(String),
    #[error("param {name} must be {expected}, got {value:?}")]
    BadParam { name: String, expected: &'static str, value: String },
    #[error("invalid param name {0:?}: a param becomes an environment variable, so its name is letters, digits and _ and does not start with a digit")]
    BadParamKey(String),
    #[error("spec {0} takes no source: use - as the source")]
    SourceNotAllowed(String),
    #[error("spec {0} needs a source (a folder or a git URL), not -")]
    SourceRequired(String),
    /// Clace's messages for typed values: `param X is not an int` / `a json list` / `a json dict`.
    #[error("param {name} is not {what}")]
    NotA { name: String, what: &'static str },
    /// A spec folder given by path that cannot be read or evaluated, or a spec berth cannot serve.
    #[error("{0}")]
    Folder(String),
}

/// Where an app's requests go, for specs that need no build input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPlan {
    pub url: http::Uri,
    pub preserve_host: bool,
}

impl Spec {
    pub fn check_source(&self, source: &str) -> Result<(), SpecError> {
        match (self.kind, source == "-") {
            (SpecKind::Build, true) => Err(SpecError::SourceRequired(self.name.clone())),
            (SpecKind::Image | SpecKind::Proxy, false) => Err(SpecError::SourceNotAllowed(self.name.clone())),
            _ => Ok(()),
        }
    }

    /// Checks the declared params (required ones present, typed ones well-formed). Params the
    /// spec does not declare are allowed: they reach the container as env vars.
    pub fn check_params(&self, params: &BTreeMap<String, String>) -> Result<(), SpecError> {
        for def in &self.params {
            match params.get(&def.name) {
                None if def.required => return Err(SpecError::MissingParam(def.name.clone())),
                None => {}
                Some(v) => check_value(def, v)?,
            }
        }
        Ok(())
    }

    /// The app's params with the spec's defaults filled in: what the container's env holds.
    pub fn effective_params(&self, params: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut all: BTreeMap<String, String> =
            self.params.iter().filter_map(|d| Some((d.name.clone(), d.default.clone()?))).collect();
        all.extend(params.iter().map(|(k, v)| (k.clone(), v.clone())));
        all
    }

    pub fn preserve_host(&self, params: &BTreeMap<String, String>) -> bool {
        self.effective_params(params)
            .get("preserve_host")
            .and_then(|v| parse_bool(v))
            .unwrap_or(self.container.preserve_host)
    }

    /// The container port: the `port` param if the user gave one, else the Containerfile's
    /// last EXPOSE, else the spec's default. `None` when nothing gives one.
    pub fn container_port(&self, params: &BTreeMap<String, String>, exposed: Option<u16>) -> Option<u16> {
        let parse = |v: &String| v.parse::<u16>().ok().filter(|p| *p > 0);
        params
            .get("port")
            .and_then(parse)
            .or(exposed)
            .or_else(|| self.effective_params(&BTreeMap::new()).get("port").and_then(parse))
            .or(self.container.port)
    }

    /// The upstream URL of a proxy app (params already checked).
    pub fn url_plan(&self, params: &BTreeMap<String, String>) -> Result<UrlPlan, SpecError> {
        self.check_params(params)?;
        let url = self
            .effective_params(params)
            .get("url")
            .and_then(|u| parse_url(u))
            .ok_or_else(|| SpecError::MissingParam("url".into()))?;
        Ok(UrlPlan { url, preserve_host: self.preserve_host(params) })
    }
}

/// A param's name must be an environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn check_param_key(key: &str) -> Result<(), SpecError> {
    let mut chars = key.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(SpecError::BadParamKey(key.to_string()))
    }
}

fn check_value(def: &ParamDef, value: &str) -> Result<(), SpecError> {
    let bad = |expected| Err(SpecError::BadParam { name: def.name.clone(), expected, value: value.into() });
    let not_a = |what| Err(SpecError::NotA { name: def.name.clone(), what });
    match def.kind {
        ParamType::String if def.required && value.trim().is_empty() => bad("a non-empty string"),
        ParamType::Int if value.parse::<u16>().map(|p| p == 0).unwrap_or(true) => bad("a port number from 1 to 65535"),
        ParamType::Bool if parse_bool(value).is_none() => bad("true or false"),
        ParamType::Url if parse_url(value).is_none() => bad("an http:// or https:// URL"),
        ParamType::Integer if value.trim().parse::<i64>().is_err() => not_a("an int"),
        ParamType::List if !serde_json::from_str::<serde_json::Value>(value).is_ok_and(|v| v.is_array()) => {
            not_a("a json list")
        }
        ParamType::Dict if !serde_json::from_str::<serde_json::Value>(value).is_ok_and(|v| v.is_object()) => {
            not_a("a json dict")
        }
        _ => Ok(()),
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "t" => Some(true),
        "false" | "0" | "no" | "f" => Some(false),
        _ => None,
    }
}

fn parse_url(v: &str) -> Option<http::Uri> {
    let uri: http::Uri = v.trim().parse().ok()?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http") | Some("https"), Some(_)) => Some(uri),
        _ => None,
    }
}

/// A shared, immutable spec.
pub type SpecRef = Arc<Spec>;

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn builtin() -> Catalog {
        Catalog::load(&[]).unwrap()
    }

    #[test]
    fn unknown_and_missing_spec() {
        let c = builtin();
        assert!(matches!(c.lookup(Some("nope")), Err(SpecError::Unknown(..))));
        assert!(matches!(c.lookup(None), Err(SpecError::Missing(_))));
        assert_eq!(c.lookup(Some("image")).unwrap().kind, SpecKind::Image);
        assert_eq!(c.lookup(Some("python-flask")).unwrap().kind, SpecKind::Build);
    }

    #[test]
    fn required_params_are_enforced() {
        let c = builtin();
        let image = c.lookup(Some("image")).unwrap();
        let err = image.check_params(&params(&[("image", "nginx")])).unwrap_err();
        assert_eq!(err.to_string(), "param port is a required param, a value has to be provided");
        assert!(image.check_params(&params(&[("image", "nginx"), ("port", "http")])).is_err());
        assert!(image
            .check_params(&params(&[("image", "nginx"), ("port", "80"), ("preserve_host", "maybe")]))
            .is_err());
        assert!(image.check_params(&params(&[("image", "nginx"), ("port", "80"), ("EXTRA", "x")])).is_ok());
        assert!(c.lookup(Some("go")).unwrap().check_params(&params(&[])).is_err(), "go needs a port");
    }

    #[test]
    fn sources() {
        let c = builtin();
        assert!(c.lookup(Some("proxy")).unwrap().check_source("./dir").is_err());
        assert!(c.lookup(Some("python-wsgi")).unwrap().check_source("-").is_err());
        assert!(c.lookup(Some("python-wsgi")).unwrap().check_source("/src").is_ok());
    }

    #[test]
    fn ports_and_defaults() {
        let c = builtin();
        let flask = c.lookup(Some("python-flask")).unwrap();
        assert_eq!(flask.container_port(&params(&[]), None), Some(5000));
        assert_eq!(flask.container_port(&params(&[]), Some(8000)), Some(8000));
        assert_eq!(flask.container_port(&params(&[("port", "9000")]), Some(8000)), Some(9000));
        let container = c.lookup(Some("container")).unwrap();
        assert_eq!(container.container_port(&params(&[]), None), None);
        let st = c.lookup(Some("python-streamlit")).unwrap();
        assert_eq!(st.effective_params(&params(&[]))["app_file"], "streamlit_app.py");
        assert!(!st.container.strip_app);
    }

    #[test]
    fn proxy_urls() {
        let c = builtin();
        let proxy = c.lookup(Some("proxy")).unwrap();
        assert!(proxy.check_params(&params(&[("url", "ftp://x")])).is_err());
        let plan = proxy.url_plan(&params(&[("url", "http://127.0.0.1:8080/base")])).unwrap();
        assert_eq!(plan.url.path(), "/base");
        assert!(!plan.preserve_host);
    }

    #[test]
    fn param_keys_are_env_names() {
        for ok in ["A", "_", "port", "APP_FILE", "x1", "_9"] {
            assert_eq!(check_param_key(ok), Ok(()), "{ok}");
        }
        for bad in ["", "A B", "1X", "A=B", "A\nB", "A-B", "é", " A"] {
            let err = check_param_key(bad).unwrap_err().to_string();
            assert!(!err.contains('\n'), "one line: {err}");
            assert!(err.starts_with("invalid param name"), "{err}");
        }
    }

    mod props {
        use super::super::check_param_key;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn env_names_are_accepted(key in "[A-Za-z_][A-Za-z0-9_]{0,40}") {
                prop_assert!(check_param_key(&key).is_ok());
            }

            #[test]
            fn anything_else_is_refused_on_one_line(key in any::<String>()) {
                let is_env_name = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                match check_param_key(&key) {
                    Ok(()) => prop_assert!(is_env_name),
                    Err(e) => {
                        prop_assert!(!is_env_name);
                        prop_assert_eq!(e.to_string().lines().count(), 1);
                    }
                }
            }
        }
    }
}
