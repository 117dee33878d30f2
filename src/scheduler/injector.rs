//! The global run queues' type: crossbeam-deque 0.8.8's `Injector`, carried here with one
//! change, **its blocks are recycled**.
//!
//! The injector is a linked list of blocks of 63 slots (1016 bytes for a `Runnable`). The
//! thread that pushes the last slot of a block allocates the next one; the thread that reads
//! the last slot frees the block. For tasks spawned from outside the pool that means the
//! spawner allocates and a worker frees: with glibc, every such free goes to the spawner's
//! arena under that arena's lock, which the spawner's own task allocations take too. Profiled
//! (`perf record` of 1M spawns and awaits from one thread), the spawner spent about a fifth of
//! its time in that lock's futex wake-ups and the workers a quarter of theirs freeing blocks.
//!
//! Here the reader that would free a block keeps it in `spare` instead, and the next push that
//! needs a block takes it from there and zeroes it (a new block is all zeroes); a block finds
//! `spare` full
//! only when two are retired before one is needed, and is then freed. Reuse happens exactly
//! where the upstream code frees, so every argument that makes the free safe makes the reuse
//! safe: no thread dereferences a block it found through `head` or `tail` before its
//! compare-and-swap of that position's index succeeds, and indices never repeat.
//!
//! Everything else is upstream's code and protocol as published (MIT or Apache-2.0), reduced
//! to the methods the scheduler calls. One more difference: a batch steal hands its tasks to
//! the destination worker with `Worker::push`, one by one, rather than writing into the
//! worker's buffer (private to crossbeam-deque).

use std::alloc::{Layout, alloc_zeroed, handle_alloc_error};
use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::sync::atomic::{self, AtomicPtr, AtomicUsize, Ordering};

use crossbeam_utils::{Backoff, CachePadded};

use super::queue::{Steal, Worker};

// Bits indicating the state of a slot:
// * If a task has been written into the slot, `WRITE` is set.
// * If a task has been read from the slot, `READ` is set.
// * If the block is being destroyed, `DESTROY` is set.
const WRITE: usize = 1;
const READ: usize = 2;
const DESTROY: usize = 4;

// Each block covers one "lap" of indices.
const LAP: usize = 64;
// The maximum number of values a block can hold.
const BLOCK_CAP: usize = LAP - 1;
// How many lower bits are reserved for metadata.
const SHIFT: usize = 1;
// Indicates that the block is not the last one.
const HAS_NEXT: usize = 1;
// The most tasks one batch steal takes (upstream's `MAX_BATCH + 1`).
const BATCH_LIMIT: usize = 33;

/// A slot in a block.
struct Slot<T> {
    /// The task.
    task: UnsafeCell<MaybeUninit<T>>,
    /// The state of the slot.
    state: AtomicUsize,
}

impl<T> Slot<T> {
    /// Waits until a task is written into the slot.
    fn wait_write(&self) {
        let backoff = Backoff::new();
        while self.state.load(Ordering::Acquire) & WRITE == 0 {
            backoff.snooze();
        }
    }
}

/// A block in a linked list. Each block in the list can hold up to `BLOCK_CAP` values.
struct Block<T> {
    /// The next block in the linked list.
    next: AtomicPtr<Block<T>>,
    /// Slots for values.
    slots: [Slot<T>; BLOCK_CAP],
}

impl<T> Block<T> {
    const LAYOUT: Layout = Layout::new::<Self>();

    /// A new, zeroed block.
    fn alloc() -> *mut Block<T> {
        // SAFETY: the layout is not zero-sized (it has an `AtomicPtr` field). All-zero bytes are
        // a valid empty block: a null `next`, zero slot states, uninitialised tasks.
        let ptr = unsafe { alloc_zeroed(Self::LAYOUT) };
        if ptr.is_null() {
            handle_alloc_error(Self::LAYOUT)
        }
        ptr.cast()
    }

    /// Frees a block that no thread uses any more.
    ///
    /// # Safety
    /// `this` came from [`Block::alloc`] and nothing refers to it any more.
    unsafe fn free(this: *mut Block<T>) {
        // SAFETY: allocated with this layout (the caller's contract).
        unsafe { std::alloc::dealloc(this.cast(), Self::LAYOUT) }
    }

