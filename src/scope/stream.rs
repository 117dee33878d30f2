//! `stream_process`: a lazily pulled, bounded stream of per-item tasks.
//!
//! # Bounds
//! At most `concurrency` items are in flight (spawned, their results not yet yielded), so
//! `items pulled <= items yielded + concurrency` at all times: memory is flat in the number of
//! items. The next input is pulled only when there is room, then an admission slot is waited
//! for (never rejected), then the item's task is spawned. In [`Ordered`] mode the window of
//! pulled-but-not-yielded items is `concurrency` too: a slow item at the head stops new pulls
//! rather than letting finished results pile up behind it.
//!
//! Dropping a stream cancels its in-flight tasks and pulls nothing more.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::{FuturesUnordered, Stream, StreamExt};

use super::{Scope, ScopeShared};
use crate::admission::Acquire;
use crate::error::TaskError;
use crate::registry::Shared;
use crate::task::{self, TaskHandle};
use crate::unwind::panic_message;

impl Scope {
    /// Runs `f` on every item with at most `concurrency` items in flight, each item its own
    /// pool task, pulling the input lazily. The returned [`ProcessStream`] yields results in
    /// completion order; [`ProcessStream::ordered`] gives input order, and `.await` collects
    /// every result in input order.
    ///
    /// Each item is one unit for `max_pending` (the stream waits for room, never rejects), for
    /// `task_timeout` and for the metrics. A panic, timeout or cancellation of an item is that
    /// item's `Err`; the other items go on. After shutdown begins, every further item yields
    /// `Err(TaskError::Shutdown)` without running (`Err(TaskError::Closed)` once the scope is
    /// closed).
    ///
    /// `f` runs on the thread that polls the stream, to build each item's future.
    ///
    /// # Panics
    /// If `concurrency` is 0.
    ///
    /// ```
    /// use async_rayon::{Config, Scope, ThreadPoolInner};
    /// use futures::StreamExt;
    /// use std::time::Duration;
    ///
    /// let pool = ThreadPoolInner::with_config(Config::io_bound());
    /// let scope = Scope::new(pool.clone());
    /// pool.block_on(async {
    ///     // All results, in input order.
    ///     let results = scope
    ///         .stream_process(0..1_000u64, 100, |i| async move {
    ///             tokio::time::sleep(Duration::from_millis(1)).await;
    ///             i + 1
    ///         })
    ///         .await;
    ///     assert_eq!(results[999], Ok(1_000));
    ///
    ///     // Or one at a time, as they finish.
    ///     let mut stream = scope.stream_process(0..10u64, 4, |i| Box::pin(async move { i }));
    ///     let mut sum = 0;
    ///     while let Some(r) = stream.next().await {
    ///         sum += r.expect("item ran");
    ///     }
    ///     assert_eq!(sum, 45);
    /// });
    /// ```
    pub fn stream_process<I, T, R, F, Fut>(
        &self,
        items: I,
        concurrency: usize,
        f: F,
    ) -> ProcessStream<R>
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
        T: Send + 'static,
        R: Send + 'static,
        F: FnMut(T) -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        assert!(
            concurrency > 0,
            "Scope::stream_process: concurrency must be at least 1, got 0"
        );
        self.stream_process_stream(futures::stream::iter(items), concurrency, f)
    }

    /// [`stream_process`](Self::stream_process) for an asynchronous source, such as a channel
    /// receiver: the long-running worker pool of a service. The source is polled only when
    /// there is room, so a bounded channel feeding it gives its senders backpressure.
    ///
    /// # Panics
    /// If `concurrency` is 0.
    ///
    /// ```
    /// use async_rayon::{Scope, ThreadPoolInner};
    /// use futures::StreamExt;
    ///
    /// let pool = ThreadPoolInner::new(2, Some(1_000));
    /// let scope = Scope::new(pool.clone());
    /// let (tx, rx) = tokio::sync::mpsc::channel::<u64>(16);
    /// // A producer on a plain thread, blocked by backpressure when the pool is busy.
    /// let producer = std::thread::spawn(move || {
    ///     for i in 0..100 {
    ///         tx.blocking_send(i).expect("receiver alive");
    ///     }
    /// });
    /// let source = tokio_stream_from(rx);
    /// let results = pool.block_on(scope.stream_process_stream(source, 8, |i| async move { i * 2 }));
    /// producer.join().unwrap();
    /// assert_eq!(results.len(), 100);
    /// assert_eq!(results[10], Ok(20));
    ///
    /// fn tokio_stream_from(mut rx: tokio::sync::mpsc::Receiver<u64>) -> impl futures::Stream<Item = u64> {
    ///     futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    /// }
    /// ```
    pub fn stream_process_stream<S, T, R, F, Fut>(
        &self,
        source: S,
        concurrency: usize,
        f: F,
    ) -> ProcessStream<R>
    where
        S: Stream<Item = T> + Send + 'static,
        T: Send + 'static,
        R: Send + 'static,
        F: FnMut(T) -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        assert!(
            concurrency > 0,
            "Scope::stream_process_stream: concurrency must be at least 1, got 0"
        );
        ProcessStream {
            drive: Box::new(Process {
                scope: self.shared.clone(),
                source: Box::pin(source),
                f,
                concurrency,
                acquire: None,
                pending_item: None,
                in_flight: FuturesUnordered::new(),
                next_index: 0,
                input_done: false,
                refused: None,
            }),
        }
    }
}

