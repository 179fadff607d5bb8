//! The container engine behind a trait. [`ContainerEngine`] is the seam for backends: `docker.rs`
//! speaks the Docker Engine API (or Podman's compatible API) through bollard, `fake.rs` is an
//! in-memory engine for tests with scriptable faults; a cluster engine (Swarm, ...) would be one
//! more implementation. The engine knows containers and images, never apps' configuration:
//! callers hand it a [`ContainerSpec`]. Everyone holds an [`Engine`], a cheap clonable handle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::watch;

pub mod docker;
pub mod fake;
pub mod options;

/// Label keys berth puts on every container it creates.
pub const LABEL_MANAGED: &str = "berth.managed";
pub const LABEL_INSTANCE: &str = "berth.instance";
pub const LABEL_APP_ID: &str = "berth.app.id";
pub const LABEL_CONFIG_HASH: &str = "berth.config.hash";
pub const LABEL_VARIANT: &str = "berth.variant";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the container engine at {endpoint}")]
    Connect { endpoint: String, source: bollard::errors::Error },
    /// The engine does not answer (connection refused, socket missing, no answer in time).
    #[error("container engine unavailable: {0}")]
    Unavailable(String),
    #[error("image {image} is not present and pulling it failed: {message}")]
    Pull { image: String, message: String },
    #[error("container {0} not found")]
    NotFound(String),
    #[error("container engine error: {0}")]
    Api(bollard::errors::Error),
    #[error("container {0} publishes no port on 127.0.0.1")]
    NoPort(String),
    #[error("{0}")]
    Build(String),
    /// The container is being removed, or its name is still taken by one that is.
    #[error("container {0} is being removed")]
    Removing(String),
}

impl EngineError {
    /// The engine could not be reached at all: not the app's fault, and worth retrying soon.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, EngineError::Connect { .. } | EngineError::Unavailable(_))
    }
}

/// What to create: everything the engine needs and nothing about apps.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub port: u16,
    pub env: Vec<(String, String)>,
    pub labels: HashMap<String, String>,
    pub init: bool,
    pub options: options::ContainerOptions,
}

/// A container berth created, as listed by the engine.
#[derive(Debug, Clone)]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub running: bool,
    pub labels: HashMap<String, String>,
}

/// One container as inspected: whether it runs, and where its port is published on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerStatus {
    pub running: bool,
    pub upstream: Option<SocketAddr>,
    /// Frozen by the engine's pause (`running` stays true).
    pub paused: bool,
}

/// One sample of a container's resource use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContainerStats {
    pub memory_bytes: u64,
    /// Percent of one CPU (200.0 = two CPUs busy).
    pub cpu_percent: f64,
}

/// What happened to a container, as reported by the engine's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerAction {
    Create,
    Start,
    Die { exit_code: Option<i64> },
    Stop,
    Kill,
    Oom,
    Destroy,
    Pause,
    Unpause,
    Other(String),
}

impl ContainerAction {
    /// The engine's action name (`die`, `start`, ...) and its attributes.
    pub fn parse(action: &str, exit_code: Option<&str>) -> ContainerAction {
        match action {
            "create" => ContainerAction::Create,
            "start" => ContainerAction::Start,
            "die" => ContainerAction::Die { exit_code: exit_code.and_then(|c| c.parse().ok()) },
            "stop" => ContainerAction::Stop,
            "kill" => ContainerAction::Kill,
            "oom" => ContainerAction::Oom,
            "destroy" | "remove" => ContainerAction::Destroy,
            "pause" => ContainerAction::Pause,
            "unpause" => ContainerAction::Unpause,
            other => ContainerAction::Other(other.to_string()),
        }
    }

    /// The container no longer runs after this.
    pub fn ends_run(&self) -> bool {
        matches!(
            self,
            ContainerAction::Die { .. }
                | ContainerAction::Stop
                | ContainerAction::Kill
                | ContainerAction::Oom
                | ContainerAction::Destroy
        )
    }
}

/// A container's state change reported by the engine's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub container_id: String,
    pub action: ContainerAction,
}

