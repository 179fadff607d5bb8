//! ACME certificates (`[acme]` in berth.toml): for the configured domains (or every app domain
//! with `auto = true`) a tracked background task obtains certificates from an ACME server
//! (Let's Encrypt by default) with `instant-acme`, answering HTTP-01 on the HTTP listener
//! ([`HttpChallenges`]) or TLS-ALPN-01 on the HTTPS listener (a challenge certificate made with
//! rcgen, served by [`CertResolver`] to `acme-tls/1` hellos). The account key and certificates
//! live owner-only in the certificates folder's `acme` subfolder; certificates are loaded at
//! start with the others and swapped into the resolver when obtained, so requests never wait
//! on an order. The task checks at start and hourly, renews `renew_before_days` before expiry,
//! and retries a failed order with a doubling backoff, logging the ACME server's message.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::server::tls::{certified_key_from_pem, write_private, CertResolver, ACME_SUBDIR};

/// Let's Encrypt's production directory, the default `directory_url`.
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// The path prefix of HTTP-01 validation requests.
pub const HTTP_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// How often the task looks for certificates to obtain or renew.
const CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// Bound for one order (account, challenges, validation, finalization, download).
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);
/// First wait after a failed order; doubled on each further failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
const ACCOUNT_FILE: &str = "account.json";

/// `[acme]` in berth.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AcmeConfig {
    /// Domains to obtain certificates for.
    pub domains: Vec<String>,
    /// Also every domain an app is served on (names under `localhost` and IPs excepted).
    pub auto: bool,
    /// The ACME server's directory (Let's Encrypt staging:
    /// `https://acme-staging-v02.api.letsencrypt.org/directory`).
    pub directory_url: String,
    /// Contact address given to the ACME server; empty: none.
    pub email: String,
    /// Renew a certificate this many days before it expires.
    pub renew_before_days: u64,
    /// A PEM CA certificate trusted (instead of the system roots) for the ACME server's HTTPS.
    pub ca_cert_file: String,
    /// Which challenge to answer; unset: HTTP-01 when the HTTP listener is on, else TLS-ALPN-01.
    pub challenge: Option<ChallengeKind>,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            domains: Vec::new(),
            auto: false,
            directory_url: LETS_ENCRYPT_PRODUCTION.into(),
            email: String::new(),
            renew_before_days: 30,
            ca_cert_file: String::new(),
            challenge: None,
        }
    }
}

/// The ACME challenge berth answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ChallengeKind {
    /// On the HTTP listener, at [`HTTP_CHALLENGE_PREFIX`]`<token>`.
    #[serde(rename = "http-01")]
    Http01,
    /// On the HTTPS listener, to `acme-tls/1` hellos.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl AcmeConfig {
    /// Whether any certificate is to be obtained.
    pub fn enabled(&self) -> bool {
        self.auto || !self.domains.is_empty()
    }

    /// Checks the settings against the listeners; one-line errors for bad input.
    pub fn validate(&self, http_enabled: bool, https_enabled: bool) -> anyhow::Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        anyhow::ensure!(https_enabled, "[acme] needs the HTTPS listener, which is disabled");
        for domain in &self.domains {
            check_domain(domain)?;
        }
        anyhow::ensure!(
            self.directory_url.starts_with("https://"),
            "[acme] directory_url {:?} must be an https:// URL",
            self.directory_url
        );
        if self.challenge == Some(ChallengeKind::Http01) {
            anyhow::ensure!(http_enabled, "[acme] challenge \"http-01\" needs the HTTP listener, which is disabled");
        }
        if !self.ca_cert_file.is_empty() {
            std::fs::metadata(&self.ca_cert_file)
                .with_context(|| format!("[acme] ca_cert_file {} cannot be read", self.ca_cert_file))?;
        }
        Ok(())
    }
}

/// A configured domain must be a plain DNS name: ACME wildcards need DNS-01, which berth lacks.
fn check_domain(domain: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !domain.starts_with("*."),
        "[acme] domain {domain:?} is a wildcard: wildcard certificates need DNS-01, which berth does not answer"
    );
    let valid = !domain.is_empty()
        && domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    anyhow::ensure!(valid, "[acme] domain {domain:?} is not a DNS name like app.example.com");
    Ok(())
}

/// Whether an app domain can get a public certificate (auto mode skips the others).
fn is_public_name(host: &str) -> bool {
    let lower = host.to_ascii_lowercase();
    host.parse::<IpAddr>().is_err()
        && lower != "localhost"
        && !lower.ends_with(".localhost")
        && check_domain(host).is_ok()
}

