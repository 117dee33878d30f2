//! A per-thread cache of task blocks, between the task code and the global allocator.
//!
//! A pool that admits a window of tasks (`max_pending`, `reserve()`) allocates each task on
//! the spawning thread and frees it there when its handle is dropped (or when a spawn drops
//! a batch of detached tasks, `scheduler::reclaim`), while thousands are alive. glibc keeps
//! seven free chunks per size per thread, so with a window that wide nearly every `malloc`
//! and `free` of a task took its slow path: about a quarter of the instructions of a spawn
//! (benches/NOTES.md). Here a thread keeps up to [`BUDGET`] bytes of freed task blocks, one
//! list per size class, and its next spawns take them back in last-in-first-out order.
//!
//! # Rules
//! - Only blocks of at most [`MAX_BLOCK`] bytes, aligned to at most [`CLASS`], are cached.
//!   Such a block's size is rounded up to its class (a multiple of [`CLASS`]) when it is
//!   taken from the global allocator, and it is given back with that rounded layout, so any
//!   block of a class can serve any request of that class.
//! - A thread keeps at most [`BUDGET`] bytes; a block freed beyond that goes to the global
//!   allocator at once.
//! - A block may be freed on another thread than the one that allocated it, and is then
//!   reused there, as the global allocator allows.
//! - When a thread exits its cached blocks go back to the global allocator; a block freed
//!   after that (by a later thread-local destructor) goes to the global allocator directly.
//!   The lists themselves have no destructor (reaching them is one thread-local address);
//!   the first block a thread keeps registers a separate one that empties them.
//! - The list of a class is threaded through its free blocks: a free block's first word
//!   holds the next one. Nothing else reads a block while it is in a list.

use std::alloc::Layout;
use std::cell::Cell;
use std::ptr;

/// Size classes are multiples of this many bytes, which is also the largest alignment cached.
const CLASS: usize = 16;
/// The largest block cached.
const MAX_BLOCK: usize = 512;
/// Bytes of free blocks one thread keeps at most.
const BUDGET: usize = 1 << 20;

const CLASSES: usize = MAX_BLOCK / CLASS;

/// One thread's free blocks. It needs no destructor of its own (so reaching it costs no
/// more than a thread-local address): [`Cleanup`] empties it at thread exit, registered
/// when the first block is kept.
struct Cache {
    /// The first free block of each class, or null.
    heads: [Cell<*mut u8>; CLASSES],
    /// Bytes that may still be kept: [`BUDGET`] less the bytes in the lists while
    /// `registered`, 0 otherwise (so that one comparison decides whether a freed block is
    /// kept).
    room: Cell<usize>,
    /// [`Cleanup`] is registered and has not run: it will give the blocks back. False
    /// before the first block is kept and again once the thread's exit has emptied the
    /// lists (then `CLEANUP` can no longer be registered, so nothing is kept).
    registered: Cell<bool>,
}

/// Gives a thread's cached blocks back to the global allocator when the thread exits.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        CACHE.with(|cache| {
            cache.registered.set(false);
            cache.drain();
            cache.room.set(0);
        });
    }
}

thread_local! {
    static CACHE: Cache = const {
        Cache {
            heads: [const { Cell::new(ptr::null_mut()) }; CLASSES],
            room: Cell::new(0),
            registered: Cell::new(false),
        }
    };
    static CLEANUP: Cleanup = const { Cleanup };
}

/// The class of a request, if it is cached.
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    (layout.size() != 0 && layout.size() <= MAX_BLOCK && layout.align() <= CLASS)
        .then(|| layout.size().div_ceil(CLASS) - 1)
}

/// The layout every block of `class` is allocated and freed with.
#[inline]
fn class_layout(class: usize) -> Layout {
    debug_assert!(class < CLASSES);
    // SAFETY: `CLASS` is a power of two and the size, at most `MAX_BLOCK`, a multiple of it.
    unsafe { Layout::from_size_align_unchecked((class + 1) * CLASS, CLASS) }
}

impl Cache {
    #[inline]
    fn pop(&self, class: usize) -> Option<*mut u8> {
        let head = self.heads[class].get();
        if head.is_null() {
            return None;
        }
        // SAFETY: `head` is a free block of this class in this thread's list (rules above);
        // its first word, written by `push`, is the next block or null.
        let next = unsafe { head.cast::<*mut u8>().read() };
        self.heads[class].set(next);
        self.room.set(self.room.get() + (class + 1) * CLASS);
        Some(head)
    }

    /// Keeps `block` if there is room; true if kept.
    #[inline]
    fn push(&self, class: usize, block: *mut u8) -> bool {
        let size = (class + 1) * CLASS;
        if self.room.get() < size && (self.registered.get() || !self.make_room(size)) {
            return false;
        }
        // SAFETY: `block` was allocated with `class_layout(class)`, at least `CLASS` bytes
        // aligned to `CLASS`, and its owner gave it up: nothing else reads or writes it.
        unsafe { block.cast::<*mut u8>().write(self.heads[class].get()) };
        self.heads[class].set(block);
        self.room.set(self.room.get() - size);
        true
    }

