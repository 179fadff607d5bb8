//! Admin API handlers for declarative apps: `POST /v1/apply` (`berth apply`) and the sync
//! routes (`/v1/syncs`, `/v1/syncs/run`). Each change runs to its end like every other admin
//! change ([`super::admin::to_the_end`]).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;

use super::admin::{to_the_end, AdminState};
use crate::api::{
    ApplyRequest, ApplyResponse, SyncInfo, SyncList, SyncRunResponse, SyncScheduleRequest, SyncScheduleResponse,
};
use crate::apps::AppError;

pub async fn apply(
    State(s): State<Arc<AdminState>>,
    Json(req): Json<ApplyRequest>,
) -> Result<Json<ApplyResponse>, AppError> {
    to_the_end(&s, |apps, cancel| async move { apps.apply(req, cancel).await }).await.map(Json)
}

pub async fn sync_schedule(
    State(s): State<Arc<AdminState>>,
    Json(req): Json<SyncScheduleRequest>,
) -> Result<Json<SyncScheduleResponse>, AppError> {
    to_the_end(&s, |apps, cancel| async move { crate::apps::schedule_sync(&apps, req, cancel).await }).await.map(Json)
}

pub async fn sync_list(State(s): State<Arc<AdminState>>) -> Result<Json<SyncList>, AppError> {
    Ok(Json(SyncList { syncs: crate::apps::list_syncs(&s.apps).await? }))
}

#[derive(Deserialize)]
pub struct IdQuery {
    id: String,
}

pub async fn sync_run(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<IdQuery>,
) -> Result<Json<SyncRunResponse>, AppError> {
    to_the_end(&s, |apps, _| async move { crate::apps::run_sync(&apps, &q.id).await }).await.map(Json)
}

pub async fn sync_delete(
    State(s): State<Arc<AdminState>>,
    Query(q): Query<IdQuery>,
) -> Result<Json<SyncInfo>, AppError> {
    Ok(Json(crate::apps::delete_sync(&s.apps, &q.id).await?))
}
