//! The app registry and each app's runtime. Owns the set of apps (each served as prod at its
//! path and as stage at `<path>_cl_stage`), the route table built from them, adoption of
//! containers at boot and the engine event watcher. The operations live one per file:
//! `create.rs` (create, delete), `staged.rs` (config changes, promote, versions, reload),
//! `retire.rs` (taking a replaced deployment out of service). Never builds tar files or
//! writes SQL itself: it calls `build`, `store` and `engine`.

pub mod activity;
mod apply;
pub mod builder;
mod create;
mod dev;
mod events;
pub mod health;
pub mod lifecycle;
mod locks;
pub mod plan;
pub mod reaper;
mod retire;
pub mod runtime;
pub mod settings;
mod staged;
mod sync;
mod webhooks;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use futures_util::Stream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::AppInfo;
use crate::app_path::{AppGlob, AppPath};
use crate::config::{Config, Home};
use crate::engine::{self, Engine, EngineError};
use crate::routing::RouteTable;
use crate::secrets::Secrets;
use crate::specs::{Catalog, UrlPlan};
use crate::store::{AppConfig, AppRecord, Store};
use builder::Builder;
use plan::Backend;
use runtime::ContainerRuntime;

pub use staged::{ChangeOutcome, ConfigChange, ReloadOutcome, VersionTarget};
pub use sync::{delete_sync, list_syncs, run_sync, schedule_sync, sync_webhook_secret, SyncOutcome, SHORT_SYNC_ENV};
pub use webhooks::WebhookTarget;

/// The two places an app is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    Prod,
    Stage,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Prod => "prod",
            Variant::Stage => "stage",
        }
    }
}

/// One variant of an app as it is served: where, and by what (built from one configuration).
pub struct Deployment {
    pub app_id: String,
    pub spec: String,
    pub variant: Variant,
    pub path: AppPath,
    pub backend: AppBackend,
    /// How long the proxy waits for response headers (`proxy.response_timeout_secs`).
    pub response_timeout: std::time::Duration,
    /// A dev app whose folder no longer checks out (no Containerfile, no port...): requests
    /// get this error until the next good save (`dev.rs`). Set in place: no swap, no lock.
    pub dev_error: arc_swap::ArcSwapOption<String>,
    /// Who may reach it (the app config's `auth`, else `[security] app_default_auth`).
    pub auth: crate::auth::AuthPolicy,
}

pub enum AppBackend {
    Container(Arc<ContainerRuntime>),
    Url(UrlPlan),
}

impl Deployment {
    pub fn preserve_host(&self) -> bool {
        match &self.backend {
            AppBackend::Container(rt) => rt.plan().preserve_host,
            AppBackend::Url(u) => u.preserve_host,
        }
    }

    pub fn runtime(&self) -> Option<&Arc<ContainerRuntime>> {
        match &self.backend {
            AppBackend::Container(rt) => Some(rt),
            AppBackend::Url(_) => None,
        }
    }

    pub fn state_name(&self) -> String {
        self.runtime().map(|rt| rt.state().name().to_string()).unwrap_or_else(|| "-".into())
    }
}

/// The current apps, shared with the tasks that retire replaced deployments so they can see
/// what is in use at the moment they remove something.
#[derive(Clone, Default)]
pub struct Registry {
    apps: Arc<RwLock<HashMap<String, Arc<App>>>>,
    /// Containers of deployments being started before they are published (a prod switch).
    starting: Arc<std::sync::Mutex<Vec<String>>>,
}

/// Marks a container name as in use while a deployment that is not yet published starts.
pub struct StartingMark {
    registry: Registry,
    name: String,
}

impl Drop for StartingMark {
    fn drop(&mut self) {
        let mut names = self.registry.starting.lock().unwrap();
        if let Some(i) = names.iter().position(|n| *n == self.name) {
            names.swap_remove(i);
        }
    }
}

impl Registry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<App>>> {
        self.apps.read().unwrap()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<App>>> {
        self.apps.write().unwrap()
    }

    pub fn mark_starting(&self, name: String) -> StartingMark {
        self.starting.lock().unwrap().push(name.clone());
        StartingMark { registry: self.clone(), name }
    }

    fn runtimes(&self) -> Vec<Arc<ContainerRuntime>> {
        self.read().values().flat_map(|a| [a.prod.runtime().cloned(), a.stage.runtime().cloned()]).flatten().collect()
    }

    pub fn container_in_use(&self, name: &str) -> bool {
        self.starting.lock().unwrap().iter().any(|n| n == name)
            || self.runtimes().iter().any(|rt| rt.container_name() == name)
    }

