//! A container app's lifecycle as one pure state machine: [`transition`] takes the current
//! [`Lifecycle`], one typed [`Event`] and the time, and returns the next lifecycle and the
//! [`Effect`]s to carry out. It does no I/O and reads no clock: `runtime.rs` applies it inside
//! the watch channel's lock and executes the effects; [`answer`] says what a waiting request
//! gets from a lifecycle.
//!
//! ```text
//!   Stopped ──request──▶ Starting ◀──▶ Building (image missing)
//!                          │ started (upstream, container id)
//!                          ▼
//!                        Running ──idle, nothing in flight──▶ Stopping ──stop done──▶ Stopped
//!                          └──container die/stop/kill/oom/destroy (or resync: not running)──▶ Stopped
//!   paused tier (stop_paused_after > 0): idle Running ──▶ Pausing ──pause done──▶ Paused{since}
//!   Paused ──request──▶ Unpausing ──unpause done──▶ Running       (one unpause for all waiters)
//!   Paused ──since + stop_paused_after──▶ Stopping (unpause, then stop)
//!   Running ◀──engine pause/unpause event (someone else)──▶ Paused
//!   Starting ──app failure──▶ Failed{retry_at = now + backoff·2^n} ──request after retry_at──▶ Starting
//!   Building ──build failure──▶ Failed{retry_at: none}   (until a reload or a config change)
//!   Starting ──engine unreachable──▶ EngineUnavailable ──engine back──▶ Stopped   (no failure counted)
//!   any ──retire──▶ retired (requests answer Gone; the start in progress is cancelled)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::engine::{ContainerAction, ContainerEvent};

/// The consecutive-failure exponent's cap: the backoff grows to at most 16 times its base.
const MAX_BACKOFF_DOUBLINGS: u32 = 4;

/// Where the app's container is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Stopped,
    Starting,
    Building,
    Running {
        upstream: SocketAddr,
    },
    Stopping,
    /// The idle container is being paused (the engine's freeze: no CPU, memory kept).
    Pausing {
        upstream: SocketAddr,
    },
    /// Frozen since `since`; the next request unpauses it.
    Paused {
        upstream: SocketAddr,
        since: Instant,
    },
    /// A request is unpausing it; every request waits for this one unpause.
    Unpausing {
        upstream: SocketAddr,
    },
    /// `retry_at: None`: not retried until the source or config changes (a failed build).
    Failed {
        error: Arc<str>,
        retry_at: Option<Instant>,
    },
    /// The engine did not answer; the next start waits for it to answer again.
    EngineUnavailable {
        error: Arc<str>,
    },
}

impl Phase {
    /// Running, or any step of the paused tier: the container exists and has not exited.
    fn serves_or_frozen(&self) -> bool {
        matches!(self, Phase::Running { .. } | Phase::Pausing { .. } | Phase::Paused { .. } | Phase::Unpausing { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Phase::Stopped => "stopped",
            Phase::Starting => "starting",
            Phase::Building => "building",
            Phase::Running { .. } => "running",
            Phase::Stopping => "stopping",
            Phase::Pausing { .. } => "pausing",
            Phase::Paused { .. } => "paused",
            Phase::Unpausing { .. } => "unpausing",
            Phase::Failed { .. } => "failed",
            Phase::EngineUnavailable { .. } => "engine-unavailable",
        }
    }
}

/// The settings the transitions depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Backoff after the first failed start; doubles per consecutive failure.
    pub failure_backoff: Duration,
    /// Idle time after which a running app is stopped (or paused); zero: never.
    pub idle_shutdown: Duration,
    /// How long an idle app stays paused before it is stopped; zero: the paused tier is off
    /// (idle apps are stopped at once).
    pub stop_paused_after: Duration,
}

/// Everything the lifecycle depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    pub phase: Phase,
    /// The app's container, once found or created; kept while it exists.
    pub container_id: Option<String>,
    /// Consecutive failed starts (app failures only: an unreachable engine does not count).
    pub failures: u32,
    /// Taken out of service: requests re-route to the replacement.
    pub retired: bool,
    pub policy: Policy,
}

impl Lifecycle {
    pub fn new(policy: Policy) -> Lifecycle {
        Lifecycle { phase: Phase::Stopped, container_id: None, failures: 0, retired: false, policy }
    }