    /// Waits until the next pointer is set.
    fn wait_next(&self) -> *mut Block<T> {
        let backoff = Backoff::new();
        loop {
            let next = self.next.load(Ordering::Acquire);
            if !next.is_null() {
                return next;
            }
            backoff.snooze();
        }
    }
}

/// A position in a queue.
struct Position<T> {
    /// The index in the queue.
    index: AtomicUsize,
    /// The block in the linked list.
    block: AtomicPtr<Block<T>>,
}

/// A multi-producer multi-consumer FIFO queue: the entry point of tasks scheduled from outside
/// the pool, and each priority lane's queue. See the module documentation.
pub(crate) struct Injector<T> {
    /// The head of the queue.
    head: CachePadded<Position<T>>,
    /// The tail of the queue.
    tail: CachePadded<Position<T>>,
    /// A retired block, zeroed, for the next push that needs one (null if none).
    spare: CachePadded<AtomicPtr<Block<T>>>,
    /// Indicates that dropping an `Injector<T>` may drop values of type `T`.
    _marker: PhantomData<T>,
}

// SAFETY: as upstream: the queue hands each `T` to exactly one thread.
unsafe impl<T: Send> Send for Injector<T> {}
// SAFETY: as upstream: all shared state is atomics and slots claimed by compare-and-swap.
unsafe impl<T: Send> Sync for Injector<T> {}

impl<T> Injector<T> {
    /// An empty queue.
    pub(crate) fn new() -> Injector<T> {
        let block = Block::<T>::alloc();
        Injector {
            head: CachePadded::new(Position {
                block: AtomicPtr::new(block),
                index: AtomicUsize::new(0),
            }),
            tail: CachePadded::new(Position {
                block: AtomicPtr::new(block),
                index: AtomicUsize::new(0),
            }),
            spare: CachePadded::new(AtomicPtr::new(std::ptr::null_mut())),
            _marker: PhantomData,
        }
    }

    /// A zeroed block: the spare if there is one, else a new one. The spare is zeroed here,
    /// by the pusher, whose writes come next, rather than by the reader that retired it.
    fn take_block(&self) -> *mut Block<T> {
        let spare = self.spare.swap(std::ptr::null_mut(), Ordering::Acquire);
        if spare.is_null() {
            return Block::alloc();
        }
        // SAFETY: a block taken from `spare` is this thread's alone (`retire`'s contract).
        unsafe { std::ptr::write_bytes(spare, 0, 1) };
        spare
    }

    /// Where upstream frees a block: sets the `DESTROY` bit in slots starting from `count`
    /// down, and if no thread still reads one of them, retires the block (into `spare`, or
    /// freed if `spare` is taken).
    ///
    /// # Safety
    /// As upstream's `Block::destroy`: the caller read the block's last slot it will read, and
    /// the slots from `count` on were read by their threads or are being read.
    unsafe fn destroy(&self, this: *mut Block<T>, count: usize) {
        // It is not necessary to set the `DESTROY` bit in the last slot because that slot has
        // begun destruction of the block.
        for i in (0..count).rev() {
            // SAFETY: the block is alive until its destruction completes, here or in the
            // thread still reading slot `i`.
            let slot = unsafe { (*this).slots.get_unchecked(i) };
            // Mark the `DESTROY` bit if a thread is still using the slot.
            if slot.state.load(Ordering::Acquire) & READ == 0
                && slot.state.fetch_or(DESTROY, Ordering::AcqRel) & READ == 0
            {
                // If a thread is still using the slot, it will continue destruction of the block.
                return;
            }
        }
        // No thread uses the block any more.
        // SAFETY: all slots' tasks were moved out.
        unsafe { self.retire(this) };
    }

