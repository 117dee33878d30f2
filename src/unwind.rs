//! Panics caught at the crate's boundaries (a task's `poll` and `Drop`, user hooks, the
//! monitoring callback) become values: [`panic_message`] turns a payload into the text a
//! [`TaskError::Panicked`](crate::TaskError::Panicked) carries. Everything that catches a
//! panic borrows this one helper, so no subsystem imports another just for it.

use std::any::Any;

/// The text of a panic payload, as `std` prints it.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    }
}
