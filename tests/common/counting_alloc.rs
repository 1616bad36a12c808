//! A counting global allocator for allocation tests: it counts, per thread, the allocations
//! (alloc, alloc_zeroed, realloc) and the bytes asked for while a closure runs, and the bytes
//! live (allocated and not yet freed), so tests running in parallel do not disturb each other. Include it with
//! `#[path = "common/counting_alloc.rs"] mod counting_alloc;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static BYTES: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn bump(size: usize) {
    // `try_with`: the thread-locals may be gone while a thread shuts down.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
    let _ = BYTES.try_with(|c| c.set(c.get() + size));
}

fn add_live(n: isize) {
    let _ = LIVE.try_with(|c| c.set(c.get() + n));
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are
// const-initialised thread-local `Cell`s without destructors, so touching them never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump(layout.size());
        add_live(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump(layout.size());
        add_live(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump(new_size);
        add_live(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add_live(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated on this thread and not yet freed (frees of memory another thread allocated
/// count here too): compare two readings.
#[allow(dead_code)]
pub fn live() -> isize {
    LIVE.with(Cell::get)
}

/// Runs `f` and returns its result with the number of allocations it made on this thread.
#[allow(dead_code)]
pub fn count<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let (r, n, _) = count_bytes(f);
    (r, n)
}

/// Runs `f` and returns its result, the number of allocations it made on this thread and the
/// bytes they asked for.
pub fn count_bytes<R>(f: impl FnOnce() -> R) -> (R, usize, usize) {
    let before = (ALLOCATIONS.with(Cell::get), BYTES.with(Cell::get));
    let r = f();
    let after = (ALLOCATIONS.with(Cell::get), BYTES.with(Cell::get));
    (r, after.0 - before.0, after.1 - before.1)
}
