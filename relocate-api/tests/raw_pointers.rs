//! The raw-pointer mode under concurrency: a directory outside the cache keeps a raw pointer to each
//! object (as users of the kernel's movable objects do), and the cache's relocator keeps it current.
//! Readers follow those pointers under pinned guards while two threads compact and evacuate without
//! pause and two threads insert and remove. Every object read must be the one its directory entry
//! names, whole; at the end every pointer must equal what the object's handle resolves to.
//!
//! The protocol the relocator and the writers follow, under the directory's lock (which `batch`
//! takes once per batch of moves): an object is published (its pointer stored) right after its
//! insert; `isolate` refuses an object whose entry does not point at it (not published yet, or
//! being removed); `migrate` copies the object and swings the entry from the old copy to the new
//! one; a removal clears the entry, and then removes the object.

use relocate_api::{Budget, Handle, Isolation, RelocCache, Relocatable, Relocator};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const KEYS: usize = 40_000;
const RUN: Duration = Duration::from_millis(1500);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Relocatable)]
struct Node {
    key: u64,
    version: u64,
    payload: [u64; 5],
    checksum: u64,
}

impl Node {
    fn new(key: u64, version: u64) -> Self {
        let payload = [
            key ^ version,
            !key,
            version.rotate_left(9),
            key * 3,
            version + key,
        ];
        let mut node = Self {
            key,
            version,
            payload,
            checksum: 0,
        };
        node.checksum = node.sum();
        node
    }

