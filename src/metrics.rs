//! Prometheus metrics (`prometheus-client`), served as text at `/_berth/metrics` on the app
//! listeners. One process-wide [`Metrics`] ([`get`]): request counts by app, variant and status
//! class, request latency, response bytes, wake phases (build, pull, create, start, unpause,
//! ready) and whole cold starts, builds (duration, result), and the apps' container states
//! (counted at scrape time). The request path stays cheap: an app's counters are resolved once
//! (one map entry per app and variant) and are atomics after that.
//!
//! Access: with `[metrics] token_env` (or `token`) set, a request needs
//! `Authorization: Bearer <token>` (else 401); with neither, only clients on 127.0.0.1 and ::1
//! may read the metrics (others get 403).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::sync::{Arc, LazyLock, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::apps::{Apps, Deployment};
use crate::config::MetricsConfig;
use crate::proxy::body::{BoxError, ProxyBody};
use crate::proxy::{error_response, ClientInfo};

/// Where the metrics are served on the app listeners.
pub const PATH: &str = "/_berth/metrics";

/// A step of waking an app: building its image, pulling it, creating, starting or unpausing
/// its container, and waiting until it answers its health check.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum WakePhase {
    build,
    pull,
    create,
    start,
    unpause,
    ready,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    app: String,
    variant: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    app: String,
    variant: &'static str,
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: WakePhase,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One app variant's request metrics, resolved once.
struct AppMetrics {
    by_class: [Counter; 5],
    latency: Histogram,
    response_bytes: Counter,
}

/// An app's variants with their resolved metrics.
type AppVariants = Vec<(crate::apps::Variant, Arc<AppMetrics>)>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<AppLabels>,
    response_bytes: Family<AppLabels, Counter>,
    wake_phases: HistogramFamily<PhaseLabels>,
    cold_starts: Histogram,
    builds: Family<ResultLabels, Counter>,
    build_seconds: Histogram,
    containers: Family<StateLabels, Gauge>,
    /// Per app id: its variants' resolved metrics.
    apps: RwLock<HashMap<String, AppVariants>>,
}

fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn wake_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("berth");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = HistogramFamily::<AppLabels>::new_with_constructor(request_buckets as fn() -> Histogram);
        let response_bytes = Family::<AppLabels, Counter>::default();
        let wake_phases = HistogramFamily::<PhaseLabels>::new_with_constructor(wake_buckets as fn() -> Histogram);
        let cold_starts = wake_buckets();
        let builds = Family::<ResultLabels, Counter>::default();
        let build_seconds = Histogram::new(exponential_buckets(0.5, 2.0, 13));
        let containers = Family::<StateLabels, Gauge>::default();
        registry.register("http_requests", "Requests to apps by app, variant and status class", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to an app's response headers (including a wake)",
            latency.clone(),
        );
        registry.register("http_response_bytes", "Response body bytes sent to clients by app", response_bytes.clone());
        registry.register("wake_phase_duration_seconds", "Time of each step of waking an app", wake_phases.clone());
        registry.register(
            "cold_start_duration_seconds",
            "Time from a stopped app to its container answering its health check",
            cold_starts.clone(),
        );
        registry.register("builds", "Image builds by result", builds.clone());
        registry.register("build_duration_seconds", "Time of image builds (successful or not)", build_seconds.clone());
        registry.register("app_containers", "App variants by container state", containers.clone());
        Metrics {
            registry,
            requests,
            latency,
            response_bytes,
            wake_phases,
            cold_starts,
            builds,
            build_seconds,
            containers,
            apps: RwLock::default(),
        }
    }

    /// Runs `f` on the app variant's metrics: a shared map read (no allocation, no reference
    /// count) once the first request resolved them.
    fn with_app<R>(&self, app: &Deployment, f: impl FnOnce(&AppMetrics) -> R) -> R {
        {
            let map = self.apps.read().expect("metrics map");
            if let Some((_, m)) = map.get(&app.app_id).and_then(|v| v.iter().find(|(v, _)| *v == app.variant)) {
                return f(m);
            }
        }
        f(&self.resolve(app))
    }

    /// Resolves (labels, families) and remembers the app variant's metrics.
    fn resolve(&self, app: &Deployment) -> Arc<AppMetrics> {
        let labels = AppLabels { app: app.path.to_string(), variant: app.variant.name() };
        let by_class = STATUS_CLASSES.map(|class| {
            let l = RequestLabels { app: labels.app.clone(), variant: labels.variant, class };
            self.requests.get_or_create(&l).clone()
        });
        let resolved = Arc::new(AppMetrics {
            by_class,
            latency: self.latency.get_or_create(&labels).clone(),
            response_bytes: self.response_bytes.get_or_create(&labels).clone(),
        });
        let mut map = self.apps.write().expect("metrics map");
        let variants = map.entry(app.app_id.clone()).or_default();
        variants.retain(|(variant, _)| *variant != app.variant);
        variants.push((app.variant, resolved.clone()));
        resolved
    }

    /// Records one step of waking an app.
    pub fn wake_phase(&self, phase: WakePhase, took: Duration) {
        self.wake_phases.get_or_create(&PhaseLabels { phase }).observe(took.as_secs_f64());
    }

    /// Records a whole cold start (build if needed, pull, create, start, ready).
    pub fn cold_start(&self, took: Duration) {
        self.cold_starts.observe(took.as_secs_f64());
    }

    /// Records a finished image build.
    pub fn build(&self, took: Duration, ok: bool) {
        self.build_seconds.observe(took.as_secs_f64());
        self.builds.get_or_create(&ResultLabels { result: if ok { "ok" } else { "failed" } }).inc();
    }

    /// The text exposition, with the container states counted now.
    fn render(&self, apps: &Apps) -> String {
        let mut counts: HashMap<String, i64> = HashMap::new();
        if let Ok(list) = apps.list(None) {
            for app in list {
                for state in [app.state, app.stage_state] {
                    if state != "-" && !state.is_empty() {
                        *counts.entry(state).or_default() += 1;
                    }
                }
            }
        }
        self.containers.clear();
        for state in ["running", "paused", "stopped", "failed"] {
            counts.entry(state.to_string()).or_default();
        }
        for (state, n) in counts {
            self.containers.get_or_create(&StateLabels { state }).set(n);
        }
        self.encode()
    }

    /// The text exposition of the metrics as they are.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
/// The bearer token from `[metrics]`, read once at start ([`configure`]).
static TOKEN: OnceLock<Option<String>> = OnceLock::new();

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// Reads the metrics token at start: `token_env` names an environment variable (preferred),
/// else `token`. A `token_env` naming an unset or empty variable is an error.
pub fn configure(config: &MetricsConfig) -> anyhow::Result<()> {
    let token = resolve_token(config, |name| std::env::var(name).ok())?;
    let _ = TOKEN.set(token);
    Ok(())
}

