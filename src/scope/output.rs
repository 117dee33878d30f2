//! [`Output`]: the result vector of a bulk call, written in place by its batches.
//!
//! A bulk call returns one `Vec` of `n` results in input order, while its batches finish on
//! worker threads in any order. Collecting each batch's results in a vector of its own and
//! concatenating them at the end costs a second copy of every result on the calling thread
//! (measured: 17% of all samples of a 1M-item `batch_process`, see benches/NOTES.md). Here
//! the final allocation is made once, up front, and each batch writes its results straight
//! into its own range of it, as rayon's `collect` does.
//!
//! # Protocol
//! 1. Ranges are handed out in order, one call at a time (by the caller, or under the
//!    `Feed` lock when batches take items themselves): [`Output::range`] gives the next
//!    `len` slots to one [`OutRange`]. Ranges never overlap, whatever the callers do: each
//!    is claimed by one atomic read-modify-write that checks the bound before it commits.
//!    `[0, handed_out)` is covered.
//! 2. An `OutRange` initializes its slots front to back ([`OutRange::push`]); an
//!    initialized slot may be replaced ([`OutRange::set`]). Only the `OutRange` touches
//!    its slots while it lives.
//! 3. **When an `OutRange` is dropped, every one of its slots is initialized**: its `Drop`
//!    fills the rest with `Err(TaskError::Cancelled)` (a batch dropped before finishing
//!    cancelled those items).
//! 4. Every `OutRange` holds an `Arc` of the `Output`. So once the caller holds the only
//!    `Arc`, every range has been dropped, and `[0, handed_out)` is initialized. The
//!    `Arc`'s release/acquire on the count orders the batches' writes before the caller's
//!    reads.
//! 5. The caller takes the vector with [`Output::into_vec`] once all `n` slots were handed
//!    out and it is the only owner. If it never does (its future was dropped), the last
//!    `Arc` drops `[0, handed_out)` and frees the allocation.
//!
//! This module is the only place that touches the slots, through raw pointers; the rest of
//! the crate sees the safe API above.

use std::mem::{ManuallyDrop, MaybeUninit};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::TaskError;

/// `n` result slots, handed out to batches in ranges. See the module doc.
pub(crate) struct Output<R> {
    /// Start of a `Box<[MaybeUninit<Result<R, TaskError>>]>` of `len` slots, owned.
    slots: NonNull<MaybeUninit<Result<R, TaskError>>>,
    len: usize,
    /// Slots given to ranges so far: `[0, handed_out)`.
    handed_out: AtomicUsize,
}

// SAFETY: an `Output` owns `Result<R, TaskError>` values, so it may move to another thread
// when they may (`R: Send`; `TaskError` is `Send`). Sharing it is sound because the only
// access to a slot through `&Output` goes through the one `OutRange` that owns that slot
// (protocol steps 1-2), and `OutRange` is `Send` only when `R` is; the caller reads the
// slots only when it owns the `Output` alone (steps 4-5).
unsafe impl<R: Send> Send for Output<R> {}
// SAFETY: see above.
unsafe impl<R: Send> Sync for Output<R> {}

impl<R> Output<R> {
    /// Room for `len` results, none initialized.
    pub(crate) fn new(len: usize) -> Arc<Self> {
        let boxed: Box<[MaybeUninit<Result<R, TaskError>>]> = Box::new_uninit_slice(len);
        let slots = NonNull::from(Box::leak(boxed)).cast();
        Arc::new(Output {
            slots,
            len,
            handed_out: AtomicUsize::new(0),
        })
    }

    /// The next `len` slots, for one batch (protocol step 1). The range is claimed by one
    /// read-modify-write of `handed_out` that checks the bound before it commits, so ranges
    /// never overlap, however the calls race: the soundness of the writes does not rest on
    /// the callers. Their order does: the caller alone (`par_map_async`) or whoever holds
    /// the `Feed` lock (`batch_process`) takes items and ranges together, in input order.
    ///
    /// # Panics
    /// If fewer than `len` slots are left (a bug in the caller).
    pub(crate) fn range(self: &Arc<Self>, len: usize) -> OutRange<R> {
        // `Relaxed` suffices: read-modify-writes of one atomic are totally ordered, so no two
        // claims overlap; the slots' contents reach the reader through the `Arc` (step 4).
        let claimed = self
            .handed_out
            .try_update(Ordering::Relaxed, Ordering::Relaxed, |start| {
                (len <= self.len - start).then_some(start + len)
            });
        let start = claimed.unwrap_or_else(|start| {
            panic!(
                "Output::range: {len} slots asked, {} left",
                self.len - start
            )
        });
        OutRange {
            out: self.clone(),
            start,
            len,
            written: 0,
        }
    }

