//! Task identifiers.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A task's identifier, unique among all tasks of all pools in this process.
///
/// ```
/// use async_rayon::{Scope, ThreadPoolInner};
///
/// let scope = Scope::new(ThreadPoolInner::new(1, None));
/// let a = scope.spawn_with_handle(async {});
/// let b = scope.spawn_with_handle(async {});
/// assert_ne!(a.id(), b.id());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(u64);

/// Ids are handed to threads in blocks so that spawning does not write a shared counter.
const BLOCK: u64 = 1024;
static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// (next id, end of this thread's block)
    static RANGE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

impl TaskId {
    pub(crate) fn next() -> TaskId {
        RANGE.with(|r| {
            let (mut next, mut end) = r.get();
            if next == end {
                next = NEXT_BLOCK.fetch_add(1, Relaxed) * BLOCK;
                end = next + BLOCK;
            }
            r.set((next + 1, end));
            TaskId(next)
        })
    }

    pub(crate) fn from_u64(id: u64) -> TaskId {
        TaskId(id)
    }

    /// The id as a number.
    pub fn as_u64(&self) -> u64 {
        self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task-{}", self.0)
    }
}
