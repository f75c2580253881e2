//! A background compactor: a thread that compacts one cache (a [`RelocCache`] or a [`BlobCache`]) on
//! a schedule, rate-limited by a budget per round, and only while the cache's fragmentation
//! (resident / live bytes) is above a target; for a `BlobCache` each round also gives back the
//! vacant handle-table slots of classes that shrank.

use crate::blob::BlobCache;
use crate::cache::{CacheError, RelocCache};
use crate::compact::{Budget, CacheStats, CompactReport};
use crate::guard::{Guard, Reader};
use crate::policy::Relocator;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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

/// What background rounds did: one round's ([`Compactable::compact_round`]), or a compactor's so
/// far ([`Compactor::report`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackgroundReport {
    /// Rounds run, counting those whose compaction sat out after fruitless rounds (they still
    /// give memory and slots back).
    pub rounds: u64,
    /// Rounds that found the cache above its target fragmentation and compacted it.
    pub compactions: u64,
    /// What those compactions did, added up.
    pub compacted: CompactReport,
    /// Handle-table slots a [`BlobCache`]'s upkeep gave back to its shared table.
    pub returned_slots: u64,
}

impl BackgroundReport {
    /// Adds another report's figures to these.
    pub fn merge(&mut self, other: BackgroundReport) {
        self.rounds += other.rounds;
        self.compactions += other.compactions;
        self.compacted.merge(other.compacted);
        self.returned_slots += other.returned_slots;
    }
}

/// The running compactor; stops (and joins its thread) when dropped.
pub struct Compactor {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<BackgroundReport>>,
    thread: Option<JoinHandle<()>>,
}

impl Compactor {
    /// Objects moved so far.
    pub fn moved_objects(&self) -> u64 {
        self.report().compacted.moved_objects as u64
    }

    /// What the compactor has done so far.
    pub fn report(&self) -> BackgroundReport {
        *self.report.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the thread, waits for it, and returns what it did.
    ///
    /// # Panics
    /// With the thread's own panic, if it panicked (callbacks' panics and values' drop panics are
    /// caught and counted, so this is a defect's).
    pub fn stop(mut self) -> BackgroundReport {
        if let Err(payload) = self.halt() {
            std::panic::resume_unwind(payload);
        }
        self.report()
    }

    /// Stops the thread and waits for it: `Err` with its panic if it panicked.
    fn halt(&mut self) -> std::thread::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        thread.thread().unpark();
        thread.join()
    }
}

impl Drop for Compactor {
    /// Stops the thread. A panic of its own is not raised again here (a drop may run while a panic
    /// unwinds); its payload is forgotten, as its drop could panic too.
    fn drop(&mut self) {
        if let Err(payload) = self.halt() {
            std::mem::forget(payload);
        }
    }
}

/// A cache a [`Compactor`] can serve: [`RelocCache`] and [`BlobCache`] (the trait is sealed).
pub trait Compactable: Send + Sync + sealed::Caches {
    /// One round of the background compactor's work, which a caller may also run itself: if the
    /// cache's fragmentation is above `config.target_fragmentation`, compacts it within
    /// `config.budget` and frees what the epoch allows; then gives back to the OS the movable arenas
    /// that have had free memory for alloc-core's decommit delay (`release_aged_arenas`: what this
    /// round freed goes back up to one delay later, and an arena emptied and needed again meanwhile
    /// is reused, not unmapped, which spares readers a TLB shootdown each time), and does the
    /// cache's own upkeep (a [`BlobCache`] gives back the vacant runs of handle-table slots of its
    /// sparse classes). Returns what it did.
    ///
    /// # Panics
    /// If `reader` is not a reader of this cache.
    fn compact_round(&self, reader: &Reader<'_>, config: &CompactorConfig) -> BackgroundReport {
        run_round(self, reader, config, &self.slab_stats())
    }

    /// A reader of this cache, for [`compact_round`](Self::compact_round).
    fn round_reader(&self) -> Reader<'_>;
}

/// [`Compactable::compact_round`], on the cache's statistics `before` it (read once a round: they
/// take the cache's lock and walk its slabs).
fn run_round<C: Compactable + ?Sized>(
    cache: &C,
    reader: &Reader<'_>,
    config: &CompactorConfig,
    before: &CacheStats,
) -> BackgroundReport {
    let mut round = BackgroundReport {
        rounds: 1,
        ..BackgroundReport::default()
    };
    if before.fragmentation > config.target_fragmentation {
        let guard = reader.pin();
        // A compaction refused (`Reentrant`, from inside a callback) does nothing this round.
        round.compacted = cache
            .compact_within(&guard, config.budget)
            .unwrap_or_default();
        drop(guard);
        cache.flush_with(reader);
        round.compactions = 1;
    }
    cache.release_arenas();
    round.returned_slots = cache.upkeep() as u64;
    round
}

/// What a round needs of a cache: its own methods of those names, which the two caches have
/// separately.
mod sealed {
    use crate::cache::CacheError;
    use crate::compact::{Budget, CacheStats, CompactReport};
    use crate::guard::{Guard, Reader};