    /// Keeps `block` in `spare` (zeroed when taken), or frees it if `spare` holds one already.
    ///
    /// # Safety
    /// Nothing refers to `block` and its slots hold no task.
    unsafe fn retire(&self, block: *mut Block<T>) {
        let old = self.spare.swap(block, Ordering::AcqRel);
        if !old.is_null() {
            // SAFETY: a block in `spare` belongs to the queue alone.
            unsafe { Block::free(old) };
        }
    }

    /// Pushes a task into the queue.
    pub(crate) fn push(&self, task: T) {
        let backoff = Backoff::new();
        let mut tail = self.tail.index.load(Ordering::Acquire);
        let mut block = self.tail.block.load(Ordering::Acquire);
        let mut next_block: *mut Block<T> = std::ptr::null_mut();

        loop {
            // Calculate the offset of the index into the block.
            let offset = (tail >> SHIFT) % LAP;

            // If we reached the end of the block, wait until the next one is installed.
            if offset == BLOCK_CAP {
                backoff.snooze();
                tail = self.tail.index.load(Ordering::Acquire);
                block = self.tail.block.load(Ordering::Acquire);
                continue;
            }

            // If we're going to have to install the next block, take it in advance in order to
            // make the wait for other threads as short as possible.
            if offset + 1 == BLOCK_CAP && next_block.is_null() {
                next_block = self.take_block();
            }

            let new_tail = tail + (1 << SHIFT);

            // Try advancing the tail forward.
            match self.tail.index.compare_exchange_weak(
                tail,
                new_tail,
                Ordering::SeqCst,
                Ordering::Acquire,
            ) {
                // SAFETY: the successful CAS gave this thread slot `offset` of `block`, which
                // stays alive until that slot is read.
                Ok(_) => unsafe {
                    // If we've reached the end of the block, install the next one.
                    if offset + 1 == BLOCK_CAP {
                        let next_index = new_tail.wrapping_add(1 << SHIFT);
                        self.tail.block.store(next_block, Ordering::Release);
                        self.tail.index.store(next_index, Ordering::Release);
                        (*block).next.store(next_block, Ordering::Release);
                        next_block = std::ptr::null_mut();
                    }

                    // Write the task into the slot.
                    let slot = (*block).slots.get_unchecked(offset);
                    slot.task.get().write(MaybeUninit::new(task));
                    slot.state.fetch_or(WRITE, Ordering::Release);

                    // A block taken for a slot another thread won is given back.
                    if !next_block.is_null() {
                        self.retire(next_block);
                    }
                    return;
                },
                Err(t) => {
                    tail = t;
                    block = self.tail.block.load(Ordering::Acquire);
                    backoff.spin();
                }
            }
        }
    }

    /// Steals a task from the queue.
    pub(crate) fn steal(&self) -> Steal<T> {
        let mut head;
        let mut block;
        let mut offset;

        let backoff = Backoff::new();
        loop {
            head = self.head.index.load(Ordering::Acquire);
            block = self.head.block.load(Ordering::Acquire);

            // Calculate the offset of the index into the block.
            offset = (head >> SHIFT) % LAP;

            // If we reached the end of the block, wait until the next one is installed.
            if offset == BLOCK_CAP {
                backoff.snooze();
            } else {
                break;
            }
        }

        let mut new_head = head + (1 << SHIFT);

        if new_head & HAS_NEXT == 0 {
            atomic::fence(Ordering::SeqCst);
            let tail = self.tail.index.load(Ordering::Relaxed);

            // If the tail equals the head, that means the queue is empty.
            if head >> SHIFT == tail >> SHIFT {
                return Steal::Empty;
            }

            // If head and tail are not in the same block, set `HAS_NEXT` in head.
            if (head >> SHIFT) / LAP != (tail >> SHIFT) / LAP {
                new_head |= HAS_NEXT;
            }
        }

        // Try moving the head index forward.
        if self
            .head
            .index
            .compare_exchange_weak(head, new_head, Ordering::SeqCst, Ordering::Acquire)
            .is_err()
        {
            return Steal::Retry;
        }

        // SAFETY: the successful CAS gave this thread slot `offset` of `block`, which stays
        // alive until this thread marks that slot read.
        unsafe {
            // If we've reached the end of the block, move to the next one.
            if offset + 1 == BLOCK_CAP {
                let next = (*block).wait_next();
                let mut next_index = (new_head & !HAS_NEXT).wrapping_add(1 << SHIFT);
                if !(*next).next.load(Ordering::Relaxed).is_null() {
                    next_index |= HAS_NEXT;
                }

                self.head.block.store(next, Ordering::Release);
                self.head.index.store(next_index, Ordering::Release);
            }

            // Read the task.
            let slot = (*block).slots.get_unchecked(offset);
            slot.wait_write();
            let task = slot.task.get().read().assume_init();

            // Destroy the block if we've reached the end, or if another thread wanted to destroy
            // but couldn't because we were busy reading from the slot.
            if (offset + 1 == BLOCK_CAP)
                || (slot.state.fetch_or(READ, Ordering::AcqRel) & DESTROY != 0)
            {
                self.destroy(block, offset);
            }

            Steal::Success(task)
        }
    }