    pub fn name(&self) -> &'static str {
        self.phase.name()
    }

    pub fn upstream(&self) -> Option<SocketAddr> {
        match self.phase {
            Phase::Running { upstream } => Some(upstream),
            _ => None,
        }
    }
}

/// Why a start failed, which decides what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The engine did not answer: not the app's fault, no backoff.
    EngineUnavailable,
    /// The container could not be created or started, exited, or never became healthy.
    App,
    /// The image build failed: kept until a reload or config change.
    Build,
    /// The runtime was cancelled (retired or the server stops).
    Cancelled,
}

/// How an engine call the lifecycle asked for ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectOutcome {
    Done,
    /// The container is gone.
    Vanished,
    /// Any other failure (logged by the runtime).
    Failed,
}

/// What the inspection after a gap in the event stream found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    Running,
    /// Running but frozen by the engine's pause.
    Paused,
    NotRunning,
    Gone,
    EngineUnavailable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request wants the app running.
    Request,
    BuildStarted,
    BuildFinished,
    /// The start found or created this container.
    ContainerAssigned(String),
    /// The container the start used vanished: forget it, the next try creates a new one.
    ContainerGone,
    StartSucceeded {
        upstream: SocketAddr,
        container_id: String,
    },
    StartFailed {
        kind: FailureKind,
        error: Arc<str>,
    },
    /// An engine event about some container (others' are ignored).
    Container(ContainerEvent),
    /// The idle reaper's check.
    IdleCheck {
        in_flight: usize,
        idle_for: Duration,
    },
    /// The idle stop finished; `vanished`: the container was gone.
    StopDone {
        vanished: bool,
    },
    /// The idle pause finished.
    PauseDone(EffectOutcome),
    /// The paused containers' memory passed the budget and this one is among the oldest.
    OverMemoryBudget,
    /// The unpause for a request finished.
    UnpauseDone(EffectOutcome),
    Retire,
    /// The engine event stream was interrupted: events may have been missed.
    EventGap,
    Resynced(Resync),
    /// The engine answers again after an outage.
    EngineBack,
    /// A container found at boot; `upstream` when it runs and publishes the port.
    Adopted {
        container_id: String,
        upstream: Option<SocketAddr>,
        /// Found paused (by the paused tier before a restart, or by someone else).
        paused: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Run a start (build if needed, find or create, start, health check) as its own task.
    SpawnStart,
    /// Stop the container (unpausing it first when `paused`); report [`Event::StopDone`].
    StopIdle { container_id: String, paused: bool },
    /// Pause the idle container; report [`Event::PauseDone`].
    Pause { container_id: String },
    /// Unpause the container for a request; report [`Event::UnpauseDone`].
    Unpause { container_id: String },
    /// Stop the container of a failed start (nothing waits for it).
    StopFailed { container_id: String },
    /// Inspect the container and report [`Event::Resynced`].
    Resync { container_id: String },
    /// Tell the engine monitor the engine is unreachable, so it pings until it answers.
    WatchEngine,
    /// Cancel the runtime's tasks.
    Cancel,
}

