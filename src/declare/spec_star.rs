//! Clace-format spec folders (`params.star`, `app.star`, a Containerfile and other files),
//! read unchanged: both files are evaluated with a real Starlark interpreter and the result
//! is mapped onto a berth [`Spec`]. What berth does not support (API handlers, other plugins,
//! volumes, lifetimes...) is collected as warnings, never silently dropped.

pub mod app;
pub mod params;

use starlark::syntax::{AstModule, Dialect};

/// Parses Starlark source; syntax errors come back as one line.
fn parse(file: &str, text: &str) -> Result<AstModule, String> {
    AstModule::parse(file, text.to_string(), &Dialect::Extended).map_err(star_error)
}

/// One line: `file:line: message`, without the source excerpt the interpreter adds.
fn star_error(e: starlark::Error) -> String {
    let message = e.without_diagnostic().to_string();
    let message = message.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("error");
    let message = message.strip_prefix("error: ").unwrap_or(message);
    // Clace's (Go starlark's) wording for an undefined name, e.g. `type=INVALID`.
    let message = match message.strip_prefix("Variable `").and_then(|m| m.strip_suffix("` not found")) {
        Some(name) => format!("undefined: {name}"),
        None => message.to_string(),
    };
    match e.span() {
        Some(span) => format!("{}:{}: {message}", span.filename(), span.resolve_span().begin.line + 1),
        None => message,
    }
}

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::specs::{ParamDef, ParamType, Spec, SpecContainer, SpecKind};
use app::{AppValue, CONTAINER_URL, TAG};
use params::{ParamDecl, StarType};

/// The file that makes a folder a Clace-format spec.
pub const APP_STAR: &str = "app.star";
pub const PARAMS_STAR: &str = "params.star";

/// Whether `dir` is a Clace-format spec folder (it has an `app.star`).
pub fn is_spec_folder(dir: &std::path::Path) -> bool {
    dir.join(APP_STAR).is_file()
}

/// Why a Clace spec cannot be served by berth at all (static apps, action apps).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecStarError {
    #[error("{0}")]
    Invalid(String),
    #[error("spec {name} is not supported by berth: {reason}")]
    Unsupported { name: String, reason: String },
}

/// Reads a Clace-format spec from its files (`app.star`, optional `params.star`, the rest
/// copied into build contexts). `origin` names the folder in messages.
pub fn load(name: &str, mut files: BTreeMap<String, Vec<u8>>, origin: &str) -> Result<Spec, SpecStarError> {
    let text = |files: &mut BTreeMap<String, Vec<u8>>, file: &str| -> Result<Option<String>, SpecStarError> {
        files
            .remove(file)
            .map(|b| String::from_utf8(b).map_err(|_| SpecStarError::Invalid(format!("{origin}/{file} is not UTF-8"))))
            .transpose()
    };
    let app_star =
        text(&mut files, APP_STAR)?.ok_or_else(|| SpecStarError::Invalid(format!("{origin} has no {APP_STAR}")))?;
    let params_star = text(&mut files, PARAMS_STAR)?.unwrap_or_default();
    files.remove("README.md");
    let mut spec = build(name, &app_star, &params_star, origin)?;
    spec.files = files;
    Ok(spec)
}

/// The spec with the params of an app source's own `params.star`, which replaces the spec's
/// (as in Clace). For a Clace-format spec its `app.star` is evaluated again with them.
pub fn with_source_params(spec: &Spec, params_star: &str, source: &str) -> Result<Spec, SpecStarError> {
    let origin = format!("{source} (the source's {PARAMS_STAR})");
    let mut out = match &spec.app_star {
        Some(app_star) => build(&spec.name, app_star, params_star, &origin)?,
        None => {
            let decls =
                params::evaluate(&format!("{source}/{PARAMS_STAR}"), params_star).map_err(SpecStarError::Invalid)?;
            Spec { params: param_defs(&decls), ..spec.clone() }
        }
    };
    out.files = spec.files.clone();
    out.origin = spec.origin.clone();
    Ok(out)
}

fn build(name: &str, app_star: &str, params_star: &str, origin: &str) -> Result<Spec, SpecStarError> {
    let decls = params::evaluate(&format!("{origin}/{PARAMS_STAR}"), params_star).map_err(SpecStarError::Invalid)?;
    let values: Vec<(String, Json)> =
        decls.iter().map(|d| (d.name.clone(), d.default.clone().unwrap_or_else(|| app::placeholder(d)))).collect();
    let value = app::evaluate(&format!("{origin}/{APP_STAR}"), app_star, &values).map_err(SpecStarError::Invalid)?;
    let mut spec =
        to_spec(name, &decls, &value).map_err(|reason| SpecStarError::Unsupported { name: name.into(), reason })?;
    spec.origin = origin.to_string();
    spec.app_star = Some(app_star.to_string());
    Ok(spec)
}

