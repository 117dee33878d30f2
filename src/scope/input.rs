//! [`Input`]: the items of a bulk call, moved out in place by its batches.
//!
//! `batch_process` takes its items as one `Vec`, and each batch takes the next few thousand.
//! Moving each batch's items into a vector of its own cost a second copy of every item and
//! an allocation per batch (measured: a tenth of the workers' samples in a 4M-item
//! `batch_process`, see benches/NOTES.md). Here the vector stays where it is; each batch
//! owns a range of it and moves its items out one by one, as `vec::IntoIter` does.
//!
//! # Protocol
//! 1. [`Input::whole`] gives every item of the vector to one [`InRange`];
//!    [`InRange::split_to`] gives the first `len` items of a range to a new one. So ranges
//!    never overlap, whatever the callers do, and every item belongs to exactly one range.
//! 2. An `InRange` moves its items out front to back ([`Iterator::next`]); only it touches
//!    them while it lives. When it is dropped, it drops the items it did not move out.
//! 3. Every `InRange` holds an `Arc` of the `Input`, so the buffer outlives every range.
//!    When the last `Arc` goes, every range is gone, so every item was moved out or dropped:
//!    the `Input` frees the buffer and touches no item.
//!
//! This module is the only place that touches the items through raw pointers; the rest of
//! the crate sees the safe API above.

use std::ptr::NonNull;
use std::sync::Arc;

/// The buffer of a bulk call's items, kept alive for the ranges that own them. See the
/// module doc.
pub(crate) struct Input<T> {
    /// The buffer of a `Vec<T>` of capacity `cap`, owned; its items belong to the ranges.
    items: NonNull<T>,
    cap: usize,
}

// SAFETY: an `Input` holds no item of its own (protocol step 3), only the buffer, which it
// frees; the items are reached only through the `InRange` that owns them, which is `Send`
// only when `T` is.
unsafe impl<T: Send> Send for Input<T> {}
// SAFETY: see above: nothing is reached through `&Input`.
unsafe impl<T: Send> Sync for Input<T> {}

impl<T> Input<T> {
    /// Takes over `items`' buffer and gives all of them to one range (protocol step 1).
    pub(crate) fn whole(items: Vec<T>) -> InRange<T> {
        let mut items = std::mem::ManuallyDrop::new(items);
        let (left, cap) = (items.len(), items.capacity());
        let next = NonNull::from(items.as_mut_slice()).cast::<T>();
        InRange {
            _input: Arc::new(Input { items: next, cap }),
            next,
            left,
        }
    }
}

impl<T> Drop for Input<T> {
    fn drop(&mut self) {
        // SAFETY: protocol step 3: no range is left (we are the last `Arc`), so no item is
        // left either. A `Vec` of length 0 with the original buffer and capacity frees the
        // buffer without touching its items.
        drop(unsafe { Vec::from_raw_parts(self.items.as_ptr(), 0, self.cap) });
    }
}

/// One batch's items of an [`Input`], moved out front to back; what is left is dropped with
/// it. See the module doc.
pub(crate) struct InRange<T> {
    /// Keeps the buffer alive (protocol step 3).
    _input: Arc<Input<T>>,
    /// The next item to move out: `left` items from here on are this range's.
    next: NonNull<T>,
    left: usize,
}

// SAFETY: an `InRange` owns its `left` items from `next` alone (protocol steps 1-2) and keeps
// their buffer alive through its own `Arc`, so moving it to another thread moves owned `T`s.
unsafe impl<T: Send> Send for InRange<T> {}

impl<T> InRange<T> {
    /// The first `len` items of this range (at most all of them) as a range of their own;
    /// this one keeps the rest (protocol step 1).
    pub(crate) fn split_to(&mut self, len: usize) -> InRange<T> {
        let len = len.min(self.left);
        let front = InRange {
            _input: self._input.clone(),
            next: self.next,
            left: len,
        };
        // SAFETY: `len <= left`: at most one past this range's last item, inside the buffer.
        self.next = unsafe { self.next.add(len) };
        self.left -= len;
        front
    }

    /// A cursor that moves the next items out, keeping the range's position in locals (a
    /// loop over the items keeps them in registers); the position is stored back when it
    /// is dropped, also if the loop unwinds.
    #[inline]
    pub(crate) fn cursor(&mut self) -> InCursor<'_, T> {
        InCursor {
            next: self.next,
            left: self.left,
            range: self,
        }
    }
}