/// The type-erased engine behind a [`ProcessStream`].
trait Drive<R>: Send {
    /// The next finished item as `(input index, result)`. Pulls input only while its index is
    /// below `limit`, if any.
    fn poll_next_indexed(
        &mut self,
        cx: &mut Context<'_>,
        limit: Option<u64>,
    ) -> Poll<Option<(u64, Result<R, TaskError>)>>;

    /// Most items in flight at once.
    fn concurrency(&self) -> usize;
}

/// An item in flight: its input index and its task.
struct Indexed<R> {
    index: u64,
    handle: TaskHandle<R>,
}

impl<R> Future for Indexed<R> {
    type Output = (u64, Result<R, TaskError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let index = self.index;
        Pin::new(&mut self.handle).poll(cx).map(|r| (index, r))
    }
}

struct Process<S: Stream, F, R> {
    scope: Arc<ScopeShared>,
    source: Pin<Box<S>>,
    f: F,
    concurrency: usize,
    /// Waiting for an admission slot for `pending_item`.
    acquire: Option<Acquire<Arc<Shared>>>,
    /// Pulled from the source, waiting for a slot.
    pending_item: Option<S::Item>,
    in_flight: FuturesUnordered<Indexed<R>>,
    next_index: u64,
    input_done: bool,
    /// Set once admission refused (shutdown, or the scope closed): every later item gets
    /// this error.
    refused: Option<TaskError>,
}

impl<S, T, R, F, Fut> Process<S, F, R>
where
    S: Stream<Item = T>,
    F: FnMut(T) -> Fut,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    /// Pulls and spawns while there is room. Returns when the room, the source or admission
    /// says stop (having registered for a wake-up with the latter two).
    fn fill(&mut self, cx: &mut Context<'_>, limit: Option<u64>) {
        while !self.input_done
            && self.in_flight.len() < self.concurrency
            && limit.is_none_or(|l| self.next_index < l)
        {
            if self.pending_item.is_none() {
                match self.source.as_mut().poll_next(cx) {
                    Poll::Ready(Some(item)) => self.pending_item = Some(item),
                    Poll::Ready(None) => {
                        self.input_done = true;
                        return;
                    }
                    Poll::Pending => return,
                }
            }
            if self.refused.is_none() && self.scope.is_closed() {
                // Closed: refuse this item and the rest (dropping a waiting `Acquire` gives
                // back anything granted meanwhile).
                self.refused = Some(TaskError::Closed);
                self.acquire = None;
            }
            if self.refused.is_none() {
                let pool = &self.scope.pool;
                let acquire = self
                    .acquire
                    .get_or_insert_with(|| Acquire::new(pool.clone()));
                match Pin::new(acquire).poll(cx) {
                    Poll::Ready(Ok(one)) => {
                        if let Err(e) = self.scope.keep_granted(one) {
                            self.refused = Some(e.into());
                        }
                    }
                    Poll::Ready(Err(e)) => self.refused = Some(e.into()),
                    Poll::Pending => return,
                }
                self.acquire = None;
            }
            let Some(item) = self.pending_item.take() else {
                return;
            };
            let index = self.next_index;
            self.next_index += 1;
            let handle = match &self.refused {
                Some(err) => TaskHandle::refused(err.clone()),
                None => match catch_unwind(AssertUnwindSafe(|| (self.f)(item))) {
                    Ok(future) => task::spawn_admitted(&self.scope, future),
                    Err(payload) => task::fail_admitted(
                        &self.scope,
                        TaskError::Panicked(panic_message(&*payload).into()),
                    ),
                },
            };
            self.in_flight.push(Indexed { index, handle });
        }
    }
}

impl<S, T, R, F, Fut> Drive<R> for Process<S, F, R>
where
    S: Stream<Item = T> + Send,
    T: Send,
    F: FnMut(T) -> Fut + Send,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    fn poll_next_indexed(
        &mut self,
        cx: &mut Context<'_>,
        limit: Option<u64>,
    ) -> Poll<Option<(u64, Result<R, TaskError>)>> {
        self.fill(cx, limit);
        match self.in_flight.poll_next_unpin(cx) {
            Poll::Ready(Some(done)) => Poll::Ready(Some(done)),
            _ if self.input_done && self.in_flight.is_empty() => Poll::Ready(None),
            _ => Poll::Pending,
        }
    }

    fn concurrency(&self) -> usize {
        self.concurrency
    }
}

