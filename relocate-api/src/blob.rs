//! The byte-blob flavour: variable-size values (1 B to `MAX_BLOB_BYTES`) stored by size class, as
//! zsmalloc stores compressed pages.
//!
//! Each size class is a [`RelocCache`] of fixed-size chunks (`Chunk<N>`: a 4-byte length, then the
//! bytes), all sharing one epoch collector, so one guard covers every class. A [`BlobHandle`] is 8 bytes
//! like any handle: the class sits in the top bits of the slot index. Handles, compaction, evacuation and
//! eviction are the class caches' own, applied to every class in turn.

use crate::cache::{next_epoch_id, CacheError, Guard, Reader, RelocCache};
use crate::compact::{Budget, CacheStats, CompactReport};
use crate::handle::Handle;
use crate::policy::{BitwiseMove, Relocatable};
use crossbeam_epoch::Collector;
use std::sync::atomic::{AtomicU64, Ordering};

/// The largest blob: the largest slab class minus the 4-byte length.
pub const MAX_BLOB_BYTES: usize = (32 << 10) - 4;
const CLASS_SHIFT: u32 = 26;
const INDEX_MASK: u32 = (1 << CLASS_SHIFT) - 1;

/// A handle to a blob: `(class, slot index, generation)` in 8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlobHandle(u64);

impl BlobHandle {
    pub fn to_bits(self) -> u64 {
        self.0
    }

    /// Any value is safe: a wrong one resolves to `None`.
    pub fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    fn new(class: usize, bits: u64) -> Option<Self> {
        let index = bits as u32;
        (index <= INDEX_MASK).then_some(Self(bits | ((class as u64) << CLASS_SHIFT)))
    }

    fn split(self) -> (usize, u64) {
        let index = self.0 as u32;
        (
            (index >> CLASS_SHIFT) as usize,
            (self.0 & !(u64::from(!INDEX_MASK))),
        )
    }
}

/// `N` bytes: a little-endian `u32` length, then the value.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Chunk<const N: usize>([u8; N]);

// SAFETY: plain bytes: no interior mutability, no self-reference.
unsafe impl<const N: usize> Relocatable for Chunk<N> {}

impl<const N: usize> Chunk<N> {
    fn bytes(&self) -> &[u8] {
        let len = u32::from_le_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]) as usize;
        &self.0[4..4 + len]
    }

    fn from_bytes(value: &[u8]) -> Self {
        let mut chunk = [0u8; N];
        chunk[..4].copy_from_slice(&(value.len() as u32).to_le_bytes());
        chunk[4..4 + value.len()].copy_from_slice(value);
        Self(chunk)
    }
}

/// One class, with the chunk size erased.
trait Class: Send + Sync {
    fn capacity(&self) -> usize;
    fn insert(&self, value: &[u8]) -> Result<u64, CacheError>;
    fn get<'g>(&'g self, bits: u64, guard: &'g Guard) -> Option<&'g [u8]>;
    fn replace(&self, bits: u64, guard: &Guard, value: &[u8]) -> Result<bool, CacheError>;
    fn remove(&self, bits: u64, guard: &Guard) -> bool;
    fn compact(&self, guard: &Guard, budget: Budget) -> Result<CompactReport, CacheError>;
    fn evacuate(
        &self,
        guard: &Guard,
        arena: usize,
        budget: Budget,
    ) -> Result<CompactReport, CacheError>;
    fn evict_arena(
        &self,
        guard: &Guard,
        arena: usize,
        on_evict: &mut dyn FnMut(u64, &[u8]),
    ) -> usize;
    fn live_by_arena(&self, into: &mut Vec<(usize, usize)>);
    fn stats(&self) -> CacheStats;
    fn flush(&self, reader: &Reader<'_>);
}

impl<const N: usize> Class for RelocCache<Chunk<N>, BitwiseMove> {
    fn capacity(&self) -> usize {
        N - 4
    }

    fn insert(&self, value: &[u8]) -> Result<u64, CacheError> {
        RelocCache::insert(self, Chunk::<N>::from_bytes(value))
            .map(|h| h.to_bits())
            .map_err(|(_, e)| e)
    }

    fn get<'g>(&'g self, bits: u64, guard: &'g Guard) -> Option<&'g [u8]> {
        RelocCache::get(self, Handle::from_bits(bits), guard).map(Chunk::bytes)
    }

