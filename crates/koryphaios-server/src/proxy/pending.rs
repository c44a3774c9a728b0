//! The `credential_use` records still being written, so that shutdown can wait for them.
//!
//! A call's record is written by a task spawned when its response body drops ([`super::call`]):
//! nothing awaits that task, and a graceful shutdown that closed the store first would lose the
//! records of the last calls. Each task holds an [`InFlight`] while it runs; shutdown waits (for
//! at most its grace period) until none is left, then closes the store. A counter and a
//! [`Notify`] are all this needs (tokio-util's `TaskTracker` would be one more dependency).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Inner {
    count: AtomicUsize,
    idle: Notify,
}

/// The record writes in flight (cloning shares the count).
#[derive(Debug, Clone, Default)]
pub struct PendingRecords {
    inner: Arc<Inner>,
}

/// One write in flight; it is over when this is dropped.
#[derive(Debug)]
pub struct InFlight {
    inner: Arc<Inner>,
}

impl PendingRecords {
    /// Counts one more write until the returned guard drops. Called before the task is spawned,
    /// so a shutdown that starts in between still sees it.
    pub fn start(&self) -> InFlight {
        self.inner.count.fetch_add(1, Ordering::AcqRel);
        InFlight {
            inner: Arc::clone(&self.inner),
        }
    }

    /// How many writes are in flight.
    pub fn count(&self) -> usize {
        self.inner.count.load(Ordering::Acquire)
    }

    /// Resolves once no write is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            // Registered before the count is read: a last write ending in between still wakes us.
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.inner.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn idle_waits_for_every_write_in_flight() {
        let pending = PendingRecords::default();
        pending.idle().await;
        let first = pending.start();
        let second = pending.clone().start();
        assert_eq!(pending.count(), 2);
        let waiter = tokio::spawn({
            let pending = pending.clone();
            async move { pending.idle().await }
        });
        drop(first);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(second);
        });
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("idle once the last write ended")
            .expect("the waiter did not panic");
        assert_eq!(pending.count(), 0);
    }
}
