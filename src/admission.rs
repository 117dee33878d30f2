//! Admission control: the `max_pending` bound and the shutdown gate.
//!
//! A task holds one *slot* from the moment it is admitted until its future has been
//! dropped. The count of slots held is split by who writes it, so that a spawn and the end
//! of a task on a worker do not write the same cache line:
//!
//! ```text
//! state      CLOSED | WAITERS | taken   slots ever taken (wrapping), written by the
//!                                       admitting threads (and rarely by close and waiters)
//! flags      CLOSED | WAITERS           a copy of the two bits for releases to read: it
//!                                       stays in every core's cache while no one waits
//! given[w]   slots ever given back      written by worker w only (the last: other threads)
//! pending  = taken - sum(given)         (the sum read first, see below)
//! ```
//!
//! # Protocol
//! 1. **Acquire** (`try_acquire`, `try_acquire_up_to`): one CAS `taken -> taken + k` on the
//!    state word, where `k` is all that was asked for (`try_acquire`) or as many of the `n`
//!    asked for as are free, at least one (`try_acquire_up_to`). Refused if CLOSED is set
//!    (`Shutdown`), if no slot is free (`Full`), or if WAITERS is set (`Full`: a spawn never
//!    jumps the queue of waiting callers). Room is checked against `given_seen`, a past sum
//!    of `given`; only when that shows less than was asked for is `given` summed afresh.
//! 2. **Release** (`release_at`, `release_many`): `given[w] += n` for the calling worker's
//!    row `w` (or the shared last counter), then read `flags`. If CLOSED, and nothing is
//!    pending, notify `wait_idle`; if WAITERS, take the waiter lock and grant the free slots
//!    to the queue's head (step 3's grant).
//! 3. **Wait** (`acquire`, `acquire_up_to`: `reserve()`, bulk calls, streams): under the
//!    waiter lock, enqueue a waiter for `want` slots, set WAITERS, then *grant*: while the
//!    queue is non-empty and at least one slot is free, take `min(want, free)` slots for the
//!    head (step 1, ignoring WAITERS), record how many, pop it and mark it granted, still
//!    under the lock; wake the granted waiters after the lock is released. WAITERS is
//!    cleared, under the lock, whenever the queue becomes empty, so the bit is set exactly
//!    while someone waits.
//! 4. **Close** (`close`): set CLOSED (in the state word, then in `flags`), fence, then
//!    notify `wait_idle` if nothing is pending; under
//!    the lock, fail every waiter with `Shutdown` and clear WAITERS. From then on the count
//!    only falls; a release that finds it at zero notifies `wait_idle`.
//!
//! # Why the counts may be read apart
//! Every slot is taken before it is given back, and the give-back is ordered after the take
//! (the task, or the permit, passes from one thread to the other). So a sum of `given` read
//! *before* `taken` never counts a slot that `taken` does not: `pending()` never reads below
//! the true count, and a stale `given_seen` only makes an acquire see less room than there
//! is, never more. The counts wrap; only their difference is used.
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
//! Each of these meets on a store-then-load pair, `SeqCst` on both sides: one side writes
//! its word and then reads the other side's, so at least one of the two sees the other.
//! - *Lost wake-up of a waiter*: a release writes `given[w]` then reads `flags`; a waiter
//!   sets WAITERS (in both words) then sums `given` in its grant. Either the grant sees the freed slot, or
//!   the release sees the bit and grants. (Checked by loom:
//!   `loom_admission_waiter_gets_released_slot`, with the release on a worker row.)
//! - *A slot granted to a dropped waiter*: grants are marked while the lock is held, and a
//!   dropped waiting future takes the same lock before it looks, so it either removes
//!   itself from the queue or finds itself granted and gives its slots back.
//! - *Deadlock between bulk calls*: see "No hold-and-wait" above. (Checked by loom:
//!   `loom_admission_two_bulk_waiters_and_a_releaser`.)
//! - *Admitted after shutdown*: CLOSED and `taken` change in one CAS of the state word, so
//!   once `close` returns no acquire can succeed, and `pending() == 0` after it means no
//!   task is left. (Checked by loom: `loom_admission_acquire_release_vs_close`.)
//! - *The last release missing `wait_idle`*: a release writes `given[w]` then reads
//!   `flags`; `close` sets CLOSED then sums `given`. The release ordered last sees CLOSED
//!   and every other release, or `close` sees them all; one of them finds zero. (Checked
//!   by loom: `loom_admission_last_releases_vs_close_notify_idle`.)

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::task::{Context, Poll, Waker};

use crossbeam_utils::CachePadded;
use tokio::sync::Notify;

use crate::error::SpawnError;
use crate::sync::{AtomicU8, AtomicUsize, Mutex, MutexGuard, fence};

const CLOSED: usize = 1 << (usize::BITS - 1);
const WAITERS: usize = 1 << (usize::BITS - 2);
const COUNT_MASK: usize = !(CLOSED | WAITERS);
/// `max` of an unbounded pool: no count of pending slots comes near it.
const UNBOUNDED: usize = COUNT_MASK / 2;

