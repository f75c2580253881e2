//! A cache's writes: [`insert`](RelocCache::insert) (and `insert_many`, a batch under one taking
//! of the lock), [`update`](RelocCache::update) (read-copy-update), and the removals (`remove`,
//! `remove_many`, `remove_with`, `take`). Inserts take the cache lock; an update or a removal
//! holds only its object's slot, and hands what it replaced or removed to the epoch (see `cache`
//! for the whole protocol in one paragraph, and `slot` for the slot's states).

use crate::cache::{alloc_block, CacheError, RelocCache};
use crate::guard::Guard;
use crate::handle::Handle;
use crate::inner::Inner;
use crate::policy::Relocator;
use crate::reentry;
use crate::slot::{self, Home, Slot, TryRemove};
use crate::view::SLOT_AHEAD;
use std::mem::ManuallyDrop;
use std::ptr::{self, NonNull};
use std::sync::Mutex;

/// Values [`RelocCache::insert_many`] stores under one taking of the cache lock: enough to make
/// the lock's cost per insert small, few enough that other threads' inserts (and a compactor's
/// rounds) wait at most a few microseconds for it.
const INSERT_BATCH: usize = 64;

impl<T: Send + Sync + 'static, R: Relocator<T>> RelocCache<T, R> {
    /// Stores `value` and returns its handle; gives the value back when memory is exhausted.
    pub fn insert(&self, value: T) -> Result<Handle<T>, (T, CacheError)> {
        let mut value = ManuallyDrop::new(value);
        // SAFETY: `init` writes one `T` into a fresh block for one; it runs only when the insert then
        // succeeds, so on failure the value was not taken and is given back.
        let inserted = unsafe {
            self.insert_with(|block| block.cast::<T>().write(ManuallyDrop::take(&mut value)))
        };
        inserted
            .map(|(handle, _)| handle)
            .map_err(|e| (ManuallyDrop::into_inner(value), e))
    }

    /// Stores every value of `values`, in order, and appends their handles to `handles`, as an
    /// [`insert`](Self::insert) of each would, but taking the cache lock once per
    /// `INSERT_BATCH` (64) values rather than once per value. Inserts into one cache are
    /// serialised by its lock: its two atomic operations are most of a warm insert's own time, and
    /// threads inserting together pass the lock's cache line back and forth at every insert.
    ///
    /// `values` is left empty. If memory runs out, the insert stops there: the values not stored
    /// stay in `values`, in order, and the error is returned (the handles of those stored are in
    /// `handles`), so nothing is lost. `handles` grows before the lock is taken.
    ///
    /// ```
    /// let cache: relocate_api::RelocCache<u64> = relocate_api::RelocCache::new().unwrap();
    /// let (mut values, mut handles) = ((0..1000).collect::<Vec<u64>>(), Vec::new());
    /// cache.insert_many(&mut values, &mut handles).unwrap();
    /// assert!(values.is_empty());
    /// let guard = cache.reader().pin();
    /// assert_eq!(cache.get(handles[999], &guard), Some(&999));
    /// ```
    pub fn insert_many(
        &self,
        values: &mut Vec<T>,
        handles: &mut Vec<Handle<T>>,
    ) -> Result<(), CacheError> {
        handles.reserve(values.len());
        let count = values.len();
        let base = values.as_mut_ptr();
        // The values are taken out one by one below; should anything panic meanwhile, those not
        // yet stored leak rather than being dropped twice.
        // SAFETY: 0 is within capacity, and no value is left to drop in the vector.
        unsafe { values.set_len(0) };
        let mut stored = 0;
        let mut result = Ok(());
        'batches: while stored < count {
            let mut inner = match self.lock() {
                Ok(inner) => inner,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            for _ in 0..INSERT_BATCH.min(count - stored) {
                // SAFETY: `init` moves value `stored`, which was not moved yet, into a block for one
                // `T`; it is called only if the insert succeeds, and `stored` counts it then.
                let inserted = unsafe {
                    self.insert_locked(&mut inner, |block| {
                        ptr::copy_nonoverlapping(base.add(stored), block.cast::<T>().as_ptr(), 1)
                    })
                };
                match inserted {
                    Ok((handle, _)) => {
                        handles.push(handle);
                        stored += 1;
                    }
                    Err(e) => {
                        result = Err(e);
                        break 'batches;
                    }
                }
            }
        }
        // SAFETY: values `stored..count` were not moved out; they go to the front, the vector's
        // length then covering exactly them.
        unsafe {
            ptr::copy(base.add(stored), base, count - stored);
            values.set_len(count - stored);
        }
        result
    }

    /// Allocates a block, has `init` fill it, and publishes it under a new handle. `init` is called
    /// only if the insert then succeeds. With the handle, whether a byte-blob class's `BlobCache`
    /// should check if it joins its arena group (see `Inner::joins_itself`).
    ///
    /// # Safety
    /// - `init` leaves a valid object (`object_bytes` bytes) in the block and does not panic.
    pub(crate) unsafe fn insert_with(
        &self,
        init: impl FnOnce(NonNull<u8>),
    ) -> Result<(Handle<T>, bool), CacheError> {
        let mut inner = self.lock()?;
        // SAFETY: the caller's contract.
        unsafe { self.insert_locked(&mut inner, init) }
    }

    /// [`insert_with`](Self::insert_with) with the cache lock held (`inner`).
    ///
    /// # Safety
    /// [`insert_with`](Self::insert_with)'s contract.
    unsafe fn insert_locked(
        &self,
        inner: &mut Inner,
        init: impl FnOnce(NonNull<u8>),
    ) -> Result<(Handle<T>, bool), CacheError> {
        let join_due = inner.arena_group != 0 && inner.inserted & inner.join_check_mask == 0;
        if join_due && inner.joins_itself {
            self.join_arena_group_if_grown(inner);
        }
        let may_touch_more = inner.may_touch_more(|| self.live(inner));
        self.list_a_spare_slot(inner, may_touch_more)?;
        let (homes, table) = (&self.homes, &self.table);
        let Inner {
            heap,
            free: free_slots,
            spare_floor,
            home_units,
            ..
        } = inner;
        // The slot, and whether it is its block's home slot (and was fresh).
        let (mut index, mut home_taken) = (0, None);
        let block = heap.alloc_placed(|place| {
            let home = homes.index(place).filter(|&home| home < *spare_floor);
            // In a unit never used, the home slot is fresh: not read (its page stays untouched)
            // unless it may be used.
            let unit_used = |home| {
                let unit = homes.unit_of(home);
                home_units.last() == Some(&unit) || home_units.binary_search(&unit).is_ok()
            };
            let free = |slot: &Slot| slot.is_free_home() && (may_touch_more || !slot.is_fresh());
            let home = home.filter(|&home| may_touch_more || unit_used(home));
            index = match home.map(|home| (home, table.get_or_commit(home))) {
                Some((home, Some(slot))) if free(slot) => {
                    home_taken = Some(slot.is_fresh());
                    home
                }
                _ => free_slots.pop(table).expect("a spare was listed above"),
            };
            index
        });
        let Some(block) = block else {
            return Err(CacheError::OutOfMemory);
        };
        let slot = self.table.get(index).expect("a slot in use is accessible");
        if !slot::storable(block.as_ptr() as usize) {
            // Never for alloc-core's movable blocks; checked rather than assumed.
            // SAFETY: allocated just now from this heap and never published.
            unsafe { inner.heap.free(block) };
            if home_taken.is_none() {
                inner.free.push(index, slot);
            }
            return Err(CacheError::OutOfMemory);
        }
        if let Some(fresh) = home_taken {
            inner.took_home_slot(fresh);
            inner.note_home_unit(self.homes.unit_of(index));
        }
        init(block);
        inner.inserted += 1;
        let counter = slot.generation();
        slot.publish_new(block.as_ptr() as usize, self.home(index));
        Ok((
            self.handle_for(index, counter),
            join_due && !inner.joins_itself,
        ))
    }

    /// Makes sure a vacant slot is listed in `inner.free`, for an insert whose block's home slot
    /// turns out not to be free: the parked home slots, if the cache may use no fresh one
    /// (`may_touch_more`); then, if none is listed yet, a fresh slot.
    fn list_a_spare_slot(&self, inner: &mut Inner, may_touch_more: bool) -> Result<(), CacheError> {
        if inner.free.is_empty() && !may_touch_more {
            inner.list_parked_slots(&self.table, &self.homes);
        }
        if inner.free.is_empty() {
            let index = (inner.fresh_slot(&self.table, self.claim_slots, self.homes.exist()))
                .ok_or(CacheError::OutOfMemory)?;
            let slot = self.table.get(index).expect("claimed slots are accessible");
            inner.free.push(index, slot);
        }
        Ok(())
    }

    /// Replaces the object with `f(&old)` (read-copy-update): readers see the old or the new value,
    /// never a torn one; concurrent updates of one object are serialised, a compaction leaves the
    /// object where it is while this update holds it (it counts as refused), and this update waits
    /// for a move under way. The old value is dropped after the epoch. Returns false for a stale
    /// handle.
    ///
    /// `f` may update or remove other objects (an update holds its object as a lock would, so two
    /// threads that update two objects inside each other's closures, in opposite orders, deadlock).
    /// An update of the same object from inside `f` would wait for itself, and returns
    /// `Err(CacheError::Reentrant)` (a removal of it panics, see [`remove`](Self::remove)); so does
    /// an update from inside one of this cache's relocation callbacks, whose thread holds the lock an
    /// update needs. Either way, before its closure runs.
    pub fn update(
        &self,
        handle: Handle<T>,
        guard: &Guard,
        f: impl FnOnce(&T) -> T,
    ) -> Result<bool, CacheError> {
        // SAFETY: `make` reads the `T` at the old address, which `update_with` holds for writing;
        // `write` puts one `T` in a fresh block for one and cannot panic.
        unsafe {
            self.update_with(
                handle,
                guard,
                |old| f(&*(old as *const T)),
                |value, block| block.cast::<T>().write(value),
            )
        }
    }

    /// The shape of every update: a block is allocated; with the object held for writing,
    /// `make(old address)` computes what the new copy needs (it may panic: the object is then
    /// released unchanged, and the block freed), `write` fills the block, the new address is
    /// published and the old copy retired.
    ///
    /// The block comes first, so that this code never waits for the cache's lock while it holds a
    /// slot (the closure `make` may: an insert or update of another object from inside it).
    ///
    /// # Safety
    /// - `write` leaves a valid object (`object_bytes` bytes) in the block and does not panic.
    pub(crate) unsafe fn update_with<V>(
        &self,
        handle: Handle<T>,
        guard: &Guard,
        make: impl FnOnce(usize) -> V,
        write: impl FnOnce(V, NonNull<u8>),
    ) -> Result<bool, CacheError> {
        self.check_guard(guard);
        let Some((slot, counter)) = self.resolve(handle) else {
            return Ok(false);
        };
        let home = self.home(handle.index());
        // From inside an update's closure of this very object, taking it would wait for itself.
        if self.holds_object(slot, counter, home) {
            return Err(CacheError::Reentrant);
        }
        // Stale for good once stale (generations only go up): no block for it, nor an
        // `OutOfMemory` where the answer is `false`.
        if !matches!(slot.snapshot(home), Some((gen, _)) if gen == counter) {
            return Ok(false);
        }
        // (Refused from inside this cache's relocation callbacks, whose thread holds the lock.)
        let block =
            alloc_block(&mut self.lock()?.heap, handle.index()).ok_or(CacheError::OutOfMemory)?;
        /// Frees the block unless it was published (a stale handle, a panicking `make`).
        struct Unpublished<'a>(&'a Mutex<Inner>, Option<NonNull<u8>>);
        impl Drop for Unpublished<'_> {
            fn drop(&mut self) {
                if let Some(block) = self.1 {
                    let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
                    // SAFETY: allocated by this update from this heap, and never published.
                    unsafe { inner.heap.free(block) };
                }
            }
        }
        let mut unpublished = Unpublished(&self.inner, Some(block));
        let Some(old) = slot.begin_write(counter, home) else {
            return Ok(false);
        };
        // Restores the slot if `make` panics, so the object does not stay locked (dropped before
        // `unpublished`, which then frees the block).
        struct Restore<'a>(&'a Slot, usize, Home);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                self.0.finish_write(self.1, self.2);
            }
        }
        let restore = Restore(slot, old, home);
        let new_value = reentry::holding(slot, || make(old));
        std::mem::forget(restore);
        write(new_value, block);
        slot.finish_write(block.as_ptr() as usize, home);
        unpublished.1 = None;
        // SAFETY: `finish_write` published the new block in place of `old`, which this update took.
        unsafe { self.retire(guard, old, None) };
        Ok(true)
    }

    /// Removes the object; it is dropped once no reader can hold it. False for a stale handle.
    ///
    /// # Panics
    /// If the removal would wait for its own thread: of an object from inside its own `update`'s
    /// closure, or from inside one of this cache's relocation callbacks of the object being moved
    /// (the same for `remove_with` and `remove_many`); and from inside one of this cache's
    /// relocation callbacks, of an object that another thread holds for writing (an update whose
    /// closure runs), which may be waiting for the lock the callback's thread holds. The object stays
    /// as it was: the update's closure, or the move, is abandoned. (`remove_many` may have removed
    /// the handles before the one that panicked.)
    pub fn remove(&self, handle: Handle<T>, guard: &Guard) -> bool {
        self.remove_with(handle, guard, |_| ()).is_some()
    }

    /// Removes the objects of many handles, as a [`remove`](Self::remove) of each in order would,
    /// and returns how many it removed (a stale, foreign or repeated handle removes nothing). For
    /// handles of scattered objects it is faster than a `remove` each: every removal takes its slot
    /// with an atomic read-modify-write, which waits for the loads before it, so one removal's cache
    /// miss cannot overlap the next one's; here the slots `SLOT_AHEAD` (16) handles further on are
    /// loaded while one is removed.
    pub fn remove_many(&self, handles: &[Handle<T>], guard: &Guard) -> usize {
        self.check_guard(guard);
        for handle in &handles[..handles.len().min(SLOT_AHEAD)] {
            self.table.prefetch_slot(handle.index());
        }
        let mut removed = 0;
        for (i, &handle) in handles.iter().enumerate() {
            if let Some(ahead) = handles.get(i + SLOT_AHEAD) {
                self.table.prefetch_slot(ahead.index());
            }
            removed += usize::from(self.remove_at(handle, guard, None, |_| ()).is_some());
        }
        removed
    }

    /// Removes the object and returns what `f` makes of it (e.g. a clone) before it is dropped.
    pub fn remove_with<U>(
        &self,
        handle: Handle<T>,
        guard: &Guard,
        f: impl FnOnce(&T) -> U,
    ) -> Option<U> {
        self.remove_at(handle, guard, None, |addr| {
            // SAFETY: the object was live until this removal, and is retired (not freed) after `f`.
            f(unsafe { &*(addr as *const T) })
        })
    }

    /// Removes the object (only while it is at `at`, if given: see [`Slot::begin_remove_if`]),
    /// calling `f` with its address (still valid) first.
    pub(crate) fn remove_at<U>(
        &self,
        handle: Handle<T>,
        guard: &Guard,
        at: Option<usize>,
        f: impl FnOnce(usize) -> U,
    ) -> Option<U> {
        self.check_guard(guard);
        let (slot, counter) = self.resolve(handle)?;
        let home = self.home(handle.index());
        if self.holds_object(slot, counter, home) {
            panic!(
                "relocate-api: RelocCache::remove of an object from inside its own update closure"
            );
        }
        let addr = if self.in_own_callback() {
            // The holder of a held slot is this thread's own move, or another thread's writer whose
            // closure may be waiting for the lock this thread holds (it may insert or update): never
            // wait for it. Nor answer as if the handle were stale, which could make the caller lose
            // the object.
            match slot.begin_remove_if(counter, home, false, at) {
                TryRemove::Removed(addr) => addr,
                TryRemove::Stale => return None,
                TryRemove::Held => panic!(
                    "relocate-api: RelocCache::remove, from inside a relocation callback, of an \
                     object being moved or held for writing by another thread"
                ),
            }
        } else {
            match slot.begin_remove_if(counter, home, true, at) {
                TryRemove::Removed(addr) => addr,
                _ => return None,
            }
        };
        // Account for the removal before `f` runs, so that a panicking `f` loses nothing: the block
        // stays valid for `f` all the same, since nothing retired under `guard` is freed before the
        // guard is gone.
        self.removed.add(1);
        // SAFETY: `begin_remove` emptied the slot and gave this remover its block.
        unsafe { self.retire(guard, addr, Some(handle.index())) };
        Some(f(addr))
    }

    /// Removes the object and gives it back by value. Needs `&mut self`: no reader can hold it.
    pub fn take(&mut self, handle: Handle<T>) -> Option<T> {
        let (slot, counter) = self.resolve(handle)?;
        let addr = slot.begin_remove(counter, self.home(handle.index()))?;
        // SAFETY: `&mut self` excludes every reader; the block is freed right after the read.
        let value = unsafe { ptr::read(addr as *const T) };
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the block belongs to this heap and nothing can reference it any more.
        unsafe { inner.heap.free(NonNull::new_unchecked(addr as *mut u8)) };
        inner.inserted -= 1;
        inner.release_slot(handle.index(), slot);
        Some(value)
    }
}