    fn replace(&self, bits: u64, guard: &Guard, value: &[u8]) -> Result<bool, CacheError> {
        self.update(Handle::from_bits(bits), guard, |_| {
            Chunk::<N>::from_bytes(value)
        })
    }

    fn remove(&self, bits: u64, guard: &Guard) -> bool {
        RelocCache::remove(self, Handle::from_bits(bits), guard)
    }

    fn compact(&self, guard: &Guard, budget: Budget) -> Result<CompactReport, CacheError> {
        RelocCache::compact(self, guard, budget)
    }

    fn evacuate(
        &self,
        guard: &Guard,
        arena: usize,
        budget: Budget,
    ) -> Result<CompactReport, CacheError> {
        self.evacuate_arena(guard, arena, budget)
    }

    fn evict_arena(
        &self,
        guard: &Guard,
        arena: usize,
        on_evict: &mut dyn FnMut(u64, &[u8]),
    ) -> usize {
        self.evict_in_arena(guard, arena, |h, chunk| {
            on_evict(h.to_bits(), chunk.bytes())
        })
        .map_or(0, |r| r.evicted)
    }

    fn live_by_arena(&self, into: &mut Vec<(usize, usize)>) {
        if let Ok(arenas) = self.live_bytes_by_arena() {
            for (arena, bytes) in arenas {
                match into.iter_mut().find(|(a, _)| *a == arena) {
                    Some((_, total)) => *total += bytes,
                    None => into.push((arena, bytes)),
                }
            }
        }
    }

    fn stats(&self) -> CacheStats {
        RelocCache::stats(self)
    }

    fn flush(&self, reader: &Reader<'_>) {
        RelocCache::flush(self, reader)
    }
}

macro_rules! classes {
    ($collector:expr, $epoch:expr; $($n:literal),*) => {{
        let classes: Vec<Box<dyn Class>> = vec![$( Box::new(RelocCache::<Chunk<$n>, BitwiseMove>::with_parts(BitwiseMove, $collector.clone(), $epoch, INDEX_MASK as usize + 1)?) ),*];
        classes
    }};
}

/// A relocating cache of byte strings of any size up to [`MAX_BLOB_BYTES`].
pub struct BlobCache {
    classes: Vec<Box<dyn Class>>,
    collector: Collector,
    /// The collector's identity, shared by the classes (one guard serves them all).
    epoch: usize,
    /// Bytes `release_empty_arenas` gave back.
    released: AtomicU64,
}

impl BlobCache {
    pub fn new() -> Result<Self, CacheError> {
        let collector = Collector::new();
        let epoch = next_epoch_id();
        let classes = classes!(collector, epoch;
            16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768,
            896, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, 10240, 12288,
            14336, 16384, 20480, 24576, 28672, 32768);
        Ok(Self {
            classes,
            collector,
            epoch,
            released: AtomicU64::new(0),
        })
    }

    /// Registers the calling thread; one reader's guards serve every class.
    pub fn reader(&self) -> Reader<'_> {
        Reader::new(self.collector.register(), self.epoch)
    }

    fn class_for(&self, len: usize) -> Option<usize> {
        self.classes.iter().position(|c| c.capacity() >= len)
    }

    /// Stores a copy of `value`. `TooLarge` above [`MAX_BLOB_BYTES`].
    pub fn insert(&self, value: &[u8]) -> Result<BlobHandle, CacheError> {
        let class = self.class_for(value.len()).ok_or(CacheError::TooLarge)?;
        let bits = self.classes[class].insert(value)?;
        BlobHandle::new(class, bits).ok_or(CacheError::OutOfMemory)
    }

    /// The bytes a handle names, or `None` (stale, removed, evicted, foreign).
    pub fn get<'g>(&'g self, handle: BlobHandle, guard: &'g Guard) -> Option<&'g [u8]> {
        let (class, bits) = handle.split();
        self.classes.get(class)?.get(bits, guard)
    }

