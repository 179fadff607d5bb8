//! One container app's runtime: it holds the app's [`Lifecycle`] in a `watch` channel, applies
//! the pure [`lifecycle::transition`] inside the channel's lock (no I/O there) and carries out
//! the effects: the single-flight start task (build, find or create, start, health check), the
//! idle stop, the resync after a gap in the engine's events, and reporting an unreachable
//! engine. Every waiter watches the same channel.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::activity::{Activity, ActivityGuard};
use super::builder::Builder;
use super::health;
use super::lifecycle::{self, Effect, EffectOutcome, Event, FailureKind, Lifecycle, Phase, Policy, Resync};
use super::plan::{ContainerPlan, ImageSource};
use super::Variant;
use crate::engine::{self, ContainerEvent, ContainerSpec, ContainerStatus, Engine, EngineError};
use crate::metrics::{self, WakePhase};
use crate::secrets::Secrets;

pub use super::lifecycle::StartError;

/// Lines of container output shown when a start fails.
const LOG_TAIL_LINES: usize = 20;
/// Pause before trying again with a fresh container when the previous one vanished.
const VANISHED_RETRY_DELAY: Duration = Duration::from_millis(250);
/// Tries with a fresh container before a vanishing container counts as a failed start.
const VANISHED_RETRIES: u32 = 40;

/// Why one start attempt failed.
enum StartAttempt {
    /// The container vanished (or its name is still taken by one being removed): retry fresh.
    Gone(String),
    /// The engine does not answer.
    Unavailable(String),
    /// A real failure, with the container for its log tail.
    Failed(String, Option<String>),
}

impl From<EngineError> for StartAttempt {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(_) | EngineError::Removing(_) => StartAttempt::Gone(e.to_string()),
            e if e.is_unavailable() => StartAttempt::Unavailable(e.to_string()),
            other => StartAttempt::Failed(other.to_string(), None),
        }
    }
}