/// Pending HTTP-01 answers: token → key authorization.
#[derive(Debug, Default)]
pub struct HttpChallenges {
    answers: Mutex<HashMap<String, String>>,
}

impl HttpChallenges {
    /// The key authorization for a request path under [`HTTP_CHALLENGE_PREFIX`], if pending.
    pub fn answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP_CHALLENGE_PREFIX)?;
        self.answers.lock().expect("challenge lock").get(token).cloned()
    }

    fn set(&self, token: &str, key_authorization: Option<String>) {
        let mut answers = self.answers.lock().expect("challenge lock");
        match key_authorization {
            Some(answer) => answers.insert(token.to_string(), answer),
            None => answers.remove(token),
        };
    }
}

/// The stored account: its credentials and the directory they belong to.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory_url: String,
    credentials: AccountCredentials,
}

/// What the task needs: settings, where files go, where certificates and challenges are served.
pub struct Acme {
    config: AcmeConfig,
    challenge: ChallengeKind,
    dir: PathBuf,
    resolver: Arc<CertResolver>,
    http: Arc<HttpChallenges>,
    /// The app domains now (for `auto`).
    app_domains: Box<dyn Fn() -> Vec<String> + Send + Sync>,
}

impl Acme {
    pub fn new(
        config: AcmeConfig,
        http_enabled: bool,
        cert_dir: &Path,
        resolver: Arc<CertResolver>,
        http: Arc<HttpChallenges>,
        app_domains: Box<dyn Fn() -> Vec<String> + Send + Sync>,
    ) -> Acme {
        let challenge =
            config.challenge.unwrap_or(if http_enabled { ChallengeKind::Http01 } else { ChallengeKind::TlsAlpn01 });
        Acme { config, challenge, dir: cert_dir.join(ACME_SUBDIR), resolver, http, app_domains }
    }

    /// Runs the check loop until `stop`: at start, then hourly or when a retry is due.
    pub async fn run(self, stop: CancellationToken) {
        let mut account: Option<Account> = None;
        // Domain → (failures so far, no new order before).
        let mut backoff: HashMap<String, (u32, Instant)> = HashMap::new();
        loop {
            for domain in self.wanted_domains() {
                if backoff.get(&domain).is_some_and(|(_, not_before)| Instant::now() < *not_before) {
                    continue;
                }
                match self.renewal_due(&domain) {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(e) => tracing::warn!(%domain, "stored ACME certificate unreadable, ordering a new one: {e:#}"),
                }
                tracing::info!(%domain, "ordering a certificate from {}", self.config.directory_url);
                let order = async {
                    if account.is_none() {
                        account = Some(self.account().await?);
                    }
                    self.obtain(account.as_ref().expect("just set"), &domain).await
                };
                let result = tokio::select! {
                    r = tokio::time::timeout(ORDER_TIMEOUT, order) => r,
                    _ = stop.cancelled() => return,
                };
                match result.unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after {}s", ORDER_TIMEOUT.as_secs()))) {
                    Ok(()) => {
                        backoff.remove(&domain);
                    }
                    Err(e) => {
                        let failures = backoff.get(&domain).map_or(0, |(n, _)| *n) + 1;
                        let wait = FIRST_BACKOFF.saturating_mul(1 << (failures - 1).min(16)).min(MAX_BACKOFF);
                        tracing::warn!(%domain, "ACME certificate order failed (retry in {}s): {e:#}", wait.as_secs());
                        backoff.insert(domain, (failures, Instant::now() + wait));
                    }
                }
            }
            let next_retry = backoff.values().map(|(_, at)| *at).min();
            let next = next_retry.map_or(Instant::now() + CHECK_INTERVAL, |at| at.min(Instant::now() + CHECK_INTERVAL));
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    fn wanted_domains(&self) -> Vec<String> {
        let mut domains: Vec<String> = self.config.domains.iter().map(|d| d.to_ascii_lowercase()).collect();
        if self.config.auto {
            domains
                .extend((self.app_domains)().into_iter().filter(|d| is_public_name(d)).map(|d| d.to_ascii_lowercase()));
        }
        domains.sort();
        domains.dedup();
        domains
    }

    fn cert_path(&self, domain: &str) -> PathBuf {
        self.dir.join(format!("{domain}.crt"))
    }

    /// Whether the stored certificate is missing or expires within `renew_before_days`.
    fn renewal_due(&self, domain: &str) -> anyhow::Result<bool> {
        let pem = match std::fs::read(self.cert_path(domain)) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(e).context("cannot read the certificate"),
        };
        let not_after = not_after(&pem)?;
        let renew_from = not_after
            .checked_sub(Duration::from_secs(self.config.renew_before_days.saturating_mul(86400)))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(SystemTime::now() >= renew_from)
    }

