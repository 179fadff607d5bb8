//! `berth apply`: runs an apply file's plan all or nothing. Everything is checked first (the
//! file, paths, specs, params, conflicts, and every source fetched), then the changes are made:
//! missing apps are created, changed ones get one new stage version each (`promote`: prod
//! follows); apps the file does not name are left alone. If a change still fails, what was
//! already made is undone (created apps deleted, staged versions removed), so a failing file
//! changes nothing. The declaration applied to each app is stored as the base of the next
//! apply's three-way merge (`declare::plan`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::locks::AppLock;
use super::{remove_dir_logged, App, AppError, Apps, Variant};
use crate::api::{AppliedApp, ApplyRequest, ApplyResponse, CreateAppRequest};
use crate::app_path::{AppGlob, AppPath};
use crate::declare::apply_file::{self, DeclaredApp};
use crate::declare::plan::{self, Action, Declaration, Fields};
use crate::source::{self, SourceSpec};
use crate::store::{AppConfig, AppRecord};

/// An apply file's text, read from disk or from a git repository.
pub(super) struct LoadedFile {
    /// The name used in messages and stored with each applied app.
    pub name: String,
    pub content: String,
    /// For a local file, its folder: relative local sources are resolved against it.
    pub base_dir: Option<PathBuf>,
    /// For a file in git, the commit it was read at.
    pub commit: Option<String>,
}

/// One declared app, checked, with what to do to it.
struct Item {
    declared: DeclaredApp,
    path: AppPath,
    declaration: Declaration,
    request: CreateAppRequest,
    /// The existing app (locked) and its lock.
    existing: Option<(Arc<App>, AppLock)>,
    action: Action,
}

/// A change fetched and checked, ready to be made.
#[allow(clippy::large_enum_variant)] // a few per apply, kept in one Vec
enum Ready {
    Create { record: AppRecord, snapshot: Option<PathBuf> },
    Update { app: Arc<App>, cfg: AppConfig, snapshot: Option<PathBuf> },
    Nothing { app_id: String },
}

impl Apps {
    /// Reads and applies an apply file. `cancel` stops source fetches (the client went away).
    pub async fn apply(&self, req: ApplyRequest, cancel: CancellationToken) -> Result<ApplyResponse, AppError> {
        let loaded = self.load_apply_file(&req.file, req.branch.as_deref(), &cancel).await?;
        self.apply_loaded(&loaded, &req, &cancel).await
    }

