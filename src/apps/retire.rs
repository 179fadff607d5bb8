//! Taking a replaced deployment out of service: if it was serving, its replacement is started
//! first; requests in flight on the old container finish (bounded); then the old runtime's
//! tasks stop and its container and image (when nothing else uses them) are removed.

use std::sync::Arc;
use std::time::Duration;

use super::plan::ImageSource;
use super::{Deployment, Registry};
use crate::engine::Engine;

/// How long in-flight requests on a replaced container may take to finish.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

pub(super) async fn retire(engine: Engine, old: Arc<Deployment>, new: Arc<Deployment>, current: Registry) {
    let (Some(old_rt), new_rt) = (old.runtime(), new.runtime()) else { return };
    if let Some(new_rt) = new_rt {
        if old_rt.state().upstream().is_some() {
            if let Err(e) = new_rt.ensure_running(true).await {
                tracing::warn!(app = %new.path, "the new version did not start: {e}");
            }
        }
    }
    // Cancel first (new requests re-route to the replacement), then let in-flight ones finish.
    old_rt.shutdown().await;
    let drain_deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
    while old_rt.activity.in_flight() > 0 && tokio::time::Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What is in use is read now, not when the replacement began: a later change may have
    // gone back to this container's configuration (same name) or image.
    if !current.container_in_use(&old_rt.container_name()) {
        if let Some(id) = old_rt.container_id() {
            if let Err(e) = engine.remove(&id).await {
                tracing::warn!(app = %old.path, "removing the replaced container failed: {e}");
            }
        }
    }
    if let ImageSource::Build(plan) = &old_rt.plan().image {
        if !current.image_in_use(&plan.image) {
            match engine.remove_image(&plan.image).await {
                Ok(true) => tracing::info!(app = %old.path, image = %plan.image, "removed the replaced image"),
                Ok(false) => {}
                Err(e) => tracing::warn!(app = %old.path, "removing the replaced image failed: {e}"),
            }
        }
    }
}
