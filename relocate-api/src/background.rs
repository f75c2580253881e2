//! A background compactor: a thread that compacts one cache on a schedule, rate-limited by a budget
//! per round, and only while the cache's fragmentation (resident / live bytes) is above a target.

use crate::cache::RelocCache;
use crate::compact::Budget;
use crate::policy::Relocator;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// When and how much the background compactor works.
#[derive(Clone, Copy, Debug)]
pub struct CompactorConfig {
    /// Pause between rounds.
    pub interval: Duration,
    /// What one round may move (the rate limit is this budget per interval).
    pub budget: Budget,
    /// Rounds run only while `resident / live` is above this (e.g. 1.2).
    pub target_fragmentation: f64,
}

/// The running compactor; stops (and joins its thread) when dropped.
pub struct Compactor {
    stop: Arc<AtomicBool>,
    moved: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Compactor {
    /// Objects moved so far.
    pub fn moved_objects(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Starts a thread that compacts `cache` according to `config`.
pub fn start_compactor<T, R>(
    cache: Arc<RelocCache<T, R>>,
    config: CompactorConfig,
) -> std::io::Result<Compactor>
where
    T: Send + Sync + 'static,
    R: Relocator<T> + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let moved = Arc::new(AtomicU64::new(0));
    let thread = {
        let (stop, moved) = (stop.clone(), moved.clone());
        std::thread::Builder::new()
            .name("relocate-compactor".into())
            .spawn(move || {
                let reader = cache.reader();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::park_timeout(config.interval);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if cache.stats().fragmentation <= config.target_fragmentation {
                        continue;
                    }
                    let guard = reader.pin();
                    if let Ok(report) = cache.compact(&guard, config.budget) {
                        moved.fetch_add(report.moved_objects as u64, Ordering::Relaxed);
                    }
                    drop(guard);
                    cache.flush(&reader);
                    cache.release_empty_arenas();
                }
            })?
    };
    Ok(Compactor {
        stop,
        moved,
        thread: Some(thread),
    })
}
