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
//! 1. **Acquire** (`try_acquire`, `try_acquire_up_to`): one CAS `count -> count + k`, where
//!    `k` is all that was asked for (`try_acquire`) or as many of the `n` asked for as are
//!    free, at least one (`try_acquire_up_to`). Refused if CLOSED is set (`Shutdown`), if no
//!    slot is free (`Full`), or if WAITERS is set (`Full`: a spawn never jumps the queue of
//!    waiting callers).
//! 2. **Release** (`release_many`): `fetch_sub` the count. If the previous word had WAITERS,
//!    take the waiter lock and grant the free slots to the queue's head (step 3's grant).
//! 3. **Wait** (`acquire`, `acquire_up_to`: `reserve()`, bulk calls, streams): under the
//!    waiter lock, enqueue a waiter for `want` slots, set WAITERS, then *grant*: while the
//!    queue is non-empty and at least one slot is free, take `min(want, free)` slots for the
//!    head in one CAS (ignoring WAITERS), record how many, pop it and mark it granted, still
//!    under the lock; wake the granted waiters after the lock is released. WAITERS is
//!    cleared, under the lock, whenever the queue becomes empty, so the bit is set exactly
//!    while someone waits.
//! 4. **Close** (`close`): set CLOSED; under the lock, fail every waiter with `Shutdown` and
//!    clear WAITERS. From then on the count only falls; the release that takes it to zero
//!    notifies `wait_idle`.
//!
//! # No hold-and-wait
//! A waiter holds no slot until it is granted, and a grant completes the wait: nothing
//! holds slots while it queues for more. A bulk call that wants `n` slots for a batch takes
//! what is free (at least one) and starts a smaller batch with it, rather than keeping part
//! of its slots while it waits for the rest, which let concurrent bulk calls split the free
//! slots between them and each wait forever for slots another one held. (The alternative,
//! tokio's `Semaphore` rule, grants the head all `n` at once; it is deadlock-free too, but
//! leaves slots idle while the head waits for its last ones: with batches as large as
//! `max_pending`, the pool would drain completely before each batch.)
//!
//! # Races prevented
//! - *Lost wake-up of a waiter*: a release and an enqueue meet on the same word. Either the
//!   release's `fetch_sub` comes first, and the waiter's grant CAS after its WAITERS `fetch_or`
//!   sees the freed slot; or the WAITERS `fetch_or` comes first, and the release sees the bit
//!   and grants. (Checked by loom: `loom_admission_waiter_gets_released_slot`.)
//! - *A slot granted to a dropped waiter*: grants are marked while the lock is held, and a
//!   dropped waiting future takes the same lock before it looks, so it either removes
//!   itself from the queue or finds itself granted and gives its slots back.
//! - *Deadlock between bulk calls*: see "No hold-and-wait" above. (Checked by loom:
//!   `loom_admission_two_bulk_waiters_and_a_releaser`.)
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

/// One queued call, waiting for up to `want` slots.
struct Waiter {
    state: AtomicU8,
    /// Slots asked for (at least one).
    want: usize,
    /// Slots granted, `1..=want`; written under the queue lock before `state` is GRANTED.
    got: AtomicUsize,
    waker: Mutex<Option<Waker>>,
}

const WAITING: u8 = 0;
const GRANTED: u8 = 1;
const SHUT: u8 = 2;

impl Waiter {
    /// Marks the waiter (call with the queue lock held) and collects its waker, to be woken
    /// once the lock is released.
    fn finish(&self, state: u8, wake: &mut Wakers) {
        self.state.store(state, SeqCst);
        if let Some(w) = self.waker.lock().take() {
            wake.push(w);
        }
    }
}

type Queue<'a> = MutexGuard<'a, VecDeque<Arc<Waiter>>>;

/// The wakers a grant or close collected under the queue lock, woken after it is released.
/// A release usually grants one waiter: the first waker is kept inline, so that case does not
/// allocate.
#[derive(Default)]
struct Wakers {
    first: Option<Waker>,
    rest: Vec<Waker>,
}

impl Wakers {
    fn push(&mut self, w: Waker) {
        if self.first.is_none() {
            self.first = Some(w);
        } else {
            self.rest.push(w);
        }
    }

