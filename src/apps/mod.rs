//! The app registry and each app's runtime. Owns the set of apps, the route table built from
//! them, create/delete/list, adoption of containers at boot and the engine event watcher.
//! Never builds tar files or writes SQL itself: it calls `store` and `engine`.

pub mod activity;
pub mod builder;
mod events;
pub mod health;
pub mod plan;
pub mod reaper;
pub mod runtime;
pub mod settings;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use futures_util::Stream;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{AppInfo, CreateAppRequest};
use crate::app_path::{AppGlob, AppPath};
use crate::config::{Config, Home};
use crate::engine::{self, Engine, EngineError};
use crate::routing::RouteTable;
use crate::source::{self, SourceSpec};
use crate::specs::{Catalog, SpecKind, UrlPlan};
use crate::store::{AppRecord, Store};
use builder::Builder;
use plan::{Backend, ImageSource};
use runtime::ContainerRuntime;

/// One app: what the user asked for and what serves it.
pub struct App {
    pub record: AppRecord,
    pub backend: AppBackend,
}

pub enum AppBackend {
    Container(Arc<ContainerRuntime>),
    Url(UrlPlan),
}

impl App {
    pub fn preserve_host(&self) -> bool {
        match &self.backend {
            AppBackend::Container(rt) => rt.plan().preserve_host,
            AppBackend::Url(u) => u.preserve_host,
        }
    }

    fn runtime(&self) -> Option<&Arc<ContainerRuntime>> {
        match &self.backend {
            AppBackend::Container(rt) => Some(rt),
            AppBackend::Url(_) => None,
        }
    }

    pub fn info(&self) -> AppInfo {
        let r = &self.record;
        AppInfo {
            id: r.id.clone(),
            domain: r.path.domain.clone(),
            path: r.path.path.clone(),
            app_path: r.path.to_string(),
            spec: r.spec.clone(),
            source_url: r.source_url.clone(),
            params: r.params.clone(),
            app_config: r.app_config.clone(),
            state: match &self.backend {
                AppBackend::Container(rt) => rt.state().name().to_string(),
                AppBackend::Url(_) => "-".to_string(),
            },
            created_at: r.created_at,
            git_branch: r.git_branch.clone(),
            git_commit: r.source_commit.clone(),
            build_args: r.build_args.clone(),
            image: match &self.backend {
                AppBackend::Container(rt) => Some(rt.plan().image.name().to_string()),
                AppBackend::Url(_) => None,
            },
        }
    }
}

/// Errors of admin operations; the admin API maps them to status codes.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<EngineError> for AppError {
    fn from(e: EngineError) -> Self {
        AppError::BadRequest(e.to_string())
    }
}

