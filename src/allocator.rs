//! The binary's global allocator: mimalloc, reached through its plain
//! entry points wherever a layout allows.
//!
//! The `mimalloc` crate passes every allocation to `mi_malloc_aligned`,
//! whose fast path only serves blocks of at most 1 KiB that happen to sit at
//! the alignment asked for; anything larger takes its generic aligned path.
//! Under callgrind that cost the server about 3,600 instructions per iris
//! request, for about 55 allocations (docs/benchmarks.md). Every block
//! mimalloc hands out is at least word aligned (its size classes are whole
//! words, and its pages start 16-byte aligned), so a layout that asks for no
//! more than a word can use `mi_malloc`, `mi_zalloc` and `mi_realloc`;
//! anything else still goes through the crate.

use libmimalloc_sys as ffi;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// mimalloc, with the plain calls for word-aligned layouts.
pub(crate) struct Allocator;

/// The alignment every mimalloc block has.
const WORD: usize = std::mem::size_of::<usize>();

/// Whether a block from the plain calls satisfies an alignment of `align`.
fn plain(align: usize) -> bool {
    align <= WORD
}

// SAFETY: each method returns memory from mimalloc that is valid for the
// layout asked for: the plain calls are used only for alignments that every
// mimalloc block satisfies (see `plain`), the crate's aligned calls for the
// rest. Blocks from either are freed by `mi_free`, which takes both.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align()) {
            // SAFETY: `mi_malloc` may be called with any size.
            unsafe { ffi::mi_malloc(layout.size()).cast() }
        } else {
            // SAFETY: the caller's contract (a non-zero-size layout) is ours.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align()) {
            // SAFETY: `mi_zalloc` may be called with any size.
            unsafe { ffi::mi_zalloc(layout.size()).cast() }
        } else {
            // SAFETY: as in `alloc`.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc; the
        // crate's `dealloc` is `mi_free`, for plain and aligned blocks alike.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(layout.align()) {
            // SAFETY: `ptr` is a live mimalloc block (the caller's
            // contract); the block `mi_realloc` returns is word aligned too.
            unsafe { ffi::mi_realloc(ptr.cast::<c_void>(), new_size).cast() }
        } else {
            // SAFETY: as in `alloc`, with the caller's contract on `ptr`.
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of every size class up to a few MiB, at every alignment up to
    /// a page, are aligned, writable, keep their contents through realloc,
    /// and come back zeroed from `alloc_zeroed`.
    #[test]
    #[allow(unsafe_code)]
    fn blocks_meet_their_layouts() {
        let a = Allocator;
        let sizes = (1..=64).chain([100, 1000, 1024, 1025, 4000, 70_000, 3 << 20]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
                let layout = Layout::from_size_align(size, align).expect("layout");
                // SAFETY: non-zero sizes; each block is freed once, with
                // the layout it was made with, and used only within it.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xA5, size);
                    let q = a.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "realloc size {size} align {align}");
                    assert!(
                        std::slice::from_raw_parts(q, size)
                            .iter()
                            .all(|&b| b == 0xA5)
                    );
                    a.dealloc(q, Layout::from_size_align(size * 3, align).expect("layout"));
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
