//! The cancel handshake between a task and whoever cancels it.
//!
//! A task that suspends must be woken by a cancel, or it could sleep through it (its I/O may
//! never fire). At its first suspension a task registers its waker in its scope's
//! [`SuspendedTasks`] (a slab; the entry's key is kept in the task's [`CancelState`]) and
//! then reads its cancel flags; it unregisters when it finishes. No allocation per task: one
//! 16-byte slab entry per suspended task.
//!
//! - **One task** ([`CancelState::request`], from `TaskHandle::cancel`): set the task's flag,
//!   then wake the task's registered waker, if any ([`SuspendedTasks::wake`]).
//! - **A scope or the pool**: the scope's flag (or the pool's) is set, then its token is
//!   cancelled. Each scope with a suspended task watches its own token once (`ScopeShared`,
//!   `watch_token`): the watch, woken by the token's cancellation wherever it comes from (the
//!   scope, an ancestor, the pool, or the user cancelling the token directly), sets the
//!   scope's flag and wakes every registered task ([`SuspendedTasks::wake_all`]).
//!
//! Both sides go through the slab's lock: the canceller sets the flag *before* it locks the
//! slab, the task registers (entry and key) under the lock *before* it reads the flag. The
//! key is written and read only under that lock, so it needs no ordering of its own. If the canceller's
//! lock comes second it finds the waker; if the task's comes second it sees the flag (the
//! unlock-lock pair orders the flag store before the load). Loom:
//! `loom_cancel_vs_suspend` runs these types.
//!
//! A task's own [`CancellationToken`](tokio_util::sync::CancellationToken) is created only
//! if its handle asks for it (or at a timeout, so that work tied to it stops); the handle
//! then wakes the task through the slab, and a task that finds its token at a suspension
//! also waits on it, so cancelling that token cancels the task.

use std::sync::atomic::Ordering;
use std::task::Waker;

use crate::sync::{AtomicU8, AtomicU32, Mutex, OnceCell};

/// The slab key of a task that is not registered.
const UNREGISTERED: u32 = u32::MAX;

/// Set once cancellation of this one task is requested.
pub(crate) const CANCEL_REQUESTED: u8 = 1;

/// A task's cancel flag (with the task's other flag bits), its id, its token (created only
/// when asked for, one word) and its key in its scope's [`SuspendedTasks`].
///
/// The id is kept in 7 bytes beside the flag byte, in what would otherwise be padding, so
/// the metadata stays 32 bytes; task ids stay below 2^56 (ids are handed out in blocks of
/// 1 024 from a 64-bit counter: 2^56 is over 200 years at ten million tasks a second). Not
/// one 64-bit word with the flags: the hot loops that test the flag byte then compile to
/// more instructions (`par_map_async`: 2 per item, by callgrind).
pub(crate) struct CancelState<T> {
    flags: AtomicU8,
    id: [u8; 7],
    token: OnceCell<T>,
    /// Read and written only under the lock of the scope's `SuspendedTasks`.
    slot: AtomicU32,
}

impl<T> CancelState<T> {
    /// A state for task `id` with `flags` set and no token.
    pub(crate) fn new(id: u64, flags: u8) -> Self {
        debug_assert!(id < 1 << 56, "task ids stay below 2^56");
        let b = id.to_le_bytes();
        CancelState {
            flags: AtomicU8::new(flags),
            id: [b[0], b[1], b[2], b[3], b[4], b[5], b[6]],
            token: OnceCell::new(),
            slot: AtomicU32::new(UNREGISTERED),
        }
    }

    /// The flag bits, for checks that only read them.
    #[inline]
    pub(crate) fn flags(&self) -> &AtomicU8 {
        &self.flags
    }

    /// The id given to [`new`](Self::new).
    pub(crate) fn id(&self) -> u64 {
        let b = self.id;
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], 0])
    }

    /// The canceller's side, first half: set the flag, then `cancel` the token if one was
    /// made. The caller then wakes the task ([`SuspendedTasks::wake`]).
    pub(crate) fn request(&self, cancel: impl FnOnce(&T)) {
        self.flags.fetch_or(CANCEL_REQUESTED, Ordering::SeqCst);
        if let Some(token) = self.token.get() {
            cancel(token);
        }
    }

    /// The token, created by `make` on first use (by the handle, or at a timeout). The
    /// caller then wakes the task, so a suspended task starts waiting on it.
    pub(crate) fn token(&self, make: impl FnOnce() -> T) -> &T {
        self.token.get_or_init(make)
    }

    /// The token, if it was made.
    #[inline]
    pub(crate) fn token_if_made(&self) -> Option<&T> {
        self.token.get()
    }

    /// Sets `bits` in the flags with `ordering`.
    #[inline]
    pub(crate) fn set(&self, bits: u8, ordering: Ordering) {
        self.flags.fetch_or(bits, ordering);
    }

    /// True once the cancel flag is set.
    #[inline(always)]
    pub(crate) fn requested(&self) -> bool {
        self.flags.load(Ordering::Acquire) & CANCEL_REQUESTED != 0
    }
}

