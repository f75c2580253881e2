//! The read path: a handle to an address in one slot load ([`read_slot`]), a [`View`] for loops of
//! gets under one guard, and [`read_many`], which overlaps many lookups' cache misses.
//!
//! Readers take no lock and write nothing: an address read under a pinned guard of the table's
//! collector stays valid, and its object unchanged, until the guard is gone (moved, updated or
//! removed objects' old blocks are retired through the epoch).

use crate::handle::Handle;
use crate::home::HomeOf;
use crate::policy::Relocatable;
use crate::table::Slots;
use std::marker::PhantomData;

/// The address of the object `handle` names in `table`, if the handle carries the tag of
/// `tag_bits` (a cache's [`tag_bits`]) and its object's generation; valid while a guard of the
/// table's collector is pinned. `home_base` is the cache's [`Homes::base`] (0 for no homes).
#[inline]
pub(crate) fn read_slot<T>(
    slots: Slots<'_>,
    (tag_bits, home_base): (u64, usize),
    handle: Handle<T>,
) -> Option<usize> {
    let index = handle.index();
    // Computed from the index alone: the object's load need not wait for the slot's (`home`).
    let home = HomeOf::<T>::address(home_base, index);
    slots
        .for_read(index)
        .read_at(handle.to_bits(), tag_bits, home)
}

/// A [`RelocCache`](crate::RelocCache) as read under one guard (see
/// [`RelocCache::view`](crate::RelocCache::view)): copyable, and as long as it lives the guard
/// stays pinned, so every reference it gives stays valid and unchanged.
///
/// ```
/// let cache: relocate_api::RelocCache<u64> = relocate_api::RelocCache::new().unwrap();
/// let handles: Vec<_> = (0..1000).map(|i| cache.insert(i).unwrap()).collect();
/// let reader = cache.reader();
/// let mut guard = reader.pin();
/// let mut sum = 0;
/// for run in handles.chunks(256) {
///     guard.repin(); // let the epoch move on between runs of gets
///     let view = cache.view(&guard);
///     sum += run.iter().filter_map(|&h| view.get(h)).sum::<u64>();
/// }
/// assert_eq!(sum, 999 * 1000 / 2);
/// ```
///
/// A reference it gave keeps the guard borrowed, so the guard cannot be re-pinned (or dropped)
/// while the reference lives:
///
/// ```compile_fail,E0502
/// let cache: relocate_api::RelocCache<u64> = relocate_api::RelocCache::new().unwrap();
/// let handle = cache.insert(7).unwrap();
/// let reader = cache.reader();
/// let mut guard = reader.pin();
/// let seven = cache.view(&guard).get(handle);
/// guard.repin(); // error: `guard` is borrowed by `seven`
/// assert_eq!(seven, Some(&7));
/// ```
pub struct View<'g, T> {
    slots: Slots<'g>,
    tag_bits: u64,
    home_base: usize,
    _objects: PhantomData<&'g T>,
}

impl<T> Clone for View<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for View<'_, T> {}

impl<'g, T> View<'g, T> {
    /// A view of the table `slots` of the cache with `tag_bits` and homes at `home_base` (0: none),
    /// for a caller that checked its guard.
    #[inline]
    pub(crate) fn new(slots: Slots<'g>, tag_bits: u64, home_base: usize) -> Self {
        Self {
            slots,
            tag_bits,
            home_base,
            _objects: PhantomData,
        }
    }

    /// The object a handle names, or `None` if it was removed, evicted, or is not from this cache:
    /// [`RelocCache::get`](crate::RelocCache::get). Wait-free.
    #[inline]
    pub fn get(self, handle: Handle<T>) -> Option<&'g T>
    where
        T: Relocatable,
    {
        let addr = self.address_of(handle)?;
        // A published address holds a live `T` (never at 0: saying so spares the `Option<&T>` a test
        // for null); moved, updated or removed meanwhile, its old block is retired through the epoch.
        // SAFETY: the `T` stays valid and unchanged (`Relocatable`) while the view's guard is pinned.
        unsafe {
            core::hint::assert_unchecked(addr != 0);
            Some(&*(addr as *const T))
        }
    }

    /// The address of the object a handle names, valid while the view lives.
    #[inline]
    fn address_of(self, handle: Handle<T>) -> Option<usize> {
        read_slot(self.slots, (self.tag_bits, self.home_base), handle)
    }
}

/// [`read_slot`] for `count` handles, `handle(i)` for `i` in `0..count`: hands `visit(i, address)`
/// each one's answer in order, while it loads the slots `SLOT_AHEAD` handles further on and looks up
/// (and loads) the objects `OBJECT_AHEAD` further on, so that the cache misses of many lookups
/// overlap (see [`RelocCache::get_many`]). With a `home_base` (a cache with homes; 0 for none) it
/// loads each object's home with its slot. An address is read `OBJECT_AHEAD` handles before it is
/// visited; it stays valid while a guard of the table's collector is pinned, as `read_slot`'s does.
#[inline]
pub(crate) fn read_many<T>(
    slots: Slots<'_>,
    (tag_bits, home_base): (u64, usize),
    (count, handle): (usize, impl Fn(usize) -> Handle<T>),
    mut visit: impl FnMut(usize, Option<usize>),
) {
    let look_up = |i: usize| {
        let addr = read_slot(slots, (tag_bits, home_base), handle(i));
        if let Some(addr) = addr {
            alloc_core::os::prefetch(addr as *const u8);
        }
        addr
    };
    // With homes, an object at home is loaded with its slot, before the slot says where it is.
    let prefetch_slot = |i: usize| {
        let index = handle(i).index();
        slots.prefetch(index);
        if home_base != 0 {
            alloc_core::os::prefetch(HomeOf::<T>::address(home_base, index) as *const u8);
        }
    };
    for i in 0..count.min(SLOT_AHEAD) {
        prefetch_slot(i);
    }
    let mut ahead = [None; OBJECT_AHEAD];
    for (i, slot) in ahead.iter_mut().enumerate().take(count) {
        *slot = look_up(i);
    }
    for i in 0..count {
        if i + SLOT_AHEAD < count {
            prefetch_slot(i + SLOT_AHEAD);
        }
        let addr = ahead[i % OBJECT_AHEAD];
        ahead[i % OBJECT_AHEAD] = (i + OBJECT_AHEAD < count)
            .then(|| look_up(i + OBJECT_AHEAD))
            .flatten();
        visit(i, addr);
    }
}

/// How far ahead of the handle it visits [`RelocCache::get_many`] loads slots.
pub(crate) const SLOT_AHEAD: usize = 16;
/// How far ahead of the handle it visits [`RelocCache::get_many`] looks objects up (and loads them).
pub(crate) const OBJECT_AHEAD: usize = 8;
