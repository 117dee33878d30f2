//! The task's allocation: its header, metadata, schedule function and future (or output) in
//! one block, and the `Runnable` / `Task` pair that share it.
//!
//! This is async-task 4.7.1 (by Stjepan Glavina and contributors, Apache-2.0 OR MIT; see
//! its repository `smol-rs/async-task`), carried here for one change: the block is taken
//! from and given back to [`cache`], a per-thread cache of task-sized blocks, instead of
//! the global allocator on every spawn. Everything else is its code as published, less the
//! `no_std` and `portable-atomic` variants (this crate always has `std`) and with its doc
//! examples kept as text. See `cache.rs` for why.
//!
//! The lints this crate applies to its own unsafe code (`unsafe_op_in_unsafe_fn`, a
//! `SAFETY` comment per block) are not applied here: the code is kept as upstream wrote
//! it, so that upstream fixes can be compared and carried over line by line.

#![allow(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    dead_code,
    missing_docs,
    clippy::all
)]

/// We can't use `?` in const contexts yet, so this macro acts
/// as a workaround.
macro_rules! leap {
    ($x: expr) => {{
        match ($x) {
            Some(val) => val,
            None => return None,
        }
    }};
}

macro_rules! leap_unwrap {
    ($x: expr) => {{
        match ($x) {
            Some(val) => val,
            None => panic!("called `Option::unwrap()` on a `None` value"),
        }
    }};
}

pub(crate) mod cache;
mod header;
#[allow(clippy::module_inception)]
mod raw;
mod runnable;
mod state;
mod task;
mod utils;

#[cfg(test)]
pub(crate) use self::raw::block_size as raw_block_size;
pub(crate) use self::runnable::{Builder, Runnable};
pub(crate) use self::task::Task;
