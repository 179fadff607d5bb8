//! Apply files in Clace's (and OpenRun's) format: a Starlark program calling
//! `app(path, source, spec=, params={}, git_branch=, git_commit=, container_opts={},
//! container_args={}, app_config={}, dev=False, auth=, git_auth=, container_vols=[])` once per
//! app, and `config(key, default)` for values given with `--param key=value`. Evaluated with the
//! `starlark` crate into a typed list of [`DeclaredApp`]s. Pure: no I/O.
//!
//! Every error is one line naming the file and line. What berth cannot honour is refused, never
//! ignored: `git_auth` (berth uses git's own credentials) and `container_vols`. `auth=` sets
//! the app's authentication (`none`, `system`, `oidc_<name>`), as `app create --auth`. `dev=True` declares a
//! dev app (a local folder, rebuilt on every change, as `app create --dev`).

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use starlark::any::ProvidesStaticType;
use starlark::environment::{GlobalsBuilder, Module};
use starlark::eval::Evaluator;
use starlark::syntax::{AstModule, Dialect};
use starlark::values::none::NoneType;
use starlark::values::Value;

/// One `app(...)` call of an apply file, as written (paths and sources are checked by the
/// caller, which knows the default domain and the spec catalog).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredApp {
    /// `[domain:]path` as written.
    pub path: String,
    /// `-`, a folder or a git URL, as written.
    pub source: String,
    pub spec: Option<String>,
    pub params: BTreeMap<String, String>,
    pub git_branch: Option<String>,
    pub git_commit: Option<String>,
    /// `container_opts`: container options (`--copt`).
    pub container_options: BTreeMap<String, String>,
    /// `container_args`: build args (`--carg`).
    pub build_args: BTreeMap<String, String>,
    pub app_config: BTreeMap<String, String>,
    /// `dev=True`: a dev app.
    pub dev: bool,
    /// The line of the call (1-based), for messages.
    pub line: usize,
}

/// What an apply file evaluated to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyFile {
    pub apps: Vec<DeclaredApp>,
}

/// Evaluates the apply file `name` (used in messages) with `content`; `config_values` are the
/// `--param key=value` pairs `config(key, default)` reads.
pub fn evaluate(name: &str, content: &str, config_values: &BTreeMap<String, String>) -> Result<ApplyFile, String> {
    let ast = AstModule::parse(name, content.to_string(), &Dialect::Extended).map_err(|e| one_line(name, &e))?;
    let globals = GlobalsBuilder::standard().with(apply_builtins).build();
    let module = Module::new();
    let collected = Collected { config: config_values.clone(), apps: RefCell::new(Vec::new()) };
    {
        let mut eval = Evaluator::new(&module);
        eval.extra = Some(&collected);
        eval.eval_module(ast, &globals).map_err(|e| one_line(name, &e))?;
    }
    let apps = collected.apps.into_inner();
    for (i, app) in apps.iter().enumerate() {
        if let Some(first) = apps[..i].iter().find(|a| same_path(&a.path, &app.path)) {
            return Err(format!(
                "{name}:{}: app path {} is declared twice (first at line {})",
                app.line, app.path, first.line
            ));
        }
    }
    Ok(ApplyFile { apps })
}

/// The same path as written, ignoring a trailing `/` (the caller checks real conflicts, which
/// need the default domain).
fn same_path(a: &str, b: &str) -> bool {
    let norm = |p: &str| {
        let p = p.trim();
        if p.len() > 1 {
            p.trim_end_matches('/').to_string()
        } else {
            p.to_string()
        }
    };
    norm(a) == norm(b)
}

/// A Starlark error as `file:line: message`, on one line.
fn one_line(name: &str, e: &starlark::Error) -> String {
    let message = e.without_diagnostic().to_string();
    let message: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let message = message.join(" ");
    match e.span() {
        Some(span) => format!("{name}:{}: {message}", span.resolve_span().begin.line + 1),
        None => format!("{name}: {message}"),
    }
}

#[derive(Debug, ProvidesStaticType)]
struct Collected {
    config: BTreeMap<String, String>,
    apps: RefCell<Vec<DeclaredApp>>,
}