    pub fn image_in_use(&self, image: &str) -> bool {
        self.runtimes().iter().any(|rt| rt.plan().image.name() == image)
    }
}

/// An app: its record and its two deployments.
pub struct App {
    pub record: AppRecord,
    pub prod: Arc<Deployment>,
    pub stage: Arc<Deployment>,
}

impl App {
    pub fn deployment(&self, variant: Variant) -> &Arc<Deployment> {
        match variant {
            Variant::Prod => &self.prod,
            Variant::Stage => &self.stage,
        }
    }

    pub fn info(&self) -> AppInfo {
        let r = &self.record;
        let cfg = &r.prod.config;
        AppInfo {
            id: r.id.clone(),
            domain: r.path.domain.clone(),
            path: r.path.path.clone(),
            app_path: r.path.to_string(),
            spec: r.spec.clone(),
            source_url: r.source_url.clone(),
            params: cfg.params.clone(),
            app_config: cfg.app_config.clone(),
            state: self.prod.state_name(),
            created_at: r.created_at,
            git_branch: cfg.git_branch.clone(),
            git_commit: cfg.source_commit.clone(),
            build_args: cfg.build_args.clone(),
            container_options: cfg.container_options.clone(),
            image: self.prod.runtime().map(|rt| rt.plan().image.name().to_string()),
            prod_version: r.prod.number,
            stage_version: r.stage.number,
            staged_changes: r.prod.number != r.stage.number,
            stage_state: self.stage.state_name(),
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
    /// The container engine cannot be reached: a retry later may succeed.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<EngineError> for AppError {
    fn from(e: EngineError) -> Self {
        let message = crate::errors::with_causes(&e);
        if e.is_unavailable() {
            AppError::Unavailable(message)
        } else {
            AppError::BadRequest(message)
        }
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
    secrets: Arc<Secrets>,
    apps: Registry,
    routes: ArcSwap<RouteTable<Deployment>>,
    /// Per-app serialisation of changes and the paths of creates in progress.
    admin: locks::AdminLocks,
    tasks: TaskTracker,
    cancel: CancellationToken,
    /// Boot adoption ran (it waits for the engine when the server starts while it is down).
    adopted: std::sync::atomic::AtomicBool,
    /// This registry itself, for the long-lived tasks that change apps (dev watchers).
    me: std::sync::Weak<Apps>,
    /// Each dev app's folder watcher (`dev.rs`), by app id: cancelled at delete.
    dev_watchers: dev::Watchers,
}

impl Apps {
    /// Loads every stored app, adopts berth's containers (removing those of apps that no
    /// longer exist, of replaced configurations, and duplicates) and starts the engine event
    /// watcher.
    pub async fn load(
        config: Arc<Config>,
        home: Home,
        instance: String,
        store: Store,
        engine: Engine,
    ) -> anyhow::Result<Arc<Apps>> {
        let spec_dirs: Vec<std::path::PathBuf> = config.spec_dirs.iter().map(std::path::PathBuf::from).collect();
        let catalog = Catalog::load(&spec_dirs)?;
        let secrets = Arc::new(Secrets::from_config(&config.secret)?);
        let builder = Arc::new(Builder::new(
            engine.clone(),
            home.root.join("logs"),
            std::time::Duration::from_secs(config.container.build_timeout_secs),
            secrets.clone(),
        ));
        let apps = Arc::new_cyclic(|me| Apps {
            me: me.clone(),
            dev_watchers: dev::Watchers::default(),
            routes: ArcSwap::from_pointee(RouteTable::empty(&config.default_domain)),
            config,
            home,
            instance,
            store,
            engine,
            catalog,
            builder,
            secrets,
            apps: Registry::default(),
            admin: locks::AdminLocks::default(),
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
            adopted: std::sync::atomic::AtomicBool::new(false),
        });
        for record in apps.store.list_apps().await? {
            let path = record.path.clone();
            match apps.assemble(record) {
                Ok(app) => {
                    apps.apps.write().insert(app.record.id.clone(), app);
                }
                Err(e) => tracing::error!(app = %path, "app cannot be served: {e}"),
            }
        }
        match apps.adopt_containers().await {
            Ok(()) => {}
            Err(e) if e.is_unavailable() => {
                tracing::warn!("cannot adopt containers yet: {e}; adopting them once the engine answers");
                apps.engine.report_unavailable();
            }
            Err(e) => return Err(e.into()),
        }
        for app in apps.apps.read().values() {
            apps.spawn_reaper(&app.prod);
            apps.spawn_reaper(&app.stage);
            if app.record.prod.config.dev {
                apps.spawn_dev_watcher(&app.record);
            }
        }
        apps.rebuild_routes();
        events::spawn_watcher(&apps);
        sync::spawn_scheduler(&apps);
        Ok(apps)
    }

    pub fn routes(&self) -> arc_swap::Guard<Arc<RouteTable<Deployment>>> {
        self.routes.load()
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    fn assemble(&self, record: AppRecord) -> Result<Arc<App>, AppError> {
        let prod = self.deploy(&record, Variant::Prod, &record.prod.config)?;
        // A dev app has no stage: both names point at its one deployment (routed once).
        let stage = match record.prod.config.dev {
            true => prod.clone(),
            false => self.deploy(&record, Variant::Stage, &record.stage.config)?,
        };
        Ok(Arc::new(App { record, prod, stage }))
    }

    /// What serves configuration `cfg` of an app as `variant`; nothing runs until its first
    /// request. Checks the whole configuration (spec, params, options, settings).
    /// The spec an app's configuration is read with: its spec, with the params of the
    /// `params.star` its fetched source carries, if any.
    fn spec_for(&self, record: &AppRecord, cfg: &AppConfig) -> Result<crate::specs::SpecRef, AppError> {
        let snapshot = cfg.snapshot.as_deref().map(std::path::Path::new);
        self.catalog.lookup_for(Some(&record.spec), snapshot).map_err(|e| AppError::BadRequest(e.to_string()))
    }

    fn deploy(&self, record: &AppRecord, variant: Variant, cfg: &AppConfig) -> Result<Arc<Deployment>, AppError> {
        let spec = self.spec_for(record, cfg)?;
        let path = match variant {
            Variant::Prod => record.path.clone(),
            Variant::Stage => record.path.stage(),
        };
        let backend = match plan::backend(&spec, &path, cfg, self.config.container.allow_host_access)
            .map_err(AppError::BadRequest)?
        {
            Backend::Url(plan) => AppBackend::Url(plan),
            Backend::Container(plan) => {
                let mut settings =
                    settings::resolve(&self.config.container, &spec, &cfg.app_config).map_err(AppError::BadRequest)?;
                if !plan.strip_app && path.path != "/" {
                    settings.health_url = format!("{}{}", path.path, settings.health_url);
                }
                if cfg.dev {
                    // A dev app is never idle-stopped: its developer may be looking at it.
                    settings.idle_shutdown = std::time::Duration::ZERO;
                }
                AppBackend::Container(ContainerRuntime::new(
                    (record.id.clone(), variant),
                    self.instance.clone(),
                    *plan,
                    settings,
                    self.engine.clone(),
                    (self.builder.clone(), self.secrets.clone()),
                ))
            }
        };
        let response_timeout =
            settings::response_timeout(&self.config.proxy, &cfg.app_config).map_err(AppError::BadRequest)?;
        let auth = crate::auth::AuthPolicy::resolve(
            cfg.app_config.get(crate::auth::APP_CONFIG_KEY).map(String::as_str),
            &self.config,
        )
        .map_err(AppError::BadRequest)?;
        Ok(Arc::new(Deployment {
            auth,
            app_id: record.id.clone(),
            spec: record.spec.clone(),
            variant,
            path,
            backend,
            response_timeout,
            dev_error: arc_swap::ArcSwapOption::empty(),
        }))
    }

    fn spawn_reaper(&self, deployment: &Arc<Deployment>) {
        if let Some(rt) = deployment.runtime() {
            rt.tasks.spawn(reaper::run(rt.clone()));
        }
    }

    /// Puts an app (new or changed) in place and publishes its routes. The route table is
    /// updated, not rebuilt: only the shards of the app's old and new routes are copied, so
    /// this costs the same with 10 or 10,000 apps.
    fn publish(&self, app: Arc<App>) {
        // Exclusive, like `rebuild_routes`: concurrent changes of different apps publish in
        // order, each on top of the table the previous one stored.
        let mut apps = self.apps.write();
        let old = apps.insert(app.record.id.clone(), app.clone());
        let remove =
            old.iter().flat_map(|o| [&o.prod, &o.stage]).map(|d| (d.path.domain.as_str(), d.path.path.as_str()));
        let insert = [&app.prod, &app.stage].map(|d| (d.path.domain.clone(), d.path.path.clone(), d.clone()));
        let table = self.routes.load().updated(remove, insert);
        self.routes.store(Arc::new(table));
    }

    /// Brings the route table in line with the registry (at load, and after a delete): routes
    /// of deployments no longer in the registry go, missing ones come in. This compares
    /// pointers instead of building a new table, and copies only the shards that change.
    fn rebuild_routes(&self) {
        // Exclusive, so that concurrent changes of different apps publish in order: the last
        // table stored is made from the latest set of apps.
        let apps = self.apps.write();
        let current = self.routes.load();
        let published =
            |d: &Arc<Deployment>| apps.get(&d.app_id).is_some_and(|a| Arc::ptr_eq(a.deployment(d.variant), d));
        let stale: Vec<(&str, &str)> =
            current.iter().filter(|(_, _, d)| !published(d)).map(|(host, path, _)| (host, path)).collect();
        let missing = apps
            .values()
            .flat_map(|a| [&a.prod, &a.stage])
            .filter(|d| !current.get(&d.path.domain, &d.path.path).is_some_and(|r| Arc::ptr_eq(r, d)))
            .map(|d| (d.path.domain.clone(), d.path.path.clone(), d.clone()));
        let table = current.updated(stale, missing);
        self.routes.store(Arc::new(table));
    }

    fn runtimes(&self) -> Vec<Arc<ContainerRuntime>> {
        self.apps.runtimes()
    }

    fn image_in_use(&self, image: &str) -> bool {
        self.apps.image_in_use(image)
    }

    /// Boot adoption, if it could not run at boot because the engine did not answer.
    async fn adopt_if_pending(&self) {
        if self.adopted.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.adopt_containers().await {
            tracing::warn!("adopting containers failed: {e}");
        }
    }

    /// Boot reconciliation: per app and variant, one container at most, matching its current
    /// configuration.
    async fn adopt_containers(&self) -> Result<(), EngineError> {
        let mut found = self.engine.list_labelled(&[(engine::LABEL_INSTANCE, &self.instance)]).await?;
        // Running ones first, so a running container wins over a stopped duplicate.
        found.sort_by_key(|c| !c.running);
        let runtimes = self.runtimes();
        let mut adopted: Vec<String> = Vec::new();
        for c in found {
            let label = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
            let (app_id, variant) = (label(engine::LABEL_APP_ID), label(engine::LABEL_VARIANT));
            let owner = runtimes.iter().find(|rt| rt.app_id == app_id && rt.variant.name() == variant);
            let keep = match owner {
                Some(rt) if c.name == rt.container_name() && !adopted.contains(&c.name) => {
                    rt.adopt(&c.id, c.running).await;
                    adopted.push(c.name.clone());
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
        self.adopted.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    pub fn list(&self, glob: Option<&str>) -> Result<Vec<AppInfo>, AppError> {
        let glob = AppGlob::parse(glob.unwrap_or("")).map_err(AppError::BadRequest)?;
        let mut list: Vec<AppInfo> =
            self.apps.read().values().filter(|a| glob.matches(&a.record.path)).map(|a| a.info()).collect();
        list.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(list)
    }

    /// The app at exactly `path` (its prod path; a `_cl_stage` path names the same app) and
    /// which variant the path names.
    fn find(&self, path: &str) -> Result<(Arc<App>, Variant), AppError> {
        let (path, variant) = match path.trim().trim_end_matches('/').strip_suffix("_cl_stage") {
            Some(prod) if prod.ends_with(':') || prod.is_empty() => (format!("{prod}/"), Variant::Stage),
            Some(prod) => (prod.to_string(), Variant::Stage),
            None => (path.to_string(), Variant::Prod),
        };
        let path = AppPath::parse_lookup(&path, &self.config.default_domain)
            .map_err(|e| AppError::BadRequest(e.to_string()))?;
        let dd = &self.config.default_domain;
        let app = self
            .apps
            .read()
            .values()
            .find(|a| {
                a.record.path.path == path.path && a.record.path.effective_domain(dd) == path.effective_domain(dd)
            })
            .cloned()
            .ok_or_else(|| AppError::NotFound(format!("app not found: {path}")))?;
        if variant == Variant::Stage && app.record.prod.config.dev {
            return Err(AppError::NotFound(format!("app not found: {path}_cl_stage (a dev app has no stage)")));
        }
        Ok((app, variant))
    }

    /// The app's last build output (`app logs --build`) and its build status.
    pub fn build_log(&self, path: &str) -> Result<builder::BuildLog, AppError> {
        let (app, _) = self.find(path)?;
        let log = self.builder.build_log(&app.record.id);
        if !log.file.exists() {
            return Err(AppError::BadRequest(format!(
                "app {} has no build output: nothing was built for it yet",
                app.record.path
            )));
        }
        Ok(log)
    }

    /// The container output of the deployment `path` names: the last `lines`, then new output
    /// while `follow`.
    pub fn logs(
        &self,
        path: &str,
        lines: Option<usize>,
        follow: bool,
    ) -> Result<impl Stream<Item = Result<bytes::Bytes, EngineError>> + Send + 'static, AppError> {
        let (app, variant) = self.find(path)?;
        let dep = app.deployment(variant);
        let Some(rt) = dep.runtime() else {
            return Err(AppError::BadRequest(format!(
                "app {} is a {} app: it has no container logs",
                dep.path, dep.spec
            )));
        };
        let id = rt.container_id().ok_or_else(|| {
            AppError::BadRequest(format!("app {} has no container yet: it is created on the first request", dep.path))
        })?;
        Ok(self.engine.logs(&id, lines, follow))
    }

    /// Stops every app task (containers keep running and are adopted at the next start).
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        for rt in self.runtimes() {
            rt.shutdown().await;
        }
        self.tasks.close();
        self.tasks.wait().await;
    }
}

fn remove_dir_logged(dir: &std::path::Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("cannot remove {}: {e}", dir.display());
        }
    }
}

#[cfg(test)]
mod route_tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use crate::api::CreateAppRequest;
    use crate::apps::Apps;
    use crate::config::{Config, Home};
    use crate::engine::fake::FakeEngine;
    use crate::routing::SHARDS;
    use crate::store::Store;

    fn proxy_app(path: &str) -> CreateAppRequest {
        CreateAppRequest {
            source_url: "-".into(),
            path: path.into(),
            spec: Some("proxy".into()),
            params: BTreeMap::from([("url".into(), "http://127.0.0.1:9".into())]),
            app_config: BTreeMap::new(),
            build_args: BTreeMap::new(),
            container_options: BTreeMap::new(),
            git_branch: None,
            git_commit: None,
            approve: true,
            dry_run: false,
            dev: false,
        }
    }

    /// The app path `path` routes to, or `None`.
    fn routed(apps: &Apps, path: &str) -> Option<String> {
        apps.routes().lookup("localhost", path).map(|(_, app_path)| app_path.to_string())
    }

    #[tokio::test]
    async fn creates_and_deletes_change_only_their_own_routes() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home { root: dir.path().to_path_buf() };
        let store = Store::open(&dir.path().join("berth.db")).await.unwrap();
        let config = Arc::new(Config::default());
        let apps = Apps::load(config.clone(), home.clone(), "inst".into(), store.clone(), FakeEngine::new().engine())
            .await
            .unwrap();
        for path in ["/a", "/b", "/c/e"] {
            apps.create(proxy_app(path), CancellationToken::new()).await.unwrap();
        }
        let before = apps.routes().clone();
        assert_eq!(before.len(), 6, "each app is served as prod and stage");
        apps.create(proxy_app("/d"), CancellationToken::new()).await.unwrap();
        let after = apps.routes().clone();
        let shared = (0..SHARDS).filter(|&i| after.shares_shard(&before, i)).count();
        assert!(shared >= SHARDS - 2, "a create copied {} shards, not at most 2", SHARDS - shared);
        assert_eq!(routed(&apps, "/d/x").as_deref(), Some("/d"));
        assert_eq!(routed(&apps, "/d_cl_stage/x").as_deref(), Some("/d_cl_stage"));

        apps.delete("/a", false).await.unwrap();
        assert_eq!(routed(&apps, "/a/x"), None, "a deleted app is not routed to");
        assert_eq!(routed(&apps, "/a_cl_stage"), None, "nor is its stage");
        assert_eq!(routed(&apps, "/c/e/x").as_deref(), Some("/c/e"));
        assert_eq!(routed(&apps, "/b").as_deref(), Some("/b"));
        assert_eq!(apps.routes().len(), 6);
        let kept = apps.routes().clone();
        let shared = (0..SHARDS).filter(|&i| kept.shares_shard(&after, i)).count();
        assert!(shared >= SHARDS - 2, "a delete copied {} shards, not at most 2", SHARDS - shared);
        apps.shutdown().await;

        // A start from the store routes the same way.
        let reloaded = Apps::load(config, home, "inst".into(), store, FakeEngine::new().engine()).await.unwrap();
        for path in ["/a/x", "/c/e/x", "/c", "/b", "/d_cl_stage", "/e"] {
            assert_eq!(routed(&reloaded, path), routed(&apps, path), "{path}");
        }
        assert_eq!(reloaded.routes().len(), 6);
        reloaded.shutdown().await;
    }
}