impl<S: Stream, F, R> Drop for Process<S, F, R> {
    fn drop(&mut self) {
        for item in self.in_flight.iter() {
            item.handle.cancel();
        }
    }
}

/// The results of [`Scope::stream_process`], in completion order.
///
/// A `Stream` of `Result<R, TaskError>`. `.await` it to collect every result in input order,
/// or call [`ordered`](Self::ordered) for a stream in input order. `Send + Unpin`.
///
/// **Dropping it cancels the items in flight** and pulls no more input.
#[must_use = "streams do nothing unless polled; dropping one cancels its items"]
pub struct ProcessStream<R> {
    drive: Box<dyn Drive<R>>,
}

impl<R> ProcessStream<R> {
    /// The same items in input order. At most `concurrency` items are pulled ahead of the
    /// next one to yield, so a slow item holds back new pulls rather than letting finished
    /// results pile up behind it.
    pub fn ordered(self) -> Ordered<R> {
        Ordered {
            inner: self,
            base: 0,
            buffer: VecDeque::new(),
            window: None,
        }
    }
}

impl<R> Stream for ProcessStream<R> {
    type Item = Result<R, TaskError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.drive
            .poll_next_indexed(cx, None)
            .map(|o| o.map(|(_, r)| r))
    }
}

impl<R> std::fmt::Debug for ProcessStream<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessStream").finish_non_exhaustive()
    }
}

impl<R: Send + 'static> IntoFuture for ProcessStream<R> {
    type Output = Vec<Result<R, TaskError>>;
    type IntoFuture = Collect<R>;

    /// Collects every result, in input order.
    fn into_future(self) -> Collect<R> {
        Collect {
            inner: self,
            results: Vec::new(),
        }
    }
}

/// Future that collects a [`ProcessStream`] in input order; from `.await` on the stream.
#[must_use = "futures do nothing unless awaited"]
pub struct Collect<R> {
    inner: ProcessStream<R>,
    results: Vec<Option<Result<R, TaskError>>>,
}

// Results are only moved, never pinned.
impl<R> Unpin for Collect<R> {}

impl<R> Future for Collect<R> {
    type Output = Vec<Result<R, TaskError>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match this.inner.drive.poll_next_indexed(cx, None) {
                Poll::Ready(Some((index, r))) => {
                    let i = usize::try_from(index).unwrap_or(usize::MAX);
                    if i >= this.results.len() {
                        this.results.resize_with(i + 1, || None);
                    }
                    this.results[i] = Some(r);
                }
                Poll::Ready(None) => {
                    let results = std::mem::take(&mut this.results);
                    return Poll::Ready(
                        results
                            .into_iter()
                            .map(|r| r.unwrap_or(Err(TaskError::Cancelled)))
                            .collect(),
                    );
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<R> std::fmt::Debug for Collect<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collect")
            .field("collected", &self.results.len())
            .finish_non_exhaustive()
    }
}

/// A [`ProcessStream`] in input order, from [`ProcessStream::ordered`].
#[must_use = "streams do nothing unless polled; dropping one cancels its items"]
pub struct Ordered<R> {
    inner: ProcessStream<R>,
    /// Input index of `buffer[0]`: the next result to yield.
    base: u64,
    buffer: VecDeque<Option<Result<R, TaskError>>>,
    /// Pulled-ahead bound; the stream's concurrency unless set.
    window: Option<u64>,
}

impl<R> Ordered<R> {
    /// Sets how far past the next result to yield the input may be pulled (default: the
    /// stream's `concurrency`). A wider window keeps more items in flight behind a slow one,
    /// at the cost of holding up to `window` finished results.
    ///
    /// # Panics
    /// If `window` is 0.
    pub fn window(mut self, window: usize) -> Self {
        assert!(
            window > 0,
            "Ordered::window: window must be at least 1, got 0"
        );
        self.window = Some(window as u64);
        self
    }
}

// Results are only moved, never pinned.
impl<R> Unpin for Ordered<R> {}

impl<R> Stream for Ordered<R> {
    type Item = Result<R, TaskError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(Some(_)) = this.buffer.front()
                && let Some(Some(r)) = this.buffer.pop_front()
            {
                this.base += 1;
                return Poll::Ready(Some(r));
            }
            let window = *this
                .window
                .get_or_insert(this.inner.drive.concurrency() as u64);
            match this
                .inner
                .drive
                .poll_next_indexed(cx, Some(this.base + window))
            {
                Poll::Ready(Some((index, r))) => {
                    let at = usize::try_from(index - this.base).unwrap_or(usize::MAX);
                    if at >= this.buffer.len() {
                        this.buffer.resize_with(at + 1, || None);
                    }
                    this.buffer[at] = Some(r);
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<R> std::fmt::Debug for Ordered<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ordered")
            .field("next_index", &self.base)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}
