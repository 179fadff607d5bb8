//! Creating and deleting apps. Create checks everything before anything is stored (path,
//! spec, params, settings, options, conflicts, the source, the image) and leaves nothing
//! behind on any error.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use super::{plan, remove_dir_logged, settings, AppError, Apps, Variant};
use crate::api::{AppInfo, CreateAppRequest};
use crate::app_path::AppPath;
use crate::engine;
use crate::ids;
use crate::source::{self, SourceSpec};
use crate::specs::SpecKind;
use crate::store::{now_secs, AppConfig, AppRecord, Version};

impl Apps {
    /// Creates an app. `cancel` stops the source fetch (the admin client went away); once the
    /// source is fetched, the create runs to its end.
    pub async fn create(&self, req: CreateAppRequest, cancel: CancellationToken) -> Result<AppInfo, AppError> {
        let (path, spec, source) = self.check_create(&req).await?;
        // Held until the app is published (or the create fails or is cancelled).
        let _reserved = self.reserve_path(&path)?;
        let (record, snapshot) = self.new_record(&req, path, &spec, source, "create", &cancel).await?;
        let result = self.finish_create(record, req.dry_run).await;
        if result.is_err() || req.dry_run {
            if let Some(dir) = snapshot {
                remove_dir_logged(&dir);
            }
        }
        result
    }

    /// Makes a new app's record from a checked create request: its id, its source fetched (a
    /// dev app's folder is prepared in place: nothing is copied, and nothing of the user's
    /// folder is ever removed) and version 1 as prod and stage. Returns the record and the
    /// snapshot folder made, if any, which the caller removes if the app is not made.
    pub(super) async fn new_record(
        &self,
        req: &CreateAppRequest,
        path: AppPath,
        spec: &crate::specs::SpecRef,
        source: SourceSpec,
        reason: &str,
        cancel: &CancellationToken,
    ) -> Result<(AppRecord, Option<PathBuf>), AppError> {
        let mut config = config_of(req);
        let id = format!("app_{}_{}", if req.dev { "dev" } else { "prd" }, ids::random_id(20));
        let snapshot = match source {
            SourceSpec::None => None,
            SourceSpec::Local(dir) if req.dev => {
                self.prepare_dev(spec, &dir, &mut config).await?;
                None
            }
            source => Some(self.fetch_and_prepare(&id, &spec.name, &mut config, &source, cancel).await?),
        };
        let v1 = Version { number: 1, config, reason: reason.into(), created_at: now_secs() };
        let record = AppRecord {
            id,
            path,
            source_url: req.source_url.trim().to_string(),
            spec: spec.name.clone(),
            created_at: v1.created_at,
            prod: v1.clone(),
            stage: v1,
            previous_prod_version: 0,
        };
        Ok((record, snapshot))
    }

    /// Checks a create request (path, spec, source, and [`Apps::check_config`]) without
    /// changing anything; returns the parsed path, spec and source.
    pub(super) async fn check_create(
        &self,
        req: &CreateAppRequest,
    ) -> Result<(AppPath, crate::specs::SpecRef, SourceSpec), AppError> {
        let bad = |e: &dyn std::fmt::Display| AppError::BadRequest(e.to_string());
        let path = AppPath::parse(&req.path, &self.config.default_domain).map_err(|e| bad(&e))?;
        let source_url = req.source_url.trim().to_string();
        // A local source's own params.star counts from the first check (a git source's once fetched).
        let local = Some(std::path::Path::new(&source_url)).filter(|p| p.is_absolute() && p.is_dir());
        let spec = self.catalog.lookup_for(req.spec.as_deref(), local).map_err(|e| bad(&e))?;
        if req.dev {
            super::dev::check_source(&source_url, &spec)?;
        }
        spec.check_source(&source_url).map_err(|e| bad(&e))?;
        let source = SourceSpec::parse(&source_url).map_err(AppError::BadRequest)?;
        // A git source may bring its own params.star: its params are checked once it is fetched.
        let params_known = !matches!(source, SourceSpec::Git { .. });
        self.check_config(&spec, &config_of(req), params_known).await?;
        Ok((path, spec, source))
    }

