//! This test binary runs entirely on alloc-core: the harness, std collections and threads.
//!
//! - `std_collections_work`: maps, strings and vectors behave on our allocator.
//! - `short_lived_threads_hand_blocks_to_each_other`: blocks made by 200 threads are freed by another.
//! - `thousand_short_lived_threads_free_each_others_blocks`: 1,000 threads, each freeing the blocks
//!   its predecessor left (after that thread exited, so into an abandoned or adopted heap) and
//!   leaving its own for the next; every block keeps its contents.
//! - `thread_local_destructors_allocate_and_free`: `thread_local!` values whose `Drop` allocates,
//!   checks and frees (small, large and huge) and sends a block to the main thread run correctly
//!   during thread exit.
//! - `allocation_after_thread_local_destruction`: a pthread-key destructor created after the
//!   allocator's own (so it runs after the thread's heap was abandoned) can still allocate, use and
//!   free memory, and blocks it hands out survive and are freed by another thread.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};

#[global_allocator]
static ALLOC: alloc_core::SlabAlloc = alloc_core::SlabAlloc::new();

#[test]
fn std_collections_work() {
    let mut map = HashMap::new();
    let mut tree = BTreeMap::new();
    for i in 0..100_000u64 {
        map.insert(i, format!("value {i}"));
        tree.insert(format!("key {i:08}"), vec![i; (i % 17) as usize]);
    }
    for i in (0..100_000u64).step_by(3) {
        assert_eq!(map.remove(&i).unwrap(), format!("value {i}"));
    }
    assert_eq!(tree.len(), 100_000);
    let total: usize = tree.values().map(|v| v.len()).sum();
    assert!(total > 0);
}

#[test]
fn short_lived_threads_hand_blocks_to_each_other() {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<String>>();
    let mut handles = Vec::new();
    for t in 0..200 {
        let tx = tx.clone();
        handles.push(std::thread::spawn(move || {
            let v: Vec<String> = (0..100).map(|i| format!("{t}-{i}")).collect();
            tx.send(v).unwrap();
        }));
    }
    drop(tx);
    let mut n = 0;
    for v in rx {
        n += v.len();
    }
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(n, 20_000);
}

/// Blocks of thread `t`: sizes spread over small classes, a span and (sometimes) a huge mapping.
fn make_blocks(t: usize) -> Vec<Vec<u64>> {
    let mut rng = common::Rng::new(t as u64);
    let mut blocks: Vec<Vec<u64>> = (0..64)
        .map(|i| vec![(t * 1000 + i) as u64; rng.log_range(1, 4096)])
        .collect();
    blocks.push(vec![t as u64; 20_000]);
    if t % 50 == 0 {
        blocks.push(vec![t as u64; 300_000]);
    }
    blocks
}

fn check_blocks(t: usize, blocks: &[Vec<u64>]) {
    for (i, b) in blocks.iter().enumerate() {
        let want = if i < 64 {
            (t * 1000 + i) as u64
        } else {
            t as u64
        };
        assert!(
            b.iter().all(|&w| w == want),
            "block {i} of thread {t} corrupted"
        );
    }
}

/// The blocks a thread leaves for its successor, with the thread's number.
type Handoff = (usize, Vec<Vec<u64>>);

#[test]
fn thousand_short_lived_threads_free_each_others_blocks() {
    // Each of 4 chains passes its blocks from one thread to the next: 4 x 250 = 1,000 threads.
    let chains: Vec<_> = (0..4)
        .map(|chain| {
            std::thread::spawn(move || {
                let slot: Arc<Mutex<Option<Handoff>>> = Arc::new(Mutex::new(None));
                for step in 0..250 {
                    let t = chain * 250 + step;
                    let slot = Arc::clone(&slot);
                    std::thread::spawn(move || {
                        let mine = make_blocks(t);
                        let previous = slot.lock().unwrap().replace((t, mine));
                        if let Some((prev_t, blocks)) = previous {
                            check_blocks(prev_t, &blocks);
                            drop(blocks);
                        }
                    })
                    .join()
                    .unwrap();
                }
                let (t, last) = slot.lock().unwrap().take().unwrap();
                check_blocks(t, &last);
                t
            })
        })
        .collect();
    let last: Vec<usize> = chains.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(last, [249, 499, 749, 999]);
}

