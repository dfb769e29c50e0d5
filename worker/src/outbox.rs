//! The outbox relay: sends the events of succeeded jobs from the queue's
//! outbox in Redis to Kafka, and deletes them once the broker has them.
//!
//! A job's event is written to the outbox by the script that records its
//! success (`redis_job_queue`'s `outbox.rs`), so an event is lost neither
//! when Kafka is away, however long, nor when a worker dies before sending
//! it. Every worker runs a relay; one at a time sends (it holds a lease in
//! Redis, renewed while it works), so the events go out in the order
//! their jobs succeeded, and events of one place, keyed alike, stay in
//! order on their partition. A relay that dies between the send and the
//! delete leaves its events to the next once its lease lapses: they reach
//! Kafka at least once, and the alerts service counts a repeat once.
//!
//! Each event goes out in a PRODUCER span `send weather.updated`, child of
//! the job's CONSUMER span (its context is kept with the event), with
//! `job.outbox_wait_ms`. The outbox's depth, its oldest event's age, its
//! capacity and the events dropped because it was full are gauges, read
//! from Redis every second by every worker.

use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use redis_job_queue::{OutboxEntry, OutboxStats, RedisQueue};
use telemetry::kafka::EventProducer;
use telemetry::propagation::Propagation;
use tokio::sync::watch;

/// How long the relay's lease lasts without renewal: a relay that died is
/// replaced within this.
const LEASE: Duration = Duration::from_secs(10);

/// How often the relay renews its lease while it waits for the broker.
const RENEW_EVERY: Duration = Duration::from_secs(3);

/// How long an idle relay waits before it looks at the outbox again.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// How long a relay that is not the one sending waits before it tries for
/// the lease again.
const STANDBY_POLL: Duration = Duration::from_secs(1);

/// How often the gauges are read from Redis.
const GAUGES_EVERY: Duration = Duration::from_secs(1);

/// The outbox gauges, registered with the worker's metrics.
#[derive(Debug, Clone, Default)]
pub struct OutboxGauges {
    /// `kafka_outbox_events`.
    pub depth: Gauge,
    /// `kafka_outbox_oldest_age_seconds` (ms precision, as a float).
    pub oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// `kafka_outbox_capacity`.
    pub capacity: Gauge,
    /// `kafka_outbox_dropped`: events dropped because the outbox was
    /// full, ever, all workers together (read from Redis).
    pub dropped: Gauge,
    /// `kafka_outbox_relay`: 1 while this worker's relay is the one
    /// sending.
    pub relaying: Gauge,
}

impl OutboxGauges {
    /// Registers them with the worker's metrics.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kafka_outbox_events",
            "Weather events in the queue's outbox, waiting for the relay to send them to Kafka",
            self.depth.clone(),
        );
        registry.register(
            "kafka_outbox_oldest_age_seconds",
            "How long the oldest event in the outbox has waited",
            self.oldest_age.clone(),
        );
        registry.register(
            "kafka_outbox_capacity",
            "The most events the outbox holds (KAFKA_OUTBOX_MAX per queue shard)",
            self.capacity.clone(),
        );
        registry.register(
            "kafka_outbox_dropped",
            "Weather events dropped because the outbox was full, ever, all workers together",
            self.dropped.clone(),
        );
        registry.register(
            "kafka_outbox_relay",
            "1 while this worker's relay is the one sending the outbox to Kafka",
            self.relaying.clone(),
        );
    }

    fn set(&self, stats: &OutboxStats) {
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.depth.set(int(stats.depth));
        self.oldest_age.set(stats.oldest_age.as_secs_f64());
        self.capacity.set(int(stats.capacity));
        self.dropped.set(int(stats.dropped_total));
    }
}

/// One worker's relay.
pub struct Relay {
    queue: RedisQueue,
    producer: EventProducer,
    propagation: Propagation,
    gauges: OutboxGauges,
    /// This relay's name in the lease.
    holder: String,
    /// Most events sent before their acknowledgements are awaited.
    batch: usize,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("holder", &self.holder)
            .finish()
    }
}

/// What one round of sending came to.
enum Round {
    /// The outbox was empty.
    Idle,
    /// Every event read was delivered and deleted.
    Sent,
    /// The broker did not take every event: try again after a pause.
    Failed,
}

