//! Per-app settings (`--conf container.<key>=<value>`, `--conf proxy.<key>=<value>`), layered
//! over berth.toml's `[container]` and `[proxy]` defaults. Pure logic.

use std::collections::BTreeMap;
use std::time::Duration;

use super::runtime::RuntimeSettings;
use crate::config::{ContainerDefaults, ProxyConfig};
use crate::specs::Spec;

/// The keys `--conf` accepts.
pub const KNOWN_KEYS: &[&str] = &[
    "container.idle_shutdown_secs",
    "container.health_url",
    "container.start_timeout_secs",
    "container.stop_paused_after_secs",
    RESPONSE_TIMEOUT_KEY,
    crate::auth::APP_CONFIG_KEY,
];

/// The per-app override of `[proxy] response_timeout_secs`; applies to container and proxy apps.
pub const RESPONSE_TIMEOUT_KEY: &str = "proxy.response_timeout_secs";

/// Checks `--conf` entries and resolves the runtime settings for one app: the app's own
/// config, then the spec's health URL, then berth.toml.
pub fn resolve(
    defaults: &ContainerDefaults,
    spec: &Spec,
    app_config: &BTreeMap<String, String>,
) -> Result<RuntimeSettings, String> {
    let health = spec.container.health_url.as_deref().unwrap_or(&defaults.health_url);
    let mut s = RuntimeSettings {
        idle_shutdown: Duration::from_secs(defaults.idle_shutdown_secs),
        stop_paused_after: Duration::from_secs(defaults.stop_paused_after_secs),
        health_url: normalize_health_url(health)?,
        start_timeout: Duration::from_secs(defaults.start_timeout_secs.max(1)),
        failure_backoff: Duration::from_secs(defaults.failure_backoff_secs),
        stop_timeout_secs: defaults.stop_timeout_secs,
        init: defaults.init,
    };
    for (key, value) in app_config {
        let value = value.trim().trim_matches('"');
        match key.as_str() {
            "container.idle_shutdown_secs" => s.idle_shutdown = Duration::from_secs(secs(key, value)?),
            "container.stop_paused_after_secs" => s.stop_paused_after = Duration::from_secs(secs(key, value)?),
            "container.start_timeout_secs" => s.start_timeout = Duration::from_secs(secs(key, value)?.max(1)),
            "container.health_url" => s.health_url = normalize_health_url(value)?,
            RESPONSE_TIMEOUT_KEY => {
                secs(key, value)?;
            }
            // Checked against the configured providers where the deployment is made.
            crate::auth::APP_CONFIG_KEY => {}
            _ => return Err(format!("unknown app config key {key} (known keys: {})", KNOWN_KEYS.join(", "))),
        }
    }
    Ok(s)
}

/// How long the proxy waits for this app's response headers: the app's own config, then
/// berth.toml's `[proxy]`. At least one second.
pub fn response_timeout(defaults: &ProxyConfig, app_config: &BTreeMap<String, String>) -> Result<Duration, String> {
    let secs = match app_config.get(RESPONSE_TIMEOUT_KEY) {
        Some(value) => secs(RESPONSE_TIMEOUT_KEY, value.trim().trim_matches('"'))?,
        None => defaults.response_timeout_secs,
    };
    Ok(Duration::from_secs(secs.max(1)))
}

fn secs(key: &str, value: &str) -> Result<u64, String> {
    value.parse::<u64>().map_err(|_| format!("app config {key} must be a whole number of seconds, got {value:?}"))
}

fn normalize_health_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("health url {url:?} must be a path without spaces"));
    }
    Ok(if url.starts_with('/') { url.to_string() } else { format!("/{url}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_and_errors() {
        let d = ContainerDefaults::default();
        let catalog = crate::specs::Catalog::load(&[]).unwrap();
        let image = catalog.lookup(Some("image")).unwrap();
        let streamlit = catalog.lookup(Some("python-streamlit")).unwrap();
        assert_eq!(resolve(&d, &streamlit, &BTreeMap::new()).unwrap().health_url, "/_stcore/health");
        let resolve = |d: &ContainerDefaults, conf: &BTreeMap<String, String>| resolve(d, &image, conf);
        let conf = BTreeMap::from([
            ("container.idle_shutdown_secs".to_string(), "5".to_string()),
            ("container.health_url".to_string(), "\"healthz\"".to_string()),
        ]);
        let s = resolve(&d, &conf).unwrap();
        assert_eq!(s.idle_shutdown, Duration::from_secs(5));
        assert_eq!(s.health_url, "/healthz");
        assert_eq!(resolve(&d, &BTreeMap::new()).unwrap().idle_shutdown, Duration::from_secs(180));
        assert_eq!(resolve(&d, &BTreeMap::new()).unwrap().stop_paused_after, Duration::from_secs(3600));
        let tier_off = BTreeMap::from([("container.stop_paused_after_secs".to_string(), "0".to_string())]);
        assert_eq!(resolve(&d, &tier_off).unwrap().stop_paused_after, Duration::ZERO);
        let bad = BTreeMap::from([("container.idle_shutdown_secs".to_string(), "soon".to_string())]);
        assert!(resolve(&d, &bad).is_err());
        let unknown = BTreeMap::from([("cors.allow_origin".to_string(), "*".to_string())]);
        assert!(resolve(&d, &unknown).unwrap_err().contains("unknown app config key"));
    }

    #[test]
    fn response_timeout_per_app() {
        let p = ProxyConfig::default();
        let image = crate::specs::Catalog::load(&[]).unwrap().lookup(Some("image")).unwrap();
        assert_eq!(response_timeout(&p, &BTreeMap::new()).unwrap(), Duration::from_secs(300));
        let conf = BTreeMap::from([(RESPONSE_TIMEOUT_KEY.to_string(), "7".to_string())]);
        assert!(resolve(&ContainerDefaults::default(), &image, &conf).is_ok(), "the key is known to create");
        assert_eq!(response_timeout(&p, &conf).unwrap(), Duration::from_secs(7));
        let zero = BTreeMap::from([(RESPONSE_TIMEOUT_KEY.to_string(), "0".to_string())]);
        assert_eq!(response_timeout(&p, &zero).unwrap(), Duration::from_secs(1));
        let bad = BTreeMap::from([(RESPONSE_TIMEOUT_KEY.to_string(), "soon".to_string())]);
        assert!(resolve(&ContainerDefaults::default(), &image, &bad).unwrap_err().contains(RESPONSE_TIMEOUT_KEY));
        assert!(response_timeout(&p, &bad).is_err());
    }
}
