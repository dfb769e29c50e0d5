//! The outbox: a job's event is kept with its success, in the order jobs
//! succeed, bounded, and handed to one relay at a time; on one server and
//! on a Redis Cluster, with the queue in one shard and in three.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use redis_job_queue::{
    JobLease, JobStatus, NewJob, OutboxEntry, OutboxEvent, QueueConfig, RedisQueue,
};
use serde::{Deserialize, Serialize};
use testkit::{RedisCluster, RedisServer, wait_for_job};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    n: u64,
}

/// The job ids in the order their handler succeeded.
#[derive(Clone, Default)]
struct Succeeded(Arc<Mutex<Vec<String>>>);

impl Succeeded {
    fn push(&self, id: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.push(id.to_owned());
        }
    }
}

/// Publishes an event keyed `place:{n % 3}` on every attempt; odd jobs
/// fail their first attempt (whose event must not be kept).
async fn with_event(
    job: Job,
    lease: Data<JobLease>,
    succeeded: Data<Succeeded>,
) -> Result<u64, BoxDynError> {
    lease.publish_on_success(OutboxEvent {
        key: format!("place:{}", job.n % 3),
        job_id: lease.id.clone(),
        payload: format!(r#"{{"n":{},"attempt":{}}}"#, job.n, lease.attempt),
        context: BTreeMap::from([(
            "traceparent".to_owned(),
            format!("00-{:032x}-{:016x}-01", job.n + 1, 7),
        )]),
    });
    if job.n % 2 == 1 && lease.attempt == 1 {
        return Err("first attempts of odd jobs fail".into());
    }
    succeeded.push(&lease.id);
    Ok(job.n)
}

enum Backing {
    Server(#[allow(dead_code)] RedisServer),
    Cluster(#[allow(dead_code)] RedisCluster),
}

async fn queue(
    cluster: bool,
    shards: u16,
    tune: impl FnOnce(&mut QueueConfig),
) -> (Backing, RedisQueue) {
    let (backing, url) = if cluster {
        let c = RedisCluster::start(3, 0).await.expect("start a cluster");
        let url = c.url();
        (Backing::Cluster(c), url)
    } else {
        let s = RedisServer::start().await.expect("start redis-server");
        let url = s.url();
        (Backing::Server(s), url)
    };
    let mut cfg = QueueConfig::new("outbox");
    cfg.block_timeout = Duration::from_millis(200);
    cfg.retry_backoff = Duration::from_millis(50);
    cfg.shards = shards;
    tune(&mut cfg);
    let queue = RedisQueue::connect(&url, cfg).await.expect("connect");
    (backing, queue)
}

/// Runs the jobs `0..n` one at a time (so they succeed in a known
/// order) until each is done; answers their ids in the order they
/// succeeded.
async fn run_jobs(queue: &RedisQueue, n: u64) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            queue
                .push(NewJob::new(&Job { n: i }).expect("encode"))
                .await
                .expect("push"),
        );
    }
    let succeeded = Succeeded::default();
    let worker = WorkerBuilder::new("outbox-worker")
        .backend(queue.backend::<Job>(1))
        .data(succeeded.clone())
        .build(with_event);
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
        Ok::<(), std::io::Error>(())
    }));
    for id in &ids {
        let read = || async { Ok(queue.status(id).await?) };
        wait_for_job(id, "succeeded", Duration::from_secs(20), read, |r| {
            r.as_ref()
                .is_some_and(|r: &redis_job_queue::JobRecord| r.status == JobStatus::Succeeded)
        })
        .await
        .expect("the job succeeds");
    }
    let _ = stop.send(());
    handle.await.expect("worker task").expect("worker stopped");
    succeeded.0.lock().expect("lock").clone()
}

/// Reads and removes the whole outbox, `limit` per read.
async fn drain(queue: &RedisQueue, limit: usize) -> Vec<OutboxEntry> {
    let mut all = Vec::new();
    for _ in 0..10_000 {
        let page = queue.outbox_read(limit).await.expect("read the outbox");
        if page.is_empty() {
            return all;
        }
        queue.outbox_remove(&page).await.expect("remove");
        all.extend(page);
    }
    panic!("the outbox never emptied");
}

macro_rules! on_every_topology {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn one_server() {
                super::$name(false, 1).await
            }

            #[tokio::test]
            async fn one_server_three_shards() {
                super::$name(false, 3).await
            }

            #[tokio::test]
            #[ignore = "a Redis Cluster per test: .ci/run runs these (cargo test -- --ignored)"]
            async fn cluster_three_shards() {
                super::$name(true, 3).await
            }
        }
    )+};
}

