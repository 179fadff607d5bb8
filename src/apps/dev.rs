//! Dev mode (`app create --dev`, as Clace): an app built from a local folder as it is (no
//! snapshot copy), with one deployment (no stage, never promoted, never idle-stopped). A
//! watcher task per dev app follows the folder (`notify`); after a burst of changes settles
//! ([`DEBOUNCE`]) it hashes the build inputs again (after `.dockerignore`, so ignored files and
//! `.git` never rebuild), and when they changed builds the new image while the current
//! container keeps serving, then puts a deployment of the new image in place: the old
//! container is stopped and removed once the new one runs (`retire.rs`). A failed build is
//! put in place too, so the app's page answers 502 with the build output until the next good
//! save; a folder that does not check out (no Containerfile, no port) sets the deployment's
//! `dev_error`, answered as 502 until a good save. No lock is held across the build; the swap
//! takes the app's admin lock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use super::{plan, App, AppError, Apps, ChangeOutcome, ReloadOutcome, Variant};
use crate::source::SourceSpec;
use crate::specs::{SpecKind, SpecRef};
use crate::store::{AppConfig, AppRecord};

/// How long the folder must be quiet after a change before the app is rebuilt (editors write
/// a file in several steps).
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// The running watchers, by app id.
#[derive(Default)]
pub(super) struct Watchers(std::sync::Mutex<HashMap<String, CancellationToken>>);

/// Refuses a dev app with no source or a git source (Clace's messages), and a spec that
/// builds nothing.
pub(super) fn check_source(source_url: &str, spec: &SpecRef) -> Result<(), AppError> {
    match SourceSpec::parse(source_url).map_err(AppError::BadRequest)? {
        SourceSpec::None => Err(AppError::BadRequest("cannot create dev mode app with no source url".into())),
        SourceSpec::Git { .. } => Err(AppError::BadRequest(
            "cannot create dev mode app from git source. For dev mode, manually checkout the git repo and create \
             app from the local path"
                .into(),
        )),
        SourceSpec::Local(_) if spec.kind != SpecKind::Build => Err(AppError::BadRequest(format!(
            "cannot create dev mode app with spec {}: it builds nothing from the source",
            spec.name
        ))),
        SourceSpec::Local(_) => Ok(()),
    }
}

/// Promote, version switch and `--promote` refuse a dev app.
pub(super) fn refuse_promote(app: &App) -> Result<(), AppError> {
    if app.record.prod.config.dev {
        return Err(AppError::BadRequest(format!(
            "app {} is a dev app: dev apps have no stage and are never promoted",
            app.record.path
        )));
    }
    Ok(())
}

/// Whether a file system event may change the app: not mere reads, not inside `.git`.
fn relevant(event: &notify::Event, dir: &Path) -> bool {
    if matches!(event.kind, EventKind::Access(_)) {
        return false;
    }
    event.paths.iter().any(|p| {
        let rel = p.strip_prefix(dir).unwrap_or(p);
        !rel.components().any(|c| c.as_os_str() == ".git")
    })
}

/// Hashes the folder's build inputs as the spec sees them (blocking work on the blocking pool).
async fn prepare(spec: SpecRef, dir: PathBuf, cfg: &AppConfig) -> Result<plan::Prepared, AppError> {
    let (params, args) = (cfg.params.clone(), cfg.build_args.clone());
    tokio::task::spawn_blocking(move || plan::prepare_build(&spec, &dir, &params, &args))
        .await
        .map_err(|e| AppError::Internal(e.into()))?
        .map_err(AppError::BadRequest)
}

impl Apps {
    /// Checks a dev app's folder against the spec and records it (not a copy) as the app's
    /// source, with the image its contents hash to.
    pub(super) async fn prepare_dev(&self, spec: &SpecRef, dir: &Path, cfg: &mut AppConfig) -> Result<(), AppError> {
        let prepared = prepare(spec.clone(), dir.to_path_buf(), cfg).await?;
        cfg.snapshot = Some(dir.display().to_string());
        cfg.image = Some(prepared.image);
        Ok(())
    }

    /// Starts the dev app's folder watcher, a task of the registry cancelled at delete and
    /// shutdown. It first checks the folder once (it may have changed while berth was down).
    pub(super) fn spawn_dev_watcher(&self, record: &AppRecord) {
        let Some(dir) = record.prod.config.snapshot.clone() else { return };
        let cancel = self.cancel.child_token();
        if let Some(old) = self.dev_watchers.0.lock().unwrap().insert(record.id.clone(), cancel.clone()) {
            old.cancel();
        }
        self.tasks.spawn(watch(self.me.clone(), record.id.clone(), PathBuf::from(dir), cancel));
    }

