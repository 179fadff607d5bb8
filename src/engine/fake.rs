//! An in-memory [`ContainerEngine`] for tests: containers with state, an event channel that
//! reflects state changes (and that a test can push into or cut), call counters, and
//! scriptable faults: starts that fail, containers that exit at once or vanish, an engine that
//! is unreachable until told otherwise, and calls that block until released.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::{broadcast, watch, Semaphore};

use super::{
    ContainerAction, ContainerEngine, ContainerEvent, ContainerSpec, ContainerStats, ContainerStatus, ContainerSummary,
    Engine, EngineError,
};

/// The engine calls, for counters and holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    Ping,
    ImageExists,
    EnsureImage,
    Build,
    RemoveImage,
    Create,
    Start,
    Stop,
    Pause,
    Unpause,
    Remove,
    Inspect,
    List,
    Stats,
    Events,
    Logs,
}

/// One container the fake holds.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    pub running: bool,
    pub paused: bool,
}

#[derive(Default)]
struct Script {
    containers: HashMap<String, FakeContainer>,
    images: HashSet<String>,
    next_id: u64,
    unavailable: bool,
    start_failure: Option<String>,
    build_failure: Option<String>,
    exit_on_start: Option<i64>,
    upstream: Option<SocketAddr>,
    logs: String,
}

pub struct FakeEngine {
    script: Mutex<Script>,
    events: Mutex<broadcast::Sender<ContainerEvent>>,
    calls: watch::Sender<HashMap<Call, usize>>,
    holds: Mutex<HashMap<Call, Arc<Semaphore>>>,
}

impl FakeEngine {
    pub fn new() -> Arc<FakeEngine> {
        Arc::new(FakeEngine {
            script: Mutex::new(Script::default()),
            events: Mutex::new(broadcast::channel(256).0),
            calls: watch::Sender::new(HashMap::new()),
            holds: Mutex::new(HashMap::new()),
        })
    }

    /// The handle the code under test uses.
    pub fn engine(self: &Arc<Self>) -> Engine {
        Engine::new(self.clone())
    }

    /// Where running containers are published (a test's listener). Unset: no port.
    pub fn set_upstream(&self, addr: SocketAddr) {
        self.script.lock().unwrap().upstream = Some(addr);
    }

    /// Every call fails as unreachable while set.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.script.lock().unwrap().unavailable = unavailable;
        if unavailable {
            self.end_event_streams();
        }
    }

    /// Every start fails with this engine message while set.
    pub fn fail_starts(&self, message: Option<&str>) {
        self.script.lock().unwrap().start_failure = message.map(str::to_string);
    }

    /// Every build fails with this message while set.
    pub fn fail_builds(&self, message: Option<&str>) {
        self.script.lock().unwrap().build_failure = message.map(str::to_string);
    }

    /// Started containers exit at once with this code while set.
    pub fn exit_on_start(&self, exit_code: Option<i64>) {
        self.script.lock().unwrap().exit_on_start = exit_code;
    }

    /// What every container's log holds.
    pub fn set_logs(&self, text: &str) {
        self.script.lock().unwrap().logs = text.to_string();
    }

    pub fn add_image(&self, image: &str) {
        self.script.lock().unwrap().images.insert(image.to_string());
    }

    /// Calls of this kind wait (after being counted) until [`FakeEngine::release`].
    pub fn hold(&self, call: Call) {
        self.holds.lock().unwrap().insert(call, Arc::new(Semaphore::new(0)));
    }

    pub fn release(&self, call: Call) {
        if let Some(gate) = self.holds.lock().unwrap().remove(&call) {
            gate.close();
        }
    }

    /// How many calls of this kind were made.
    pub fn calls(&self, call: Call) -> usize {
        self.calls.borrow().get(&call).copied().unwrap_or(0)
    }

    /// Waits until at least `n` calls of this kind were made.
    pub async fn wait_calls(&self, call: Call, n: usize) {
        let mut rx = self.calls.subscribe();
        let _ = rx.wait_for(|m| m.get(&call).copied().unwrap_or(0) >= n).await;
    }

    pub fn containers(&self) -> Vec<FakeContainer> {
        self.script.lock().unwrap().containers.values().cloned().collect()
    }

    pub fn container(&self, id: &str) -> Option<FakeContainer> {
        self.script.lock().unwrap().containers.get(id).cloned()
    }

    /// The container exits (as a crash would), with its event.
    pub fn kill(&self, id: &str, exit_code: i64) {
        self.set_running(id, false);
        self.push_event(id, ContainerAction::Die { exit_code: Some(exit_code) });
    }

    /// The container is removed behind berth's back, with its events.
    pub fn vanish(&self, id: &str) {
        let removed = self.script.lock().unwrap().containers.remove(id);
        if removed.is_some_and(|c| c.running) {
            self.push_event(id, ContainerAction::Die { exit_code: Some(137) });
        }
        self.push_event(id, ContainerAction::Destroy);
    }

    /// Changes whether a container runs without any event (as during a gap in the stream).
    pub fn set_running(&self, id: &str, running: bool) {
        if let Some(c) = self.script.lock().unwrap().containers.get_mut(id) {
            c.running = running;
        }
    }

    pub fn push_event(&self, id: &str, action: ContainerAction) {
        let _ = self.events.lock().unwrap().send(ContainerEvent { container_id: id.to_string(), action });
    }

    /// Ends every open event stream (a gap: watchers must reconnect and resync).
    pub fn end_event_streams(&self) {
        *self.events.lock().unwrap() = broadcast::channel(256).0;
    }

    /// Counts the call, waits while it is held, then fails if the engine is unreachable.
    async fn enter(&self, call: Call) -> Result<(), EngineError> {
        self.count(call);
        let gate = self.holds.lock().unwrap().get(&call).cloned();
        if let Some(gate) = gate {
            let _ = gate.acquire().await;
        }
        self.check_available()
    }

    fn count(&self, call: Call) {
        self.calls.send_modify(|m| *m.entry(call).or_default() += 1);
    }

    fn check_available(&self) -> Result<(), EngineError> {
        if self.script.lock().unwrap().unavailable {
            Err(EngineError::Unavailable("connection refused (fake engine)".into()))
        } else {
            Ok(())
        }
    }

    fn with_container<T>(&self, id: &str, f: impl FnOnce(&mut FakeContainer) -> T) -> Result<T, EngineError> {
        let mut script = self.script.lock().unwrap();
        let c = script.containers.get_mut(id).ok_or_else(|| EngineError::NotFound(id.to_string()))?;
        Ok(f(c))
    }
}