on_every_topology!(
    each_success_keeps_its_event_in_the_order_jobs_succeeded,
    a_full_outbox_drops_the_event_and_counts_it_and_the_job_still_succeeds,
    one_relay_at_a_time_holds_the_lease,
);

async fn each_success_keeps_its_event_in_the_order_jobs_succeeded(cluster: bool, shards: u16) {
    let (_redis, queue) = queue(cluster, shards, |_| {}).await;
    let succeeded = run_jobs(&queue, 30).await;
    let stats = queue.outbox_stats().await.expect("stats");
    assert_eq!(
        stats.depth, 30,
        "one event per job, none of a failed attempt: {stats:?}"
    );
    assert!(stats.oldest_age < Duration::from_secs(60), "{stats:?}");
    assert_eq!(stats.capacity, 100_000 * u64::from(shards));

    // Read three at a time: a shard's full page must not let a later
    // event of it pass an unread earlier one of another shard.
    let read = drain(&queue, 3).await;
    let ids: Vec<&str> = read.iter().map(|e| e.event.job_id.as_str()).collect();
    assert_eq!(ids.len(), 30, "each event once: {ids:?}");
    assert!(
        read.windows(2).all(|w| w[0].at_ms <= w[1].at_ms),
        "in the order their jobs succeeded, by the servers' clock"
    );
    if shards == 1 {
        assert_eq!(ids, succeeded, "one shard: exactly the order of success");
    } else {
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        let mut expected: Vec<&str> = succeeded.iter().map(String::as_str).collect();
        expected.sort_unstable();
        assert_eq!(sorted, expected);
    }
    for e in &read {
        let n: u64 =
            serde_json::from_str::<serde_json::Value>(&e.event.payload).expect("json")["n"]
                .as_u64()
                .expect("n");
        assert_eq!(e.event.key, format!("place:{}", n % 3));
        assert!(
            e.event
                .payload
                .contains(&format!(r#""attempt":{}"#, if n % 2 == 1 { 2 } else { 1 })),
            "the succeeding attempt's event: {}",
            e.event.payload
        );
        assert_eq!(
            e.event.context["traceparent"],
            format!("00-{:032x}-{:016x}-01", n + 1, 7)
        );
    }
    let stats = queue.outbox_stats().await.expect("stats");
    assert_eq!(
        (stats.depth, stats.oldest_age),
        (0, Duration::ZERO),
        "{stats:?}"
    );
}

async fn a_full_outbox_drops_the_event_and_counts_it_and_the_job_still_succeeds(
    cluster: bool,
    shards: u16,
) {
    // One event per shard fits.
    let (_redis, queue) = queue(cluster, shards, |c| c.outbox_max = 1).await;
    let succeeded = run_jobs(&queue, 12).await;
    assert_eq!(succeeded.len(), 12, "every job succeeded");
    let stats = queue.outbox_stats().await.expect("stats");
    assert!(
        stats.depth <= u64::from(shards) && stats.depth >= 1,
        "{stats:?}"
    );
    assert_eq!(
        stats.depth + stats.dropped_total,
        12,
        "kept or counted: {stats:?}"
    );
    // Room again: the next success keeps its event.
    drain(&queue, 10).await;
    run_jobs(&queue, 1).await;
    let stats = queue.outbox_stats().await.expect("stats");
    assert_eq!(stats.depth, 1, "{stats:?}");
}

async fn one_relay_at_a_time_holds_the_lease(cluster: bool, shards: u16) {
    let (_redis, queue) = queue(cluster, shards, |_| {}).await;
    let ttl = Duration::from_millis(300);
    assert!(queue.relay_lease("a", ttl).await.expect("lease"));
    assert!(
        !queue.relay_lease("b", ttl).await.expect("lease"),
        "a holds it"
    );
    assert!(
        queue.relay_lease("a", ttl).await.expect("lease"),
        "a renews it"
    );
    queue.relay_release("b").await.expect("release");
    assert!(
        !queue.relay_lease("b", ttl).await.expect("lease"),
        "only its holder gives it up"
    );
    queue.relay_release("a").await.expect("release");
    assert!(
        queue.relay_lease("b", ttl).await.expect("lease"),
        "given up: b takes it"
    );
    // b dies: once the lease lapses, a takes over.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !queue.relay_lease("a", ttl).await.expect("lease") {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