    /// Replaces a value. In place (same handle) when it fits the same class; otherwise the value moves
    /// to another class and the new handle is returned (the old one becomes stale). `None`: stale handle.
    pub fn replace(
        &self,
        handle: BlobHandle,
        guard: &Guard,
        value: &[u8],
    ) -> Result<Option<BlobHandle>, CacheError> {
        let (class, bits) = handle.split();
        let Some(cache) = self.classes.get(class) else {
            return Ok(None);
        };
        if self.class_for(value.len()) == Some(class) {
            return Ok(cache.replace(bits, guard, value)?.then_some(handle));
        }
        if cache.get(bits, guard).is_none() {
            return Ok(None);
        }
        let new = self.insert(value)?;
        if !cache.remove(bits, guard) {
            let (new_class, new_bits) = new.split();
            self.classes[new_class].remove(new_bits, guard);
            return Ok(None);
        }
        Ok(Some(new))
    }

    /// Removes a value (freed after the epoch). False for a stale handle.
    pub fn remove(&self, handle: BlobHandle, guard: &Guard) -> bool {
        let (class, bits) = handle.split();
        self.classes
            .get(class)
            .is_some_and(|c| c.remove(bits, guard))
    }

    /// Footprint compaction of every class (`budget` applies to each class in turn).
    pub fn compact(&self, guard: &Guard, budget: Budget) -> Result<CompactReport, CacheError> {
        let mut total = CompactReport::default();
        for class in &self.classes {
            total.merge(class.compact(guard, budget)?);
        }
        Ok(total)
    }

    /// Moves every blob out of one 2 MiB arena (`budget` applies to each class in turn).
    pub fn evacuate_arena(
        &self,
        guard: &Guard,
        arena: usize,
        budget: Budget,
    ) -> Result<CompactReport, CacheError> {
        let mut total = CompactReport::default();
        for class in &self.classes {
            total.merge(class.evacuate(guard, arena, budget)?);
        }
        Ok(total)
    }

    /// Eviction: removes every blob in the arena holding the fewest live bytes, telling `on_evict`.
    pub fn reclaim(&self, guard: &Guard, mut on_evict: impl FnMut(BlobHandle, &[u8])) -> usize {
        let mut arenas = Vec::new();
        for class in &self.classes {
            class.live_by_arena(&mut arenas);
        }
        let Some(&(arena, _)) = arenas.iter().min_by_key(|&&(a, bytes)| (bytes, a)) else {
            return 0;
        };
        let mut evicted = 0;
        for (index, class) in self.classes.iter().enumerate() {
            evicted += class.evict_arena(guard, arena, &mut |bits, bytes| {
                if let Some(h) = BlobHandle::new(index, bits) {
                    on_evict(h, bytes);
                }
            });
        }
        evicted
    }

    /// Frees what the epoch allows, in every class.
    pub fn flush(&self, reader: &Reader<'_>) {
        for class in &self.classes {
            class.flush(reader);
        }
    }

    /// Statistics summed over classes (`live_bytes` counts whole chunks).
    /// Returns the arenas that compaction or eviction emptied to the OS now, rather than after the
    /// decommit delay. Returns the bytes given back (shared by every movable cache in the process).
    pub fn release_empty_arenas(&self) -> usize {
        let released = alloc_core::movable::release_free_arenas();
        self.released.fetch_add(released as u64, Ordering::Relaxed);
        released
    }

    /// Statistics summed over the size classes.
    pub fn stats(&self) -> CacheStats {
        let mut total = CacheStats {
            live_objects: 0,
            live_bytes: 0,
            slabs: 0,
            resident_bytes: 0,
            fragmentation: 1.0,
            table_bytes: 0,
            counters: Default::default(),
        };
        total.counters.released_bytes = self.released.load(Ordering::Relaxed);
        for class in &self.classes {
            let s = class.stats();
            total.live_objects += s.live_objects;
            total.live_bytes += s.live_bytes;
            total.slabs += s.slabs;
            total.resident_bytes += s.resident_bytes;
            total.counters.moved_objects += s.counters.moved_objects;
            total.counters.moved_bytes += s.counters.moved_bytes;
            total.counters.refused_moves += s.counters.refused_moves;
            total.counters.callback_panics += s.counters.callback_panics;
            total.table_bytes += s.table_bytes;
            total.counters.evicted_objects += s.counters.evicted_objects;
            total.counters.compaction_nanos += s.counters.compaction_nanos;
        }
        if total.live_bytes > 0 {
            total.fragmentation = total.resident_bytes as f64 / total.live_bytes as f64;
        }
        total
    }
}
