//! A port of the idea of mimalloc's `test/test-stress.c` (Daan Leijen, MIT): threads swap blocks
//! through a shared array of slots, so most frees are remote; all threads are torn down and re-created
//! every round, and half of the swapped blocks survive into the next round (freed by threads that
//! never met their allocator). This binary's global allocator is ours, so thread creation and exit
//! run on it too; the blocks themselves go through `SlabAlloc` directly, as `mi_calloc`/`mi_free` do.
//!
//! `threads_swap_blocks_through_shared_slots` proves: every block comes back from `alloc_zeroed`
//! all zero (also when it reuses memory another thread freed), keeps its cookie (every word derived
//! from its item count, index and address, so a block that moved, shrank or was overwritten fails)
//! until it is freed, the `data` array grown with `realloc` keeps its contents, and after the last
//! round and `purge` nothing is accounted live.
//!
//! Sizes follow the original: powers of two up to 128 words, 1 % times 100 (large), 0.1 % times
//! 1,000 (huge) and 0.01 % times 10,000 (giant, up to 10 MiB). Scale: `ALLOC_CORE_STRESS_LONG=1`
//! runs 32 threads x 50 rounds at the original scale; the default is smaller (see `params`).

mod common;

use alloc_core::SlabAlloc;
use common::mix;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicPtr, Ordering};

#[global_allocator]
static ALLOC: SlabAlloc = SlabAlloc::new();

const TRANSFERS: usize = 1000;
const COOKIE: u64 = 0xbf58_476d_1ce4_e5b9;
static TRANSFER: [AtomicPtr<u64>; TRANSFERS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; TRANSFERS];

/// (threads, scale, rounds)
fn params() -> (usize, usize, usize) {
    if std::env::var_os("ALLOC_CORE_STRESS_LONG").is_some_and(|v| v != "0") {
        (32, 10, 50)
    } else if cfg!(debug_assertions) {
        (16, 5, 20)
    } else {
        (16, 10, 25)
    }
}

struct Rng(u64);

impl Rng {
    /// The original's `pick`: the SplitMix64 finaliser applied to the state.
    fn pick(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.pick() % 100 <= percent
    }
}

fn word(items: usize, i: usize, addr: usize) -> u64 {
    ((items - i) as u64) ^ COOKIE ^ (addr as u64).rotate_left(29)
}

fn layout(items: usize) -> Layout {
    Layout::array::<u64>(items).unwrap()
}

fn alloc_items(mut items: usize, r: &mut Rng) -> *mut u64 {
    if r.chance(1) {
        if r.chance(1) {
            items *= 10_000;
        } else if r.chance(10) {
            items *= 1_000;
        } else {
            items *= 100;
        }
    }
    // SAFETY: `items` >= 1, so the size is non-zero.
    let p = unsafe { ALLOC.alloc_zeroed(layout(items)) }.cast::<u64>();
    assert!(!p.is_null(), "alloc_zeroed of {items} words failed");
    for i in 0..items {
        // SAFETY: `p` holds `items` words.
        let slot = unsafe { &mut *p.add(i) };
        assert_eq!(
            *slot, 0,
            "alloc_zeroed block {p:p} ({items} words): word {i} not zero"
        );
        *slot = word(items, i, p as usize);
    }
    p
}

fn free_items(p: *mut u64) {
    if p.is_null() {
        return;
    }
    // SAFETY: a live block from `alloc_items`, at least one word long.
    let items = (unsafe { p.read() } ^ COOKIE ^ (p as u64).rotate_left(29)) as usize;
    assert!(
        items > 0 && items <= 128 * 10_000,
        "block {p:p}: bad cookie in word 0"
    );
    for i in 0..items {
        // SAFETY: the block holds `items` words (word 0 says so and was checked above).
        let w = unsafe { p.add(i).read() };
        assert_eq!(
            w,
            word(items, i, p as usize),
            "memory corruption at block {p:p} word {i}"
        );
    }
    // SAFETY: allocated by `alloc_items` with this layout, freed once.
    unsafe { ALLOC.dealloc(p.cast(), layout(items)) };
}

/// A growable array of block pointers on our allocator, grown with `realloc` like the original.
struct Data {
    ptr: *mut *mut u64,
    cap: usize,
    len: usize,
}

