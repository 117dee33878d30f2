//! A cheap per-thread pseudo-random source, for steal order and retry jitter: neither needs
//! strong randomness, and neither may read a clock or OS entropy (Miri runs isolated).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The next 64-bit xorshift value of the calling thread's generator.
pub(crate) fn next_u64() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = const { Cell::new(0) };
    }
    STATE.with(|s| {
        let mut x = s.get();
        if x == 0 {
            // Distinct per thread: a global counter mixed with the state's address.
            static THREADS: AtomicU64 = AtomicU64::new(1);
            let n = THREADS.fetch_add(1, Relaxed);
            x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (std::ptr::from_ref(s).addr() as u64) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// A uniform number in `[0, 1)`.
pub(crate) fn next_unit() -> f64 {
    (next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A number in `0..n` (`n > 0`).
pub(crate) fn next_below(n: usize) -> usize {
    (next_u64() % n as u64) as usize
}
