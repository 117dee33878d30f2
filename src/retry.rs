//! Retrying an item's function with exponential backoff and jitter.
//!
//! [`with_retry`] wraps any function returning a `Result` so that each call retries failures
//! itself. It composes with every bulk call (and with `spawn_with_handle`), keeps the item's
//! admission slot while it backs off, and counts each retry in the pool's metrics when it runs
//! on a pool worker.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How [`with_retry`] retries: up to `max_retries` more attempts, waiting
/// `initial_backoff * multiplier^attempt` (at most `max_backoff`) between them, with jitter.
///
/// ```
/// use async_rayon::RetryPolicy;
/// use std::time::Duration;
///
/// let policy = RetryPolicy::new(5)
///     .initial_backoff(Duration::from_millis(10))
///     .max_backoff(Duration::from_secs(1));
/// assert_eq!(policy.max_retries, 5);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts after the first one. 0 never retries.
    pub max_retries: u32,
    /// Wait before the first retry.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Growth of the wait per attempt (at least 1.0).
    pub multiplier: f64,
    /// Randomize each wait in `[wait / 2, wait]` ("equal jitter"), so that items failing
    /// together do not retry together.
    pub jitter: bool,
}

impl RetryPolicy {
    /// `max_retries` retries starting at 100 ms, doubling up to 10 s, with jitter.
    pub fn new(max_retries: u32) -> Self {
        RetryPolicy {
            max_retries,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: true,
        }
    }

    /// Sets the wait before the first retry.
    pub fn initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }

    /// Sets the longest wait between attempts.
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// Sets the growth of the wait per attempt (values below 1.0 count as 1.0).
    pub fn multiplier(mut self, m: f64) -> Self {
        self.multiplier = m;
        self
    }

    /// Turns jitter on or off.
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// The wait before retry number `retry` (0-based), before jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = self.multiplier.max(1.0).powi(retry.min(64) as i32);
        let secs =
            (self.initial_backoff.as_secs_f64() * factor).min(self.max_backoff.as_secs_f64());
        Duration::try_from_secs_f64(secs).unwrap_or(self.max_backoff)
    }

    /// The wait before retry number `retry` (0-based), jittered if `jitter` is on: what
    /// [`with_retry`] sleeps, what a supervisor sleeps before a restart, and a queue job's
    /// backoff before its next delivery.
    pub(crate) fn wait(&self, retry: u32) -> Duration {
        let d = self.backoff(retry);
        if self.jitter {
            d / 2 + d.mul_f64(crate::rand::next_unit() / 2.0)
        } else {
            d
        }
    }
}

impl Default for RetryPolicy {
    /// Three retries, 100 ms doubling to at most 10 s, with jitter.
    fn default() -> Self {
        RetryPolicy::new(3)
    }
}

/// Wraps `f` so that each call retries an `Err` up to `policy.max_retries` times, with
/// exponential backoff and jitter, and yields the last result. Each call needs its input
/// again for a retry, so `T: Clone`.
///
/// Use it with any bulk call:
///
/// ```
/// use async_rayon::{with_retry, RetryPolicy, Scope, ThreadPoolInner};
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let pool = ThreadPoolInner::new(2, None);
/// let scope = Scope::new(pool.clone());
/// let attempts = Arc::new(AtomicU32::new(0));
/// let seen = attempts.clone();
/// // Fails twice, then succeeds.
/// let flaky = move |x: u32| {
///     let seen = seen.clone();
///     async move {
///         if seen.fetch_add(1, Ordering::SeqCst) < 2 { Err("busy") } else { Ok(x) }
///     }
/// };
/// let policy = RetryPolicy::new(3).initial_backoff(Duration::from_millis(1));
/// let results = pool.block_on(scope.stream_process(vec![7], 1, with_retry(policy, flaky)));
/// assert_eq!(results, vec![Ok(Ok(7))]);
/// assert_eq!(attempts.load(Ordering::SeqCst), 3);
/// ```
pub fn with_retry<T, V, E, F, Fut>(
    policy: RetryPolicy,
    f: F,
) -> impl Fn(T) -> RetryFuture<V, E> + Clone + Send + Sync + 'static
where
    T: Clone + Send + 'static,
    V: Send + 'static,
    E: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<V, E>> + Send + 'static,
{
    let f = Arc::new(f);
    let policy = Arc::new(policy);
    move |input: T| {
        let f = f.clone();
        let policy = policy.clone();
        RetryFuture(Box::pin(async move {
            let mut retry = 0;
            loop {
                match f(input.clone()).await {
                    Ok(v) => return Ok(v),
                    Err(e) if retry >= policy.max_retries => return Err(e),
                    Err(_) => {
                        crate::scheduler::count_retry_on_current_worker();
                        tokio::time::sleep(policy.wait(retry)).await;
                        retry += 1;
                    }
                }
            }
        }))
    }
}

/// The future of one call of a [`with_retry`] function.
#[must_use = "futures do nothing unless awaited"]
pub struct RetryFuture<V, E>(std::pin::Pin<Box<dyn Future<Output = Result<V, E>> + Send>>);

impl<V, E> Future for RetryFuture<V, E> {
    type Output = Result<V, E>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl<V, E> std::fmt::Debug for RetryFuture<V, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy::new(10)
            .initial_backoff(Duration::from_millis(100))
            .max_backoff(Duration::from_millis(500))
            .jitter(false);
        assert_eq!(p.backoff(0), Duration::from_millis(100));
        assert_eq!(p.backoff(1), Duration::from_millis(200));
        assert_eq!(p.backoff(3), Duration::from_millis(500));
        assert_eq!(p.wait(2), Duration::from_millis(400));
    }

    #[test]
    fn jitter_stays_within_half_to_full() {
        let p = RetryPolicy::new(1).initial_backoff(Duration::from_millis(100));
        for _ in 0..1000 {
            let w = p.wait(0);
            assert!(
                w >= Duration::from_millis(50) && w <= Duration::from_millis(100),
                "{w:?}"
            );
        }
    }
}
