//! A progress line for bulk calls: count, rate and ETA, driven by completions.
//!
//! Drawn on stderr, and only when stderr is a terminal. With the `progress` feature the line
//! is an indicatif bar; without it, a plain line redrawn at most ten times a second, with no
//! dependency beyond std. The API is the same either way.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;

/// A terminal progress line counting finished items, with rate and ETA.
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
/// assert_eq!(progress.position(), 1_000);
/// ```
#[derive(Clone, Debug)]
pub struct Progress {
    line: imp::Line,
}

impl Progress {
    /// A line for `total` items, drawn on stderr (hidden when stderr is not a terminal).
    pub fn new(total: u64) -> Progress {
        Progress {
            line: imp::Line::new(total),
        }
    }

    /// Counts `n` more finished items.
    pub fn inc(&self, n: u64) {
        self.line.inc(n);
    }

    /// Items counted so far.
    pub fn position(&self) -> u64 {
        self.line.position()
    }

    /// Sets the text after the count (for example live metrics).
    pub fn set_message(&self, msg: impl Into<String>) {
        self.line.set_message(msg.into());
    }

    /// Prints a line above the progress line without disturbing it (nothing when hidden).
    pub fn println(&self, line: impl AsRef<str>) {
        self.line.println(line.as_ref());
    }

    /// Finishes the line, leaving `msg` after it.
    pub fn finish(&self, msg: impl Into<String>) {
        self.line.finish(msg.into());
    }
}

/// The indicatif bar.
#[cfg(feature = "progress")]
mod imp {
    use indicatif::{ProgressBar, ProgressState, ProgressStyle};

    #[derive(Clone, Debug)]
    pub(super) struct Line(ProgressBar);

    impl Line {
        pub(super) fn new(total: u64) -> Line {
            let bar = ProgressBar::new(total);
            // One line of about 60 columns before the message: a short bar, and the rate as
            // a whole number with thousands separators (`20,691/s`, not `20691.3277/s`).
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:10} {pos}/{len} {rate} ETA {eta} {msg}",
            )
            .map(|s| {
                s.with_key(
                    "rate",
                    |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{}/s", super::thousands(state.per_sec() as u64));
                    },
                )
            })
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            Line(bar)
        }

        pub(super) fn inc(&self, n: u64) {
            self.0.inc(n);
        }

        pub(super) fn position(&self) -> u64 {
            self.0.position()
        }

        pub(super) fn set_message(&self, msg: String) {
            self.0.set_message(msg);
        }

        pub(super) fn println(&self, line: &str) {
            self.0.println(line);
        }

        pub(super) fn finish(&self, msg: String) {
            self.0.finish_with_message(msg);
        }
    }
}

/// The plain line: `[00:00:03] ####------ 12,345/100,000 4,115/s ETA 00:00:21 msg`.
#[cfg(not(feature = "progress"))]
mod imp {
    use std::io::{IsTerminal, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use parking_lot::Mutex;

    /// Redraws closer together than this are skipped.
    const REDRAW_EVERY: Duration = Duration::from_millis(100);

    #[derive(Clone, Debug)]
    pub(super) struct Line(Arc<Shared>);

    #[derive(Debug)]
    struct Shared {
        total: u64,
        pos: AtomicU64,
        start: Instant,
        // None when stderr is not a terminal: nothing is drawn.
        drawn: Option<Mutex<Drawn>>,
    }

    #[derive(Debug)]
    struct Drawn {
        msg: String,
        last: Option<Instant>,
        finished: bool,
    }

    impl Line {
        pub(super) fn new(total: u64) -> Line {
            let drawn = std::io::stderr().is_terminal().then(|| {
                Mutex::new(Drawn {
                    msg: String::new(),
                    last: None,
                    finished: false,
                })
            });
            Line(Arc::new(Shared {
                total,
                pos: AtomicU64::new(0),
                start: Instant::now(),
                drawn,
            }))
        }

        pub(super) fn inc(&self, n: u64) {
            self.0.pos.fetch_add(n, Ordering::Relaxed);
            self.redraw(false, |_| {});
        }

        pub(super) fn position(&self) -> u64 {
            self.0.pos.load(Ordering::Relaxed)
        }

        pub(super) fn set_message(&self, msg: String) {
            self.redraw(false, |d| d.msg = msg);
        }

        pub(super) fn println(&self, line: &str) {
            if let Some(drawn) = &self.0.drawn {
                let mut d = drawn.lock();
                // Clear the progress line, print above it, draw it again below.
                let _ = writeln!(std::io::stderr(), "\r\x1b[2K{line}");
                d.last = None;
                self.draw(&mut d, true);
            }
        }

        pub(super) fn finish(&self, msg: String) {
            self.redraw(true, |d| {
                d.msg = msg;
                d.finished = true;
            });
        }

        /// Applies `change`, then draws if forced or if the last draw is old enough.
        fn redraw(&self, force: bool, change: impl FnOnce(&mut Drawn)) {
            let Some(drawn) = &self.0.drawn else { return };
            let mut d = drawn.lock();
            if d.finished {
                return;
            }
            change(&mut d);
            self.draw(&mut d, force);
        }

        fn draw(&self, d: &mut Drawn, force: bool) {
            let now = Instant::now();
            if !force && d.last.is_some_and(|t| now.duration_since(t) < REDRAW_EVERY) {
                return;
            }
            d.last = Some(now);
            let s = &self.0;
            let pos = s.pos.load(Ordering::Relaxed);
            let line = render(pos, s.total, now.duration_since(s.start), &d.msg);
            let end = if d.finished { "\n" } else { "" };
            let _ = write!(std::io::stderr(), "\r\x1b[2K{line}{end}");
        }
    }

    /// The line for `pos` of `total` items after `elapsed`.
    pub(super) fn render(pos: u64, total: u64, elapsed: Duration, msg: &str) -> String {
        let rate = pos as f64 / elapsed.as_secs_f64().max(1e-9);
        // The rate of the first half second says little: no ETA from it.
        let eta = if pos >= total {
            hms(Duration::ZERO)
        } else if pos == 0 || elapsed < Duration::from_millis(500) {
            "--:--:--".to_string()
        } else {
            hms(Duration::from_secs_f64((total - pos) as f64 / rate))
        };
        let cells = (pos.min(total) * 10).checked_div(total).unwrap_or(10) as usize;
        format!(
            "[{}] {}{} {}/{} {}/s ETA {} {}",
            hms(elapsed),
            "#".repeat(cells),
            "-".repeat(10 - cells),
            pos,
            total,
            super::thousands(rate as u64),
            eta,
            msg,
        )
    }

    fn hms(d: Duration) -> String {
        let s = d.as_secs();
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
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

    #[cfg(not(feature = "progress"))]
    #[test]
    fn plain_line_shows_count_rate_and_eta() {
        use std::time::Duration;
        let render = super::imp::render;
        assert_eq!(
            render(250, 1_000, Duration::from_secs(2), "ok"),
            "[00:00:02] ##-------- 250/1000 125/s ETA 00:00:06 ok"
        );
        // No ETA from the first half second, none needed at the end, a full bar at 0 of 0.
        assert!(render(5, 1_000, Duration::from_millis(100), "").contains("ETA --:--:--"));
        assert!(
            render(1_000, 1_000, Duration::from_secs(3661), "")
                .starts_with("[01:01:01] ##########")
        );
        assert!(render(0, 0, Duration::from_secs(1), "").contains("########## 0/0"));
    }
}
