//! The pool's size at run time: [`resize`] and the autoscaler.
//!
//! `resize(n)` changes the size asked for under the size lock (`registry::Threads`, whose
//! doc states the invariant `target == live - surplus - retiring`). Growing withdraws retirement
//! requests no worker has taken yet, then starts threads for the rest; each takes a free
//! worker slot. Shrinking adds `n` requests to `Scheduler::surplus` and unparks up to `n`
//! sleepers; a worker takes a request when it finds no task, or after a task once every
//! [`RETIRE_CHECK_INTERVAL`](crate::scheduler) tasks, then leaves its loop (moving its queued
//! tasks to the injector) and its thread exits (`scheduler/worker.rs`, `retire`).
//!
//! The autoscaler is a [`Ticker`] thread (`{prefix}-autoscale`) that samples the pool every
//! quarter of the shorter window and calls `resize` by one step at a time:
//! - **grow** by one thread when, at every sample for `grow_after`, tasks were queued and no
//!   worker was parked;
//! - **shrink** when at every sample for `shrink_after` some workers were parked: by the
//!   fewest parked in that window (they were idle all along), down to `min`.
//!
//! A `resize` by hand restarts both windows. The autoscaler holds the pool weakly and stops
//! when the pool shuts down or is dropped.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::error::ConfigError;
use crate::registry::Shared;
use crate::ticker::Ticker;

/// The settings of [`PoolBuilder::autoscale`](crate::PoolBuilder::autoscale).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Autoscale {
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) grow_after: Duration,
    pub(crate) shrink_after: Duration,
}

/// How long tasks must wait with every worker busy before the autoscaler adds a thread.
pub(crate) const DEFAULT_GROW_AFTER: Duration = Duration::from_millis(100);
/// How long workers must sit idle before the autoscaler retires them.
pub(crate) const DEFAULT_SHRINK_AFTER: Duration = Duration::from_secs(10);
/// The shortest sampling period, whatever the windows.
const MIN_SAMPLE: Duration = Duration::from_millis(5);

/// Sets the pool's size to `n` threads (see the module doc).
pub(crate) fn resize(shared: &Arc<Shared>, n: usize) -> Result<(), ConfigError> {
    let (min, max) = match shared.autoscale {
        Some(a) => (a.min, a.max),
        None => (1, shared.sched.capacity()),
    };
    if n < min || n > max {
        return Err(ConfigError::ResizeOutOfRange {
            requested: n,
            min,
            max,
        });
    }
    let threads = &shared.threads;
    let mut list = threads.lock();
    if list.closed {
        return Err(ConfigError::ShuttingDown);
    }
    // Retired threads have ended or are ending: let go of the handles of those that have.
    list.handles.retain(|h| !h.is_finished());
    let target = list.target;
    let sched = &shared.sched;
    if n < target {
        sched.request_retire(target - n);
        list.target = n;
    } else if n > target {
        let need = n - target;
        let withdrawn = sched.withdraw_retire(need);
        list.target += withdrawn;
        for _ in withdrawn..need {
            threads.start_one(shared, &mut list)?;
            list.target += 1;
        }
    }
    Ok(())
}

/// The size asked for (by build, `resize` or the autoscaler).
pub(crate) fn target(shared: &Shared) -> usize {
    shared.threads.lock().target
}

/// Starts the autoscaler of `shared` with `settings` on a [`Ticker`] thread named
/// `thread_name`; dropping (or stopping) the ticker ends it.
pub(crate) fn start_autoscaler(
    shared: &Arc<Shared>,
    settings: Autoscale,
    thread_name: String,
) -> std::io::Result<Ticker> {
    let every = (settings.grow_after.min(settings.shrink_after) / 4).max(MIN_SAMPLE);
    let pool = Arc::downgrade(shared);
    let mut window = Window::default();
    let mut last_target = None;
    Ticker::start(thread_name, every, move || {
        step(&pool, &settings, &mut window, &mut last_target)
    })
}

/// What the autoscaler has seen since its last change.
#[derive(Debug, Default)]
struct Window {
    /// Since when every sample saw tasks queued and no worker parked.
    saturated_since: Option<Instant>,
    /// Since when every sample saw a parked worker, and the fewest parked at one sample.
    idle_since: Option<(Instant, usize)>,
}

