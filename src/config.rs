//! `berth.toml`: every key optional, defaults here and in docs/CONFIG.md. Also where the home
//! folder and its well-known files live.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Domain that apps created without a domain are served on.
    pub default_domain: String,
    /// Folders of extra spec folders; a spec here adds to or replaces a built-in one.
    pub spec_dirs: Vec<String>,
    pub http: Listener,
    pub https: HttpsListener,
    pub engine: EngineConfig,
    pub container: ContainerDefaults,
    pub proxy: ProxyConfig,
    pub server: ServerConfig,
    pub source: SourceConfig,
    /// Secret providers: `[secret.<name>]`, typed by the name's prefix (env, prop/file, vault).
    pub secret: std::collections::BTreeMap<String, crate::secrets::ProviderConfig>,
    /// Certificates from an ACME server (`[acme]`).
    pub acme: crate::acme::AcmeConfig,
    pub audit: AuditConfig,
    pub metrics: MetricsConfig,
    /// App authentication defaults (`[security]`).
    pub security: SecurityConfig,
    /// OpenID Connect providers: `[auth.oidc_<name>]`; an app uses one with `--auth oidc_<name>`.
    pub auth: std::collections::BTreeMap<String, crate::auth::OidcProviderConfig>,
}

/// The audit log (`[audit]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Events older than this many days are removed (at start, then daily); 0 keeps all.
    pub retention_days: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { retention_days: 90 }
    }
}

/// `/_berth/metrics` (`[metrics]`): with no token, only clients on 127.0.0.1 and ::1 may read it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// The name of an environment variable holding the bearer token (preferred over `token`).
    pub token_env: String,
    /// The bearer token itself.
    pub token: String,
}

/// `[security]`: how apps are protected by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// The auth of apps created without `--auth` (or with `--auth default`): `none`, `system`
    /// or an `oidc_<name>` provider.
    pub app_default_auth: String,
    /// How long a system (admin password) login lasts.
    pub session_lifetime_secs: u64,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig { app_default_auth: "none".into(), session_lifetime_secs: 86400 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listener {
    pub host: String,
    /// `-1` disables the listener.
    pub port: i32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpsListener {
    pub host: String,
    pub port: i32,
    /// Folder with `<domain>.crt`/`<domain>.key` pairs; empty means `$BERTH_HOME/certs`.
    pub cert_dir: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Engine API endpoint (`unix:///run/podman/podman.sock`, `tcp://127.0.0.1:2375`).
    /// Empty: `DOCKER_HOST`, else the local default socket.
    pub endpoint: String,
}

/// Defaults for every container app; `--conf container.<key>=<value>` overrides per app.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerDefaults {
    pub idle_shutdown_secs: u64,
    pub health_url: String,
    /// How long one start (pull, create, start, readiness) may take, and how long a request
    /// waits for it before it gets 503 with Retry-After.
    pub start_timeout_secs: u64,
    /// After a failed start, requests get the failure at once for this long (doubling on each
    /// further failure, at most 16x) instead of starting again.
    pub failure_backoff_secs: u64,
    pub stop_timeout_secs: u64,
    /// Bound for one image build.
    pub build_timeout_secs: u64,
    /// Run an init process as PID 1 (signals and zombies handled, fast stop).
    pub init: bool,
    /// Allow container options that reach into the host (privileged, network, pid, volume).
    pub allow_host_access: bool,
    /// An idle app is paused (CPU to zero, memory kept) and stopped only after it has been
    /// paused this long; 0: idle apps are stopped at once.
    pub stop_paused_after_secs: u64,
    /// When the paused containers' memory (engine stats) passes this, the oldest paused are
    /// stopped first; unset: a quarter of the machine's memory; 0: no budget.
    pub paused_memory_mb: Option<u64>,
}

impl ContainerDefaults {
    /// The paused containers' memory budget in bytes; 0: none.
    pub fn paused_memory_budget_bytes(&self) -> u64 {
        const MB: u64 = 1024 * 1024;
        match self.paused_memory_mb {
            Some(mb) => mb.saturating_mul(MB),
            None => machine_memory_bytes() / 4,
        }
    }
}

/// The machine's physical memory; 0 if it cannot be read.
fn machine_memory_bytes() -> u64 {
    // SAFETY: sysconf only reads system values.
    let (pages, page_size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    u64::try_from(pages).unwrap_or(0).saturating_mul(u64::try_from(page_size).unwrap_or(0))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    pub max_idle_per_host: usize,
    pub idle_timeout_secs: u64,
    /// How long a request waits for the upstream's response headers before it gets 504
    /// (bodies, server-sent events and WebSockets are not cut). Per app:
    /// `--conf proxy.response_timeout_secs=N`.
    pub response_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// How long in-flight requests may run after SIGTERM or `server stop`.
    pub shutdown_grace_secs: u64,
}

/// Fetching apps' sources (`[source]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// How long one fetch of a git source (clone and checkout) may take; then git and every
    /// process it started are killed and nothing of the fetch is kept.
    pub fetch_timeout_secs: u64,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig { fetch_timeout_secs: 300 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_domain: "localhost".into(),
            spec_dirs: Vec::new(),
            http: Listener { host: "127.0.0.1".into(), port: 25222 },
            https: HttpsListener { host: "0.0.0.0".into(), port: 25223, cert_dir: String::new() },
            engine: EngineConfig::default(),
            container: ContainerDefaults::default(),
            proxy: ProxyConfig::default(),
            server: ServerConfig::default(),
            source: SourceConfig::default(),
            secret: Default::default(),
            acme: Default::default(),
            audit: AuditConfig::default(),
            metrics: MetricsConfig::default(),
            security: SecurityConfig::default(),
            auth: Default::default(),
        }
    }
}

