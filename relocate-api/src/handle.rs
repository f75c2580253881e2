//! Handles: 8-byte, copyable names of cached objects.

use core::fmt;
use core::marker::PhantomData;

/// A handle to an object in a [`crate::RelocCache`]: a slot index (the low 28 bits, room for
/// [`crate::MAX_OBJECTS`]) and above it a generation (18 bits) and the cache's tag (18 bits, the top
/// one always set). A handle whose object was removed or evicted (stale), or that comes from another
/// cache, resolves to `None`; it is never dereferenced. An object live at its home block has its
/// handle's very bits in its slot (see `slot`), so a read checks it with one compare.
pub struct Handle<T> {
    bits: u64,
    _type: PhantomData<fn() -> T>,
}

use crate::slot::INDEX_BITS;

impl<T> Handle<T> {
    /// The handle of slot `index` (below `2^INDEX_BITS`) and generation `gen` (tag included).
    pub(crate) fn new(index: u32, gen: u64) -> Self {
        debug_assert!(index >> INDEX_BITS == 0 && gen >> (64 - INDEX_BITS) == 0);
        Self::from_bits((gen << INDEX_BITS) | u64::from(index))
    }

    #[inline]
    pub(crate) fn index(self) -> u32 {
        (self.bits & ((1 << INDEX_BITS) - 1)) as u32
    }

    /// The generation, with the tag in its high bits.
    #[inline]
    pub(crate) fn gen(self) -> u64 {
        self.bits >> INDEX_BITS
    }

    /// The handle as one `u64` (for storing in other structures).
    pub fn to_bits(self) -> u64 {
        self.bits
    }

    /// A handle from [`Self::to_bits`]. Any value is safe to use: a wrong one resolves to `None`.
    pub fn from_bits(bits: u64) -> Self {
        Self {
            bits,
            _type: PhantomData,
        }
    }
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Handle<T> {}

impl<T> PartialEq for Handle<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bits == other.bits
    }
}

impl<T> Eq for Handle<T> {}

impl<T> core::hash::Hash for Handle<T> {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.to_bits().hash(state);
    }
}

impl<T> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle({}v{:#x})", self.index(), self.gen())
    }
}

const _: () = assert!(core::mem::size_of::<Handle<String>>() == 8);
