//! The container engine: Docker Engine API (or Podman's compatible API) through bollard.
//! Pull, create, start, stop, remove, inspect, list by label, events and logs. It knows
//! containers and images, never apps' configuration: callers hand it a [`ContainerSpec`].

use std::collections::HashMap;
use std::net::SocketAddr;

use bollard::container::{
    Config as BollardConfig, CreateContainerOptions, InspectContainerOptions, ListContainersOptions, LogOutput,
    LogsOptions, RemoveContainerOptions, StartContainerOptions, StopContainerOptions,
};
use bollard::image::{BuildImageOptions, CreateImageOptions, RemoveImageOptions};
use bollard::models::{HostConfig, PortBinding};
use bollard::system::EventsOptions;
use bollard::Docker;
use futures_util::{Stream, StreamExt, TryStreamExt};

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
    #[error("image {image} is not present and pulling it failed: {message}")]
    Pull { image: String, message: String },
    #[error("container {0} not found")]
    NotFound(String),
    #[error("container engine error: {0}")]
    Api(#[from] bollard::errors::Error),
    #[error("container {0} publishes no port on 127.0.0.1")]
    NoPort(String),
    #[error("{0}")]
    Build(String),
    /// The container is being removed, or its name is still taken by one that is.
    #[error("container {0} is being removed")]
    Removing(String),
}

impl EngineError {
    /// Whether the engine itself could not be reached (rather than refusing a request).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, EngineError::Connect { .. })
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

/// A container's state change reported by the engine's event stream.
#[derive(Debug, Clone)]
pub struct ContainerEvent {
    pub container_id: String,
    pub action: String,
}

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    endpoint: String,
}

