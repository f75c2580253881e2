//! What the models share: heap-allocated test blocks, and the remote-free path of the front end.
//!
//! A test block is a `Box<TestBlock>` from the system allocator (loom and the models never allocate
//! through alloc-core). Its first word is the link that `alloc_core::remote::Block` overlays, so the
//! real lists thread it exactly as they thread a freed object in a slab. An [`Owned`] is the one handle
//! to a block; the lists' `push` consumes it and collecting a taken list gives it back.
//! [`assert_each_once`] frees the blocks only after it has checked that each was collected exactly
//! once; dropping an `Owned` leaks its block, so that a model failing with a block collected twice
//! panics instead of double-freeing while it unwinds.

use alloc_core::remote::{Block, DelayedFreeList, Pushed, RemoteFreeList};
use core::ptr;
use loom::cell::UnsafeCell;

/// A freed object as the lists see it.
#[repr(C)]
struct TestBlock {
    /// The first word: `Block::next`, written by the lists through a `*mut Block`.
    link: *mut Block,
    /// The block's name in its model (0..n).
    id: usize,
    /// Stands for the object's bytes. The freeing thread writes them before its free and the owner
    /// reads them when it collects the block; loom checks that the write happens-before the read, i.e.
    /// that the lists' release/acquire pairs publish what the freer wrote.
    contents: UnsafeCell<usize>,
}

/// The only handle to one test block; sending it to another thread hands the block over.
pub struct Owned(*mut Block);

// SAFETY: an `Owned` is the sole handle to its block (made by `alloc`, or by `collect_list` from a list
// its caller took, which no other thread can reach any more), so moving it moves the block's ownership
// and no two threads ever access the block through it at once.
unsafe impl Send for Owned {}

impl Owned {
    /// A fresh block named `id`.
    pub fn alloc(id: usize) -> Self {
        let block = Box::new(TestBlock {
            link: ptr::null_mut(),
            id,
            contents: UnsafeCell::new(usize::MAX),
        });
        Self(Box::into_raw(block).cast())
    }

    fn test_block(&self) -> &TestBlock {
        // SAFETY: `self.0` came from `Box::into_raw` of a `TestBlock` and stays valid until `drop`;
        // we own it, so no thread writes its link while this borrow lives.
        unsafe { &*self.0.cast::<TestBlock>() }
    }

    /// The block's name.
    pub fn id(&self) -> usize {
        self.test_block().id
    }

    /// The freeing thread's last write to the object before it frees it.
    pub fn write_contents(&self, value: usize) {
        self.test_block().contents.with_mut(|p| {
            // SAFETY: loom checks this access; `p` points into our live block.
            unsafe { *p = value }
        });
    }

    /// The owner's first read of a collected block (the reuse that must see the freer's write).
    pub fn read_contents(&self) -> usize {
        self.test_block().contents.with(|p| {
            // SAFETY: loom checks this access; `p` points into our live block.
            unsafe { *p }
        })
    }

    /// Gives the block up, for a list's `push` (which then owns it).
    pub fn into_raw(self) -> *mut Block {
        self.0
    }

    /// Frees the block.
    ///
    /// # Safety
    /// - No other `Owned` for this block exists or will be used (the block was collected once).
    unsafe fn free(self) {
        // SAFETY: `self.0` came from `Box::into_raw` in `alloc`, and by the contract we are its only
        // handle.
        drop(unsafe { Box::from_raw(self.0.cast::<TestBlock>()) });
    }
}

/// Takes ownership of every block on `list`, in list order, reading each block's contents as the
/// owner's reuse would.
///
/// # Safety
/// - `list` is null or the head of a null-terminated list returned by a `take` of a
///   `RemoteFreeList` / `DelayedFreeList` (or by `take_and_arm`) whose blocks were all made by
///   [`Owned::alloc`] and given up by [`Owned::into_raw`]; the take transferred them to the caller.
pub unsafe fn collect_list(list: *mut Block) -> Vec<Owned> {
    let mut blocks = Vec::new();
    let mut block = list;
    while !block.is_null() {
        // SAFETY: by the contract `block` is a live `TestBlock` we now own, and the take's acquire
        // ordered the pusher's link write before this read.
        let next = unsafe { (*block.cast::<TestBlock>()).link };
        let owned = Owned(block);
        // The owner's reuse: loom panics here unless the freer's write happens-before it.
        let _ = owned.read_contents();
        blocks.push(owned);
        block = next;
    }
    blocks
}