/// Settings resolved from berth.toml and the app's own config.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub idle_shutdown: Duration,
    /// How long an idle app stays paused before it is stopped; zero: stop idle apps at once.
    pub stop_paused_after: Duration,
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
    state: watch::Sender<Lifecycle>,
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
        let policy = Policy {
            failure_backoff: settings.failure_backoff,
            idle_shutdown: settings.idle_shutdown,
            stop_paused_after: settings.stop_paused_after,
        };
        Arc::new(ContainerRuntime {
            app_id,
            variant,
            instance,
            plan,
            settings,
            engine,
            builder,
            secrets,
            state: watch::Sender::new(Lifecycle::new(policy)),
            activity: Arc::new(Activity::default()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
    }

    pub fn state(&self) -> Lifecycle {
        self.state.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Lifecycle> {
        self.state.subscribe()
    }

    pub fn plan(&self) -> &ContainerPlan {
        &self.plan
    }

    pub fn container_id(&self) -> Option<String> {
        self.state.borrow().container_id.clone()
    }

    /// Applies one event under the channel's lock; returns the new lifecycle and the effects,
    /// which the caller hands to [`ContainerRuntime::execute`].
    fn apply(&self, event: Event) -> (Lifecycle, Vec<Effect>) {
        let now = Instant::now();
        let mut out = None;
        let mut from = "";
        self.state.send_if_modified(|s| {
            let (next, effects) = lifecycle::transition(s, event, now);
            let changed = next != *s;
            from = s.name();
            *s = next.clone();
            out = Some((next, effects));
            changed
        });
        let (state, effects) = out.expect("send_if_modified runs the closure");
        if state.name() != from {
            tracing::debug!(app = %self.app_id, variant = self.variant.name(), from, to = state.name(), "lifecycle");
        }
        (state, effects)
    }

    /// Applies an event and carries out its effects.
    fn handle(self: &Arc<Self>, event: Event) -> Lifecycle {
        let (state, effects) = self.apply(event);
        self.execute(effects);
        state
    }

    /// Carries out effects; anything that waits on the engine runs as a task of this runtime.
    fn execute(self: &Arc<Self>, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::SpawnStart => {
                    let me = self.clone();
                    self.tasks.spawn(async move { me.run_start().await });
                }
                Effect::StopIdle { container_id, paused } => {
                    let me = self.clone();
                    self.tasks.spawn(async move {
                        tracing::info!(app = %me.app_id, idle_secs = me.settings.idle_shutdown.as_secs(), paused, "stopping idle container");
                        if paused {
                            // A frozen process cannot act on the stop signal: thaw it first.
                            if let Err(e) = me.engine.unpause(&container_id).await {
                                tracing::debug!(app = %me.app_id, "unpausing before the stop: {e}");
                            }
                        }
                        let result = me.engine.stop(&container_id, me.settings.stop_timeout_secs).await;
                        if let Err(e) = &result {
                            tracing::warn!(app = %me.app_id, "stopping the container failed: {e}");
                        }
                        let vanished = matches!(result, Err(EngineError::NotFound(_)));
                        me.handle(Event::StopDone { vanished });
                    });
                }
                Effect::Pause { container_id } => {
                    let me = self.clone();
                    self.tasks.spawn(async move {
                        tracing::info!(app = %me.app_id, idle_secs = me.settings.idle_shutdown.as_secs(), "pausing idle container");
                        let result = me.engine.pause(&container_id).await;
                        me.handle(Event::PauseDone(me.outcome("pausing", result)));
                    });
                }
                Effect::Unpause { container_id } => {
                    let me = self.clone();
                    self.tasks.spawn(async move {
                        let started = Instant::now();
                        let result = metrics::timed(WakePhase::unpause, me.engine.unpause(&container_id)).await;
                        let outcome = me.outcome("unpausing", result);
                        if outcome == EffectOutcome::Done {
                            me.activity.touch();
                            tracing::info!(app = %me.app_id, took_ms = started.elapsed().as_millis() as u64, "container unpaused");
                        }
                        me.handle(Event::UnpauseDone(outcome));
                    });
                }
                Effect::StopFailed { container_id } => {
                    let me = self.clone();
                    self.tasks.spawn(async move {
                        let _ = me.engine.stop(&container_id, me.settings.stop_timeout_secs).await;
                    });
                }
                Effect::Resync { container_id } => {
                    let me = self.clone();
                    self.tasks.spawn(async move {
                        let found = match me.engine.inspect(&container_id, me.plan.port).await {
                            Ok(ContainerStatus { running: true, upstream: Some(_), paused: true }) => Resync::Paused,
                            Ok(ContainerStatus { running: true, upstream: Some(_), paused: false }) => Resync::Running,
                            Ok(_) => Resync::NotRunning,
                            Err(EngineError::NotFound(_)) => Resync::Gone,
                            Err(e) if e.is_unavailable() => Resync::EngineUnavailable,
                            Err(e) => {
                                tracing::warn!(app = %me.app_id, "checking the container failed: {e}");
                                Resync::NotRunning
                            }
                        };
                        me.handle(Event::Resynced(found));
                    });
                }
                Effect::WatchEngine => {
                    if self.engine.report_unavailable() {
                        tracing::warn!(app = %self.app_id, "the container engine does not answer");
                    }
                }
                Effect::Cancel => self.cancel.cancel(),
            }
        }
    }

    /// How an engine call for an effect ended; a failure is logged with its cause.
    fn outcome(&self, what: &str, result: Result<(), EngineError>) -> EffectOutcome {
        match result {
            Ok(()) => EffectOutcome::Done,
            Err(EngineError::NotFound(_)) => EffectOutcome::Vanished,
            Err(e) => {
                tracing::warn!(app = %self.app_id, "{what} the container failed: {e}");
                EffectOutcome::Failed
            }
        }
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
        if let Some(upstream) = self.state.borrow().upstream() {
            return Ok((upstream, guard));
        }
        let deadline = Instant::now() + self.settings.start_timeout;
        let mut rx = self.state.subscribe();
        loop {
            let state = self.handle(Event::Request);
            if let Some(upstream) = lifecycle::answer(&state, Instant::now(), wait_for_build)? {
                return Ok((upstream, guard));
            }
            let settled = rx.wait_for(|s| lifecycle::settled(s, wait_for_build));
            match tokio::time::timeout_at(deadline, settled).await {
                Ok(Ok(_)) => continue,
                Ok(Err(_)) => return Err(StartError::Gone),
                Err(_) => return Err(StartError::Timeout),
            }
        }
    }

    async fn run_start(self: Arc<Self>) {
        let started = Instant::now();
        let result = tokio::select! {
            r = self.start() => r,
            _ = self.cancel.cancelled() => Err((FailureKind::Cancelled, "the app was deleted".to_string())),
        };
        let event = match result {
            Ok((upstream, container_id)) => {
                self.activity.touch();
                tracing::info!(app = %self.app_id, %upstream, took_ms = started.elapsed().as_millis() as u64, "container ready");
                metrics::get().cold_start(started.elapsed());
                Event::StartSucceeded { upstream, container_id }
            }
            Err((kind, error)) => {
                tracing::warn!(app = %self.app_id, ?kind, "start failed: {error}");
                Event::StartFailed { kind, error: error.into() }
            }
        };
        self.handle(event);
    }

    /// Builds the image if needed, then starts the container within the start timeout.
    async fn start(self: &Arc<Self>) -> Result<(SocketAddr, String), (FailureKind, String)> {
        if let Err(error) = self.build_image().await {
            // The builder's error is text: whether the engine answers tells the two apart.
            let kind = match self.engine.ping().await {
                Err(e) if e.is_unavailable() => FailureKind::EngineUnavailable,
                _ => FailureKind::Build,
            };
            return Err((kind, error));
        }
        let deadline = Instant::now() + self.settings.start_timeout;
        match tokio::time::timeout_at(deadline, self.start_container(deadline)).await {
            Ok(result) => result,
            // A hung engine is an outage, not the app's failure.
            Err(_) => match self.engine.ping().await {
                Err(e) if e.is_unavailable() => Err((FailureKind::EngineUnavailable, e.to_string())),
                _ => Err((
                    FailureKind::App,
                    format!("the container did not become ready within {}s", self.settings.start_timeout.as_secs()),
                )),
            },
        }
    }

    /// Builds the app's image if it has a build plan and the image is missing. While the build
    /// runs the phase is `Building`.
    pub async fn build_image(self: &Arc<Self>) -> Result<bool, String> {
        let ImageSource::Build(plan) = &self.plan.image else { return Ok(false) };
        let building = || {
            self.handle(Event::BuildStarted);
        };
        let build_started = Instant::now();
        let result = tokio::select! {
            r = self.builder.ensure(&self.app_id, plan, building) => r,
            _ = self.cancel.cancelled() => Err("the app was deleted".to_string()),
        };
        self.handle(Event::BuildFinished);
        if result == Ok(true) {
            metrics::get().wake_phase(WakePhase::build, build_started.elapsed());
        }
        if let Err(e) = &result {
            tracing::warn!(app = %self.app_id, "{e}");
        }
        result
    }

    /// Finds or creates the container, starts it and waits until it answers its health check.
    async fn start_container(&self, deadline: Instant) -> Result<(SocketAddr, String), (FailureKind, String)> {
        // A container of this name may be on its way out (a replaced deployment being
        // retired, or removed behind our back): forget it and create a fresh one once the name
        // is free. That can show at start (409/404) or later, as the container vanishing
        // while it is probed.
        let mut attempts = 0;
        loop {
            let outcome = self.start_once(deadline).await;
            let gone = match &outcome {
                Err(StartAttempt::Gone(_)) => true,
                Err(StartAttempt::Failed(_, Some(id))) => match self.engine.inspect(id, self.plan.port).await {
                    Err(EngineError::NotFound(_)) => true,
                    Err(e) if e.is_unavailable() => return Err((FailureKind::EngineUnavailable, e.to_string())),
                    _ => false,
                },
                _ => false,
            };
            if !gone {
                return match outcome {
                    Ok(started) => Ok(started),
                    Err(StartAttempt::Unavailable(e)) => Err((FailureKind::EngineUnavailable, e)),
                    Err(StartAttempt::Failed(e, Some(id))) => Err((FailureKind::App, self.with_logs(&id, e).await)),
                    Err(StartAttempt::Failed(e, None) | StartAttempt::Gone(e)) => Err((FailureKind::App, e)),
                };
            }
            self.apply(Event::ContainerGone);
            attempts += 1;
            if attempts >= VANISHED_RETRIES || Instant::now() >= deadline {
                return Err(match outcome {
                    Err(StartAttempt::Gone(e) | StartAttempt::Failed(e, _) | StartAttempt::Unavailable(e)) => {
                        (FailureKind::App, e)
                    }
                    Ok(_) => unreachable!("a success is returned above"),
                });
            }
            tokio::time::sleep(VANISHED_RETRY_DELAY).await;
        }
    }

    /// One try: find or create the container, start it, wait for its health check.
    async fn start_once(&self, deadline: Instant) -> Result<(SocketAddr, String), StartAttempt> {
        let id = self.find_or_create().await.map_err(StartAttempt::from)?;
        metrics::timed(WakePhase::start, self.engine.start(&id)).await.map_err(StartAttempt::from)?;
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
        let ready = health::wait_ready(addr, &self.settings.health_url, deadline, alive);
        metrics::timed(WakePhase::ready, ready).await.map_err(failed)?;
        Ok((addr, id))
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
            self.apply(Event::ContainerAssigned(found.id.clone()));
            return Ok(found.id.clone());
        }
        if let ImageSource::Existing(image) = &self.plan.image {
            metrics::timed(WakePhase::pull, self.engine.ensure_image(image)).await?;
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
        let id = metrics::timed(WakePhase::create, self.engine.create(&spec)).await?;
        tracing::info!(app = %self.app_id, container = %spec.name, "container created");
        self.apply(Event::ContainerAssigned(id.clone()));
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

    /// Takes over a container found at boot. A running one serves at once; a paused one (the
    /// engine lists it as not running) is unpaused by the next request; a stopped one is
    /// started again on the next request (the same container, no new one).
    pub async fn adopt(self: &Arc<Self>, id: &str, running: bool) {
        let status = self.engine.inspect(id, self.plan.port).await.ok().filter(|s| s.running);
        let (upstream, paused) = match status {
            Some(s) => (s.upstream, s.paused),
            None => (None, false),
        };
        if upstream.is_some() {
            self.activity.touch();
        }
        let state = self.handle(Event::Adopted { container_id: id.to_string(), upstream, paused });
        tracing::info!(app = %self.app_id, listed_running = running, state = state.name(), "adopted container");
    }

    /// The idle reaper's move: pause (or stop) only when running, nothing in flight, and idle
    /// long enough; stop a paused app after `stop_paused_after` (checked under the channel's
    /// lock). Returns whether a pause or stop began.
    pub fn stop_if_idle(self: &Arc<Self>) -> bool {
        let event = Event::IdleCheck {
            in_flight: self.activity.in_flight(),
            idle_for: self.activity.last_activity().elapsed(),
        };
        matches!(self.handle(event).phase, Phase::Stopping | Phase::Pausing { .. })
    }

    /// When the app was paused, if it is.
    pub fn paused_since(&self) -> Option<Instant> {
        match self.state.borrow().phase {
            Phase::Paused { since, .. } => Some(since),
            _ => None,
        }
    }

    /// The paused containers' memory passed the budget: stop this one if it is still paused.
    pub fn stop_over_memory_budget(self: &Arc<Self>) {
        self.handle(Event::OverMemoryBudget);
    }

    /// An engine event about some container (the lifecycle ignores other containers').
    pub fn on_container_event(self: &Arc<Self>, event: &ContainerEvent) {
        let before = self.state.borrow().phase.clone();
        let after = self.handle(Event::Container(event.clone())).phase;
        if matches!(before, Phase::Running { .. }) && after == Phase::Stopped {
            tracing::info!(app = %self.app_id, action = ?event.action, "container exited; it starts again on the next request");
        }
    }

    /// Events may have been missed (the event stream was interrupted): check against the engine.
    pub fn resync(self: &Arc<Self>) {
        self.handle(Event::EventGap);
    }

    /// The engine answers again after an outage.
    pub fn on_engine_back(self: &Arc<Self>) {
        self.handle(Event::EngineBack);
    }

    /// Takes the runtime out of service: requests answer Gone, the start in progress and the
    /// idle reaper stop; waits for them, bounded. Containers are left as they are.
    pub async fn shutdown(self: &Arc<Self>) {
        self.handle(Event::Retire);
        self.cancel.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
    }
}

#[cfg(test)]
mod tests;