    pub(super) fn stop_dev_watcher(&self, app_id: &str) {
        if let Some(cancel) = self.dev_watchers.0.lock().unwrap().remove(app_id) {
            cancel.cancel();
        }
    }

    /// The new image of a dev app whose folder's build inputs changed (`None`: unchanged).
    async fn dev_changed_image(&self, app: &App) -> Result<Option<String>, AppError> {
        let cfg = &app.record.prod.config;
        let spec = self.catalog.lookup(Some(&app.record.spec)).map_err(|e| AppError::BadRequest(e.to_string()))?;
        let dir = PathBuf::from(cfg.snapshot.clone().unwrap_or_default());
        let prepared = prepare(spec, dir, cfg).await?;
        Ok((cfg.image.as_deref() != Some(prepared.image.as_str())).then_some(prepared.image))
    }

    /// Builds `image` for the app (the current container keeps serving meanwhile). A failed
    /// build is returned as its message.
    async fn dev_build(&self, app: &App, image: &str) -> Result<bool, AppError> {
        let mut cfg = app.record.prod.config.clone();
        cfg.image = Some(image.to_string());
        let dep = self.deploy(&app.record, Variant::Prod, &cfg)?;
        let Some(rt) = dep.runtime() else { return Ok(false) };
        let built = rt.build_image().await.map_err(AppError::BadRequest);
        rt.shutdown().await;
        built
    }

    /// Puts a deployment of `image` in place of the dev app's current one (caller holds the
    /// app's lock) and stores the image in the version it serves. The old container is
    /// stopped and removed once the new one runs.
    async fn dev_swap(&self, app: &App, image: String) -> Result<(), AppError> {
        let mut record = app.record.clone();
        record.prod.config.image = Some(image);
        record.stage = record.prod.clone();
        let dep = self.deploy(&record, Variant::Prod, &record.prod.config)?;
        self.store.replace_version_config(&record.id, record.prod.number, &record.prod.config).await?;
        let updated = Arc::new(App { record, prod: dep.clone(), stage: dep.clone() });
        self.replace(app.prod.clone(), dep, updated);
        Ok(())
    }

