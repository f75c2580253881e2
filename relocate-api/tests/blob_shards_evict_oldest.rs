//! `BlobCache` shards of spread value sizes, each held to a budget by `reclaim_oldest`, beside a
//! small cache of another kind: each shard's many size classes join the shard's own arenas once its
//! blobs together fill an arena, so its reclaims evict its oldest blobs, whole arenas of them, and
//! the budget holds. When each class decided alone (and most classes stay under 2 MiB), the
//! shards' classes stayed in the shared arenas: a review's run evicted 24 blobs a reclaim, 62.9 %
//! of them younger than 10,000 inserts, and the shards grew to 56 MiB each against 16. One test in a
//! process of its own: the shared arenas are the process's.

use relocate_api::{BlobCache, RelocCache};

#[test]
fn shards_of_spread_sizes_evict_their_oldest_and_keep_their_budget() {
    const SHARDS: usize = 4;
    const BUDGET: usize = 16 << 20;
    const INSERTS: u64 = 200_000;
    let other: RelocCache<[u64; 8]> = RelocCache::new().unwrap();
    let mut others = Vec::new();
    let shards: Vec<BlobCache> = (0..SHARDS).map(|_| BlobCache::new().unwrap()).collect();
    let mut inserted = [0usize; SHARDS];
    let (mut rng, mut value) = (0x1234_5678u64, vec![0u8; 3000]);
    let (mut evicted, mut young, mut reclaims, mut most_live) = (0u64, 0u64, 0u64, 0);
    for seq in 0..INSERTS {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = 100 + (rng >> 33) as usize % 2900;
        value[..8].copy_from_slice(&seq.to_le_bytes());
        if seq % 50 == 0 {
            others.push(other.insert([seq; 8]).unwrap());
        }
        let s = seq as usize % SHARDS;
        let shard = &shards[s];
        shard.insert(&value[..len]).unwrap();
        inserted[s] += 1;
        if inserted[s] % 64 != 0 {
            continue;
        }
        let live = shard.stats().live_bytes;
        most_live = most_live.max(live);
        if live <= BUDGET {
            continue;
        }
        let reader = shard.reader();
        {
            let guard = reader.pin();
            let report = shard
                .reclaim_oldest(&guard, |_, blob| {
                    let stored = u64::from_le_bytes(blob[..8].try_into().unwrap());
                    young += u64::from(seq - stored < 10_000);
                })
                .unwrap();
            evicted += report.evicted as u64;
        }
        shard.flush(&reader);
        reclaims += 1;
    }
    let per_reclaim = evicted as f64 / reclaims as f64;
    let young_share = young as f64 / evicted as f64;
    eprintln!(
        "{reclaims} reclaims, {per_reclaim:.0} blobs each, {:.1} % young, most live {} KiB",
        100.0 * young_share,
        most_live >> 10
    );
    assert!(per_reclaim > 500.0, "{per_reclaim} blobs a reclaim");
    assert!(young_share < 0.15, "{:.1} % young", 100.0 * young_share);
    assert!(most_live < BUDGET + BUDGET / 4, "{most_live} bytes live");
    let guard = other.reader().pin();
    for (i, &h) in others.iter().enumerate() {
        assert_eq!(other.get(h, &guard), Some(&[50 * i as u64; 8]));
    }
}