fn resolve_token(config: &MetricsConfig, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<String>> {
    if !config.token_env.is_empty() {
        return match env(&config.token_env).filter(|t| !t.is_empty()) {
            Some(t) => Ok(Some(t)),
            None => anyhow::bail!("[metrics] token_env names {}, which is not set", config.token_env),
        };
    }
    Ok(Some(config.token.clone()).filter(|t| !t.is_empty()))
}

/// Who may read the metrics: the bearer token if one is set, else loopback clients only.
fn allowed(token: Option<&str>, authorization: Option<&HeaderValue>, client: IpAddr) -> Result<(), StatusCode> {
    match token {
        Some(token) => {
            let given = authorization.and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
            // Compared as digests: the time taken does not tell how much of the token matched.
            use sha2::Digest;
            match given {
                Some(g) if sha2::Sha256::digest(g.trim()) == sha2::Sha256::digest(token) => Ok(()),
                _ => Err(StatusCode::UNAUTHORIZED),
            }
        }
        None if client == IpAddr::V4(Ipv4Addr::LOCALHOST) || client == IpAddr::V6(Ipv6Addr::LOCALHOST) => Ok(()),
        None => Err(StatusCode::FORBIDDEN),
    }
}

/// Answers `GET /_berth/metrics`.
pub fn answer<B>(req: &Request<B>, client: ClientInfo, apps: &Apps) -> Response<ProxyBody> {
    let token = TOKEN.get().and_then(|t| t.as_deref());
    if let Err(status) = allowed(token, req.headers().get(header::AUTHORIZATION), client.ip) {
        let message = match status {
            StatusCode::UNAUTHORIZED => "metrics need Authorization: Bearer <[metrics] token>",
            _ => "metrics are served only to 127.0.0.1 and ::1 unless [metrics] token_env or token is set",
        };
        let mut resp = error_response(status, message);
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        return resp;
    }
    let mut resp = Response::new(crate::proxy::body::full(get().render(apps)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// Records a response of `app` (status class, time since `started`, body bytes). A body of
/// known length is counted at once; a streamed one as it is sent.
pub fn observe(app: &Deployment, started: Instant, resp: Response<ProxyBody>) -> Response<ProxyBody> {
    let class = usize::from(resp.status().as_u16() / 100).clamp(1, 5) - 1;
    get().with_app(app, |m| {
        m.by_class[class].inc();
        m.latency.observe(started.elapsed().as_secs_f64());
        match resp.body().size_hint().exact() {
            Some(n) => {
                m.response_bytes.inc_by(n);
                resp
            }
            None => resp.map(|inner| CountingBody { inner, bytes: m.response_bytes.clone() }.boxed()),
        }
    })
}

/// Times `step` as `phase` of a wake.
pub async fn timed<T>(phase: WakePhase, step: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = step.await;
    get().wake_phase(phase, started.elapsed());
    out
}

pin_project_lite::pin_project! {
    /// Streams `inner` unchanged, adding each data frame's length to `bytes`.
    struct CountingBody {
        #[pin]
        inner: ProxyBody,
        bytes: Counter,
    }
}

impl Body for CountingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.bytes.inc_by(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_phases_and_cold_starts_are_exposed() {
        let m = Metrics::new();
        m.build(Duration::from_secs(3), true);
        m.build(Duration::from_secs(5), false);
        m.wake_phase(WakePhase::pull, Duration::from_millis(20));
        m.cold_start(Duration::from_millis(900));
        let text = m.encode();
        for line in [
            "berth_builds_total{result=\"ok\"} 1",
            "berth_builds_total{result=\"failed\"} 1",
            "berth_build_duration_seconds_count 2",
            "berth_build_duration_seconds_sum 8.0",
            "berth_wake_phase_duration_seconds_count{phase=\"pull\"} 1",
            "berth_cold_start_duration_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }

    #[test]
    fn loopback_only_without_a_token() {
        let local4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let local6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(allowed(None, None, local4), Ok(()));
        assert_eq!(allowed(None, None, local6), Ok(()));
        assert_eq!(allowed(None, None, remote), Err(StatusCode::FORBIDDEN));
        assert_eq!(allowed(None, None, "127.0.0.2".parse().unwrap()), Err(StatusCode::FORBIDDEN));
    }

    #[test]
    fn a_token_is_needed_from_everyone_when_set() {
        let good = HeaderValue::from_static("Bearer s3cret");
        let bad = HeaderValue::from_static("Bearer nope");
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(allowed(Some("s3cret"), Some(&good), remote), Ok(()));
        assert_eq!(allowed(Some("s3cret"), Some(&bad), remote), Err(StatusCode::UNAUTHORIZED));
        assert_eq!(allowed(Some("s3cret"), None, IpAddr::V4(Ipv4Addr::LOCALHOST)), Err(StatusCode::UNAUTHORIZED));
    }

    #[test]
    fn the_token_env_is_preferred_and_must_be_set() {
        let both = MetricsConfig { token_env: "T".into(), token: "inline".into() };
        assert_eq!(resolve_token(&both, |_| Some("from-env".into())).unwrap().as_deref(), Some("from-env"));
        let err = resolve_token(&both, |_| None).unwrap_err().to_string();
        assert!(err.contains("token_env") && err.contains('T'), "{err}");
        let inline = MetricsConfig { token_env: String::new(), token: "inline".into() };
        assert_eq!(resolve_token(&inline, |_| None).unwrap().as_deref(), Some("inline"));
        assert_eq!(resolve_token(&MetricsConfig::default(), |_| None).unwrap(), None);
    }
}
