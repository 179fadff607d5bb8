//! The app registry and each app's runtime. Owns the set of apps, the route table built from
//! them, create/delete/list, adoption of containers at boot and the engine event watcher.
//! Never builds tar files or writes SQL itself: it calls `store` and `engine`.

pub mod activity;
mod events;
pub mod health;
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
use crate::config::Config;
use crate::engine::{self, Engine, EngineError};
use crate::routing::RouteTable;
use crate::specs::{self, Backend, UrlPlan};
use crate::store::{AppRecord, Store};
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
    instance: String,
    store: Store,
    engine: Engine,
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
        instance: String,
        store: Store,
        engine: Engine,
    ) -> anyhow::Result<Arc<Apps>> {
        let apps = Arc::new(Apps {
            routes: ArcSwap::from_pointee(RouteTable::empty(&config.default_domain)),
            config,
            instance,
            store,
            engine,
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

    fn build_app(&self, record: AppRecord) -> Result<Arc<App>, AppError> {
        let spec = specs::lookup(Some(&record.spec)).map_err(|e| AppError::BadRequest(e.to_string()))?;
        let backend =
            match spec.backend(&record.params, &record.path).map_err(|e| AppError::BadRequest(e.to_string()))? {
                Backend::Url(plan) => AppBackend::Url(plan),
                Backend::Container(plan) => {
                    let settings =
                        settings::resolve(&self.config.container, &record.app_config).map_err(AppError::BadRequest)?;
                    AppBackend::Container(ContainerRuntime::new(
                        record.id.clone(),
                        self.instance.clone(),
                        plan,
                        settings,
                        self.engine.clone(),
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

    /// Validates everything first (path, spec, params, settings, conflicts, the image), then
    /// stores the app and publishes the new route table. Nothing is created on any error.
    pub async fn create(&self, req: CreateAppRequest) -> Result<AppInfo, AppError> {
        let bad = |e: &dyn std::fmt::Display| AppError::BadRequest(e.to_string());
        let path = AppPath::parse(&req.path, &self.config.default_domain).map_err(|e| bad(&e))?;
        let spec = specs::lookup(req.spec.as_deref()).map_err(|e| bad(&e))?;
        spec.check_source(req.source_url.trim()).map_err(|e| bad(&e))?;
        spec.check_params(&req.params).map_err(|e| bad(&e))?;
        let record = AppRecord {
            id: new_app_id(),
            path,
            source_url: req.source_url.trim().to_string(),
            spec: spec.name.to_string(),
            params: req.params.clone(),
            app_config: req.app_config.clone(),
            created_at: now_secs(),
        };
        let app = self.build_app(record.clone())?;
        let _admin = self.admin.lock().await;
        if let Some(existing) = self
            .apps
            .read()
            .unwrap()
            .values()
            .find(|a| a.record.path.conflicts_with(&record.path, &self.config.default_domain))
        {
            return Err(AppError::BadRequest(format!("App already exists at {}", existing.record.path)));
        }
        if let AppBackend::Container(rt) = &app.backend {
            self.engine.ensure_image(&rt.plan().image).await?;
        }
        if req.dry_run {
            return Ok(app.info());
        }
        self.store.insert_app(&record).await?;
        self.apps.write().unwrap().insert(record.id.clone(), app.clone());
        self.spawn_reaper(&app);
        self.rebuild_routes();
        tracing::info!(app = %record.path, id = %record.id, spec = %record.spec, "app created");
        Ok(app.info())
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
        }
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