/// Moves an [`InRange`]'s next items out; see [`InRange::cursor`].
pub(crate) struct InCursor<'a, T> {
    range: &'a mut InRange<T>,
    next: NonNull<T>,
    left: usize,
}

impl<T> Iterator for InCursor<'_, T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        if self.left == 0 {
            return None;
        }
        // SAFETY: `left > 0`: `next` is the range's and not moved out yet (protocol step 2);
        // it is moved out exactly once, as `next` moves past it (at most one past the
        // buffer's last item; a zero-sized `T` stays where it is). The range's position is
        // ours while the cursor lives, and stored back before the range is used again.
        unsafe {
            let item = self.next.read();
            self.next = self.next.add(1);
            self.left -= 1;
            Some(item)
        }
    }
}

impl<T> Drop for InCursor<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.range.next = self.next;
        self.range.left = self.left;
    }
}

impl<T> Iterator for InRange<T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        self.cursor().next()
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<T> ExactSizeIterator for InRange<T> {}

impl<T> Drop for InRange<T> {
    fn drop(&mut self) {
        let rest = std::mem::take(&mut self.left);
        // SAFETY: those `rest` items from `next` are this range's and not moved out (step 2);
        // `left` is already 0, so none is dropped twice even if a `Drop` below panics (the
        // slice drops the others, then the panic goes on).
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(self.next.as_ptr(), rest));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::Input;

    /// Counts its drops.
    struct Counted(Arc<AtomicUsize>, usize);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counted(n: usize) -> (Arc<AtomicUsize>, Vec<Counted>) {
        let drops = Arc::new(AtomicUsize::new(0));
        let items = (0..n).map(|i| Counted(drops.clone(), i)).collect();
        (drops, items)
    }

    #[test]
    fn ranges_hand_out_each_item_once_in_order() {
        let mut rest = Input::whole((0..10).map(|i| i.to_string()).collect::<Vec<_>>());
        let a: Vec<String> = rest.split_to(3).collect();
        let b: Vec<String> = rest.split_to(4).collect();
        let c: Vec<String> = rest.collect();
        assert_eq!(a, ["0", "1", "2"]);
        assert_eq!(b, ["3", "4", "5", "6"]);
        assert_eq!(c, ["7", "8", "9"]);
    }

    #[test]
    fn every_item_is_dropped_once_however_far_ranges_got() {
        let (drops, items) = counted(10);
        let mut rest = Input::whole(items);
        let mut first = rest.split_to(4);
        let taken = first.next().map(|c| c.1);
        assert_eq!(taken, Some(0)); // moved out and dropped here
        let second = rest.split_to(3);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        drop(first); // drops items 1..4
        assert_eq!(drops.load(Ordering::Relaxed), 4);
        drop(rest); // drops 7..10
        assert_eq!(drops.load(Ordering::Relaxed), 7);
        drop(second); // drops 4..7; the last `Arc`: the buffer is freed (Miri's leak check)
        assert_eq!(drops.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn a_panicking_drop_still_drops_the_other_items() {
        struct Bomb(Arc<AtomicUsize>, bool);
        impl Drop for Bomb {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
                if self.1 {
                    panic!("item drop panics");
                }
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let items = (0..6).map(|i| Bomb(drops.clone(), i == 1)).collect();
        let mut rest = Input::whole(items);
        let range = rest.split_to(4);
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(range)));
        assert!(dropped.is_err());
        assert_eq!(drops.load(Ordering::Relaxed), 4);
        drop(rest); // Miri's leak check: the buffer is freed
        assert_eq!(drops.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn an_empty_input_and_zero_sized_items_are_fine() {
        assert_eq!(Input::whole(Vec::<u64>::new()).count(), 0);
        let mut units = Input::whole(vec![(); 5]);
        assert_eq!(units.split_to(2).count(), 2);
        assert_eq!(units.count(), 3);
    }

    #[test]
    fn a_split_past_the_end_takes_what_is_left() {
        let mut rest = Input::whole(vec![1u8]);
        assert_eq!(rest.split_to(2).collect::<Vec<_>>(), [1]);
        assert_eq!(rest.next(), None);
    }
}