    /// Steals a batch of tasks (about half of the queue, at most 33), pushes all but the
    /// first into `dest` and returns the first.
    pub(crate) fn steal_batch_and_pop(&self, dest: &Worker<T>) -> Steal<T> {
        let mut head;
        let mut block;
        let mut offset;

        let backoff = Backoff::new();
        loop {
            head = self.head.index.load(Ordering::Acquire);
            block = self.head.block.load(Ordering::Acquire);

            // Calculate the offset of the index into the block.
            offset = (head >> SHIFT) % LAP;

            // If we reached the end of the block, wait until the next one is installed.
            if offset == BLOCK_CAP {
                backoff.snooze();
            } else {
                break;
            }
        }

        let mut new_head = head;
        let advance;

        if new_head & HAS_NEXT == 0 {
            atomic::fence(Ordering::SeqCst);
            let tail = self.tail.index.load(Ordering::Relaxed);

            // If the tail equals the head, that means the queue is empty.
            if head >> SHIFT == tail >> SHIFT {
                return Steal::Empty;
            }

            // If head and tail are not in the same block, set `HAS_NEXT` in head.
            if (head >> SHIFT) / LAP != (tail >> SHIFT) / LAP {
                new_head |= HAS_NEXT;
                // We can steal all tasks till the end of the block.
                advance = (BLOCK_CAP - offset).min(BATCH_LIMIT);
            } else {
                let len = (tail - head) >> SHIFT;
                // Steal half of the available tasks.
                advance = len.div_ceil(2).min(BATCH_LIMIT);
            }
        } else {
            // We can steal all tasks till the end of the block.
            advance = (BLOCK_CAP - offset).min(BATCH_LIMIT);
        }

        new_head += advance << SHIFT;
        let new_offset = offset + advance;

        // Try moving the head index forward.
        if self
            .head
            .index
            .compare_exchange_weak(head, new_head, Ordering::SeqCst, Ordering::Acquire)
            .is_err()
        {
            return Steal::Retry;
        }

        // SAFETY: the successful CAS gave this thread slots `offset..new_offset` of `block`,
        // which stays alive until this thread marks them read.
        unsafe {
            // If we've reached the end of the block, move to the next one.
            if new_offset == BLOCK_CAP {
                let next = (*block).wait_next();
                let mut next_index = (new_head & !HAS_NEXT).wrapping_add(1 << SHIFT);
                if !(*next).next.load(Ordering::Relaxed).is_null() {
                    next_index |= HAS_NEXT;
                }

                self.head.block.store(next, Ordering::Release);
                self.head.index.store(next_index, Ordering::Release);
            }

            // Read the first task, then move the others into `dest`, in order.
            let slot = (*block).slots.get_unchecked(offset);
            slot.wait_write();
            let task = slot.task.get().read().assume_init();
            for i in offset + 1..new_offset {
                let slot = (*block).slots.get_unchecked(i);
                slot.wait_write();
                dest.push(slot.task.get().read().assume_init());
            }

            // Destroy the block if we've reached the end, or if another thread wanted to destroy
            // but couldn't because we were busy reading from the slot.
            if new_offset == BLOCK_CAP {
                self.destroy(block, offset);
            } else {
                for i in offset..new_offset {
                    let slot = (*block).slots.get_unchecked(i);

                    if slot.state.fetch_or(READ, Ordering::AcqRel) & DESTROY != 0 {
                        self.destroy(block, offset);
                        break;
                    }
                }
            }

            Steal::Success(task)
        }
    }

