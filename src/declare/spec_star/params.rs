//! `params.star`: Clace's `param(...)` declarations, evaluated with a real Starlark
//! interpreter and checked with Clace's validation messages; and the typed `param.<name>`
//! values `app.star` sees.

use std::cell::RefCell;

use serde_json::Value as Json;
use starlark::any::ProvidesStaticType;
use starlark::environment::{GlobalsBuilder, Module};
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::none::NoneType;
use starlark::values::Value;

/// A param type of `params.star` (`type=STRING|INT|BOOLEAN|LIST|DICT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StarType {
    String,
    Int,
    Boolean,
    List,
    Dict,
}

impl StarType {
    fn parse(name: &str) -> Option<StarType> {
        Some(match name {
            "STRING" => StarType::String,
            "INT" => StarType::Int,
            "BOOLEAN" => StarType::Boolean,
            "LIST" => StarType::List,
            "DICT" => StarType::Dict,
            _ => return None,
        })
    }

    /// The type and value words of Clace's "default value is not ..." message.
    fn words(self) -> (&'static str, &'static str) {
        match self {
            StarType::String => ("string", "a string"),
            StarType::Int => ("int", "an int"),
            StarType::Boolean => ("bool", "a bool"),
            StarType::List => ("list", "a list"),
            StarType::Dict => ("dict", "a dict"),
        }
    }

    fn accepts(self, value: &Json) -> bool {
        match self {
            StarType::String => value.is_string(),
            StarType::Int => value.is_i64() || value.is_u64(),
            StarType::Boolean => value.is_boolean(),
            StarType::List => value.is_array(),
            StarType::Dict => value.is_object(),
        }
    }

    /// The value a param gets with `required=False` and no default: `""`, `0`, `False`, `[]`, `{}`.
    pub fn zero(self) -> Json {
        match self {
            StarType::String => Json::String(String::new()),
            StarType::Int => Json::from(0),
            StarType::Boolean => Json::Bool(false),
            StarType::List => Json::Array(Vec::new()),
            StarType::Dict => Json::Object(Default::default()),
        }
    }
}

/// One `param(...)` call.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamDecl {
    pub name: String,
    pub kind: StarType,
    /// The declared default, or the zero value of an optional param without one.
    pub default: Option<Json>,
    pub description: String,
    pub required: bool,
    pub display_type: String,
}