pub struct Apps {
    config: Arc<Config>,
    home: Home,
    instance: String,
    store: Store,
    engine: Engine,
    catalog: Catalog,
    builder: Arc<Builder>,
    apps: RwLock<HashMap<String, Arc<App>>>,
    routes: ArcSwap<RouteTable<App>>,
    /// Serialises create and delete so checks and writes see the same app set.
    admin: tokio::sync::Mutex<()>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Apps {
    /// Loads every stored app, adopts berth's containers (removing those of apps that no
    /// longer exist and duplicates) and starts the engine event watcher.
    pub async fn load(
        config: Arc<Config>,
        home: Home,
        instance: String,
        store: Store,
        engine: Engine,
    ) -> anyhow::Result<Arc<Apps>> {
        let spec_dirs: Vec<std::path::PathBuf> = config.spec_dirs.iter().map(std::path::PathBuf::from).collect();
        let catalog = Catalog::load(&spec_dirs)?;
        let builder = Arc::new(Builder::new(
            engine.clone(),
            instance.clone(),
            home.root.join("logs"),
            std::time::Duration::from_secs(config.container.build_timeout_secs),
        ));
        let apps = Arc::new(Apps {
            routes: ArcSwap::from_pointee(RouteTable::empty(&config.default_domain)),
            config,
            home,
            instance,
            store,
            engine,
            catalog,
            builder,
            apps: RwLock::new(HashMap::new()),
            admin: tokio::sync::Mutex::new(()),
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
        });
        for record in apps.store.list_apps().await? {
            match apps.build_app(record.clone()) {
                Ok(app) => {
                    apps.apps.write().unwrap().insert(record.id.clone(), app);
                }
                Err(e) => tracing::error!(app = %record.path, "app cannot be served: {e}"),
            }
        }
        apps.adopt_containers().await?;
        for app in apps.apps.read().unwrap().values() {
            apps.spawn_reaper(app);
        }
        apps.rebuild_routes();
        events::spawn_watcher(&apps);
        Ok(apps)
    }

    pub fn routes(&self) -> arc_swap::Guard<Arc<RouteTable<App>>> {
        self.routes.load()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    fn build_app(&self, record: AppRecord) -> Result<Arc<App>, AppError> {
        let spec = self.catalog.lookup(Some(&record.spec)).map_err(|e| AppError::BadRequest(e.to_string()))?;
        let backend = match plan::backend(&spec, &record).map_err(AppError::BadRequest)? {
            Backend::Url(plan) => AppBackend::Url(plan),
            Backend::Container(plan) => {
                let mut settings = settings::resolve(&self.config.container, &spec, &record.app_config)
                    .map_err(AppError::BadRequest)?;
                if !plan.strip_app && record.path.path != "/" {
                    settings.health_url = format!("{}{}", record.path.path, settings.health_url);
                }
                AppBackend::Container(ContainerRuntime::new(
                    record.id.clone(),
                    self.instance.clone(),
                    plan,
                    settings,
                    self.engine.clone(),
                    self.builder.clone(),
                ))
            }
        };
        Ok(Arc::new(App { record, backend }))
    }

    fn spawn_reaper(&self, app: &Arc<App>) {
        if let AppBackend::Container(rt) = &app.backend {
            rt.tasks.spawn(reaper::run(rt.clone()));
        }
    }

    fn rebuild_routes(&self) {
        let apps = self.apps.read().unwrap();
        let table = RouteTable::build(
            &self.config.default_domain,
            apps.values().map(|a| (a.record.path.domain.clone(), a.record.path.path.clone(), a.clone())),
        );
        self.routes.store(Arc::new(table));
    }

    fn runtime_by_container(&self, app_id: &str) -> Option<Arc<ContainerRuntime>> {
        match &self.apps.read().unwrap().get(app_id)?.backend {
            AppBackend::Container(rt) => Some(rt.clone()),
            AppBackend::Url(_) => None,
        }
    }

    fn container_runtimes(&self) -> Vec<Arc<ContainerRuntime>> {
        self.apps
            .read()
            .unwrap()
            .values()
            .filter_map(|a| match &a.backend {
                AppBackend::Container(rt) => Some(rt.clone()),
                AppBackend::Url(_) => None,
            })
            .collect()
    }

    /// Boot reconciliation: one container per app at most, matching its current config.
    async fn adopt_containers(&self) -> anyhow::Result<()> {
        let mut found = self.engine.list_labelled(&[(engine::LABEL_INSTANCE, &self.instance)]).await?;
        // Running ones first, so a running container wins over a stopped duplicate.
        found.sort_by_key(|c| !c.running);
        let mut adopted: HashMap<String, String> = HashMap::new();
        for c in found {
            let app_id = c.labels.get(engine::LABEL_APP_ID).cloned().unwrap_or_default();
            let keep = match self.runtime_by_container(&app_id) {
                Some(rt) if c.name == rt.container_name() && !adopted.contains_key(&app_id) => {
                    rt.adopt(&c.id, c.running).await;
                    adopted.insert(app_id.clone(), c.id.clone());
                    true
                }
                _ => false,
            };
            if !keep {
                tracing::info!(container = %c.name, "removing container of a deleted or changed app");
                if let Err(e) = self.engine.remove(&c.id).await {
                    tracing::warn!(container = %c.name, "removal failed: {e}");
                }
            }
        }
        Ok(())
    }

    pub fn list(&self, glob: Option<&str>) -> Result<Vec<AppInfo>, AppError> {
        let glob = AppGlob::parse(glob.unwrap_or("")).map_err(AppError::BadRequest)?;
        let mut list: Vec<AppInfo> =
            self.apps.read().unwrap().values().filter(|a| glob.matches(&a.record.path)).map(|a| a.info()).collect();
        list.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(list)
    }

    /// Validates everything first (path, spec, params, settings, conflicts, the source, the
    /// image), then stores the app and publishes the new route table. Nothing is left behind on
    /// any error.
    pub async fn create(&self, req: CreateAppRequest) -> Result<AppInfo, AppError> {
        let bad = |e: &dyn std::fmt::Display| AppError::BadRequest(e.to_string());
        let path = AppPath::parse(&req.path, &self.config.default_domain).map_err(|e| bad(&e))?;
        let spec = self.catalog.lookup(req.spec.as_deref()).map_err(|e| bad(&e))?;
        let source_url = req.source_url.trim().to_string();
        spec.check_source(&source_url).map_err(|e| bad(&e))?;
        let source = SourceSpec::parse(&source_url).map_err(AppError::BadRequest)?;
        spec.check_params(&req.params).map_err(|e| bad(&e))?;
        settings::resolve(&self.config.container, &spec, &req.app_config).map_err(AppError::BadRequest)?;
        if spec.kind != SpecKind::Build && !req.build_args.is_empty() {
            return Err(AppError::BadRequest(format!("spec {} builds nothing: --carg is not allowed", spec.name)));
        }
        let mut record = AppRecord {
            id: new_app_id(),
            path,
            source_url,
            spec: spec.name.clone(),
            params: req.params.clone(),
            app_config: req.app_config.clone(),
            created_at: now_secs(),
            git_branch: req.git_branch.clone(),
            git_commit: req.git_commit.clone(),
            source_commit: None,
            snapshot: None,
            build_args: req.build_args.clone(),
            image: None,
        };
        let _admin = self.admin.lock().await;
        self.check_conflicts(&record.path)?;
        let snapshot = match source {
            SourceSpec::None => None,
            source => Some(self.fetch_and_prepare(&mut record, &source).await?),
        };
        let result = self.finish_create(record, req.dry_run).await;
        if result.is_err() || req.dry_run {
            if let Some(dir) = snapshot {
                remove_dir_logged(&dir);
            }
        }
        result
    }

    async fn finish_create(&self, record: AppRecord, dry_run: bool) -> Result<AppInfo, AppError> {
        let app = self.build_app(record.clone())?;
        if let Some(rt) = app.runtime() {
            if let ImageSource::Existing(image) = &rt.plan().image {
                self.engine.ensure_image(image).await?;
            }
        }
        if dry_run {
            return Ok(app.info());
        }
        self.store.insert_app(&record).await?;
        self.apps.write().unwrap().insert(record.id.clone(), app.clone());
        self.spawn_reaper(&app);
        self.rebuild_routes();
        tracing::info!(app = %record.path, id = %record.id, spec = %record.spec, "app created");
        Ok(app.info())
    }

    fn check_conflicts(&self, path: &AppPath) -> Result<(), AppError> {
        let apps = self.apps.read().unwrap();
        match apps.values().find(|a| a.record.path.conflicts_with(path, &self.config.default_domain)) {
            Some(existing) => Err(AppError::BadRequest(format!("App already exists at {}", existing.record.path))),
            None => Ok(()),
        }
    }

    /// Fetches the source into a new snapshot of the app, checks it against the spec and
    /// records the snapshot, commit and image name. Returns the snapshot folder.
    async fn fetch_and_prepare(
        &self,
        record: &mut AppRecord,
        source: &SourceSpec,
    ) -> Result<std::path::PathBuf, AppError> {
        let spec = self.catalog.lookup(Some(&record.spec)).map_err(|e| AppError::BadRequest(e.to_string()))?;
        let root = self.home.sources_dir().join(&record.id);
        let snap = source::fetch(source, record.git_branch.as_deref(), record.git_commit.as_deref(), &root)
            .await
            .map_err(|e| AppError::BadRequest(format!("{e:#}")))?;
        let (dir, params, args) = (snap.dir.clone(), record.params.clone(), record.build_args.clone());
        let prepared = tokio::task::spawn_blocking(move || plan::prepare_build(&spec, &dir, &params, &args))
            .await
            .map_err(|e| AppError::Internal(e.into()))?;
        match prepared {
            Ok(p) => {
                record.snapshot = Some(snap.dir.display().to_string());
                record.source_commit = snap.commit;
                record.image = Some(p.image);
                Ok(snap.dir)
            }
            Err(e) => {
                remove_dir_logged(&snap.dir);
                if std::fs::read_dir(&root).map(|mut d| d.next().is_none()).unwrap_or(false) {
                    let _ = std::fs::remove_dir(&root);
                }
                Err(AppError::BadRequest(e))
            }
        }
    }

    /// Fetches the app's source again and builds it. A failed fetch or build changes nothing:
    /// the current version keeps serving. On success the new version takes over; the old
    /// container, image and snapshot are removed once the new one serves.
    pub async fn reload(
        &self,
        path: &str,
        branch: Option<String>,
        commit: Option<String>,
    ) -> Result<ReloadOutcome, AppError> {
        let path =
            AppPath::parse(path, &self.config.default_domain).map_err(|e| AppError::BadRequest(e.to_string()))?;
        let _admin = self.admin.lock().await;
        let old = self.find(&path)?;
        let source = SourceSpec::parse(&old.record.source_url).map_err(AppError::BadRequest)?;
        if source == SourceSpec::None {
            return Err(AppError::BadRequest(format!("app {path} has no source to reload")));
        }
        let mut record = old.record.clone();
        if branch.is_some() {
            record.git_branch = branch;
            record.git_commit = None;
        }
        if commit.is_some() {
            record.git_commit = commit;
        }
        let snapshot = self.fetch_and_prepare(&mut record, &source).await?;
        let new = match self.build_app(record.clone()) {
            Ok(app) => app,
            Err(e) => {
                remove_dir_logged(&snapshot);
                return Err(e);
            }
        };
        let built = match new.runtime() {
            Some(rt) => match rt.build_image().await {
                Ok(built) => built,
                Err(e) => {
                    remove_dir_logged(&snapshot);
                    return Err(AppError::BadRequest(e));
                }
            },
            None => false,
        };
        if let Err(e) = self.store.update_source(&record).await {
            remove_dir_logged(&snapshot);
            return Err(e.into());
        }
        self.apps.write().unwrap().insert(record.id.clone(), new.clone());
        self.spawn_reaper(&new);
        self.rebuild_routes();
        tracing::info!(app = %path, commit = ?record.source_commit, image = ?record.image, "app reloaded");
        let outcome = ReloadOutcome { app: new.info(), built };
        self.tasks.spawn(retire(self.engine.clone(), old, new));
        Ok(outcome)
    }

    /// Deletes the app at exactly `path` and removes its containers.
    pub async fn delete(&self, path: &str, dry_run: bool) -> Result<AppInfo, AppError> {
        let path =
            AppPath::parse(path, &self.config.default_domain).map_err(|e| AppError::BadRequest(e.to_string()))?;
        let _admin = self.admin.lock().await;
        let app = self.find(&path)?;
        let info = app.info();
        if dry_run {
            return Ok(info);
        }
        self.store.delete_app(&app.record.id).await?;
        self.apps.write().unwrap().remove(&app.record.id);
        self.rebuild_routes();
        if let AppBackend::Container(rt) = &app.backend {
            rt.shutdown().await;
            let filter =
                [(engine::LABEL_INSTANCE, self.instance.as_str()), (engine::LABEL_APP_ID, app.record.id.as_str())];
            for c in self.engine.list_labelled(&filter).await.map_err(anyhow::Error::from)? {
                self.engine.remove(&c.id).await.map_err(anyhow::Error::from)?;
            }
            if let ImageSource::Build(plan) = &rt.plan().image {
                if !self.image_in_use(&plan.image) {
                    let _ = self.engine.remove_image(&plan.image).await;
                }
            }
        }
        remove_dir_logged(&self.home.sources_dir().join(&app.record.id));
        let _ = std::fs::remove_file(self.builder.log_file(&app.record.id));
        tracing::info!(app = %path, "app deleted");
        Ok(info)
    }

    fn find(&self, path: &AppPath) -> Result<Arc<App>, AppError> {
        let dd = &self.config.default_domain;
        self.apps
            .read()
            .unwrap()
            .values()
            .find(|a| {
                a.record.path.path == path.path && a.record.path.effective_domain(dd) == path.effective_domain(dd)
            })
            .cloned()
            .ok_or_else(|| AppError::NotFound(format!("app not found: {path}")))
    }

    fn image_in_use(&self, image: &str) -> bool {
        self.container_runtimes().iter().any(|rt| rt.plan().image.name() == image)
    }

    /// The app's last build output (`app logs --build`).
    pub fn build_log(&self, path: &str) -> Result<std::path::PathBuf, AppError> {
        let path =
            AppPath::parse(path, &self.config.default_domain).map_err(|e| AppError::BadRequest(e.to_string()))?;
        let app = self.find(&path)?;
        let file = self.builder.log_file(&app.record.id);
        if !file.exists() {
            return Err(AppError::BadRequest(format!("app {path} has no build output: nothing was built for it yet")));
        }
        Ok(file)
    }

    /// The app's container output: the last `lines`, then new output while `follow`.
    pub fn logs(
        &self,
        path: &str,
        lines: Option<usize>,
        follow: bool,
    ) -> Result<impl Stream<Item = Result<bytes::Bytes, EngineError>> + Send + 'static, AppError> {
        let path =
            AppPath::parse(path, &self.config.default_domain).map_err(|e| AppError::BadRequest(e.to_string()))?;
        let app = self.find(&path)?;
        let AppBackend::Container(rt) = &app.backend else {
            return Err(AppError::BadRequest(format!(
                "app {path} is a {} app: it has no container logs",
                app.record.spec
            )));
        };
        let id = rt.container_id().ok_or_else(|| {
            AppError::BadRequest(format!("app {path} has no container yet: it is created on the first request"))
        })?;
        Ok(self.engine.logs(&id, lines, follow))
    }

    /// Stops every app task (containers keep running and are adopted at the next start).
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        for rt in self.container_runtimes() {
            rt.shutdown().await;
        }
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// What `app reload` did.
pub struct ReloadOutcome {
    pub app: AppInfo,
    pub built: bool,
}

/// Retires a replaced version: if it was serving, the new one is started first; requests in
/// flight on the old container finish (bounded); then its tasks stop, and its container,
/// image (when no longer used) and snapshot are removed.
async fn retire(engine: Engine, old: Arc<App>, new: Arc<App>) {
    if let (Some(old_rt), Some(new_rt)) = (old.runtime(), new.runtime()) {
        if matches!(old_rt.state(), runtime::State::Running { .. }) {
            if let Err(e) = new_rt.ensure_running(true).await {
                tracing::warn!(app = %new.record.path, "the reloaded version did not start: {e}");
            }
        }
        let drain_deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while old_rt.activity.in_flight() > 0 && tokio::time::Instant::now() < drain_deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        old_rt.shutdown().await;
        if old_rt.container_name() != new_rt.container_name() {
            if let Some(id) = old_rt.container_id() {
                if let Err(e) = engine.remove(&id).await {
                    tracing::warn!(app = %old.record.path, "removing the superseded container failed: {e}");
                }
            }
        }
        let (old_image, new_image) = (old_rt.plan().image.name(), new_rt.plan().image.name());
        if old_image != new_image && matches!(old_rt.plan().image, ImageSource::Build(_)) {
            match engine.remove_image(old_image).await {
                Ok(true) => tracing::info!(app = %old.record.path, image = old_image, "removed the superseded image"),
                Ok(false) => {}
                Err(e) => tracing::warn!(app = %old.record.path, "removing the superseded image failed: {e}"),
            }
        }
    }
    if old.record.snapshot != new.record.snapshot {
        if let Some(dir) = &old.record.snapshot {
            remove_dir_logged(std::path::Path::new(dir));
        }
    }
}

fn remove_dir_logged(dir: &std::path::Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("cannot remove {}: {e}", dir.display());
        }
    }
}

fn new_app_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    let suffix: String = (0..20).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
    format!("app_prd_{suffix}")
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// `K=V` entries (split on the first `=`) into a map; used by the CLI for `--param` and `--conf`.
pub fn parse_kv(entries: &[String], what: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for e in entries {
        match e.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                map.insert(k.trim().to_string(), v.to_string());
            }
            _ => return Err(format!("invalid {what} format: {e} (expected KEY=VALUE)")),
        }
    }
    Ok(map)
}
