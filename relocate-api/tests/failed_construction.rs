//! A cache that cannot be made uses up nothing: tags are never reused (so that no cache accepts a
//! dropped cache's handles), and a process can make `MAX_CACHES` caches in its life, so a failed
//! construction must not take one. Its own test binary: it counts on every tag of the process.

use relocate_api::{CacheError, RelocCache, MAX_CACHES};

#[test]
fn refused_types_leave_every_tag_for_caches_that_can_be_made() {
    // More refusals than there are tags: each is `TooLarge`, never `TooManyCaches`.
    for attempt in 0..=MAX_CACHES {
        let refused = RelocCache::<[u8; 40_000]>::new().err();
        assert_eq!(refused, Some(CacheError::TooLarge), "attempt {attempt}");
    }
    let cache = RelocCache::<u64>::new().expect("no tag was used up by the refusals");
    let handle = cache.insert(7).unwrap();
    let reader = cache.reader();
    assert_eq!(cache.get(handle, &reader.pin()), Some(&7));
}
