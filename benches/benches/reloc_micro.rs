//! Micro-benchmark: reading 1M 64-byte objects through `RelocCache` handles against raw `Box`
//! pointers, in one process, so that both are measured on the same machine minutes (the `handles`
//! workload runs each structure in a process of its own, and this machine's speed moves between
//! them). The process's global allocator is alloc-core, so the `Box`es live on its slabs and the
//! key arrays come from the same allocator for both.
//!
//! - `get`: independent gets of random objects (the guard re-pinned every 256 gets, as in the
//!   workload), the same through a `View` taken after each re-pin, and `get_many` for the same gets
//!   in calls of 256;
//! - `chase`: dependent gets, each object naming the next.
//!
//! Per element times; the ratio of `reloc` to `box` in a group is the figure the targets
//! are about (independent `get` ≤ 1.5×, chased `get` ≤ 1.1× a raw pointer).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relocate_api::{Handle, RelocCache};

#[global_allocator]
static GLOBAL: alloc_core::SlabAlloc = alloc_core::SlabAlloc::new();

type Obj = [u64; 8];

const OBJECTS: usize = 1 << 20;
/// Gets per iteration.
const STEPS: usize = 4096;
const REPIN_EVERY: usize = 256;
const MULTI_GET: usize = 256;

/// The objects both ways: object `i` holds `[next(i), i, ...]`, `next` one random cycle.
struct Setup {
    boxes: Vec<*const Obj>,
    cache: RelocCache<Obj>,
    handles: Vec<Handle<Obj>>,
    /// Random indices, read in order by the independent gets.
    order: Vec<u32>,
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn setup() -> Setup {
    let mut state = 7;
    let mut cycle: Vec<u32> = (0..OBJECTS as u32).collect();
    for i in (1..OBJECTS).rev() {
        cycle.swap(i, (splitmix(&mut state) % (i as u64 + 1)) as usize);
    }
    let mut next = vec![0u32; OBJECTS];
    for w in 0..OBJECTS {
        next[cycle[w] as usize] = cycle[(w + 1) % OBJECTS];
    }
    let make = |i: usize| -> Obj { [u64::from(next[i]), i as u64, 0, 0, 0, 0, 0, 0] };
    let boxes = (0..OBJECTS)
        .map(|i| Box::into_raw(Box::new(make(i))) as *const Obj)
        .collect();
    let cache = RelocCache::new().expect("a RelocCache of [u64; 8]");
    let handles = (0..OBJECTS)
        .map(|i| cache.insert(make(i)).expect("insert"))
        .collect();
    let order = (0..OBJECTS)
        .map(|_| (splitmix(&mut state) % OBJECTS as u64) as u32)
        .collect();
    Setup {
        boxes,
        cache,
        handles,
        order,
    }
}

fn reads(c: &mut Criterion) {
    let s = setup();
    let reader = s.cache.reader();
    let mut group = c.benchmark_group("get_1M_64B");
    group.throughput(Throughput::Elements(STEPS as u64));
    let mut at = 0usize;
    let mut window = move || {
        at = (at + STEPS) % (OBJECTS - STEPS);
        at..at + STEPS
    };
    group.bench_function(BenchmarkId::from_parameter("box"), |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for &i in &s.order[window()] {
                // SAFETY: a pointer from `Box::into_raw`, freed only at the end of the process.
                sum += unsafe { (*s.boxes[i as usize])[1] };
            }
            black_box(sum)
        });
    });
    group.bench_function(BenchmarkId::from_parameter("reloc"), |b| {
        let mut guard = reader.pin();
        b.iter(|| {
            let mut sum = 0u64;
            for (n, &i) in s.order[window()].iter().enumerate() {
                if n % REPIN_EVERY == 0 {
                    guard.repin();
                }
                sum += s
                    .cache
                    .get(s.handles[i as usize], &guard)
                    .map_or(0, |o| o[1]);
            }
            black_box(sum)
        });
    });
    group.bench_function(BenchmarkId::from_parameter("reloc-view"), |b| {
        let mut guard = reader.pin();
        b.iter(|| {
            let mut sum = 0u64;
            for chunk in s.order[window()].chunks(REPIN_EVERY) {
                guard.repin();
                let view = s.cache.view(&guard);
                for &i in chunk {
                    sum += view.get(s.handles[i as usize]).map_or(0, |o| o[1]);
                }
            }
            black_box(sum)
        });
    });
    group.bench_function(BenchmarkId::from_parameter("reloc-get_many"), |b| {
        let mut guard = reader.pin();
        let mut batch = [s.handles[0]; MULTI_GET];
        b.iter(|| {
            let mut sum = 0u64;
            for chunk in s.order[window()].chunks(MULTI_GET) {
                guard.repin();
                for (h, &i) in batch.iter_mut().zip(chunk) {
                    *h = s.handles[i as usize];
                }
                s.cache.get_many(&batch[..chunk.len()], &guard, |_, o| {
                    sum += o.map_or(0, |o| o[1]);
                });
            }
            black_box(sum)
        });
    });
    group.finish();

    let mut group = c.benchmark_group("chase_1M_64B");
    group.throughput(Throughput::Elements(STEPS as u64));
    let mut from = 0usize;
    group.bench_function(BenchmarkId::from_parameter("box"), |b| {
        b.iter(|| {
            for _ in 0..STEPS {
                // SAFETY: as above.
                from = unsafe { (*s.boxes[from])[0] } as usize;
            }
            black_box(from)
        });
    });
    group.bench_function(BenchmarkId::from_parameter("reloc"), |b| {
        let mut guard = reader.pin();
        b.iter(|| {
            for n in 0..STEPS {
                if n % REPIN_EVERY == 0 {
                    guard.repin();
                }
                from = s.cache.get(s.handles[from], &guard).map_or(0, |o| o[0]) as usize;
            }
            black_box(from)
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = reads
}
criterion_main!(benches);