/// The wakers of a scope's suspended tasks (see the module doc): a slab whose keys the tasks
/// keep in their [`CancelState`].
pub(crate) struct SuspendedTasks {
    slab: Mutex<Slab>,
}

#[derive(Default)]
struct Slab {
    wakers: Vec<Option<Waker>>,
    /// Keys of the empty entries.
    free: Vec<u32>,
}

impl SuspendedTasks {
    pub(crate) fn new() -> Self {
        SuspendedTasks {
            slab: Mutex::new(Slab::default()),
        }
    }

    /// The suspending task's side: registers `waker` for the task of `state`. The caller
    /// reads the cancel flags after this returns. Registered once, at the first suspension,
    /// and kept: a pool task is only ever polled by its own `Runnable`, whose waker is the
    /// task's own (async-task's), so the waker never goes stale.
    pub(crate) fn register<T>(&self, state: &CancelState<T>, waker: &Waker) {
        let mut slab = self.slab.lock();
        let key = match slab.free.pop() {
            Some(key) => {
                slab.wakers[key as usize] = Some(waker.clone());
                key
            }
            None => {
                // A scope with 2^32 - 1 suspended tasks at once is far beyond memory.
                let key = u32::try_from(slab.wakers.len())
                    .ok()
                    .filter(|&k| k != UNREGISTERED)
                    .expect("fewer than 2^32 - 1 suspended tasks in one scope");
                slab.wakers.push(Some(waker.clone()));
                key
            }
        };
        state.slot.store(key, Ordering::Relaxed);
    }

    /// The task of `state` finished: forgets its waker, if registered (dropped after the lock
    /// is released). When the last one goes, a large slab gives its memory back.
    pub(crate) fn unregister<T>(&self, state: &CancelState<T>) {
        let waker = {
            let mut slab = self.slab.lock();
            let key = state.slot.swap(UNREGISTERED, Ordering::Relaxed);
            if key == UNREGISTERED {
                return;
            }
            let waker = slab.wakers[key as usize].take();
            slab.free.push(key);
            if slab.free.len() == slab.wakers.len() && slab.wakers.len() > 1_024 {
                *slab = Slab::default();
            }
            waker
        };
        drop(waker);
    }

    /// The canceller's side, after the flag is set: wakes the task of `state` if it is
    /// registered.
    pub(crate) fn wake<T>(&self, state: &CancelState<T>) {
        let waker = {
            let slab = self.slab.lock();
            match state.slot.load(Ordering::Relaxed) {
                UNREGISTERED => None,
                key => slab.wakers[key as usize].clone(),
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// A scope's watch fired, after the scope's flag is set: wakes every registered task.
    pub(crate) fn wake_all(&self) {
        let wakers: Vec<Waker> = self.slab.lock().wakers.iter().flatten().cloned().collect();
        for w in wakers {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    struct Count(AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn keys_are_reused_and_a_finished_task_is_never_woken() {
        let tasks = SuspendedTasks::new();
        let (a, b, c) = (
            CancelState::<()>::new(1, 0),
            CancelState::<()>::new(2, 0),
            CancelState::<()>::new(3, 0),
        );
        let ((ca, wa), (cb, wb), (cc, wc)) = (counter(), counter(), counter());
        tasks.register(&a, &wa);
        tasks.register(&b, &wb);
        tasks.unregister(&a);
        tasks.register(&c, &wc);
        assert_eq!(c.slot.load(Ordering::Relaxed), 0, "a's entry reused");
        tasks.wake(&a);
        assert_eq!(ca.0.load(Ordering::SeqCst), 0, "a finished: not woken");
        assert_eq!(
            cc.0.load(Ordering::SeqCst),
            0,
            "nor the task now in a's entry"
        );
        tasks.wake(&c);
        assert_eq!(cc.0.load(Ordering::SeqCst), 1);
        tasks.wake_all();
        assert_eq!(
            (cb.0.load(Ordering::SeqCst), cc.0.load(Ordering::SeqCst)),
            (1, 2)
        );
        tasks.unregister(&a);
        assert_eq!(
            tasks.slab.lock().free.len(),
            0,
            "unregistering twice frees nothing"
        );
    }

    #[test]
    fn a_large_slab_gives_its_memory_back_when_empty() {
        let tasks = SuspendedTasks::new();
        let (_count, waker) = counter();
        let states: Vec<_> = (0..5_000).map(|i| CancelState::<()>::new(i, 0)).collect();
        for s in &states {
            tasks.register(s, &waker);
        }
        assert!(tasks.slab.lock().wakers.capacity() >= 5_000);
        for s in &states {
            tasks.unregister(s);
        }
        let slab = tasks.slab.lock();
        assert_eq!((slab.wakers.capacity(), slab.free.capacity()), (0, 0));
    }
}