    /// Is the queue empty?
    pub(crate) fn is_empty(&self) -> bool {
        let head = self.head.index.load(Ordering::SeqCst);
        let tail = self.tail.index.load(Ordering::SeqCst);
        head >> SHIFT == tail >> SHIFT
    }

    /// The number of tasks in the queue.
    pub(crate) fn len(&self) -> usize {
        loop {
            // Load the tail index, then load the head index.
            let mut tail = self.tail.index.load(Ordering::SeqCst);
            let mut head = self.head.index.load(Ordering::SeqCst);

            // If the tail index didn't change, we've got consistent indices to work with.
            if self.tail.index.load(Ordering::SeqCst) == tail {
                // Erase the lower bits.
                tail &= !((1 << SHIFT) - 1);
                head &= !((1 << SHIFT) - 1);

                // Fix up indices if they fall onto block ends.
                if (tail >> SHIFT) & (LAP - 1) == LAP - 1 {
                    tail = tail.wrapping_add(1 << SHIFT);
                }
                if (head >> SHIFT) & (LAP - 1) == LAP - 1 {
                    head = head.wrapping_add(1 << SHIFT);
                }

                // Rotate indices so that head falls into the first block.
                let lap = (head >> SHIFT) / LAP;
                tail = tail.wrapping_sub((lap * LAP) << SHIFT);
                head = head.wrapping_sub((lap * LAP) << SHIFT);

                // Remove the lower bits.
                tail >>= SHIFT;
                head >>= SHIFT;

                // Return the difference minus the number of blocks between tail and head.
                return tail - head - tail / LAP;
            }
        }
    }
}

