//! Running scheduled syncs (`berth sync ...`): an apply file re-applied every N minutes by a
//! background task, on `sync run`, or by its webhook. For a file in git, a scheduled run first
//! asks git for the branch's commit (`git ls-remote`, bounded by the fetch timeout) and applies
//! only when it moved. Syncs live in the store, so they survive restarts. The pure parts
//! (options, due times, when to apply) are `declare::sync`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{AppError, Apps};
use crate::api::{ApplyRequest, ApplyResponse, SyncInfo, SyncRunResponse, SyncScheduleRequest, SyncScheduleResponse};
use crate::declare::sync::{self as plan, SyncOptions};
use crate::ids;
use crate::source::{self, SourceSpec};
use crate::store::{now_secs, SyncRecord, SyncRun};

/// What one run of a sync did (see [`run_sync`]).
pub type SyncOutcome = SyncRunResponse;

/// The longest the scheduler sleeps before looking at the stored syncs again (a sync scheduled
/// meanwhile is first run by `sync schedule` itself).
const SCHEDULER_PERIOD: Duration = Duration::from_secs(5);

/// Test-only: with this environment variable set to `1` in the server's environment,
/// `--minutes` accepts fractions of a minute.
pub const SHORT_SYNC_ENV: &str = "BERTH_TEST_SHORT_SYNC";

fn allow_short() -> bool {
    std::env::var(SHORT_SYNC_ENV).is_ok_and(|v| v == "1")
}

fn info(rec: &SyncRecord) -> SyncInfo {
    let opts: SyncOptions = serde_json::from_str(&rec.options).unwrap_or_default();
    SyncInfo {
        id: rec.id.clone(),
        file: rec.file.clone(),
        branch: opts.branch,
        minutes: rec.minutes,
        promote: opts.promote,
        last_run_at: rec.last_run_at,
        last_commit: rec.last_commit.clone(),
        last_result: rec.last_result.clone(),
        last_error: rec.last_error.clone(),
    }
}

