//! [`Block`]: one heap object of a chosen size, allocated through the process's global allocator
//! and tagged so that a wrong-content bug is caught when the object is freed.
//!
//! A workload must touch what it allocates (a real program does), but filling every byte would
//! turn the benchmark into a memset benchmark. A block therefore writes its tag into its first
//! eight bytes (fewer if it is smaller) and into its last byte, which touches the first and the
//! last page of large blocks, and checks both on drop. Mismatches are counted in a process-wide
//! counter that the child reports as `corrupt=N`.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// Alignment of every block: that of most Rust objects.
const BLOCK_ALIGN: usize = 8;

/// Objects (blocks, or a workload's own containers) whose content was found changed.
static CORRUPT_OBJECTS: AtomicU64 = AtomicU64::new(0);

/// How many objects so far were found with content that changed under them.
pub fn corrupt_objects() -> u64 {
    CORRUPT_OBJECTS.load(Ordering::Relaxed)
}

/// Counts one object found with wrong content; the first one is described on stderr.
#[cold]
pub fn note_corrupt(what: std::fmt::Arguments<'_>) {
    if CORRUPT_OBJECTS.fetch_add(1, Ordering::Relaxed) == 0 {
        eprintln!("corrupt object: {what}");
    }
}

/// An owned, tagged allocation of `size_bytes` bytes with alignment 8.
#[derive(Debug)]
pub struct Block {
    ptr: NonNull<u8>,
    size_bytes: usize,
    tag: u64,
}

// SAFETY: a `Block` exclusively owns its allocation (like `Box<[u8]>`), and the global allocator
// allows freeing on any thread what was allocated on another.
unsafe impl Send for Block {}

impl Block {
    /// Allocates `size_bytes` (> 0) through the global allocator and writes `tag` into it.
    #[inline]
    pub fn new(size_bytes: usize, tag: u64) -> Self {
        let layout = layout_of(size_bytes);
        // SAFETY: `layout` has a non-zero size (asserted in `layout_of`).
        let raw = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            handle_alloc_error(layout)
        };
        let block = Self {
            ptr,
            size_bytes,
            tag,
        };
        block.write_tag();
        block
    }

    /// The size that was asked for.
    #[inline]
    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }

    /// Writes the tag into the head (first eight bytes, or all of a smaller block) and, for a
    /// longer block, into its last byte.
    #[inline]
    fn write_tag(&self) {
        let head = self.tag.to_le_bytes();
        let head_len = self.size_bytes.min(head.len());
        let base = self.ptr.as_ptr();
        // SAFETY: the block owns `size_bytes >= head_len` writable bytes at `base`, and `head` is
        // a local array, so the ranges do not overlap.
        unsafe { base.copy_from_nonoverlapping(head.as_ptr(), head_len) };
        if self.size_bytes > head.len() {
            // SAFETY: `size_bytes - 1` is in bounds of the allocation.
            unsafe { base.add(self.size_bytes - 1).write(tail_byte(self.tag)) };
        }
    }

    /// Whether the bytes `write_tag` wrote are still there.
    #[inline]
    fn tag_intact(&self) -> bool {
        let expected = self.tag.to_le_bytes();
        let head_len = self.size_bytes.min(expected.len());
        let base = self.ptr.as_ptr();
        let mut head = [0u8; 8];
        // SAFETY: the block owns `head_len` bytes at `base`, initialised by `write_tag`.
        unsafe { head.as_mut_ptr().copy_from_nonoverlapping(base, head_len) };
        if head[..head_len] != expected[..head_len] {
            return false;
        }
        if self.size_bytes <= expected.len() {
            return true;
        }
        // SAFETY: `size_bytes - 1` is in bounds and was initialised by `write_tag`.
        let last = unsafe { base.add(self.size_bytes - 1).read() };
        last == tail_byte(self.tag)
    }
}

impl Drop for Block {
    #[inline]
    fn drop(&mut self) {
        if !self.tag_intact() {
            note_corrupt(format_args!(
                "block at {:p}: {} bytes, tag {:#x}",
                self.ptr, self.size_bytes, self.tag
            ));
        }
        // SAFETY: `ptr` was returned by `alloc` with exactly this layout and is freed only here.
        unsafe { dealloc(self.ptr.as_ptr(), layout_of(self.size_bytes)) };
    }
}

#[inline]
fn layout_of(size_bytes: usize) -> Layout {
    assert!(size_bytes > 0, "blocks are never empty");
    match Layout::from_size_align(size_bytes, BLOCK_ALIGN) {
        Ok(layout) => layout,
        Err(_) => panic!("block size {size_bytes} overflows a layout"),
    }
}

#[inline]
fn tail_byte(tag: u64) -> u8 {
    (tag as u8) ^ 0xA5
}

#[cfg(test)]
mod tests {
    use super::{corrupt_objects, Block};

    #[test]
    fn blocks_of_every_small_size_round_trip() {
        let before = corrupt_objects();
        let blocks: Vec<Block> = (1..300)
            .map(|n| Block::new(n, u64::MAX / n as u64))
            .collect();
        assert!(blocks.iter().all(|b| b.tag_intact()));
        drop(blocks);
        assert_eq!(corrupt_objects(), before);
    }

    #[test]
    fn a_changed_byte_is_detected() {
        let block = Block::new(64, 0x1234_5678);
        // SAFETY: byte 0 is in bounds of the 64-byte block the test owns.
        unsafe { block.ptr.as_ptr().write(0xFF) };
        assert!(!block.tag_intact());
        // Restore it so that the drop does not count it (tests share the counter).
        block.write_tag();
        assert!(block.tag_intact());
    }
}