impl Relay {
    /// A relay named `holder` sending `batch` events at a time.
    pub fn new(
        queue: RedisQueue,
        producer: EventProducer,
        propagation: Propagation,
        gauges: OutboxGauges,
        holder: String,
        batch: usize,
    ) -> Self {
        Self {
            queue,
            producer,
            propagation,
            gauges,
            holder,
            batch: batch.max(1),
        }
    }

    /// Runs until `stop` turns true; a round under way finishes first,
    /// and the lease is given up.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut gauges_read = Instant::now() - GAUGES_EVERY;
        let mut backoff = Duration::from_millis(200);
        while !*stop.borrow() {
            if gauges_read.elapsed() >= GAUGES_EVERY {
                gauges_read = Instant::now();
                match self.queue.outbox_stats().await {
                    Ok(stats) => self.gauges.set(&stats),
                    Err(e) => tracing::debug!(error = %e, "cannot read the outbox's gauges"),
                }
            }
            let pause = match self.queue.relay_lease(&self.holder, LEASE).await {
                Ok(true) => {
                    self.gauges.relaying.set(1);
                    match self.round().await {
                        Round::Sent => {
                            backoff = Duration::from_millis(200);
                            Duration::ZERO
                        }
                        Round::Idle => IDLE_POLL,
                        Round::Failed => {
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            backoff
                        }
                    }
                }
                Ok(false) => {
                    self.gauges.relaying.set(0);
                    STANDBY_POLL
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the outbox relay cannot reach Redis");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
            };
            if !pause.is_zero() {
                let _ = tokio::time::timeout(pause, stop.changed()).await;
            }
        }
        if let Err(e) = self.queue.relay_release(&self.holder).await {
            tracing::debug!(error = %e, "could not give up the relay's lease");
        }
        self.gauges.relaying.set(0);
    }

    /// Sends the oldest events, in order, and deletes those the broker
    /// took, up to the first it did not (the rest go again next round, so
    /// none overtakes an earlier one).
    async fn round(&self) -> Round {
        let entries = match self.queue.outbox_read(self.batch).await {
            Ok(entries) if entries.is_empty() => return Round::Idle,
            // Up to a batch from each shard, merged: the oldest batch of
            // them fits the producer's buffer.
            Ok(mut entries) => {
                entries.truncate(self.batch);
                entries
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox");
                return Round::Failed;
            }
        };
        // How long each waited: this host's clock against the time Redis
        // stamped the event with (a host whose clock is off shows it here,
        // in the span attribute only; nothing is decided on it).
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let sends: Vec<_> = entries
            .iter()
            .map(|e| self.send(e, Duration::from_millis(now_ms.saturating_sub(e.at_ms))))
            .collect();
        let Some(results) = self.await_keeping_the_lease(sends).await else {
            tracing::warn!(
                "the relay lost its lease while waiting for Kafka; another relay goes on"
            );
            return Round::Failed;
        };
        let delivered = results.iter().take_while(|r| r.is_ok()).count();
        if delivered > 0
            && let Err(e) = self.queue.outbox_remove(&entries[..delivered]).await
        {
            // Sent, not deleted: sent again later, and counted once by
            // the alerts service.
            tracing::warn!(error = %e, "cannot delete sent events from the outbox");
            return Round::Failed;
        }
        match results.iter().find_map(|r| r.as_ref().err()) {
            None => Round::Sent,
            Some(error) => {
                tracing::warn!(
                    error.type = %error,
                    sent = delivered,
                    left = entries.len() - delivered,
                    "Kafka did not take every event; the rest stay in the outbox"
                );
                Round::Failed
            }
        }
    }

    fn send(
        &self,
        entry: &OutboxEntry,
        waited: Duration,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + use<> {
        let event = &entry.event;
        let parent = self
            .propagation
            .extract_job(event.context.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.producer.send(
            &parent,
            &event.key,
            &event.job_id,
            event.payload.as_bytes(),
            waited,
        )
    }

    /// Awaits every send, renewing the lease meanwhile; `None` if the
    /// lease went to another relay.
    async fn await_keeping_the_lease<F>(&self, sends: Vec<F>) -> Option<Vec<Result<(), String>>>
    where
        F: std::future::Future<Output = Result<(), String>>,
    {
        let all = futures::future::join_all(sends);
        tokio::pin!(all);
        loop {
            tokio::select! {
                results = &mut all => return Some(results),
                () = tokio::time::sleep(RENEW_EVERY) => {
                    if let Ok(false) = self.queue.relay_lease(&self.holder, LEASE).await {
                        return None;
                    }
                }
            }
        }
    }
}
