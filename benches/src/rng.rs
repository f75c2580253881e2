//! A small seeded pseudo-random generator (SplitMix64), so that every allocator sees exactly the
//! same sequence of sizes and choices, and drawing a number never allocates.

/// SplitMix64: one add and two multiply-xorshift rounds per draw; good enough statistics for
/// choosing sizes and slots, and cheap next to an allocation.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose sequence is fixed by `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`), by the multiply-shift reduction (no division).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A number in `lo..=hi`.
    #[inline]
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent / 100`.
    #[inline]
    pub fn percent(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// A size in `lo..hi` (powers of two, `lo < hi`) spread evenly over the powers of two in
    /// between: first an octave is chosen uniformly, then a size uniformly inside it. This is the
    /// usual shape of object sizes in real programs (many small, few large), without floating point.
    #[inline]
    pub fn log_uniform(&mut self, lo: usize, hi: usize) -> usize {
        debug_assert!(lo.is_power_of_two() && hi.is_power_of_two() && lo < hi);
        let octaves = (hi.trailing_zeros() - lo.trailing_zeros()) as usize;
        let base = lo << self.below(octaves);
        base + self.below(base)
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn ranges_hold() {
        let mut rng = Rng::new(7);
        for _ in 0..10_000 {
            assert!(rng.below(10) < 10);
            let b = rng.between(3, 5);
            assert!((3..=5).contains(&b));
            let s = rng.log_uniform(16, 512);
            assert!((16..512).contains(&s), "{s}");
        }
    }

    #[test]
    fn same_seed_same_sequence() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<u32> = (0..1000).collect();
        Rng::new(1).shuffle(&mut v);
        assert_ne!(v, (0..1000).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..1000).collect::<Vec<_>>());
    }
}
