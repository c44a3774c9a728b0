//! Argon2 working memory, reused across hashes and handed back to the OS when idle.
//!
//! Argon2id is memory-hard: each hash fills `m_cost` KiB (19 MiB by default). Allocating that per
//! hash on whichever blocking thread runs it leaves every thread's malloc arena holding its own
//! copy, so a login flood ratchets the process's memory up and it stays up. Here there is one
//! buffer per hashing slot, reused, so hashing never holds more than `slots × m_cost`; after
//! `IDLE_RELEASE` without a hash the buffers are freed.
//!
//! Each buffer is allocated with a capacity of at least glibc's largest mmap threshold, so the
//! allocator always maps it on its own and unmaps it on free: the memory really goes back to the
//! OS (pages never touched beyond `m_cost` are never resident).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argon2::Block;

/// A hash finished this long ago with none since: the buffers are freed.
const IDLE_RELEASE: Duration = Duration::from_secs(2);
/// glibc's `DEFAULT_MMAP_THRESHOLD_MAX` on 64-bit targets: allocations at least this large are
/// always served by `mmap` (the dynamic threshold never rises above it).
const ALWAYS_MAPPED_BYTES: usize = 32 * 1024 * 1024;

/// The pool of working-memory buffers.
#[derive(Debug)]
pub(crate) struct HashMemory {
    blocks: usize,
    free: Mutex<Vec<Vec<Block>>>,
    epoch: Instant,
    last_used_ms: AtomicU64,
    reaper_running: AtomicBool,
}

impl HashMemory {
    /// A pool of buffers of `blocks` 1 KiB blocks each (allocated on first use).
    pub(crate) fn new(blocks: usize) -> Self {
        Self {
            blocks,
            free: Mutex::new(Vec::new()),
            epoch: Instant::now(),
            last_used_ms: AtomicU64::new(0),
            reaper_running: AtomicBool::new(false),
        }
    }

    /// A buffer of at least `blocks` blocks: a pooled one when it is large enough.
    pub(crate) fn take(&self, blocks: usize) -> Vec<Block> {
        if blocks <= self.blocks {
            let pooled = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
            if let Some(buffer) = pooled {
                return buffer;
            }
        }
        allocate(blocks.max(self.blocks))
    }

    /// Returns a buffer to the pool (an odd-sized one is freed).
    pub(crate) fn give_back(&self, buffer: Vec<Block>) {
        self.last_used_ms.store(self.now_ms(), Ordering::Relaxed);
        if buffer.len() == self.blocks {
            self.free
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(buffer);
        }
    }

    /// Buffers held now (for tests and the idle check).
    pub(crate) fn pooled(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn idle(&self) -> bool {
        let idle_ms = self
            .now_ms()
            .saturating_sub(self.last_used_ms.load(Ordering::Relaxed));
        u128::from(idle_ms) >= IDLE_RELEASE.as_millis()
    }

    /// Starts (once) a task that frees the buffers after an idle spell; it ends when it has.
    pub(crate) fn release_when_idle(self: &std::sync::Arc<Self>) {
        if self.reaper_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(IDLE_RELEASE).await;
                if pool.idle() {
                    let freed =
                        std::mem::take(&mut *pool.free.lock().unwrap_or_else(|p| p.into_inner()));
                    drop(freed);
                    pool.reaper_running.store(false, Ordering::Release);
                    // A hash may have returned a buffer between the check and the flag: look again.
                    if pool.pooled() == 0 || pool.reaper_running.swap(true, Ordering::AcqRel) {
                        return;
                    }
                }
            }
        });
    }
}

fn allocate(blocks: usize) -> Vec<Block> {
    let capacity = blocks.max(ALWAYS_MAPPED_BYTES / Block::SIZE);
    let mut buffer = Vec::with_capacity(capacity);
    buffer.resize(blocks, Block::default());
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_odd_sizes_are_not_pooled() {
        let pool = HashMemory::new(16);
        let first = pool.take(16);
        assert_eq!(first.len(), 16);
        let address = first.as_ptr();
        pool.give_back(first);
        assert_eq!(pool.pooled(), 1);
        let again = pool.take(8);
        assert_eq!(again.as_ptr(), address, "the pooled buffer is reused");
        pool.give_back(again);
        let large = pool.take(64);
        assert_eq!(large.len(), 64);
        pool.give_back(large);
        assert_eq!(
            pool.pooled(),
            1,
            "a larger one-off buffer is freed, not kept"
        );
    }

    #[tokio::test]
    async fn idle_buffers_are_freed() {
        let pool = std::sync::Arc::new(HashMemory::new(16));
        let buffer = pool.take(16);
        pool.give_back(buffer);
        pool.release_when_idle();
        pool.release_when_idle();
        assert_eq!(pool.pooled(), 1);
        let deadline = Instant::now() + IDLE_RELEASE * 4;
        while pool.pooled() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(pool.pooled(), 0, "freed after an idle spell");
    }
}