    /// The stored account for this directory, else a new one (stored owner-only).
    async fn account(&self) -> anyhow::Result<Account> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("cannot create {}", self.dir.display()))?;
        set_owner_only(&self.dir, 0o700)?;
        let file = self.dir.join(ACCOUNT_FILE);
        let builder = || -> anyhow::Result<_> {
            Ok(if self.config.ca_cert_file.is_empty() {
                Account::builder()?
            } else {
                Account::builder_with_root(&self.config.ca_cert_file)
                    .with_context(|| format!("cannot use ca_cert_file {}", self.config.ca_cert_file))?
            })
        };
        if let Ok(text) = std::fs::read(&file) {
            match serde_json::from_slice::<StoredAccount>(&text) {
                Ok(stored) if stored.directory_url == self.config.directory_url => {
                    return builder()?
                        .from_credentials(stored.credentials)
                        .await
                        .context("cannot load the stored ACME account");
                }
                Ok(_) => tracing::info!("the stored ACME account is for another directory; creating one"),
                Err(e) => tracing::warn!("{} is unreadable ({e}); creating a new ACME account", file.display()),
            }
        }
        let contact = (!self.config.email.is_empty()).then(|| format!("mailto:{}", self.config.email));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new = NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
        let (account, credentials) = builder()?
            .create(&new, self.config.directory_url.clone(), None)
            .await
            .with_context(|| format!("cannot create an ACME account at {}", self.config.directory_url))?;
        let stored = StoredAccount { directory_url: self.config.directory_url.clone(), credentials };
        write_private(&file, &serde_json::to_vec(&stored)?)?;
        tracing::info!("created an ACME account at {}", self.config.directory_url);
        Ok(account)
    }

    /// One order for `domain`: answer its challenge, finalize, store and serve the certificate.
    async fn obtain(&self, account: &Account, domain: &str) -> anyhow::Result<()> {
        let identifiers = [Identifier::Dns(domain.to_string())];
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await.context("new order refused")?;
        let mut pending = PendingChallenges { acme: self, http_tokens: Vec::new(), alpn_domains: Vec::new() };
        let kind = match self.challenge {
            ChallengeKind::Http01 => ChallengeType::Http01,
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => anyhow::bail!("the authorization for {domain} is {other:?}"),
            }
            let mut challenge = authorization
                .challenge(kind.clone())
                .with_context(|| format!("the ACME server offers no {kind:?} challenge for {domain}"))?;
            let key_authorization = challenge.key_authorization();
            match self.challenge {
                ChallengeKind::Http01 => {
                    self.http.set(&challenge.token, Some(key_authorization.as_str().to_string()));
                    pending.http_tokens.push(challenge.token.clone());
                }
                ChallengeKind::TlsAlpn01 => {
                    let cert = alpn_challenge_cert(domain, key_authorization.digest().as_ref())?;
                    self.resolver.set_alpn_challenge(domain, Some(cert));
                    pending.alpn_domains.push(domain.to_string());
                }
            }
            challenge.set_ready().await?;
        }
        let polling = RetryPolicy::new().timeout(Duration::from_secs(120));
        let status = order.poll_ready(&polling).await?;
        if status != OrderStatus::Ready {
            // The reason sits in the failed challenge.
            let mut reasons = Vec::new();
            let mut authorizations = order.authorizations();
            while let Some(authorization) = authorizations.next().await {
                for challenge in &authorization?.challenges {
                    if let Some(error) = &challenge.error {
                        reasons.push(error.to_string());
                    }
                }
            }
            anyhow::bail!("the order for {domain} is {status:?}: {}", reasons.join("; "));
        }
        drop(pending);
        let key_pem = order.finalize().await.context("finalizing the order")?;
        let chain_pem = order.poll_certificate(&polling).await.context("downloading the certificate")?;
        let key = certified_key_from_pem(chain_pem.as_bytes(), key_pem.as_bytes())
            .context("the ACME server's certificate is unusable")?;
        self.store(domain, &chain_pem, &key_pem)?;
        self.resolver.install(domain, key);
        tracing::info!(%domain, "obtained a certificate, valid until {}", expiry_text(chain_pem.as_bytes()));
        Ok(())
    }

    /// Writes the pair owner-only; each file appears whole (written aside, then renamed).
    fn store(&self, domain: &str, chain_pem: &str, key_pem: &str) -> anyhow::Result<()> {
        let key_path = self.dir.join(format!("{domain}.key"));
        let cert_path = self.cert_path(domain);
        for (path, data) in [(&key_path, key_pem), (&cert_path, chain_pem)] {
            let aside = path.with_extension("new");
            write_private(&aside, data.as_bytes())?;
            std::fs::rename(&aside, path).with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

/// Removes an order's challenge answers when it ends, however it ends.
struct PendingChallenges<'a> {
    acme: &'a Acme,
    http_tokens: Vec<String>,
    alpn_domains: Vec<String>,
}

impl Drop for PendingChallenges<'_> {
    fn drop(&mut self) {
        for token in &self.http_tokens {
            self.acme.http.set(token, None);
        }
        for domain in &self.alpn_domains {
            self.acme.resolver.set_alpn_challenge(domain, None);
        }
    }
}

