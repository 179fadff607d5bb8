//! Watching the engine: its event stream moves a running app to `Stopped` the moment its
//! container exits, and after a gap in the stream every app re-checks its container. When the
//! engine stops answering, one monitor pings it every [`PING_EVERY`] (not each request) and,
//! once it answers, tells every app, so the next request starts at once.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::lifecycle;
use super::runtime::ContainerRuntime;
use super::Apps;
use crate::engine::{self, ContainerAction, Engine};

/// How often an unreachable engine is pinged.
pub const PING_EVERY: Duration = Duration::from_millis(250);

/// Starts the event watcher and the availability monitor as tasks of `apps`.
pub fn spawn_watcher(apps: &Arc<Apps>) {
    let runtimes = {
        let apps = Arc::downgrade(apps);
        move || apps.upgrade().map(|a| a.runtimes()).unwrap_or_default()
    };
    let label = (engine::LABEL_INSTANCE.to_string(), apps.instance.clone());
    let budget = apps.config.container.paused_memory_budget_bytes();
    let (tasks, cancel) = (apps.tasks.clone(), apps.cancel.clone());
    apps.tasks.spawn(watch_events(apps.engine.clone(), label, runtimes.clone(), budget, (tasks, cancel)));
    let adopt = {
        let apps = Arc::downgrade(apps);
        move || {
            let apps = apps.clone();
            async move {
                if let Some(apps) = apps.upgrade() {
                    apps.adopt_if_pending().await;
                }
            }
            .boxed()
        }
    };
    apps.tasks.spawn(watch_availability(apps.engine.clone(), runtimes, adopt, apps.cancel.clone()));
}

/// Follows the engine's container events for `label` and hands them to every runtime. When
/// the stream ends, reports the engine unreachable if it does not answer a ping, waits until
/// it answers, then reconnects and has every runtime resync. After each pause it checks the
/// paused containers' memory against `paused_memory_budget` bytes (0: no budget).
pub async fn watch_events(
    engine: Engine,
    label: (String, String),
    runtimes: impl Fn() -> Vec<Arc<ContainerRuntime>>,
    paused_memory_budget: u64,
    (tasks, cancel): (TaskTracker, CancellationToken),
) {
    let mut first = true;
    loop {
        let mut stream = engine.events((&label.0, &label.1));
        if !first {
            for rt in runtimes() {
                rt.resync();
            }
        }
        first = false;
        loop {
            let next = tokio::select! {
                n = stream.next() => n,
                _ = cancel.cancelled() => return,
            };
            match next {
                Some(Ok(ev)) => {
                    let all = runtimes();
                    for rt in &all {
                        rt.on_container_event(&ev);
                    }
                    // Paused memory only grows when one more container pauses.
                    if ev.action == ContainerAction::Pause && paused_memory_budget > 0 {
                        let (engine, cancel) = (engine.clone(), cancel.clone());
                        tasks.spawn(async move {
                            tokio::select! {
                                _ = stop_paused_over_budget(&engine, all, paused_memory_budget) => {}
                                _ = cancel.cancelled() => {}
                            }
                        });
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!("engine event stream failed: {e}");
                    break;
                }
                None => break,
            }
        }
        // Events may have been missed either way; an engine that does not answer is the
        // monitor's to watch, and the stream is reopened once it answers.
        if let Err(e) = engine.ping().await {
            if engine.report_unavailable() {
                tracing::warn!("the container engine does not answer: {e}");
            }
        }
        let mut available = engine.availability();
        tokio::select! {
            _ = available.wait_for(|up| *up) => {}
            _ = cancel.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(PING_EVERY) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// Reads the paused containers' memory from the engine's stats and stops the oldest paused
/// ones until the rest fit `budget` bytes. A container whose stats cannot be read counts as 0.
async fn stop_paused_over_budget(engine: &Engine, runtimes: Vec<Arc<ContainerRuntime>>, budget: u64) {
    let mut paused = Vec::new();
    for rt in runtimes {
        let (Some(since), Some(id)) = (rt.paused_since(), rt.container_id()) else { continue };
        let memory = match engine.stats(&id).await {
            Ok(stats) => stats.memory_bytes,
            Err(e) => {
                tracing::debug!(app = %rt.app_id, "reading a paused container's memory failed: {e}");
                0
            }
        };
        paused.push((since, memory, rt));
    }
    let sizes: Vec<(tokio::time::Instant, u64)> = paused.iter().map(|(since, memory, _)| (*since, *memory)).collect();
    for i in lifecycle::over_memory_budget(&sizes, budget) {
        let (_, memory, rt) = &paused[i];
        tracing::info!(app = %rt.app_id, memory_mb = memory >> 20, budget_mb = budget >> 20, "stopping the oldest paused container: paused memory over budget");
        rt.stop_over_memory_budget();
    }
}

/// Whenever the engine is reported unreachable, pings it every [`PING_EVERY`] until it
/// answers, runs `before_back` (boot adoption, if it is pending), marks it available and tells
/// every runtime.
pub async fn watch_availability(
    engine: Engine,
    runtimes: impl Fn() -> Vec<Arc<ContainerRuntime>>,
    before_back: impl Fn() -> BoxFuture<'static, ()>,
    cancel: CancellationToken,
) {
    let mut available = engine.availability();
    loop {
        tokio::select! {
            r = available.wait_for(|up| !*up) => if r.is_err() { return },
            _ = cancel.cancelled() => return,
        }
        let down_since = tokio::time::Instant::now();
        loop {
            match engine.ping().await {
                Ok(()) => break,
                Err(e) => tracing::debug!("engine still unreachable: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(PING_EVERY) => {}
                _ = cancel.cancelled() => return,
            }
        }
        before_back().await;
        if engine.report_available() && down_since.elapsed() > PING_EVERY {
            tracing::info!(down_ms = down_since.elapsed().as_millis() as u64, "the container engine answers again");
        }
        for rt in runtimes() {
            rt.on_engine_back();
        }
    }
}