    pub trait Caches {
        /// The cache's statistics but its handle table's, which a round does not need.
        fn slab_stats(&self) -> CacheStats;
        fn compact_within(
            &self,
            guard: &Guard,
            budget: Budget,
        ) -> Result<CompactReport, CacheError>;
        fn flush_with(&self, reader: &Reader<'_>);
        fn release_arenas(&self);
        /// Returns the handle-table slots given back.
        fn upkeep(&self) -> usize {
            0
        }
        /// Told when a compactor's thread starts (`true`) and ends (`false`) its rounds, which
        /// then do the upkeep the cache would otherwise do on its own operations.
        fn background_upkeep(&self, _running: bool) {}
    }
}

/// The `Caches` methods that both caches have under names of their own.
macro_rules! by_own_methods {
    () => {
        fn slab_stats(&self) -> CacheStats {
            self.slab_stats()
        }

        fn compact_within(
            &self,
            guard: &Guard,
            budget: Budget,
        ) -> Result<CompactReport, CacheError> {
            self.compact(guard, budget)
        }

        fn flush_with(&self, reader: &Reader<'_>) {
            self.flush(reader);
        }

        fn release_arenas(&self) {
            self.release_aged_arenas();
        }
    };
}

impl<T, R> sealed::Caches for RelocCache<T, R>
where
    T: Send + Sync + 'static,
    R: Relocator<T>,
{
    by_own_methods!();
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
    by_own_methods!();

    fn upkeep(&self) -> usize {
        self.release_sparse_classes_slots()
    }

    fn background_upkeep(&self, running: bool) {
        self.upkept_in_background(running);
    }
}

impl Compactable for BlobCache {
    fn round_reader(&self) -> Reader<'_> {
        self.reader()
    }
}

/// How many rounds' compactions the compactor sits out after rounds that compacted but moved
/// nothing and freed nothing (its objects refused, or its removed blocks held back by a thread that
/// neither flushes nor unpins): one, then twice as many after each such round, up to
/// [`Backoff::MOST`]; none once a round does something. So a cache above its target that compaction
/// cannot improve costs a compaction now and then, and one that can is tried again within `MOST`
/// intervals. (Giving memory back and the cache's upkeep go on every round.)
#[derive(Default)]
struct Backoff {
    rounds: u32,
    left: u32,
}

impl Backoff {
    const MOST: u32 = 64;

    /// Whether to sit this round out.
    fn skip(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        true
    }

    fn after(&mut self, fruitless: bool) {
        self.rounds = if fruitless {
            (self.rounds * 2).clamp(1, Self::MOST)
        } else {
            0
        };
        self.left = self.rounds;
    }
}

/// Starts a thread that compacts `cache` (a [`RelocCache`] or a [`BlobCache`]) according to
/// `config`: a [`Compactable::compact_round`] every `config.interval`; after rounds that compacted but
/// moved and freed nothing, it sits out a growing number of intervals (up to 64) until a round does
/// something again. What its last rounds freed
/// stays mapped after it stops until alloc-core's own maintenance gives it back; call the cache's
/// `release_empty_arenas` to give it back at once.
pub fn start_compactor<C: Compactable + 'static>(
    cache: Arc<C>,
    config: CompactorConfig,
) -> std::io::Result<Compactor> {
    let stop = Arc::new(AtomicBool::new(false));
    let report = Arc::new(Mutex::new(BackgroundReport::default()));
    let thread = {
        let (stop, report) = (stop.clone(), report.clone());
        std::thread::Builder::new()
            .name("relocate-compactor".into())
            .spawn(move || {
                cache.background_upkeep(true);
                // Told again when the thread ends, however it ends.
                struct Upkept<'c, C: Compactable>(&'c C);
                impl<C: Compactable> Drop for Upkept<'_, C> {
                    fn drop(&mut self) {
                        self.0.background_upkeep(false);
                    }
                }
                let _upkept = Upkept(&*cache);
                let reader = cache.round_reader();
                let mut backoff = Backoff::default();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::park_timeout(config.interval);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let round = if backoff.skip() {
                        // Only the compaction sits out: memory to give back and the cache's
                        // upkeep do not wait.
                        cache.release_arenas();
                        BackgroundReport {
                            rounds: 1,
                            returned_slots: cache.upkeep() as u64,
                            ..BackgroundReport::default()
                        }
                    } else {
                        let before = cache.slab_stats();
                        let round = run_round(&*cache, &reader, &config, &before);
                        // Fruitless: it compacted, and neither its moves nor the flush changed
                        // what is resident or live.
                        let footprint = |s: &CacheStats| (s.resident_bytes, s.live_objects);
                        let fruitless = round.compactions > 0
                            && round.compacted.moved_objects == 0
                            && footprint(&cache.slab_stats()) == footprint(&before);
                        backoff.after(fruitless);
                        round
                    };
                    report
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .merge(round);
                }
            })?
    };
    Ok(Compactor {
        stop,
        report,
        thread: Some(thread),
    })
}
