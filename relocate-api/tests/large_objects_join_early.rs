//! Caches of large objects join arenas of their own soon after their live objects fill one: a
//! cache checks at least every quarter of an arena's worth of inserts (every 16 for 32 KiB objects).
//! With a check every 256 inserts, two caches of 32 KiB objects filled 8 MiB of shared arenas
//! first, and their first eight reclaims each evicted half an arena (a review). One test in a
//! process of its own: the shared arenas are the process's.

use relocate_api::RelocCache;

#[test]
fn caches_of_large_objects_reclaim_whole_arenas_soon() {
    type Big = [u64; 4096];
    /// 32 KiB objects: 64 to an arena.
    const PER_ARENA: usize = 64;
    let caches: Vec<RelocCache<Big>> = (0..2).map(|_| RelocCache::new().unwrap()).collect();
    assert_eq!(caches[0].block_bytes(), 32 << 10);
    for i in 0..600u64 {
        for cache in &caches {
            cache.insert([i; 4096]).map_err(|(_, e)| e).unwrap();
        }
    }
    let cache = &caches[0];
    let reader = cache.reader();
    let mut first_evicted = 0;
    let mut evictions = Vec::new();
    for _ in 0..6 {
        let mut seqs = Vec::new();
        {
            let guard = reader.pin();
            cache
                .reclaim_oldest(&guard, |_, object| seqs.push(object[0]))
                .unwrap();
        }
        cache.flush(&reader);
        seqs.sort_unstable();
        assert_eq!(seqs[0], first_evicted, "the oldest go first");
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        first_evicted += seqs.len() as u64;
        evictions.push(seqs.len());
    }
    // The objects stored before the cache joined its group share arenas with the other cache's:
    // at most two reclaims take halves of those; then whole arenas.
    assert!(
        evictions[2..].iter().all(|&n| n == PER_ARENA),
        "{evictions:?}"
    );
}
