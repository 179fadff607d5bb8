//! berth: a self-hosted app server. See docs/ARCHITECTURE.md for the module map and the
//! request path (routing → apps → engine → proxy).

pub mod acme;
pub mod api;
pub mod app_path;
pub mod apps;
pub mod audit;
pub mod auth;
pub mod build;
pub mod cli;
pub mod config;
pub mod declare;
pub mod engine;
pub mod errors;
pub mod ids;
pub mod metrics;
pub mod proxy;
pub mod routing;
pub mod secrets;
pub mod server;
pub mod source;
pub mod specs;
pub mod store;
