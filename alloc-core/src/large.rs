//! Allocations above the largest size class.
//!
//! - **Spans** (up to `LARGE_MAX_BYTES`): a run of whole 64 KiB units inside a normal arena, described by
//!   the head unit's descriptor (`KIND_LARGE`; the other units point back with `head_delta`). Alignment
//!   up to 64 KiB is free (units are aligned); larger alignment pads inside the span. A span grows in
//!   place into free units that follow it and shrinks by giving tail units back.
//! - **Huge** allocations are direct mappings. The mapping starts with a metadata page that looks like
//!   an arena's descriptor array whose every descriptor says `KIND_HUGE`, so a free finds it by the same
//!   masking as any other block. When the alignment is 2 MiB or more the object itself starts on a
//!   2 MiB boundary (offset 0 in its chunk, where no arena block can be), and its metadata sits in the
//!   pages just before it, where the mapping starts. A freed mapping of that ordinary layout is
//!   kept for a while and reused (see `huge_cache`).
//!
//! Spans take the arena pool lock; huge allocations and frees take the huge cache's lock, briefly
//! (never across a system call).

use crate::arena::{
    ArenaKind, ArenaMeta, Placement, ARENA_BYTES, ARENA_MASK, POOL, UNITS_PER_ARENA,
};
use crate::huge_cache;
use crate::os;
use crate::size_class::UNIT_BYTES;
use crate::slab::{Slab, KIND_HUGE, KIND_LARGE};
use core::ptr;

/// Largest request served as a span inside an arena.
pub const LARGE_MAX_BYTES: usize = 1 << 20;

/// Units a span needs for `size` bytes at `align`, counting worst-case alignment padding.
pub(crate) fn span_units(size: usize, align: usize) -> usize {
    let pad = align.saturating_sub(UNIT_BYTES);
    (size + pad).div_ceil(UNIT_BYTES)
}

/// Allocates a span; null when the arenas cannot provide one.
pub(crate) fn alloc_span(size: usize, align: usize, zero: bool) -> *mut u8 {
    let units = span_units(size, align);
    debug_assert!(units < UNITS_PER_ARENA);
    let mut object = ptr::null_mut();
    let taken = POOL
        .lock()
        .alloc_units(ArenaKind::Normal, units, Placement::SHARED, |u| {
            let start = u.start();
            let offset = (start as usize).next_multiple_of(align) - start as usize;
            // SAFETY: the units were just taken from a live arena under the pool lock.
            let descs = unsafe { &(*u.arena).descs };
            init_span(&descs[u.first..u.first + units], offset, size);
            object = start.wrapping_add(offset);
        });
    let Some(taken) = taken else {
        return ptr::null_mut();
    };
    crate::stats::add_large(size);
    if zero && !taken.zeroed {
        // SAFETY: the span is ours and at least `size` bytes long from `object`.
        unsafe { ptr::write_bytes(object, 0, size) };
    }
    object
}

fn init_span(descs: &[Slab], offset: usize, size: usize) {
    for (i, desc) in descs.iter().enumerate() {
        desc.init_unowned();
        desc.kind.set(KIND_LARGE);
        desc.head_delta.set(i as u8);
    }
    let head = &descs[0];
    head.units.set(descs.len() as u32);
    head.span_offset.set(offset as u32);
    head.object_bytes.set(size);
}

/// The index of a descriptor in its arena.
fn desc_index(arena: *mut ArenaMeta, desc: &Slab) -> usize {
    // SAFETY: `desc` lies in `arena`'s descriptor array.
    unsafe {
        (desc as *const Slab).offset_from(ptr::addr_of!((*arena).descs).cast::<Slab>()) as usize
    }
}

/// Frees a span given its head descriptor.
pub(crate) fn free_span(head: &Slab) {
    let arena = crate::arena::meta_of(head as *const Slab as usize);
    let first = desc_index(arena, head);
    let units = head.units.get() as usize;
    crate::stats::sub_large(head.object_bytes.get());
    let now = os::now_ms();
    let mut pool = POOL.lock();
    // SAFETY: the arena is live (it holds the span) and we hold the lock.
    let descs = unsafe { &(*arena).descs };
    for desc in &descs[first..first + units] {
        desc.init_unowned();
    }
    pool.free_units(arena, first, units, now);
    crate::arena::maintain_if_due(pool, now);
}

