//! Multi-threaded stress with the allocator called directly (the harness runs on `System`).
//!
//! `eight_threads_random_sizes_and_remote_frees` proves that under 8 threads (oversubscribing the
//! cores), with random sizes across small, large and huge, random alignments, reallocs in both
//! directions and frees on other threads (blocks travel through channels), every block keeps the
//! pattern derived from its address and size until it is freed, and that after all threads have
//! exited and `purge` ran, the allocator accounts no bytes as allocated (nothing leaked or lost).
//!
//! Operations per thread: 10^6 in release builds, 5·10^4 in debug builds (unoptimised pattern
//! checks are ~20x slower), 10^7 with `ALLOC_CORE_STRESS_LONG=1`.

mod common;

use alloc_core::size_class::MAX_SMALL_BYTES;
use alloc_core::{SlabAlloc, LARGE_MAX_BYTES};
use common::{check_sparse, fill_sparse, seed_of, Rng};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::mpsc::{channel, Receiver, Sender};

static A: SlabAlloc = SlabAlloc::new();

const THREADS: usize = 8;
const SLOTS: usize = 4096;
const BATCH: usize = 64;

fn ops_per_thread() -> usize {
    if std::env::var_os("ALLOC_CORE_STRESS_LONG").is_some_and(|v| v != "0") {
        10_000_000
    } else if cfg!(debug_assertions) {
        50_000
    } else {
        1_000_000
    }
}

/// A live block. Raw pointers are not `Send`; the address travels as a `usize`.
#[derive(Clone, Copy)]
struct Live {
    addr: usize,
    size: usize,
    align: usize,
}

impl Live {
    fn layout(&self) -> Layout {
        Layout::from_size_align(self.size, self.align).unwrap()
    }
}

fn random_size(rng: &mut Rng) -> usize {
    match rng.below(100_000) {
        0..90_000 => rng.range(1, 256),
        90_000..99_000 => rng.log_range(257, MAX_SMALL_BYTES),
        99_000..99_990 => rng.log_range(MAX_SMALL_BYTES + 1, LARGE_MAX_BYTES),
        _ => rng.range(LARGE_MAX_BYTES + 1, 6 << 20),
    }
}

fn random_align(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..80 => 8,
        80..95 => 1 << rng.range(0, 7),
        _ => 1 << rng.range(8, 17),
    }
}

fn alloc_block(rng: &mut Rng) -> Live {
    let (size, align) = (random_size(rng), random_align(rng));
    let layout = Layout::from_size_align(size, align).unwrap();
    // SAFETY: the size is non-zero.
    let ptr = unsafe { A.alloc(layout) };
    assert!(!ptr.is_null(), "alloc({size}, {align}) returned null");
    assert_eq!(ptr as usize % align, 0, "alloc({size}, {align}) misaligned");
    // SAFETY: the block is live and `size` bytes long.
    unsafe { fill_sparse(ptr, size, seed_of(ptr as usize, size)) };
    Live {
        addr: ptr as usize,
        size,
        align,
    }
}

fn verify(block: &Live, when: &str) {
    // SAFETY: the block is live and `size` bytes long.
    let result = unsafe {
        check_sparse(
            block.addr as *const u8,
            block.size,
            seed_of(block.addr, block.size),
        )
    };
    if let Err(offset) = result {
        panic!(
            "{when}: block {:#x} ({} B, align {}) corrupted at offset {offset}",
            block.addr, block.size, block.align
        );
    }
}

fn free_block(block: Live, when: &str) {
    verify(&block, when);
    // SAFETY: allocated by `A` with this layout; each block is freed exactly once.
    unsafe { A.dealloc(block.addr as *mut u8, block.layout()) };
}