impl Data {
    fn push(&mut self, p: *mut u64) {
        if self.len == self.cap {
            let new_cap = self.cap + 100_000;
            let new_layout = Layout::array::<*mut u64>(new_cap).unwrap();
            let grown = if self.ptr.is_null() {
                // SAFETY: non-zero size.
                unsafe { ALLOC.alloc(new_layout) }
            } else {
                let old = Layout::array::<*mut u64>(self.cap).unwrap();
                // SAFETY: `ptr` is live with layout `old`; the new size is non-zero.
                unsafe { ALLOC.realloc(self.ptr.cast(), old, new_layout.size()) }
            };
            assert!(!grown.is_null(), "growing the data array failed");
            self.ptr = grown.cast();
            self.cap = new_cap;
        }
        // SAFETY: `len < cap`.
        unsafe { self.ptr.add(self.len).write(p) };
        self.len += 1;
    }

    fn slot(&mut self, i: usize) -> &mut *mut u64 {
        assert!(i < self.len);
        // SAFETY: `i < len` and slots below `len` are initialised.
        unsafe { &mut *self.ptr.add(i) }
    }
}

fn stress(tid: usize, scale: usize) {
    let mut r = Rng(tid as u64 * 43 + 1);
    const MAX_ITEM_SHIFT: u64 = 5;
    const MAX_ITEM_RETAINED_SHIFT: u64 = MAX_ITEM_SHIFT + 2;
    let mut allocs = 100 * scale * (tid % 8 + 1);
    let mut retain = allocs / 2;
    let mut data = Data {
        ptr: std::ptr::null_mut(),
        cap: 0,
        len: 0,
    };
    let mut retained = Vec::with_capacity(retain);
    while allocs > 0 || retain > 0 {
        if retain == 0 || (r.chance(50) && allocs > 0) {
            allocs -= 1;
            let items = 1 << (r.pick() % MAX_ITEM_SHIFT);
            let p = alloc_items(items, &mut r);
            data.push(p);
        } else {
            let items = 1 << (r.pick() % MAX_ITEM_RETAINED_SHIFT);
            retained.push(alloc_items(items, &mut r));
            retain -= 1;
        }
        if r.chance(66) && data.len > 0 {
            let idx = (r.pick() % data.len as u64) as usize;
            free_items(std::mem::replace(data.slot(idx), std::ptr::null_mut()));
        }
        if r.chance(25) && data.len > 0 {
            let idx = (r.pick() % data.len as u64) as usize;
            let t = (r.pick() % TRANSFERS as u64) as usize;
            let mine = *data.slot(idx);
            *data.slot(idx) = TRANSFER[t].swap(mine, Ordering::AcqRel);
        }
    }
    retained.into_iter().for_each(free_items);
    for i in 0..data.len {
        free_items(*data.slot(i));
    }
    if !data.ptr.is_null() {
        // SAFETY: the data array is live with this layout.
        unsafe {
            ALLOC.dealloc(
                data.ptr.cast(),
                Layout::array::<*mut u64>(data.cap).unwrap(),
            )
        };
    }
}

#[test]
fn threads_swap_blocks_through_shared_slots() {
    let (threads, scale, rounds) = params();
    let started = std::time::Instant::now();
    let mut r = Rng(0x7feb_352d);
    for round in 0..rounds {
        let handles: Vec<_> = (0..threads)
            .map(|tid| std::thread::spawn(move || stress(tid, scale)))
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        for slot in TRANSFER.iter() {
            if r.chance(50) || round + 1 == rounds {
                free_items(slot.swap(std::ptr::null_mut(), Ordering::AcqRel));
            }
        }
    }
    assert!(TRANSFER.iter().all(|s| s.load(Ordering::Relaxed).is_null()));
    alloc_core::purge();
    let stats = alloc_core::stats();
    assert_eq!(stats.large_allocated_bytes, 0, "spans still accounted live");
    assert_eq!(stats.huge_mapped_bytes, 0, "huge mappings still live");
    eprintln!(
        "mimalloc-stress: {threads} threads x {rounds} rounds, scale {scale}: {:?}",
        started.elapsed()
    );
}