/// Resizes a span in place (shrinking gives tail units back; growing takes the free units that
/// follow). Returns false when it cannot, and then changes nothing.
pub(crate) fn resize_span_in_place(head: &Slab, new_size: usize) -> bool {
    let arena = crate::arena::meta_of(head as *const Slab as usize);
    let first = desc_index(arena, head);
    let units = head.units.get() as usize;
    let offset = head.span_offset.get() as usize;
    let needed = (offset + new_size).div_ceil(UNIT_BYTES);
    let old_size = head.object_bytes.get();
    if needed == units {
        head.object_bytes.set(new_size);
    } else if needed < units {
        let now = os::now_ms();
        let mut pool = POOL.lock();
        // SAFETY: live arena, lock held.
        let descs = unsafe { &(*arena).descs };
        for desc in &descs[first + needed..first + units] {
            desc.init_unowned();
        }
        head.units.set(needed as u32);
        head.object_bytes.set(new_size);
        pool.free_units(arena, first + needed, units - needed, now);
    } else {
        if first + needed > UNITS_PER_ARENA {
            return false;
        }
        let mut pool = POOL.lock();
        let extra = needed - units;
        if !pool.take_following(arena, first + units, extra) {
            return false;
        }
        // SAFETY: live arena, lock held; the units after the span are now ours.
        let descs = unsafe { &(*arena).descs };
        for (i, desc) in descs[first + units..first + needed].iter().enumerate() {
            desc.init_unowned();
            desc.kind.set(KIND_LARGE);
            desc.head_delta.set((units + i) as u8);
        }
        head.units.set(needed as u32);
        head.object_bytes.set(new_size);
    }
    crate::stats::sub_large(old_size);
    crate::stats::add_large(new_size);
    true
}

/// The header of a huge mapping, after its descriptor array.
#[repr(C)]
struct HugeMeta {
    descs: [Slab; UNITS_PER_ARENA],
    map_base: usize,
    map_bytes: usize,
    /// Where the object starts (a kept mapping is reused with the object at another offset).
    object: usize,
    object_bytes: usize,
}

fn huge_meta_bytes() -> usize {
    core::mem::size_of::<HugeMeta>().next_multiple_of(os::page_size())
}

/// Maps a huge allocation (or takes a kept one, see `huge_cache`, zeroing the object if `zero`:
/// a fresh mapping reads as zero); null on failure.
pub(crate) fn alloc_huge(size: usize, align: usize, zero: bool) -> *mut u8 {
    let page = os::page_size();
    let meta_bytes = huge_meta_bytes();
    let (map_align, offset, meta_offset) = if align < ARENA_BYTES {
        (ARENA_BYTES, meta_bytes.max(align), 0)
    } else {
        (align, align, align - meta_bytes)
    };
    let Some(map_bytes) = offset
        .checked_add(size)
        .and_then(|b| b.checked_next_multiple_of(page))
    else {
        return ptr::null_mut();
    };
    let kept = (meta_offset == 0)
        .then(|| huge_cache::take(map_bytes))
        .flatten();
    // The mapping, its size, and how many bytes from its start may hold an earlier allocation's
    // data (a fresh mapping and pages added by growth read as zero).
    let mapping = kept
        .and_then(|(base, kept_bytes)| reuse_kept(base as *mut u8, kept_bytes, map_bytes))
        .or_else(|| map_fresh(map_bytes, map_align).map(|(base, bytes)| (base, bytes, 0)));
    let Some((mut base, mut map_bytes, old_bytes)) = mapping else {
        return ptr::null_mut();
    };
    let object = base.wrapping_add(offset);
    let meta = base.wrapping_add(meta_offset).cast::<HugeMeta>();
    // An object aligned to `align` (2 MiB or more) needs only its metadata before it: the rest of
    // the alignment goes back at once (if the kernel refuses, the mapping keeps it, and says so).
    if meta_offset > 0 && os::try_unmap(base, meta_offset) {
        base = meta.cast();
        map_bytes -= meta_offset;
        crate::stats::sub_huge(meta_offset);
    }
    // SAFETY: the metadata lies inside the mapping, which is ours (fresh and zeroed, or kept: then
    // it holds an earlier allocation's metadata); all-zero bytes are a valid `HugeMeta`, and every
    // field is written here.
    unsafe {
        for desc in (*meta).descs.iter() {
            desc.init_unowned();
            desc.kind.set(KIND_HUGE);
        }
        (*meta).map_base = base as usize;
        (*meta).map_bytes = map_bytes;
        (*meta).object = object as usize;
        (*meta).object_bytes = size;
    }
    let dirty = size.min(old_bytes.saturating_sub(offset));
    if zero && dirty > 0 {
        // SAFETY: the object's first `dirty` bytes lie inside the mapping (`dirty <= size` and
        // `offset + size <= map_bytes`).
        unsafe { ptr::write_bytes(object, 0, dirty) };
    }
    if object as usize & ARENA_MASK == 0 {
        crate::checked::register_object_chunk(object as usize);
    } else {
        crate::checked::register_chunk(object as usize & !ARENA_MASK);
    }
    crate::stats::resize_huge_request(0, size);
    object
}

