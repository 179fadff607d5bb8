//! `app.star`: Clace's `ace`, `proxy` and `container` builtins, evaluated with the declared
//! params as `param.<name>`. Every builtin returns plain data (a JSON-like dict tagged with
//! the builtin's name), so the result of `ace.app(...)` can be read without the interpreter.

use std::cell::RefCell;

use serde_json::{json, Value as Json};
use starlark::environment::{FrozenModule, Globals, GlobalsBuilder, Module};
use starlark::eval::{Evaluator, FileLoader};
use starlark::starlark_module;
use starlark::values::none::NoneType;
use starlark::values::structs::AllocStruct;
use starlark::values::tuple::UnpackTuple;
use starlark::values::{Heap, Value};

use super::params::ParamDecl;

/// Clace's placeholder for "the app's container" in `proxy.config(...)`.
pub const CONTAINER_URL: &str = "<CONTAINER_URL>";
/// The key naming the builtin that made a value.
pub const TAG: &str = "__builtin";

/// What evaluating `app.star` gives: the `app` value and the plugins it loaded.
#[derive(Debug, Clone)]
pub struct AppValue {
    pub app: Json,
    pub loads: Vec<String>,
}

/// The placeholder a required param without a default has while a spec is read (no app
/// gives it a value yet): its name in angle brackets for a string, else the zero value.
pub fn placeholder(decl: &ParamDecl) -> Json {
    match decl.kind {
        super::params::StarType::String => Json::String(format!("<param:{}>", decl.name)),
        other => other.zero(),
    }
}

fn tagged<'v>(heap: &'v Heap, name: &str, mut fields: serde_json::Map<String, Json>) -> Value<'v> {
    fields.insert(TAG.into(), Json::String(name.into()));
    heap.alloc(Json::Object(fields))
}

/// Arguments as JSON where they have one; functions and other values become their type name.
fn to_json(v: Value) -> Json {
    v.to_json_value().unwrap_or_else(|_| Json::String(format!("<{}>", v.get_type())))
}

fn kwargs_json(kwargs: &starlark::collections::SmallMap<String, Value>) -> serde_json::Map<String, Json> {
    kwargs.iter().map(|(k, v)| (k.clone(), to_json(*v))).collect()
}

/// A builtin berth does not run (handlers, actions, styles...): it records its name only.
fn unsupported<'v>(heap: &'v Heap, name: &str) -> Value<'v> {
    tagged(heap, name, serde_json::Map::new())
}

