//! The allocator of a rule instance built without WASI, which lives for one call: bump
//! allocation from what the linker left of the initial memory above the data and the
//! stack, freed all at once when the host drops the instance. Rust's default allocator
//! on `wasm32-unknown-unknown` grows linear memory at its first allocation, which costs
//! the host page-protection calls and a bigger memory to reset after every call; this
//! one grows memory only when a call outgrows the initial pages (big metadata).

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

const PAGE: usize = 64 * 1024;

/// Bump pointer and end of the current region (the initial heap, later grown pages).
pub struct BumpAllocator {
    region: UnsafeCell<(usize, usize)>,
}

// SAFETY: a wasm32 rule instance has one thread.
unsafe impl Sync for BumpAllocator {}

impl BumpAllocator {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Self {
            region: UnsafeCell::new((0, 0)),
        }
    }

    /// (next, end), starting at the initial heap on first use.
    ///
    /// # Safety
    /// Single-threaded callers only (a rule instance), one borrow at a time.
    #[allow(clippy::mut_from_ref)]
    unsafe fn region(&self) -> &mut (usize, usize) {
        let region = unsafe { &mut *self.region.get() };
        if region.1 == 0 {
            unsafe extern "C" {
                static __heap_base: u8;
            }
            let start = core::ptr::addr_of!(__heap_base) as usize;
            *region = (start, core::arch::wasm32::memory_size(0) * PAGE);
        }
        region
    }
}

unsafe impl GlobalAlloc for BumpAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let region = unsafe { self.region() };
        loop {
            let start = region.0.next_multiple_of(layout.align());
            if let Some(end) = start.checked_add(layout.size())
                && end <= region.1
            {
                region.0 = end;
                return start as *mut u8;
            }
            // New pages follow the old ones: the region continues where it ended.
            let missing = (start + layout.size()).saturating_sub(region.1);
            let pages = missing.div_ceil(PAGE).max(1);
            let previous = core::arch::wasm32::memory_grow(0, pages);
            if previous == usize::MAX {
                return core::ptr::null_mut();
            }
            if previous * PAGE != region.1 {
                // Someone else grew memory meanwhile: start over in the new pages.
                region.0 = previous * PAGE;
            }
            region.1 = (previous + pages) * PAGE;
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Only the latest allocation can be given back; the rest goes with the instance.
        let region = unsafe { self.region() };
        if ptr as usize + layout.size() == region.0 {
            region.0 = ptr as usize;
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A growing string or vector is usually the latest allocation: extend in place.
        let region = unsafe { self.region() };
        let start = ptr as usize;
        if start + layout.size() == region.0
            && let Some(end) = start.checked_add(new_size)
            && end <= region.1
        {
            region.0 = end;
            return ptr;
        }
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
        }
        new
    }
}
