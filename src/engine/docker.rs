//! The Docker Engine API (or Podman's compatible API) through bollard: one implementation of
//! [`ContainerEngine`]. Control calls are bounded by [`CONTROL_TIMEOUT`]; an engine that does not
//! answer (refused connection, missing socket, timeout) is [`EngineError::Unavailable`].

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bollard::container::{
    Config as BollardConfig, CreateContainerOptions, InspectContainerOptions, ListContainersOptions, LogOutput,
    LogsOptions, RemoveContainerOptions, StartContainerOptions, StatsOptions, StopContainerOptions,
};
use bollard::image::{BuildImageOptions, CreateImageOptions, RemoveImageOptions};
use bollard::models::{HostConfig, PortBinding};
use bollard::system::EventsOptions;
use bollard::Docker;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};

use super::{
    ContainerAction, ContainerEngine, ContainerEvent, ContainerSpec, ContainerStats, ContainerStatus, ContainerSummary,
    EngineError,
};

/// Bound on one control call (inspect, create, start, list, ...). A stop gets this on top of
/// its own grace period.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// The client's own timeout, for streams and builds (which the builder bounds itself).
const CLIENT_TIMEOUT_SECS: u64 = 300;

impl From<bollard::errors::Error> for EngineError {
    fn from(e: bollard::errors::Error) -> Self {
        use bollard::errors::Error as B;
        match e {
            B::RequestTimeoutError
            | B::SocketNotFoundError(_)
            | B::IOError { .. }
            | B::HyperLegacyError { .. }
            | B::HyperResponseError { .. } => EngineError::Unavailable(e.to_string()),
            other => EngineError::Api(other),
        }
    }
}

/// The bollard client, connected (and its API version negotiated) at the first call the engine
/// answers: a server started while the engine is down connects once it is up.
pub struct DockerEngine {
    /// As configured (empty: the environment's default).
    configured: String,
    /// As shown in messages: the configured endpoint, or the default it stands for.
    endpoint: String,
    client: std::sync::Mutex<Option<Docker>>,
}

impl DockerEngine {
    /// An engine at `endpoint` (empty: `DOCKER_HOST` or the default socket), not yet connected.
    pub fn new(endpoint: &str) -> DockerEngine {
        let shown = if endpoint.is_empty() {
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
        } else {
            endpoint.to_string()
        };
        DockerEngine { configured: endpoint.to_string(), endpoint: shown, client: std::sync::Mutex::new(None) }
    }

    /// Connects and negotiates the API version (Debian's engine speaks 1.41, Podman 4.x 1.41).
    pub async fn connect(endpoint: &str) -> Result<DockerEngine, EngineError> {
        let engine = DockerEngine::new(endpoint);
        engine.client().await?;
        Ok(engine)
    }

    /// The client if it is connected (streams do not connect: the monitor's ping does).
    fn connected(&self) -> Result<Docker, EngineError> {
        self.client.lock().unwrap().clone().ok_or_else(|| {
            EngineError::Unavailable(format!("not connected to the container engine at {} yet", self.endpoint))
        })
    }

    /// The connected client, connecting first if needed. An engine that cannot be reached is
    /// [`EngineError::Unavailable`]; an endpoint that cannot work is [`EngineError::Connect`].
    async fn client(&self) -> Result<Docker, EngineError> {
        if let Some(docker) = self.client.lock().unwrap().clone() {
            return Ok(docker);
        }
        let connect_err = |source: bollard::errors::Error| match EngineError::from(source) {
            EngineError::Unavailable(reason) => {
                EngineError::Unavailable(format!("cannot reach the container engine at {}: {reason}", self.endpoint))
            }
            EngineError::Api(source) => EngineError::Connect { endpoint: self.endpoint.clone(), source },
            other => other,
        };
        let endpoint = self.configured.as_str();
        let docker = if endpoint.is_empty() {
            Docker::connect_with_defaults()
        } else if let Some(path) = endpoint.strip_prefix("unix://") {
            Docker::connect_with_unix(path, CLIENT_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        } else if endpoint.starts_with('/') {
            Docker::connect_with_unix(endpoint, CLIENT_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        } else {
            let http = endpoint.replacen("tcp://", "http://", 1);
            Docker::connect_with_http(&http, CLIENT_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        }
        .map_err(connect_err)?;
        let docker = bounded(CONTROL_TIMEOUT, docker.negotiate_version()).await?.map_err(connect_err)?;
        bounded(CONTROL_TIMEOUT, docker.ping()).await?.map_err(connect_err)?;
        *self.client.lock().unwrap() = Some(docker.clone());
        Ok(docker)
    }
}

/// Runs one control call with a bound.
async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<Result<T, bollard::errors::Error>, EngineError> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| EngineError::Unavailable(format!("the engine did not answer within {}s", limit.as_secs())))
}

#[async_trait::async_trait]
impl ContainerEngine for DockerEngine {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn ping(&self) -> Result<(), EngineError> {
        bounded(Duration::from_secs(2), self.client().await?.ping()).await??;
        Ok(())
    }

