//! Engine event watcher: moves a running app to `Stopped` the moment its container exits, so
//! the next request starts it again. Reconnects with a short backoff and re-checks every app
//! after a gap in the stream.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::Apps;
use crate::engine;

pub fn spawn_watcher(apps: &Arc<Apps>) {
    let apps_weak = Arc::downgrade(apps);
    let cancel = apps.cancel.clone();
    apps.tasks.spawn(async move {
        let mut first = true;
        loop {
            let Some(apps) = apps_weak.upgrade() else { return };
            let mut stream = Box::pin(apps.engine.events((engine::LABEL_INSTANCE, &apps.instance)));
            if !first {
                for rt in apps.runtimes() {
                    rt.resync().await;
                }
            }
            first = false;
            drop(apps);
            loop {
                let next = tokio::select! {
                    n = stream.next() => n,
                    _ = cancel.cancelled() => return,
                };
                match next {
                    Some(Ok(ev)) => {
                        let Some(apps) = apps_weak.upgrade() else { return };
                        for rt in apps.runtimes() {
                            rt.on_container_event(&ev.container_id, &ev.action);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!("engine event stream failed: {e}");
                        break;
                    }
                    None => break,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = cancel.cancelled() => return,
            }
        }
    });
}
