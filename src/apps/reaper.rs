//! The idle reaper: one task per container app that sleeps until the app could be idle, then
//! asks the runtime to stop it. It never polls on a fixed tick: it wakes at the idle deadline,
//! when the last in-flight request ends, or when the state changes.

use std::sync::Arc;

use tokio::time::Instant;

use super::lifecycle::Phase;
use super::runtime::ContainerRuntime;

pub async fn run(rt: Arc<ContainerRuntime>) {
    let idle = rt.settings.idle_shutdown;
    if idle.is_zero() {
        return;
    }
    let mut rx = rt.subscribe();
    loop {
        // Wait for the app to run.
        tokio::select! {
            r = rx.wait_for(|s| matches!(s.phase, Phase::Running { .. })) => if r.is_err() { return },
            _ = rt.cancel.cancelled() => return,
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
