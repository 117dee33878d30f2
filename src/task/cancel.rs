//! The cancel handshake between a task and whoever cancels it.
//!
//! A task that suspends must be woken by a cancel, or it could sleep through it (its I/O may
//! never fire). It is woken through its cancellation token, which is created lazily (most
//! tasks never suspend, and a token costs an allocation). So a cancel racing the task's first
//! suspension meets a token that may or may not exist yet:
//!
//! - the canceller ([`CancelState::request`]) sets the flag, fences, then cancels the token
//!   if it finds one;
//! - the suspending task ([`CancelState::publish_token`]) creates its token and starts
//!   waiting on it, fences, then reads the flag.
//!
//! With a `SeqCst` fence between the two accesses on each side, at least one side sees the
//! other's write (the store-buffering pattern): the task either reads the flag and finishes,
//! or the canceller finds the token and its cancel wakes the task. The loom model
//! `loom_cancel_vs_suspend` runs this type; without either fence it finds the lost cancel.

use std::sync::atomic::Ordering;

use crate::sync::{AtomicU64, OnceCell, fence};

/// Set once cancellation of this one task is requested.
pub(crate) const CANCEL_REQUESTED: u64 = 1;
/// The low bits of the word are flags; the bits above hold the task's id.
pub(crate) const FLAG_BITS: u32 = 8;

/// A task's cancel flag (with the task's other flag bits and its id, in one word) and its
/// lazily created token.
pub(crate) struct CancelState<T> {
    flags: AtomicU64,
    token: OnceCell<T>,
}

impl<T> CancelState<T> {
    /// A state for task `id` with `flags` set and no token.
    pub(crate) fn new(id: u64, flags: u64) -> Self {
        debug_assert!(flags < 1 << FLAG_BITS && id < 1 << (64 - FLAG_BITS));
        CancelState {
            flags: AtomicU64::new(id << FLAG_BITS | flags),
            token: OnceCell::new(),
        }
    }

    /// The flag bits (and the id above them), for checks that only read them.
    #[inline]
    pub(crate) fn flags(&self) -> &AtomicU64 {
        &self.flags
    }

    /// The id given to [`new`](Self::new).
    pub(crate) fn id(&self) -> u64 {
        self.flags.load(Ordering::Relaxed) >> FLAG_BITS
    }

    /// The canceller's side: set the flag, fence, then `cancel` the token if it exists.
    pub(crate) fn request(&self, cancel: impl FnOnce(&T)) {
        self.flags.fetch_or(CANCEL_REQUESTED, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if let Some(token) = self.token.get() {
            cancel(token);
        }
    }

    /// The suspending task's side: create the token (if the handle has not already) and let
    /// `watch` start waiting on it, then fence. The caller reads the flag after this returns.
    pub(crate) fn publish_token<R>(
        &self,
        make: impl FnOnce() -> T,
        watch: impl FnOnce(&T) -> R,
    ) -> R {
        let watching = watch(self.token.get_or_init(make));
        fence(Ordering::SeqCst);
        watching
    }

    /// The token, created by `make` on first use (by the handle, or at a timeout).
    pub(crate) fn token(&self, make: impl FnOnce() -> T) -> &T {
        self.token.get_or_init(make)
    }

    /// Sets `bits` in the flags with `ordering`.
    #[inline]
    pub(crate) fn set(&self, bits: u64, ordering: Ordering) {
        self.flags.fetch_or(bits, ordering);
    }

    /// True once the cancel flag is set.
    #[inline(always)]
    pub(crate) fn requested(&self) -> bool {
        self.flags.load(Ordering::Acquire) & CANCEL_REQUESTED != 0
    }
}
