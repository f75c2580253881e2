//! Misuse detection behind the `checked` feature: double frees and frees of addresses this allocator
//! did not hand out abort the process with a message naming the address and the size class.
//!
//! Two structures, both outside the objects:
//! - a *chunk map*: one byte per 2 MiB of the 47-bit address space (64 MiB of reserved, untouched
//!   address space; pages are committed only where arenas are), set for every arena and huge mapping;
//! - the arena's *liveness bitmap*: one bit per 8-byte granule, set when a block is handed out and
//!   cleared by an atomic `fetch_and` when it is freed, so a second free, local or remote, finds the
//!   bit clear before it can corrupt a list.
//!
//! With the feature off every function here is an empty inline and the checks cost nothing.

#[cfg(feature = "checked")]
mod imp {
    use crate::arena::{ArenaMeta, ARENA_MASK, LIVE_BITMAP_OFFSET, LIVE_GRANULE};
    use crate::os;
    use crate::slab::{Slab, KIND_HUGE, KIND_LARGE, KIND_SMALL};
    use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, Ordering};

    const CHUNK_SHIFT: u32 = 21;
    const ADDRESS_BITS: u32 = 47;
    const MAP_BYTES: usize = 1 << (ADDRESS_BITS - CHUNK_SHIFT);
    static CHUNK_MAP: AtomicPtr<AtomicU8> = AtomicPtr::new(core::ptr::null_mut());

    pub(crate) fn init() {
        if CHUNK_MAP.load(Ordering::Acquire).is_null() {
            let map = os::map_aligned(MAP_BYTES, os::page_size());
            if map.is_null() {
                report_raw(b"cannot reserve the chunk map", core::ptr::null_mut(), None);
            }
            // Two first registrations at once may both map one: the first published stays (a
            // second would lose the entries made in the first meanwhile), the other goes.
            let published = CHUNK_MAP.compare_exchange(
                core::ptr::null_mut(),
                map.cast(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            if published.is_err() {
                os::unmap(map, MAP_BYTES);
            }
        }
    }

    fn chunk_entry(chunk: usize) -> Option<&'static AtomicU8> {
        let map = CHUNK_MAP.load(Ordering::Acquire);
        let index = chunk >> CHUNK_SHIFT;
        if map.is_null() || index >= MAP_BYTES {
            return None;
        }
        // SAFETY: the map is MAP_BYTES long and never unmapped; `index` is in range.
        Some(unsafe { &*map.add(index) })
    }

    /// A registered chunk's entry: it begins with a descriptor array (an arena, or a huge
    /// mapping's metadata), or with a 2 MiB-aligned huge object (whose bytes are the user's).
    const DESCRIPTORS: u8 = 1;
    const OBJECT: u8 = 2;

    pub(crate) fn register_chunk(chunk: usize) {
        register(chunk, DESCRIPTORS);
    }

    /// Registers the chunk a 2 MiB-aligned huge object starts.
    pub(crate) fn register_object_chunk(chunk: usize) {
        register(chunk, OBJECT);
    }

    fn register(chunk: usize, what: u8) {
        init();
        if let Some(entry) = chunk_entry(chunk) {
            entry.store(what, Ordering::Release);
        }
    }

    pub(crate) fn unregister_chunk(chunk: usize) {
        if let Some(entry) = chunk_entry(chunk) {
            entry.store(0, Ordering::Release);
        }
    }

    fn live_word(block: usize) -> (&'static AtomicU64, u64) {
        let arena = block & !ARENA_MASK;
        let granule = (block & ARENA_MASK) / LIVE_GRANULE;
        let word = (arena + LIVE_BITMAP_OFFSET) as *const AtomicU64;
        // SAFETY: the liveness bitmap lies in the arena's first unit, which is mapped while the arena
        // lives; `granule / 64` is below 2 MiB / 8 / 64 words.
        (unsafe { &*word.add(granule / 64) }, 1u64 << (granule % 64))
    }

    #[inline]
    pub(crate) fn on_alloc(block: *mut u8) {
        if block.is_null() {
            return;
        }
        let (word, bit) = live_word(block as usize);
        word.fetch_or(bit, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn on_free(object: *mut u8) {
        let addr = object as usize;
        let chunk = addr & !ARENA_MASK;
        let entry = chunk_entry(chunk).map_or(0, |e| e.load(Ordering::Acquire));
        let registered = entry != 0;
        if addr & ARENA_MASK == 0 {
            // A 2 MiB-aligned huge object registers its own chunk as such. Any other 2 MiB-aligned
            // address (an arena's base, where its descriptors are, or a freed object's chunk
            // taken since by an arena) was never handed out: a free of it would read descriptors
            // 8 KiB below as a huge mapping's.
            if entry != OBJECT {
                report_raw(
                    b"free of a pointer this allocator does not own (or a double free)",
                    object,
                    None,
                );
            }
            return;
        }
        if !registered {
            report_raw(
                b"free of a pointer this allocator does not own",
                object,
                None,
            );
        }
        if entry == OBJECT {
            // Inside a 2 MiB-aligned huge object: its chunk holds the user's bytes, no descriptors.
            report_raw(
                b"free of an address that is not the start of a huge allocation",
                object,
                None,
            );
        }
        // SAFETY: the chunk is registered, so it begins with a descriptor array.
        let slab = unsafe { crate::global::slab_of(addr) };
        match slab.kind.get() {
            KIND_SMALL => {
                let offset = addr.wrapping_sub(slab.start.get() as usize);
                let block = slab.block_bytes.get() as usize;
                if offset % block != 0 || offset / block >= slab.capacity.get() as usize {
                    report(
                        b"free of an address that is not the start of a block",
                        object,
                        slab,
                    );
                }
                let (word, bit) = live_word(addr);
                if word.fetch_and(!bit, Ordering::Relaxed) & bit == 0 {
                    report(b"double free", object, slab);
                }
            }
            KIND_LARGE => {
                if !crate::large::is_span_start(slab, object) {
                    report(
                        b"free of an address that is not the start of a large allocation",
                        object,
                        slab,
                    );
                }
            }
            // SAFETY: a chunk registered as beginning with descriptors that say huge is the first
            // chunk of a live huge mapping whose object starts after its metadata (2 MiB-aligned
            // objects' chunks are registered as such, and handled above).
            KIND_HUGE if !unsafe { crate::large::is_huge_start(object) } => report(
                b"free of an address that is not the start of a huge allocation (or a double free)",
                object,
                slab,
            ),
            KIND_HUGE => {}
            _ => report(
                b"double free (or free of an address in no allocation)",
                object,
                slab,
            ),
        }
    }

    fn hex(mut value: usize, out: &mut [u8; 18]) -> &[u8] {
        out[0] = b'0';
        out[1] = b'x';
        for i in (2..18).rev() {
            out[i] = b"0123456789abcdef"[value & 15];
            value >>= 4;
        }
        out
    }

    fn decimal(mut value: usize, out: &mut [u8; 20]) -> &[u8] {
        let mut i = out.len();
        loop {
            i -= 1;
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        &out[i..]
    }

    pub(crate) fn report(what: &[u8], object: *mut u8, slab: &Slab) -> ! {
        report_raw(what, object, Some(slab))
    }

    fn report_raw(what: &[u8], object: *mut u8, slab: Option<&Slab>) -> ! {
        let mut buf = [0u8; 18];
        let mut num = [0u8; 20];
        os::write_stderr(b"alloc-core: ");
        os::write_stderr(what);
        os::write_stderr(b" at ");
        os::write_stderr(hex(object as usize, &mut buf));
        if let Some(slab) = slab {
            match slab.kind.get() {
                KIND_SMALL => {
                    os::write_stderr(b" (size class ");
                    os::write_stderr(decimal(slab.class.get() as usize, &mut num));
                    os::write_stderr(b", ");
                    os::write_stderr(decimal(slab.block_bytes.get() as usize, &mut num));
                    os::write_stderr(b"-byte blocks)");
                }
                KIND_LARGE => os::write_stderr(b" (large span)"),
                KIND_HUGE => os::write_stderr(b" (huge mapping)"),
                _ => os::write_stderr(b" (free unit)"),
            }
        }
        os::write_stderr(b"\n");
        os::abort()
    }

    #[allow(dead_code)]
    fn _assert_meta(_: &ArenaMeta) {}
}

#[cfg(not(feature = "checked"))]
mod imp {
    use crate::slab::Slab;

    #[inline(always)]
    pub(crate) fn init() {}
    #[inline(always)]
    pub(crate) fn register_chunk(_chunk: usize) {}
    #[inline(always)]
    pub(crate) fn register_object_chunk(_chunk: usize) {}
    #[inline(always)]
    pub(crate) fn unregister_chunk(_chunk: usize) {}
    #[inline(always)]
    pub(crate) fn on_alloc(_block: *mut u8) {}
    #[inline(always)]
    pub(crate) fn on_free(_object: *mut u8) {}
    /// Without `checked`, freeing an address in no allocation is undefined behaviour; the slow path
    /// ignores what it cannot interpret rather than corrupt state further.
    #[inline(always)]
    pub(crate) fn report(_what: &[u8], _object: *mut u8, _slab: &Slab) {}
}

pub(crate) use imp::*;
