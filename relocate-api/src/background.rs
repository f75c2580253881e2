//! A background compactor: a thread that compacts one cache (a [`RelocCache`] or a [`BlobCache`]) on
//! a schedule, rate-limited by a budget per round, and only while the cache's fragmentation
//! (resident / live bytes) is above a target; for a `BlobCache` each round also gives back the
//! vacant handle-table slots of classes that shrank.

use crate::blob::BlobCache;
use crate::cache::{CacheError, Guard, Reader, RelocCache};
use crate::compact::{Budget, CompactReport};
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

/// A cache a [`Compactor`] can serve: [`RelocCache`] and [`BlobCache`] (the trait is sealed).
pub trait Compactable: Send + Sync + sealed::Caches {
    /// One round of the background compactor's work, which a caller may also run itself: if the
    /// cache's fragmentation is above `config.target_fragmentation`, compacts it within
    /// `config.budget`, frees what the epoch allows and releases the arenas that emptied; then does
    /// the cache's own upkeep (a [`BlobCache`] gives back the vacant runs of handle-table slots of
    /// its sparse classes). Returns the objects moved. `reader` must be a reader of this cache.
    fn compact_round(&self, reader: &Reader<'_>, config: &CompactorConfig) -> usize {
        let mut moved = 0;
        if self.fragmentation() > config.target_fragmentation {
            let guard = reader.pin();
            moved = (self.compact_within(&guard, config.budget))
                .map_or(0, |report| report.moved_objects);
            drop(guard);
            self.flush_with(reader);
            self.release_arenas();
        }
        self.upkeep();
        moved
    }

    /// A reader of this cache, for [`compact_round`](Self::compact_round).
    fn round_reader(&self) -> Reader<'_>;
}

/// What a round needs of a cache: its own methods of those names, which the two caches have
/// separately.
mod sealed {
    use crate::cache::{CacheError, Guard, Reader};
    use crate::compact::{Budget, CompactReport};

    pub trait Caches {
        fn fragmentation(&self) -> f64;
        fn compact_within(
            &self,
            guard: &Guard,
            budget: Budget,
        ) -> Result<CompactReport, CacheError>;
        fn flush_with(&self, reader: &Reader<'_>);
        fn release_arenas(&self);
        fn upkeep(&self) {}
    }
}

impl<T, R> sealed::Caches for RelocCache<T, R>
where
    T: Send + Sync + 'static,
    R: Relocator<T>,
{
    fn fragmentation(&self) -> f64 {
        self.stats().fragmentation
    }

    fn compact_within(&self, guard: &Guard, budget: Budget) -> Result<CompactReport, CacheError> {
        self.compact(guard, budget)
    }

    fn flush_with(&self, reader: &Reader<'_>) {
        self.flush(reader);
    }

    fn release_arenas(&self) {
        self.release_empty_arenas();
    }
}

impl<T, R> Compactable for RelocCache<T, R>
where
    T: Send + Sync + 'static,
    R: Relocator<T>,
{
    fn round_reader(&self) -> Reader<'_> {
        self.reader()
    }
}

impl sealed::Caches for BlobCache {
    fn fragmentation(&self) -> f64 {
        self.stats().fragmentation
    }

    fn compact_within(&self, guard: &Guard, budget: Budget) -> Result<CompactReport, CacheError> {
        self.compact(guard, budget)
    }

    fn flush_with(&self, reader: &Reader<'_>) {
        self.flush(reader);
    }

    fn release_arenas(&self) {
        self.release_empty_arenas();
    }

    fn upkeep(&self) {
        self.release_sparse_classes_slots();
    }
}

impl Compactable for BlobCache {
    fn round_reader(&self) -> Reader<'_> {
        self.reader()
    }
}

/// Starts a thread that compacts `cache` (a [`RelocCache`] or a [`BlobCache`]) according to
/// `config`: a [`Compactable::compact_round`] every `config.interval`.
pub fn start_compactor<C: Compactable + 'static>(
    cache: Arc<C>,
    config: CompactorConfig,
) -> std::io::Result<Compactor> {
    let stop = Arc::new(AtomicBool::new(false));
    let moved = Arc::new(AtomicU64::new(0));
    let thread = {
        let (stop, moved) = (stop.clone(), moved.clone());
        std::thread::Builder::new()
            .name("relocate-compactor".into())
            .spawn(move || {
                let reader = cache.round_reader();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::park_timeout(config.interval);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let round = cache.compact_round(&reader, &config);
                    moved.fetch_add(round as u64, Ordering::Relaxed);
                }
            })?
    };
    Ok(Compactor {
        stop,
        moved,
        thread: Some(thread),
    })
}