/// A container engine. Control calls answer within a bounded time (an engine that hangs
/// answers [`EngineError::Unavailable`]); streams (events, logs, build output) do not.
#[async_trait::async_trait]
pub trait ContainerEngine: Send + Sync {
    /// Where the engine is, for messages.
    fn endpoint(&self) -> &str;
    /// Whether the engine answers.
    async fn ping(&self) -> Result<(), EngineError>;
    async fn image_exists(&self, image: &str) -> Result<bool, EngineError>;
    /// Makes sure the image is present: never pulls an image that is already there.
    async fn ensure_image(&self, image: &str) -> Result<(), EngineError>;
    /// Builds `tag` from a tar context; each output line goes to `on_line`. The error carries
    /// the engine's message.
    async fn build(
        &self,
        context: Vec<u8>,
        tag: &str,
        containerfile: &str,
        build_args: &HashMap<String, String>,
        on_line: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<(), EngineError>;
    /// Removes an image unless a container still uses it (false); a missing image is not an error.
    async fn remove_image(&self, image: &str) -> Result<bool, EngineError>;
    /// Creates (does not start) a container publishing `spec.port` on a random 127.0.0.1 port.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, EngineError>;
    async fn start(&self, id: &str) -> Result<(), EngineError>;
    async fn stop(&self, id: &str, timeout_secs: u64) -> Result<(), EngineError>;
    async fn pause(&self, id: &str) -> Result<(), EngineError>;
    async fn unpause(&self, id: &str) -> Result<(), EngineError>;
    /// Removes a container, running or not; a missing one is not an error.
    async fn remove(&self, id: &str) -> Result<(), EngineError>;
    /// Whether the container runs and where `port` is published on 127.0.0.1.
    async fn inspect(&self, id: &str, port: u16) -> Result<ContainerStatus, EngineError>;
    /// Every container (running or not) carrying all the given labels.
    async fn list_labelled(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerSummary>, EngineError>;
    /// Memory use and CPU load of a running container, one sample.
    async fn stats(&self, id: &str) -> Result<ContainerStats, EngineError>;
    /// Container events for containers with the given label; ends (or fails) when the
    /// connection to the engine does.
    fn events(&self, label: (&str, &str)) -> BoxStream<'static, Result<ContainerEvent, EngineError>>;
    /// The container's output: the last `tail` lines, then new lines while `follow`.
    fn logs(
        &self,
        id: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> BoxStream<'static, Result<bytes::Bytes, EngineError>>;
}

/// The engine handle everyone holds: cheap to clone, dereferences to the trait. It also
/// carries whether the engine is known to answer, shared by all clones: whoever sees it
/// unreachable says so ([`Engine::report_unavailable`]), one monitor pings it until it answers
/// and marks it available again.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<dyn ContainerEngine>,
    available: Arc<watch::Sender<bool>>,
}

impl std::ops::Deref for Engine {
    type Target = dyn ContainerEngine;
    fn deref(&self) -> &Self::Target {
        &*self.inner
    }
}

impl Engine {
    pub fn new(engine: Arc<dyn ContainerEngine>) -> Engine {
        Engine { inner: engine, available: Arc::new(watch::Sender::new(true)) }
    }

    /// Marks the engine unreachable (wakes the monitor); returns whether it was thought up.
    pub fn report_unavailable(&self) -> bool {
        self.available.send_if_modified(|up| std::mem::replace(up, false))
    }

    /// Marks the engine reachable again; returns whether it was thought down.
    pub fn report_available(&self) -> bool {
        self.available.send_if_modified(|up| !std::mem::replace(up, true))
    }

    pub fn is_available(&self) -> bool {
        *self.available.borrow()
    }

    /// Follows the engine's availability.
    pub fn availability(&self) -> watch::Receiver<bool> {
        self.available.subscribe()
    }

    /// Connects to a Docker or Podman API endpoint (empty: `DOCKER_HOST` or the default socket).
    pub async fn connect(endpoint: &str) -> Result<Engine, EngineError> {
        Ok(Engine::new(Arc::new(docker::DockerEngine::connect(endpoint).await?)))
    }

    /// Like [`Engine::connect`], but an engine that does not answer yet is no error: the handle
    /// starts out unavailable (so the monitor pings it) and connects once the engine answers.
    pub async fn open(endpoint: &str) -> Result<Engine, EngineError> {
        match Engine::connect(endpoint).await {
            Err(EngineError::Unavailable(reason)) => {
                tracing::warn!("{reason}; starting anyway: apps are adopted and started once it answers");
                let engine = Engine::new(Arc::new(docker::DockerEngine::new(endpoint)));
                engine.report_unavailable();
                Ok(engine)
            }
            other => other,
        }
    }

    /// [`ContainerEngine::build`] with any closure as the line sink.
    pub async fn build(
        &self,
        context: Vec<u8>,
        tag: &str,
        containerfile: &str,
        build_args: &HashMap<String, String>,
        mut on_line: impl FnMut(&str) + Send,
    ) -> Result<(), EngineError> {
        self.inner.build(context, tag, containerfile, build_args, &mut on_line).await
    }

    /// The last `lines` lines of the container's output as text, for error messages.
    pub async fn log_tail(&self, id: &str, lines: usize) -> String {
        let chunks: Vec<_> = self.inner.logs(id, Some(lines), false).take(lines * 4).collect().await;
        let mut text = String::new();
        for chunk in chunks.into_iter().flatten() {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse() {
        assert_eq!(ContainerAction::parse("die", Some("3")), ContainerAction::Die { exit_code: Some(3) });
        assert_eq!(ContainerAction::parse("die", None), ContainerAction::Die { exit_code: None });
        assert_eq!(ContainerAction::parse("destroy", None), ContainerAction::Destroy);
        assert_eq!(ContainerAction::parse("exec_start", None), ContainerAction::Other("exec_start".into()));
        assert!(ContainerAction::Oom.ends_run());
        assert!(!ContainerAction::Pause.ends_run());
    }

    #[test]
    fn unavailable_is_distinct() {
        assert!(EngineError::Unavailable("connection refused".into()).is_unavailable());
        assert!(!EngineError::NotFound("x".into()).is_unavailable());
        assert!(!EngineError::Build("x".into()).is_unavailable());
    }
}