    /// Checks an app configuration against its spec: param names and values, branch and
    /// commit, settings, container options, build args, secret templates. `params_known`:
    /// false while a git source that may bring its own `params.star` is not fetched yet (its
    /// param values are then checked once it is).
    pub(super) async fn check_config(
        &self,
        spec: &crate::specs::Spec,
        cfg: &AppConfig,
        params_known: bool,
    ) -> Result<(), AppError> {
        let bad = |e: &dyn std::fmt::Display| AppError::BadRequest(e.to_string());
        for key in cfg.params.keys() {
            crate::specs::check_param_key(key).map_err(|e| bad(&e))?;
        }
        if params_known {
            spec.check_params(&cfg.params).map_err(|e| bad(&e))?;
        }
        source::check_ref("branch", cfg.git_branch.as_deref()).map_err(AppError::BadRequest)?;
        source::check_ref("commit", cfg.git_commit.as_deref()).map_err(AppError::BadRequest)?;
        settings::resolve(&self.config.container, spec, &cfg.app_config).map_err(AppError::BadRequest)?;
        engine::options::parse(&cfg.container_options, self.config.container.allow_host_access)
            .map_err(AppError::BadRequest)?;
        if spec.kind != SpecKind::Build && !cfg.build_args.is_empty() {
            return Err(AppError::BadRequest(format!("spec {} builds nothing: --carg is not allowed", spec.name)));
        }
        self.check_secrets(cfg.params.values().chain(cfg.build_args.values())).await
    }

    pub(super) async fn finish_create(&self, record: AppRecord, dry_run: bool) -> Result<AppInfo, AppError> {
        let app = self.assemble(record.clone())?;
        if let Some(rt) = app.prod.runtime() {
            if let plan::ImageSource::Existing(image) = &rt.plan().image {
                self.engine.ensure_image(image).await?;
            }
        }
        if dry_run {
            return Ok(app.info());
        }
        self.store.insert_app(&record).await?;
        self.spawn_reaper(&app.prod);
        self.spawn_reaper(&app.stage);
        let info = app.info();
        self.publish(app);
        if record.prod.config.dev {
            self.spawn_dev_watcher(&record);
        }
        tracing::info!(app = %record.path, id = %record.id, spec = %record.spec, "app created");
        Ok(info)
    }

    /// Checks that every secret template in `values` parses and resolves (the value is
    /// dropped at once), so a wrong provider or key is reported when the value is set.
    pub(super) async fn check_secrets(&self, values: impl Iterator<Item = &String>) -> Result<(), AppError> {
        for v in values {
            self.secrets.resolve(v).await.map_err(|e| AppError::BadRequest(e.to_string()))?;
        }
        Ok(())
    }

    /// Fetches the source into a new snapshot of the app, checks it against the spec and
    /// records the snapshot, commit and image name in `config`. Returns the snapshot folder.
    pub(super) async fn fetch_and_prepare(
        &self,
        app_id: &str,
        spec: &str,
        config: &mut AppConfig,
        source: &SourceSpec,
        cancel: &CancellationToken,
    ) -> Result<PathBuf, AppError> {
        let root = self.home.sources_dir().join(app_id);
        let remove_empty_root = || {
            if std::fs::read_dir(&root).map(|mut d| d.next().is_none()).unwrap_or(false) {
                let _ = std::fs::remove_dir(&root);
            }
        };
        let timeout = std::time::Duration::from_secs(self.config.source.fetch_timeout_secs);
        let (branch, commit) = (config.git_branch.as_deref(), config.git_commit.as_deref());
        // On error the fetch has removed its work and an empty `root`.
        let snap = source::fetch(source, branch, commit, &root, source::FetchLimits { timeout, cancel })
            .await
            .map_err(|e| AppError::BadRequest(format!("{e:#}")))?;
        let (dir, params, args) = (snap.dir.clone(), config.params.clone(), config.build_args.clone());
        let catalog = self.catalog.clone();
        let spec = spec.to_string();
        let prepared = tokio::task::spawn_blocking(move || {
            // The source's own params.star, if any, replaces the spec's params.
            let spec = catalog.lookup_for(Some(&spec), Some(&dir)).map_err(|e| e.to_string())?;
            spec.check_params(&params).map_err(|e| e.to_string())?;
            plan::prepare_build(&spec, &dir, &params, &args)
        })
        .await
        .map_err(|e| AppError::Internal(e.into()))?;
        match prepared {
            Ok(p) => {
                config.snapshot = Some(snap.dir.display().to_string());
                config.source_commit = snap.commit;
                config.image = Some(p.image);
                Ok(snap.dir)
            }
            Err(e) => {
                remove_dir_logged(&snap.dir);
                remove_empty_root();
                Err(AppError::BadRequest(e))
            }
        }
    }