/// The next lifecycle after `event` at `now`, and what to do about it.
pub fn transition(state: &Lifecycle, event: Event, now: Instant) -> (Lifecycle, Vec<Effect>) {
    let mut next = state.clone();
    let mut effects = Vec::new();
    match event {
        Event::Request => {
            if let (Phase::Paused { upstream, .. }, Some(id), false) =
                (&state.phase, &state.container_id, state.retired)
            {
                next.phase = Phase::Unpausing { upstream: *upstream };
                effects.push(Effect::Unpause { container_id: id.clone() });
                return (next, effects);
            }
            let due = match &state.phase {
                Phase::Stopped => true,
                Phase::Failed { retry_at: Some(t), .. } => now >= *t,
                _ => false,
            };
            if due && !state.retired {
                next.phase = Phase::Starting;
                effects.push(Effect::SpawnStart);
            }
        }
        Event::BuildStarted => {
            if state.phase == Phase::Starting {
                next.phase = Phase::Building;
            }
        }
        Event::BuildFinished => {
            if state.phase == Phase::Building {
                next.phase = Phase::Starting;
            }
        }
        Event::ContainerAssigned(id) => next.container_id = Some(id),
        Event::ContainerGone => next.container_id = None,
        Event::StartSucceeded { upstream, container_id } => {
            if matches!(state.phase, Phase::Starting | Phase::Building) {
                next.phase = Phase::Running { upstream };
                next.failures = 0;
            }
            next.container_id = Some(container_id);
        }
        Event::StartFailed { kind, error } => {
            if matches!(state.phase, Phase::Starting | Phase::Building) {
                match kind {
                    FailureKind::EngineUnavailable => {
                        next.phase = Phase::EngineUnavailable { error };
                        effects.push(Effect::WatchEngine);
                    }
                    FailureKind::App => {
                        let backoff = state.policy.failure_backoff * (1 << state.failures.min(MAX_BACKOFF_DOUBLINGS));
                        next.failures = state.failures.saturating_add(1);
                        next.phase = Phase::Failed { error, retry_at: Some(now + backoff) };
                        if let Some(id) = &state.container_id {
                            effects.push(Effect::StopFailed { container_id: id.clone() });
                        }
                    }
                    FailureKind::Build => next.phase = Phase::Failed { error, retry_at: None },
                    FailureKind::Cancelled => next.phase = Phase::Stopped,
                }
            }
        }
        Event::Container(ContainerEvent { container_id, action }) => {
            if state.container_id.as_deref() == Some(container_id.as_str()) {
                match (&state.phase, &action) {
                    (p, a) if a.ends_run() && p.serves_or_frozen() => next.phase = Phase::Stopped,
                    // Paused or unpaused by someone else (or our own call, seen before it returns).
                    (Phase::Running { upstream } | Phase::Pausing { upstream }, ContainerAction::Pause) => {
                        next.phase = Phase::Paused { upstream: *upstream, since: now }
                    }
                    (Phase::Paused { upstream, .. } | Phase::Unpausing { upstream }, ContainerAction::Unpause) => {
                        next.phase = Phase::Running { upstream: *upstream }
                    }
                    _ => {}
                }
                if action == ContainerAction::Destroy {
                    next.container_id = None;
                }
            }
        }
        Event::IdleCheck { in_flight, idle_for } => {
            let idle = state.policy.idle_shutdown;
            let paused_limit = state.policy.stop_paused_after;
            match (&state.phase, &state.container_id) {
                (Phase::Running { .. }, None) if in_flight == 0 && !idle.is_zero() && idle_for >= idle => {
                    next.phase = Phase::Stopped
                }
                (Phase::Running { upstream }, Some(id)) if in_flight == 0 && !idle.is_zero() && idle_for >= idle => {
                    if paused_limit.is_zero() {
                        next.phase = Phase::Stopping;
                        effects.push(Effect::StopIdle { container_id: id.clone(), paused: false });
                    } else {
                        next.phase = Phase::Pausing { upstream: *upstream };
                        effects.push(Effect::Pause { container_id: id.clone() });
                    }
                }
                // Paused by someone else while the tier is off: left paused until a request.
                (Phase::Paused { since, .. }, Some(id))
                    if in_flight == 0 && !paused_limit.is_zero() && now >= *since + paused_limit =>
                {
                    next.phase = Phase::Stopping;
                    effects.push(Effect::StopIdle { container_id: id.clone(), paused: true });
                }
                _ => {}
            }
        }
        Event::StopDone { vanished } => {
            if state.phase == Phase::Stopping {
                next.phase = Phase::Stopped;
            }
            if vanished {
                next.container_id = None;
            }
        }
        Event::PauseDone(outcome) => {
            if let (Phase::Pausing { upstream }, Some(id)) = (&state.phase, &state.container_id) {
                match outcome {
                    EffectOutcome::Done => next.phase = Phase::Paused { upstream: *upstream, since: now },
                    EffectOutcome::Vanished => {
                        next.phase = Phase::Stopped;
                        next.container_id = None;
                    }
                    // The engine would not pause it: stop it as without the tier.
                    EffectOutcome::Failed => {
                        next.phase = Phase::Stopping;
                        effects.push(Effect::StopIdle { container_id: id.clone(), paused: false });
                    }
                }
            }
        }
        Event::OverMemoryBudget => {
            if let (Phase::Paused { .. }, Some(id)) = (&state.phase, &state.container_id) {
                next.phase = Phase::Stopping;
                effects.push(Effect::StopIdle { container_id: id.clone(), paused: true });
            }
        }
        Event::UnpauseDone(outcome) => {
            if let (Phase::Unpausing { upstream }, Some(id)) = (&state.phase, &state.container_id) {
                match outcome {
                    EffectOutcome::Done => next.phase = Phase::Running { upstream: *upstream },
                    EffectOutcome::Vanished => {
                        next.phase = Phase::Stopped;
                        next.container_id = None;
                    }
                    // Stop it; the waiting requests then start it afresh.
                    EffectOutcome::Failed => {
                        next.phase = Phase::Stopping;
                        effects.push(Effect::StopIdle { container_id: id.clone(), paused: true });
                    }
                }
            }
        }
        Event::Retire => {
            if !state.retired {
                next.retired = true;
                effects.push(Effect::Cancel);
            }
        }
        Event::EventGap => {
            if let (Phase::Running { .. } | Phase::Paused { .. }, Some(id)) = (&state.phase, &state.container_id) {
                effects.push(Effect::Resync { container_id: id.clone() });
            }
        }
        Event::Resynced(found) => {
            if matches!(state.phase, Phase::Running { .. } | Phase::Paused { .. }) {
                match (found, &state.phase) {
                    (Resync::Running, Phase::Paused { upstream, .. }) => {
                        next.phase = Phase::Running { upstream: *upstream }
                    }
                    (Resync::Paused, Phase::Running { upstream }) => {
                        next.phase = Phase::Paused { upstream: *upstream, since: now }
                    }
                    (Resync::Running | Resync::Paused, _) => {}
                    (Resync::NotRunning, _) => next.phase = Phase::Stopped,
                    (Resync::Gone, _) => {
                        next.phase = Phase::Stopped;
                        next.container_id = None;
                    }
                    (Resync::EngineUnavailable, _) => effects.push(Effect::WatchEngine),
                }
            }
        }
        Event::EngineBack => match &state.phase {
            // A backoff set around an outage must not delay the start once the engine answers.
            Phase::EngineUnavailable { .. } | Phase::Failed { retry_at: Some(_), .. } => {
                next.phase = Phase::Stopped;
                next.failures = 0;
            }
            Phase::Running { .. } => {
                if let Some(id) = &state.container_id {
                    effects.push(Effect::Resync { container_id: id.clone() });
                }
            }
            _ => {}
        },
        Event::Adopted { container_id, upstream, paused } => {
            next.container_id = Some(container_id);
            if let (Phase::Stopped, Some(upstream)) = (&state.phase, upstream) {
                next.phase = match paused {
                    true => Phase::Paused { upstream, since: now },
                    false => Phase::Running { upstream },
                };
            }
        }
    }
    (next, effects)
}

