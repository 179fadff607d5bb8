//! TLS for the HTTPS listener: the self-signed default certificate (made on first start for
//! `localhost` and `*.localhost`), user certificates placed in the certificates folder as
//! `<domain>.crt` + `<domain>.key` (a wildcard as `*.<domain>` or `_wildcard.<domain>`), an SNI
//! resolver that picks among them, and ALPN for HTTP/2 and HTTP/1.1.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

const DEFAULT_NAME: &str = "default";

#[derive(Debug)]
pub struct CertResolver {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl CertResolver {
    /// Loads every pair in `dir`, creating the default self-signed pair first if missing.
    pub fn load(dir: &Path) -> anyhow::Result<CertResolver> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        ensure_default_cert(dir)?;
        let mut by_name = HashMap::new();
        let mut default = None;
        for entry in std::fs::read_dir(dir)? {
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
                default = Some(key);
            } else {
                tracing::info!(domain = %name, "loaded certificate");
                by_name.insert(name, key);
            }
        }
        let default = default.context("the default certificate could not be loaded")?;
        Ok(CertResolver { by_name, default })
    }

    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni.map(|s| s.to_ascii_lowercase()) else { return self.default.clone() };
        if let Some(k) = self.by_name.get(&name) {
            return k.clone();
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.by_name.get(&format!("*.{parent}")) {
                return k.clone();
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

pub fn server_config(resolver: CertResolver) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
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

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(data)?;
    Ok(())
}

fn load_pair(crt: &Path, key: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let certs = rustls_pemfile::certs(&mut read(crt)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate", crt.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", crt.display());
    let key_der = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .with_context(|| format!("{} is not a PEM private key", key.display()))?
        .with_context(|| format!("{} holds no private key", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| anyhow::anyhow!("unsupported key {}: {e}", key.display()))?;
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
}
