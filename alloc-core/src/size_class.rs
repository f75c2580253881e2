//! The size-class table: a `const` table computed at compile time.
//!
//! Classes are multiples of 8 up to 64 B, then four per power of two (`2^p + k·2^(p-2)`, k = 1..4) up
//! to 32 KiB: 44 classes. A request wastes at most a fifth of its class (just above a boundary) and
//! about a tenth on average. Every class in the group above `2^p` is a multiple of `2^(p-2)`, which is
//! what alignment requests are matched against.
//!
//! Each class also fixes its slab size: 1 to 4 units of 64 KiB, the smallest that wastes at most one
//! eighth of the slab at the tail and holds at least 8 objects where 4 units allow it.

/// Largest size served from slabs; larger requests are spans or direct mappings.
pub const MAX_SMALL_BYTES: usize = 32 << 10;
/// Number of size classes.
pub const NUM_CLASSES: usize = 44;
/// The slab unit: every slab and span is a whole number of these inside a 2 MiB arena.
pub const UNIT_SHIFT: u32 = 16;
pub const UNIT_BYTES: usize = 1 << UNIT_SHIFT;
/// A slab never spans more than this many units.
pub(crate) const MAX_SLAB_UNITS: usize = 4;
/// Every block is at least this aligned (the smallest class).
pub const MIN_ALIGN: usize = 8;

const fn class_size_of(class: usize) -> usize {
    if class < 8 {
        (class + 1) * 8
    } else {
        let p = 6 + (class - 8) / 4;
        let k = (class - 8) % 4 + 1;
        (1 << p) + k * (1 << (p - 2))
    }
}

const fn slab_units_of(class: usize) -> usize {
    let size = class_size_of(class);
    let mut units = 1;
    while units < MAX_SLAB_UNITS {
        let bytes = units * UNIT_BYTES;
        let waste = bytes % size;
        if waste * 8 <= bytes && bytes / size >= 8 {
            break;
        }
        units += 1;
    }
    units
}

/// Static facts about one class.
#[derive(Clone, Copy, Debug)]
pub struct ClassInfo {
    pub block_bytes: u32,
    pub slab_units: u8,
    pub capacity: u32,
}

const fn build_table() -> [ClassInfo; NUM_CLASSES] {
    let mut table = [ClassInfo {
        block_bytes: 0,
        slab_units: 0,
        capacity: 0,
    }; NUM_CLASSES];
    let mut class = 0;
    while class < NUM_CLASSES {
        let size = class_size_of(class);
        let units = slab_units_of(class);
        table[class] = ClassInfo {
            block_bytes: size as u32,
            slab_units: units as u8,
            capacity: ((units * UNIT_BYTES) / size) as u32,
        };
        class += 1;
    }
    table
}

/// The table, one entry per class.
pub static CLASSES: [ClassInfo; NUM_CLASSES] = build_table();

/// The class for `size` bytes at the default alignment. `size` must be at most `MAX_SMALL_BYTES`;
/// zero maps to the smallest class.
#[inline]
pub fn class_of(size: usize) -> usize {
    debug_assert!(size <= MAX_SMALL_BYTES);
    if size <= 64 {
        // 0 and 1..=8 both land on class 0.
        size.saturating_sub(1) >> 3
    } else {
        let s = size - 1;
        let p = (usize::BITS - 1 - s.leading_zeros()) as usize;
        8 + (p - 6) * 4 + ((s >> (p - 2)) & 3)
    }
}

/// The class for a request of `size` bytes aligned to `align` (a power of two), or `None` when it
/// must be served as a span. A class fits when its size is a multiple of `align`: then every block in
/// a unit-aligned slab is aligned.
#[inline]
pub fn class_for(size: usize, align: usize) -> Option<usize> {
    if align <= MIN_ALIGN {
        return if size <= MAX_SMALL_BYTES {
            Some(class_of(size))
        } else {
            None
        };
    }
    let size = size.max(align);
    if size > MAX_SMALL_BYTES {
        return None;
    }
    let mut class = class_of(size);
    // At most three steps: the last class of each group is a power of two >= align.
    while (CLASSES[class].block_bytes as usize) % align != 0 {
        class += 1;
    }
    Some(class)
}

/// Block size of a class.
#[inline]
pub fn class_bytes(class: usize) -> usize {
    CLASSES[class].block_bytes as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_increasing_and_ends_at_max() {
        for c in 1..NUM_CLASSES {
            assert!(CLASSES[c].block_bytes > CLASSES[c - 1].block_bytes);
        }
        assert_eq!(class_bytes(NUM_CLASSES - 1), MAX_SMALL_BYTES);
        assert_eq!(class_bytes(0), 8);
    }

    #[test]
    fn class_of_is_the_smallest_fitting_class() {
        for size in 0..=MAX_SMALL_BYTES {
            let c = class_of(size);
            assert!(class_bytes(c) >= size, "size {size} class {c}");
            if c > 0 {
                assert!(class_bytes(c - 1) < size.max(1), "size {size} not tight");
            }
        }
    }

    #[test]
    fn waste_is_bounded() {
        for size in 64..=MAX_SMALL_BYTES {
            let c = class_bytes(class_of(size));
            assert!((c - size) * 5 <= c, "size {size} class {c}");
        }
        for info in CLASSES.iter() {
            let slab = info.slab_units as usize * UNIT_BYTES;
            assert!(info.capacity >= 2);
            assert!(slab - info.capacity as usize * info.block_bytes as usize <= slab / 4);
        }
    }

    #[test]
    fn aligned_classes_are_aligned() {
        let mut align = 1;
        while align <= MAX_SMALL_BYTES {
            for size in [1, 7, 8, 9, 100, 1000, 4097, MAX_SMALL_BYTES] {
                match class_for(size, align) {
                    Some(c) => {
                        assert_eq!(class_bytes(c) % align, 0);
                        assert!(class_bytes(c) >= size);
                    }
                    None => assert!(size.max(align) > MAX_SMALL_BYTES),
                }
            }
            align *= 2;
        }
    }
}
