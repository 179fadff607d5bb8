//! Upgraded connections (WebSocket and other `Upgrade:` protocols): once both sides have
//! switched, bytes are copied both ways until either closes. The activity guard lives as
//! long as the tunnel, so an open WebSocket keeps its app running.

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;

use crate::apps::activity::ActivityGuard;

pub async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, guard: Option<ActivityGuard>) {
    let _guard = guard;
    let (client, upstream): (Upgraded, Upgraded) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!("upgrade failed: {e}");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!("tunnel closed: {e}");
    }
}
