//! [`Ticker`]: a thread of its own that runs a step at a fixed interval until stopped. The
//! monitor (`monitor.rs`) and the autoscaler (`sizing.rs`) are tickers.
//!
//! # Stop protocol
//! 1. The thread waits on a condvar for `every` or until `stopped` is set.
//! 2. [`Ticker::stop`] (and its drop) sets `stopped` under the lock, notifies, then joins the
//!    thread. The thread checks `stopped` after every wait, before the step, so once the join
//!    returns the step never runs again.
//! 3. Called from inside the step itself (on the ticker's thread), the stop sets the flag and
//!    returns without joining; the loop ends when the step returns.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

struct Stop {
    stopped: Mutex<bool>,
    cv: Condvar,
}

/// A running ticker thread; dropping it (or [`stop`](Self::stop)) ends it.
pub(crate) struct Ticker {
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts thread `name`, which runs `step` every `every` until stopped or until `step`
    /// returns false.
    pub(crate) fn start(
        name: String,
        every: Duration,
        mut step: impl FnMut() -> bool + Send + 'static,
    ) -> std::io::Result<Ticker> {
        let stop = Arc::new(Stop {
            stopped: Mutex::new(false),
            cv: Condvar::new(),
        });
        let s = stop.clone();
        let thread = thread::Builder::new().name(name).spawn(move || {
            loop {
                {
                    let mut stopped = s.stopped.lock();
                    if !*stopped {
                        let _ = s.cv.wait_for(&mut stopped, every);
                    }
                    if *stopped {
                        return;
                    }
                }
                if !step() {
                    return;
                }
            }
        })?;
        Ok(Ticker {
            stop,
            thread: Some(thread),
        })
    }

    /// Ends the thread and joins it, unless called on it (protocol step 3).
    pub(crate) fn stop(&mut self) {
        *self.stop.stopped.lock() = true;
        self.stop.cv.notify_all();
        if let Some(t) = self.thread.take()
            && t.thread().id() != thread::current().id()
        {
            let _ = t.join();
        }
    }

    /// False once stopped.
    pub(crate) fn is_running(&self) -> bool {
        !*self.stop.stopped.lock()
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop();
    }
}
