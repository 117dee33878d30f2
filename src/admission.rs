//! Admission control: the `max_pending` bound and the shutdown gate.
//!
//! A task holds one *slot* from the moment it is admitted until its future has been
//! dropped. Slots live in one atomic word so that "is there room?" and "has shutdown
//! begun?" are answered together:
//!
//! ```text
//! state: | CLOSED (top bit) | pending count (all other bits) |
//! ```
//!
//! # Protocol
//! 1. **Acquire** (`try_acquire`): CAS `count -> count + 1`, refused if CLOSED is set
//!    (`Shutdown`), if `count == max` (`Full`), or if `reserve()` callers are queued (`Full`:
//!    a spawn never jumps the queue of waiters).
//! 2. **Release** (`release`): if a waiter is queued, the slot is handed to the first one
//!    directly (the count does not change). Otherwise `count -= 1`; then, if waiters appeared
//!    meanwhile, grant them whatever slots are free.
//! 3. **Wait** (`reserve`): take the waiter lock, enqueue, set `has_waiters`, then grant from
//!    the front while slots are free. Waiters are served first come, first served.
//! 4. **Close** (`close`): set CLOSED, then wake every waiter with `Shutdown`. From then on
//!    the count only falls; the release that takes it to zero notifies `wait_idle`.
//!
//! # Races prevented
//! - *Lost wake-up of a waiter*: a release that decrements (step 2) and a waiter that enqueues
//!   (step 3) form a store-then-load pair on (`state`, `has_waiters`) in opposite orders; with
//!   `SeqCst` on all four accesses at least one side sees the other, so either the releaser
//!   grants the waiter or the waiter takes the slot itself.
//! - *Admitted after shutdown*: CLOSED and the count change in one CAS, so once `close`
//!   returns no acquire can succeed and `pending() == 0` means no task is left.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll, Waker};

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::error::SpawnError;

const CLOSED: usize = 1 << (usize::BITS - 1);
const COUNT_MASK: usize = !CLOSED;

pub(crate) struct Admission {
    state: CachePadded<AtomicUsize>,
    /// `max_pending`, or `COUNT_MASK` when unbounded.
    max: usize,
    has_waiters: AtomicBool,
    waiters: Mutex<VecDeque<Arc<Waiter>>>,
    /// Notified when the count reaches zero after `close`.
    idle: Notify,
}

/// One queued `reserve()` call.
struct Waiter {
    state: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

const WAITING: u8 = 0;
const GRANTED: u8 = 1;
const SHUT: u8 = 2;

impl Waiter {
    fn finish(&self, state: u8) {
        self.state.store(state, SeqCst);
        if let Some(w) = self.waker.lock().take() {
            w.wake();
        }
    }
}

impl Admission {
    pub(crate) fn new(max_pending: Option<usize>) -> Self {
        Admission {
            state: CachePadded::new(AtomicUsize::new(0)),
            max: max_pending.unwrap_or(COUNT_MASK).min(COUNT_MASK),
            has_waiters: AtomicBool::new(false),
            waiters: Mutex::new(VecDeque::new()),
            idle: Notify::new(),
        }
    }

    /// Admitted, unfinished tasks (plus unspent permits).
    pub(crate) fn pending(&self) -> usize {
        self.state.load(SeqCst) & COUNT_MASK
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(SeqCst) & CLOSED != 0
    }

    /// Step 1: take a slot now, or say why not.
    pub(crate) fn try_acquire(&self) -> Result<(), SpawnError> {
        if self.has_waiters.load(SeqCst) {
            return match self.is_closed() {
                true => Err(SpawnError::Shutdown),
                false => Err(SpawnError::Full),
            };
        }
        self.acquire_raw()
    }

    /// A CAS on the state word, ignoring queued waiters.
    fn acquire_raw(&self) -> Result<(), SpawnError> {
        self.acquire_raw_n(1)
    }

