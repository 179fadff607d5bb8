//! The spec catalog: which specs exist, the params each declares (required, defaults, types),
//! and how an app's spec and params turn into what runs: a container to start or a URL to
//! forward to. Pure logic; the engine and the proxy act on the [`Backend`] it returns.

use std::collections::BTreeMap;

use crate::app_path::AppPath;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Int,
    Bool,
    Url,
}

#[derive(Debug, Clone)]
pub struct ParamDef {
    pub name: &'static str,
    pub kind: ParamType,
    pub required: bool,
    pub default: Option<&'static str>,
    pub help: &'static str,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub name: &'static str,
    pub help: &'static str,
    /// Whether the app is built from a source; `image` and `proxy` take `-`.
    pub takes_source: bool,
    pub params: &'static [ParamDef],
}

const PRESERVE_HOST: ParamDef = ParamDef {
    name: "preserve_host",
    kind: ParamType::Bool,
    required: false,
    default: Some("false"),
    help: "Send the client's Host header upstream instead of the upstream's",
};

static SPECS: &[Spec] = &[
    Spec {
        name: "image",
        help: "Run an existing container image; no source (use - as the source)",
        takes_source: false,
        params: &[
            ParamDef {
                name: "image",
                kind: ParamType::String,
                required: true,
                default: None,
                help: "The image to run",
            },
            ParamDef {
                name: "port",
                kind: ParamType::Int,
                required: true,
                default: None,
                help: "The port the app listens on inside the container",
            },
            PRESERVE_HOST,
        ],
    },
    Spec {
        name: "proxy",
        help: "Forward requests to a URL; no container, no source (use - as the source)",
        takes_source: false,
        params: &[
            ParamDef {
                name: "url",
                kind: ParamType::Url,
                required: true,
                default: None,
                help: "The URL requests are proxied to",
            },
            PRESERVE_HOST,
        ],
    },
];

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
    #[error("spec {0} takes no source: use - as the source")]
    SourceNotAllowed(String),
}

pub fn all() -> &'static [Spec] {
    SPECS
}

fn known_names() -> String {
    SPECS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

pub fn lookup(name: Option<&str>) -> Result<&'static Spec, SpecError> {
    let name = name.ok_or_else(|| SpecError::Missing(known_names()))?;
    SPECS.iter().find(|s| s.name == name).ok_or_else(|| SpecError::Unknown(name.into(), known_names()))
}

/// Where an app's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Container(ContainerPlan),
    Url(UrlPlan),
}

/// A container to run for the app; env already holds the params, `CL_APP_PATH` and `PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPlan {
    pub image: String,
    pub port: u16,
    pub env: Vec<(String, String)>,
    pub preserve_host: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPlan {
    pub url: http::Uri,
    pub preserve_host: bool,
}

impl Spec {
    pub fn check_source(&self, source: &str) -> Result<(), SpecError> {
        if !self.takes_source && source != "-" {
            return Err(SpecError::SourceNotAllowed(self.name.into()));
        }
        Ok(())
    }

    /// Checks the declared params (required ones present, typed ones well-formed). Params the
    /// spec does not declare are allowed: they reach the container as env vars.
    pub fn check_params(&self, params: &BTreeMap<String, String>) -> Result<(), SpecError> {
        for def in self.params {
            match params.get(def.name) {
                None if def.required => return Err(SpecError::MissingParam(def.name.into())),
                None => {}
                Some(v) => check_value(def, v)?,
            }
        }
        Ok(())
    }

    /// The backend for this spec: call only with params that passed [`Spec::check_params`].
    pub fn backend(&self, params: &BTreeMap<String, String>, path: &AppPath) -> Result<Backend, SpecError> {
        self.check_params(params)?;
        let get = |name: &str| {
            params.get(name).map(String::as_str).or_else(|| self.params.iter().find(|d| d.name == name)?.default)
        };
        let preserve_host = get("preserve_host").map(parse_bool).unwrap_or(Some(false)).unwrap_or(false);
        match self.name {
            "proxy" => Ok(Backend::Url(UrlPlan {
                url: parse_url(get("url").unwrap_or_default()).expect("checked"),
                preserve_host,
            })),
            _ => {
                let port: u16 = get("port").and_then(|p| p.parse().ok()).expect("checked");
                let mut env: Vec<(String, String)> = params
                    .iter()
                    .filter(|(k, _)| *k != "CL_APP_PATH" && *k != "PORT")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                env.push(("CL_APP_PATH".into(), path.env_path().into()));
                env.push(("PORT".into(), port.to_string()));
                Ok(Backend::Container(ContainerPlan {
                    image: get("image").unwrap_or_default().into(),
                    port,
                    env,
                    preserve_host,
                }))
            }
        }
    }
}

fn check_value(def: &ParamDef, value: &str) -> Result<(), SpecError> {
    let bad = |expected| Err(SpecError::BadParam { name: def.name.into(), expected, value: value.into() });
    match def.kind {
        ParamType::String if value.trim().is_empty() => bad("a non-empty string"),
        ParamType::Int if value.parse::<u16>().map(|p| p == 0).unwrap_or(true) => bad("a port number from 1 to 65535"),
        ParamType::Bool if parse_bool(value).is_none() => bad("true or false"),
        ParamType::Url if parse_url(value).is_none() => bad("an http:// or https:// URL"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn unknown_and_missing_spec() {
        assert!(matches!(lookup(Some("nope")), Err(SpecError::Unknown(..))));
        assert!(matches!(lookup(None), Err(SpecError::Missing(_))));
        assert_eq!(lookup(Some("image")).unwrap().name, "image");
    }

    #[test]
    fn required_params_are_enforced() {
        let image = lookup(Some("image")).unwrap();
        let err = image.check_params(&params(&[("image", "nginx")])).unwrap_err();
        assert_eq!(err.to_string(), "param port is a required param, a value has to be provided");
        assert!(image.check_params(&params(&[("image", "nginx"), ("port", "http")])).is_err());
        assert!(image
            .check_params(&params(&[("image", "nginx"), ("port", "80"), ("preserve_host", "maybe")]))
            .is_err());
        assert!(image.check_params(&params(&[("image", "nginx"), ("port", "80"), ("EXTRA", "x")])).is_ok());
    }

    #[test]
    fn container_env_has_params_app_path_and_port() {
        let image = lookup(Some("image")).unwrap();
        let path = AppPath::parse("/x", "localhost").unwrap();
        let Backend::Container(plan) =
            image.backend(&params(&[("image", "nginx"), ("port", "80"), ("A", "1")]), &path).unwrap()
        else {
            panic!("expected a container")
        };
        assert_eq!(plan.port, 80);
        assert!(plan.env.contains(&("A".into(), "1".into())));
        assert!(plan.env.contains(&("CL_APP_PATH".into(), "/x".into())));
        assert!(plan.env.contains(&("PORT".into(), "80".into())));
        let root = AppPath::parse("/", "localhost").unwrap();
        let Backend::Container(plan) = image.backend(&params(&[("image", "nginx"), ("port", "80")]), &root).unwrap()
        else {
            panic!()
        };
        assert!(plan.env.contains(&("CL_APP_PATH".into(), "".into())));
    }

    #[test]
    fn proxy_urls() {
        let proxy = lookup(Some("proxy")).unwrap();
        assert!(proxy.check_params(&params(&[("url", "ftp://x")])).is_err());
        assert!(proxy.check_params(&params(&[("url", "http://127.0.0.1:8080/base")])).is_ok());
        assert!(proxy.check_source("./dir").is_err());
    }
}
