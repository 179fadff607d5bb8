//! Declarative input in Clace's Starlark formats: Clace-format spec folders (`params.star`,
//! `app.star`) read into berth specs, and apply files (`app(...)` calls) read into an apply
//! plan that creates or stages apps, run once (`berth apply`) or on a schedule (`berth sync`).
//! Pure evaluation and planning; never talks to the engine or the store itself.

pub mod apply_file;
pub mod plan;
pub mod spec_star;
pub mod sync;
