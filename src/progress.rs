//! A progress bar for bulk calls (feature `progress`): rate and ETA, driven by completions.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};

/// A terminal progress bar counting finished items, with rate and ETA.
///
/// ```
/// use async_rayon::progress::{Progress, ProgressStreamExt};
/// use async_rayon::{Scope, ThreadPoolInner};
/// use futures::StreamExt;
///
/// let pool = ThreadPoolInner::new(2, None);
/// let scope = Scope::new(pool.clone());
/// let progress = Progress::new(1_000);
/// let results: Vec<_> = pool.block_on(
///     scope
///         .stream_process(0..1_000u64, 64, |i| async move { i })
///         .with_progress(&progress)
///         .collect(),
/// );
/// progress.finish("done");
/// assert_eq!(results.len(), 1_000);
/// ```
#[derive(Clone, Debug)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar for `total` items, drawn on stderr (hidden when stderr is not a terminal).
    pub fn new(total: u64) -> Progress {
        let bar = ProgressBar::new(total);
        // One line of about 60 columns before the message: a short bar, and the rate as a
        // whole number with thousands separators (`20,691/s`, not `20691.3277/s`).
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:10} {pos}/{len} {rate} ETA {eta} {msg}",
        )
        .map(|s| {
            s.with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}/s", thousands(state.per_sec() as u64));
                },
            )
        })
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        Progress { bar }
    }

    /// Counts `n` more finished items.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Items counted so far.
    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    /// Sets the text after the bar (for example live metrics).
    pub fn set_message(&self, msg: impl Into<String>) {
        self.bar.set_message(msg.into());
    }

    /// Prints a line above the bar without disturbing it.
    pub fn println(&self, line: impl AsRef<str>) {
        self.bar.println(line);
    }

    /// Finishes the bar, leaving `msg` after it.
    pub fn finish(&self, msg: impl Into<String>) {
        self.bar.finish_with_message(msg.into());
    }
}

/// Counts each item of a stream on a [`Progress`]; from [`ProgressStreamExt::with_progress`].
#[must_use = "streams do nothing unless polled"]
#[derive(Debug)]
pub struct WithProgress<S> {
    inner: S,
    progress: Progress,
}

impl<S: Stream + Unpin> Stream for WithProgress<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(_)) = &polled {
            self.progress.inc(1);
        }
        polled
    }
}

/// Adds [`with_progress`](Self::with_progress) to every `Unpin` stream, such as a
/// [`ProcessStream`](crate::ProcessStream).
pub trait ProgressStreamExt: Stream + Unpin + Sized {
    /// Counts each item on `progress` as it is yielded.
    fn with_progress(self, progress: &Progress) -> WithProgress<Self> {
        WithProgress {
            inner: self,
            progress: progress.clone(),
        }
    }
}

impl<S: Stream + Unpin> ProgressStreamExt for S {}

/// `n` with a comma between each group of three digits: `20691` -> `20,691`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_groups_digits() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(20_691), "20,691");
        assert_eq!(super::thousands(1_234_567), "1,234,567");
    }
}
