//! Micro-benchmark: a tight alloc/free loop of a few sizes, with each allocator's `GlobalAlloc`
//! called directly, side by side in one criterion group per size.
//!
//! Each iteration allocates a batch of 64 objects and frees them in the same order, so the loop
//! measures the fast paths (thread cache pop and push) without degenerating into reusing one
//! slot. The process's own global allocator stays `System`; only the measured calls go to a peer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Objects allocated, then freed, per iteration.
const BATCH: usize = 64;
/// Sizes measured: tiny, small, medium, and one above most allocators' smallest page classes.
const SIZES: [usize; 4] = [16, 128, 1024, 8192];

static OURS: alloc_core::SlabAlloc = alloc_core::SlabAlloc::new();
static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// One batch: allocate `BATCH` objects of `layout` from `allocator`, touch each, free them all.
fn alloc_free_batch(allocator: &dyn GlobalAlloc, layout: Layout) {
    let mut ptrs = [std::ptr::null_mut::<u8>(); BATCH];
    for ptr in &mut ptrs {
        // SAFETY: every layout in SIZES has a non-zero size.
        *ptr = unsafe { allocator.alloc(layout) };
        assert!(
            !ptr.is_null(),
            "allocation of {} bytes failed",
            layout.size()
        );
        // SAFETY: the allocation just returned holds at least one writable byte.
        unsafe { ptr.write(1) };
    }
    black_box(&ptrs);
    for ptr in ptrs {
        // SAFETY: `ptr` came from `allocator.alloc(layout)` above and is freed exactly once.
        unsafe { allocator.dealloc(ptr, layout) };
    }
}

fn alloc_free(c: &mut Criterion) {
    let peers: [(&str, &dyn GlobalAlloc); 4] = [
        ("ours", &OURS),
        ("mimalloc", &MIMALLOC),
        ("jemalloc", &JEMALLOC),
        ("system", &System),
    ];
    for size in SIZES {
        let layout = Layout::from_size_align(size, 8).expect("a valid layout");
        let mut group = c.benchmark_group(format!("alloc_free_{size}B"));
        group.throughput(Throughput::Elements(BATCH as u64));
        for (name, allocator) in peers {
            group.bench_with_input(BenchmarkId::from_parameter(name), &layout, |b, &layout| {
                b.iter(|| alloc_free_batch(allocator, layout));
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = micro;
    // Short on purpose: 16 benchmarks in well under a minute on a shared two-core machine.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = alloc_free
}
criterion_main!(micro);