    /// Call after the queue lock is released.
    fn wake_all(self) {
        if let Some(w) = self.first {
            w.wake();
        }
        for w in self.rest {
            w.wake();
        }
    }
}

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

    /// Callers queued for slots now (takes the queue lock: for metrics, not hot paths).
    pub(crate) fn waiters(&self) -> usize {
        self.waiters.lock().len()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(SeqCst) & CLOSED != 0
    }

    /// Step 1: take a slot now, or say why not.
    pub(crate) fn try_acquire(&self) -> Result<(), SpawnError> {
        self.take(1, 1, true).map(|_| ())
    }

    /// Step 1 for up to `n` slots (`n >= 1`) without waiting: takes as many as are free, at
    /// least one, and returns how many.
    pub(crate) fn try_acquire_up_to(&self, n: usize) -> Result<usize, SpawnError> {
        self.take(1, n, true)
    }

    /// Takes between `min` and `max` slots in one CAS (as many as are free), or none.
    /// `polite`: refuse while waiters are queued. Inlined so that the single-slot calls of the
    /// spawn path compile to the plain `count + 1` CAS.
    #[inline(always)]
    fn take(&self, min: usize, max: usize, polite: bool) -> Result<usize, SpawnError> {
        debug_assert!(1 <= min && min <= max);
        let mut cur = self.state.load(SeqCst);
        loop {
            if cur & CLOSED != 0 {
                return Err(SpawnError::Shutdown);
            }
            let free = self.max - (cur & COUNT_MASK).min(self.max);
            if (polite && cur & WAITERS != 0) || free < min {
                return Err(SpawnError::Full);
            }
            let k = max.min(free);
            match self
                .state
                .compare_exchange_weak(cur, cur + k, SeqCst, SeqCst)
            {
                Ok(_) => return Ok(k),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Step 3 for up to `n` slots (`n >= 1`): resolves with how many were taken (at least
    /// one, as many of `n` as were free when this caller's turn came), or `Shutdown`. Holds
    /// no slot while it waits (see "No hold-and-wait").
    pub(crate) fn acquire_up_to(&self, n: usize) -> Acquire<&Admission> {
        Acquire::up_to(self, n)
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
            let mut wake = Wakers::default();
            self.grant_locked(&mut self.waiters.lock(), &mut wake);
            wake.wake_all();
        }
    }

    /// Step 3's grant; call with the queue lock held, wake `wake` after releasing it.
    fn grant_locked(&self, q: &mut Queue<'_>, wake: &mut Wakers) {
        while let Some(head) = q.front() {
            let Ok(k) = self.take(1, head.want, false) else {
                break;
            };
            head.got.store(k, SeqCst);
            if let Some(w) = q.pop_front() {
                w.finish(GRANTED, wake);
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
        let mut wake = Wakers::default();
        {
            let mut q = self.waiters.lock();
            for w in q.drain(..) {
                w.finish(SHUT, &mut wake);
            }
            self.state.fetch_and(!WAITERS, SeqCst);
        }
        wake.wake_all();
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

    /// Step 3 as a future: resolves with a slot (`Ok(1)`), or `Shutdown`.
    #[inline]
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

impl AdmissionRef for Arc<crate::registry::Shared> {
    fn admission(&self) -> &Admission {
        &self.admission
    }
}

impl<A: AdmissionRef> Acquire<A> {
    /// An acquire of one slot that reaches its admission through `admission` (owned for
    /// `'static` streams).
    #[inline]
    pub(crate) fn new(admission: A) -> Self {
        Self::up_to(admission, 1)
    }

    /// An acquire of up to `want` slots (at least one is asked for even if `want` is 0).
    #[inline]
    fn up_to(admission: A, want: usize) -> Self {
        Acquire {
            admission,
            want: want.max(1),
            waiter: None,
            done: false,
        }
    }
}

/// Future returned by [`Admission::acquire`] and [`Admission::acquire_up_to`]: resolves with
/// the number of slots taken. Dropping it before it resolves leaves the queue; slots granted
/// to it in that window are released again.
pub(crate) struct Acquire<A: AdmissionRef> {
    admission: A,
    want: usize,
    waiter: Option<Arc<Waiter>>,
    done: bool,
}

impl<A: AdmissionRef + Unpin> Future for Acquire<A> {
    type Output = Result<usize, SpawnError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let adm = this.admission.admission();
        let waiter = match &this.waiter {
            Some(w) => w.clone(),
            None => {
                // The single-slot case (`reserve()`, streams) separately: `take` specialized
                // to one slot is the spawn path's CAS.
                let taken = if this.want == 1 {
                    adm.take(1, 1, true)
                } else {
                    adm.take(1, this.want, true)
                };
                match taken {
                    Ok(k) => {
                        this.done = true;
                        return Poll::Ready(Ok(k));
                    }
                    Err(SpawnError::Full) => {}
                    // `Shutdown` (admission never refuses with `Closed`: scopes do).
                    Err(e) => {
                        this.done = true;
                        return Poll::Ready(Err(e));
                    }
                }
                let w = Arc::new(Waiter {
                    state: AtomicU8::new(WAITING),
                    want: this.want,
                    got: AtomicUsize::new(0),
                    waker: Mutex::new(Some(cx.waker().clone())),
                });
                let mut wake = Wakers::default();
                {
                    let mut q = adm.waiters.lock();
                    if adm.is_closed() {
                        this.done = true;
                        return Poll::Ready(Err(SpawnError::Shutdown));
                    }
                    q.push_back(w.clone());
                    adm.state.fetch_or(WAITERS, SeqCst);
                    adm.grant_locked(&mut q, &mut wake);
                }
                wake.wake_all();
                this.waiter = Some(w.clone());
                w
            }
        };
        *waiter.waker.lock() = Some(cx.waker().clone());
        match waiter.state.load(SeqCst) {
            GRANTED => {
                this.done = true;
                Poll::Ready(Ok(waiter.got.load(SeqCst)))
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
        // Granted (under the lock, before we took it) but never observed: pass them on.
        if w.state.load(SeqCst) == GRANTED {
            adm.release_many(w.got.load(SeqCst));
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
    fn acquire_up_to_takes_what_is_free_without_waiting() {
        let a = Admission::new(Some(4));
        a.try_acquire().expect("slot");
        a.try_acquire().expect("slot");
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut many = Box::pin(a.acquire_up_to(3));
        assert_eq!(many.as_mut().poll(&mut cx), Poll::Ready(Ok(2)));
        assert_eq!(a.pending(), 4);
        assert_eq!(a.try_acquire_up_to(3), Err(SpawnError::Full));
    }

    #[test]
    fn a_waiter_holds_nothing_until_granted_and_a_dropped_grant_is_given_back() {
        let a = Admission::new(Some(4));
        assert_eq!(a.try_acquire_up_to(9), Ok(4));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut many = Box::pin(a.acquire_up_to(3));
        assert!(many.as_mut().poll(&mut cx).is_pending());
        assert_eq!(a.pending(), 4, "the waiter took nothing while it waits");
        a.release_many(3);
        assert_eq!(a.pending(), 4, "the three freed slots went to the waiter");
        drop(many);
        assert_eq!(a.pending(), 1, "granted but never observed: given back");
    }

    #[test]
    fn the_head_waiter_is_served_first_with_what_is_free() {
        let a = Admission::new(Some(2));
        assert_eq!(a.try_acquire_up_to(2), Ok(2));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut bulk = Box::pin(a.acquire_up_to(2));
        let mut one = Box::pin(a.acquire());
        assert!(bulk.as_mut().poll(&mut cx).is_pending());
        assert!(one.as_mut().poll(&mut cx).is_pending());
        a.release();
        assert_eq!(bulk.as_mut().poll(&mut cx), Poll::Ready(Ok(1)));
        assert!(one.as_mut().poll(&mut cx).is_pending());
        a.release();
        assert_eq!(one.as_mut().poll(&mut cx), Poll::Ready(Ok(1)));
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
        assert_eq!(first.as_mut().poll(&mut cx), Poll::Ready(Ok(1)));
        assert!(second.as_mut().poll(&mut cx).is_pending());
        drop(second);
        a.release();
        assert_eq!(a.pending(), 0);
    }
}