fn collected<'a>(eval: &'a Evaluator) -> &'a Collected {
    eval.extra.and_then(|e| e.downcast_ref::<Collected>()).expect("the evaluator carries the collected apps")
}

/// A dict of strings; other values are JSON-encoded (`{"k": 1}` → `{"k":1}`), as Clace does.
fn string_dict(arg: &str, value: Option<Value>) -> anyhow::Result<BTreeMap<String, String>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(BTreeMap::new());
    };
    let serde_json::Value::Object(map) =
        value.to_json_value().map_err(|e| anyhow::anyhow!("{arg} must be a dict of strings: {e}"))?
    else {
        anyhow::bail!("{arg} must be a dict, got {}", value.get_type());
    };
    Ok(map
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect())
}

fn optional_string(arg: &str, value: Option<Value>) -> anyhow::Result<Option<String>> {
    match value.filter(|v| !v.is_none()) {
        None => Ok(None),
        Some(v) => match v.unpack_str() {
            Some("") => Ok(None),
            Some(s) => Ok(Some(s.to_string())),
            None => anyhow::bail!("{arg} must be a string, got {}", v.get_type()),
        },
    }
}

#[starlark::starlark_module]
fn apply_builtins(builder: &mut GlobalsBuilder) {
    /// Declares one app.
    #[allow(clippy::too_many_arguments)]
    fn app<'v>(
        path: &str,
        source: &str,
        #[starlark(require = named)] spec: Option<Value<'v>>,
        #[starlark(require = named)] params: Option<Value<'v>>,
        #[starlark(require = named)] git_branch: Option<Value<'v>>,
        #[starlark(require = named)] git_commit: Option<Value<'v>>,
        #[starlark(require = named)] container_opts: Option<Value<'v>>,
        #[starlark(require = named)] container_args: Option<Value<'v>>,
        #[starlark(require = named)] app_config: Option<Value<'v>>,
        #[starlark(require = named, default = false)] dev: bool,
        #[starlark(require = named)] auth: Option<Value<'v>>,
        #[starlark(require = named)] git_auth: Option<Value<'v>>,
        #[starlark(require = named)] container_vols: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        if optional_string("git_auth", git_auth)?.is_some() {
            anyhow::bail!("app {path}: git_auth is not supported: berth uses git's own credentials (credential helpers, SSH keys)");
        }
        if container_vols.is_some_and(|v| !v.is_none() && v.length().unwrap_or(1) > 0) {
            anyhow::bail!("app {path}: container_vols is not supported by berth");
        }
        let line = eval.call_stack_top_location().map(|s| s.resolve_span().begin.line + 1).unwrap_or(0);
        let mut app = DeclaredApp {
            path: path.to_string(),
            source: source.to_string(),
            spec: optional_string("spec", spec)?,
            params: string_dict("params", params)?,
            git_branch: optional_string("git_branch", git_branch)?,
            git_commit: optional_string("git_commit", git_commit)?,
            container_options: string_dict("container_opts", container_opts)?,
            build_args: string_dict("container_args", container_args)?,
            app_config: string_dict("app_config", app_config)?,
            dev,
            line,
        };
        // `auth=` is the app config key `auth` (checked, like `--auth`, when the app is made).
        if let Some(auth) = optional_string("auth", auth)? {
            app.app_config.insert(crate::auth::APP_CONFIG_KEY.to_string(), auth);
        }
        collected(eval).apps.borrow_mut().push(app);
        Ok(NoneType)
    }

    /// The value of `--param key=value`, else `default`; a key without either is an error.
    fn config<'v>(
        key: &str,
        default: Option<Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        if let Some(v) = collected(eval).config.get(key).cloned() {
            return Ok(eval.heap().alloc(v));
        }
        default
            .ok_or_else(|| anyhow::anyhow!("config {key:?} has no value: pass --param {key}=VALUE or give a default"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(content: &str) -> Result<ApplyFile, String> {
        evaluate("apps.star", content, &BTreeMap::from([("domain".to_string(), "example.".to_string())]))
    }

    #[test]
    fn the_issues_three_examples() {
        let file = eval(
            r#"
limits = {"cpus": "1", "memory": "512m"}
app("/misc/streamlit_example", "github.com/streamlit/streamlit-example", git_branch="master",
    spec="python-streamlit", container_opts=limits)
app("fasthtml.:", "github.com/AnswerDotAI/fasthtml/examples", spec="python-fasthtml",
    params={"APP_MODULE": "basic_ws:app"}, container_opts=limits)
app("/internal", "-", spec="proxy", params={"url": "http://127.0.0.1:8080"})
"#,
        )
        .unwrap();
        assert_eq!(file.apps.len(), 3);
        let a = &file.apps[0];
        assert_eq!((a.path.as_str(), a.line), ("/misc/streamlit_example", 3));
        assert_eq!(a.git_branch.as_deref(), Some("master"));
        assert_eq!(a.spec.as_deref(), Some("python-streamlit"));
        assert_eq!(a.container_options["memory"], "512m");
        assert_eq!(file.apps[1].path, "fasthtml.:");
        assert_eq!(file.apps[1].params["APP_MODULE"], "basic_ws:app");
        assert_eq!(file.apps[2].source, "-");
        assert_eq!(file.apps[2].line, 7);
    }

    #[test]
    fn non_string_values_are_json_encoded_and_config_reads_params() {
        let file = eval(
            r#"
app(config("domain") + ":/", "-", spec="proxy",
    params={"url": "http://127.0.0.1:9", "k": {"a": 1}, "l": [5, 6], "n": 3, "b": True},
    app_config={"container.idle_shutdown_secs": 30})
app("/x", config("src", "-"), spec="proxy", params={"url": "http://127.0.0.1:9"})
"#,
        )
        .unwrap();
        let a = &file.apps[0];
        assert_eq!(a.path, "example.:/");
        assert_eq!(a.params["k"], r#"{"a":1}"#);
        assert_eq!(a.params["l"], "[5,6]");
        assert_eq!(a.params["n"], "3");
        assert_eq!(a.params["b"], "true");
        assert_eq!(a.app_config["container.idle_shutdown_secs"], "30");
        assert_eq!(file.apps[1].source, "-");
    }

    #[test]
    fn errors_are_one_line_with_file_and_line() {
        let cases = [
            ("app(\"/a\", \"-\"))\n", "apps.star:1:"),
            ("\n\napp(\"/a\", \"-\", nope=1)\n", "apps.star:3:"),
            ("\napp(\"/a\", \"-\", params=[1])\n", "apps.star:2:"),
            ("\napp(\"/a\", \"-\", git_branch=3)\n", "apps.star:2:"),
            (
                "app(\"/a\", \"-\")\napp(\"/a/\", \"-\")\n",
                "apps.star:2: app path /a/ is declared twice (first at line 1)",
            ),
            ("\n\n\napp(config(\"missing\"), \"-\")\n", "apps.star:4:"),
            ("app(\"/a\", \"-\", git_auth=\"k\")\n", "git_auth is not supported"),
            ("app(\"/a\", \"-\", container_vols=[\"/x:/y\"])\n", "container_vols is not supported"),
            ("app(\"/a\")\n", "apps.star:1:"),
        ];
        for (content, expected) in cases {
            let err = eval(content).unwrap_err();
            assert!(err.contains(expected), "{content:?}: {err}");
            assert!(!err.contains('\n'), "{content:?}: more than one line: {err}");
        }
        let err = eval("\n\n\napp(config(\"missing\"), \"-\")\n").unwrap_err();
        assert!(err.contains("config \"missing\" has no value"), "{err}");
    }

    #[test]
    fn empty_and_none_values_mean_unset() {
        let file = eval(
            "app(\"/a\", \"-\", spec=\"proxy\", git_branch=\"\", params=None, auth=\"none\", container_vols=[])\n",
        )
        .unwrap();
        assert_eq!(file.apps[0].git_branch, None);
        assert!(file.apps[0].params.is_empty());
        assert_eq!(file.apps[0].app_config.get("auth").map(String::as_str), Some("none"));
        let file = eval("app(\"/a\", \"-\", spec=\"proxy\", auth=\"system\")\n").unwrap();
        assert_eq!(file.apps[0].app_config.get("auth").map(String::as_str), Some("system"));
    }
}