    /// One check of the dev app's folder by its watcher: rebuild and swap when it changed.
    async fn dev_reload(&self, app_id: &str) -> Result<(), AppError> {
        let Some(app) = self.apps.read().get(app_id).cloned() else { return Ok(()) };
        let image = match self.dev_changed_image(&app).await {
            Ok(image) => {
                app.prod.dev_error.store(None);
                image
            }
            // The folder does not check out: shown on the app's page until a good save.
            Err(AppError::BadRequest(e)) => {
                tracing::warn!(app = %app.record.path, "dev app cannot be built: {e}");
                app.prod.dev_error.store(Some(Arc::new(e)));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let Some(image) = image else { return Ok(()) };
        tracing::info!(app = %app.record.path, %image, "dev app changed: rebuilding");
        let started = std::time::Instant::now();
        let built = self.dev_build(&app, &image).await;
        let (_lock, now, _) = self.lock_app(&app.record.path.to_string()).await?;
        if now.record.id != app_id {
            return Ok(());
        }
        self.dev_swap(&now, image).await?;
        match built {
            Ok(_) => {
                tracing::info!(app = %now.record.path, ms = started.elapsed().as_millis() as u64, "dev app rebuilt")
            }
            Err(e) => tracing::warn!(app = %now.record.path, "dev app build failed: {e}"),
        }
        Ok(())
    }

    /// `app reload` of a dev app (caller holds its lock): checks the folder now and, when it
    /// changed, builds and swaps.
    pub(super) async fn reload_dev_app(&self, app: Arc<App>, dry_run: bool) -> Result<ReloadOutcome, AppError> {
        let changed = self.dev_changed_image(&app).await?;
        let version = app.record.prod.number;
        let mut outcome =
            ReloadOutcome { app: app.info(), built: false, promoted: false, version, git_commit: None, image: None };
        let Some(image) = changed else {
            outcome.image = app.record.prod.config.image.clone();
            return Ok(outcome);
        };
        outcome.image = Some(image.clone());
        if dry_run {
            return Ok(outcome);
        }
        outcome.built = self.dev_build(&app, &image).await?;
        self.dev_swap(&app, image).await?;
        outcome.app = self.apps.read().get(&app.record.id).map(|a| a.info()).unwrap_or(outcome.app);
        Ok(outcome)
    }

    /// A config change of a dev app (caller holds its lock): stored as a version that prod
    /// (its one deployment) serves at once. `--promote` is refused: dev apps have no stage.
    pub(super) async fn change_dev_app(
        &self,
        app: Arc<App>,
        cfg: AppConfig,
        reason: &str,
        promote: bool,
        dry_run: bool,
    ) -> Result<ChangeOutcome, AppError> {
        if promote {
            refuse_promote(&app)?;
        }
        let dep = self.deploy(&app.record, Variant::Prod, &cfg)?;
        if dry_run {
            let next = self.store.versions(&app.record.id).await?.last().map(|v| v.number + 1).unwrap_or(1);
            return Ok(ChangeOutcome { app: app.info(), version: next, promoted: false });
        }
        let number = self.store.add_version(&app.record.id, &cfg, reason, true).await?;
        let version = self.store.version(&app.record.id, number).await?;
        let mut record = app.record.clone();
        record.previous_prod_version = record.prod.number;
        record.prod = version.clone();
        record.stage = version;
        let updated = Arc::new(App { record, prod: dep.clone(), stage: dep.clone() });
        self.replace(app.prod.clone(), dep, updated.clone());
        Ok(ChangeOutcome { app: updated.info(), version: number, promoted: false })
    }
}

/// The watcher task of one dev app: checks the folder at once, then after every settled
/// burst of relevant changes, until `cancel` (delete, shutdown).
async fn watch(apps: Weak<Apps>, app_id: String, dir: PathBuf, cancel: CancellationToken) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watched = dir.clone();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(event) if relevant(&event, &watched) => {
            let _ = tx.send(());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("dev folder watch error: {e}"),
    });
    let _watcher = match watcher.and_then(|mut w| w.watch(&dir, RecursiveMode::Recursive).map(|()| w)) {
        Ok(w) => w,
        Err(e) => return tracing::error!(app = %app_id, dir = %dir.display(), "cannot watch the dev app's folder: {e}"),
    };
    loop {
        let Some(registry) = apps.upgrade() else { return };
        let check = registry.dev_reload(&app_id);
        tokio::select! {
            r = check => if let Err(e) = r {
                tracing::warn!(app = %app_id, "dev app not rebuilt: {e}");
            },
            _ = cancel.cancelled() => return,
        }
        drop(registry);
        // Wait for a change, then until the folder has been quiet for DEBOUNCE.
        tokio::select! {
            r = rx.recv() => if r.is_none() { return },
            _ = cancel.cancelled() => return,
        }
        loop {
            tokio::select! {
                r = tokio::time::timeout(DEBOUNCE, rx.recv()) => match r {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                },
                _ = cancel.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, CreateKind, ModifyKind};

    use super::*;

    fn event(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn reads_and_git_changes_are_not_relevant() {
        let dir = Path::new("/src/app");
        assert!(relevant(&event(EventKind::Modify(ModifyKind::Any), "/src/app/server.py"), dir));
        assert!(relevant(&event(EventKind::Create(CreateKind::File), "/src/app/sub/new.txt"), dir));
        assert!(!relevant(&event(EventKind::Access(AccessKind::Any), "/src/app/server.py"), dir));
        assert!(!relevant(&event(EventKind::Modify(ModifyKind::Any), "/src/app/.git/index"), dir));
        assert!(!relevant(&event(EventKind::Create(CreateKind::File), "/src/app/.git/objects/ab/cd"), dir));
    }

    #[test]
    fn dev_needs_a_local_folder_and_a_building_spec() {
        let catalog = crate::specs::Catalog::load(&[]).unwrap();
        let container = catalog.lookup(Some("container")).unwrap();
        let image = catalog.lookup(Some("image")).unwrap();
        let msg = |r: Result<(), AppError>| r.unwrap_err().to_string();
        assert_eq!(msg(check_source("-", &image)), "cannot create dev mode app with no source url");
        assert!(msg(check_source("https://github.com/org/repo", &container))
            .starts_with("cannot create dev mode app from git source"));
        assert!(msg(check_source("github.com/org/repo/app", &container))
            .starts_with("cannot create dev mode app from git source"));
        assert!(msg(check_source("/tmp/app", &image)).contains("builds nothing"));
        assert!(check_source("/tmp/app", &container).is_ok());
    }
}
