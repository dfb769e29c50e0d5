//! Group commit: what concurrent callers send at the same moment goes to
//! Redis in one script call.
//!
//! A single task owns the calls. It takes everything queued (up to a cap)
//! and sends it as one batch, with a few batches in flight at once; while
//! they are out, new items queue up for the next one. A lone caller therefore waits one
//! round trip, as with a direct call, and a thousand concurrent callers
//! share a handful of round trips instead of making a thousand.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};

use super::QueueError;

type Reply<O> = oneshot::Sender<Result<O, Arc<redis::RedisError>>>;

/// Batches sent before the first of them is answered. More than one keeps
/// Redis busy while callers answered by the last batch queue up again.
const MAX_IN_FLIGHT: usize = 4;

/// Hands each caller its output (or the batch's error). A caller left
/// without an output sees the batch as closed, which `submit` reports.
fn answer<O>(res: redis::RedisResult<Vec<O>>, replies: Vec<Reply<O>>) {
    match res {
        Ok(outputs) => {
            for (reply, out) in replies.into_iter().zip(outputs) {
                let _ = reply.send(Ok(out));
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// Sends items in batches through `run`, answering each caller with its
/// own item's output.
pub(crate) struct Batcher<I, O> {
    tx: mpsc::UnboundedSender<(I, Reply<O>)>,
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the batching task. `run` gets at most `max` items and must
    /// answer with one output per item, in order. The task ends when the
    /// last handle on the batcher is dropped.
    pub(crate) fn spawn<F, Fut>(max: usize, mut run: F) -> Self
    where
        F: FnMut(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = redis::RedisResult<Vec<O>>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(I, Reply<O>)>();
        tokio::spawn(async move {
            let mut queued = Vec::with_capacity(max);
            let mut in_flight = FuturesUnordered::new();
            let mut open = true;
            loop {
                tokio::select! {
                    n = rx.recv_many(&mut queued, max), if open && in_flight.len() < MAX_IN_FLIGHT => {
                        if n == 0 {
                            open = false;
                            continue;
                        }
                        let (items, replies): (Vec<I>, Vec<Reply<O>>) = queued.drain(..).unzip();
                        let call = run(items);
                        in_flight.push(async move { (call.await, replies) });
                    }
                    Some((res, replies)) = in_flight.next(), if !in_flight.is_empty() => {
                        answer(res, replies);
                    }
                    else => break,
                }
            }
        });
        Self { tx }
    }

    /// Queues `item` for the next batch and waits for its output.
    pub(crate) async fn submit(&self, item: I) -> Result<O, QueueError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((item, reply))
            .map_err(|_| QueueError::Closed)?;
        answer
            .await
            .map_err(|_| QueueError::Closed)?
            .map_err(QueueError::Batch)
    }
}
