//! Secrets: the `{{secret ...}}` templates in params and build args, and the providers that
//! resolve them (`env`, properties/TOML files, Vault KV v2 over HTTP). Resolved values are
//! handed to the engine and nowhere else: never stored, logged or shown.
//!
//! Forms: `{{secret "PROVIDER" "KEY"}}`, `{{secret_from "PROVIDER" "KEY" ...}}` (several keys
//! are joined with the provider's delimiter) and `{{secret "KEY"}}` (the default provider,
//! `env`).

mod template;
mod vault;

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

pub use template::{contains_template, parse, Part, SecretRef};

/// `[secret.<name>]` in berth.toml; the type comes from the name's prefix: `env`, `prop`/`file`,
/// `vault`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// prop/file: a properties (`k = v`) or TOML (`.toml`) file.
    pub file: Option<String>,
    /// vault: the server address, e.g. `http://127.0.0.1:8200`.
    pub address: Option<String>,
    /// vault: the token, or the name of an environment variable that holds it.
    pub token: Option<String>,
    pub token_env: Option<String>,
    /// vault: the KV v2 mount (default `secret`).
    pub mount: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("unknown secret provider {provider} for secret {key} (configure [secret.{provider}] in berth.toml)")]
    UnknownProvider { provider: String, key: String },
    #[error("secret {key} not found in provider {provider}")]
    NotFound { provider: String, key: String },
    #[error("secret {key} from provider {provider}: {message}")]
    Provider { provider: String, key: String, message: String },
    #[error("invalid secret template: {0}")]
    Syntax(String),
}

enum Provider {
    Env,
    Values(HashMap<String, String>),
    Vault(Box<vault::Vault>),
}

impl Provider {
    fn delimiter(&self) -> &'static str {
        match self {
            Provider::Env => "_",
            Provider::Values(_) => ".",
            Provider::Vault(_) => "/",
        }
    }
}

pub struct Secrets {
    providers: HashMap<String, Provider>,
}

impl Secrets {
    /// Builds the providers; a file provider's file is read now.
    pub fn from_config(config: &BTreeMap<String, ProviderConfig>) -> anyhow::Result<Secrets> {
        let mut providers = HashMap::new();
        for (name, c) in config {
            let provider = if name == "env" || name.starts_with("env_") {
                Provider::Env
            } else if ["prop", "file"].iter().any(|p| name == p || name.starts_with(&format!("{p}_"))) {
                let file = c.file.as_deref().ok_or_else(|| anyhow::anyhow!("[secret.{name}] needs file = \"...\""))?;
                Provider::Values(read_values(file).map_err(|e| anyhow::anyhow!("[secret.{name}]: {e}"))?)
            } else if name == "vault" || name.starts_with("vault_") {
                let address = c.address.clone().ok_or_else(|| anyhow::anyhow!("[secret.{name}] needs address"))?;
                let token = match (&c.token, &c.token_env) {
                    (Some(t), _) => t.clone(),
                    (None, Some(var)) => std::env::var(var)
                        .map_err(|_| anyhow::anyhow!("[secret.{name}]: environment variable {var} is not set"))?,
                    (None, None) => anyhow::bail!("[secret.{name}] needs token or token_env"),
                };
                Provider::Vault(Box::new(vault::Vault::new(
                    &address,
                    token,
                    c.mount.clone().unwrap_or_else(|| "secret".into()),
                )?))
            } else {
                anyhow::bail!("unknown secret provider type for [secret.{name}]: the name must start with env, prop, file or vault");
            };
            providers.insert(name.clone(), provider);
        }
        Ok(Secrets { providers })
    }

    pub fn none() -> Secrets {
        Secrets { providers: HashMap::new() }
    }