impl<T> Drop for Injector<T> {
    fn drop(&mut self) {
        let mut head = *self.head.index.get_mut();
        let mut tail = *self.tail.index.get_mut();
        let mut block = *self.head.block.get_mut();

        // Erase the lower bits.
        head &= !((1 << SHIFT) - 1);
        tail &= !((1 << SHIFT) - 1);

        // SAFETY: `&mut self`: no other thread uses the queue. The slots between head and tail
        // hold written, unread tasks; every block from head's on is the queue's.
        unsafe {
            // Drop all values between `head` and `tail` and deallocate the heap-allocated blocks.
            while head != tail {
                let offset = (head >> SHIFT) % LAP;

                if offset < BLOCK_CAP {
                    // Drop the task in the slot.
                    let slot = (*block).slots.get_unchecked(offset);
                    (*slot.task.get()).assume_init_drop();
                } else {
                    // Deallocate the block and move to the next one.
                    let next = *(*block).next.get_mut();
                    Block::free(block);
                    block = next;
                }

                head = head.wrapping_add(1 << SHIFT);
            }

            // Deallocate the last remaining block, and the spare.
            Block::free(block);
            let spare = *self.spare.get_mut();
            if !spare.is_null() {
                Block::free(spare);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{BLOCK_CAP, Injector};
    use crate::scheduler::queue::{Steal, Worker};

    /// Enough items to fill, retire and reuse several blocks (fewer under Miri).
    const ITEMS: usize = if cfg!(miri) {
        4 * BLOCK_CAP + 5
    } else {
        40 * BLOCK_CAP + 5
    };

    fn steal_one<T>(q: &Injector<T>) -> Option<T> {
        loop {
            match q.steal() {
                Steal::Success(x) => return Some(x),
                Steal::Empty => return None,
                Steal::Retry => continue,
            }
        }
    }

    #[test]
    fn items_come_out_in_order_across_recycled_blocks() {
        let q = Injector::new();
        for round in 0..3 {
            for i in 0..ITEMS {
                q.push(i);
            }
            assert_eq!(q.len(), ITEMS, "round {round}");
            for i in 0..ITEMS {
                assert_eq!(steal_one(&q), Some(i), "round {round}");
            }
            assert!(q.is_empty());
            assert_eq!(steal_one(&q), None);
            // A block retired by the reads above waits in `spare` for the next push.
            assert!(!q.spare.load(Ordering::Relaxed).is_null(), "round {round}");
        }
    }

    /// A queue that never holds more than one item: each block is reused while it is the
    /// queue's only block, so a reused block that kept anything of its last life (a slot's
    /// state, its `next`) would show here as a phantom item or a lost one.
    #[test]
    fn a_short_queue_reuses_its_blocks_cleanly() {
        let q = Injector::new();
        let dest = Worker::new_fifo();
        for i in 0..ITEMS {
            q.push(i);
            let got = if i % 2 == 0 {
                steal_one(&q)
            } else {
                loop {
                    match q.steal_batch_and_pop(&dest) {
                        Steal::Success(x) => break Some(x),
                        Steal::Empty => break None,
                        Steal::Retry => continue,
                    }
                }
            };
            assert_eq!(got, Some(i));
            assert!(dest.pop().is_none());
            assert_eq!(steal_one(&q), None, "after item {i}");
            assert!(q.is_empty());
        }
    }

    #[test]
    fn a_batch_steal_moves_items_in_order_into_the_worker() {
        let q = Injector::new();
        for i in 0..ITEMS {
            q.push(i);
        }
        let dest = Worker::new_fifo();
        let mut seen = Vec::new();
        loop {
            match q.steal_batch_and_pop(&dest) {
                Steal::Success(first) => {
                    seen.push(first);
                    while let Some(x) = dest.pop() {
                        seen.push(x);
                    }
                }
                Steal::Empty => break,
                Steal::Retry => continue,
            }
        }
        assert_eq!(seen, (0..ITEMS).collect::<Vec<_>>());
    }

    /// Counts its drops, to show every item is dropped exactly once.
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn dropping_the_queue_drops_what_it_holds_and_frees_every_block() {
        let drops = Arc::new(AtomicUsize::new(0));
        let q = Injector::new();
        for _ in 0..ITEMS {
            q.push(Counted(drops.clone()));
        }
        for _ in 0..2 * BLOCK_CAP {
            drop(steal_one(&q));
        }
        assert_eq!(drops.load(Ordering::Relaxed), 2 * BLOCK_CAP);
        drop(q); // Miri's leak check: the blocks and the spare are freed.
        assert_eq!(drops.load(Ordering::Relaxed), ITEMS);
    }

    #[test]
    fn concurrent_pushers_and_stealers_deliver_each_item_exactly_once() {
        const PUSHERS: usize = 2;
        let q = Arc::new(Injector::new());
        let taken: Arc<Vec<AtomicUsize>> =
            Arc::new((0..PUSHERS * ITEMS).map(|_| AtomicUsize::new(0)).collect());
        let done = Arc::new(AtomicUsize::new(0));
        let pushers: Vec<_> = (0..PUSHERS)
            .map(|p| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..ITEMS {
                        q.push(p * ITEMS + i);
                    }
                })
            })
            .collect();
        let stealers: Vec<_> = (0..2)
            .map(|s| {
                let (q, taken, done) = (q.clone(), taken.clone(), done.clone());
                std::thread::spawn(move || {
                    let dest = Worker::new_fifo();
                    while done.load(Ordering::Acquire) < PUSHERS * ITEMS {
                        let got = if s == 0 {
                            q.steal_batch_and_pop(&dest)
                        } else {
                            q.steal()
                        };
                        let Steal::Success(first) = got else {
                            std::thread::yield_now();
                            continue;
                        };
                        for x in std::iter::once(first).chain(std::iter::from_fn(|| dest.pop())) {
                            taken[x].fetch_add(1, Ordering::Relaxed);
                            done.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                })
            })
            .collect();
        for t in pushers.into_iter().chain(stealers) {
            t.join().expect("no thread panics");
        }
        assert!(taken.iter().all(|n| n.load(Ordering::Relaxed) == 1));
        assert!(q.is_empty());
    }
}
