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

use crate::sync::{AtomicU8, OnceCell, fence};

/// Set once cancellation of this one task is requested.
pub(crate) const CANCEL_REQUESTED: u8 = 1;

/// A task's cancel flag (with the task's other flag bits), its id and its lazily created
/// token.
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
    pub(crate) fn set(&self, bits: u8, ordering: Ordering) {
        self.flags.fetch_or(bits, ordering);
    }

    /// True once the cancel flag is set.
    #[inline(always)]
    pub(crate) fn requested(&self) -> bool {
        self.flags.load(Ordering::Acquire) & CANCEL_REQUESTED != 0
    }
}
