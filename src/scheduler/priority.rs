//! [`Priority`]: the lane a scope's tasks are queued in (the pick rule is in `worker.rs`).

/// The lane a scope's tasks wait in before a worker runs them.
///
/// A worker picking its next task looks at the lanes in the order High, Normal, Low, except
/// on a fixed share of its picks that goes to Normal or Low first, so a lane that is never
/// empty cannot starve the others (`scheduler/README.md`, "Queues and priority lanes"). A priority
/// orders only the wait in the queues: a running task is never preempted, and a task
/// woken again is queued in its scope's lane once more.
///
/// [`Scope::new`] and [`ThreadPoolInner::scope`] make `Normal` scopes;
/// [`ThreadPoolInner::scope_with_priority`] chooses; a child scope has its parent's.
///
/// [`Scope::new`]: crate::Scope::new
/// [`ThreadPoolInner::scope`]: crate::ThreadPoolInner::scope
/// [`ThreadPoolInner::scope_with_priority`]: crate::ThreadPoolInner::scope_with_priority
///
/// ```
/// use async_rayon::{Priority, ThreadPoolInner};
///
/// let pool = ThreadPoolInner::new(2, None);
/// let urgent = pool.scope_with_priority(Priority::High);
/// let bulk = pool.scope_with_priority(Priority::Low);
/// assert_eq!(urgent.child().priority(), Priority::High);
/// let done = bulk.spawn_with_handle(async { 1 });
/// assert_eq!(pool.block_on(urgent.spawn_with_handle(async { 2 })), Ok(2));
/// assert_eq!(pool.block_on(done), Ok(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Priority {
    /// Picked before Normal and Low, except on the two picks in eight reserved for them.
    High,
    /// The default, and the cheapest path: a worker's own deque and the injector.
    #[default]
    Normal,
    /// Picked when High and Normal are empty, and first on one pick in eight.
    Low,
}
