//! The backend's middleware: records each job's outcome and frees its
//! capacity slot.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use tower_layer::Layer;
use tower_service::Service;

use super::Shared;
use super::outcome::decide;
use crate::JobLease;
use crate::JobTimedOut;

/// Middleware that records each job's outcome in the queue. apalis installs
/// it outside the user's middleware, so it sees the final result.
#[derive(Clone)]
pub struct QueueLayer {
    /// Each shard's part of the backend, by shard index.
    pub(super) shards: Arc<[Arc<Shared>]>,
}

impl std::fmt::Debug for QueueLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueLayer")
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl<S> Layer<S> for QueueLayer {
    type Service = QueueService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        QueueService {
            inner,
            shards: self.shards.clone(),
        }
    }
}

/// The service made by [`QueueLayer`].
#[derive(Clone)]
pub struct QueueService<S> {
    inner: S,
    shards: Arc<[Arc<Shared>]>,
}

impl<S> std::fmt::Debug for QueueService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueService")
            .field("shards", &self.shards.len())
            .finish()
    }
}

/// Frees the job's capacity slot however its future ends (completion,
/// panic unwinding, or the worker being dropped).
struct Slot {
    shared: Arc<Shared>,
    entry: String,
    /// The outcome waits for Redis: the entry stays held (its lease
    /// renewed) until it is recorded.
    keep_held: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.keep_held {
            self.shared.release(&self.entry);
        }
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
        self.shared.waker.wake();
    }
}

impl<S, Args, Res> Service<Task<Args>> for QueueService<S>
where
    S: Service<Task<Args>, Response = Res>,
    S::Future: Send + 'static,
    S::Error: Into<BoxDynError>,
    Res: Serialize + Send + 'static,
{
    type Response = Res;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<Res, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        let lease = task.data().get::<JobLease>().cloned();
        // The part that read the job records its outcome.
        let at = lease.as_ref().map_or(0, |l| l.shard);
        let shared = self.shards[at.min(self.shards.len() - 1)].clone();
        let mut slot = lease.as_ref().map(|l| Slot {
            shared: shared.clone(),
            entry: l.entry.clone(),
            keep_held: false,
        });
        let fut = self.inner.call(task);
        async move {
            let res = match lease.as_ref().and_then(|l| l.timeout.map(|t| (l, t))) {
                Some((lease, limit)) => {
                    let fut = std::pin::pin!(fut);
                    tokio::select! {
                        res = fut => res.map_err(Into::into),
                        () = tokio::time::sleep(limit) => {
                            // Said before the handler's future is dropped,
                            // so the layers inside can tell why.
                            lease.timed_out.store(true, Ordering::SeqCst);
                            Err(Box::new(JobTimedOut(limit)) as BoxDynError)
                        }
                    }
                }
                None => fut.await.map_err(Into::into),
            };
            if let Some(lease) = &lease {
                let outcome = decide(shared.cfg(), lease, &res);
                let settled = shared.finish(lease, outcome).await;
                if let Some(slot) = slot.as_mut() {
                    slot.keep_held = !settled;
                }
            }
            drop(slot);
            res
        }
        .boxed()
    }
}