/// Which paused apps to stop so that the paused ones' memory fits `budget_bytes`, oldest
/// first. `paused`: (paused since, memory in bytes) per app; returns their indices.
pub fn over_memory_budget(paused: &[(Instant, u64)], budget_bytes: u64) -> Vec<usize> {
    let mut oldest_first: Vec<usize> = (0..paused.len()).collect();
    oldest_first.sort_by_key(|&i| paused[i].0);
    let mut total: u64 = paused.iter().map(|p| p.1).sum();
    oldest_first
        .into_iter()
        .take_while(|&i| {
            let over = total > budget_bytes;
            total -= if over { paused[i].1 } else { 0 };
            over
        })
        .collect()
}

/// Why a request could not get a running container.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StartError {
    /// The start failed; no new attempt before `retry_at` (never, for a failed build).
    #[error("{error}")]
    Failed { error: Arc<str>, retry_at: Option<Instant> },
    /// The container engine does not answer; retried as soon as it does.
    #[error("container engine unavailable: {error}")]
    EngineUnavailable { error: Arc<str> },
    /// An image build is running and the caller asked not to wait for it.
    #[error("the app's image is being built")]
    Building,
    /// The start did not finish within the request's wait bound.
    #[error("the app is still starting")]
    Timeout,
    #[error("the app was deleted")]
    Gone,
}

