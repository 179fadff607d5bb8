//! The system admin password: generated at first start, printed once, stored only as an
//! argon2 hash in `$BERTH_HOME/auth/admin_password.argon2`. Checked with argon2's verify
//! (constant-time compare of the derived key).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::OsRng;

use crate::config::Home;

/// The admin user's name.
pub const ADMIN_USER: &str = "admin";

/// Length of a generated password (alphanumeric: about 143 bits).
const PASSWORD_LEN: usize = 24;

pub fn hash_file(home: &Home) -> PathBuf {
    home.auth_dir().join("admin_password.argon2")
}

/// A new random password.
pub fn generate() -> String {
    Alphanumeric.sample_string(&mut OsRng, PASSWORD_LEN)
}

/// The argon2id PHC string of `password` with a random salt.
pub fn hash(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

/// Whether `password` matches the PHC string `stored`.
pub fn verify(stored: &str, password: &str) -> bool {
    match PasswordHash::new(stored.trim()) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Writes the hash of `password` (owner-only; replaced atomically).
pub fn store(home: &Home, password: &str) -> anyhow::Result<()> {
    let path = hash_file(home);
    write_private(&path, hash(password)?.as_bytes())
}

/// At server start: when no password is set, makes one, stores its hash and returns it to
/// be printed once.
pub fn ensure(home: &Home) -> anyhow::Result<Option<String>> {
    if hash_file(home).exists() {
        return Ok(None);
    }
    let password = generate();
    store(home, &password)?;
    Ok(Some(password))
}

/// Checks a login against the stored hash (read on each login, so `berth server password`
/// takes effect at once).
pub fn check(home: &Home, user: &str, password: &str) -> bool {
    if user != ADMIN_USER {
        return false;
    }
    match std::fs::read_to_string(hash_file(home)) {
        Ok(stored) => verify(&stored, password),
        Err(e) => {
            tracing::warn!("cannot read the admin password hash: {e}");
            false
        }
    }
}

/// A short fingerprint of the stored hash: which password a session was made with. Cached
/// by the file's modification time, so a request costs one `stat`.
pub fn generation(home: &Home, cache: &std::sync::Mutex<Option<(std::time::SystemTime, String)>>) -> Option<String> {
    use sha2::Digest;
    let path = hash_file(home);
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    let mut cached = cache.lock().expect("password generation cache");
    if let Some((at, generation)) = cached.as_ref() {
        if *at == modified {
            return Some(generation.clone());
        }
    }
    let stored = std::fs::read_to_string(&path).ok()?;
    let generation = hex::encode(&sha2::Sha256::digest(stored.trim().as_bytes())[..8]);
    *cached = Some((modified, generation.clone()));
    Some(generation)
}

/// Writes `data` to `path` with mode 0600 through a temp file and a rename.
pub(super) fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().expect("auth files live in a folder");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(data).and_then(|()| f.sync_all()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_only_the_right_password() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(verify(&h, "correct horse"));
        assert!(!verify(&h, "correct horsE"));
        assert!(!verify("not a hash", "correct horse"));
        assert_ne!(generate(), generate());
        assert_eq!(generate().len(), PASSWORD_LEN);
    }

    #[test]
    fn ensure_creates_once_and_check_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home { root: dir.path().to_path_buf() };
        let first = ensure(&home).unwrap().expect("a new password at first start");
        assert!(ensure(&home).unwrap().is_none(), "printed only once");
        assert!(check(&home, ADMIN_USER, &first));
        assert!(!check(&home, "root", &first));
        store(&home, "new-one").unwrap();
        assert!(!check(&home, ADMIN_USER, &first));
        assert!(check(&home, ADMIN_USER, "new-one"));
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(hash_file(&home)).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
    }
}