impl Engine {
    /// Connects and negotiates the API version (Debian's engine speaks 1.41, Podman 4.x 1.41).
    pub async fn connect(endpoint: &str) -> Result<Engine, EngineError> {
        let shown = if endpoint.is_empty() {
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
        } else {
            endpoint.to_string()
        };
        let connect_err = |source| EngineError::Connect { endpoint: shown.clone(), source };
        let docker = if endpoint.is_empty() {
            Docker::connect_with_defaults()
        } else if let Some(path) = endpoint.strip_prefix("unix://") {
            Docker::connect_with_unix(path, 300, bollard::API_DEFAULT_VERSION)
        } else if endpoint.starts_with('/') {
            Docker::connect_with_unix(endpoint, 300, bollard::API_DEFAULT_VERSION)
        } else {
            let http = endpoint.replacen("tcp://", "http://", 1);
            Docker::connect_with_http(&http, 300, bollard::API_DEFAULT_VERSION)
        }
        .map_err(connect_err)?;
        let docker = docker.negotiate_version().await.map_err(connect_err)?;
        docker.ping().await.map_err(connect_err)?;
        Ok(Engine { docker, endpoint: shown })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub async fn image_exists(&self, image: &str) -> Result<bool, EngineError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes sure the image is present: never pulls an image that is already there.
    pub async fn ensure_image(&self, image: &str) -> Result<(), EngineError> {
        if self.image_exists(image).await? {
            return Ok(());
        }
        let (from_image, tag) = split_image_tag(image);
        let opts = CreateImageOptions { from_image, tag, ..Default::default() };
        let mut pull = self.docker.create_image(Some(opts), None, None);
        while let Some(item) = pull.next().await {
            match item {
                Ok(info) => {
                    if let Some(err) = info.error {
                        return Err(EngineError::Pull { image: image.into(), message: err });
                    }
                }
                Err(e) => return Err(EngineError::Pull { image: image.into(), message: api_message(&e) }),
            }
        }
        if self.image_exists(image).await? {
            Ok(())
        } else {
            Err(EngineError::Pull { image: image.into(), message: "the pull finished but the image is missing".into() })
        }
    }

    /// Builds `tag` from a tar context with the classic builder; each output line goes to
    /// `on_line`. The error carries the engine's message (a Containerfile parse error, or the
    /// failing step's output).
    pub async fn build(
        &self,
        context: Vec<u8>,
        tag: &str,
        containerfile: &str,
        build_args: &HashMap<String, String>,
        mut on_line: impl FnMut(&str),
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
        let mut stream = self.docker.build_image(opts, None, Some(context.into()));
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                        for line in text.lines().filter(|l| !l.trim().is_empty()) {
                            on_line(line);
                        }
                    }
                    if let Some(err) = info.error {
                        on_line(&err);
                        return Err(EngineError::Build(err.trim().to_string()));
                    }
                }
                Err(e) => {
                    let message = api_message(&e);
                    on_line(&message);
                    return Err(EngineError::Build(message));
                }
            }
        }
        Ok(())
    }

    /// Removes an image unless a container still uses it; a missing image is not an error.
    pub async fn remove_image(&self, image: &str) -> Result<bool, EngineError> {
        match self.docker.remove_image(image, Some(RemoveImageOptions { force: false, noprune: false }), None).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) || is_status(&e, 409) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates (does not start) a container publishing `spec.port` on a random 127.0.0.1 port.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
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
        match self.docker.create_container(Some(opts.clone()), config.clone()).await {
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
                Ok(self.docker.create_container(Some(opts), config).await?.id)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        match self.docker.start_container(id, None::<StartContainerOptions<String>>).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 304) => Ok(()),
            Err(e) if is_not_found(&e) => Err(EngineError::NotFound(id.into())),
            Err(e) if is_status(&e, 409) => Err(EngineError::Removing(id.into())),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn stop(&self, id: &str, timeout_secs: u64) -> Result<(), EngineError> {
        let opts = StopContainerOptions { t: timeout_secs as i64 };
        match self.docker.stop_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 304) => Ok(()),
            Err(e) if is_not_found(&e) => Err(EngineError::NotFound(id.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a container, running or not; a missing one is not an error.
    pub async fn remove(&self, id: &str) -> Result<(), EngineError> {
        let opts = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) if is_status(&e, 409) => Ok(()), // removal already in progress
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the container runs, and where its port is published on 127.0.0.1.
    pub async fn inspect(&self, id: &str, port: u16) -> Result<(bool, Option<SocketAddr>), EngineError> {
        let info = match self.docker.inspect_container(id, None::<InspectContainerOptions>).await {
            Ok(info) => info,
            Err(e) if is_not_found(&e) => return Err(EngineError::NotFound(id.into())),
            Err(e) => return Err(e.into()),
        };
        let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        let addr = info
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
        Ok((running, addr))
    }

    /// Every container (running or not) carrying all the given labels.
    pub async fn list_labelled(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerSummary>, EngineError> {
        let filters = HashMap::from([("label".to_string(), labels.iter().map(|(k, v)| format!("{k}={v}")).collect())]);
        let opts = ListContainersOptions { all: true, filters, ..Default::default() };
        let list = self.docker.list_containers(Some(opts)).await?;
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

    /// Container events (start, die, stop, destroy, oom) for containers with the given label.
    pub fn events(&self, label: (&str, &str)) -> impl Stream<Item = Result<ContainerEvent, EngineError>> + Send {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("label".to_string(), vec![format!("{}={}", label.0, label.1)]),
        ]);
        let opts = EventsOptions::<String> { since: None, until: None, filters };
        self.docker.events(Some(opts)).map_err(EngineError::from).map_ok(|ev| ContainerEvent {
            container_id: ev.actor.and_then(|a| a.id).unwrap_or_default(),
            action: ev.action.unwrap_or_default(),
        })
    }

    /// The container's output: the last `tail` lines, then new lines while `follow`.
    pub fn logs(
        &self,
        id: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> impl Stream<Item = Result<bytes::Bytes, EngineError>> + Send {
        let opts = LogsOptions::<String> {
            follow,
            stdout: true,
            stderr: true,
            tail: tail.map(|n| n.to_string()).unwrap_or_else(|| "all".into()),
            ..Default::default()
        };
        self.docker.logs(id, Some(opts)).map_err(EngineError::from).map_ok(|out| match out {
            LogOutput::StdOut { message }
            | LogOutput::StdErr { message }
            | LogOutput::Console { message }
            | LogOutput::StdIn { message } => message,
        })
    }

    /// The last `lines` lines of the container's output as text, for error messages.
    pub async fn log_tail(&self, id: &str, lines: usize) -> String {
        let chunks: Vec<_> = self.logs(id, Some(lines), false).take(lines * 4).collect().await;
        let mut text = String::new();
        for chunk in chunks.into_iter().flatten() {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
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

fn api_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.trim().to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::split_image_tag;

    #[test]
    fn image_tags() {
        assert_eq!(split_image_tag("nginx"), ("nginx".into(), "latest".into()));
        assert_eq!(split_image_tag("nginx:1.25"), ("nginx".into(), "1.25".into()));
        assert_eq!(split_image_tag("127.0.0.1:5055/app"), ("127.0.0.1:5055/app".into(), "latest".into()));
        assert_eq!(split_image_tag("127.0.0.1:5055/app:v2"), ("127.0.0.1:5055/app".into(), "v2".into()));
    }
}