struct AllocatesOnDrop {
    tx: Option<Sender<Box<[u8]>>>,
}

impl Drop for AllocatesOnDrop {
    fn drop(&mut self) {
        for (i, size) in [1usize, 24, 1000, 32 << 10, 200 << 10, 3 << 20]
            .into_iter()
            .enumerate()
        {
            let v = vec![i as u8 + 1; size];
            let s = format!("{size}-{i}");
            assert!(v.iter().all(|&b| b == i as u8 + 1));
            assert_eq!(s, format!("{size}-{i}"));
        }
        let parting: Box<[u8]> = vec![0xc3; 777].into_boxed_slice();
        self.tx.take().unwrap().send(parting).unwrap();
    }
}

thread_local! {
    static ON_EXIT: std::cell::RefCell<Option<AllocatesOnDrop>> = const { std::cell::RefCell::new(None) };
}

#[test]
fn thread_local_destructors_allocate_and_free() {
    let (tx, rx) = channel();
    let handles: Vec<_> = (0..100)
        .map(|_| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let noise: Vec<String> = (0..50).map(|i| i.to_string()).collect();
                ON_EXIT.with(|cell| *cell.borrow_mut() = Some(AllocatesOnDrop { tx: Some(tx) }));
                drop(noise);
            })
        })
        .collect();
    drop(tx);
    for h in handles {
        h.join().unwrap();
    }
    let parting: Vec<Box<[u8]>> = rx.iter().collect();
    assert_eq!(parting.len(), 100);
    assert!(parting
        .iter()
        .all(|b| b.len() == 777 && b.iter().all(|&x| x == 0xc3)));
}

static LATE_OK: AtomicUsize = AtomicUsize::new(0);
static LATE_BLOCKS: Mutex<Vec<usize>> = Mutex::new(Vec::new());
static LATE_KEY: std::sync::OnceLock<libc::pthread_key_t> = std::sync::OnceLock::new();

extern "C" fn late_destructor(_value: *mut libc::c_void) {
    // Runs after the allocator's own key destructor (keys run in creation order), i.e. after this
    // thread's heap was abandoned. A panic here cannot unwind out of an extern "C" fn: record results.
    let mut ok = true;
    for size in [8usize, 100, 5000, 40 << 10, 2 << 20] {
        let v: Vec<u8> = (0..size).map(|i| i as u8).collect();
        ok &= v.iter().enumerate().all(|(i, &b)| b == i as u8);
    }
    let keep: Box<[u64; 16]> = Box::new([0x1234_5678; 16]);
    LATE_BLOCKS
        .lock()
        .unwrap()
        .push(Box::into_raw(keep) as usize);
    if ok {
        LATE_OK.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn allocation_after_thread_local_destruction() {
    // The allocator's key is created on its first allocation, which has happened by now.
    drop(vec![1u8; 10]);
    let key = *LATE_KEY.get_or_init(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: valid out-pointer; the destructor is an extern "C" fn that does not unwind.
        let rc = unsafe { libc::pthread_key_create(&mut key, Some(late_destructor)) };
        assert_eq!(rc, 0);
        key
    });
    let handles: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                drop(vec![0u8; 100]);
                // SAFETY: the key is live; a non-null value makes the destructor run at exit.
                unsafe { libc::pthread_setspecific(key, std::ptr::dangling::<libc::c_void>()) };
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(LATE_OK.load(Ordering::SeqCst), 50);
    let blocks = std::mem::take(&mut *LATE_BLOCKS.lock().unwrap());
    assert_eq!(blocks.len(), 50);
    for addr in blocks {
        // SAFETY: made by `Box::into_raw` in the destructor; reclaimed once here.
        let b = unsafe { Box::from_raw(addr as *mut [u64; 16]) };
        assert!(b.iter().all(|&w| w == 0x1234_5678));
    }
}