fn tag(v: &Json) -> &str {
    v.get(TAG).and_then(Json::as_str).unwrap_or("")
}

fn str_of<'a>(v: &'a Json, key: &str) -> &'a str {
    v.get(key).and_then(Json::as_str).unwrap_or("")
}

/// "Empty" as Clace's defaults are: null, "", false, 0, [] and {}.
fn is_empty(v: Option<&Json>) -> bool {
    match v {
        None | Some(Json::Null) => true,
        Some(Json::String(s)) => s.is_empty(),
        Some(Json::Bool(b)) => !b,
        Some(Json::Array(a)) => a.is_empty(),
        Some(Json::Object(o)) => o.is_empty(),
        Some(Json::Number(n)) => n.as_i64() == Some(0),
    }
}

/// Maps the evaluated `ace.app(...)` onto a berth spec. `Err` is why berth cannot serve it.
fn to_spec(name: &str, decls: &[ParamDecl], value: &AppValue) -> Result<Spec, String> {
    let app = &value.app;
    let mut warnings = Vec::new();
    for load in &value.loads {
        if load != "proxy.in" && load != "container.in" {
            warnings.push(format!("plugin {load} is not run"));
        }
    }
    if app.get("static_only").and_then(Json::as_bool) == Some(true) {
        return Err("static_only apps (berth serves containers and proxies)".into());
    }
    for key in ["settings", "style", "libraries", "actions", "custom_layout", "index", "single_file"] {
        if !is_empty(app.get(key)) {
            warnings.push(format!("ace.app {key} is ignored"));
        }
    }
    for perm in app.get("permissions").and_then(Json::as_array).into_iter().flatten() {
        let (plugin, method) = (str_of(perm, "plugin"), str_of(perm, "method"));
        if !matches!((plugin, method), ("proxy.in", "config") | ("container.in", "config")) {
            warnings.push(format!("permission {plugin}.{method} is not used"));
        }
    }
    let mut proxies = Vec::new();
    for route in app.get("routes").and_then(Json::as_array).into_iter().flatten() {
        match tag(route) {
            "ace.proxy" => proxies.push(route),
            other => {
                let what = if other.is_empty() { "a route that is not ace.proxy" } else { other };
                let line = format!("{what} routes are not served");
                if !warnings.contains(&line) {
                    warnings.push(line);
                }
            }
        }
    }
    if proxies.len() > 1 {
        warnings.push("only the first ace.proxy route is served".into());
    }
    let proxy = proxies.first().and_then(|r| r.get("config"));
    if let Some(route) = proxies.first() {
        if str_of(route, "path") != "/" {
            warnings.push(format!("ace.proxy at {} is served at the app's root", str_of(route, "path")));
        }
    }
    if let Some(p) = proxy {
        if !is_empty(p.get("strip_path")) {
            warnings.push("proxy.config strip_path is ignored".into());
        }
        if !is_empty(p.get("response_headers")) {
            warnings.push("proxy.config response_headers are ignored".into());
        }
    }
    let container_cfg = app.get("container").filter(|c| tag(c) == "container.config");
    let mut params = param_defs(decls);
    let mut container = SpecContainer {
        strip_app: proxy.and_then(|p| p.get("strip_app")).and_then(Json::as_bool).unwrap_or(true),
        preserve_host: proxy.and_then(|p| p.get("preserve_host")).and_then(Json::as_bool).unwrap_or(false),
        ..SpecContainer::default()
    };
    let kind = match (container_cfg, proxy) {
        (Some(c), _) => {
            if str_of(c, "lifetime") == "command" {
                return Err("container lifetime command (action apps that run a command per request)".into());
            }
            let src = str_of(c, "src");
            let kind = match src.strip_prefix("image:") {
                Some(image) => {
                    if image != "<param:image>" {
                        warnings.push(format!(
                            "container image {image:?} in app.star is ignored (berth runs the image param)"
                        ));
                    }
                    SpecKind::Image
                }
                None => {
                    match src {
                        "auto" => {}
                        "nixpacks" => {
                            warnings.push("nixpacks builds are not supported (the Containerfile is built)".into())
                        }
                        other => warnings.push(format!(
                            "container source {other:?} is ignored (Containerfile or Dockerfile is built)"
                        )),
                    }
                    SpecKind::Build
                }
            };
            if let Some(url) = proxy.map(|p| str_of(p, "url")).filter(|u| *u != CONTAINER_URL) {
                warnings.push(format!("proxy to {url} is ignored (the container is served)"));
            }
            let port = c.get("port").and_then(Json::as_u64).unwrap_or(0);
            container.port = u16::try_from(port).ok().filter(|p| *p > 0);
            container.health_url = Some(str_of(c, "health").to_string()).filter(|h| !h.is_empty());
            if str_of(c, "scheme") != "http" {
                warnings.push(format!("container scheme {} is not supported (http is used)", str_of(c, "scheme")));
            }
            if str_of(c, "lifetime") != "app" {
                warnings.push(format!("container lifetime {} is not supported", str_of(c, "lifetime")));
            }
            for (key, what) in [("build_dir", "build_dir"), ("volumes", "volumes"), ("cargs", "cargs (use --carg)")] {
                if !is_empty(c.get(key)) {
                    warnings.push(format!("container.config {what} ignored"));
                }
            }
            kind
        }
        (None, Some(p)) => {
            let url = str_of(p, "url");
            if url == CONTAINER_URL {
                return Err("it proxies to a container but declares none".into());
            }
            match params.iter_mut().find(|d| d.name == "url") {
                Some(def) if url == "<param:url>" => def.kind = ParamType::Url,
                _ => {
                    // A fixed URL in app.star: berth reads the `url` param, so it becomes its default.
                    params.retain(|d| d.name != "url");
                    params.push(ParamDef {
                        name: "url".into(),
                        kind: ParamType::Url,
                        required: false,
                        default: Some(url.to_string()),
                        help: "The URL requests are proxied to (from app.star)".into(),
                    });
                }
            }
            SpecKind::Proxy
        }
        (None, None) => {
            return Err("it has no container and no ace.proxy route (berth serves containers and proxies)".into())
        }
    };
    Ok(Spec {
        name: name.to_string(),
        help: format!("Clace-format spec ({})", str_of(app, "name")),
        kind,
        params,
        container,
        requires: Vec::new(),
        files: BTreeMap::new(),
        origin: String::new(),
        warnings,
        app_star: None,
    })
}

