//! [`RareBox`]: an optional pinned box that most tasks never fill, dropped without a call.

use std::mem::ManuallyDrop;
use std::pin::Pin;

/// An `Option<Pin<Box<T>>>` for a field that most tasks leave empty (the `task_timeout`
/// timer, the wait on a token the handle asked for). The compiler drops a plain
/// `Option<Pin<Box<T>>>` through an out-of-line function even when it is `None`, once in
/// every task's life (callgrind: 9 to 18 instructions per task for each such field); here
/// the emptiness check is inline and only a filled box takes the call.
pub(crate) struct RareBox<T>(ManuallyDrop<Option<Pin<Box<T>>>>);

impl<T> RareBox<T> {
    pub(crate) const fn new() -> Self {
        RareBox(ManuallyDrop::new(None))
    }

    /// The box, filled by `make` if empty.
    #[inline]
    pub(crate) fn get_or_insert_with(&mut self, make: impl FnOnce() -> T) -> Pin<&mut T> {
        self.0.get_or_insert_with(|| Box::pin(make())).as_mut()
    }

    /// The box's content, if filled.
    #[inline]
    pub(crate) fn as_ref(&self) -> Option<&T> {
        self.0.as_deref()
    }

    /// Empties the box (dropping what it held).
    #[inline]
    pub(crate) fn clear(&mut self) {
        if self.0.is_some() {
            self.clear_filled();
        }
    }

    #[cold]
    #[inline(never)]
    fn clear_filled(&mut self) {
        // Leaves `None` inside the `ManuallyDrop`, which holds nothing to drop.
        drop(std::mem::take(&mut *self.0));
    }
}

impl<T> Drop for RareBox<T> {
    #[inline]
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::RareBox;
    use std::sync::Arc;

    #[test]
    fn drops_what_it_holds_once() {
        let held = Arc::new(());
        let mut b = RareBox::new();
        assert!(b.as_ref().is_none());
        let _ = b.get_or_insert_with(|| held.clone());
        let _ = b.get_or_insert_with(|| unreachable!("filled already"));
        assert_eq!(Arc::strong_count(&held), 2);
        b.clear();
        assert_eq!(Arc::strong_count(&held), 1);
        let _ = b.get_or_insert_with(|| held.clone());
        drop(b);
        assert_eq!(Arc::strong_count(&held), 1, "dropped with the box");
    }
}
