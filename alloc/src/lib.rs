//! The process allocator of the `tidewater` binary and its benches: mimalloc.
//!
//! The `mimalloc` crate's allocator passes every Rust allocation to `mi_malloc_aligned`.
//! Its fast path serves a block only when the size class's current page has a free block
//! that happens to be aligned; otherwise it falls back to over-allocating `size + align - 1`
//! from the next size class, past mimalloc's own free-list refill. On the scheduler's hot
//! path (records allocated by the engine, freed by the publisher thread) that fallback is
//! the common case. Alignments of 8 and below are what `mi_malloc` guarantees for every
//! size, so those go to the plain entry points; larger alignments keep the aligned ones.

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every `mi_malloc` block has, whatever its size: a machine word.
const WORD: usize = core::mem::size_of::<usize>();

/// mimalloc behind Rust's allocation interface.
pub struct Allocator;

/// Whether `mi_malloc` alone meets the layout's alignment.
#[inline]
fn plain(align: usize) -> bool {
    align <= WORD
}

// SAFETY: every entry point forwards to the mimalloc function with the same contract
// (null on failure, blocks valid until freed, `mi_free` for any of them), choosing the
// aligned variant whenever the layout needs more than a word's alignment.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation functions accept any size and power-of-two alignment.
        unsafe {
            if plain(layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, hence from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new block keeps its
        // alignment (the aligned variant when it needs more than a word).
        unsafe {
            if plain(layout.align()) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_meet_their_alignment_and_keep_their_bytes_across_realloc() {
        let a = Allocator;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 7, 8, 24, 40, 52, 100, 224, 1000, 70_000] {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    panic!("layout {size}/{align}");
                };
                // SAFETY: non-zero size; every block is freed with the layout it has.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xA5, size);
                    let q = a.realloc(p, layout, size * 3);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "realloc size {size} align {align}");
                    assert!((0..size).all(|i| *q.add(i) == 0xA5));
                    a.dealloc(q, Layout::from_size_align_unchecked(size * 3, align));
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
