//! `#[derive(Relocatable)]` on structs (named, tuple, unit, generic) and enums: the derived types
//! live in caches, move in compactions and read back whole. (What the derive refuses, fields with
//! interior mutability, raw pointers and unions, are `compile_fail` examples on the trait.)

use relocate_api::{Budget, RelocCache, Relocatable};
use std::marker::PhantomData;

#[derive(Relocatable, Debug, Clone, PartialEq)]
struct Named<T> {
    id: u64,
    label: String,
    values: Vec<T>,
    _unit: PhantomData<T>,
}

#[derive(Relocatable, Debug, Clone, PartialEq)]
struct Pair(u32, Box<str>);

#[derive(Relocatable, Debug, Clone, PartialEq)]
struct Unit;

#[derive(Relocatable, Debug, Clone, PartialEq)]
enum Shape<const N: usize> {
    Empty,
    Point(i64, i64),
    Poly {
        corners: [(i64, i64); N],
        name: Option<String>,
    },
    Nested(Pair, Unit),
}

/// A field that names `Self`.
#[derive(Relocatable, Debug, Clone, PartialEq)]
enum List {
    Nil,
    Cons(u64, Box<Self>),
}

/// No value at all (it derives, and never lives in a cache).
#[derive(Relocatable)]
#[allow(dead_code)]
enum Never {}

/// Inserts `make(i)` for 20,000 keys, removes all but every tenth, compacts until nothing moves,
/// and checks that the survivors moved and read back as they were made.
fn survives_compaction<
    T: Relocatable + Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static,
>(
    make: impl Fn(u64) -> T,
) {
    let cache: RelocCache<T> = RelocCache::new().unwrap();
    let reader = cache.reader();
    let handles: Vec<_> = (0..20_000)
        .map(|i| cache.insert(make(i)).map_err(|(_, e)| e).unwrap())
        .collect();
    {
        let guard = reader.pin();
        for (i, &h) in handles.iter().enumerate() {
            if i % 10 != 0 {
                assert!(cache.remove(h, &guard));
            }
        }
    }
    cache.flush(&reader);
    let guard = reader.pin();
    let report = cache.compact(&guard, Budget::Unlimited).unwrap();
    assert!(report.moved_objects > 0, "{report:?}");
    for (i, &h) in handles.iter().enumerate().step_by(10) {
        assert_eq!(cache.get(h, &guard), Some(&make(i as u64)), "object {i}");
    }
}

#[test]
fn derived_types_move_and_read_back() {
    survives_compaction(|i| Named {
        id: i,
        label: format!("item {i}"),
        values: vec![i as u16; (i % 5) as usize],
        _unit: PhantomData,
    });
    survives_compaction(|i| Pair(i as u32, format!("{i}").into_boxed_str()));
    survives_compaction(|i| match i % 4 {
        0 => Shape::<3>::Empty,
        1 => Shape::Point(i as i64, -(i as i64)),
        2 => Shape::Poly {
            corners: [(0, 0), (i as i64, 0), (0, i as i64)],
            name: (i % 3 == 0).then(|| format!("poly {i}")),
        },
        _ => Shape::Nested(Pair(i as u32, "n".into()), Unit),
    });
    survives_compaction(|i| List::Cons(i, Box::new(List::Cons(i + 1, Box::new(List::Nil)))));
}
