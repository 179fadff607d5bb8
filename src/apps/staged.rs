//! Staged changes: every change (params, build args, container options, app config, a
//! reload) becomes a new version served by the app's stage; promote makes prod serve it.
//! Prod moves only after its new container has started and passed its health check, so a
//! version that cannot start never takes traffic. Also version switch and revert.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::retire::retire;
use super::{plan, settings, App, AppError, Apps, Deployment, Variant};
use crate::api::{AppInfo, VersionInfo};
use crate::engine;
use crate::source::{self, SourceSpec};
use crate::specs::{check_param_key, SpecKind};
use crate::store::{AppConfig, Version};

/// One staged change.
#[derive(Debug, Clone)]
pub enum ConfigChange {
    /// A param; the value `-` deletes it.
    Param {
        key: String,
        value: String,
    },
    /// Build args (`carg`), container options (`copt`) or app config (`conf`); `-` deletes.
    BuildArgs(Vec<(String, String)>),
    Options(Vec<(String, String)>),
    AppConfig(Vec<(String, String)>),
}

impl ConfigChange {
    fn describe(&self) -> String {
        match self {
            ConfigChange::Param { key, .. } => format!("param update {key}"),
            ConfigChange::BuildArgs(_) => "build args update".into(),
            ConfigChange::Options(_) => "container options update".into(),
            ConfigChange::AppConfig(_) => "app config update".into(),
        }
    }
}

/// What a staged change, promote or switch did.
pub struct ChangeOutcome {
    pub app: AppInfo,
    /// The version stage (or, for switches, prod) now serves; for a dry run, the one it would.
    pub version: i64,
    pub promoted: bool,
}

/// What `app reload` did.
pub struct ReloadOutcome {
    pub app: AppInfo,
    pub built: bool,
    pub promoted: bool,
    /// The new stage version (for a dry run: the one it would be), its commit and image.
    pub version: i64,
    pub git_commit: Option<String>,
    pub image: Option<String>,
}

/// Which version `version switch` moves prod to.
#[derive(Debug, Clone, Copy)]
pub enum VersionTarget {
    Number(i64),
    Previous,
    Next,
    /// The version prod served before its last change.
    Revert,
}

fn apply(map: &mut std::collections::BTreeMap<String, String>, entries: &[(String, String)], strip_quotes: bool) {
    for (k, v) in entries {
        let v = v.trim();
        let v = if strip_quotes { v.trim_matches(|c| c == '"' || c == '\'') } else { v };
        if v == "-" {
            map.remove(k.trim());
        } else {
            map.insert(k.trim().to_string(), v.to_string());
        }
    }
}

impl Apps {
    /// Applies a change to the app's stage as a new version; with `promote`, prod follows.
    pub async fn update(
        &self,
        path: &str,
        change: ConfigChange,
        promote: bool,
        dry_run: bool,
    ) -> Result<ChangeOutcome, AppError> {
        let (_lock, app, _) = self.lock_app(path).await?;
        let mut cfg = app.record.stage.config.clone();
        let spec = self.spec_for(&app.record, &cfg)?;
        match &change {
            ConfigChange::Param { key, value } => {
                if value.trim() != "-" {
                    // Deleting a badly named param (stored before names were checked) is fine.
                    check_param_key(key.trim()).map_err(|e| AppError::BadRequest(e.to_string()))?;
                }
                apply(&mut cfg.params, &[(key.clone(), value.clone())], true);
                spec.check_params(&cfg.params).map_err(|e| AppError::BadRequest(e.to_string()))?;
                self.check_secrets(cfg.params.get(key.trim()).into_iter()).await?;
            }
            ConfigChange::BuildArgs(entries) => {
                if spec.kind != SpecKind::Build {
                    return Err(AppError::BadRequest(format!(
                        "spec {} builds nothing: build args do not apply",
                        spec.name
                    )));
                }
                apply(&mut cfg.build_args, entries, true);
                self.check_secrets(cfg.build_args.values()).await?;
            }
            ConfigChange::Options(entries) => {
                apply(&mut cfg.container_options, entries, true);
                engine::options::parse(&cfg.container_options, self.config.container.allow_host_access)
                    .map_err(AppError::BadRequest)?;
            }
            ConfigChange::AppConfig(entries) => {
                apply(&mut cfg.app_config, entries, false);
                settings::resolve(&self.config.container, &spec, &cfg.app_config).map_err(AppError::BadRequest)?;
            }
        }
        self.refresh_image(&spec, &mut cfg).await?;
        self.stage_version(app, cfg, &change.describe(), promote, dry_run).await
    }

    /// For built apps: the image name of `cfg`'s build inputs, from its snapshot (params such
    /// as the port, build args and spec defaults can change them).
    pub(super) async fn refresh_image(
        &self,
        spec: &crate::specs::SpecRef,
        cfg: &mut AppConfig,
    ) -> Result<(), AppError> {
        if spec.kind == SpecKind::Build {
            let (spec, dir) = (spec.clone(), cfg.snapshot.clone().unwrap_or_default());
            let (params, args) = (cfg.params.clone(), cfg.build_args.clone());
            let prepared =
                tokio::task::spawn_blocking(move || plan::prepare_build(&spec, dir.as_ref(), &params, &args))
                    .await
                    .map_err(|e| AppError::Internal(e.into()))?
                    .map_err(AppError::BadRequest)?;
            cfg.image = Some(prepared.image);
        }
        Ok(())
    }