    /// The first block kept: registers [`Cleanup`] (the thread's exit must then give the
    /// blocks back) and opens the budget; true if `size` bytes now fit. Keeps nothing once
    /// the thread's exit has run `Cleanup`.
    #[cold]
    fn make_room(&self, size: usize) -> bool {
        // Touching `CLEANUP` registers its destructor; it fails once that has run.
        if CLEANUP.try_with(|_| ()).is_ok() {
            self.registered.set(true);
            self.room.set(BUDGET);
        }
        self.room.get() >= size
    }

    /// Gives every kept block back to the global allocator.
    fn drain(&self) {
        for class in 0..CLASSES {
            while let Some(block) = self.pop(class) {
                // SAFETY: every block in a list was allocated with its class's layout.
                unsafe { dealloc_class(block, class) };
            }
        }
    }
}

/// Allocates a block for `layout`, from this thread's cache when it has one.
///
/// # Safety
/// As [`std::alloc::alloc`]: `layout` has a non-zero size. The block must be freed with
/// [`dealloc`] and the same layout.
#[inline]
pub(crate) unsafe fn alloc(layout: Layout) -> *mut u8 {
    let Some(class) = class_of(layout) else {
        // SAFETY: the caller's contract.
        return unsafe { std::alloc::alloc(layout) };
    };
    match CACHE.with(|cache| cache.pop(class)) {
        Some(block) => block,
        None => alloc_class(class),
    }
}

/// A new block of `class` from the global allocator (out of line: the part of `alloc` that
/// is inlined into every spawn stays small).
#[inline(never)]
fn alloc_class(class: usize) -> *mut u8 {
    // SAFETY: a class layout has a non-zero size.
    unsafe { std::alloc::alloc(class_layout(class)) }
}

/// Frees a block [`alloc`] returned for `layout`, into this thread's cache while it has room.
///
/// # Safety
/// `block` came from [`alloc`] with this `layout` and is not used after this call.
#[inline]
pub(crate) unsafe fn dealloc(block: *mut u8, layout: Layout) {
    let Some(class) = class_of(layout) else {
        // SAFETY: the caller's contract; uncached layouts come from the global allocator.
        return unsafe { std::alloc::dealloc(block, layout) };
    };
    if !CACHE.with(|cache| cache.push(class, block)) {
        // SAFETY: the caller's contract: `block` is a block of `class`, no longer used.
        unsafe { dealloc_class(block, class) };
    }
}

/// Gives a block of `class` back to the global allocator (out of line, as `alloc_class`).
///
/// # Safety
/// `block` was allocated with `class_layout(class)` and is not used after this call.
#[inline(never)]
unsafe fn dealloc_class(block: *mut u8, class: usize) {
    // SAFETY: blocks of a class are allocated with its layout (rules above).
    unsafe { std::alloc::dealloc(block, class_layout(class)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).expect("valid layout")
    }

    /// A freed block serves the next request of its class on the same thread, for any
    /// size within the class.
    #[test]
    fn a_freed_block_serves_the_next_request_of_its_class() {
        // SAFETY: each block is freed once, with the layout it was allocated with.
        unsafe {
            let a = alloc(layout(168));
            a.write_bytes(0xAB, 168);
            dealloc(a, layout(168));
            let b = alloc(layout(161));
            assert_eq!(a, b, "the block of the 161..=176 class was reused");
            let c = alloc(layout(200));
            assert_ne!(b, c);
            dealloc(b, layout(161));
            dealloc(c, layout(200));
        }
    }

    /// Blocks too large or too aligned bypass the cache; a thread keeps at most `BUDGET`
    /// bytes, and gives everything back when it exits (Miri checks nothing leaks).
    #[test]
    fn the_cache_is_bounded_and_emptied_at_thread_exit() {
        std::thread::spawn(|| {
            let n = BUDGET / 512 + 8;
            // SAFETY: each block is freed once, with the layout it was allocated with.
            unsafe {
                let blocks: Vec<_> = (0..n).map(|_| alloc(layout(512))).collect();
                for &b in &blocks {
                    dealloc(b, layout(512));
                }
                CACHE.with(|c| assert_eq!(c.room.get(), 0, "the budget is full"));
                let big = Layout::from_size_align(4096, 8).expect("valid layout");
                let p = alloc(big);
                dealloc(p, big);
                let aligned = Layout::from_size_align(64, 64).expect("valid layout");
                let p = alloc(aligned);
                assert_eq!(p as usize % 64, 0);
                dealloc(p, aligned);
                CACHE.with(|c| assert_eq!(c.room.get(), 0, "the budget is full"));
            }
        })
        .join()
        .expect("thread finished");
    }

    /// A block allocated on one thread and freed on another is cached by the second.
    #[test]
    fn a_block_freed_on_another_thread_is_reused_there() {
        struct Block(*mut u8);
        // SAFETY: the block is only handed to the other thread, which frees it.
        unsafe impl Send for Block {}
        // SAFETY: the block is freed once, with its layout.
        let block = Block(unsafe { alloc(layout(100)) });
        std::thread::spawn(move || {
            let block = block;
            // SAFETY: as above; the block moved to this thread.
            unsafe {
                dealloc(block.0, layout(100));
                let again = alloc(layout(100));
                assert_eq!(again, block.0);
                dealloc(again, layout(100));
            }
        })
        .join()
        .expect("thread finished");
    }
}