#[starlark_module]
fn ace_members(builder: &mut GlobalsBuilder) {
    fn app<'v>(
        #[starlark(require = pos)] name: Value<'v>,
        #[starlark(kwargs)] kwargs: starlark::collections::SmallMap<String, Value<'v>>,
        heap: &'v Heap,
    ) -> anyhow::Result<Value<'v>> {
        let mut fields = kwargs_json(&kwargs);
        fields.insert("name".into(), to_json(name));
        Ok(tagged(heap, "ace.app", fields))
    }

    fn proxy<'v>(
        #[starlark(require = pos)] path: &str,
        #[starlark(require = pos)] config: Value<'v>,
        #[starlark(args)] _rest: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] _kwargs: starlark::collections::SmallMap<String, Value<'v>>,
        heap: &'v Heap,
    ) -> anyhow::Result<Value<'v>> {
        let config = to_json(config);
        if config.get(TAG).and_then(Json::as_str) != Some("proxy.config") {
            anyhow::bail!("ace.proxy needs the result of proxy.config(...) as its config");
        }
        let fields = json!({"path": path, "config": config});
        Ok(tagged(heap, "ace.proxy", fields.as_object().cloned().unwrap_or_default()))
    }

    fn permission<'v>(
        #[starlark(require = pos)] plugin: &str,
        #[starlark(require = pos)] method: &str,
        #[starlark(default = NoneType)] arguments: Value<'v>,
        #[starlark(default = "")] r#type: &str,
        #[starlark(default = NoneType)] secrets: Value<'v>,
        heap: &'v Heap,
    ) -> anyhow::Result<Value<'v>> {
        let kind = r#type.to_ascii_uppercase();
        if !matches!(kind.as_str(), "" | "READ" | "WRITE") {
            anyhow::bail!("invalid permission type {}, expected READ or WRITE", r#type);
        }
        let _ = secrets;
        let fields = json!({"plugin": plugin, "method": method, "arguments": to_json(arguments), "type": kind});
        Ok(tagged(heap, "ace.permission", fields.as_object().cloned().unwrap_or_default()))
    }

    fn api<'v>(
        #[starlark(args)] _a: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] _k: starlark::collections::SmallMap<String, Value<'v>>,
        heap: &'v Heap,
    ) -> anyhow::Result<Value<'v>> {
        Ok(unsupported(heap, "ace.api"))
    }

    fn html<'v>(
        #[starlark(args)] _a: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] _k: starlark::collections::SmallMap<String, Value<'v>>,
        heap: &'v Heap,
    ) -> anyhow::Result<Value<'v>> {
        Ok(unsupported(heap, "ace.html"))
    }

    fn fragment<'v>(
        #[starlark(args)] _a: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] _k: starlark::collections::SmallMap<String, Value<'v>>,
        heap: &'v Heap,
    ) -> anyhow::Result<Value<'v>> {
        Ok(unsupported(heap, "ace.fragment"))
    }

    fn action<'v>(
        #[starlark(args)] _a: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] _k: starlark::collections::SmallMap<String, Value<'v>>,
        heap: &'v Heap,
    ) -> anyhow::Result<Value<'v>> {
        Ok(unsupported(heap, "ace.action"))
    }

    fn redirect<'v>(
        #[starlark(args)] _a: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] _k: starlark::collections::SmallMap<String, Value<'v>>,
        heap: &'v Heap,
    ) -> anyhow::Result<Value<'v>> {
        Ok(unsupported(heap, "ace.redirect"))
    }

    fn response<'v>(
        #[starlark(args)] _a: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] _k: starlark::collections::SmallMap<String, Value<'v>>,
        heap: &'v Heap,
    ) -> anyhow::Result<Value<'v>> {
        Ok(unsupported(heap, "ace.response"))
    }

    fn style<'v>(
        #[starlark(args)] _a: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] _k: starlark::collections::SmallMap<String, Value<'v>>,
        heap: &'v Heap,
    ) -> anyhow::Result<Value<'v>> {
        Ok(unsupported(heap, "ace.style"))
    }

    fn library<'v>(
        #[starlark(args)] _a: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] _k: starlark::collections::SmallMap<String, Value<'v>>,
        heap: &'v Heap,
    ) -> anyhow::Result<Value<'v>> {
        Ok(unsupported(heap, "ace.library"))
    }
}

#[starlark_module]
fn proxy_members(builder: &mut GlobalsBuilder) {
    fn config<'v>(
        #[starlark(require = pos)] url: &str,
        #[starlark(default = "")] strip_path: &str,
        #[starlark(default = false)] preserve_host: bool,
        #[starlark(default = true)] strip_app: bool,
        #[starlark(default = NoneType)] response_headers: Value<'v>,
        heap: &'v Heap,
    ) -> anyhow::Result<Value<'v>> {
        let headers = if response_headers.is_none() { json!({}) } else { to_json(response_headers) };
        let fields = json!({"url": url, "strip_path": strip_path, "preserve_host": preserve_host,
            "strip_app": strip_app, "response_headers": headers});
        Ok(tagged(heap, "proxy.config", fields.as_object().cloned().unwrap_or_default()))
    }
}

// `container.config` takes Clace's eight arguments.
#[allow(clippy::too_many_arguments)]
#[starlark_module]
fn container_members(builder: &mut GlobalsBuilder) {
    fn config<'v>(
        #[starlark(default = "auto")] src: &str,
        #[starlark(default = 0)] port: i64,
        #[starlark(default = "http")] scheme: &str,
        #[starlark(default = "/")] health: &str,
        #[starlark(default = "app")] lifetime: &str,
        #[starlark(default = "")] build_dir: &str,
        #[starlark(default = NoneType)] volumes: Value<'v>,
        #[starlark(default = NoneType)] cargs: Value<'v>,
        heap: &'v Heap,
    ) -> anyhow::Result<Value<'v>> {
        if port < 0 {
            anyhow::bail!("port must be an integer higher than or equal to zero");
        }
        let or_empty = |v: Value, empty: Json| if v.is_none() { empty } else { to_json(v) };
        let fields = json!({"src": src, "port": port, "scheme": scheme, "health": health, "lifetime": lifetime,
            "build_dir": build_dir, "volumes": or_empty(volumes, json!([])), "cargs": or_empty(cargs, json!({}))});
        Ok(tagged(heap, "container.config", fields.as_object().cloned().unwrap_or_default()))
    }

    fn run<'v>(
        #[starlark(args)] _a: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] _k: starlark::collections::SmallMap<String, Value<'v>>,
        heap: &'v Heap,
    ) -> anyhow::Result<Value<'v>> {
        Ok(unsupported(heap, "container.run"))
    }
}