    async fn image_exists(&self, image: &str) -> Result<bool, EngineError> {
        match bounded(CONTROL_TIMEOUT, self.client().await?.inspect_image(image)).await? {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn ensure_image(&self, image: &str) -> Result<(), EngineError> {
        if self.image_exists(image).await? {
            return Ok(());
        }
        let (from_image, tag) = split_image_tag(image);
        let opts = CreateImageOptions { from_image, tag, ..Default::default() };
        let mut pull = self.client().await?.create_image(Some(opts), None, None);
        while let Some(item) = pull.next().await {
            match item {
                Ok(info) => {
                    if let Some(err) = info.error {
                        return Err(EngineError::Pull { image: image.into(), message: err });
                    }
                }
                Err(e) => {
                    let e = EngineError::from(e);
                    if e.is_unavailable() {
                        return Err(e);
                    }
                    let message = match &e {
                        EngineError::Api(api) => api_message(api),
                        other => other.to_string(),
                    };
                    return Err(EngineError::Pull { image: image.into(), message });
                }
            }
        }
        if self.image_exists(image).await? {
            Ok(())
        } else {
            Err(EngineError::Pull { image: image.into(), message: "the pull finished but the image is missing".into() })
        }
    }

    /// Builds with the classic builder. The error carries the engine's message (a Containerfile
    /// parse error, or the failing step's output).
    async fn build(
        &self,
        context: Vec<u8>,
        tag: &str,
        containerfile: &str,
        build_args: &HashMap<String, String>,
        on_line: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<(), EngineError> {
        let opts = BuildImageOptions {
            dockerfile: containerfile.to_string(),
            t: tag.to_string(),
            buildargs: build_args.clone(),
            // No `labels`: the classic builder adds them as an extra LABEL step (a container
            // commit, ~0.2 s). Images are found by their content-hash names instead.
            rm: true,
            forcerm: true,
            ..Default::default()
        };
        let docker = self.client().await?;
        // An empty credentials map, not `None`: with `None` bollard sends an empty
        // `X-Registry-Config` header, which Podman answers with 400 and no body.
        let mut stream = docker.build_image(opts, Some(HashMap::new()), Some(context.into()));
        // The step running now: a failing `FROM` step means the base image could not be had.
        let mut step = String::new();
        while let Some(item) = stream.next().await {
            let error = match item {
                Ok(info) => {
                    if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                        for line in text.lines().filter(|l| !l.trim().is_empty()) {
                            if is_step_line(line) {
                                step = line.to_string();
                            }
                            on_line(line);
                        }
                    }
                    match info.error {
                        Some(err) => err.trim().to_string(),
                        None => continue,
                    }
                }
                Err(e) => api_message(&e),
            };
            on_line(&error);
            // Without a registry the engine says only why the pull failed (a DNS error, say):
            // name the image and that it is missing, unless the engine already did.
            let says_missing = |image: &str| {
                error.contains(image) && (error.contains("not found") || error.contains("pull access denied"))
            };
            let error = match base_image_of_step(&step, build_args) {
                Some(image) if !says_missing(&image) => {
                    format!("base image {image} not found locally and pulling it failed: {error}")
                }
                _ => error,
            };
            return Err(EngineError::Build(error));
        }
        Ok(())
    }

    async fn remove_image(&self, image: &str) -> Result<bool, EngineError> {
        let opts = RemoveImageOptions { force: false, noprune: false };
        match bounded(CONTROL_TIMEOUT, self.client().await?.remove_image(image, Some(opts), None)).await? {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) || is_status(&e, 409) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
        let port_key = format!("{}/tcp", spec.port);
        let bindings = HashMap::from([(
            port_key.clone(),
            Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(String::new()) }]),
        )]);
        let o = &spec.options;
        let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.extend(o.env.iter().map(|(k, v)| format!("{k}={v}")));
        let mut labels = o.labels.clone();
        labels.extend(spec.labels.clone());
        let mut host_config =
            HostConfig { port_bindings: Some(bindings), init: Some(o.init.unwrap_or(spec.init)), ..Default::default() };
        o.host.apply(&mut host_config);
        let config = BollardConfig {
            image: Some(spec.image.clone()),
            env: Some(env),
            labels: Some(labels),
            user: o.user.clone(),
            working_dir: o.workdir.clone(),
            exposed_ports: Some(HashMap::from([(port_key, HashMap::new())])),
            host_config: Some(host_config),
            ..Default::default()
        };
        let opts = CreateContainerOptions { name: spec.name.clone(), platform: None };
        match bounded(CONTROL_TIMEOUT, self.client().await?.create_container(Some(opts.clone()), config.clone()))
            .await?
        {
            Ok(created) => Ok(created.id),
            Err(e) if is_status(&e, 409) => Err(EngineError::Removing(spec.name.clone())),
            // Podman without catatonit (and engines without docker-init) refuse `init`: run
            // without an init process rather than not at all.
            Err(e) if o.init.unwrap_or(spec.init) && api_message(&e).contains("init") && is_status(&e, 500) => {
                tracing::warn!(
                    "the engine has no init binary ({}); creating {} without one",
                    api_message(&e),
                    spec.name
                );
                let mut config = config;
                if let Some(hc) = config.host_config.as_mut() {
                    hc.init = Some(false);
                }
                Ok(bounded(CONTROL_TIMEOUT, self.client().await?.create_container(Some(opts), config)).await??.id)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn start(&self, id: &str) -> Result<(), EngineError> {
        match bounded(CONTROL_TIMEOUT, self.client().await?.start_container(id, None::<StartContainerOptions<String>>))
            .await?
        {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 304) => Ok(()),
            Err(e) if is_not_found(&e) => Err(EngineError::NotFound(id.into())),
            Err(e) if is_status(&e, 409) => Err(EngineError::Removing(id.into())),
            Err(e) => Err(e.into()),
        }
    }

    async fn stop(&self, id: &str, timeout_secs: u64) -> Result<(), EngineError> {
        let opts = StopContainerOptions { t: timeout_secs as i64 };
        let limit = CONTROL_TIMEOUT + Duration::from_secs(timeout_secs);
        match bounded(limit, self.client().await?.stop_container(id, Some(opts))).await? {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 304) => Ok(()),
            Err(e) if is_not_found(&e) => Err(EngineError::NotFound(id.into())),
            Err(e) => Err(e.into()),
        }
    }