    /// The finished vector (protocol step 5), or `self` back if some range is still alive
    /// or not every slot was handed out (a bug in the caller).
    pub(crate) fn into_vec(self: Arc<Self>) -> Result<Vec<Result<R, TaskError>>, Arc<Self>> {
        if self.handed_out.load(Ordering::Relaxed) != self.len {
            return Err(self);
        }
        let this = ManuallyDrop::new(Arc::try_unwrap(self)?);
        let slice = NonNull::slice_from_raw_parts(this.slots, this.len);
        // SAFETY: `slots` came from `Box::leak` of a boxed slice of `len` slots and is
        // rebuilt once (`this` is never dropped). Every slot is initialized: all `len` were
        // handed out and we are the only owner, so every range has been dropped (steps 3-4).
        let boxed = unsafe { Box::from_raw(slice.as_ptr()).assume_init() };
        Ok(boxed.into_vec())
    }
}

impl<R> Drop for Output<R> {
    /// Reached only when the caller never took the vector: drops the results written so far
    /// (all of `[0, handed_out)`, step 4) and frees the slots.
    fn drop(&mut self) {
        let init = *self.handed_out.get_mut();
        /// Frees the slots when dropped, even if a result's `Drop` panics first.
        struct Free<E>(NonNull<[MaybeUninit<E>]>);
        impl<E> Drop for Free<E> {
            fn drop(&mut self) {
                // SAFETY: the pointer came from `Box::leak` in `Output::new` and this is the
                // one place that rebuilds the box (`into_vec` never drops its `Output`).
                drop(unsafe { Box::from_raw(self.0.as_ptr()) });
            }
        }
        let _free = Free(NonNull::slice_from_raw_parts(self.slots, self.len));
        let done = NonNull::slice_from_raw_parts(self.slots.cast::<Result<R, TaskError>>(), init);
        // SAFETY: `[0, init)` is initialized: no range is alive (they hold `Arc`s of `self`)
        // and every range filled itself when dropped. Dropping a slice goes on past a
        // panicking element, so each result is dropped once.
        unsafe { std::ptr::drop_in_place(done.as_ptr()) };
    }
}

/// One batch's slots of an [`Output`]: `len` slots starting at `start`, initialized front
/// to back, all initialized by the time it is dropped (protocol steps 2-3).
pub(crate) struct OutRange<R> {
    out: Arc<Output<R>>,
    start: usize,
    len: usize,
    /// Slots `[start, start + written)` are initialized.
    written: usize,
}

impl<R> OutRange<R> {
    /// Slots initialized so far, which is also the index the next [`push`](Self::push)
    /// writes (relative to the range).
    #[inline]
    pub(crate) fn written(&self) -> usize {
        self.written
    }

    /// Initializes the next slot with `value`.
    ///
    /// # Panics
    /// If the range is full (a bug in the batch).
    #[inline]
    pub(crate) fn push(&mut self, value: Result<R, TaskError>) {
        self.cursor().push(value);
    }

    /// Replaces the value in slot `index` (relative to the range), which must be initialized.
    ///
    /// # Panics
    /// If `index` was not pushed yet (a bug in the batch).
    #[inline]
    pub(crate) fn set(&mut self, index: usize, value: Result<R, TaskError>) {
        assert!(
            index < self.written,
            "OutRange::set: slot {index} not written"
        );
        // SAFETY: the slot is inside this range (`index < written <= len`), owned by it
        // alone, and initialized, so a `&mut` to its value is valid for this call.
        let slot = unsafe { (*self.out.slots.add(self.start + index).as_ptr()).assume_init_mut() };
        *slot = value;
    }

    /// A cursor that writes the next slots in a row, keeping the range's position in
    /// locals; the count of slots written is stored back when it is dropped.
    #[inline]
    pub(crate) fn cursor(&mut self) -> Cursor<'_, R> {
        // SAFETY: `start <= out.len`, so the pointer stays inside (or one past) the
        // allocation.
        let base = unsafe { self.out.slots.add(self.start) };
        Cursor {
            base,
            written: self.written,
            len: self.len,
            range: self,
        }
    }

    /// Fills the slots not written yet with `err`.
    pub(crate) fn fill(&mut self, err: &TaskError) {
        while self.written < self.len {
            self.push(Err(err.clone()));
        }
    }
}

/// Writes an [`OutRange`]'s next slots; see [`OutRange::cursor`].
pub(crate) struct Cursor<'a, R> {
    range: &'a mut OutRange<R>,
    /// The range's first slot.
    base: NonNull<MaybeUninit<Result<R, TaskError>>>,
    /// Slots `[0, written)` of the range are initialized.
    written: usize,
    len: usize,
}