/// berth's param declarations for Clace's. `secrets` (Clace's allow-list of secrets for the
/// container, never an env var there) is left out: berth's allow-list is in berth.toml.
fn param_defs(decls: &[ParamDecl]) -> Vec<ParamDef> {
    decls
        .iter()
        .filter(|d| d.name != "secrets")
        .map(|d| ParamDef {
            name: d.name.clone(),
            kind: match d.kind {
                // berth reads `port` as the container port.
                StarType::Int if d.name == "port" => ParamType::Int,
                StarType::Int => ParamType::Integer,
                StarType::String => ParamType::String,
                StarType::Boolean => ParamType::Bool,
                StarType::List => ParamType::List,
                StarType::Dict => ParamType::Dict,
            },
            required: d.required && d.default.is_none(),
            default: d.default_text(),
            help: d.description.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(app: &str, params: &str) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("app.star".to_string(), app.as_bytes().to_vec()),
            ("params.star".to_string(), params.as_bytes().to_vec()),
            ("Containerfile".to_string(), b"FROM alpine\n".to_vec()),
        ])
    }

    const CONTAINER_APP: &str = r#"
load("proxy.in", "proxy")
load("container.in", "container")
load("exec.in", "exec")

def handler(req):
    return exec.run("ls")

app = ace.app(param.app_name,
    routes=[ace.proxy("/", proxy.config(container.URL, strip_app=param.strip, preserve_host=True)),
            ace.api("/run", handler)],
    container=container.config(container.AUTO, port=param.port, health="/healthz", cargs={"A": "1"}),
    permissions=[ace.permission("proxy.in", "config", [container.URL]), ace.permission("exec.in", "run")])