    async fn pause(&self, id: &str) -> Result<(), EngineError> {
        match bounded(CONTROL_TIMEOUT, self.client().await?.pause_container(id)).await? {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Err(EngineError::NotFound(id.into())),
            Err(e) => Err(e.into()),
        }
    }

    async fn unpause(&self, id: &str) -> Result<(), EngineError> {
        match bounded(CONTROL_TIMEOUT, self.client().await?.unpause_container(id)).await? {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Err(EngineError::NotFound(id.into())),
            Err(e) => Err(e.into()),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), EngineError> {
        let opts = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match bounded(CONTROL_TIMEOUT, self.client().await?.remove_container(id, Some(opts))).await? {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) if is_status(&e, 409) => Ok(()), // removal already in progress
            Err(e) => Err(e.into()),
        }
    }

    async fn inspect(&self, id: &str, port: u16) -> Result<ContainerStatus, EngineError> {
        let info =
            match bounded(CONTROL_TIMEOUT, self.client().await?.inspect_container(id, None::<InspectContainerOptions>))
                .await?
            {
                Ok(info) => info,
                Err(e) if is_not_found(&e) => return Err(EngineError::NotFound(id.into())),
                Err(e) => return Err(e.into()),
            };
        let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        let paused = info.state.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let upstream = info
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|mut ports| ports.remove(&format!("{port}/tcp")))
            .flatten()
            .and_then(|bindings| {
                bindings.into_iter().find_map(|b| {
                    let port: u16 = b.host_port?.parse().ok()?;
                    let ip = match b.host_ip.as_deref() {
                        Some("127.0.0.1") | Some("") | Some("0.0.0.0") | None => [127, 0, 0, 1],
                        Some(_) => return None,
                    };
                    Some(SocketAddr::from((ip, port)))
                })
            });
        Ok(ContainerStatus { running, upstream, paused })
    }