    fn sum(&self) -> u64 {
        (self.payload.iter()).fold(self.key ^ self.version.rotate_left(17), |h, w| {
            (h ^ w).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// Whether this is an intact node of `key`.
    fn is_whole_of(&self, key: usize) -> bool {
        self.key == key as u64
            && self.checksum == self.sum()
            && *self == Node::new(self.key, self.version)
    }
}

/// The directory: a raw pointer per key (null: none), the key's handle, and the lock that orders
/// publication, removal and moves.
struct Directory {
    pointers: Vec<AtomicPtr<Node>>,
    lock: Mutex<()>,
    migrations: AtomicU64,
    wrong: AtomicU64,
}

struct KeepsDirectory(Arc<Directory>);

// SAFETY: `migrate` copies the whole node to `new` and never writes the old copy.
unsafe impl Relocator<Node> for KeepsDirectory {
    fn batch(&self, moves: &mut dyn FnMut()) {
        let _held = self.0.lock.lock().unwrap();
        moves();
    }

    fn isolate(&self, node: &Node, _: Handle<Node>) -> Isolation {
        let entry = self.0.pointers[node.key as usize].load(Ordering::Relaxed);
        if std::ptr::eq(entry, node) {
            Isolation::Ready
        } else {
            Isolation::Busy
        }
    }

    unsafe fn migrate(&self, old: *const Node, new: *mut Node, _: Handle<Node>) {
        // SAFETY: the contract: `old` holds a node, `new` is room for one.
        let key = unsafe {
            new.write(old.read());
            (*new).key as usize
        };
        // `isolate` saw the entry at `old` under the lock, which is still held.
        let swung = self.0.pointers[key].compare_exchange(
            old as *mut Node,
            new,
            Ordering::Release,
            Ordering::Relaxed,
        );
        if swung.is_err() {
            self.0.wrong.fetch_add(1, Ordering::Relaxed);
        }
        self.0.migrations.fetch_add(1, Ordering::Relaxed);
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn a_directory_of_raw_pointers_stays_current_under_concurrent_compaction() {
    let directory = Arc::new(Directory {
        pointers: (0..KEYS)
            .map(|_| AtomicPtr::new(std::ptr::null_mut()))
            .collect(),
        lock: Mutex::new(()),
        migrations: AtomicU64::new(0),
        wrong: AtomicU64::new(0),
    });
    let cache = RelocCache::with_relocator(KeepsDirectory(Arc::clone(&directory))).unwrap();
    let handles: Vec<AtomicU64> = (0..KEYS).map(|_| AtomicU64::new(0)).collect();
    let (stop, start) = (AtomicBool::new(false), Barrier::new(6));
    let bad_reads = AtomicU64::new(0);
    let (cache, handles, directory) = (&cache, &handles, &*directory);
    std::thread::scope(|scope| {
        // Writers: writer `w` owns the keys `k` with `k % 2 == w`, inserting and removing them.
        for w in 0..2 {
            let (stop, start) = (&stop, &start);
            scope.spawn(move || {
                let reader = cache.reader();
                let mut rng = Rng(0x5eed + w as u64);
                let mut version = 0;
                start.wait();
                while !stop.load(Ordering::Relaxed) {
                    let key = rng.below(KEYS / 2) * 2 + w;
                    let guard = reader.pin();
                    let held = handles[key].load(Ordering::Relaxed);
                    if held == 0 {
                        version += 1;
                        let handle = cache.insert(Node::new(key as u64, version)).unwrap();
                        let _order = directory.lock.lock().unwrap();
                        let at = cache.get(handle, &guard).unwrap() as *const Node;
                        directory.pointers[key].store(at as *mut Node, Ordering::Release);
                        handles[key].store(handle.to_bits(), Ordering::Relaxed);
                    } else {
                        let handle = Handle::from_bits(held);
                        {
                            let _order = directory.lock.lock().unwrap();
                            directory.pointers[key].store(std::ptr::null_mut(), Ordering::Release);
                        }
                        let removed =
                            cache.remove_with(handle, &guard, |node| node.is_whole_of(key));
                        assert_eq!(removed, Some(true), "key {key} removed whole");
                        handles[key].store(0, Ordering::Relaxed);
                    }
                }
            });
        }
        // Readers: follow the directory's pointers under pinned guards.
        for r in 0..2 {
            let (stop, start, bad_reads) = (&stop, &start, &bad_reads);
            scope.spawn(move || {
                let reader = cache.reader();
                let mut rng = Rng(0xbeef + r);
                start.wait();
                while !stop.load(Ordering::Relaxed) {
                    let _guard = reader.pin();
                    for _ in 0..256 {
                        let key = rng.below(KEYS);
                        let at = directory.pointers[key].load(Ordering::Acquire);
                        // SAFETY: a published pointer, loaded under a pinned guard of the cache:
                        // moved and removed nodes' old copies stay until the guard is gone.
                        if !at.is_null() && !unsafe { &*at }.is_whole_of(key) {
                            bad_reads.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        // Compactors: footprint compaction and evacuation of the sparsest arena, without pause.
        for c in 0..2 {
            let (stop, start) = (&stop, &start);
            scope.spawn(move || {
                let reader = cache.reader();
                start.wait();
                while !stop.load(Ordering::Relaxed) {
                    {
                        let guard = reader.pin();
                        if c == 0 {
                            cache.compact(&guard, Budget::Objects(4096)).unwrap();
                        } else {
                            cache
                                .evacuate_sparsest(&guard, 1, Budget::Objects(4096))
                                .unwrap();
                        }
                    }
                    cache.flush(&reader);
                }
            });
        }
        let began = Instant::now();
        while began.elapsed() < RUN {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(
        bad_reads.load(Ordering::Relaxed),
        0,
        "reads of a wrong or torn node"
    );
    assert_eq!(
        directory.wrong.load(Ordering::Relaxed),
        0,
        "a move of an entry not at its node"
    );
    let migrations = directory.migrations.load(Ordering::Relaxed);
    eprintln!("moves while reading: {migrations}");
    assert!(migrations > 10_000, "only {migrations} moves while reading");
    let reader = cache.reader();
    let guard = reader.pin();
    let mut live = 0;
    for (key, handle) in handles.iter().enumerate() {
        let at = directory.pointers[key].load(Ordering::Acquire);
        match handle.load(Ordering::Relaxed) {
            0 => assert!(at.is_null(), "key {key}: a pointer without an object"),
            bits => {
                let node = cache.get(Handle::from_bits(bits), &guard).expect("live");
                assert!(std::ptr::eq(node, at), "key {key}: the pointer is current");
                assert!(node.is_whole_of(key));
                live += 1;
            }
        }
    }
    assert_eq!(cache.len(), live);
    assert_eq!(cache.stats().counters.callback_panics, 0);
}