fn plugin_globals() -> Globals {
    let mut builder = GlobalsBuilder::extended_by(&[starlark::environment::LibraryExtension::StructType]);
    builder.namespace("__proxy", proxy_members);
    builder.namespace("__container", |b| {
        container_members(b);
        b.set("URL", CONTAINER_URL);
        b.set("AUTO", "auto");
        b.set("NIXPACKS", "nixpacks");
        b.set("IMAGE_PREFIX", "image:");
        b.set("COMMAND", "command");
    });
    builder.build()
}

/// A frozen module holding one symbol: `code` assigns it from the plugin globals.
fn plugin_module(file: &str, code: &str) -> anyhow::Result<FrozenModule> {
    let module = Module::new();
    {
        let mut eval = Evaluator::new(&module);
        let ast = super::parse(file, code).map_err(anyhow::Error::msg)?;
        eval.eval_module(ast, &plugin_globals()).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    module.freeze().map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// Resolves `load("proxy.in", "proxy")` and `load("container.in", "container")` to the
/// builtins; any other plugin (`exec.in`, `fs.in`...) to an empty namespace of its name,
/// recorded so the caller can warn that berth does not run it.
struct PluginLoader {
    loads: RefCell<Vec<String>>,
}

impl FileLoader for PluginLoader {
    fn load(&self, path: &str) -> starlark::Result<FrozenModule> {
        self.loads.borrow_mut().push(path.to_string());
        let code = match path {
            "proxy.in" => "proxy = __proxy\n".to_string(),
            "container.in" => "container = __container\n".to_string(),
            other => {
                let symbol = other.strip_suffix(".in").unwrap_or(other);
                if symbol.is_empty() || !symbol.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(starlark::Error::new_other(anyhow::anyhow!("cannot load {other}: not a plugin")));
                }
                format!("{symbol} = struct()\n")
            }
        };
        plugin_module(path, &code).map_err(starlark::Error::new_other)
    }
}

/// Evaluates an `app.star` text with `params` as `param.<name>` (each holding `values[name]`).
pub fn evaluate(file: &str, text: &str, params: &[(String, Json)]) -> Result<AppValue, String> {
    let ast = super::parse(file, text)?;
    let mut builder = GlobalsBuilder::extended_by(&[starlark::environment::LibraryExtension::StructType])
        .with(super::params::config_builtin);
    builder.namespace("ace", |b| {
        ace_members(b);
        b.set("CONTAINER_URL", CONTAINER_URL);
        for (name, value) in [("GET", "GET"), ("POST", "POST"), ("PUT", "PUT"), ("DELETE", "DELETE")] {
            b.set(name, value);
        }
        for (name, value) in
            [("READ", "READ"), ("WRITE", "WRITE"), ("HTML", "HTML"), ("JSON", "JSON"), ("TEXT", "TEXT")]
        {
            b.set(name, value);
        }
    });
    let globals = builder.build();
    let module = Module::new();
    let loader = PluginLoader { loads: RefCell::new(Vec::new()) };
    let heap = module.heap();
    let fields: Vec<(String, Value)> = params.iter().map(|(k, v)| (k.clone(), heap.alloc(v.clone()))).collect();
    module.set("param", heap.alloc(AllocStruct(fields)));
    {
        let mut eval = Evaluator::new(&module);
        eval.set_loader(&loader);
        eval.eval_module(ast, &globals).map_err(super::star_error)?;
    }
    let app = module
        .get("app")
        .filter(|v| v.to_json_value().ok().and_then(|j| j.get(TAG).cloned()) == Some(Json::String("ace.app".into())))
        .ok_or("app not defined, check app.star, add 'app = ace.app(...)'")?;
    let app = app.to_json_value().map_err(|e| format!("{file}: {e}"))?;
    Ok(AppValue { app, loads: loader.loads.into_inner() })
}