    async fn list_labelled(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerSummary>, EngineError> {
        let filters = HashMap::from([("label".to_string(), labels.iter().map(|(k, v)| format!("{k}={v}")).collect())]);
        let opts = ListContainersOptions { all: true, filters, ..Default::default() };
        let list = bounded(CONTROL_TIMEOUT, self.client().await?.list_containers(Some(opts))).await??;
        Ok(list
            .into_iter()
            .map(|c| ContainerSummary {
                id: c.id.unwrap_or_default(),
                name: c.names.and_then(|n| n.into_iter().next()).unwrap_or_default().trim_start_matches('/').into(),
                running: c.state.as_deref() == Some("running"),
                labels: c.labels.unwrap_or_default(),
            })
            .collect())
    }

    async fn stats(&self, id: &str) -> Result<ContainerStats, EngineError> {
        // Not one-shot: the engine takes two samples, so the CPU load can be computed.
        let opts = StatsOptions { stream: false, one_shot: false };
        let docker = self.client().await?;
        let mut stream = docker.stats(id, Some(opts));
        let stats = match bounded(CONTROL_TIMEOUT, async { stream.next().await.transpose() }).await? {
            Ok(Some(stats)) => stats,
            Ok(None) => return Err(EngineError::NotFound(id.into())),
            Err(e) if is_not_found(&e) => return Err(EngineError::NotFound(id.into())),
            Err(e) => return Err(e.into()),
        };
        let cpu_delta = stats.cpu_stats.cpu_usage.total_usage.saturating_sub(stats.precpu_stats.cpu_usage.total_usage);
        let system_delta = stats
            .cpu_stats
            .system_cpu_usage
            .unwrap_or(0)
            .saturating_sub(stats.precpu_stats.system_cpu_usage.unwrap_or(0));
        let cpus = stats.cpu_stats.online_cpus.unwrap_or(1).max(1) as f64;
        let cpu_percent = if system_delta == 0 { 0.0 } else { cpu_delta as f64 / system_delta as f64 * cpus * 100.0 };
        Ok(ContainerStats { memory_bytes: stats.memory_stats.usage.unwrap_or(0), cpu_percent })
    }

    fn events(&self, label: (&str, &str)) -> BoxStream<'static, Result<ContainerEvent, EngineError>> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("label".to_string(), vec![format!("{}={}", label.0, label.1)]),
        ]);
        let opts = EventsOptions::<String> { since: None, until: None, filters };
        let docker = match self.connected() {
            Ok(docker) => docker,
            Err(e) => return futures_util::stream::once(async move { Err(e) }).boxed(),
        };
        docker
            .events(Some(opts))
            .map_err(EngineError::from)
            .map_ok(|ev| {
                let actor = ev.actor.unwrap_or_default();
                let exit_code = actor.attributes.as_ref().and_then(|a| a.get("exitCode")).map(String::as_str);
                ContainerEvent {
                    container_id: actor.id.clone().unwrap_or_default(),
                    action: ContainerAction::parse(ev.action.as_deref().unwrap_or_default(), exit_code),
                }
            })
            .boxed()
    }

    fn logs(
        &self,
        id: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> BoxStream<'static, Result<bytes::Bytes, EngineError>> {
        let opts = LogsOptions::<String> {
            follow,
            stdout: true,
            stderr: true,
            tail: tail.map(|n| n.to_string()).unwrap_or_else(|| "all".into()),
            ..Default::default()
        };
        let docker = match self.connected() {
            Ok(docker) => docker,
            Err(e) => return futures_util::stream::once(async move { Err(e) }).boxed(),
        };
        docker
            .logs(id, Some(opts))
            .map_err(EngineError::from)
            .map_ok(|out| match out {
                LogOutput::StdOut { message }
                | LogOutput::StdErr { message }
                | LogOutput::Console { message }
                | LogOutput::StdIn { message } => message,
            })
            .boxed()
    }
}

/// `name[:tag]` (with an optional registry port) into the pull's image and tag.
pub fn split_image_tag(image: &str) -> (String, String) {
    if image.contains('@') {
        return (image.to_string(), String::new());
    }
    let last_slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[last_slash..].rfind(':') {
        Some(i) => (image[..last_slash + i].to_string(), image[last_slash + i + 1..].to_string()),
        None => (image.to_string(), "latest".to_string()),
    }
}

fn is_status(e: &bollard::errors::Error, code: u16) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code, .. } if *status_code == code)
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    is_status(e, 404)
}