/// The TLS-ALPN-01 certificate (RFC 8737): self-signed for `domain`, with the critical
/// acmeIdentifier extension holding the key authorization's SHA-256 digest.
fn alpn_challenge_cert(domain: &str, digest: &[u8]) -> anyhow::Result<Arc<rustls::sign::CertifiedKey>> {
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    certified_key_from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
}

/// When the first certificate of a PEM chain expires.
fn not_after(pem: &[u8]) -> anyhow::Result<SystemTime> {
    let der = rustls_pemfile::certs(&mut &*pem).next().context("no certificate")?.context("not PEM")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| anyhow::anyhow!("not X.509: {e}"))?;
    let secs = cert.validity().not_after.timestamp();
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

fn expiry_text(pem: &[u8]) -> String {
    match not_after(pem) {
        Ok(at) => {
            let secs = at.duration_since(SystemTime::now()).unwrap_or_default().as_secs();
            format!("{} days from now", secs / 86400)
        }
        Err(e) => format!("unknown ({e})"),
    }
}

fn set_owner_only(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot make {} owner-only", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let c = AcmeConfig::default();
        assert!(!c.enabled());
        assert_eq!(c.renew_before_days, 30);
        assert_eq!(c.directory_url, LETS_ENCRYPT_PRODUCTION);
        c.validate(true, true).unwrap();
        let with = |domains: &[&str]| AcmeConfig {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            ..AcmeConfig::default()
        };
        with(&["app.example.com"]).validate(true, true).unwrap();
        let wildcard = with(&["*.example.com"]).validate(true, true).unwrap_err().to_string();
        assert!(wildcard.contains("wildcard"), "{wildcard}");
        assert!(with(&["a/b.example.com"]).validate(true, true).is_err());
        assert!(with(&["example"]).validate(true, true).is_err());
        let no_https = with(&["app.example.com"]).validate(true, false).unwrap_err().to_string();
        assert!(no_https.contains("HTTPS listener"), "{no_https}");
        let http01 = AcmeConfig { challenge: Some(ChallengeKind::Http01), ..with(&["app.example.com"]) };
        assert!(http01.validate(false, true).is_err());
        let plain = AcmeConfig { directory_url: "http://ca.example/dir".into(), ..with(&["app.example.com"]) };
        assert!(plain.validate(true, true).is_err(), "an ACME server is only reached over HTTPS");
    }

    #[test]
    fn auto_mode_skips_local_names() {
        assert!(is_public_name("app.example.com"));
        assert!(!is_public_name("localhost"));
        assert!(!is_public_name("app.localhost"));
        assert!(!is_public_name("127.0.0.1"));
        assert!(!is_public_name("intranet"));
    }

    #[test]
    fn http_challenge_answers_only_pending_tokens() {
        let c = HttpChallenges::default();
        c.set("tok", Some("tok.thumb".into()));
        assert_eq!(c.answer("/.well-known/acme-challenge/tok").as_deref(), Some("tok.thumb"));
        assert_eq!(c.answer("/.well-known/acme-challenge/other"), None);
        assert_eq!(c.answer("/tok"), None);
        c.set("tok", None);
        assert_eq!(c.answer("/.well-known/acme-challenge/tok"), None);
    }

    #[test]
    fn expiry_of_a_chain() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example.com".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2040, 1, 2);
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        let at = not_after(pem.as_bytes()).unwrap();
        let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 2209075200, "2040-01-02T00:00:00Z");
    }
}