    /// Stores `cfg` as the stage's new version and puts it in service (and prod, if
    /// `promote`). Checks the whole configuration first.
    pub(super) async fn stage_version(
        &self,
        app: Arc<App>,
        cfg: AppConfig,
        reason: &str,
        promote: bool,
        dry_run: bool,
    ) -> Result<ChangeOutcome, AppError> {
        if app.record.prod.config.dev {
            return self.change_dev_app(app, cfg, reason, promote, dry_run).await;
        }
        let stage = self.deploy(&app.record, Variant::Stage, &cfg)?;
        if dry_run {
            let next = self.store.versions(&app.record.id).await?.last().map(|v| v.number + 1).unwrap_or(1);
            return Ok(ChangeOutcome { app: app.info(), version: next, promoted: promote });
        }
        let number = self.store.add_version(&app.record.id, &cfg, reason, false).await?;
        let version = self.store.version(&app.record.id, number).await?;
        let mut record = app.record.clone();
        record.stage = version;
        let updated = Arc::new(App { record, prod: app.prod.clone(), stage: stage.clone() });
        self.replace(app.stage.clone(), stage, updated.clone());
        tracing::info!(app = %updated.record.path, version = number, reason, "staged");
        let promoted = if promote { self.promote_locked(updated.clone()).await? } else { false };
        let current = self.apps.read().get(&updated.record.id).cloned().unwrap_or(updated);
        Ok(ChangeOutcome { app: current.info(), version: number, promoted })
    }

    /// Publishes `updated` (which holds `new` in place of `old`) and retires `old`.
    pub(super) fn replace(&self, old: Arc<Deployment>, new: Arc<Deployment>, updated: Arc<App>) {
        self.spawn_reaper(&new);
        self.publish(updated);
        self.tasks.spawn(retire(self.engine.clone(), old, new, self.apps.clone()));
    }

    /// Makes prod serve the stage's version.
    pub async fn promote(&self, path: &str, dry_run: bool) -> Result<ChangeOutcome, AppError> {
        let (_lock, app, _) = self.lock_app(path).await?;
        super::dev::refuse_promote(&app)?;
        let version = app.record.stage.number;
        if dry_run {
            let promoted = app.record.prod.number != version;
            return Ok(ChangeOutcome { app: app.info(), version, promoted });
        }
        let promoted = self.promote_locked(app.clone()).await?;
        let current = self.apps.read().get(&app.record.id).cloned().unwrap_or(app);
        Ok(ChangeOutcome { app: current.info(), version, promoted })
    }

    pub(super) async fn promote_locked(&self, app: Arc<App>) -> Result<bool, AppError> {
        if app.record.prod.number == app.record.stage.number {
            return Ok(false);
        }
        let stage = app.record.stage.clone();
        self.switch_prod_locked(app, stage).await?;
        Ok(true)
    }

    /// Moves prod to `version`: the new container starts and passes its health check before
    /// traffic moves; the old one finishes its requests and is removed. If the new one cannot
    /// start, prod keeps serving what it served.
    async fn switch_prod_locked(&self, app: Arc<App>, version: Version) -> Result<(), AppError> {
        let number = version.number;
        let prod = self.deploy(&app.record, Variant::Prod, &version.config)?;
        let _starting = prod.runtime().map(|rt| self.apps.mark_starting(rt.container_name()));
        if let Some(rt) = prod.runtime() {
            if let Err(e) = rt.ensure_running(true).await {
                rt.shutdown().await;
                let old_name = app.prod.runtime().map(|o| o.container_name());
                if let (Some(id), false) = (rt.container_id(), old_name == Some(rt.container_name())) {
                    let _ = self.engine.remove(&id).await;
                }
                return Err(AppError::BadRequest(format!(
                    "version {number} did not start, prod keeps serving version {}: {e}",
                    app.record.prod.number
                )));
            }
        }
        self.store.set_prod_version(&app.record.id, number).await?;
        let mut record = app.record.clone();
        record.previous_prod_version = record.prod.number;
        record.prod = version;
        tracing::info!(app = %record.path, from = record.previous_prod_version, to = number, "prod switched");
        let updated = Arc::new(App { record, prod: prod.clone(), stage: app.stage.clone() });
        self.replace(app.prod.clone(), prod, updated);
        Ok(())
    }

