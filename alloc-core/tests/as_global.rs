//! This test binary runs entirely on alloc-core: the harness, std collections and threads.

use std::collections::{BTreeMap, HashMap};

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
