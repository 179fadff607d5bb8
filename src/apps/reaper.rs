//! The idle reaper: one task per container app that sleeps until the app could be idle, then
//! asks the runtime to pause (or, with the paused tier off, stop) it; a paused app it stops
//! once it has been paused for `stop_paused_after`. It never polls on a fixed tick: it wakes at
//! the idle or paused deadline, when the last in-flight request ends, or when the state changes.

use std::sync::Arc;

use tokio::time::Instant;

use super::lifecycle::Phase;
use super::runtime::ContainerRuntime;

pub async fn run(rt: Arc<ContainerRuntime>) {
    let idle = rt.settings.idle_shutdown;
    if idle.is_zero() {
        return;
    }
    let paused_limit = rt.settings.stop_paused_after;
    let mut rx = rt.subscribe();
    loop {
        // Wait for the app to run (or to be paused, when paused apps are stopped after a while).
        let waits = |phase: &Phase| match phase {
            Phase::Running { .. } => true,
            Phase::Paused { .. } => !paused_limit.is_zero(),
            _ => false,
        };
        let phase = tokio::select! {
            r = rx.wait_for(|s| waits(&s.phase)) => match r {
                Ok(s) => s.phase.clone(),
                Err(_) => return,
            },
            _ = rt.cancel.cancelled() => return,
        };
        if let Phase::Paused { since, .. } = phase {
            let activity_ended = rt.activity.idle_notified();
            let stop_at = since + paused_limit;
            // Not stopped while something is in flight (a stream to a container someone else paused).
            if stop_at <= Instant::now() && rt.stop_if_idle() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(stop_at), if stop_at > Instant::now() => {}
                _ = activity_ended => {}
                r = rx.changed() => if r.is_err() { return },
                _ = rt.cancel.cancelled() => return,
            }
            continue;
        }
        // Wait until it has been idle long enough with nothing in flight.
        loop {
            let activity_ended = rt.activity.idle_notified();
            let wake_at = if rt.activity.in_flight() > 0 { None } else { Some(rt.activity.last_activity() + idle) };
            if wake_at.is_some_and(|t| t <= Instant::now()) {
                rt.stop_if_idle();
                break;
            }
            tokio::select! {
                _ = async { tokio::time::sleep_until(wake_at.unwrap()).await }, if wake_at.is_some() => {}
                _ = activity_ended => {}
                r = rx.changed() => {
                    if r.is_err() { return }
                    if !matches!(rx.borrow_and_update().phase, Phase::Running { .. }) { break }
                }
                _ = rt.cancel.cancelled() => return,
            }
        }
    }
}