/// A kept mapping `base..base + kept_bytes` (see `huge_cache`) made into one of at least `bytes`,
/// with its size and `kept_bytes` (what may hold old data); `None`, and the mapping unmapped, if it
/// was too small and could not grow.
fn reuse_kept(base: *mut u8, kept_bytes: usize, bytes: usize) -> Option<(*mut u8, usize, usize)> {
    if kept_bytes >= bytes {
        // Up to twice the size needed, the mapping is taken whole (its pages are what saves the
        // page faults; trimming them would make later, larger requests miss). More than that, the
        // tail goes back (if the kernel refuses, the mapping keeps it, and its size says so).
        let tail = kept_bytes - bytes;
        let trimmed = tail > bytes && os::try_unmap(base.wrapping_add(bytes), tail);
        if trimmed {
            crate::stats::sub_huge(tail);
        }
        return Some((base, if trimmed { bytes } else { kept_bytes }, kept_bytes));
    }
    if let Some(grown) = grow_mapping(base, kept_bytes, bytes) {
        // Too small: grown, its pages moved rather than faulted in again.
        crate::stats::add_huge(bytes - kept_bytes);
        return Some((grown, bytes, kept_bytes));
    }
    crate::stats::sub_huge(kept_bytes);
    os::unmap(base, kept_bytes);
    None
}

/// A fresh mapping of `bytes` aligned to `align`, counted, with its size.
fn map_fresh(bytes: usize, align: usize) -> Option<(*mut u8, usize)> {
    let base = os::map_aligned(bytes, align);
    if base.is_null() {
        return None;
    }
    crate::stats::add_huge(bytes);
    Some((base, bytes))
}

/// Grows the mapping `base..base + old_bytes` to `new_bytes` without copying its contents: in
/// place if the address space after it is free, else by moving its pages (`mremap`) to a new
/// 2 MiB-aligned reservation. The new base, or `None` (and nothing changed).
fn grow_mapping(base: *mut u8, old_bytes: usize, new_bytes: usize) -> Option<*mut u8> {
    if os::remap_in_place(base, old_bytes, new_bytes) {
        return Some(base);
    }
    let target = os::map_aligned(new_bytes, ARENA_BYTES);
    if target.is_null() {
        return None;
    }
    if !os::remap_to(base, old_bytes, target, new_bytes) {
        os::unmap(target, new_bytes);
        return None;
    }
    Some(target)
}

fn huge_meta_of(object: *mut u8) -> *mut HugeMeta {
    if object as usize & ARENA_MASK == 0 {
        object.wrapping_sub(huge_meta_bytes()).cast()
    } else {
        (object as usize & !ARENA_MASK) as *mut HugeMeta
    }
}

/// Frees a huge allocation: keeps its mapping for reuse (see `huge_cache`) or unmaps it.
///
/// # Safety
/// - `object` was returned by `alloc_huge` and is not used afterwards.
#[cold]
#[inline(never)]
pub(crate) unsafe fn free_huge(object: *mut u8) {
    let meta = huge_meta_of(object);
    // SAFETY: the caller's contract: `meta` is the live metadata of this mapping.
    let (base, bytes, size) =
        unsafe { ((*meta).map_base, (*meta).map_bytes, (*meta).object_bytes) };
    crate::checked::unregister_chunk(object as usize & !ARENA_MASK);
    crate::stats::resize_huge_request(size, 0);
    if huge_cache::keeps(base, bytes) {
        huge_cache::put(base, bytes);
    } else {
        crate::stats::sub_huge(bytes);
        os::unmap(base as *mut u8, bytes);
    }
}

/// Bytes usable from `object` in its mapping.
///
/// # Safety
/// - `object` was returned by `alloc_huge` and is live.
pub(crate) unsafe fn huge_capacity(object: *mut u8) -> usize {
    let meta = huge_meta_of(object);
    // SAFETY: the caller's contract.
    unsafe { (*meta).map_base + (*meta).map_bytes - object as usize }
}

