//! The synchronization primitives of the protocols loom checks: std and parking_lot in
//! normal builds, loom's under `cfg(loom)` (as tokio's `src/loom/mod.rs` does).
//!
//! Only the admission controller, a scope's live count (`scope/live.rs`), the idle/sleep
//! state, `Reclaim` and the cancel handshake (`task::cancel`) go through this shim; the models
//! themselves are in `loom_models.rs`.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, fence};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, fence};

/// A mutex with parking_lot's API (no poisoning), over parking_lot or loom.
pub(crate) struct Mutex<T>(
    #[cfg(not(loom))] parking_lot::Mutex<T>,
    #[cfg(loom)] loom::sync::Mutex<T>,
);

#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;
#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(not(loom))]
        return Mutex(parking_lot::Mutex::new(value));
        #[cfg(loom)]
        return Mutex(loom::sync::Mutex::new(value));
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(loom))]
        return self.0.lock();
        #[cfg(loom)]
        return self.0.lock().unwrap_or_else(|e| e.into_inner());
    }
}

/// A cell written once, read without a lock, one word wide: once_cell's `OnceBox` (the
/// value boxed; two racing initialisations each build one and the loser's is dropped) in
/// normal builds. Under loom, a cell with the same orderings (`get` is an `Acquire` load,
/// initialisation ends with a `Release` store), so a model sees the real publication, not a
/// lock's.
///
/// Dropped by hand: `OnceBox`'s own drop is an out-of-line call even when empty, and most
/// cells (a task's token) stay empty; here the emptiness check is inline.
#[cfg(not(loom))]
pub(crate) struct OnceCell<T>(std::mem::ManuallyDrop<once_cell::race::OnceBox<T>>);

#[cfg(not(loom))]
impl<T> OnceCell<T> {
    pub(crate) const fn new() -> Self {
        OnceCell(std::mem::ManuallyDrop::new(once_cell::race::OnceBox::new()))
    }

    #[inline]
    pub(crate) fn get(&self) -> Option<&T> {
        self.0.get()
    }

    pub(crate) fn get_or_init(&self, init: impl FnOnce() -> T) -> &T {
        self.0.get_or_init(|| Box::new(init()))
    }

    #[cold]
    #[inline(never)]
    fn drop_filled(&mut self) {
        // Leaves an empty `OnceBox` inside the `ManuallyDrop`: nothing is leaked.
        drop(std::mem::replace(
            &mut *self.0,
            once_cell::race::OnceBox::new(),
        ));
    }
}

#[cfg(not(loom))]
impl<T> Drop for OnceCell<T> {
    #[inline]
    fn drop(&mut self) {
        if self.0.get().is_some() {
            self.drop_filled();
        }
    }
}

#[cfg(loom)]
pub(crate) use loom_once::OnceCell;

#[cfg(loom)]
mod loom_once {
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::AtomicU8;
    use std::sync::atomic::Ordering::{Acquire, Release};

    const EMPTY: u8 = 0;
    const WRITING: u8 = 1;
    const READY: u8 = 2;

    pub(crate) struct OnceCell<T> {
        state: AtomicU8,
        value: UnsafeCell<Option<T>>,
    }

    // SAFETY: the value is written once, by the one thread that moved the state from EMPTY
    // to WRITING, and read only after an `Acquire` load saw READY (stored with `Release`
    // after the write); shared references to it then cross threads, hence `T: Sync`.
    unsafe impl<T: Send + Sync> Sync for OnceCell<T> {}

    impl<T> OnceCell<T> {
        pub(crate) fn new() -> Self {
            OnceCell {
                state: AtomicU8::new(EMPTY),
                value: UnsafeCell::new(None),
            }
        }

        pub(crate) fn get(&self) -> Option<&T> {
            if self.state.load(Acquire) != READY {
                return None;
            }
            // SAFETY: READY was stored after the only write (see the `Sync` impl); the value
            // is never written again while `self` is borrowed.
            self.value.with(|p| unsafe { (*p).as_ref() })
        }

        pub(crate) fn get_or_init(&self, init: impl FnOnce() -> T) -> &T {
            if self
                .state
                .compare_exchange(EMPTY, WRITING, Acquire, Acquire)
                .is_ok()
            {
                let value = init();
                // SAFETY: the CAS above made this thread the only writer, and no reader
                // reads before READY.
                self.value.with_mut(|p| unsafe { *p = Some(value) });
                self.state.store(READY, Release);
            }
            loop {
                if let Some(value) = self.get() {
                    return value;
                }
                loom::thread::yield_now();
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::OnceCell;
    use std::sync::Arc;

    #[test]
    fn once_cell_drops_its_value_once() {
        let held = Arc::new(());
        let cell = OnceCell::new();
        assert!(cell.get().is_none());
        assert!(Arc::ptr_eq(cell.get_or_init(|| held.clone()), &held));
        let _ = cell.get_or_init(|| unreachable!("set already"));
        assert_eq!(Arc::strong_count(&held), 2);
        drop(cell);
        assert_eq!(Arc::strong_count(&held), 1);
        drop(OnceCell::<Arc<()>>::new());
    }
}