impl ParamDecl {
    /// The default as the container's env var holds it (Clace's `paramValuesStr`): an INT as a
    /// decimal, a BOOLEAN as `true`/`false`, a LIST/DICT as compact JSON, a STRING as is.
    pub fn default_text(&self) -> Option<String> {
        self.default.as_ref().map(|v| match v {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

#[derive(ProvidesStaticType, Default)]
struct Declared(RefCell<Vec<ParamDecl>>);

fn declare(
    declared: &Declared,
    name: &str,
    kind: &str,
    default: Option<Json>,
    description: &str,
    required: bool,
    display_type: &str,
) -> anyhow::Result<()> {
    if name.is_empty() {
        anyhow::bail!("param name is required");
    }
    if name.chars().any(char::is_whitespace) {
        anyhow::bail!("param name {name:?} has spaces");
    }
    let kind = StarType::parse(kind).ok_or_else(|| anyhow::anyhow!("unknown type {kind} for {name}"))?;
    if declared.0.borrow().iter().any(|p| p.name == name) {
        anyhow::bail!("param {name:?} already defined");
    }
    if let Some(value) = &default {
        if !kind.accepts(value) {
            let (type_word, value_word) = kind.words();
            anyhow::bail!("param {name} is of type {type_word} but default value is not {value_word}");
        }
    }
    if !display_type.is_empty() {
        let base = display_type.split(':').next().unwrap_or_default().to_ascii_lowercase();
        if !matches!(base.as_str(), "password" | "textarea" | "file") {
            anyhow::bail!("invalid display type {display_type} for param {name}, expected password, textarea or file");
        }
        if kind != StarType::String {
            anyhow::bail!(
                "display type {display_type} is only allowed for string params, param {name} is not a string"
            );
        }
    }
    let default = default.or_else(|| (!required).then(|| kind.zero()));
    declared.0.borrow_mut().push(ParamDecl {
        name: name.to_string(),
        kind,
        default,
        description: description.to_string(),
        required,
        display_type: display_type.to_string(),
    });
    Ok(())
}

#[starlark_module]
fn param_builtins(builder: &mut GlobalsBuilder) {
    fn param<'v>(
        name: &str,
        #[starlark(default = "STRING")] r#type: &str,
        #[starlark(default = NoneType)] default: Value<'v>,
        #[starlark(default = "")] description: &str,
        #[starlark(default = true)] required: bool,
        #[starlark(default = "")] display_type: &str,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let declared = eval
            .extra
            .and_then(|e| e.downcast_ref::<Declared>())
            .ok_or_else(|| anyhow::anyhow!("param() is only available in params.star"))?;
        let default = if default.is_none() { None } else { Some(default.to_json_value()?) };
        declare(declared, name, r#type, default, description, required, display_type)?;
        Ok(NoneType)
    }
}

/// `config(key, default)`: berth has no node config, so the default is the value.
#[starlark_module]
pub(super) fn config_builtin(builder: &mut GlobalsBuilder) {
    fn config<'v>(
        #[starlark(require = pos)] key: &str,
        #[starlark(default = NoneType)] default: Value<'v>,
    ) -> anyhow::Result<Value<'v>> {
        let _ = key;
        Ok(default)
    }
}

/// Evaluates a `params.star` text. `file` names it in error messages.
pub fn evaluate(file: &str, text: &str) -> Result<Vec<ParamDecl>, String> {
    let ast = super::parse(file, text)?;
    let mut builder = GlobalsBuilder::standard().with(param_builtins).with(config_builtin);
    for name in ["STRING", "INT", "BOOLEAN", "LIST", "DICT"] {
        builder.set(name, name);
    }
    for (name, value) in [("PASSWORD", "password"), ("TEXTAREA", "textarea"), ("FILE", "file")] {
        builder.set(name, value);
    }
    let globals = builder.build();
    let module = Module::new();
    let declared = Declared::default();
    {
        let mut eval = Evaluator::new(&module);
        eval.extra = Some(&declared);
        eval.eval_module(ast, &globals).map_err(super::star_error)?;
    }
    Ok(declared.0.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        evaluate("params.star", text).unwrap_err()
    }

    #[test]
    fn typed_params_with_defaults() {
        let decls = evaluate(
            "params.star",
            "param('port', type=INT, default=8501)\nparam('url')\nparam('debug', type=BOOLEAN, required=False)\n\
             param('tags', type=LIST, default=['a'])\nparam('env', type=DICT, default={'A': 1})\n\
             param('pw', display_type=PASSWORD, default=config('x', 'dflt'))\n",
        )
        .unwrap();
        let names: Vec<_> = decls.iter().map(|d| (d.name.as_str(), d.kind, d.default_text())).collect();
        assert_eq!(
            names,
            vec![
                ("port", StarType::Int, Some("8501".into())),
                ("url", StarType::String, None),
                ("debug", StarType::Boolean, Some("false".into())),
                ("tags", StarType::List, Some("[\"a\"]".into())),
                ("env", StarType::Dict, Some("{\"A\":1}".into())),
                ("pw", StarType::String, Some("dflt".into())),
            ]
        );
        assert!(decls[1].required);
        assert!(!decls[2].required);
    }

    #[test]
    fn clace_validation_messages() {
        assert!(err("param('a', type='FLOAT')").contains("unknown type FLOAT for a"));
        assert!(err("param('a')\nparam('a')").contains("param \"a\" already defined"));
        assert!(err("param('')").contains("param name is required"));
        assert!(err("param('a b')").contains("param name \"a b\" has spaces"));
        assert!(err("param('p1', type=INT, default='x')")
            .contains("param p1 is of type int but default value is not an int"));
        assert!(err("param('p1', type=BOOLEAN, default=1)")
            .contains("param p1 is of type bool but default value is not a bool"));
        assert!(err("param('p1', type=DICT, default=[])")
            .contains("param p1 is of type dict but default value is not a dict"));
        assert!(err("param('p1', type=LIST, default={})")
            .contains("param p1 is of type list but default value is not a list"));
        assert!(err("param('p1', default=1)").contains("param p1 is of type string but default value is not a string"));
        assert!(err("param('p1', display_type='color')").contains("invalid display type color"));
        assert!(err("param('p1', type=INT, display_type=PASSWORD)").contains("only allowed for string params"));
        assert!(evaluate("params.star", "param('p1', display_type='file:a,b')").is_ok());
        let undefined = err("param('a', type=INVALID)");
        assert_eq!(undefined, "params.star:1: undefined: INVALID");
        assert_eq!(undefined.lines().count(), 1);
    }
}