/// Grows a huge allocation without copying its contents: extends the mapping in place if the address
/// space after it is free, else moves its pages (`mremap`) to a new 2 MiB-aligned reservation. Returns
/// the object's new address, or null (and nothing changed) when neither works or the object is
/// 2 MiB-aligned (those are copied by the caller).
///
/// # Safety
/// - `object` was returned by `alloc_huge` and is live.
pub(crate) unsafe fn grow_huge(object: *mut u8, new_size: usize) -> *mut u8 {
    if object as usize & ARENA_MASK == 0 {
        return ptr::null_mut();
    }
    let meta = huge_meta_of(object);
    // SAFETY: the caller's contract.
    let (base, old_bytes) = unsafe { ((*meta).map_base, (*meta).map_bytes) };
    let offset = object as usize - base;
    let Some(new_bytes) = offset
        .checked_add(new_size)
        .and_then(|b| b.checked_next_multiple_of(os::page_size()))
    else {
        return ptr::null_mut();
    };
    let Some(new_base) = grow_mapping(base as *mut u8, old_bytes, new_bytes) else {
        return ptr::null_mut();
    };
    if new_base as usize != base {
        crate::checked::unregister_chunk(base);
        crate::checked::register_chunk(new_base as usize);
    }
    let new_object = new_base.wrapping_add(offset);
    let meta = new_base.cast::<HugeMeta>();
    // SAFETY: the metadata moved with the mapping's first page and is ours.
    let old_size = unsafe {
        (*meta).map_base = new_base as usize;
        (*meta).map_bytes = new_bytes;
        (*meta).object = new_object as usize;
        core::mem::replace(&mut (*meta).object_bytes, new_size)
    };
    crate::stats::sub_huge(old_bytes);
    crate::stats::add_huge(new_bytes);
    crate::stats::resize_huge_request(old_size, new_size);
    new_object
}

/// Records a new size for a huge allocation that still fits its mapping, and unmaps the whole pages
/// past it (a shrink gives its tail back at once; `grow_huge` can extend the mapping again).
///
/// # Safety
/// - `object` was returned by `alloc_huge`, is live, and `size <= huge_capacity(object)`.
pub(crate) unsafe fn set_huge_size(object: *mut u8, size: usize) {
    let meta = huge_meta_of(object);
    // SAFETY: the caller's contract.
    let (base, old_bytes) = unsafe { ((*meta).map_base, (*meta).map_bytes) };
    let new_bytes = (object as usize - base + size).next_multiple_of(os::page_size());
    // (If the kernel refuses, the mapping keeps its tail, and its size says so.)
    if new_bytes < old_bytes && os::try_unmap((base + new_bytes) as *mut u8, old_bytes - new_bytes)
    {
        crate::stats::sub_huge(old_bytes);
        crate::stats::add_huge(new_bytes);
        // SAFETY: as above; the metadata lies before the object, in the part still mapped.
        unsafe { (*meta).map_bytes = new_bytes };
    }
    // SAFETY: as above.
    let old_size = unsafe { core::mem::replace(&mut (*meta).object_bytes, size) };
    crate::stats::resize_huge_request(old_size, size);
}

/// Whether `object` is where the huge allocation whose first chunk holds it starts (for
/// `checked`: an interior pointer, or a stale one into a kept mapping reused at another offset).
///
/// # Safety
/// - `object` lies in the first chunk of a live huge mapping, not at its start.
#[cfg(feature = "checked")]
pub(crate) unsafe fn is_huge_start(object: *mut u8) -> bool {
    // SAFETY: the caller's contract: the chunk starts with the mapping's metadata.
    unsafe { (*huge_meta_of(object)).object == object as usize }
}

/// Whether `object` is where the span's object starts (for `checked`).
#[cfg(feature = "checked")]
pub(crate) fn is_span_start(head: &Slab, object: *mut u8) -> bool {
    use crate::size_class::UNIT_SHIFT;
    use crate::slab::UNOWNED;
    use crate::sync::Ordering;
    let arena = crate::arena::meta_of(head as *const Slab as usize);
    let first = desc_index(arena, head);
    let start = (arena as usize) + (first << UNIT_SHIFT) + head.span_offset.get() as usize;
    head.owner.load(Ordering::Relaxed) == UNOWNED && start == object as usize
}