/// `sync schedule`: checks the file (it must load and evaluate), stores the sync with a new
/// webhook secret, and runs it once at once.
pub async fn schedule_sync(
    apps: &Arc<Apps>,
    req: SyncScheduleRequest,
    cancel: CancellationToken,
) -> Result<SyncScheduleResponse, AppError> {
    let minutes = plan::check_minutes(req.minutes.unwrap_or(plan::DEFAULT_MINUTES), allow_short())
        .map_err(AppError::BadRequest)?;
    let loaded = apps.load_apply_file(&req.file, req.branch.as_deref(), &cancel).await?;
    super::apply::evaluate(&loaded, &req.params).await?;
    let options = SyncOptions {
        branch: req.branch.clone(),
        params: req.params.clone(),
        promote: req.promote,
        approve: req.approve,
        clobber: req.clobber,
    };
    let record = SyncRecord {
        id: format!("sync_{}", ids::random_id(20)),
        file: req.file.trim().to_string(),
        minutes,
        options: serde_json::to_string(&options).map_err(|e| AppError::Internal(e.into()))?,
        secret: ids::random_id(40),
        created_at: now_secs(),
        last_run_at: None,
        last_commit: None,
        last_result: None,
        last_error: None,
    };
    apps.store.insert_sync(&record).await?;
    tracing::info!(sync = %record.id, file = %record.file, minutes, "sync scheduled");
    let (first_run, first_error) = match run_record(apps, &record, true, &cancel).await {
        Ok(r) => (r, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let now = apps.store.sync(&record.id).await?.unwrap_or(record.clone());
    Ok(SyncScheduleResponse { sync: info(&now), webhook_secret: record.secret, first_run, first_error })
}

pub async fn list_syncs(apps: &Apps) -> Result<Vec<SyncInfo>, AppError> {
    Ok(apps.store.list_syncs().await?.iter().map(info).collect())
}

pub async fn delete_sync(apps: &Apps, id: &str) -> Result<SyncInfo, AppError> {
    let rec = stored(apps, id).await?;
    apps.store.delete_sync(id).await?;
    apps.admin.forget(&sync_lock_key(id));
    tracing::info!(sync = %id, "sync deleted");
    Ok(info(&rec))
}

async fn stored(apps: &Apps, id: &str) -> Result<SyncRecord, AppError> {
    apps.store.sync(id.trim()).await?.ok_or_else(|| AppError::NotFound(format!("sync not found: {id}")))
}

/// Runs the sync `id` now, whatever its file's commit (`sync run`, and the sync webhook). The
/// run is recorded in the sync; a failed apply is also the error.
pub async fn run_sync(apps: &Arc<Apps>, id: &str) -> Result<SyncOutcome, AppError> {
    let rec = stored(apps, id).await?;
    let applied = run_record(apps, &rec, true, &apps.cancel.child_token()).await?;
    let now = stored(apps, id).await?;
    Ok(SyncRunResponse { sync: info(&now), applied })
}

/// The webhook secret of the sync `id` (it signs `/_berth/webhook/sync` requests).
pub async fn sync_webhook_secret(apps: &Apps, id: &str) -> Result<String, AppError> {
    Ok(stored(apps, id).await?.secret)
}

/// One run: asks git for the file's commit (files in git), applies when [`plan::must_apply`],
/// records the result. Returns the apply's response (None: the commit had not moved).
async fn run_record(
    apps: &Apps,
    rec: &SyncRecord,
    forced: bool,
    cancel: &CancellationToken,
) -> Result<Option<ApplyResponse>, AppError> {
    // One run of a sync at a time (the schedule, `sync run` and the webhook may meet); the
    // record is read again once it is this run's turn.
    let _one_at_a_time = apps.admin.app_mutex(&sync_lock_key(&rec.id)).lock_owned().await;
    let rec = &stored(apps, &rec.id).await?;
    let opts: SyncOptions = serde_json::from_str(&rec.options).map_err(|e| AppError::Internal(e.into()))?;
    let result: Result<(Option<String>, Option<ApplyResponse>), AppError> = async {
        let remote = match SourceSpec::parse(&rec.file) {
            Ok(SourceSpec::Git { repo, .. }) => {
                let timeout = Duration::from_secs(apps.config.source.fetch_timeout_secs);
                let limits = source::FetchLimits { timeout, cancel };
                let commit = source::remote_commit(&repo, opts.branch.as_deref(), limits)
                    .await
                    .map_err(|e| AppError::BadRequest(format!("{e:#}")))?;
                Some(commit)
            }
            _ => None,
        };
        if !plan::must_apply(forced, rec.last_commit.as_deref(), remote.as_deref()) {
            return Ok((remote, None));
        }
        let req = ApplyRequest {
            file: rec.file.clone(),
            branch: opts.branch.clone(),
            params: opts.params.clone(),
            glob: None,
            approve: opts.approve,
            promote: opts.promote,
            dry_run: false,
            clobber: opts.clobber,
        };
        let applied = apps.apply(req, cancel.clone()).await?;
        Ok((applied.commit.clone().or(remote), Some(applied)))
    }
    .await;
    let at = now_secs();
    let error = result.as_ref().err().map(|e| e.to_string());
    let run = match &result {
        Ok((commit, applied)) => SyncRun {
            at,
            commit: commit.as_deref(),
            result: if applied.is_some() { "applied" } else { "unchanged" },
            error: None,
        },
        Err(_) => SyncRun { at, commit: None, result: "failed", error: error.as_deref() },
    };
    apps.store.record_sync_run(&rec.id, &run).await?;
    match &result {
        Ok(_) => tracing::info!(sync = %rec.id, result = run.result, "sync ran"),
        Err(e) => tracing::warn!(sync = %rec.id, "sync failed: {e}"),
    }
    result.map(|(_, applied)| applied)
}

/// Starts the scheduler: a task (in `Apps::tasks`, ended by `Apps::cancel` at shutdown) that
/// runs every stored sync when it is due.
pub fn spawn_scheduler(apps: &Arc<Apps>) {
    let (weak, cancel) = (Arc::downgrade(apps), apps.cancel.clone());
    apps.tasks.spawn(async move {
        loop {
            let wait = match weak.upgrade() {
                Some(apps) => run_due(&apps, &cancel).await,
                None => return,
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
}

/// Runs the syncs that are due; returns how long to sleep before looking again.
async fn run_due(apps: &Apps, cancel: &CancellationToken) -> Duration {
    let syncs = match apps.store.list_syncs().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot read the syncs: {e:#}");
            return SCHEDULER_PERIOD;
        }
    };
    let mut wait = SCHEDULER_PERIOD;
    for rec in syncs {
        if cancel.is_cancelled() {
            break;
        }
        let now_ms = now_millis();
        let due = plan::next_due_ms(rec.created_at, rec.last_run_at, rec.minutes);
        if due <= now_ms {
            let _ = run_record(apps, &rec, false, &cancel.child_token()).await;
            let after = plan::next_due_ms(rec.created_at, Some(now_secs()), rec.minutes);
            wait = wait.min(Duration::from_millis((after - now_millis()).max(100) as u64));
        } else {
            wait = wait.min(Duration::from_millis((due - now_ms) as u64));
        }
    }
    wait
}

/// The key of a sync's run mutex among the per-app admin mutexes (app ids never start so).
fn sync_lock_key(id: &str) -> String {
    format!("sync:{}", id.trim())
}

fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