"#;

    #[test]
    fn a_container_spec_with_typed_params() {
        let params = "param('port', type=INT, default=9000)\nparam('strip', type=BOOLEAN, default=False)\n\
                      param('workers', type=INT, default=2)\nparam('tags', type=LIST, default=['a'])\n\
                      param('env', type=DICT, default={})\nparam('app_name', default='Mine')\nparam('token')\n\
                      param('secrets', type=LIST, default=[['regex:.*']])\n";
        let spec = load("mine", files(CONTAINER_APP, params), "/specs/mine").unwrap();
        assert_eq!(spec.kind, SpecKind::Build);
        assert_eq!(spec.container.port, Some(9000));
        assert_eq!(spec.container.health_url.as_deref(), Some("/healthz"));
        assert!(!spec.container.strip_app, "strip_app=param.strip, default False");
        assert!(spec.container.preserve_host);
        assert_eq!(spec.files.keys().collect::<Vec<_>>(), ["Containerfile"]);
        let kinds: Vec<_> = spec.params.iter().map(|p| (p.name.as_str(), p.kind, p.required)).collect();
        assert_eq!(
            kinds,
            [
                ("port", ParamType::Int, false),
                ("strip", ParamType::Bool, false),
                ("workers", ParamType::Integer, false),
                ("tags", ParamType::List, false),
                ("env", ParamType::Dict, false),
                ("app_name", ParamType::String, false),
                ("token", ParamType::String, true),
            ]
        );
        assert_eq!(
            spec.warnings,
            [
                "plugin exec.in is not run",
                "permission exec.in.run is not used",
                "ace.api routes are not served",
                "container.config cargs (use --carg) ignored",
            ]
        );
        let p = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(
            spec.check_params(&p(&[("token", "t"), ("workers", "x")])).unwrap_err().to_string(),
            "param workers is not an int"
        );
        assert_eq!(
            spec.check_params(&p(&[("token", "t"), ("tags", "{}")])).unwrap_err().to_string(),
            "param tags is not a json list"
        );
        assert_eq!(
            spec.check_params(&p(&[("token", "t"), ("env", "[1]")])).unwrap_err().to_string(),
            "param env is not a json dict"
        );
        assert!(spec.check_params(&p(&[("token", "t"), ("workers", "-3"), ("env", "{\"a\":1}")])).is_ok());
        assert!(spec.check_params(&p(&[])).is_err(), "token is required");
    }

    #[test]
    fn proxy_specs_and_what_cannot_be_served() {
        let app = "load('proxy.in', 'proxy')\napp = ace.app('p', routes=[ace.proxy('/', proxy.config('http://127.0.0.1:9/x', strip_path='/a'))])\n";
        let spec = load("p", files(app, ""), "/specs/p").unwrap();
        assert_eq!(spec.kind, SpecKind::Proxy);
        let plan = spec.url_plan(&BTreeMap::new()).unwrap();
        assert_eq!(plan.url.to_string(), "http://127.0.0.1:9/x", "a fixed URL in app.star is the url default");
        assert_eq!(spec.warnings, ["proxy.config strip_path is ignored"]);

        let err = load("s", files("app = ace.app('s', static_only=True)", ""), "/s").unwrap_err();
        assert!(matches!(err, SpecStarError::Unsupported { .. }), "{err}");
        let err = load("x", files("ap = ace.app('x')", ""), "/x").unwrap_err().to_string();
        assert_eq!(err, "app not defined, check app.star, add 'app = ace.app(...)'");
        let err = load(
            "x",
            files("load('container.in', 'container')\napp = ace.app('x', container=container.config(port=-1))", ""),
            "/x",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("port must be an integer higher than or equal to zero") && err.contains("/x/app.star:2"),
            "{err}"
        );
    }

    #[test]
    fn a_source_params_star_replaces_the_spec_params() {
        let app = "load('proxy.in', 'proxy')\nload('container.in', 'container')\n\
                   app = ace.app('a', routes=[ace.proxy('/', proxy.config(container.URL))], container=container.config(port=param.port))\n";
        let spec = load("a", files(app, "param('port', type=INT, default=8000)"), "/specs/a").unwrap();
        let mine =
            with_source_params(&spec, "param('port', type=INT, default=7000)\nparam('greeting')", "/src").unwrap();
        assert_eq!(mine.container.port, Some(7000), "app.star sees the source's params");
        assert!(mine.params.iter().any(|p| p.name == "greeting" && p.required));
        assert_eq!(mine.files, spec.files);
        assert_eq!(mine.origin, spec.origin);
        let err = with_source_params(&spec, "param('port', type=INT, default='x')", "/src").unwrap_err().to_string();
        assert!(err.contains("/src (the source's params.star)/params.star:1:"), "{err}");
        assert!(err.contains("param port is of type int but default value is not an int"), "{err}");
    }
}