    /// Resolves every template in `text`; text without templates comes back unchanged.
    pub async fn resolve(&self, text: &str) -> Result<String, SecretError> {
        if !contains_template(text) {
            return Ok(text.to_string());
        }
        let mut out = String::new();
        for part in parse(text)? {
            match part {
                Part::Text(t) => out.push_str(&t),
                Part::Secret(r) => out.push_str(&self.lookup(&r).await?),
            }
        }
        Ok(out)
    }

    /// Resolves the values of `(name, value)` pairs.
    pub async fn resolve_all(&self, pairs: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            let value = self.resolve(v).await.map_err(|e| format!("error evaluating secret for {k}: {e}"))?;
            out.push((k.clone(), value));
        }
        Ok(out)
    }

    async fn lookup(&self, r: &SecretRef) -> Result<String, SecretError> {
        let name = r.provider.as_deref().unwrap_or("env");
        let provider = self
            .providers
            .get(name)
            .ok_or_else(|| SecretError::UnknownProvider { provider: name.into(), key: r.keys.join("/") })?;
        let key = r.keys.join(provider.delimiter());
        let not_found = || SecretError::NotFound { provider: name.into(), key: key.clone() };
        match provider {
            Provider::Env => std::env::var(&key).map_err(|_| not_found()),
            Provider::Values(map) => map.get(&key).cloned().ok_or_else(not_found),
            Provider::Vault(v) => v.read(&key).await.map_err(|e| match e {
                vault::VaultError::NotFound => not_found(),
                vault::VaultError::Other(message) => {
                    SecretError::Provider { provider: name.into(), key: key.clone(), message }
                }
            }),
        }
    }
}

/// A properties file (`k = v`, `#` comments) or, for `.toml`, a TOML table of strings
/// (nested tables give dotted keys).
fn read_values(file: &str) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?;
    let mut map = HashMap::new();
    if file.ends_with(".toml") {
        let table: toml::Table = toml::from_str(&text).map_err(|e| format!("{file}: {}", e.message()))?;
        flatten("", &toml::Value::Table(table), &mut map);
    } else {
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            if let Some((k, v)) = line.split_once('=') {
                map.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
    }
    Ok(map)
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut HashMap<String, String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        toml::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn env_and_file_providers() {
        let dir = tempfile::tempdir().unwrap();
        let props = dir.path().join("s.properties");
        std::fs::write(&props, "# c\ndb.password = hunter2\n").unwrap();
        let tomlf = dir.path().join("s.toml");
        std::fs::write(&tomlf, "[api]\nkey = \"k-123\"\n").unwrap();
        std::env::set_var("BERTH_TEST_SECRET_X", "from-env");
        let config = BTreeMap::from([
            ("env".to_string(), ProviderConfig::default()),
            ("prop".to_string(), ProviderConfig { file: Some(props.display().to_string()), ..Default::default() }),
            ("file_t".to_string(), ProviderConfig { file: Some(tomlf.display().to_string()), ..Default::default() }),
        ]);
        let s = Secrets::from_config(&config).unwrap();
        assert_eq!(s.resolve("plain").await.unwrap(), "plain");
        assert_eq!(s.resolve("{{secret \"env\" \"BERTH_TEST_SECRET_X\"}}").await.unwrap(), "from-env");
        assert_eq!(s.resolve("{{ secret \"BERTH_TEST_SECRET_X\" }}").await.unwrap(), "from-env");
        assert_eq!(s.resolve("pw={{secret_from \"prop\" \"db\" \"password\"}};").await.unwrap(), "pw=hunter2;");
        assert_eq!(s.resolve("{{secret \"file_t\" \"api.key\"}}").await.unwrap(), "k-123");
        let err = s.resolve("{{secret \"vault_x\" \"K\"}}").await.unwrap_err();
        assert_eq!(err, SecretError::UnknownProvider { provider: "vault_x".into(), key: "K".into() });
        let err = s.resolve("{{secret \"prop\" \"nope\"}}").await.unwrap_err();
        assert_eq!(err.to_string(), "secret nope not found in provider prop");
    }
}