    /// Reads an apply file: an absolute local path, or a file in a git repository fetched (at
    /// `branch`) into a temporary folder that is removed afterwards.
    pub(super) async fn load_apply_file(
        &self,
        file: &str,
        branch: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<LoadedFile, AppError> {
        let file = file.trim();
        let bad = AppError::BadRequest;
        if file.starts_with('/') {
            if branch.is_some() {
                return Err(bad(format!("--branch applies to a file in git, not to the local file {file}")));
            }
            let content = tokio::fs::read_to_string(file)
                .await
                .map_err(|e| bad(format!("cannot read apply file {file}: {e}")))?;
            let base_dir = Path::new(file).parent().map(Path::to_path_buf);
            return Ok(LoadedFile { name: file.to_string(), content, base_dir, commit: None });
        }
        let (repo, inside) = match SourceSpec::parse(file) {
            Ok(SourceSpec::Git { repo, subdir }) if !subdir.is_empty() => (repo, subdir),
            Ok(SourceSpec::Git { .. }) => {
                return Err(bad(format!(
                    "apply file {file} names a repository, not a file in it (expected host/org/repo/path/apps.star)"
                )))
            }
            _ => {
                return Err(bad(format!(
                    "invalid apply file {file}: expected an absolute path or a file in a git repository"
                )))
            }
        };
        let (folder, name) = match inside.rsplit_once('/') {
            Some((folder, name)) => (folder.to_string(), name.to_string()),
            None => (String::new(), inside.clone()),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".apply-")
            .tempdir_in(&self.home.root)
            .map_err(|e| AppError::Internal(e.into()))?;
        let timeout = std::time::Duration::from_secs(self.config.source.fetch_timeout_secs);
        let snap = source::fetch(
            &SourceSpec::Git { repo: repo.clone(), subdir: folder },
            branch,
            None,
            &tmp.path().join("checkout"),
            source::FetchLimits { timeout, cancel },
        )
        .await
        .map_err(|e| bad(format!("cannot fetch apply file {file}: {e:#}")))?;
        let content = tokio::fs::read_to_string(snap.dir.join(&name))
            .await
            .map_err(|e| bad(format!("cannot read apply file {file}: {name} in {repo}: {e}")))?;
        Ok(LoadedFile { name: file.to_string(), content, base_dir: None, commit: snap.commit })
    }

    pub(super) async fn apply_loaded(
        &self,
        loaded: &LoadedFile,
        req: &ApplyRequest,
        cancel: &CancellationToken,
    ) -> Result<ApplyResponse, AppError> {
        let bad = AppError::BadRequest;
        let file = evaluate(loaded, &req.params).await?;
        let glob = req.glob.as_deref().map(AppGlob::parse).transpose().map_err(bad)?;
        let mut items = Vec::new();
        for declared in file.apps {
            if let Some(item) = self.check_declared(loaded, declared, glob.as_ref()).await? {
                items.push(item);
            }
        }
        let dd = &self.config.default_domain;
        for (i, a) in items.iter().enumerate() {
            if let Some(b) = items[..i].iter().find(|b| b.path.conflicts_with(&a.path, dd)) {
                return Err(bad(format!(
                    "{}:{}: app {} conflicts with app {} (line {})",
                    loaded.name, a.declared.line, a.path, b.path, b.declared.line
                )));
            }
        }
        // Lock the existing apps (in id order, so two applies cannot deadlock), then plan
        // against what they are once locked.
        let mut existing: Vec<(usize, Arc<App>)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match self.find(&item.path.to_string()) {
                Ok((app, _)) => existing.push((i, app)),
                Err(AppError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        existing.sort_by(|a, b| a.1.record.id.cmp(&b.1.record.id));
        for (i, app) in existing {
            let (lock, now, _) = self.lock_app(&app.record.path.to_string()).await?;
            items[i].existing = Some((now, lock));
        }
        let applied = self.store.applied_declarations().await?;
        for item in &mut items {
            let at = |e: String| format!("{}:{}: app {}: {e}", loaded.name, item.declared.line, item.path);
            if let Some((app, _)) = &item.existing {
                let dev = app.record.prod.config.dev;
                if dev != item.declared.dev {
                    let (is, declared) = if dev { ("a dev app", "dev=False") } else { ("not a dev app", "dev=True") };
                    return Err(bad(at(format!(
                        "it is {is}, the file declares {declared}: delete the app to change that"
                    ))));
                }
            }
            let current = item.existing.as_ref().map(|(app, _)| {
                let cfg = &app.record.stage.config;
                (app.record.source_url.clone(), app.record.spec.clone(), fields_of(cfg))
            });
            let last = item
                .existing
                .as_ref()
                .and_then(|(app, _)| applied.get(&app.record.id))
                .and_then(|json| serde_json::from_str::<Declaration>(json).ok());
            item.action = plan::plan_app(
                &item.declaration,
                current.as_ref().map(|(s, p, f)| (s.as_str(), p.as_str(), f)),
                last.as_ref(),
                req.clobber,
            )
            .map_err(|e| bad(at(e)))?;
            if let Action::Create = item.action {
                if let Some(other) = self.apps.read().values().find(|a| a.record.path.conflicts_with(&item.path, dd)) {
                    return Err(bad(at(format!("App already exists at {}", other.record.path))));
                }
                self.check_create(&item.request).await.map_err(|e| bad(at(e.to_string())))?;
            }
        }
        if req.dry_run {
            return Ok(response(loaded, true, items.iter().map(|i| planned(i, None, false)).collect()));
        }
        // Reserve the paths of new apps, then fetch and check everything before any change.
        let mut reservations = Vec::new();
        for item in items.iter().filter(|i| matches!(i.action, Action::Create)) {
            reservations.push(self.reserve_path(&item.path)?);
        }
        let mut ready: Vec<Ready> = Vec::new();
        let mut failure = None;
        for item in &items {
            match self.prepare_item(item, cancel).await {
                Ok(r) => ready.push(r),
                Err(e) => {
                    let at = format!("{}:{}: app {}: {e}", loaded.name, item.declared.line, item.path);
                    failure = Some(AppError::BadRequest(at));
                    break;
                }
            }
        }
        if let Some(e) = failure {
            for r in &ready {
                if let Ready::Create { snapshot: Some(s), .. } | Ready::Update { snapshot: Some(s), .. } = r {
                    discard_snapshot(s);
                }
            }
            return Err(e);
        }
        let results = self.make_changes(loaded, &items, ready, req.promote).await?;
        drop(reservations);
        Ok(response(loaded, false, results))
    }

    /// Checks one declared app (path, spec, source); None when `glob` leaves it out.
    async fn check_declared(
        &self,
        loaded: &LoadedFile,
        declared: DeclaredApp,
        glob: Option<&AppGlob>,
    ) -> Result<Option<Item>, AppError> {
        let at =
            |e: String| AppError::BadRequest(format!("{}:{}: app {}: {e}", loaded.name, declared.line, declared.path));
        let path = AppPath::parse(&declared.path, &self.config.default_domain).map_err(|e| at(e.to_string()))?;
        if glob.is_some_and(|g| !g.matches(&path)) {
            return Ok(None);
        }
        let spec = self.catalog.lookup(declared.spec.as_deref()).map_err(|e| at(e.to_string()))?;
        let source = declared.source.trim();
        let source = match SourceSpec::parse(source).map_err(at)? {
            SourceSpec::Local(p) if p.starts_with("~") => {
                return Err(at(format!("source {} starts with ~: use an absolute path", p.display())))
            }
            SourceSpec::Local(p) if p.is_relative() => match &loaded.base_dir {
                Some(base) => std::path::absolute(base.join(&p)).map_err(|e| at(e.to_string()))?.display().to_string(),
                None => return Err(at(format!("relative source {source} in a file from git: use a git URL"))),
            },
            _ => source.to_string(),
        };
        let fields = Fields {
            params: declared.params.clone(),
            container_options: declared.container_options.clone(),
            build_args: declared.build_args.clone(),
            app_config: declared.app_config.clone(),
            git_branch: declared.git_branch.clone(),
            git_commit: declared.git_commit.clone(),
        };
        let request = CreateAppRequest {
            source_url: source.clone(),
            path: declared.path.clone(),
            spec: Some(spec.name.clone()),
            params: fields.params.clone(),
            app_config: fields.app_config.clone(),
            build_args: fields.build_args.clone(),
            container_options: fields.container_options.clone(),
            git_branch: fields.git_branch.clone(),
            git_commit: fields.git_commit.clone(),
            approve: true,
            dry_run: false,
            dev: declared.dev,
        };
        let declaration = Declaration { source, spec: spec.name.clone(), fields };
        Ok(Some(Item { declared, path, declaration, request, existing: None, action: Action::Create }))
    }

    /// Fetches and checks one change without making it.
    async fn prepare_item(&self, item: &Item, cancel: &CancellationToken) -> Result<Ready, AppError> {
        match (&item.action, &item.existing) {
            (Action::Create, _) => {
                let (path, spec, source) = self.check_create(&item.request).await?;
                let (record, snapshot) = self.new_record(&item.request, path, &spec, source, "apply", cancel).await?;
                if let Err(e) = self.assemble(record.clone()) {
                    if let Some(s) = &snapshot {
                        discard_snapshot(s);
                    }
                    return Err(e);
                }
                Ok(Ready::Create { record, snapshot })
            }
            (Action::Update { target, .. }, Some((app, _))) => {
                let mut cfg = app.record.stage.config.clone();
                let spec = self.spec_for(&app.record, &cfg)?;
                let refetch = (&cfg.git_branch, &cfg.git_commit) != (&target.git_branch, &target.git_commit);
                set_fields(&mut cfg, target);
                // A new branch or commit may bring another params.star: checked once fetched.
                self.check_config(&spec, &cfg, !refetch).await?;
                let source = SourceSpec::parse(&app.record.source_url).map_err(AppError::BadRequest)?;
                let snapshot = if refetch && matches!(source, SourceSpec::Git { .. }) {
                    Some(self.fetch_and_prepare(&app.record.id, &spec.name, &mut cfg, &source, cancel).await?)
                } else {
                    self.refresh_image(&spec, &mut cfg).await?;
                    None
                };
                if let Err(e) = self.deploy(&app.record, Variant::Stage, &cfg) {
                    if let Some(s) = &snapshot {
                        discard_snapshot(s);
                    }
                    return Err(e);
                }
                Ok(Ready::Update { app: app.clone(), cfg, snapshot })
            }
            (_, existing) => {
                Ok(Ready::Nothing { app_id: existing.as_ref().map(|(a, _)| a.record.id.clone()).unwrap_or_default() })
            }
        }
    }

    /// Makes the prepared changes; if one fails, undoes the ones made and returns its error.
    /// Then promotes (with `promote`) and records the applied declarations.
    async fn make_changes(
        &self,
        loaded: &LoadedFile,
        items: &[Item],
        ready: Vec<Ready>,
        promote: bool,
    ) -> Result<Vec<AppliedApp>, AppError> {
        let mut created: Vec<AppPath> = Vec::new();
        let mut staged: Vec<(Arc<App>, Option<PathBuf>)> = Vec::new();
        let mut done: Vec<(String, Option<i64>)> = Vec::new();
        let mut failure = None;
        let mut pending = ready.into_iter();
        for (item, r) in items.iter().zip(pending.by_ref()) {
            let result = match r {
                Ready::Create { record, snapshot } => {
                    let path = record.path.clone();
                    let id = record.id.clone();
                    match self.finish_create(record, false).await {
                        Ok(_) => {
                            created.push(path);
                            Ok((id, Some(1)))
                        }
                        Err(e) => {
                            if let Some(s) = &snapshot {
                                discard_snapshot(s);
                            }
                            Err(e)
                        }
                    }
                }
                Ready::Update { app, cfg, snapshot } => {
                    match self.stage_version(app.clone(), cfg, "apply", false, false).await {
                        Ok(outcome) => {
                            staged.push((app.clone(), snapshot));
                            Ok((app.record.id.clone(), Some(outcome.version)))
                        }
                        Err(e) => {
                            if let Some(s) = &snapshot {
                                discard_snapshot(s);
                            }
                            Err(e)
                        }
                    }
                }
                Ready::Nothing { app_id } => Ok((app_id, None)),
            };
            match result {
                Ok(d) => done.push(d),
                Err(e) => {
                    failure = Some(AppError::BadRequest(format!(
                        "{}:{}: app {}: {e}; nothing was changed",
                        loaded.name, item.declared.line, item.path
                    )));
                    break;
                }
            }
        }
        if let Some(e) = failure {
            for r in pending {
                if let Ready::Create { snapshot: Some(s), .. } | Ready::Update { snapshot: Some(s), .. } = r {
                    discard_snapshot(&s);
                }
            }
            self.undo(created, staged).await;
            return Err(e);
        }
        let mut results = Vec::new();
        let mut promote_errors = Vec::new();
        for (item, (app_id, version)) in items.iter().zip(done) {
            let json = serde_json::to_string(&item.declaration).map_err(|e| AppError::Internal(e.into()))?;
            self.store.set_applied(&app_id, &json, &loaded.name).await?;
            let mut promoted = false;
            // A dev app has no stage: its changes are live already.
            if promote && matches!(item.action, Action::Update { .. }) && !item.declared.dev {
                let current = self.apps.read().get(&app_id).cloned();
                if let Some(app) = current {
                    match self.promote_locked(app).await {
                        Ok(p) => promoted = p,
                        Err(e) => promote_errors.push(format!("{}: {e}", item.path)),
                    }
                }
            }
            let stage_version = self.apps.read().get(&app_id).map(|a| a.record.stage.number);
            results.push(planned(item, version.or(stage_version), promoted));
        }
        if !promote_errors.is_empty() {
            return Err(AppError::BadRequest(format!(
                "applied, but promoting failed (the changes stay staged): {}",
                promote_errors.join("; ")
            )));
        }
        Ok(results)
    }

    /// Undoes a failed apply's changes: deletes the apps it created, and points the stage of
    /// the apps it updated back at their previous version.
    async fn undo(&self, created: Vec<AppPath>, staged: Vec<(Arc<App>, Option<PathBuf>)>) {
        for path in created {
            if let Err(e) = self.delete(&path.to_string(), false).await {
                tracing::error!(app = %path, "undoing a failed apply: delete failed: {e}");
            }
        }
        for (before, snapshot) in staged {
            let id = before.record.id.clone();
            if let Err(e) = self.store.restore_versions(&before.record).await {
                tracing::error!(app = %before.record.path, "undoing a failed apply: {e:#}");
                continue;
            }
            let now = self.apps.read().get(&id).cloned();
            let dev = before.record.prod.config.dev;
            // A dev app's change went live (it has no stage): its prod is put back.
            let (variant, config) = match dev {
                true => (Variant::Prod, &before.record.prod.config),
                false => (Variant::Stage, &before.record.stage.config),
            };
            if let (Some(now), Ok(dep)) = (now, self.deploy(&before.record, variant, config)) {
                let (prod, stage, old) = match dev {
                    true => (dep.clone(), dep.clone(), now.prod.clone()),
                    false => (now.prod.clone(), dep.clone(), now.stage.clone()),
                };
                let restored = Arc::new(App { record: before.record.clone(), prod, stage });
                self.replace(old, dep, restored);
            }
            if let Some(s) = snapshot {
                discard_snapshot(&s);
            }
        }
    }
}

/// Evaluates the file off the async workers (a file may compute for a while).
pub(super) async fn evaluate(
    loaded: &LoadedFile,
    params: &std::collections::BTreeMap<String, String>,
) -> Result<apply_file::ApplyFile, AppError> {
    let (name, content, params) = (loaded.name.clone(), loaded.content.clone(), params.clone());
    tokio::task::spawn_blocking(move || apply_file::evaluate(&name, &content, &params))
        .await
        .map_err(|e| AppError::Internal(e.into()))?
        .map_err(AppError::BadRequest)
}

/// Removes a snapshot made by a change that is not made, and its app's sources folder if that
/// is left empty (a create's).
fn discard_snapshot(snapshot: &Path) {
    remove_dir_logged(snapshot);
    if let Some(root) = snapshot.parent() {
        if std::fs::read_dir(root).map(|mut d| d.next().is_none()).unwrap_or(false) {
            let _ = std::fs::remove_dir(root);
        }
    }
}

fn fields_of(cfg: &AppConfig) -> Fields {
    Fields {
        params: cfg.params.clone(),
        container_options: cfg.container_options.clone(),
        build_args: cfg.build_args.clone(),
        app_config: cfg.app_config.clone(),
        git_branch: cfg.git_branch.clone(),
        git_commit: cfg.git_commit.clone(),
    }
}

fn set_fields(cfg: &mut AppConfig, f: &Fields) {
    cfg.params = f.params.clone();
    cfg.container_options = f.container_options.clone();
    cfg.build_args = f.build_args.clone();
    cfg.app_config = f.app_config.clone();
    cfg.git_branch = f.git_branch.clone();
    cfg.git_commit = f.git_commit.clone();
}

fn planned(item: &Item, version: Option<i64>, promoted: bool) -> AppliedApp {
    let (action, changes, kept) = match &item.action {
        Action::Create => ("create", Vec::new(), Vec::new()),
        Action::Update { changes, kept, .. } => ("update", changes.clone(), kept.clone()),
        Action::NoChange { kept } => ("unchanged", Vec::new(), kept.clone()),
    };
    AppliedApp { app_path: item.path.to_string(), action: action.into(), changes, kept, version, promoted }
}

fn response(loaded: &LoadedFile, dry_run: bool, apps: Vec<AppliedApp>) -> ApplyResponse {
    let count = |a: &str| apps.iter().filter(|x| x.action == a).count();
    ApplyResponse {
        file: loaded.name.clone(),
        commit: loaded.commit.clone(),
        dry_run,
        created: count("create"),
        updated: count("update"),
        unchanged: count("unchanged"),
        apps,
    }
}
