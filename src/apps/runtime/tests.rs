//! The runtime against the fake engine, on tokio's paused clock: no container engine needed.
//! A tokio listener on 127.0.0.1 answering `HTTP/1.1 200` (or 503) plays the container's port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::apps::{events, reaper};
use crate::engine::fake::{Call, FakeEngine};

const BACKOFF: Duration = Duration::from_secs(5);
const IDLE: Duration = Duration::from_secs(60);
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A "container" answering every request with `status`.
async fn upstream(status: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await;
            });
        }
    });
    addr
}

struct Harness {
    fake: Arc<FakeEngine>,
    /// The one handle everyone shares (it carries the engine's availability).
    engine: Engine,
    rt: Arc<ContainerRuntime>,
    cancel: CancellationToken,
    _logs: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Harness {
    /// With the paused tier off: idle apps are stopped.
    async fn new(status: &'static str) -> Harness {
        Harness::with_paused_tier(status, Duration::ZERO).await
    }

    async fn with_paused_tier(status: &'static str, stop_paused_after: Duration) -> Harness {
        let fake = FakeEngine::new();
        fake.set_upstream(upstream(status).await);
        let engine = fake.engine();
        let plan = ContainerPlan {
            image: ImageSource::Existing("app:1".into()),
            port: 8080,
            env: vec![("GREETING".into(), "hi".into())],
            preserve_host: false,
            strip_app: false,
            options: Default::default(),
            raw_options: BTreeMap::new(),
        };
        let settings = RuntimeSettings {
            idle_shutdown: IDLE,
            stop_paused_after,
            health_url: "/".into(),
            start_timeout: START_TIMEOUT,
            failure_backoff: BACKOFF,
            stop_timeout_secs: 1,
            init: false,
        };
        let logs = tempfile::tempdir().unwrap();
        let secrets = Arc::new(Secrets::from_config(&BTreeMap::new()).unwrap());
        let builder =
            Arc::new(Builder::new(engine.clone(), logs.path().to_path_buf(), Duration::from_secs(60), secrets.clone()));
        let rt = ContainerRuntime::new(
            ("app1".into(), Variant::Prod),
            "inst".into(),
            plan,
            settings,
            engine.clone(),
            (builder, secrets),
        );
        Harness { fake, engine, rt, cancel: CancellationToken::new(), _logs: logs }
    }

    /// Runs the engine event watcher and the availability monitor for this one runtime.
    fn watch_engine(&self) {
        self.watch_engine_with_budget(0);
    }

    /// Like [`Harness::watch_engine`], with a paused memory budget in bytes.
    fn watch_engine_with_budget(&self, paused_memory_budget: u64) {
        let rt = self.rt.clone();
        let runtimes = move || vec![rt.clone()];
        let label = (engine::LABEL_INSTANCE.to_string(), "inst".to_string());
        let watch = events::watch_events(
            self.engine.clone(),
            label,
            runtimes.clone(),
            paused_memory_budget,
            (tokio_util::task::TaskTracker::new(), self.cancel.clone()),
        );
        tokio::spawn(watch);
        let nothing = || futures_util::FutureExt::boxed(async {});
        tokio::spawn(events::watch_availability(self.engine.clone(), runtimes, nothing, self.cancel.clone()));
    }

    async fn request(&self) -> Result<SocketAddr, StartError> {
        self.rt.ensure_running(true).await.map(|(addr, _guard)| addr)
    }

    async fn wait_phase(&self, name: &str) {
        let mut rx = self.rt.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|s| s.name() == name)).await;
        assert!(waited.is_ok(), "phase {name} not reached: {:?}", self.rt.state());
    }
}