fn api_error(message: &str) -> EngineError {
    EngineError::Api(bollard::errors::Error::DockerResponseServerError { status_code: 500, message: message.into() })
}

#[async_trait::async_trait]
impl ContainerEngine for FakeEngine {
    fn endpoint(&self) -> &str {
        "fake://"
    }

    async fn ping(&self) -> Result<(), EngineError> {
        self.enter(Call::Ping).await
    }

    async fn image_exists(&self, image: &str) -> Result<bool, EngineError> {
        self.enter(Call::ImageExists).await?;
        Ok(self.script.lock().unwrap().images.contains(image))
    }

    async fn ensure_image(&self, image: &str) -> Result<(), EngineError> {
        self.enter(Call::EnsureImage).await?;
        self.add_image(image);
        Ok(())
    }

    async fn build(
        &self,
        _context: Vec<u8>,
        tag: &str,
        _containerfile: &str,
        _build_args: &HashMap<String, String>,
        on_line: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<(), EngineError> {
        self.enter(Call::Build).await?;
        on_line(&format!("fake build of {tag}"));
        let failure = self.script.lock().unwrap().build_failure.clone();
        if let Some(message) = failure {
            on_line(&message);
            return Err(EngineError::Build(message));
        }
        self.add_image(tag);
        Ok(())
    }

    async fn remove_image(&self, image: &str) -> Result<bool, EngineError> {
        self.enter(Call::RemoveImage).await?;
        let mut script = self.script.lock().unwrap();
        if script.containers.values().any(|c| c.image == image) {
            return Ok(false);
        }
        Ok(script.images.remove(image))
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
        self.enter(Call::Create).await?;
        let id = {
            let mut script = self.script.lock().unwrap();
            if script.containers.values().any(|c| c.name == spec.name) {
                return Err(EngineError::Removing(spec.name.clone()));
            }
            script.next_id += 1;
            let id = format!("fake{:08}", script.next_id);
            script.containers.insert(
                id.clone(),
                FakeContainer {
                    id: id.clone(),
                    name: spec.name.clone(),
                    image: spec.image.clone(),
                    labels: spec.labels.clone(),
                    running: false,
                    paused: false,
                },
            );
            id
        };
        self.push_event(&id, ContainerAction::Create);
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.enter(Call::Start).await?;
        let (failure, exit) = {
            let script = self.script.lock().unwrap();
            (script.start_failure.clone(), script.exit_on_start)
        };
        if let Some(message) = failure {
            self.with_container(id, |_| ())?;
            return Err(api_error(&message));
        }
        let was_running = self.with_container(id, |c| std::mem::replace(&mut c.running, exit.is_none()))?;
        if !was_running {
            self.push_event(id, ContainerAction::Start);
            if let Some(code) = exit {
                self.push_event(id, ContainerAction::Die { exit_code: Some(code) });
            }
        }
        Ok(())
    }

    async fn stop(&self, id: &str, _timeout_secs: u64) -> Result<(), EngineError> {
        self.enter(Call::Stop).await?;
        if self.with_container(id, |c| std::mem::replace(&mut c.running, false))? {
            self.push_event(id, ContainerAction::Die { exit_code: Some(0) });
            self.push_event(id, ContainerAction::Stop);
        }
        Ok(())
    }

    async fn pause(&self, id: &str) -> Result<(), EngineError> {
        self.enter(Call::Pause).await?;
        // As the engine: only a running, unpaused container can be paused.
        if !self.with_container(id, |c| c.running && !std::mem::replace(&mut c.paused, c.running))? {
            return Err(api_error(&format!("container {id} is not running or already paused")));
        }
        self.push_event(id, ContainerAction::Pause);
        Ok(())
    }

    async fn unpause(&self, id: &str) -> Result<(), EngineError> {
        self.enter(Call::Unpause).await?;
        if !self.with_container(id, |c| std::mem::replace(&mut c.paused, false))? {
            return Err(api_error(&format!("container {id} is not paused")));
        }
        self.push_event(id, ContainerAction::Unpause);
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), EngineError> {
        self.enter(Call::Remove).await?;
        if self.script.lock().unwrap().containers.contains_key(id) {
            self.vanish(id);
        }
        Ok(())
    }

    async fn inspect(&self, id: &str, _port: u16) -> Result<ContainerStatus, EngineError> {
        self.enter(Call::Inspect).await?;
        let upstream = self.script.lock().unwrap().upstream;
        self.with_container(id, |c| ContainerStatus {
            running: c.running,
            upstream: upstream.filter(|_| c.running),
            paused: c.paused && c.running,
        })
    }

    async fn list_labelled(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerSummary>, EngineError> {
        self.enter(Call::List).await?;
        let script = self.script.lock().unwrap();
        Ok(script
            .containers
            .values()
            .filter(|c| labels.iter().all(|(k, v)| c.labels.get(*k).map(String::as_str) == Some(*v)))
            .map(|c| ContainerSummary {
                id: c.id.clone(),
                name: c.name.clone(),
                running: c.running,
                labels: c.labels.clone(),
            })
            .collect())
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats, EngineError> {
        self.enter(Call::Stats).await?;
        self.with_container(id, |_| ContainerStats { memory_bytes: 1 << 20, cpu_percent: 0.5 })
    }

    fn events(&self, _label: (&str, &str)) -> BoxStream<'static, Result<ContainerEvent, EngineError>> {
        self.count(Call::Events);
        if let Err(e) = self.check_available() {
            return futures_util::stream::once(async move { Err(e) }).boxed();
        }
        let rx = self.events.lock().unwrap().subscribe();
        futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => return Some((Ok(ev), rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }

    fn logs(
        &self,
        id: &str,
        _tail: Option<usize>,
        _follow: bool,
    ) -> BoxStream<'static, Result<bytes::Bytes, EngineError>> {
        self.count(Call::Logs);
        let result = self
            .check_available()
            .and_then(|()| self.with_container(id, |_| ()))
            .map(|()| bytes::Bytes::from(self.script.lock().unwrap().logs.clone()));
        futures_util::stream::once(async move { result }).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: "img".into(),
            port: 80,
            env: vec![],
            labels: HashMap::from([("k".to_string(), "v".to_string())]),
            init: false,
            options: Default::default(),
        }
    }

    #[tokio::test]
    async fn containers_events_and_faults() {
        let fake = FakeEngine::new();
        let engine = fake.engine();
        let mut events = engine.events(("k", "v"));
        let id = engine.create(&spec("a")).await.unwrap();
        assert!(matches!(engine.create(&spec("a")).await, Err(EngineError::Removing(_))));
        engine.start(&id).await.unwrap();
        assert!(engine.inspect(&id, 80).await.unwrap().running);
        assert_eq!(engine.list_labelled(&[("k", "v")]).await.unwrap().len(), 1);
        assert_eq!(events.next().await.unwrap().unwrap().action, ContainerAction::Create);
        assert_eq!(events.next().await.unwrap().unwrap().action, ContainerAction::Start);
        fake.kill(&id, 3);
        assert_eq!(events.next().await.unwrap().unwrap().action, ContainerAction::Die { exit_code: Some(3) });
        fake.set_unavailable(true);
        assert!(events.next().await.is_none(), "an outage ends the event stream");
        assert!(engine.start(&id).await.unwrap_err().is_unavailable());
        fake.set_unavailable(false);
        fake.fail_starts(Some("no"));
        assert!(engine.start(&id).await.unwrap_err().to_string().contains("no"));
        assert_eq!(fake.calls(Call::Start), 3);
        engine.remove(&id).await.unwrap();
        assert!(matches!(engine.inspect(&id, 80).await, Err(EngineError::NotFound(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn held_calls_wait_for_release() {
        let fake = FakeEngine::new();
        fake.hold(Call::Ping);
        let engine = fake.engine();
        let ping = tokio::spawn(async move { engine.ping().await });
        fake.wait_calls(Call::Ping, 1).await;
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        assert!(!ping.is_finished());
        fake.release(Call::Ping);
        ping.await.unwrap().unwrap();
    }
}