/// The remote free of `alloc_core::global::free_remote`, for a slab whose owner heap never changes:
/// push onto the slab's list; if that consumed the owner's notify flag, hand the block to the owner's
/// delayed list instead. Returns what the slab push did.
pub fn free_remote(slab: &RemoteFreeList, owner_delayed: &DelayedFreeList, block: Owned) -> Pushed {
    let block = block.into_raw();
    // SAFETY: the block is ours (just given up by its `Owned`), a live `TestBlock` whose first word is
    // a pointer-aligned link, and on no list.
    let pushed = unsafe { slab.push(block) };
    if pushed == Pushed::NotifyOwner {
        // SAFETY: `NotifyOwner` means the slab push did not take the block; it is still ours.
        unsafe { owner_delayed.push(block) };
    }
    pushed
}

/// Panics unless `blocks` holds each of the ids `0..count` exactly once, each with contents
/// `expected(id)`; then frees them.
pub fn assert_each_once(blocks: Vec<Owned>, count: usize, expected: impl Fn(usize) -> usize) {
    let mut ids: Vec<usize> = blocks.iter().map(Owned::id).collect();
    ids.sort_unstable();
    // On failure the blocks leak (see the module doc).
    assert_eq!(
        ids,
        (0..count).collect::<Vec<_>>(),
        "a block was lost or collected twice"
    );
    for block in blocks {
        assert_eq!(
            block.read_contents(),
            expected(block.id()),
            "block {} contents",
            block.id()
        );
        // SAFETY: the ids are distinct, so this is the only `Owned` for this block.
        unsafe { block.free() };
    }
}

/// A cached object as the slot models see it: a value and its checksum, which a whole, published copy
/// always agrees on. The words sit in a loom `UnsafeCell`, so loom checks that every read of an object
/// happens-after the write that made it (its creation, a copy, an in-place write) and that no read is
/// concurrent with [`Objects::free`]'s poisoning write.
#[repr(C, align(16))]
struct Object {
    words: UnsafeCell<[u64; 2]>,
}

/// What a freed object holds: its checksum does not match, so a read that happens after the free
/// (rather than concurrently with it, which loom reports by itself) fails too.
const POISON: [u64; 2] = [0xdead_dead_dead_dead; 2];

fn checksum(value: u64) -> u64 {
    !value ^ 0x5a5a_5a5a_5a5a_5a5a
}

/// The heap of one model execution, for the slot models (`tests/slot.rs`, `tests/slot_retire.rs`):
/// objects at 8-byte aligned addresses (the slot keeps three state bits below them), allocated, read,
/// written in place and freed by address, with every address checked against the objects it made.
///
/// A freed object is poisoned but its memory stays allocated until the `Objects` is dropped at the end
/// of the execution, so that a protocol bug shows up as a loom causality violation or a poisoned read,
/// never as undefined behaviour in the model itself. [`Objects::assert_freed_all_but`] checks that no
/// object leaked (each was freed exactly once, except the ones still published).
pub struct Objects {
    /// Every object of the execution, with whether it was freed.
    blocks: std::sync::Mutex<Vec<(*mut Object, bool)>>,
    /// Where the objects live: a mapping below 16 TiB, where a slot can hold their addresses as it
    /// holds movable blocks' (see `relocate_api::slot`); objects are carved from it in order.
    pool: *mut Object,
}

/// Objects one execution can make.
const POOL_OBJECTS: usize = 64;

fn pool_bytes() -> usize {
    (POOL_OBJECTS * size_of::<Object>()).next_multiple_of(1 << 16)
}

// SAFETY: the raw pointers are into the `Objects`' own pool; the list is behind a mutex, and the objects'
// words are reached only through loom `UnsafeCell` accessors, which loom checks.
unsafe impl Send for Objects {}
// SAFETY: as for `Send`.
unsafe impl Sync for Objects {}

impl Default for Objects {
    fn default() -> Self {
        Self::new()
    }
}