    /// `version switch` and `version revert`: prod moves to another stored version.
    pub async fn switch_version(
        &self,
        path: &str,
        target: VersionTarget,
        dry_run: bool,
    ) -> Result<(i64, ChangeOutcome), AppError> {
        let (_lock, app, _) = self.lock_app(path).await?;
        super::dev::refuse_promote(&app)?;
        let current = app.record.prod.number;
        let numbers: Vec<i64> = self.store.versions(&app.record.id).await?.iter().map(|v| v.number).collect();
        let number = match target {
            VersionTarget::Number(n) if numbers.contains(&n) => n,
            VersionTarget::Number(n) => return Err(AppError::BadRequest(format!("version {n} not found"))),
            VersionTarget::Previous => numbers
                .iter()
                .rev()
                .find(|n| **n < current)
                .copied()
                .ok_or_else(|| AppError::BadRequest("no previous version found".into()))?,
            VersionTarget::Next => numbers
                .iter()
                .find(|n| **n > current)
                .copied()
                .ok_or_else(|| AppError::BadRequest("no next version found".into()))?,
            VersionTarget::Revert if app.record.previous_prod_version > 0 => app.record.previous_prod_version,
            VersionTarget::Revert => return Err(AppError::BadRequest("no version found to revert to".into())),
        };
        if dry_run || number == current {
            return Ok((current, ChangeOutcome { app: app.info(), version: number, promoted: false }));
        }
        let version = self.store.version(&app.record.id, number).await?;
        self.switch_prod_locked(app.clone(), version).await?;
        let now = self.apps.read().get(&app.record.id).cloned().unwrap_or(app);
        Ok((current, ChangeOutcome { app: now.info(), version: number, promoted: true }))
    }

    /// Every version of the app, with which one prod and stage serve.
    pub async fn versions(&self, path: &str) -> Result<Vec<VersionInfo>, AppError> {
        let (app, _) = self.find(path)?;
        Ok(self
            .store
            .versions(&app.record.id)
            .await?
            .into_iter()
            .map(|v| VersionInfo {
                version: v.number,
                prod: v.number == app.record.prod.number,
                stage: v.number == app.record.stage.number,
                reason: v.reason,
                created_at: v.created_at,
                git_commit: v.config.source_commit.clone(),
                params: v.config.params,
                build_args: v.config.build_args,
                container_options: v.config.container_options,
            })
            .collect())
    }

    /// The app's params on stage and on prod (templates as set; secrets are never resolved
    /// here).
    pub fn params(&self, path: &str) -> Result<(AppInfo, AppConfig, AppConfig), AppError> {
        let (app, _) = self.find(path)?;
        Ok((app.info(), app.record.stage.config.clone(), app.record.prod.config.clone()))
    }

    /// Fetches the app's source again into a new stage version and builds it. A failed or
    /// cancelled (`cancel`) fetch or a failed build changes nothing. With `promote`, prod
    /// follows once the new version runs.
    pub async fn reload(
        &self,
        path: &str,
        (branch, commit): (Option<String>, Option<String>),
        (promote, dry_run): (bool, bool),
        cancel: CancellationToken,
    ) -> Result<ReloadOutcome, AppError> {
        let (_lock, app, _) = self.lock_app(path).await?;
        if app.record.prod.config.dev {
            if promote {
                super::dev::refuse_promote(&app)?;
            }
            return self.reload_dev_app(app, dry_run).await;
        }
        let source = SourceSpec::parse(&app.record.source_url).map_err(AppError::BadRequest)?;
        if source == SourceSpec::None {
            return Err(AppError::BadRequest(format!("app {} has no source to reload", app.record.path)));
        }
        let mut cfg = app.record.stage.config.clone();
        source::check_ref("branch", branch.as_deref()).map_err(AppError::BadRequest)?;
        source::check_ref("commit", commit.as_deref()).map_err(AppError::BadRequest)?;
        if branch.is_some() {
            cfg.git_branch = branch;
            cfg.git_commit = None;
        }
        if commit.is_some() {
            cfg.git_commit = commit;
        }
        let snapshot = self.fetch_and_prepare(&app.record.id, &app.record.spec, &mut cfg, &source, &cancel).await?;
        if dry_run {
            // Fetched and checked; report what would be built, keep nothing.
            super::remove_dir_logged(&snapshot);
            let version = self.store.versions(&app.record.id).await?.last().map(|v| v.number + 1).unwrap_or(1);
            let (git_commit, image) = (cfg.source_commit, cfg.image);
            return Ok(ReloadOutcome { app: app.info(), built: false, promoted: promote, version, git_commit, image });
        }
        let built = match self.deploy(&app.record, Variant::Stage, &cfg) {
            Ok(dep) => match dep.runtime() {
                Some(rt) => rt.build_image().await.map_err(AppError::BadRequest),
                None => Ok(false),
            },
            Err(e) => Err(e),
        };
        let built = match built {
            Ok(built) => built,
            Err(e) => {
                super::remove_dir_logged(&snapshot);
                return Err(e);
            }
        };
        let (git_commit, image) = (cfg.source_commit.clone(), cfg.image.clone());
        let outcome = self.stage_version(app, cfg, "reload", promote, false).await?;
        Ok(ReloadOutcome {
            app: outcome.app,
            built,
            promoted: outcome.promoted,
            version: outcome.version,
            git_commit,
            image,
        })
    }
}
