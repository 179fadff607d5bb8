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
    let message = message.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("error").to_string();
    match e.span() {
        Some(span) => format!("{}:{}: {message}", span.filename(), span.resolve_span().begin.line + 1),
        None => message,
    }
}