pub(crate) struct Admission {
    /// Written by the threads that admit (and by `close` and waiters, rarely).
    spawn_side: CachePadded<SpawnSide>,
    /// A copy of the state word's `CLOSED | WAITERS`, for releases: every release reads it,
    /// and it stays in every core's cache while no one waits.
    flags: CachePadded<AtomicUsize>,
    /// Slots ever given back: one counter per worker row, written by that worker, and a
    /// last one for every other thread.
    given: Box<[CachePadded<AtomicUsize>]>,
    /// `max_pending`, or `UNBOUNDED`.
    max: usize,
    waiters: Mutex<VecDeque<Arc<Waiter>>>,
    /// Notified when the count reaches zero after `close`.
    idle: Notify,
    /// How many times `idle` was notified (loom cannot see into tokio's `Notify`).
    #[cfg(loom)]
    pub(crate) idle_notices: AtomicUsize,
}

struct SpawnSide {
    /// `CLOSED | WAITERS | taken`: slots ever taken, in the count bits (wrapping there).
    state: AtomicUsize,
    /// A sum of `given` taken at some point, so never above the current sum: an acquire
    /// checks for room against it, and sums `given` afresh only when it shows none.
    given_seen: AtomicUsize,
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
    /// An admission for a pool of up to `workers` worker rows.
    pub(crate) fn new(max_pending: Option<usize>, workers: usize) -> Self {
        Admission {
            spawn_side: CachePadded::new(SpawnSide {
                state: AtomicUsize::new(0),
                given_seen: AtomicUsize::new(0),
            }),
            flags: CachePadded::new(AtomicUsize::new(0)),
            given: (0..=workers)
                .map(|_| CachePadded::new(AtomicUsize::new(0)))
                .collect(),
            max: max_pending.unwrap_or(UNBOUNDED).min(UNBOUNDED),
            waiters: Mutex::new(VecDeque::new()),
            idle: Notify::new(),
            #[cfg(loom)]
            idle_notices: AtomicUsize::new(0),
        }
    }

    fn notify_idle(&self) {
        #[cfg(loom)]
        self.idle_notices.fetch_add(1, SeqCst);
        self.idle.notify_waiters();
    }

    /// The sum of `given`. Read it *before* the state word it is compared with (see "Why the
    /// counts may be read apart").
    fn given_now(&self) -> usize {
        self.given
            .iter()
            .fold(0usize, |sum, g| sum.wrapping_add(g.load(SeqCst)))
    }

    /// Admitted, unfinished tasks (plus unspent permits). Never below the count at some
    /// moment of the call, so `0` after `close` means no task is left; never above `max`.
    pub(crate) fn pending(&self) -> usize {
        let count = |taken: usize, given: usize| {
            let pending = taken.wrapping_sub(given) & COUNT_MASK;
            debug_assert!(pending <= UNBOUNDED, "admission slots released twice");
            pending
        };
        let mut given = self.given_now();
        // The counters only grow: if their sum is the same after the load of `taken` as
        // before it, it was that sum at the load, and the count is exact there.
        for _ in 0..3 {
            let taken = self.spawn_side.state.load(SeqCst);
            let again = self.given_now();
            if again == given {
                return count(taken, given);
            }
            given = again;
        }
        // Releases kept coming: the sum read before `taken` bounds the count from above, and
        // no more than `max` slots are ever taken.
        count(self.spawn_side.state.load(SeqCst), given).min(self.max)
    }