fn realloc_block(block: Live, rng: &mut Rng) -> Live {
    verify(&block, "before realloc");
    let new_size = if rng.chance(1, 2) {
        random_size(rng)
    } else {
        // Near the old size: in-place growth and shrinking within a class or span.
        (block.size as isize + rng.range(0, 512) as isize - 256).max(1) as usize
    };
    // SAFETY: a live block of this layout; the new size is non-zero.
    let ptr = unsafe { A.realloc(block.addr as *mut u8, block.layout(), new_size) };
    assert!(
        !ptr.is_null(),
        "realloc {} -> {new_size} returned null",
        block.size
    );
    assert_eq!(
        ptr as usize % block.align,
        0,
        "realloc lost alignment {}",
        block.align
    );
    let kept = block.size.min(new_size).min(64 << 10);
    // SAFETY: the new block holds at least `kept` bytes; the leading 64 KiB of the pattern are always
    // written densely (see `fill_sparse`).
    let result = unsafe { common::check(ptr, kept, seed_of(block.addr, block.size)) };
    assert_eq!(
        result,
        Ok(()),
        "realloc {} -> {new_size} lost data",
        block.size
    );
    // SAFETY: the block is live and `new_size` bytes long.
    unsafe { fill_sparse(ptr, new_size, seed_of(ptr as usize, new_size)) };
    Live {
        addr: ptr as usize,
        size: new_size,
        ..block
    }
}

fn drain(rx: &Receiver<Vec<Live>>) -> usize {
    let mut freed = 0;
    while let Ok(batch) = rx.try_recv() {
        freed += batch.len();
        batch.into_iter().for_each(|b| free_block(b, "remote free"));
    }
    freed
}

fn worker(id: usize, ops: usize, peers: Vec<Sender<Vec<Live>>>, rx: Receiver<Vec<Live>>) -> usize {
    let mut rng = Rng::new(0x5eed_0000 + id as u64);
    let mut slots: Vec<Option<Live>> = vec![None; SLOTS];
    let mut outgoing: Vec<Vec<Live>> = vec![Vec::new(); peers.len()];
    let mut remote_freed = 0;
    for op in 0..ops {
        let slot = rng.below(SLOTS);
        match slots[slot].take() {
            None => slots[slot] = Some(alloc_block(&mut rng)),
            Some(block) => match rng.below(10) {
                0..4 => free_block(block, "local free"),
                4..7 => slots[slot] = Some(realloc_block(block, &mut rng)),
                _ => {
                    let peer = rng.below(peers.len());
                    verify(&block, "before send");
                    outgoing[peer].push(block);
                    if outgoing[peer].len() == BATCH {
                        peers[peer]
                            .send(std::mem::take(&mut outgoing[peer]))
                            .unwrap();
                    }
                }
            },
        }
        if op % 256 == 0 {
            remote_freed += drain(&rx);
        }
    }
    for (peer, batch) in outgoing.into_iter().enumerate() {
        peers[peer].send(batch).unwrap();
    }
    drop(peers);
    for block in slots.into_iter().flatten() {
        free_block(block, "final local free");
    }
    // Every other worker drops its senders when it finishes, so this ends.
    for batch in rx.iter() {
        remote_freed += batch.len();
        batch
            .into_iter()
            .for_each(|b| free_block(b, "final remote free"));
    }
    remote_freed
}

#[test]
fn eight_threads_random_sizes_and_remote_frees() {
    let ops = ops_per_thread();
    let started = std::time::Instant::now();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| channel()).unzip();
    let handles: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(id, rx)| {
            let peers: Vec<Sender<Vec<Live>>> = senders
                .iter()
                .enumerate()
                .filter(|&(other, _)| other != id)
                .map(|(_, tx)| tx.clone())
                .collect();
            std::thread::spawn(move || worker(id, ops, peers, rx))
        })
        .collect();
    drop(senders);
    let remote_freed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    // About 3 in 10 operations on a full slot send the block away.
    assert!(remote_freed > ops / 20, "only {remote_freed} remote frees");
    alloc_core::purge();
    let stats = alloc_core::stats();
    assert_eq!(
        stats.small_allocated_bytes, 0,
        "small blocks still accounted live"
    );
    assert_eq!(stats.large_allocated_bytes, 0, "spans still accounted live");
    assert_eq!(stats.huge_mapped_bytes, 0, "huge mappings still live");
    eprintln!(
        "stress: {THREADS} threads x {ops} ops, {remote_freed} remote frees, {:?}",
        started.elapsed()
    );
}