/// One step: what to resize to, given a sample at `now`, or `None`.
fn decide(
    w: &mut Window,
    a: &Autoscale,
    now: Instant,
    target: usize,
    queued: usize,
    parked: usize,
) -> Option<usize> {
    if queued > 0 && parked == 0 {
        let since = *w.saturated_since.get_or_insert(now);
        w.idle_since = None;
        if now.duration_since(since) >= a.grow_after && target < a.max {
            w.saturated_since = None;
            return Some(target + 1);
        }
    } else if parked > 0 {
        w.saturated_since = None;
        let (since, fewest) = w.idle_since.get_or_insert((now, parked));
        *fewest = (*fewest).min(parked);
        if now.duration_since(*since) >= a.shrink_after && target > a.min {
            let step = (*fewest).min(target - a.min);
            w.idle_since = None;
            return Some(target - step);
        }
    } else {
        // Busy without a backlog: neither window runs.
        *w = Window::default();
    }
    None
}

/// One sample and, if `decide` says so, one resize. False once the pool is gone or shutting
/// down (the ticker then ends).
fn step(
    pool: &Weak<Shared>,
    a: &Autoscale,
    window: &mut Window,
    last_target: &mut Option<usize>,
) -> bool {
    let Some(shared) = pool.upgrade() else {
        return false;
    };
    let target = target(&shared);
    if *last_target != Some(target) {
        // Resized by hand (or the first sample): what was seen at another size says nothing
        // about this one.
        *window = Window::default();
        *last_target = Some(target);
    }
    let queued = shared.sched.queued();
    let parked = shared.sched.idle.num_parked();
    if let Some(to) = decide(window, a, Instant::now(), target, queued, parked) {
        match resize(&shared, to) {
            Ok(()) => {
                *last_target = Some(to);
                #[cfg(feature = "tracing")]
                tracing::info!(
                    target: "async_rayon",
                    from = target,
                    to,
                    queued,
                    parked,
                    "autoscale resized the pool"
                );
            }
            Err(ConfigError::ShuttingDown) => return false,
            Err(_e) => {
                #[cfg(feature = "tracing")]
                tracing::warn!(target: "async_rayon", "autoscale could not resize: {_e}");
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Autoscale = Autoscale {
        min: 1,
        max: 4,
        grow_after: Duration::from_millis(100),
        shrink_after: Duration::from_millis(1000),
    };

    #[test]
    fn grows_only_after_a_whole_saturated_window() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut w = Window::default();
        assert_eq!(decide(&mut w, &A, at(0), 2, 5, 0), None);
        assert_eq!(decide(&mut w, &A, at(50), 2, 5, 0), None);
        // A parked worker breaks the window.
        assert_eq!(decide(&mut w, &A, at(75), 2, 5, 1), None);
        assert_eq!(decide(&mut w, &A, at(100), 2, 5, 0), None);
        assert_eq!(decide(&mut w, &A, at(199), 2, 5, 0), None);
        assert_eq!(decide(&mut w, &A, at(200), 2, 5, 0), Some(3));
        // Never above max.
        let mut w = Window::default();
        assert_eq!(decide(&mut w, &A, at(0), 4, 5, 0), None);
        assert_eq!(decide(&mut w, &A, at(500), 4, 5, 0), None);
    }

    #[test]
    fn shrinks_by_the_fewest_idle_over_the_window_down_to_min() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut w = Window::default();
        assert_eq!(decide(&mut w, &A, at(0), 4, 0, 3), None);
        assert_eq!(decide(&mut w, &A, at(500), 4, 0, 2), None);
        assert_eq!(decide(&mut w, &A, at(1000), 4, 0, 3), Some(2));
        let mut w = Window::default();
        assert_eq!(decide(&mut w, &A, at(0), 2, 0, 2), None);
        assert_eq!(decide(&mut w, &A, at(1000), 2, 0, 2), Some(1), "min is 1");
        let mut w = Window::default();
        assert_eq!(decide(&mut w, &A, at(0), 1, 0, 1), None);
        assert_eq!(decide(&mut w, &A, at(5000), 1, 0, 1), None);
    }
}