fn failed_error(r: Result<SocketAddr, StartError>) -> (String, Option<Instant>) {
    match r {
        Err(StartError::Failed { error, retry_at }) => (error.to_string(), retry_at),
        other => panic!("expected a failed start, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn waiters_share_one_start() {
    let h = Harness::new("200 OK").await;
    h.fake.hold(Call::Start);
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let rt = h.rt.clone();
            tokio::spawn(async move { rt.ensure_running(true).await.map(|(addr, _)| addr) })
        })
        .collect();
    h.fake.wait_calls(Call::Start, 1).await;
    h.fake.release(Call::Start);
    let mut addrs = Vec::new();
    for w in waiters {
        addrs.push(w.await.unwrap().unwrap());
    }
    assert!(addrs.windows(2).all(|w| w[0] == w[1]));
    assert_eq!((h.fake.calls(Call::Create), h.fake.calls(Call::Start)), (1, 1), "one create and one start for all");
    assert_eq!(h.fake.containers().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn health_timeout_fails_the_start() {
    let h = Harness::new("503 Service Unavailable").await;
    let started = Instant::now();
    let first = h.request().await;
    assert!(matches!(first, Err(StartError::Failed { .. } | StartError::Timeout)), "{first:?}");
    h.wait_phase("failed").await;
    let (error, retry_at) = failed_error(h.request().await);
    assert!(error.contains("503") || error.contains("did not become ready within 10s"), "{error}");
    assert!(retry_at.is_some());
    let took = started.elapsed();
    assert!(took >= START_TIMEOUT - Duration::from_millis(300) && took <= START_TIMEOUT, "{took:?}");
    assert_eq!(h.fake.calls(Call::Stop), 1, "the unhealthy container is stopped");
}

#[tokio::test(start_paused = true)]
async fn a_crash_while_starting_answers_with_the_log_tail() {
    let h = Harness::new("200 OK").await;
    h.fake.exit_on_start(Some(3));
    h.fake.set_logs("boom: hi\n");
    let (error, retry_at) = failed_error(h.request().await);
    assert!(error.contains("exited") && error.contains("boom: hi"), "{error}");
    assert_eq!(retry_at.map(|t| t - Instant::now()), Some(BACKOFF));
    assert_eq!(h.rt.state().failures, 1);
}

#[tokio::test(start_paused = true)]
async fn a_crash_during_health_checks_fails_fast() {
    let h = Harness::new("503 Service Unavailable").await;
    let rt = h.rt.clone();
    let request = tokio::spawn(async move { rt.ensure_running(true).await.map(|(a, _)| a) });
    h.fake.wait_calls(Call::Inspect, 1).await;
    let id = h.rt.container_id().unwrap();
    h.fake.kill(&id, 1);
    let (error, _) = failed_error(request.await.unwrap());
    assert!(error.contains("exited before it became ready"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_vanished_container_is_recreated() {
    let h = Harness::new("200 OK").await;
    h.watch_engine();
    h.fake.wait_calls(Call::Events, 1).await;
    h.request().await.unwrap();
    let first = h.rt.container_id().unwrap();
    h.fake.vanish(&first);
    h.wait_phase("stopped").await;
    assert_eq!(h.rt.container_id(), None);
    h.request().await.unwrap();
    let second = h.rt.container_id().unwrap();
    assert_ne!(first, second);
    assert_eq!(h.fake.calls(Call::Create), 2);
}

#[tokio::test(start_paused = true)]
async fn a_container_vanishing_during_the_start_is_replaced() {
    let h = Harness::new("200 OK").await;
    h.fake.hold(Call::Start);
    let rt = h.rt.clone();
    let request = tokio::spawn(async move { rt.ensure_running(true).await.map(|(a, _)| a) });
    h.fake.wait_calls(Call::Start, 1).await;
    let first = h.rt.container_id().unwrap();
    h.fake.vanish(&first);
    h.fake.release(Call::Start);
    request.await.unwrap().unwrap();
    assert_ne!(h.rt.container_id().unwrap(), first);
    assert_eq!(h.rt.state().failures, 0, "a vanished container is not a failure");
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_and_a_success_resets_the_backoff() {
    let h = Harness::new("200 OK").await;
    h.fake.fail_starts(Some("no space left on device"));
    let (error, retry_at) = failed_error(h.request().await);
    assert!(error.contains("no space left on device"), "{error}");
    assert_eq!(retry_at.unwrap() - Instant::now(), BACKOFF);
    for _ in 0..5 {
        failed_error(h.request().await);
    }
    assert_eq!(h.fake.calls(Call::Start), 1, "no new start during the backoff");
    tokio::time::sleep(BACKOFF).await;
    let (_, retry_at) = failed_error(h.request().await);
    assert_eq!(retry_at.unwrap() - Instant::now(), BACKOFF * 2, "doubled");
    assert_eq!(h.fake.calls(Call::Start), 2);
    h.fake.fail_starts(None);
    tokio::time::sleep(BACKOFF * 2).await;
    h.request().await.unwrap();
    assert_eq!(h.rt.state().failures, 0);
    // The next failure backs off from the base again.
    h.fake.exit_on_start(Some(1));
    h.fake.kill(&h.rt.container_id().unwrap(), 1);
    h.rt.on_container_event(&ContainerEvent {
        container_id: h.rt.container_id().unwrap(),
        action: engine::ContainerAction::Die { exit_code: Some(1) },
    });
    let (_, retry_at) = failed_error(h.request().await);
    assert_eq!(retry_at.unwrap() - Instant::now(), BACKOFF, "reset by the success");
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_engine_answers_unavailable_then_starts_once_it_is_back() {
    let h = Harness::new("200 OK").await;
    h.watch_engine();
    h.fake.set_unavailable(true);
    for _ in 0..3 {
        let r = h.request().await;
        assert!(matches!(r, Err(StartError::EngineUnavailable { .. })), "{r:?}");
    }
    assert_eq!(h.rt.state().failures, 0, "not an app failure");
    assert_eq!(h.fake.calls(Call::List), 1, "requests while it is down do not call the engine");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pings = h.fake.calls(Call::Ping);
    assert!((10..=30).contains(&pings), "one monitor pings every 250 ms, saw {pings} pings in 5 s");
    h.fake.set_unavailable(false);
    let back = Instant::now();
    h.wait_phase("stopped").await;
    assert!(back.elapsed() <= events::PING_EVERY, "noticed within one ping interval: {:?}", back.elapsed());
    h.request().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_backoff_set_around_an_outage_does_not_delay_the_start_once_the_engine_is_back() {
    let h = Harness::new("200 OK").await;
    h.watch_engine();
    // The container dies as the engine goes down: an app failure, backing off.
    h.fake.exit_on_start(Some(137));
    failed_error(h.request().await);
    h.fake.set_unavailable(true);
    h.fake.exit_on_start(None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.fake.set_unavailable(false);
    let back = Instant::now();
    h.wait_phase("stopped").await;
    h.request().await.unwrap();
    assert!(back.elapsed() < Duration::from_secs(1), "started {:?} after the engine answered", back.elapsed());
}

#[tokio::test(start_paused = true)]
async fn an_idle_stop_racing_a_request_restarts_the_same_container() {
    let h = Harness::new("200 OK").await;
    tokio::spawn(reaper::run(h.rt.clone()));
    h.request().await.unwrap();
    let id = h.rt.container_id().unwrap();
    h.fake.hold(Call::Stop);
    tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
    h.fake.wait_calls(Call::Stop, 1).await;
    assert_eq!(h.rt.state().name(), "stopping");
    let rt = h.rt.clone();
    let request = tokio::spawn(async move { rt.ensure_running(true).await.map(|(a, _)| a) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!request.is_finished(), "a request during the stop waits for it");
    h.fake.release(Call::Stop);
    request.await.unwrap().unwrap();
    assert_eq!(h.rt.container_id().unwrap(), id, "the same container");
    assert_eq!((h.fake.calls(Call::Create), h.fake.calls(Call::Start)), (1, 2));
    assert!(h.fake.container(&id).unwrap().running);
}

#[tokio::test(start_paused = true)]
async fn a_request_in_flight_keeps_the_app_from_idling() {
    let h = Harness::new("200 OK").await;
    tokio::spawn(reaper::run(h.rt.clone()));
    let (_, guard) = h.rt.ensure_running(true).await.unwrap();
    tokio::time::sleep(IDLE * 3).await;
    assert_eq!(h.rt.state().name(), "running");
    drop(guard);
    tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
    h.wait_phase("stopped").await;
    assert_eq!(h.fake.calls(Call::Stop), 1);
}

#[tokio::test(start_paused = true)]
async fn retiring_while_starting_answers_gone() {
    let h = Harness::new("200 OK").await;
    h.fake.hold(Call::Start);
    let rt = h.rt.clone();
    let request = tokio::spawn(async move { rt.ensure_running(true).await.map(|(a, _)| a) });
    h.fake.wait_calls(Call::Start, 1).await;
    h.rt.shutdown().await;
    let r = request.await.unwrap();
    assert!(matches!(r, Err(StartError::Gone)), "{r:?}");
    assert!(h.rt.state().retired);
    assert!(h.rt.tasks.is_empty(), "the start task ended");
    h.fake.release(Call::Start);
    assert!(matches!(h.request().await, Err(StartError::Gone)));
    assert_eq!(h.fake.calls(Call::Start), 1, "a retired app never starts again");
}

#[tokio::test(start_paused = true)]
async fn a_gap_in_the_event_stream_resyncs_and_finds_the_container_dead() {
    let h = Harness::new("200 OK").await;
    h.watch_engine();
    h.fake.wait_calls(Call::Events, 1).await;
    h.request().await.unwrap();
    let id = h.rt.container_id().unwrap();
    // The container dies while nobody listens.
    h.fake.end_event_streams();
    h.fake.set_running(&id, false);
    h.wait_phase("stopped").await;
    let reconnected = tokio::time::timeout(Duration::from_secs(2), h.fake.wait_calls(Call::Events, 2)).await;
    assert!(reconnected.is_ok(), "the watcher reconnects");
    assert_eq!(h.rt.container_id(), Some(id.clone()), "kept: it starts again");
    h.request().await.unwrap();
    assert!(h.fake.container(&id).unwrap().running);
}

#[tokio::test(start_paused = true)]
async fn adoption_serves_a_running_container_at_once() {
    let h = Harness::new("200 OK").await;
    let engine = h.fake.engine();
    let spec = ContainerSpec {
        name: h.rt.container_name(),
        image: "app:1".into(),
        port: 8080,
        env: vec![],
        labels: h.rt.labels(),
        init: false,
        options: Default::default(),
    };
    let id = engine.create(&spec).await.unwrap();
    engine.start(&id).await.unwrap();
    h.rt.adopt(&id, true).await;
    h.request().await.unwrap();
    assert_eq!(h.fake.calls(Call::Start), 1, "no second start");
}

#[tokio::test(start_paused = true)]
async fn a_hung_engine_ends_the_start_at_the_start_timeout_as_an_outage() {
    let h = Harness::new("200 OK").await;
    h.fake.hold(Call::Start);
    let rt = h.rt.clone();
    let request = tokio::spawn(async move { rt.ensure_running(true).await.map(|(a, _)| a) });
    h.fake.wait_calls(Call::Start, 1).await;
    h.fake.set_unavailable(true);
    let started = Instant::now();
    let r = request.await.unwrap();
    assert!(matches!(r, Err(StartError::Timeout | StartError::EngineUnavailable { .. })), "{r:?}");
    h.wait_phase("engine-unavailable").await;
    assert!(started.elapsed() <= START_TIMEOUT);
    assert_eq!(h.rt.state().failures, 0);
}

const PAUSED_LIMIT: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn an_idle_app_is_paused_and_one_unpause_serves_every_waiter() {
    let h = Harness::with_paused_tier("200 OK", PAUSED_LIMIT).await;
    tokio::spawn(reaper::run(h.rt.clone()));
    let addr = h.request().await.unwrap();
    let id = h.rt.container_id().unwrap();
    tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
    h.wait_phase("paused").await;
    let c = h.fake.container(&id).unwrap();
    assert!(c.paused && c.running, "paused, not stopped");
    assert_eq!((h.fake.calls(Call::Pause), h.fake.calls(Call::Stop)), (1, 0));
    h.fake.hold(Call::Unpause);
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let rt = h.rt.clone();
            tokio::spawn(async move { rt.ensure_running(true).await.map(|(a, _)| a) })
        })
        .collect();
    h.fake.wait_calls(Call::Unpause, 1).await;
    assert_eq!(h.rt.state().name(), "unpausing");
    h.fake.release(Call::Unpause);
    for w in waiters {
        assert_eq!(w.await.unwrap().unwrap(), addr, "the same upstream");
    }
    assert_eq!(h.fake.calls(Call::Unpause), 1, "one unpause for all waiters");
    assert_eq!((h.fake.calls(Call::Start), h.fake.calls(Call::Create)), (1, 1), "no new start");
    assert!(!h.fake.container(&id).unwrap().paused);
    assert_eq!(h.rt.state().name(), "running");
    // The unpause and the first start's steps are timed as wake phases.
    let text = crate::metrics::get().encode();
    for phase in ["unpause", "create", "start", "ready"] {
        let series = format!("berth_wake_phase_duration_seconds_count{{phase=\"{phase}\"}} ");
        assert!(text.contains(&series), "no {phase} phase in:\n{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_paused_app_is_stopped_after_the_limit() {
    let h = Harness::with_paused_tier("200 OK", PAUSED_LIMIT).await;
    tokio::spawn(reaper::run(h.rt.clone()));
    h.request().await.unwrap();
    let id = h.rt.container_id().unwrap();
    tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
    h.wait_phase("paused").await;
    tokio::time::sleep(PAUSED_LIMIT - Duration::from_secs(2)).await;
    assert_eq!((h.rt.state().name(), h.fake.calls(Call::Stop)), ("paused", 0), "not before the limit");
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.wait_phase("stopped").await;
    let c = h.fake.container(&id).unwrap();
    assert!(!c.running && !c.paused, "thawed, then stopped: {c:?}");
    assert_eq!(h.fake.calls(Call::Stop), 1);
    h.request().await.unwrap();
    assert_eq!((h.fake.calls(Call::Start), h.rt.container_id().unwrap()), (2, id), "the next request starts it again");
}

#[tokio::test(start_paused = true)]
async fn with_the_tier_off_an_idle_app_is_stopped() {
    let h = Harness::new("200 OK").await;
    tokio::spawn(reaper::run(h.rt.clone()));
    h.request().await.unwrap();
    tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
    h.wait_phase("stopped").await;
    assert_eq!((h.fake.calls(Call::Pause), h.fake.calls(Call::Stop)), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn engine_pause_events_from_someone_else_keep_the_state_true() {
    let h = Harness::with_paused_tier("200 OK", PAUSED_LIMIT).await;
    h.watch_engine();
    let addr = h.request().await.unwrap();
    let id = h.rt.container_id().unwrap();
    h.engine.pause(&id).await.unwrap();
    h.wait_phase("paused").await;
    h.engine.unpause(&id).await.unwrap();
    h.wait_phase("running").await;
    h.engine.pause(&id).await.unwrap();
    h.wait_phase("paused").await;
    assert_eq!(h.request().await.unwrap(), addr, "a request unpauses it");
    assert!(!h.fake.container(&id).unwrap().paused);
}

#[tokio::test(start_paused = true)]
async fn a_paused_container_found_at_boot_is_unpaused_not_started() {
    let h = Harness::with_paused_tier("200 OK", PAUSED_LIMIT).await;
    let spec = ContainerSpec {
        name: h.rt.container_name(),
        image: "app:1".into(),
        port: 8080,
        env: vec![],
        labels: h.rt.labels(),
        init: false,
        options: Default::default(),
    };
    let id = h.engine.create(&spec).await.unwrap();
    h.engine.start(&id).await.unwrap();
    h.engine.pause(&id).await.unwrap();
    // The engine lists a paused container as not running.
    h.rt.adopt(&id, false).await;
    assert_eq!(h.rt.state().name(), "paused");
    h.request().await.unwrap();
    assert_eq!((h.fake.calls(Call::Start), h.fake.calls(Call::Unpause)), (1, 1), "unpaused, not started again");
}

#[tokio::test(start_paused = true)]
async fn paused_memory_over_the_budget_stops_the_paused_container() {
    // The fake engine reports 1 MiB per container.
    for (budget, stopped) in [(512 * 1024, true), (2 << 20, false)] {
        let h = Harness::with_paused_tier("200 OK", PAUSED_LIMIT).await;
        h.watch_engine_with_budget(budget);
        tokio::spawn(reaper::run(h.rt.clone()));
        h.request().await.unwrap();
        let id = h.rt.container_id().unwrap();
        tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
        h.fake.wait_calls(Call::Stats, 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let c = h.fake.container(&id).unwrap();
        let expected = if stopped { ("stopped", false) } else { ("paused", true) };
        assert_eq!((h.rt.state().name(), c.running), expected, "budget {budget}");
    }
}