impl<R> Cursor<'_, R> {
    /// Slots initialized so far: the index the next [`push`](Self::push) writes.
    #[inline]
    pub(crate) fn written(&self) -> usize {
        self.written
    }

    /// Initializes the next slot with `value`.
    ///
    /// # Panics
    /// If the range is full (a bug in the batch).
    #[inline]
    pub(crate) fn push(&mut self, value: Result<R, TaskError>) {
        assert!(self.written < self.len, "OutRange: push to a full range");
        // SAFETY: `start + written < start + len <= out.len`, so the slot is inside the
        // allocation, and it belongs to this range alone (step 1). It is not initialized
        // yet (`written` counts the initialized prefix), so nothing is overwritten unseen.
        // The range is borrowed by this cursor, so nothing else writes its slots meanwhile.
        unsafe { self.base.add(self.written).write(MaybeUninit::new(value)) };
        self.written += 1;
    }
}

impl<R> Drop for Cursor<'_, R> {
    /// Stores the count back, also when unwinding: the slots written stay accounted for.
    fn drop(&mut self) {
        self.range.written = self.written;
    }
}

impl<R> Drop for OutRange<R> {
    /// Protocol step 3: items never written were cancelled with their batch.
    fn drop(&mut self) {
        self.fill(&TaskError::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Ranges claimed from several threads at once never overlap: every slot is written
    /// exactly once (each thread writes the start index of its range into every slot).
    #[test]
    fn ranges_claimed_concurrently_do_not_overlap() {
        const N: usize = 3 * 4 * 20;
        let out = Output::<usize>::new(N);
        std::thread::scope(|s| {
            for _ in 0..3 {
                let out = out.clone();
                s.spawn(move || {
                    for _ in 0..20 {
                        let mut r = out.range(4);
                        for _ in 0..4 {
                            r.push(Ok(r.start));
                        }
                    }
                });
            }
        });
        let v = out.into_vec().ok().expect("sole owner");
        for (i, slot) in v.iter().enumerate() {
            assert_eq!(
                slot,
                &Ok(i - i % 4),
                "slot {i} belongs to the range starting at {}",
                i - i % 4
            );
        }
    }

    #[test]
    fn ranges_written_out_of_order_make_one_vector() {
        let out = Output::<String>::new(5);
        let mut a = out.range(2);
        let mut b = out.range(3);
        b.push(Ok("c".into()));
        b.push(Err(TaskError::Cancelled)); // placeholder, replaced below
        a.push(Ok("a".into()));
        b.set(1, Ok("d".into()));
        drop(b); // the last slot is filled as cancelled
        a.push(Ok("b".into()));
        assert!(out.clone().into_vec().is_err(), "a range is still alive");
        drop(a);
        let v = out.into_vec().ok().expect("sole owner");
        assert_eq!(
            v,
            vec![
                Ok("a".into()),
                Ok("b".into()),
                Ok("c".into()),
                Ok("d".into()),
                Err(TaskError::Cancelled)
            ]
        );
    }

    #[test]
    fn an_abandoned_output_drops_what_was_handed_out() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        struct Counted;
        impl Drop for Counted {
            fn drop(&mut self) {
                DROPS.fetch_add(1, Ordering::SeqCst);
            }
        }
        let out = Output::<Counted>::new(10);
        let mut r = out.range(4);
        r.push(Ok(Counted));
        r.push(Ok(Counted));
        let later = std::thread::spawn(move || {
            r.push(Ok(Counted));
            drop(r); // one slot filled with an error
        });
        drop(out); // the caller went away; slots 4..10 were never handed out
        later.join().expect("thread");
        assert_eq!(DROPS.load(Ordering::SeqCst), 3);
    }

    /// A cursor's writes count as the range's: a slot it wrote can be replaced with `set`
    /// afterwards, and the range fills only the slots after them when dropped.
    #[test]
    fn a_cursor_writes_for_its_range() {
        let out = Output::<String>::new(4);
        let mut r = out.range(4);
        r.push(Ok("a".into()));
        {
            let mut c = r.cursor();
            assert_eq!(c.written(), 1);
            c.push(Ok("b".into()));
            c.push(Err(TaskError::Cancelled)); // placeholder
        }
        assert_eq!(r.written(), 3);
        r.set(2, Ok("c".into()));
        drop(r);
        let v = out.into_vec().ok().expect("sole owner");
        assert_eq!(
            v,
            vec![
                Ok("a".into()),
                Ok("b".into()),
                Ok("c".into()),
                Err(TaskError::Cancelled)
            ]
        );
    }

    #[test]
    fn into_vec_refuses_before_every_slot_is_handed_out() {
        let out = Output::<u8>::new(3);
        drop(out.range(2));
        let Err(out) = out.into_vec() else {
            panic!("one slot was not handed out");
        };
        drop(out.range(1));
        assert_eq!(out.into_vec().ok().map(|v| v.len()), Some(3));
    }
}