impl Default for Listener {
    fn default() -> Self {
        Listener { host: "127.0.0.1".into(), port: 25222 }
    }
}

impl Default for HttpsListener {
    fn default() -> Self {
        HttpsListener { host: "0.0.0.0".into(), port: 25223, cert_dir: String::new() }
    }
}

impl Default for ContainerDefaults {
    fn default() -> Self {
        ContainerDefaults {
            idle_shutdown_secs: 180,
            health_url: "/".into(),
            start_timeout_secs: 60,
            failure_backoff_secs: 10,
            stop_timeout_secs: 2,
            build_timeout_secs: 1800,
            init: true,
            allow_host_access: false,
            stop_paused_after_secs: 3600,
            paused_memory_mb: None,
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig { max_idle_per_host: 250, idle_timeout_secs: 15, response_timeout_secs: 300 }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { shutdown_grace_secs: 10 }
    }
}

/// The home folder and the files berth keeps in it.
#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    /// `$BERTH_HOME`, else `~/.berth`.
    pub fn from_env() -> anyhow::Result<Home> {
        let root = match std::env::var_os("BERTH_HOME") {
            Some(h) if !h.is_empty() => PathBuf::from(h),
            _ => {
                let home =
                    std::env::var_os("HOME").ok_or_else(|| anyhow::anyhow!("neither BERTH_HOME nor HOME is set"))?;
                PathBuf::from(home).join(".berth")
            }
        };
        let root = if root.is_absolute() { root } else { std::env::current_dir()?.join(root) };
        Ok(Home { root })
    }

    pub fn config_file(&self) -> PathBuf {
        self.root.join("berth.toml")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("berth.sock")
    }
    pub fn database(&self) -> PathBuf {
        self.root.join("metadata").join("berth.db")
    }
    pub fn sources_dir(&self) -> PathBuf {
        self.root.join("sources")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn build_log(&self, app_id: &str) -> PathBuf {
        self.logs_dir().join(format!("{app_id}.build.log"))
    }
    /// Owner-only folder with the admin password hash and the session cookie key.
    pub fn auth_dir(&self) -> PathBuf {
        self.root.join("auth")
    }
    pub fn instance_id_file(&self) -> PathBuf {
        self.root.join("instance_id")
    }
    pub fn cert_dir(&self, config: &Config) -> PathBuf {
        if config.https.cert_dir.is_empty() {
            self.root.join("certs")
        } else {
            PathBuf::from(&config.https.cert_dir)
        }
    }

    /// Reads `berth.toml`; a missing file means all defaults.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        load_config_file(&self.config_file())
    }
}

pub fn load_config_file(path: &Path) -> anyhow::Result<Config> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("error parsing config {}: {}", path.display(), e.message())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(anyhow::anyhow!("cannot read config {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c.http.port, 25222);
        assert_eq!(c.https.host, "0.0.0.0");
        assert_eq!(c.container.idle_shutdown_secs, 180);
        assert_eq!(c.default_domain, "localhost");
        assert_eq!(c.proxy.response_timeout_secs, 300);
        assert_eq!(c.source.fetch_timeout_secs, 300);
    }

    #[test]
    fn partial_sections_keep_other_defaults() {
        let c: Config = toml::from_str("[https]\nport = 9443\n[container]\nidle_shutdown_secs = 5\n").unwrap();
        assert_eq!(c.https.port, 9443);
        assert_eq!(c.https.host, "0.0.0.0");
        assert_eq!(c.container.idle_shutdown_secs, 5);
        let machine = machine_memory_bytes();
        assert!(machine > 0);
        assert_eq!(c.container.paused_memory_budget_bytes(), machine / 4, "a quarter of the machine by default");
        let c: Config = toml::from_str("[container]\npaused_memory_mb = 0\n").unwrap();
        assert_eq!(c.container.paused_memory_budget_bytes(), 0);
        assert_eq!(c.container.health_url, "/");
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<Config>("[http]\nprot = 1\n").is_err());
    }
}