    /// Takes `n` slots in one CAS, or none.
    fn acquire_raw_n(&self, n: usize) -> Result<(), SpawnError> {
        let mut cur = self.state.load(SeqCst);
        loop {
            if cur & CLOSED != 0 {
                return Err(SpawnError::Shutdown);
            }
            if cur + n > self.max {
                return Err(SpawnError::Full);
            }
            match self
                .state
                .compare_exchange_weak(cur, cur + n, SeqCst, SeqCst)
            {
                Ok(_) => return Ok(()),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Step 2: give back one slot. Called exactly once per admitted task, after its future
    /// has been dropped, and once per permit dropped unspent.
    pub(crate) fn release(&self) {
        if self.has_waiters.load(SeqCst) && self.hand_off() {
            return;
        }
        let prev = self.state.fetch_sub(1, SeqCst);
        debug_assert!(prev & COUNT_MASK > 0, "admission slot released twice");
        if prev == CLOSED | 1 {
            self.idle.notify_waiters();
        }
        if self.has_waiters.load(SeqCst) {
            self.grant_free_slots();
        }
    }

    /// Takes `n` slots, waiting (first come, first served, one slot at a time) when the pool
    /// is full. On `Shutdown`, or if this future is dropped before it finishes, the slots
    /// already taken are given back.
    pub(crate) async fn acquire_many(&self, n: usize) -> Result<(), SpawnError> {
        if !self.has_waiters.load(SeqCst) && self.acquire_raw_n(n).is_ok() {
            return Ok(());
        }
        /// Slots taken so far; released unless the whole batch was taken.
        struct Taken<'a>(&'a Admission, usize);
        impl Drop for Taken<'_> {
            fn drop(&mut self) {
                self.0.release_many(self.1);
            }
        }
        let mut taken = Taken(self, 0);
        while taken.1 < n {
            self.acquire().await?;
            taken.1 += 1;
        }
        taken.1 = 0;
        Ok(())
    }

    /// Gives back `n` slots: one `fetch_sub` when nobody waits.
    pub(crate) fn release_many(&self, n: usize) {
        if n == 0 {
            return;
        }
        if self.has_waiters.load(SeqCst) {
            for _ in 0..n {
                self.release();
            }
            return;
        }
        let prev = self.state.fetch_sub(n, SeqCst);
        debug_assert!(prev & COUNT_MASK >= n, "admission slots released twice");
        if prev == CLOSED | n {
            self.idle.notify_waiters();
        }
        if self.has_waiters.load(SeqCst) {
            self.grant_free_slots();
        }
    }

    /// Moves this releaser's slot to the first waiter. False if there was none.
    fn hand_off(&self) -> bool {
        let mut q = self.waiters.lock();
        let Some(w) = q.pop_front() else {
            return false;
        };
        self.has_waiters.store(!q.is_empty(), SeqCst);
        drop(q);
        w.finish(GRANTED);
        true
    }

    fn grant_free_slots(&self) {
        let mut q = self.waiters.lock();
        self.grant_locked(&mut q);
    }

    fn grant_locked(&self, q: &mut VecDeque<Arc<Waiter>>) {
        while !q.is_empty() && self.acquire_raw().is_ok() {
            if let Some(w) = q.pop_front() {
                w.finish(GRANTED);
            }
        }
        self.has_waiters.store(!q.is_empty(), SeqCst);
    }

    /// Step 4: refuse every later acquire and fail every queued waiter.
    pub(crate) fn close(&self) {
        let prev = self.state.fetch_or(CLOSED, SeqCst);
        if prev & COUNT_MASK == 0 {
            self.idle.notify_waiters();
        }
        let drained: Vec<_> = {
            let mut q = self.waiters.lock();
            self.has_waiters.store(false, SeqCst);
            q.drain(..).collect()
        };
        for w in drained {
            w.finish(SHUT);
        }
    }

    /// Resolves once `close` has been called and every slot has been released.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let s = self.state.load(SeqCst);
            if s & CLOSED != 0 && s & COUNT_MASK == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Step 3 as a future: resolves with a slot, or `Shutdown`.
    pub(crate) fn acquire(&self) -> Acquire<&Admission> {
        Acquire {
            admission: self,
            waiter: None,
            done: false,
        }
    }
}

/// How an [`Acquire`] reaches its admission: borrowed, or through the pool it keeps alive.
pub(crate) trait AdmissionRef {
    fn admission(&self) -> &Admission;
}

impl AdmissionRef for &Admission {
    fn admission(&self) -> &Admission {
        self
    }
}

impl AdmissionRef for std::sync::Arc<crate::pool::Shared> {
    fn admission(&self) -> &Admission {
        &self.admission
    }
}

impl<A: AdmissionRef> Acquire<A> {
    /// An acquire that owns its way to the admission (for `'static` streams).
    pub(crate) fn new(admission: A) -> Self {
        Acquire {
            admission,
            waiter: None,
            done: false,
        }
    }
}

/// Future returned by [`Admission::acquire`]. Dropping it before it resolves leaves the queue;
/// a slot granted to it in that window is released again.
pub(crate) struct Acquire<A: AdmissionRef> {
    admission: A,
    waiter: Option<Arc<Waiter>>,
    done: bool,
}

impl<A: AdmissionRef + Unpin> Future for Acquire<A> {
    type Output = Result<(), SpawnError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let adm = this.admission.admission();
        let waiter = match &this.waiter {
            Some(w) => w.clone(),
            None => {
                match adm.try_acquire() {
                    Ok(()) => {
                        this.done = true;
                        return Poll::Ready(Ok(()));
                    }
                    Err(SpawnError::Shutdown) => {
                        this.done = true;
                        return Poll::Ready(Err(SpawnError::Shutdown));
                    }
                    Err(SpawnError::Full) => {}
                }
                let w = Arc::new(Waiter {
                    state: AtomicU8::new(WAITING),
                    waker: Mutex::new(Some(cx.waker().clone())),
                });
                let mut q = adm.waiters.lock();
                if adm.is_closed() {
                    this.done = true;
                    return Poll::Ready(Err(SpawnError::Shutdown));
                }
                q.push_back(w.clone());
                adm.has_waiters.store(true, SeqCst);
                adm.grant_locked(&mut q);
                drop(q);
                this.waiter = Some(w.clone());
                w
            }
        };
        *waiter.waker.lock() = Some(cx.waker().clone());
        match waiter.state.load(SeqCst) {
            GRANTED => {
                this.done = true;
                Poll::Ready(Ok(()))
            }
            SHUT => {
                this.done = true;
                Poll::Ready(Err(SpawnError::Shutdown))
            }
            _ => Poll::Pending,
        }
    }
}

impl<A: AdmissionRef> Drop for Acquire<A> {
    fn drop(&mut self) {
        let Some(w) = self.waiter.take() else { return };
        if self.done {
            return;
        }
        let adm = self.admission.admission();
        {
            let mut q = adm.waiters.lock();
            q.retain(|x| !Arc::ptr_eq(x, &w));
            adm.has_waiters.store(!q.is_empty(), SeqCst);
        }
        // Granted after our last poll but never observed: pass the slot on.
        if w.state.load(SeqCst) == GRANTED {
            adm.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_and_close() {
        let a = Admission::new(Some(2));
        assert!(a.try_acquire().is_ok());
        assert!(a.try_acquire().is_ok());
        assert_eq!(a.try_acquire(), Err(SpawnError::Full));
        a.release();
        assert!(a.try_acquire().is_ok());
        a.close();
        assert_eq!(a.try_acquire(), Err(SpawnError::Shutdown));
        assert_eq!(a.pending(), 2);
        a.release();
        a.release();
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn dropped_acquire_many_gives_back_its_slots() {
        let a = Admission::new(Some(4));
        a.try_acquire().expect("slot");
        a.try_acquire().expect("slot");
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut many = Box::pin(a.acquire_many(3));
        assert!(many.as_mut().poll(&mut cx).is_pending());
        assert_eq!(a.pending(), 4, "took the two free slots, waits for a third");
        drop(many);
        assert_eq!(a.pending(), 2);
    }

    #[test]
    fn waiters_are_served_in_order() {
        let a = Admission::new(Some(1));
        a.try_acquire().expect("first slot");
        let mut first = Box::pin(a.acquire());
        let mut second = Box::pin(a.acquire());
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        a.release();
        assert_eq!(first.as_mut().poll(&mut cx), Poll::Ready(Ok(())));
        assert!(second.as_mut().poll(&mut cx).is_pending());
        drop(second);
        a.release();
        assert_eq!(a.pending(), 0);
    }
}
