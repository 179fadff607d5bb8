//! TLS for the HTTPS listener: the self-signed default certificate (made on first start for
//! `localhost` and `*.localhost`), user certificates placed in the certificates folder as
//! `<domain>.crt` + `<domain>.key` (a wildcard as `*.<domain>` or `_wildcard.<domain>`), an SNI
//! resolver that picks among them, and ALPN for HTTP/2 and HTTP/1.1. Certificates obtained from
//! an ACME server (see [`crate::acme`]) live in the `acme` subfolder, win over a user pair for
//! the same name, and are swapped in atomically while the server runs; TLS-ALPN-01 challenge
//! certificates are answered only to `acme-tls/1` hellos.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

const DEFAULT_NAME: &str = "default";
/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// The subfolder of the certificates folder that holds the ACME account and certificates.
pub const ACME_SUBDIR: &str = "acme";

#[derive(Debug)]
pub struct CertResolver {
    by_name: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    default: Arc<CertifiedKey>,
    /// TLS-ALPN-01 challenge certificates by domain while an order waits for validation.
    alpn_challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertResolver {
    /// Loads every pair in `dir`, creating the default self-signed pair first if missing, then
    /// the ACME certificates in its `acme` subfolder.
    pub fn load(dir: &Path) -> anyhow::Result<CertResolver> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        ensure_default_cert(dir)?;
        let mut by_name = HashMap::new();
        let mut default = None;
        load_dir(dir, &mut by_name, &mut default)?;
        let acme_dir = dir.join(ACME_SUBDIR);
        if acme_dir.is_dir() {
            load_dir(&acme_dir, &mut by_name, &mut None)?;
        }
        let default = default.context("the default certificate could not be loaded")?;
        Ok(CertResolver {
            by_name: ArcSwap::from_pointee(by_name),
            default,
            alpn_challenges: Mutex::new(HashMap::new()),
        })
    }

    /// Serves `key` for `name` from now on (an atomic swap; handshakes never wait).
    pub fn install(&self, name: &str, key: Arc<CertifiedKey>) {
        let name = name.to_ascii_lowercase();
        self.by_name.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.insert(name.clone(), key.clone());
            next
        });
    }

    /// Answers `acme-tls/1` hellos for `domain` with `challenge` (None: no longer).
    pub fn set_alpn_challenge(&self, domain: &str, challenge: Option<Arc<CertifiedKey>>) {
        let mut challenges = self.alpn_challenges.lock().expect("challenge lock");
        match challenge {
            Some(key) => challenges.insert(domain.to_ascii_lowercase(), key),
            None => challenges.remove(&domain.to_ascii_lowercase()),
        };
    }

    fn alpn_challenge(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let name = sni?.to_ascii_lowercase();
        self.alpn_challenges.lock().expect("challenge lock").get(&name).cloned()
    }

    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni.map(|s| s.to_ascii_lowercase()) else { return self.default.clone() };
        let by_name = self.by_name.load();
        if let Some(k) = by_name.get(&name) {
            return k.clone();
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = by_name.get(&format!("*.{parent}")) {
                return k.clone();
            }
        }
        self.default.clone()
    }
}

/// Loads the `<name>.crt` + `<name>.key` pairs of `dir` into `by_name` (`default` apart).
fn load_dir(
    dir: &Path,
    by_name: &mut HashMap<String, Arc<CertifiedKey>>,
    default: &mut Option<Arc<CertifiedKey>>,
) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("crt") {
            continue;
        }
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else { continue };
        let key_path = path.with_extension("key");
        if !key_path.exists() {
            tracing::warn!("certificate {} has no {} beside it; ignored", path.display(), key_path.display());
            continue;
        }
        let key = load_pair(&path, &key_path)?;
        let name = stem.to_ascii_lowercase().replacen("_wildcard.", "*.", 1);
        if name == DEFAULT_NAME {
            *default = Some(key);
        } else {
            tracing::info!(domain = %name, "loaded certificate");
            by_name.insert(name, key);
        }
    }
    Ok(())
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme_validation = hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme_validation {
            // Only a pending TLS-ALPN-01 challenge answers `acme-tls/1`; otherwise no handshake.
            return self.alpn_challenge(hello.server_name());
        }
        Some(self.pick(hello.server_name()))
    }
}

