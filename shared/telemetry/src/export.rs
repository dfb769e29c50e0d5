//! The span pipeline between the tracer and an exporter: the SDK's batch
//! processor behind a bound of our own, so every span that is not
//! delivered is counted, by reason.
//!
//! The SDK's processor drops spans when its queue is full (a collector
//! that is down, or accepts but never answers, fills it in seconds) and
//! only logs a total at shutdown. Here a count of spans handed on and not
//! yet exported decides first: past the queue size a span is dropped and
//! counted (`queue_full`) before the SDK would have to; an export that
//! fails counts its spans (`export_failed`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor,
};

use crate::metrics::spans_dropped;

/// Spans waiting for export at most: the SDK's default queue size.
pub(crate) const MAX_QUEUED: usize = 2048;

/// A batch processor exporting with `exporter` at most every `delay`,
/// behind the bound.
pub(crate) fn bounded<E: SpanExporter + 'static>(exporter: E, delay: Duration) -> Bounded {
    bounded_with(exporter, delay, MAX_QUEUED)
}

fn bounded_with<E: SpanExporter + 'static>(exporter: E, delay: Duration, max: usize) -> Bounded {
    let queued = Arc::new(AtomicUsize::new(0));
    let batch = BatchSpanProcessor::builder(Counting {
        inner: exporter,
        queued: queued.clone(),
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_scheduled_delay(delay)
            .with_max_queue_size(max)
            .build(),
    )
    .build();
    Bounded { batch, queued, max }
}

/// The batch processor behind the bound (see the module docs).
#[derive(Debug)]
pub(crate) struct Bounded {
    batch: BatchSpanProcessor,
    /// Spans handed to the batch processor and not yet exported.
    queued: Arc<AtomicUsize>,
    max: usize,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.batch.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        // Unsampled spans are not exported: nothing to count.
        if !span.span_context.is_sampled() {
            return;
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            spans_dropped("queue_full", 1);
            return;
        }
        self.batch.on_end(keep_last(span));
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.batch.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.batch.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.batch.set_resource(resource);
    }
}

/// Keeps only the last value of a key set again after the span started:
/// a Redis span's `server.address` and `server.port` name the node a
/// redirect or a failover moved the call to (the SDK keeps both values,
/// and exporters would send both).
fn keep_last(mut span: SpanData) -> SpanData {
    use crate::attributes::{SERVER_ADDRESS, SERVER_PORT};
    for key in [SERVER_ADDRESS, SERVER_PORT] {
        let of_key = |kv: &opentelemetry::KeyValue| kv.key.as_str() == key;
        let (Some(first), Some(last)) = (
            span.attributes.iter().position(of_key),
            span.attributes.iter().rposition(of_key),
        ) else {
            continue;
        };
        if first != last {
            let mut index = 0;
            span.attributes.retain(|kv| {
                let keep = !of_key(kv) || index == last;
                index += 1;
                keep
            });
        }
    }
    span
}

/// The exporter, counting what it delivers or fails to.
#[derive(Debug)]
struct Counting<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.queued.fetch_sub(n, Ordering::AcqRel);
        if result.is_err() {
            spans_dropped("export_failed", n as u64);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{DropLabels, SPANS_DROPPED};
    use opentelemetry::trace::{Tracer, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    fn dropped(reason: &str) -> u64 {
        SPANS_DROPPED
            .get_or_create(&DropLabels {
                reason: reason.into(),
            })
            .get()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_collector_that_never_answers_costs_counted_spans_not_time() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                conns.push(conn);
            }
        });
        let exporter =
            crate::zipkin::ZipkinExporter::new(format!("http://{addr}/api/v2/spans"), "test")
                .expect("exporter");
        let before = dropped("queue_full");
        let provider = SdkTracerProvider::builder()
            .with_span_processor(bounded_with(exporter, Duration::from_millis(10), 64))
            .build();
        let tracer = provider.tracer("test");
        let started = std::time::Instant::now();
        for _ in 0..1000 {
            tracer.start("work");
        }
        let took = started.elapsed();
        // One export hangs with at most 64 spans; the rest wait or drop.
        let lost = dropped("queue_full") - before;
        assert!(lost >= 1000 - 64, "only {lost} spans counted as dropped");
        assert!(
            took < Duration::from_secs(2),
            "ending spans waited on the collector: {took:?}"
        );
        held.abort();
    }
}