impl Objects {
    /// An empty heap.
    pub fn new() -> Self {
        // Models run on several test threads at once: each tries hints in turn from a shared counter
        // (a std atomic, bookkeeping outside the model) until the kernel honours one.
        static NEXT_HINT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let pool = (0..1024)
            .find_map(|_| {
                let k = NEXT_HINT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % (1 << 16);
                let hint = (1usize << 39) + k * pool_bytes();
                // SAFETY: an anonymous private mapping with a hint never replaces an existing one.
                let pool = unsafe {
                    libc::mmap(
                        hint as *mut libc::c_void,
                        pool_bytes(),
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                if pool == libc::MAP_FAILED || pool as usize + pool_bytes() <= 1 << 44 {
                    return (pool != libc::MAP_FAILED).then_some(pool);
                }
                // SAFETY: the mapping just made, unused.
                unsafe { libc::munmap(pool, pool_bytes()) };
                None
            })
            .expect("no room for the models' objects below 16 TiB");
        Self {
            blocks: std::sync::Mutex::new(Vec::new()),
            pool: pool.cast(),
        }
    }

    /// A new object holding `value`; its address.
    pub fn alloc(&self, value: u64) -> usize {
        let mut blocks = self.lock();
        assert!(blocks.len() < POOL_OBJECTS, "a model made too many objects");
        // SAFETY: the pool holds `POOL_OBJECTS` objects, and this slot of it is unused.
        let object = unsafe { self.pool.add(blocks.len()) };
        // SAFETY: as above; writing initialises it.
        unsafe {
            object.write(Object {
                words: UnsafeCell::new([value, checksum(value)]),
            })
        };
        blocks.push((object, false));
        object as usize
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(*mut Object, bool)>> {
        // A model that panicked may have poisoned the mutex; the list itself stays consistent.
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The object at `addr` (one of ours, freed or not; its memory lives as long as `self`).
    fn object(&self, addr: usize) -> &Object {
        let known = self
            .lock()
            .iter()
            .any(|&(object, _)| object as usize == addr);
        assert!(known, "{addr:#x} is not an object of this model");
        // SAFETY: `addr` is one of our objects, whose pool stays mapped until `self` is dropped.
        unsafe { &*(addr as *const Object) }
    }

    /// Reads the object at `addr`, as a reader through `&T` would; panics unless it is whole and live.
    pub fn read(&self, addr: usize) -> u64 {
        let words = self.object(addr).words.with(|p| {
            // SAFETY: loom checks this access against every write to the object; `p` points into
            // our pool.
            unsafe { *p }
        });
        assert_ne!(words, POISON, "read a freed object at {addr:#x}");
        assert_eq!(words[1], checksum(words[0]), "torn object at {addr:#x}");
        words[0]
    }

    /// Writes `value` into the object at `addr` in place (a write through interior mutability).
    pub fn write(&self, addr: usize, value: u64) {
        self.object(addr).words.with_mut(|p| {
            // SAFETY: loom checks this access against every other access to the object; `p` points
            // into our pool.
            unsafe { *p = [value, checksum(value)] }
        });
    }

    /// Frees the object at `addr`: poisons it (a write that loom checks against every read) and marks
    /// it freed. Panics if it was freed already.
    pub fn free(&self, addr: usize) {
        self.object(addr).words.with_mut(|p| {
            // SAFETY: as in `write`.
            unsafe { *p = POISON }
        });
        let mut blocks = self.lock();
        let entry = blocks
            .iter_mut()
            .find(|(object, _)| *object as usize == addr)
            .expect("checked by `object`");
        assert!(!entry.1, "object {addr:#x} freed twice");
        entry.1 = true;
    }

    /// How many objects were made.
    pub fn allocated(&self) -> usize {
        self.lock().len()
    }

    /// Panics unless every object was freed, except exactly those in `live`, which must not be.
    pub fn assert_freed_all_but(&self, live: &[usize]) {
        for &(object, freed) in self.lock().iter() {
            let addr = object as usize;
            if live.contains(&addr) {
                assert!(!freed, "live object {addr:#x} was freed");
            } else {
                assert!(freed, "object {addr:#x} leaked");
            }
        }
    }
}

impl Drop for Objects {
    fn drop(&mut self) {
        for &(object, _) in self.lock().iter() {
            // SAFETY: each object was initialised in `alloc` and is dropped once, here; no reference
            // into it outlives `self`.
            unsafe { ptr::drop_in_place(object) };
        }
        // SAFETY: the pool mapped in `new`; every object in it was dropped above.
        unsafe { libc::munmap(self.pool.cast(), pool_bytes()) };
    }
}
