//! One container app's runtime: the state machine, single-flight start, readiness, stop and
//! adoption. State lives in a `watch` channel; every transition is a short closure with no
//! I/O inside, and every waiter watches the same channel.
//!
//! ```text
//!   Stopped ──request──▶ Starting ◀──▶ Building (image missing)
//!                          │ ready
//!                          ▼
//!                        Running ──idle──▶ Stopping ──▶ Stopped     (exit event: Running ──▶ Stopped)
//!   Starting/Building ──error──▶ Failed{retry_at} ──request after retry_at──▶ Starting
//!                                (a failed build has no retry_at: it waits for a reload)
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::activity::{Activity, ActivityGuard};
use super::builder::Builder;
use super::health;
use super::plan::{ContainerPlan, ImageSource};
use super::Variant;
use crate::engine::{self, ContainerAction, ContainerSpec, ContainerStatus, Engine, EngineError};
use crate::secrets::Secrets;

/// Lines of container output shown when a start fails.
const LOG_TAIL_LINES: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Stopped,
    Starting,
    Building,
    Running {
        upstream: SocketAddr,
    },
    Stopping,
    /// `retry_at: None`: not retried until the source or config changes (a failed build).
    Failed {
        error: Arc<str>,
        retry_at: Option<Instant>,
    },
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Building => "building",
            State::Running { .. } => "running",
            State::Stopping => "stopping",
            State::Failed { .. } => "failed",
        }
    }
}

/// Why a request could not get a running container.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The start failed; no new attempt before `retry_at` (never, for a failed build).
    #[error("{error}")]
    Failed { error: Arc<str>, retry_at: Option<Instant> },
    /// An image build is running and the caller asked not to wait for it.
    #[error("the app's image is being built")]
    Building,
    /// The start did not finish within the request's wait bound.
    #[error("the app is still starting")]
    Timeout,
    #[error("the app was deleted")]
    Gone,
}

/// Why one start attempt failed: the container vanished (retry with a fresh one), or a real
/// failure (with the container, for its log tail).
enum StartAttempt {
    Gone(String),
    Failed(String, Option<String>),
}

impl From<EngineError> for StartAttempt {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(_) | EngineError::Removing(_) => StartAttempt::Gone(e.to_string()),
            other => StartAttempt::Failed(other.to_string(), None),
        }
    }
}

/// Settings resolved from berth.toml and the app's own config.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub idle_shutdown: Duration,
    pub health_url: String,
    pub start_timeout: Duration,
    pub failure_backoff: Duration,
    pub stop_timeout_secs: u64,
    pub init: bool,
}

pub struct ContainerRuntime {
    pub app_id: String,
    pub variant: Variant,
    instance: String,
    plan: ContainerPlan,
    pub settings: RuntimeSettings,
    engine: Engine,
    builder: Arc<Builder>,
    secrets: Arc<Secrets>,
    state: watch::Sender<State>,
    container_id: Mutex<Option<String>>,
    failures: AtomicU32,
    pub activity: Arc<Activity>,
    pub cancel: CancellationToken,
    pub tasks: TaskTracker,
}