    /// Deletes the app at exactly `path` (prod and stage) and removes its containers, images
    /// no other app uses, and source snapshots.
    pub async fn delete(&self, path: &str, dry_run: bool) -> Result<AppInfo, AppError> {
        let (_lock, app, variant) = self.lock_app(path).await?;
        if variant == Variant::Stage {
            return Err(AppError::BadRequest(format!(
                "delete the app at {} (its stage goes with it)",
                app.record.path
            )));
        }
        let info = app.info();
        if dry_run {
            return Ok(info);
        }
        self.stop_dev_watcher(&app.record.id);
        self.store.delete_app(&app.record.id).await?;
        self.apps.write().remove(&app.record.id);
        self.rebuild_routes();
        let mut images = Vec::new();
        for dep in [&app.prod, &app.stage] {
            if let Some(rt) = dep.runtime() {
                rt.shutdown().await;
                if let plan::ImageSource::Build(b) = &rt.plan().image {
                    images.push(b.image.clone());
                }
            }
        }
        let filter = [(engine::LABEL_INSTANCE, self.instance.as_str()), (engine::LABEL_APP_ID, app.record.id.as_str())];
        for c in self.engine.list_labelled(&filter).await.map_err(anyhow::Error::from)? {
            self.engine.remove(&c.id).await.map_err(anyhow::Error::from)?;
        }
        for image in images {
            if !self.image_in_use(&image) {
                let _ = self.engine.remove_image(&image).await;
            }
        }
        remove_dir_logged(&self.home.sources_dir().join(&app.record.id));
        let _ = std::fs::remove_file(self.builder.log_file(&app.record.id));
        self.builder.forget(&app.record.id);
        self.admin.forget(&app.record.id);
        tracing::info!(app = %app.record.path, "app deleted");
        Ok(info)
    }
}

/// The first version's configuration a create request asks for.
pub(super) fn config_of(req: &CreateAppRequest) -> AppConfig {
    AppConfig {
        params: req.params.clone(),
        app_config: req.app_config.clone(),
        build_args: req.build_args.clone(),
        container_options: req.container_options.clone(),
        git_branch: req.git_branch.clone(),
        git_commit: req.git_commit.clone(),
        dev: req.dev,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use crate::api::CreateAppRequest;
    use crate::apps::Apps;
    use crate::config::{Config, Home};
    use crate::engine::fake::FakeEngine;
    use crate::store::Store;

    #[tokio::test]
    async fn delete_forgets_the_apps_build_status() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home { root: dir.path().to_path_buf() };
        let store = Store::open(&dir.path().join("berth.db")).await.unwrap();
        let engine = FakeEngine::new().engine();
        let apps = Apps::load(Arc::new(Config::default()), home, "inst".into(), store, engine).await.unwrap();
        let request = CreateAppRequest {
            source_url: "-".into(),
            path: "/x".into(),
            spec: Some("image".into()),
            params: BTreeMap::from([("image".into(), "nginx".into()), ("port".into(), "80".into())]),
            app_config: BTreeMap::new(),
            build_args: BTreeMap::new(),
            container_options: BTreeMap::new(),
            git_branch: None,
            git_commit: None,
            approve: true,
            dry_run: false,
            dev: false,
        };
        let app = apps.create(request, CancellationToken::new()).await.unwrap();
        let _follower = apps.builder.build_log(&app.id);
        assert!(apps.builder.has_status(&app.id), "the build log's status is kept while the app exists");
        apps.delete("/x", false).await.unwrap();
        assert!(!apps.builder.has_status(&app.id), "the deleted app's build status stayed");
        apps.shutdown().await;
    }
}