    /// Callers queued for slots now (takes the queue lock: for metrics, not hot paths).
    pub(crate) fn waiters(&self) -> usize {
        self.waiters.lock().len()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.flags.load(SeqCst) & CLOSED != 0
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

    /// Takes between `min` and `max` slots in one CAS of the state word (as many as are
    /// free), or none. `polite`: refuse while waiters are queued. Room is checked against
    /// `given_seen`; only when that shows less than `max` is `given` summed afresh. Inlined so that
    /// the single-slot calls of the spawn path compile to two loads and the CAS.
    #[inline(always)]
    fn take(&self, min: usize, max: usize, polite: bool) -> Result<usize, SpawnError> {
        debug_assert!(1 <= min && min <= max);
        let side = &*self.spawn_side;
        // `given_seen` before the state word: every slot it counts was taken before.
        let mut given = side.given_seen.load(SeqCst);
        let mut cur = side.state.load(SeqCst);
        let mut summed = false;
        loop {
            if cur & CLOSED != 0 {
                return Err(SpawnError::Shutdown);
            }
            if polite && cur & WAITERS != 0 {
                return Err(SpawnError::Full);
            }
            let pending = cur.wrapping_sub(given) & COUNT_MASK;
            let free = self.max.saturating_sub(pending);
            // Less room than asked for by the last sum: sum afresh once, so that a call for
            // up to `max` slots gets all that are free, not what was free at the last sum.
            if free < max && !summed {
                summed = true;
                given = self.given_now();
                side.given_seen.store(given, SeqCst);
                cur = side.state.load(SeqCst);
                continue;
            }
            if free < min {
                return Err(SpawnError::Full);
            }
            let k = max.min(free);
            let next = (cur & !COUNT_MASK) | (cur.wrapping_add(k) & COUNT_MASK);
            match side.state.compare_exchange_weak(cur, next, SeqCst, SeqCst) {
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

    /// Step 2: give back one slot from a thread that is not one of the pool's workers.
    /// Called exactly once per admitted task, after its future has been dropped, and once
    /// per permit dropped unspent.
    pub(crate) fn release(&self) {
        self.release_at(None, 1);
    }

    /// Step 2 for `n` slots at once, from a thread that is not one of the pool's workers.
    pub(crate) fn release_many(&self, n: usize) {
        self.release_at(None, n);
    }

    /// Step 2 for `n` slots, counted in `row`'s counter: the calling worker's row, or `None`
    /// for any other thread. (Any thread may use any row; a worker using its own keeps the
    /// counter's cache line to itself.)
    #[inline]
    pub(crate) fn release_at(&self, row: Option<usize>, n: usize) {
        if n == 0 {
            return;
        }
        let last = self.given.len() - 1;
        self.given[row.map_or(last, |r| r.min(last))].fetch_add(n, SeqCst);
        // The count, then the flags; a waiter or `close` sets its flag, then sums the
        // counts: with a fence on both sides, one of the two sees the other.
        fence(SeqCst);
        let flags = self.flags.load(SeqCst);
        if flags != 0 {
            self.released_while_flagged(flags);
        }
    }

    #[cold]
    fn released_while_flagged(&self, flags: usize) {
        if flags & CLOSED != 0 && self.pending() == 0 {
            self.notify_idle();
        }
        if flags & WAITERS != 0 {
            let mut wake = Wakers::default();
            self.grant_locked(&mut self.waiters.lock(), &mut wake);
            wake.wake_all();
        }
    }

    /// Sets `flag` in the state word and in its copy, then fences: what the caller reads
    /// next is ordered after both (the other side of `release_at`'s fence).
    fn set_flag(&self, flag: usize) {
        self.spawn_side.state.fetch_or(flag, SeqCst);
        self.flags.fetch_or(flag, SeqCst);
        fence(SeqCst);
    }

    /// Clears WAITERS in the state word and in its copy (with the queue lock held).
    fn clear_waiters(&self) {
        self.spawn_side.state.fetch_and(!WAITERS, SeqCst);
        self.flags.fetch_and(!WAITERS, SeqCst);
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
            self.clear_waiters();
        }
    }

    /// Step 4: refuse every later acquire and fail every queued waiter.
    pub(crate) fn close(&self) {
        self.set_flag(CLOSED);
        if self.pending() == 0 {
            self.notify_idle();
        }
        let mut wake = Wakers::default();
        {
            let mut q = self.waiters.lock();
            for w in q.drain(..) {
                w.finish(SHUT, &mut wake);
            }
            self.clear_waiters();
        }
        wake.wake_all();
    }

    /// Resolves once `close` has been called and every slot has been released.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() && self.pending() == 0 {
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
                    adm.set_flag(WAITERS);
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
                adm.clear_waiters();
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
        let a = Admission::new(Some(2), 2);
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
        let a = Admission::new(Some(4), 2);
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
        let a = Admission::new(Some(4), 2);
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
        let a = Admission::new(Some(2), 2);
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
    fn slots_given_back_on_worker_rows_free_room() {
        let a = Admission::new(Some(3), 2);
        assert_eq!(a.try_acquire_up_to(3), Ok(3));
        a.release_at(Some(0), 1);
        a.release_at(Some(1), 1);
        a.release_at(Some(99), 0);
        assert_eq!(a.pending(), 1);
        // The room the rows gave back is found although no acquire summed them yet.
        assert_eq!(a.try_acquire_up_to(5), Ok(2));
        assert_eq!(a.try_acquire(), Err(SpawnError::Full));
        // A row past the pool's goes to the shared counter.
        a.release_at(Some(99), 3);
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn a_call_for_many_slots_gets_all_that_are_free_not_what_the_last_sum_saw() {
        let a = Admission::new(Some(10), 2);
        assert_eq!(a.try_acquire_up_to(10), Ok(10));
        a.release_at(Some(0), 5);
        // Sums the rows: 5 free, one taken.
        assert_eq!(a.try_acquire(), Ok(()));
        a.release_at(Some(1), 4);
        // The last sum shows 4 free; 8 are.
        assert_eq!(a.try_acquire_up_to(10), Ok(8));
        assert_eq!(a.pending(), 10);
    }

    #[test]
    fn wait_idle_resolves_when_the_last_slot_comes_back_on_a_row() {
        let a = Admission::new(Some(2), 2);
        assert_eq!(a.try_acquire_up_to(2), Ok(2));
        a.close();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut idle = Box::pin(a.wait_idle());
        assert!(idle.as_mut().poll(&mut cx).is_pending());
        a.release_at(Some(1), 1);
        assert!(idle.as_mut().poll(&mut cx).is_pending());
        a.release_at(Some(0), 1);
        assert_eq!(idle.as_mut().poll(&mut cx), Poll::Ready(()));
    }

    #[test]
    fn waiters_are_served_in_order() {
        let a = Admission::new(Some(1), 2);
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
