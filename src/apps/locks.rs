//! Serialising admin changes per app. Changes to one app (param and metadata updates, reload,
//! promote, version switches, delete) run one at a time; changes to different apps run
//! concurrently, and reads (`app list`, `version list`, `param list`) take no lock. A create
//! reserves its path (checked, together with the existing apps, under a short lock that is
//! never held across I/O) before it fetches anything, so two creates at conflicting paths
//! cannot both succeed; the reservation ends when the create ends, however it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{App, AppError, Apps, Variant};
use crate::app_path::AppPath;

/// Held while one change to one app runs.
pub type AppLock = tokio::sync::OwnedMutexGuard<()>;

#[derive(Default)]
pub struct AdminLocks {
    /// One async mutex per app id (entries go when the app is deleted).
    apps: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Paths of creates in progress, each with the token of its reservation.
    creating: Mutex<Vec<(u64, AppPath)>>,
    next_token: std::sync::atomic::AtomicU64,
}

/// A path reserved for a create in progress; dropping it frees the path.
pub struct PathReservation<'a> {
    locks: &'a AdminLocks,
    token: u64,
}

impl Drop for PathReservation<'_> {
    fn drop(&mut self) {
        self.locks.creating.lock().unwrap().retain(|(t, _)| *t != self.token);
    }
}

impl AdminLocks {
    pub(super) fn app_mutex(&self, app_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.apps.lock().unwrap().entry(app_id.to_string()).or_default().clone()
    }

    /// Drops the mutex of a deleted app (commands waiting on it find the app gone).
    pub fn forget(&self, app_id: &str) {
        self.apps.lock().unwrap().remove(app_id);
    }
}

impl Apps {
    /// Waits for the app at `path` to be free for a change and returns it as it is then (a
    /// change that ran meanwhile is seen), with which variant `path` names.
    pub(super) async fn lock_app(&self, path: &str) -> Result<(AppLock, Arc<App>, Variant), AppError> {
        loop {
            let (app, _) = self.find(path)?;
            let lock = self.admin.app_mutex(&app.record.id).lock_owned().await;
            let (now, variant) = self.find(path)?;
            if now.record.id == app.record.id {
                return Ok((lock, now, variant));
            }
            // Deleted and created again meanwhile: lock the new one.
        }
    }

    /// Reserves `path` for a create: refused if an app or another create in progress is
    /// at a conflicting path.
    pub(super) fn reserve_path(&self, path: &AppPath) -> Result<PathReservation<'_>, AppError> {
        let dd = &self.config.default_domain;
        let mut creating = self.admin.creating.lock().unwrap();
        if let Some(existing) = self.apps.read().values().find(|a| a.record.path.conflicts_with(path, dd)) {
            return Err(AppError::BadRequest(format!("App already exists at {}", existing.record.path)));
        }
        if let Some((_, other)) = creating.iter().find(|(_, p)| p.conflicts_with(path, dd)) {
            return Err(AppError::BadRequest(format!("An app is being created at {other}")));
        }
        let token = self.admin.next_token.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        creating.push((token, path.clone()));
        Ok(PathReservation { locks: &self.admin, token })
    }
}
