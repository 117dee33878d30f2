//! Admission control: the `max_pending` bound and the shutdown gate.
//!
//! A task holds one *slot* from the moment it is admitted until its future has been
//! dropped. Slots live in one atomic word, so that "is there room?", "has shutdown begun?"
//! and "is anyone queued in `reserve()`?" are answered together:
//!
//! ```text
//! state: | CLOSED | WAITERS | pending count (all other bits) |
//! ```
//!
//! # Protocol
//! 1. **Acquire** (`try_acquire`): CAS `count -> count + 1`, refused if CLOSED is set
//!    (`Shutdown`), if `count == max` (`Full`), or if WAITERS is set (`Full`: a spawn never
//!    jumps the queue of `reserve()` callers).
//! 2. **Release** (`release_many`): `fetch_sub` the count. If the previous word had WAITERS,
//!    take the waiter lock and grant the free slots to the queue's head (step 3's grant).
//! 3. **Wait** (`reserve`): under the waiter lock, enqueue, set WAITERS, then *grant*: while
//!    the queue is non-empty and a slot can be taken (a CAS ignoring WAITERS), pop the head and
//!    mark it granted, still under the lock. WAITERS is cleared, under the lock, whenever the
//!    queue becomes empty, so the bit is set exactly while someone waits.
//! 4. **Close** (`close`): set CLOSED; under the lock, fail every waiter with `Shutdown` and
//!    clear WAITERS. From then on the count only falls; the release that takes it to zero
//!    notifies `wait_idle`.
//!
//! # Races prevented
//! - *Lost wake-up of a waiter*: a release and an enqueue meet on the same word. Either the
//!   release's `fetch_sub` comes first, and the waiter's grant CAS after its WAITERS `fetch_or`
//!   sees the freed slot; or the WAITERS `fetch_or` comes first, and the release sees the bit
//!   and grants. (Checked by loom: `loom_admission_waiter_gets_released_slot`.)
//! - *A slot granted to a dropped waiter*: grants are marked while the lock is held, and a
//!   dropped `reserve()` future takes the same lock before it looks, so it either removes
//!   itself from the queue or finds itself granted and gives the slot back.
//! - *Admitted after shutdown*: CLOSED and the count change in one CAS, so once `close`
//!   returns no acquire can succeed and `pending() == 0` means no task is left.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::task::{Context, Poll, Waker};

use crossbeam_utils::CachePadded;
use tokio::sync::Notify;

use crate::error::SpawnError;
use crate::sync::{AtomicU8, AtomicUsize, Mutex, MutexGuard};

const CLOSED: usize = 1 << (usize::BITS - 1);
const WAITERS: usize = 1 << (usize::BITS - 2);
const COUNT_MASK: usize = !(CLOSED | WAITERS);

pub(crate) struct Admission {
    state: CachePadded<AtomicUsize>,
    /// `max_pending`, or `COUNT_MASK` when unbounded.
    max: usize,
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
    /// Marks the waiter (call with the queue lock held) and wakes it.
    fn finish(&self, state: u8) {
        self.state.store(state, SeqCst);
        if let Some(w) = self.waker.lock().take() {
            w.wake();
        }
    }
}

type Queue<'a> = MutexGuard<'a, VecDeque<Arc<Waiter>>>;

impl Admission {
    pub(crate) fn new(max_pending: Option<usize>) -> Self {
        Admission {
            state: CachePadded::new(AtomicUsize::new(0)),
            max: max_pending.unwrap_or(COUNT_MASK).min(COUNT_MASK),
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
        self.acquire_raw_n(1, true)
    }

    /// Step 1 for `n` slots at once, all or none, without waiting.
    pub(crate) fn try_acquire_many(&self, n: usize) -> Result<(), SpawnError> {
        self.acquire_raw_n(n, true)
    }

    /// Takes `n` slots in one CAS, or none. `polite`: refuse while `reserve()` callers wait.
    fn acquire_raw_n(&self, n: usize, polite: bool) -> Result<(), SpawnError> {
        let mut cur = self.state.load(SeqCst);
        loop {
            if cur & CLOSED != 0 {
                return Err(SpawnError::Shutdown);
            }
            if (polite && cur & WAITERS != 0) || (cur & COUNT_MASK) + n > self.max {
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

    /// Takes `n` slots, waiting (first come, first served, one slot at a time) when the pool
    /// is full. On `Shutdown`, or if this future is dropped before it finishes, the slots
    /// already taken are given back.
    pub(crate) async fn acquire_many(&self, n: usize) -> Result<(), SpawnError> {
        if self.acquire_raw_n(n, true).is_ok() {
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

    /// Step 2: give back one slot. Called exactly once per admitted task, after its future
    /// has been dropped, and once per permit dropped unspent.
    pub(crate) fn release(&self) {
        self.release_many(1);
    }

    /// Step 2 for `n` slots at once.
    pub(crate) fn release_many(&self, n: usize) {
        if n == 0 {
            return;
        }
        let prev = self.state.fetch_sub(n, SeqCst);
        debug_assert!(prev & COUNT_MASK >= n, "admission slots released twice");
        if prev & (CLOSED | COUNT_MASK) == CLOSED | n {
            self.idle.notify_waiters();
        }
        if prev & WAITERS != 0 {
            let mut q = self.waiters.lock();
            self.grant_locked(&mut q);
        }
    }

    /// Step 3's grant; call with the queue lock held.
    fn grant_locked(&self, q: &mut Queue<'_>) {
        while !q.is_empty() && self.acquire_raw_n(1, false).is_ok() {
            if let Some(w) = q.pop_front() {
                w.finish(GRANTED);
            }
        }
        if q.is_empty() {
            self.state.fetch_and(!WAITERS, SeqCst);
        }
    }

    /// Step 4: refuse every later acquire and fail every queued waiter.
    pub(crate) fn close(&self) {
        let prev = self.state.fetch_or(CLOSED, SeqCst);
        if prev & COUNT_MASK == 0 {
            self.idle.notify_waiters();
        }
        let mut q = self.waiters.lock();
        for w in q.drain(..) {
            w.finish(SHUT);
        }
        self.state.fetch_and(!WAITERS, SeqCst);
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
        Acquire::new(self)
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

impl AdmissionRef for Arc<crate::pool::Shared> {
    fn admission(&self) -> &Admission {
        &self.admission
    }
}

impl<A: AdmissionRef> Acquire<A> {
    /// An acquire that reaches its admission through `admission` (owned for `'static`
    /// streams).
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
                adm.state.fetch_or(WAITERS, SeqCst);
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
            if q.is_empty() {
                adm.state.fetch_and(!WAITERS, SeqCst);
            }
        }
        // Granted (under the lock, before we took it) but never observed: pass it on.
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