/// What a request gets from `state` at `now`: an upstream, an error, or to keep waiting.
pub fn answer(state: &Lifecycle, now: Instant, wait_for_build: bool) -> Result<Option<SocketAddr>, StartError> {
    if state.retired {
        return Err(StartError::Gone);
    }
    match &state.phase {
        Phase::Running { upstream } => Ok(Some(*upstream)),
        Phase::Failed { error, retry_at } if retry_at.is_none_or(|t| now < t) => {
            Err(StartError::Failed { error: error.clone(), retry_at: *retry_at })
        }
        Phase::EngineUnavailable { error } => Err(StartError::EngineUnavailable { error: error.clone() }),
        Phase::Building if !wait_for_build => Err(StartError::Building),
        _ => Ok(None),
    }
}

/// Whether a waiting request should look again: the lifecycle left the in-between phases.
pub fn settled(state: &Lifecycle, wait_for_build: bool) -> bool {
    match state.phase {
        Phase::Starting | Phase::Stopping | Phase::Pausing { .. } | Phase::Unpausing { .. } => state.retired,
        Phase::Building => !wait_for_build || state.retired,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        failure_backoff: Duration::from_secs(5),
        idle_shutdown: Duration::from_secs(60),
        stop_paused_after: Duration::ZERO,
    };
    const PAUSING: Policy = Policy { stop_paused_after: Duration::from_secs(3600), ..POLICY };
    const ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4000);

    fn running(id: &str) -> Lifecycle {
        Lifecycle { phase: Phase::Running { upstream: ADDR }, container_id: Some(id.into()), ..Lifecycle::new(POLICY) }
    }

    fn step(state: &Lifecycle, event: Event, now: Instant) -> Lifecycle {
        transition(state, event, now).0
    }

    fn failed(error: &str) -> Event {
        Event::StartFailed { kind: FailureKind::App, error: error.into() }
    }

    #[test]
    fn a_request_starts_once() {
        let now = Instant::now();
        let (s, fx) = transition(&Lifecycle::new(POLICY), Event::Request, now);
        assert_eq!((s.phase.clone(), fx), (Phase::Starting, vec![Effect::SpawnStart]));
        let (s2, fx) = transition(&s, Event::Request, now);
        assert_eq!((s2, fx), (s, vec![]), "a second request joins the start");
    }

    #[test]
    fn failures_back_off_doubling_and_reset_after_a_success() {
        let now = Instant::now();
        let mut s = Lifecycle::new(POLICY);
        let mut t = now;
        for (n, expected) in [5u64, 10, 20, 40, 80, 80].into_iter().enumerate() {
            s = step(&s, Event::Request, t);
            assert_eq!(s.phase, Phase::Starting, "attempt {n}");
            s = step(&s, failed("boom"), t);
            let Phase::Failed { retry_at: Some(at), .. } = s.phase else { panic!("{s:?}") };
            assert_eq!(at - t, Duration::from_secs(expected));
            assert_eq!(step(&s, Event::Request, at - Duration::from_millis(1)).phase, s.phase, "no start before");
            t = at;
        }
        s = step(&s, Event::Request, t);
        s = step(&s, Event::StartSucceeded { upstream: ADDR, container_id: "c".into() }, t);
        assert_eq!((s.phase.clone(), s.failures), (Phase::Running { upstream: ADDR }, 0));
    }

    #[test]
    fn an_app_failure_stops_its_container() {
        let s = Lifecycle { phase: Phase::Starting, container_id: Some("c".into()), ..Lifecycle::new(POLICY) };
        let (_, fx) = transition(&s, failed("exited"), Instant::now());
        assert_eq!(fx, vec![Effect::StopFailed { container_id: "c".into() }]);
    }

    #[test]
    fn an_unreachable_engine_is_not_a_failure() {
        let now = Instant::now();
        let s = Lifecycle { phase: Phase::Starting, failures: 2, ..Lifecycle::new(POLICY) };
        let error: Arc<str> = "refused".into();
        let (s, fx) = transition(&s, Event::StartFailed { kind: FailureKind::EngineUnavailable, error }, now);
        assert_eq!(fx, vec![Effect::WatchEngine]);
        assert_eq!(s.failures, 2);
        assert!(matches!(answer(&s, now, true), Err(StartError::EngineUnavailable { .. })));
        assert_eq!(step(&s, Event::Request, now).phase, s.phase, "requests do not start while it is down");
        let s = step(&s, Event::EngineBack, now);
        assert_eq!((s.phase.clone(), s.failures), (Phase::Stopped, 0));
    }

    #[test]
    fn the_engine_coming_back_lifts_a_backoff() {
        let now = Instant::now();
        let s = Lifecycle {
            phase: Phase::Failed { error: "x".into(), retry_at: Some(now + Duration::from_secs(160)) },
            failures: 5,
            ..Lifecycle::new(POLICY)
        };
        let s = step(&s, Event::EngineBack, now);
        assert_eq!(transition(&s, Event::Request, now).1, vec![Effect::SpawnStart]);
        assert_eq!(
            transition(&running("c"), Event::EngineBack, now).1,
            vec![Effect::Resync { container_id: "c".into() }]
        );
        let build = Lifecycle { phase: Phase::Failed { error: "x".into(), retry_at: None }, ..Lifecycle::new(POLICY) };
        assert_eq!(step(&build, Event::EngineBack, now), build, "a failed build waits for a reload");
    }

    #[test]
    fn a_build_failure_is_kept() {
        let now = Instant::now();
        let s = Lifecycle { phase: Phase::Starting, ..Lifecycle::new(POLICY) };
        let s = step(&s, Event::BuildStarted, now);
        assert_eq!(s.phase, Phase::Building);
        assert!(matches!(answer(&s, now, false), Err(StartError::Building)));
        let s = step(&s, Event::StartFailed { kind: FailureKind::Build, error: "no".into() }, now);
        assert_eq!(step(&s, Event::Request, now + Duration::from_secs(3600)).phase, s.phase);
    }

    #[test]
    fn exit_events_of_its_own_container_stop_a_running_app() {
        let now = Instant::now();
        let s = running("c");
        let other = ContainerEvent { container_id: "d".into(), action: ContainerAction::Die { exit_code: Some(1) } };
        assert_eq!(step(&s, Event::Container(other), now), s);
        let start = ContainerEvent { container_id: "c".into(), action: ContainerAction::Start };
        assert_eq!(step(&s, Event::Container(start), now), s);
        let die = ContainerEvent { container_id: "c".into(), action: ContainerAction::Die { exit_code: Some(1) } };
        let s2 = step(&s, Event::Container(die), now);
        assert_eq!((s2.phase, s2.container_id), (Phase::Stopped, Some("c".into())), "the same container restarts");
        let destroy = ContainerEvent { container_id: "c".into(), action: ContainerAction::Destroy };
        let s3 = step(&s, Event::Container(destroy), now);
        assert_eq!((s3.phase, s3.container_id), (Phase::Stopped, None), "a new container is created");
    }

    #[test]
    fn idle_stop_only_when_nothing_is_in_flight() {
        let now = Instant::now();
        let s = running("c");
        let busy = Event::IdleCheck { in_flight: 1, idle_for: Duration::from_secs(600) };
        assert_eq!(transition(&s, busy, now), (s.clone(), vec![]));
        let early = Event::IdleCheck { in_flight: 0, idle_for: Duration::from_secs(59) };
        assert_eq!(transition(&s, early, now), (s.clone(), vec![]));
        let (s, fx) = transition(&s, Event::IdleCheck { in_flight: 0, idle_for: Duration::from_secs(60) }, now);
        assert_eq!(
            (s.phase.clone(), fx),
            (Phase::Stopping, vec![Effect::StopIdle { container_id: "c".into(), paused: false }])
        );
        assert_eq!(answer(&s, now, true).unwrap(), None, "a request during the stop waits");
        assert!(!settled(&s, true));
        let s = step(&s, Event::StopDone { vanished: false }, now);
        assert_eq!(transition(&s, Event::Request, now).1, vec![Effect::SpawnStart], "then starts it again");
    }

    #[test]
    fn retired_answers_gone_and_cancels_once() {
        let now = Instant::now();
        let s = Lifecycle { phase: Phase::Starting, ..Lifecycle::new(POLICY) };
        let (s, fx) = transition(&s, Event::Retire, now);
        assert_eq!(fx, vec![Effect::Cancel]);
        assert!(settled(&s, true));
        assert!(matches!(answer(&s, now, true), Err(StartError::Gone)));
        assert_eq!(transition(&s, Event::Retire, now).1, vec![]);
        let s = step(&s, Event::StartFailed { kind: FailureKind::Cancelled, error: "x".into() }, now);
        assert_eq!(transition(&s, Event::Request, now).1, vec![], "a retired app never starts again");
    }

    #[test]
    fn a_gap_resyncs_a_running_app() {
        let now = Instant::now();
        let s = running("c");
        assert_eq!(transition(&s, Event::EventGap, now).1, vec![Effect::Resync { container_id: "c".into() }]);
        assert_eq!(transition(&Lifecycle::new(POLICY), Event::EventGap, now).1, vec![]);
        assert_eq!(step(&s, Event::Resynced(Resync::Running), now), s);
        assert_eq!(step(&s, Event::Resynced(Resync::NotRunning), now).phase, Phase::Stopped);
        assert_eq!(step(&s, Event::Resynced(Resync::Gone), now).container_id, None);
        assert_eq!(transition(&s, Event::Resynced(Resync::EngineUnavailable), now).1, vec![Effect::WatchEngine]);
        let paused = step(&s, Event::Resynced(Resync::Paused), now);
        assert_eq!(paused.phase, Phase::Paused { upstream: ADDR, since: now }, "paused during the gap");
        assert_eq!(transition(&paused, Event::EventGap, now).1, vec![Effect::Resync { container_id: "c".into() }]);
        assert_eq!(step(&paused, Event::Resynced(Resync::Running), now), s, "unpaused during the gap");
    }

    #[test]
    fn adoption() {
        let now = Instant::now();
        let adopted = |upstream, paused| Event::Adopted { container_id: "c".into(), upstream, paused };
        let s = step(&Lifecycle::new(POLICY), adopted(Some(ADDR), false), now);
        assert_eq!(s, running("c"));
        let s = step(&Lifecycle::new(POLICY), adopted(Some(ADDR), true), now);
        assert_eq!(s.phase, Phase::Paused { upstream: ADDR, since: now }, "a paused container is adopted paused");
        assert_eq!(transition(&s, Event::Request, now).1, vec![Effect::Unpause { container_id: "c".into() }]);
        let s = step(&Lifecycle::new(POLICY), adopted(None, false), now);
        assert_eq!((s.phase, s.container_id), (Phase::Stopped, Some("c".into())));
    }

    fn idle(secs: u64) -> Event {
        Event::IdleCheck { in_flight: 0, idle_for: Duration::from_secs(secs) }
    }

    #[test]
    fn the_paused_tier_pauses_an_idle_app_and_stops_it_after_the_limit() {
        let now = Instant::now();
        let s = Lifecycle { policy: PAUSING, ..running("c") };
        let (s, fx) = transition(&s, idle(60), now);
        assert_eq!(
            (s.phase.clone(), fx),
            (Phase::Pausing { upstream: ADDR }, vec![Effect::Pause { container_id: "c".into() }])
        );
        assert!(!settled(&s, true), "a request during the pause waits");
        let s = step(&s, Event::PauseDone(EffectOutcome::Done), now);
        assert_eq!((s.name(), s.upstream()), ("paused", None));
        let later = now + Duration::from_secs(3599);
        assert_eq!(transition(&s, idle(60 + 3599), later), (s.clone(), vec![]), "not before the limit");
        let limit = now + Duration::from_secs(3600);
        assert_eq!(transition(&s, Event::IdleCheck { in_flight: 1, idle_for: Duration::ZERO }, limit).1, vec![]);
        let (s, fx) = transition(&s, idle(3660), limit);
        assert_eq!(
            (s.phase.clone(), fx),
            (Phase::Stopping, vec![Effect::StopIdle { container_id: "c".into(), paused: true }])
        );
    }

    #[test]
    fn a_request_unpauses_once_for_all_waiters() {
        let now = Instant::now();
        let s = Lifecycle {
            phase: Phase::Paused { upstream: ADDR, since: now },
            ..Lifecycle { policy: PAUSING, ..running("c") }
        };
        let (s, fx) = transition(&s, Event::Request, now);
        assert_eq!(
            (s.phase.clone(), fx),
            (Phase::Unpausing { upstream: ADDR }, vec![Effect::Unpause { container_id: "c".into() }])
        );
        assert_eq!(transition(&s, Event::Request, now), (s.clone(), vec![]), "a second request joins the unpause");
        assert_eq!(answer(&s, now, true).unwrap(), None);
        let s = step(&s, Event::UnpauseDone(EffectOutcome::Done), now);
        assert_eq!(s, Lifecycle { policy: PAUSING, ..running("c") });
        let failing = Lifecycle { phase: Phase::Unpausing { upstream: ADDR }, ..s.clone() };
        let (f, fx) = transition(&failing, Event::UnpauseDone(EffectOutcome::Failed), now);
        assert_eq!((f.phase, fx), (Phase::Stopping, vec![Effect::StopIdle { container_id: "c".into(), paused: true }]));
        let gone = step(&failing, Event::UnpauseDone(EffectOutcome::Vanished), now);
        assert_eq!((gone.phase, gone.container_id), (Phase::Stopped, None));
    }

    #[test]
    fn the_tier_off_stops_and_a_failed_pause_stops() {
        let now = Instant::now();
        assert_eq!(transition(&running("c"), idle(60), now).0.phase, Phase::Stopping, "stop_paused_after = 0 stops");
        let pausing = Lifecycle { phase: Phase::Pausing { upstream: ADDR }, policy: PAUSING, ..running("c") };
        let (s, fx) = transition(&pausing, Event::PauseDone(EffectOutcome::Failed), now);
        assert_eq!(
            (s.phase, fx),
            (Phase::Stopping, vec![Effect::StopIdle { container_id: "c".into(), paused: false }])
        );
    }

    #[test]
    fn the_memory_budget_stops_the_oldest_paused_first() {
        let now = Instant::now();
        let at = |s| now + Duration::from_secs(s);
        let paused = [(at(30), 100), (at(10), 300), (at(20), 200), (at(40), 50)];
        assert_eq!(over_memory_budget(&paused, 650), Vec::<usize>::new(), "within the budget");
        assert_eq!(over_memory_budget(&paused, 400), vec![1], "the oldest goes first");
        assert_eq!(over_memory_budget(&paused, 200), vec![1, 2], "until the rest fits");
        assert_eq!(over_memory_budget(&paused, 0), vec![1, 2, 0, 3]);
        let s = Lifecycle { phase: Phase::Paused { upstream: ADDR, since: now }, ..running("c") };
        let (s, fx) = transition(&s, Event::OverMemoryBudget, now);
        assert_eq!((s.phase, fx), (Phase::Stopping, vec![Effect::StopIdle { container_id: "c".into(), paused: true }]));
        assert_eq!(transition(&running("c"), Event::OverMemoryBudget, now).1, vec![], "only paused apps");
    }

    #[test]
    fn engine_pause_events_keep_the_phase_true() {
        let now = Instant::now();
        let ev = |action| Event::Container(ContainerEvent { container_id: "c".into(), action });
        let s = step(&running("c"), ev(ContainerAction::Pause), now);
        assert_eq!(s.phase, Phase::Paused { upstream: ADDR, since: now }, "paused by someone else");
        assert_eq!(
            transition(&s, idle(100_000), now + Duration::from_secs(100_000)).1,
            vec![],
            "tier off: left paused"
        );
        assert_eq!(step(&s, ev(ContainerAction::Unpause), now), running("c"), "unpaused by someone else");
        let die = step(&s, ev(ContainerAction::Die { exit_code: Some(137) }), now);
        assert_eq!(die.phase, Phase::Stopped, "a paused container that is killed stops");
        let pausing = Lifecycle { phase: Phase::Pausing { upstream: ADDR }, ..running("c") };
        let s = step(&pausing, ev(ContainerAction::Pause), now);
        assert_eq!(step(&s, Event::PauseDone(EffectOutcome::Done), now), s, "the event before the call's answer");
    }
}