/// The engine's own words for a failed call: its message, the error a stream carried, or the
/// HTTP status where the engine gave no message.
fn api_message(e: &bollard::errors::Error) -> String {
    use bollard::errors::Error;
    match e {
        Error::DockerResponseServerError { status_code, message } if message.trim().is_empty() => {
            format!("the container engine answered HTTP {status_code} without a message")
        }
        Error::DockerResponseServerError { message, .. } => message.trim().to_string(),
        Error::DockerStreamError { error } if !error.trim().is_empty() => error.trim().to_string(),
        other => other.to_string(),
    }
}

/// Whether a build output line starts a step: Docker's `Step 2/5 : RUN ...` or Podman's
/// `STEP 2/5: RUN ...`.
fn is_step_line(line: &str) -> bool {
    line.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("step ")) && line.contains(':')
}

/// The base image a `FROM` step line names, with `$VAR`/`${VAR}` from the build args filled
/// in (the engine prints the line as written); `None` for other steps.
fn base_image_of_step(step: &str, build_args: &HashMap<String, String>) -> Option<String> {
    let (_, instruction) = step.split_once(':')?;
    let mut words = instruction.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("from") {
        return None;
    }
    let image = words.find(|w| !w.starts_with("--"))?;
    Some(shellexpand::env_with_context_no_errors(image, |name| build_args.get(name)).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_messages_are_kept() {
        use bollard::errors::Error;
        let stream = Error::DockerStreamError { error: "pull access denied for nosuch\n".into() };
        assert_eq!(api_message(&stream), "pull access denied for nosuch");
        let empty = Error::DockerResponseServerError { status_code: 400, message: String::new() };
        assert_eq!(api_message(&empty), "the container engine answered HTTP 400 without a message");
        let said = Error::DockerResponseServerError { status_code: 500, message: "no space left".into() };
        assert_eq!(api_message(&said), "no space left");
    }

    #[test]
    fn base_image_of_a_from_step() {
        let args = HashMap::from([("PYTHON_VERSION".to_string(), "4invalid-slim".to_string())]);
        let image = |step: &str| base_image_of_step(step, &args);
        assert_eq!(image("Step 2/5 : FROM python:${PYTHON_VERSION}").as_deref(), Some("python:4invalid-slim"));
        assert_eq!(image("STEP 1/3: FROM python:$PYTHON_VERSION AS base").as_deref(), Some("python:4invalid-slim"));
        assert_eq!(image("Step 1/3 : FROM --platform=linux/amd64 nginx:1").as_deref(), Some("nginx:1"));
        assert_eq!(image("Step 1/3 : FROM x:${UNSET}").as_deref(), Some("x:${UNSET}"));
        assert_eq!(image("Step 3/5 : RUN echo FROM x"), None);
        assert!(is_step_line("Step 3/5 : RUN x") && is_step_line("STEP 3/5: RUN x"));
        assert!(!is_step_line(" ---> Running in 1234") && !is_step_line("stepping: x"));
    }

    #[test]
    fn image_tags() {
        assert_eq!(split_image_tag("nginx"), ("nginx".into(), "latest".into()));
        assert_eq!(split_image_tag("nginx:1.25"), ("nginx".into(), "1.25".into()));
        assert_eq!(split_image_tag("127.0.0.1:5055/app"), ("127.0.0.1:5055/app".into(), "latest".into()));
        assert_eq!(split_image_tag("127.0.0.1:5055/app:v2"), ("127.0.0.1:5055/app".into(), "v2".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_control_call_without_answer_is_unavailable_after_the_bound() {
        let started = tokio::time::Instant::now();
        let hung = std::future::pending::<Result<(), bollard::errors::Error>>();
        let err = bounded(CONTROL_TIMEOUT, hung).await.unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        assert_eq!(started.elapsed(), CONTROL_TIMEOUT);
    }

    #[tokio::test]
    async fn an_engine_that_does_not_answer_is_unavailable() {
        // A socket file nobody listens on: connection refused.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let endpoint = format!("unix://{}", path.display());
        let err = DockerEngine::connect(&endpoint).await.err().expect("nothing listens");
        assert!(matches!(err, EngineError::Unavailable(_)), "{err:?}");
        assert!(err.to_string().contains(&endpoint), "{err}");
        let engine = DockerEngine::new(&endpoint);
        assert!(engine.inspect("x", 80).await.unwrap_err().is_unavailable());
        assert!(engine.ping().await.unwrap_err().is_unavailable());
        std::fs::remove_file(&path).unwrap();
        assert!(engine.list_labelled(&[]).await.unwrap_err().is_unavailable(), "a missing socket too");
        assert!(engine.events(("a", "b")).next().await.unwrap().unwrap_err().is_unavailable());
    }
}
