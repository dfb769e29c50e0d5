//! The topic's life: created at start when missing, then watched, so a
//! topic that vanishes (deleted, or lost with a broker's data) is created
//! again and read from its beginning.
//!
//! Why read it again from the beginning: the group's committed offsets
//! outlive a deleted topic, and a topic created again starts at offset 0.
//! The consumer would go on at its old offsets and pass over the first
//! records of the new topic (librdkafka resets an offset only when it is
//! past the end, not when the topic under it changed). Reading from the
//! beginning delivers some records again, which the store recognises
//! (`alerts.duplicate`). A topic deleted and created again between two
//! looks of the watch (`WATCH_EVERY`) is not seen as gone.
//!
//! Crashes: librdkafka 2.12.1 dereferenced a null topic name when a broker
//! answered a fetch for a topic it no longer had with a leader hint and no
//! topic id (tansu does), and the service died of SIGSEGV. The workspace
//! builds librdkafka with a guard against it (`shared/rdkafka-sys`).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::types::RDKafkaRespErr;
use tokio::sync::watch;

/// How often the watch asks the broker whether the topic is there.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// How long one look may wait for the broker.
const LOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// What a look at the topic found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// There, with this many partitions.
    There(i32),
    /// The broker answered that it has no such topic.
    Gone,
    /// The broker did not answer: nothing can be said.
    Unknown,
}

/// Creates and watches the topic; counts it lost (`alerts_topic_lost_total`).
pub(crate) struct Keeper<'a> {
    pub(crate) consumer: Arc<StreamConsumer>,
    pub(crate) admin: AdminClient<DefaultClientContext>,
    pub(crate) topic: NewTopic<'a>,
    pub(crate) lost: Counter,
}

impl Keeper<'_> {
    /// Creates the topic unless it exists (a broker that is down is tried
    /// again by the watch).
    pub(crate) async fn ensure(&self) {
        let options = AdminOptions::new()
            .operation_timeout(Some(LOOK_TIMEOUT))
            .request_timeout(Some(LOOK_TIMEOUT));
        match self.admin.create_topics([&self.topic], &options).await {
            Ok(results) => {
                for result in results {
                    match result {
                        Ok(name) => tracing::info!(topic = %name, "topic created"),
                        Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((name, code)) => {
                            tracing::warn!(topic = %name, error = %code, "cannot create the topic")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot create the topic (is Kafka up?)"),
        }
    }

    /// Looks at the topic every [`WATCH_EVERY`] until `stopped`: a topic
    /// found gone is created again, and once it is back the group reads it
    /// from its beginning.
    pub(crate) async fn watch(&self, mut stopped: watch::Receiver<bool>) {
        let mut gone = false;
        loop {
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => return,
                () = tokio::time::sleep(WATCH_EVERY) => {}
            }
            match self.look().await {
                Found::Gone => {
                    if !gone {
                        gone = true;
                        self.lost.inc();
                        tracing::warn!(
                            topic = self.topic.name,
                            "the topic is gone (deleted, or the broker lost its data): creating it \
                             again"
                        );
                    }
                    self.ensure().await;
                }
                Found::There(partitions) if gone => {
                    gone = false;
                    self.read_from_start(partitions);
                }
                Found::There(_) | Found::Unknown => {}
            }
        }
    }

    /// Asks the broker for the topic's metadata.
    async fn look(&self) -> Found {
        let consumer = self.consumer.clone();
        let topic = self.topic.name.to_owned();
        tokio::task::spawn_blocking(move || {
            let Ok(metadata) = consumer.fetch_metadata(Some(&topic), LOOK_TIMEOUT) else {
                return Found::Unknown;
            };
            match metadata.topics().iter().find(|t| t.name() == topic) {
                None => Found::Gone,
                Some(t) => match t.error() {
                    Some(
                        RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART
                        | RDKafkaRespErr::RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC,
                    ) => Found::Gone,
                    Some(_) => Found::Unknown,
                    None if t.partitions().is_empty() => Found::Gone,
                    None => Found::There(t.partitions().len() as i32),
                },
            }
        })
        .await
        .unwrap_or(Found::Unknown)
    }

    /// Points the group at the beginning of every partition of the topic:
    /// the committed offsets (for the members that get them next) and this
    /// member's positions (for the partitions it holds).
    fn read_from_start(&self, partitions: i32) {
        let name = self.topic.name;
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            if let Err(e) = list.add_partition_offset(name, p, Offset::Offset(0)) {
                tracing::warn!(error = %e, "cannot name a partition");
            }
        }
        if let Err(e) = self.consumer.commit(&list, CommitMode::Async) {
            tracing::warn!(error = %e, "cannot reset the group's offsets");
        }
        let held = self.consumer.assignment().unwrap_or_default();
        for p in held.elements_for_topic(name) {
            if let Err(e) =
                self.consumer
                    .seek(name, p.partition(), Offset::Beginning, Duration::ZERO)
            {
                tracing::debug!(partition = p.partition(), error = %e, "cannot seek");
            }
        }
        tracing::warn!(
            topic = name,
            partitions,
            "the topic is back: reading it from its beginning (events seen before count once)"
        );
    }
}