pub fn server_config(resolver: Arc<CertResolver>) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Ok(Arc::new(config))
}

fn ensure_default_cert(dir: &Path) -> anyhow::Result<()> {
    let crt = dir.join(format!("{DEFAULT_NAME}.crt"));
    let key = dir.join(format!("{DEFAULT_NAME}.key"));
    if crt.exists() && key.exists() {
        return Ok(());
    }
    let names = vec!["localhost".to_string(), "*.localhost".to_string(), "127.0.0.1".to_string()];
    let generated = rcgen::generate_simple_self_signed(names).context("cannot generate the self-signed certificate")?;
    write_private(&key, generated.key_pair.serialize_pem().as_bytes())?;
    std::fs::write(&crt, generated.cert.pem())?;
    tracing::info!("created a self-signed certificate for localhost and *.localhost in {}", dir.display());
    Ok(())
}

/// Writes an owner-only (0600) file.
pub fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(data)?;
    Ok(())
}

fn load_pair(crt: &Path, key: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    certified_key_from_pem(&read(crt)?, &read(key)?).with_context(|| format!("{} and {}", crt.display(), key.display()))
}

/// A certificate chain and its private key, both PEM, as rustls serves them.
pub fn certified_key_from_pem(chain: &[u8], key: &[u8]) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs =
        rustls_pemfile::certs(&mut &*chain).collect::<Result<Vec<_>, _>>().context("not a PEM certificate chain")?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in the chain");
    let key_der =
        rustls_pemfile::private_key(&mut &*key).context("not a PEM private key")?.context("no private key")?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| anyhow::anyhow!("unsupported private key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(certs, signing)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_named_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["*.example.test".to_string()]).unwrap();
        std::fs::write(dir.path().join("_wildcard.example.test.crt"), other.cert.pem()).unwrap();
        std::fs::write(dir.path().join("_wildcard.example.test.key"), other.key_pair.serialize_pem()).unwrap();
        let r = CertResolver::load(dir.path()).unwrap();
        assert!(dir.path().join("default.crt").exists());
        let default = r.pick(Some("app.localhost"));
        let wild = r.pick(Some("a.example.test"));
        assert!(!Arc::ptr_eq(&default, &wild));
        assert!(Arc::ptr_eq(&default, &r.pick(None)));
        // A second load reuses the same default certificate.
        let again = CertResolver::load(dir.path()).unwrap();
        assert_eq!(again.pick(None).cert, default.cert);
    }

    #[test]
    fn acme_certificates_win_and_are_swapped_in() {
        let dir = tempfile::tempdir().unwrap();
        let pair = |name: &str| {
            let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
            (made.cert.pem(), made.key_pair.serialize_pem())
        };
        let (user_crt, user_key) = pair("a.example.com");
        std::fs::write(dir.path().join("a.example.com.crt"), &user_crt).unwrap();
        std::fs::write(dir.path().join("a.example.com.key"), &user_key).unwrap();
        std::fs::create_dir(dir.path().join(ACME_SUBDIR)).unwrap();
        let (acme_crt, acme_key) = pair("a.example.com");
        std::fs::write(dir.path().join(ACME_SUBDIR).join("a.example.com.crt"), &acme_crt).unwrap();
        std::fs::write(dir.path().join(ACME_SUBDIR).join("a.example.com.key"), &acme_key).unwrap();
        let r = CertResolver::load(dir.path()).unwrap();
        let acme = certified_key_from_pem(acme_crt.as_bytes(), acme_key.as_bytes()).unwrap();
        assert_eq!(r.pick(Some("a.example.com")).cert, acme.cert, "the ACME certificate wins");

        let (new_crt, new_key) = pair("b.example.com");
        let new = certified_key_from_pem(new_crt.as_bytes(), new_key.as_bytes()).unwrap();
        assert!(Arc::ptr_eq(&r.pick(Some("b.example.com")), &r.default));
        r.install("B.example.com", new.clone());
        assert!(Arc::ptr_eq(&r.pick(Some("b.example.com")), &new));
        assert_eq!(r.pick(Some("a.example.com")).cert, acme.cert, "other names are kept");
    }
}
