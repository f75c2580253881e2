//! Handles: 8-byte, copyable names of cached objects.

use core::fmt;
use core::marker::PhantomData;

/// A handle to an object in a [`crate::RelocCache`]: a slot index and a generation whose high bits are
/// the cache's tag. A handle whose object was removed or evicted (stale), or that comes from another
/// cache, resolves to `None`; it is never dereferenced.
pub struct Handle<T> {
    pub(crate) index: u32,
    pub(crate) gen: u32,
    _type: PhantomData<fn() -> T>,
}

impl<T> Handle<T> {
    pub(crate) fn new(index: u32, gen: u32) -> Self {
        Self {
            index,
            gen,
            _type: PhantomData,
        }
    }

    /// The handle as one `u64` (for storing in other structures).
    pub fn to_bits(self) -> u64 {
        (u64::from(self.gen) << 32) | u64::from(self.index)
    }

    /// A handle from [`Self::to_bits`]. Any value is safe to use: a wrong one resolves to `None`.
    pub fn from_bits(bits: u64) -> Self {
        Self::new(bits as u32, (bits >> 32) as u32)
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
        self.index == other.index && self.gen == other.gen
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
        write!(f, "Handle({}v{:#x})", self.index, self.gen)
    }
}

const _: () = assert!(core::mem::size_of::<Handle<String>>() == 8);