impl ContainerRuntime {
    /// The runtime of one variant (prod or stage) of an app.
    pub fn new(
        (app_id, variant): (String, Variant),
        instance: String,
        plan: ContainerPlan,
        settings: RuntimeSettings,
        engine: Engine,
        (builder, secrets): (Arc<Builder>, Arc<Secrets>),
    ) -> Arc<Self> {
        Arc::new(ContainerRuntime {
            app_id,
            variant,
            instance,
            plan,
            settings,
            engine,
            builder,
            secrets,
            state: watch::Sender::new(State::Stopped),
            container_id: Mutex::new(None),
            failures: AtomicU32::new(0),
            activity: Arc::new(Activity::default()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
    }

    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.state.subscribe()
    }

    pub fn plan(&self) -> &ContainerPlan {
        &self.plan
    }

    pub fn container_id(&self) -> Option<String> {
        self.container_id.lock().unwrap().clone()
    }

    /// Hash of everything the container is created from; part of its name and a label.
    pub fn config_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.plan.image.name().as_bytes());
        h.update([0]);
        h.update(self.plan.port.to_string());
        h.update([0]);
        let mut env = self.plan.env.clone();
        env.sort();
        for (k, v) in env {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        for (k, v) in &self.plan.raw_options {
            h.update(k.as_bytes());
            h.update([1]);
            h.update(v.as_bytes());
            h.update([1]);
        }
        h.update([self.settings.init as u8]);
        hex::encode(h.finalize())
    }

    pub fn container_name(&self) -> String {
        format!("berth-{}-{}-{}", self.app_id, self.variant.name(), &self.config_hash()[..12])
    }

    /// Returns the upstream of a running container, starting it if needed. Concurrent callers
    /// share one start; the start runs as its own task, so a caller that goes away does not
    /// cancel it. The returned guard keeps the app counted as busy. With `wait_for_build`
    /// false, a caller that finds an image build running gets [`StartError::Building`] at once.
    pub async fn ensure_running(
        self: &Arc<Self>,
        wait_for_build: bool,
    ) -> Result<(SocketAddr, ActivityGuard), StartError> {
        let guard = self.activity.enter();
        // Checked after `enter`: a retiring runtime cancels first and then waits for what is
        // in flight, so a request either gets in before the cancel or is told to re-route.
        if self.cancel.is_cancelled() {
            return Err(StartError::Gone);
        }
        // Fast path: a running app needs only a shared read of its state.
        if let State::Running { upstream } = *self.state.borrow() {
            return Ok((upstream, guard));
        }
        let deadline = Instant::now() + self.settings.start_timeout;
        let mut rx = self.state.subscribe();
        loop {
            let mut spawn_start = false;
            let mut outcome = None;
            self.state.send_if_modified(|s| match s {
                State::Running { upstream } => {
                    outcome = Some(Ok(*upstream));
                    false
                }
                State::Failed { error, retry_at } if retry_at.is_none_or(|t| Instant::now() < t) => {
                    outcome = Some(Err(StartError::Failed { error: error.clone(), retry_at: *retry_at }));
                    false
                }
                State::Building if !wait_for_build => {
                    outcome = Some(Err(StartError::Building));
                    false
                }
                State::Stopped | State::Failed { .. } => {
                    *s = State::Starting;
                    spawn_start = true;
                    true
                }
                State::Starting | State::Building | State::Stopping => false,
            });
            if let Some(outcome) = outcome {
                return outcome.map(|upstream| (upstream, guard));
            }
            if self.cancel.is_cancelled() {
                return Err(StartError::Gone);
            }
            if spawn_start {
                let me = self.clone();
                self.tasks.spawn(async move { me.run_start().await });
            }
            let settled = rx.wait_for(|s| match s {
                State::Starting | State::Stopping => false,
                State::Building => !wait_for_build,
                _ => true,
            });
            match tokio::time::timeout_at(deadline, settled).await {
                Ok(Ok(_)) => continue,
                Ok(Err(_)) => return Err(StartError::Gone),
                Err(_) => return Err(StartError::Timeout),
            }
        }
    }

    async fn run_start(self: Arc<Self>) {
        if let Err(error) = self.build_image().await {
            self.state.send_replace(State::Failed { error: error.into(), retry_at: None });
            return;
        }
        let started = Instant::now();
        let deadline = started + self.settings.start_timeout;
        let result = tokio::select! {
            r = tokio::time::timeout_at(deadline, self.start_container(deadline)) => match r {
                Ok(r) => r,
                Err(_) => Err(format!("the container did not become ready within {}s", self.settings.start_timeout.as_secs())),
            },
            _ = self.cancel.cancelled() => Err("the app was deleted".to_string()),
        };
        match result {
            Ok(upstream) => {
                self.failures.store(0, Ordering::SeqCst);
                self.activity.touch();
                tracing::info!(app = %self.app_id, %upstream, took_ms = started.elapsed().as_millis() as u64, "container ready");
                self.state.send_replace(State::Running { upstream });
            }
            Err(error) => {
                let n = self.failures.fetch_add(1, Ordering::SeqCst).min(4);
                let backoff = self.settings.failure_backoff * (1 << n);
                tracing::warn!(app = %self.app_id, retry_in_secs = backoff.as_secs(), "start failed: {error}");
                if let Some(id) = self.container_id() {
                    let _ = self.engine.stop(&id, self.settings.stop_timeout_secs).await;
                }
                self.state
                    .send_replace(State::Failed { error: error.into(), retry_at: Some(Instant::now() + backoff) });
            }
        }
    }

    /// Builds the app's image if it has a build plan and the image is missing. While the build
    /// runs the state is `Building`.
    pub async fn build_image(&self) -> Result<bool, String> {
        let ImageSource::Build(plan) = &self.plan.image else { return Ok(false) };
        let building = || {
            self.state.send_if_modified(|s| {
                let moved = matches!(s, State::Starting);
                if moved {
                    *s = State::Building;
                }
                moved
            });
        };
        let result = tokio::select! {
            r = self.builder.ensure(&self.app_id, plan, building) => r,
            _ = self.cancel.cancelled() => Err("the app was deleted".to_string()),
        };
        self.state.send_if_modified(|s| {
            let moved = matches!(s, State::Building);
            if moved {
                *s = State::Starting;
            }
            moved
        });
        if let Err(e) = &result {
            tracing::warn!(app = %self.app_id, "{e}");
        }
        result
    }

    /// Finds or creates the container, starts it and waits until it answers its health check.
    async fn start_container(&self, deadline: Instant) -> Result<SocketAddr, String> {
        // A container of this name may be on its way out (a replaced deployment being
        // retired, or removed behind our back): forget it and create a fresh one once the name
        // is free. That can show at start (409/404) or later, as the container vanishing
        // while it is probed.
        let mut attempts = 0;
        loop {
            let outcome = self.start_once(deadline).await;
            let gone = match &outcome {
                Err(StartAttempt::Gone(_)) => true,
                Err(StartAttempt::Failed(_, Some(id))) => {
                    matches!(self.engine.inspect(id, self.plan.port).await, Err(EngineError::NotFound(_)))
                }
                _ => false,
            };
            if !gone {
                return match outcome {
                    Ok(addr) => Ok(addr),
                    Err(StartAttempt::Failed(e, Some(id))) => Err(self.with_logs(&id, e).await),
                    Err(StartAttempt::Failed(e, None) | StartAttempt::Gone(e)) => Err(e),
                };
            }
            *self.container_id.lock().unwrap() = None;
            attempts += 1;
            if attempts >= 40 || Instant::now() >= deadline {
                return Err(match outcome {
                    Err(StartAttempt::Gone(e) | StartAttempt::Failed(e, _)) => e,
                    Ok(_) => unreachable!("a success is returned above"),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// One try: find or create the container, start it, wait for its health check.
    async fn start_once(&self, deadline: Instant) -> Result<SocketAddr, StartAttempt> {
        let id = self.find_or_create().await.map_err(StartAttempt::from)?;
        self.engine.start(&id).await.map_err(StartAttempt::from)?;
        let failed = |e: String| StartAttempt::Failed(e, Some(id.clone()));
        let status = self.engine.inspect(&id, self.plan.port).await.map_err(StartAttempt::from)?;
        let addr = match (status.running, status.upstream) {
            (true, Some(addr)) => addr,
            (false, _) => return Err(failed("the container exited right after it started".into())),
            (true, None) => return Err(failed(EngineError::NoPort(id.clone()).to_string())),
        };
        let engine = self.engine.clone();
        let port = self.plan.port;
        let alive = || {
            let engine = engine.clone();
            let id = id.clone();
            async move { engine.inspect(&id, port).await.map(|s| s.running).unwrap_or(false) }
        };
        health::wait_ready(addr, &self.settings.health_url, deadline, alive).await.map_err(failed)?;
        Ok(addr)
    }

    async fn with_logs(&self, id: &str, error: String) -> String {
        let tail = self.engine.log_tail(id, LOG_TAIL_LINES).await;
        if tail.trim().is_empty() {
            error
        } else {
            format!("{error}\nlast log lines:\n{}", tail.trim_end())
        }
    }

    async fn find_or_create(&self) -> Result<String, EngineError> {
        if let Some(id) = self.container_id() {
            return Ok(id);
        }
        let name = self.container_name();
        let existing = self.engine.list_labelled(&self.labels_filter()).await?;
        if let Some(found) = existing.iter().find(|c| c.name == name) {
            *self.container_id.lock().unwrap() = Some(found.id.clone());
            return Ok(found.id.clone());
        }
        if let ImageSource::Existing(image) = &self.plan.image {
            self.engine.ensure_image(image).await?;
        }
        // Secrets are resolved here, handed to the engine, and kept nowhere else.
        let env = self.secrets.resolve_all(&self.plan.env).await.map_err(EngineError::Build)?;
        let spec = ContainerSpec {
            name,
            image: self.plan.image.name().to_string(),
            port: self.plan.port,
            env,
            labels: self.labels(),
            init: self.settings.init,
            options: self.plan.options.clone(),
        };
        let id = self.engine.create(&spec).await?;
        tracing::info!(app = %self.app_id, container = %spec.name, "container created");
        *self.container_id.lock().unwrap() = Some(id.clone());
        Ok(id)
    }

    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (engine::LABEL_MANAGED.to_string(), "true".to_string()),
            (engine::LABEL_INSTANCE.to_string(), self.instance.clone()),
            (engine::LABEL_APP_ID.to_string(), self.app_id.clone()),
            (engine::LABEL_VARIANT.to_string(), self.variant.name().to_string()),
            (engine::LABEL_CONFIG_HASH.to_string(), self.config_hash()),
        ])
    }

    fn labels_filter(&self) -> [(&str, &str); 3] {
        [
            (engine::LABEL_INSTANCE, self.instance.as_str()),
            (engine::LABEL_APP_ID, self.app_id.as_str()),
            (engine::LABEL_VARIANT, self.variant.name()),
        ]
    }

    /// Takes over a container found at boot. A running one serves at once; a stopped one is
    /// started again on the next request (the same container, no new one).
    pub async fn adopt(&self, id: &str, running: bool) {
        *self.container_id.lock().unwrap() = Some(id.to_string());
        if !running {
            return;
        }
        match self.engine.inspect(id, self.plan.port).await {
            Ok(ContainerStatus { running: true, upstream: Some(upstream) }) => {
                self.activity.touch();
                self.state.send_replace(State::Running { upstream });
                tracing::info!(app = %self.app_id, %upstream, "adopted running container");
            }
            _ => tracing::info!(app = %self.app_id, "adopted stopped container"),
        }
    }

    /// The idle reaper's move: stop only when running, nothing in flight, and idle long enough.
    pub async fn stop_if_idle(&self) -> bool {
        let idle = self.settings.idle_shutdown;
        let moved = self.state.send_if_modified(|s| {
            if matches!(s, State::Running { .. })
                && self.activity.in_flight() == 0
                && self.activity.last_activity().elapsed() >= idle
            {
                *s = State::Stopping;
                true
            } else {
                false
            }
        });
        if !moved {
            return false;
        }
        if let Some(id) = self.container_id() {
            tracing::info!(app = %self.app_id, idle_secs = idle.as_secs(), "stopping idle container");
            if let Err(e) = self.engine.stop(&id, self.settings.stop_timeout_secs).await {
                tracing::warn!(app = %self.app_id, "stopping the container failed: {e}");
                if matches!(e, EngineError::NotFound(_)) {
                    *self.container_id.lock().unwrap() = None;
                }
            }
        }
        self.state.send_replace(State::Stopped);
        true
    }

    /// An engine event about one of this app's containers.
    pub fn on_container_event(&self, container_id: &str, action: &ContainerAction) {
        if self.container_id().as_deref() != Some(container_id) {
            return;
        }
        match action {
            action if action.ends_run() => {
                if *action == ContainerAction::Destroy {
                    *self.container_id.lock().unwrap() = None;
                }
                self.state.send_if_modified(|s| {
                    if matches!(s, State::Running { .. }) {
                        tracing::info!(app = %self.app_id, ?action, "container exited; it starts again on the next request");
                        *s = State::Stopped;
                        true
                    } else {
                        false
                    }
                });
            }
            _ => {}
        }
    }

    /// Checks a running app against the engine (after the event stream was interrupted).
    pub async fn resync(&self) {
        let Some(id) = self.container_id() else { return };
        let running = matches!(
            self.engine.inspect(&id, self.plan.port).await,
            Ok(ContainerStatus { running: true, upstream: Some(_) })
        );
        if !running {
            self.on_container_event(&id, &ContainerAction::Die { exit_code: None });
        }
    }

    /// Stops the runtime's tasks (start and idle reaper) and waits for them, bounded.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
    }
}
