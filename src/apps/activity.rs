//! Activity tracking for one app: how many requests, streams and tunnels are in flight, and
//! when the last one ended. The idle reaper reads it; the proxy holds an [`ActivityGuard`] for
//! as long as a response body or an upgraded connection is open.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

pub struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` at which the last request started or ended.
    last_ms: AtomicU64,
    epoch: Instant,
    /// Woken when `in_flight` drops to zero.
    idle: Notify,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            idle: Notify::new(),
        }
    }
}

impl Activity {
    /// Marks a request as in flight until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> ActivityGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        ActivityGuard(self.clone())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// When the app was last used (a request started or ended).
    pub fn last_activity(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::SeqCst))
    }

    /// Resets the idle clock (at boot, after a start).
    pub fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::SeqCst);
    }

    /// Resolves once `in_flight` has dropped to zero after this call was made.
    pub fn idle_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.idle.notified()
    }
}

/// Keeps an app counted as busy; dropping it ends the activity.
pub struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.touch();
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn guards_count_and_notify() {
        let a = Arc::new(Activity::default());
        let g1 = a.enter();
        let g2 = a.enter();
        assert_eq!(a.in_flight(), 2);
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move {
                let n = a.idle_notified();
                n.await;
            })
        };
        tokio::task::yield_now().await;
        drop(g1);
        assert!(!waiter.is_finished());
        drop(g2);
        tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap();
        assert_eq!(a.in_flight(), 0);
    }
}
