//! The Redis queue and its apalis backend, against a real `redis-server`
//! and a real Redis Cluster, with the queue in one shard and in three.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use apalis_core::error::{AbortError, BoxDynError, WorkerError};
use apalis_core::task::data::Data;
use apalis_core::task::metadata::MetadataStore;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use redis_job_queue::{
    Defer, GeoBox, JobLease, JobQuery, JobStatus, LOW_LANE_EVERY, NewJob, Order, Priority,
    QueueConfig, RedisConnection, RedisQueue, TextPrefix, shard_of, shard_tags,
};
use serde::{Deserialize, Serialize};
use testkit::{RedisCluster, RedisServer, wait_for_job};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    n: u64,
}

/// Where a test's queue lives: one `redis-server` or a Redis Cluster (three
/// masters), with the queue in one shard or three.
#[derive(Clone, Copy, Debug)]
struct Topology {
    cluster: bool,
    shards: u16,
}

/// Runs each named test (an `async fn(Topology)`) four times, as tests of
/// its own name: on one server and on a cluster, each with one shard and
/// with three (`cargo test pushed_jobs_run_once` runs all four).
///
/// The cluster runs start a cluster each, which doubles the suite's time:
/// they are left out of a plain `cargo test` (and `scripts/test`), and
/// `.ci/run` runs them (`cargo test --workspace --test queue --
/// --ignored`), as anyone may.
macro_rules! on_every_topology {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::Topology;

            #[tokio::test]
            async fn one_server() {
                super::$name(Topology { cluster: false, shards: 1 }).await
            }

            #[tokio::test]
            async fn one_server_three_shards() {
                super::$name(Topology { cluster: false, shards: 3 }).await
            }

            #[tokio::test]
            #[ignore = "a Redis Cluster per test: .ci/run runs these (cargo test -- --ignored)"]
            async fn cluster() {
                super::$name(Topology { cluster: true, shards: 1 }).await
            }

            #[tokio::test]
            #[ignore = "a Redis Cluster per test: .ci/run runs these (cargo test -- --ignored)"]
            async fn cluster_three_shards() {
                super::$name(Topology { cluster: true, shards: 3 }).await
            }
        }
    )*};
}

/// The Redis a test runs against, stopped when the test ends.
enum Backing {
    Server(RedisServer),
    Cluster(RedisCluster),
}

/// One Redis and one queue per test, so tests run in parallel.
struct Fixture {
    redis: Backing,
    queue: RedisQueue,
}

impl Fixture {
    async fn new(topology: Topology, tune: impl FnOnce(&mut QueueConfig)) -> Fixture {
        let redis = if topology.cluster {
            // No replicas: failover has its own tests (tests/shards.rs).
            Backing::Cluster(RedisCluster::start(3, 0).await.expect("start a cluster"))
        } else {
            Backing::Server(RedisServer::start().await.expect("start redis-server"))
        };
        Self::on(redis, topology.shards, tune).await
    }

    async fn on(redis: Backing, shards: u16, tune: impl FnOnce(&mut QueueConfig)) -> Fixture {
        let mut cfg = QueueConfig::new("test");
        cfg.block_timeout = Duration::from_millis(200);
        cfg.shards = shards;
        tune(&mut cfg);
        let url = match &redis {
            Backing::Server(server) => server.url(),
            Backing::Cluster(cluster) => cluster.url(),
        };
        let queue = RedisQueue::connect(&url, cfg)
            .await
            .expect("connect to the queue");
        Fixture { redis, queue }
    }

    fn shards(&self) -> u16 {
        self.queue.config().shards.max(1)
    }

    /// The key `suffix` (`stream`, `job:{id}`, ...) of the shard that holds
    /// job `id`: `jobs:{test}:stream` with one shard.
    fn key(&self, id: &str, suffix: &str) -> String {
        let tags = shard_tags("test", self.shards());
        let shard = shard_of(id, tags.len());
        format!("jobs:{{{}}}:{suffix}", tags[shard])
    }

    /// The key `suffix` of every shard.
    fn every_shards_key(&self, suffix: &str) -> Vec<String> {
        shard_tags("test", self.shards())
            .iter()
            .map(|tag| format!("jobs:{{{tag}}}:{suffix}"))
            .collect()
    }

    async fn push(&self, n: u64) -> String {
        self.queue
            .push(NewJob::new(&Job { n }).expect("encode"))
            .await
            .expect("push")
    }

    async fn wait_status(
        &self,
        id: &str,
        want: JobStatus,
        limit: Duration,
    ) -> redis_job_queue::JobRecord {
        let read = || async { Ok(self.queue.status(id).await?) };
        let reached = |rec: &Option<redis_job_queue::JobRecord>| {
            rec.as_ref().is_some_and(|r| r.status == want)
        };
        wait_for_job(id, &format!("reaching {want:?}"), limit, read, reached)
            .await
            .expect("the job reaches the status")
            .expect("a job in a status has a record")
    }

    /// The server, for a test that stops it.
    fn server(&mut self) -> &mut RedisServer {
        match &mut self.redis {
            Backing::Server(server) => server,
            Backing::Cluster(_) => unreachable!("this test runs on one server"),
        }
    }

    /// A connection that sends each command to the node holding its key.
    fn redis_conn(&self) -> RedisConnection {
        self.queue.connection()
    }
}

on_every_topology!(
    a_backlog_of_jobs_drains_with_none_lost_or_run_twice,
    pushed_jobs_run_once_and_store_their_results,
    metadata_travels_with_the_job,
    a_killed_workers_job_is_reclaimed_by_another_after_the_lease,
    a_consumer_that_left_with_a_job_pending_is_reaped_from_the_group,
    an_entry_another_consumer_claimed_before_the_start_is_not_started,
    a_worker_never_reclaims_a_job_it_is_still_running,
    delayed_jobs_run_no_earlier_than_asked,
    failures_retry_with_backoff_then_fail_for_good,
    a_deferred_run_is_no_attempt_until_the_job_was_deferred_the_most_allowed,
    status_and_results_expire_after_the_retention,
    stats_match_what_is_in_the_queue,
    a_delay_past_any_date_is_refused_not_a_panic,
    a_hung_handler_times_out_and_is_retried_by_the_policy,
    a_duplicate_id_is_refused_and_the_first_job_kept,
    an_undecodable_payload_fails_the_job_without_stopping_the_worker,
    a_malformed_job_hash_written_into_redis_fails_and_the_worker_carries_on,
    a_graceful_stop_finishes_running_jobs_and_leaves_the_rest_queued,
    a_retried_job_sees_what_its_previous_attempt_carried_over,
    listings_page_through_every_job_once_even_when_times_tie,
    waiting_high_jobs_start_before_normal_ones_and_low_ones_never_starve,
    a_job_keeps_its_lane_when_delayed_retried_reclaimed_or_redriven,
    a_batch_lists_its_jobs_in_order_for_as_long_as_they_may_be_kept,
    a_paused_queue_starts_nothing_and_its_running_jobs_finish,
    a_search_finds_jobs_by_what_they_hold_and_their_status_now,
    a_search_pages_through_many_jobs_once_each_and_forgets_expired_ones,
);

/// A worker running in the background.
struct Running {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<Result<(), WorkerError>>,
}

impl Running {
    /// Graceful stop: in-flight jobs finish, unstarted ones are handed back.
    async fn stop(self) {
        let _ = self.stop.send(());
        self.handle
            .await
            .expect("worker task")
            .expect("worker ended cleanly");
    }

    /// Simulates a crash: the worker vanishes without telling Redis.
    fn kill(self) {
        self.handle.abort();
    }
}

macro_rules! spawn_worker {
    ($queue:expr, $concurrency:expr, $handler:expr) => {
        spawn_worker!($queue, $concurrency, $handler, ())
    };
    ($queue:expr, $concurrency:expr, $handler:expr, $data:expr) => {{
        let worker = WorkerBuilder::new("test-worker")
            .backend($queue.backend::<Job>($concurrency))
            .data($data)
            .build($handler);
        let (stop, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(worker.run_until(async move {
            let _ = rx.await;
            Ok::<(), std::io::Error>(())
        }));
        Running { stop, handle }
    }};
}

/// What handlers saw, shared with the test.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Run>>>);

#[derive(Clone, Debug)]
struct Run {
    id: String,
    n: u64,
    attempt: u32,
    at: SystemTime,
    metadata: BTreeMap<String, String>,
}

impl Seen {
    fn record(&self, job: &Job, lease: &JobLease, meta: &MetadataStore) {
        let run = Run {
            id: lease.id.clone(),
            n: job.n,
            attempt: lease.attempt,
            at: SystemTime::now(),
            metadata: meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        self.0.lock().expect("lock").push(run);
    }

    fn runs(&self) -> Vec<Run> {
        self.0.lock().expect("lock").clone()
    }
}

async fn record_and_double(
    job: Job,
    lease: Data<JobLease>,
    meta: MetadataStore,
    seen: Data<Seen>,
) -> Result<u64, BoxDynError> {
    seen.record(&job, &lease, &meta);
    Ok(job.n * 2)
}

async fn pushed_jobs_run_once_and_store_their_results(topology: Topology) {
    let fx = Fixture::new(topology, |_| {}).await;
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(fx.push(n).await);
    }
    let seen = Seen::default();
    let worker = spawn_worker!(fx.queue, 4, record_and_double, seen.clone());

    for (n, id) in ids.iter().enumerate() {
        let rec = fx
            .wait_status(id, JobStatus::Succeeded, Duration::from_secs(10))
            .await;
        assert_eq!(rec.result, Some(serde_json::json!(n as u64 * 2)));
        assert_eq!(rec.attempts, 1);
        assert_eq!(rec.payload, serde_json::json!({ "n": n }));
        assert!(rec.error.is_none());
        assert!(rec.finished_at_ms >= rec.started_at_ms);
    }
    let stats = fx.queue.stats().await.expect("stats");
    assert_eq!((stats.waiting, stats.in_flight), (0, 0), "{stats:?}");
    assert_eq!(stats.enqueued_total, 20);
    assert_eq!(stats.succeeded_total, 20);
    let mut ran: Vec<String> = seen.runs().into_iter().map(|r| r.id).collect();
    ran.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(ran, want, "each job ran exactly once");
    worker.stop().await;
    assert_eq!(fx.queue.stats().await.expect("stats").live_consumers, 0);
}

async fn metadata_travels_with_the_job(topology: Topology) {
    let fx = Fixture::new(topology, |_| {}).await;
    let carrier = [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", "vendor=opaque,other=1"),
        ("baggage", "user.id=42,tenant=acme%20corp"),
    ];
    let job = NewJob::new(&Job { n: 7 })
        .expect("encode")
        .with_metadata_map(carrier);
    let id = fx.queue.push(job).await.expect("push");
    let before = fx.queue.status(&id).await.expect("status").expect("record");
    let seen = Seen::default();
    let worker = spawn_worker!(fx.queue, 1, record_and_double, seen.clone());
    fx.wait_status(&id, JobStatus::Succeeded, Duration::from_secs(10))
        .await;
    worker.stop().await;

    let runs = seen.runs();
    assert_eq!(runs.len(), 1);
    let meta = &runs[0].metadata;
    for (k, v) in carrier {
        assert_eq!(meta.get(k).map(String::as_str), Some(v), "metadata key {k}");
    }
    assert_eq!(meta.get("job.attempt").map(String::as_str), Some("1"));
    assert_eq!(
        meta.get("job.enqueued_at_ms"),
        Some(&before.enqueued_at_ms.to_string())
    );
    assert_eq!(
        before.metadata.len(),
        3,
        "the stored record keeps the carrier too"
    );
}

async fn a_killed_workers_job_is_reclaimed_by_another_after_the_lease(topology: Topology) {
    let fx = Fixture::new(topology, |c| c.lease = Duration::from_secs(1)).await;
    let id = fx.push(1).await;

    // The first worker takes the job and hangs in it, then dies.
    async fn hang(_job: Job) -> Result<u64, BoxDynError> {
        std::future::pending::<()>().await;
        Ok(0)
    }
    let doomed = spawn_worker!(fx.queue, 1, hang);
    let running = fx
        .wait_status(&id, JobStatus::Running, Duration::from_secs(10))
        .await;
    let doomed_consumer = running.worker.clone().expect("worker recorded");
    doomed.kill();

    let seen = Seen::default();
    let rescuer = spawn_worker!(fx.queue, 1, record_and_double, seen.clone());
    let done = fx
        .wait_status(&id, JobStatus::Succeeded, Duration::from_secs(15))
        .await;
    let first = running.started_at_ms.expect("first attempt started");
    let second = done.started_at_ms.expect("second attempt started");
    // The lease runs from delivery, which can precede the recorded start
    // by a round trip: allow 10 ms of that.
    assert!(
        second + 10 >= first + 1000,
        "reclaimed {} ms after the first start, before the 1 s lease ran out",
        second - first
    );
    assert_eq!(done.attempts, 2);
    assert_ne!(done.worker.as_deref(), Some(doomed_consumer.as_str()));
    let runs = seen.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].attempt, 2, "the handler sees the second attempt");
    rescuer.stop().await;
}

/// Delivers the next waiting entry of job `id`'s shard to `consumer`, as
/// its read would; answers the entry id.
async fn deliver_to(fx: &Fixture, id: &str, consumer: &str) -> String {
    let mut conn = fx.redis_conn();
    let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg(consumer)
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(fx.key(id, "stream"))
        .arg(">")
        .query_async(&mut conn)
        .await
        .expect("XREADGROUP");
    read.keys[0].ids[0].id.clone()
}

/// The consumers the group of job `id`'s shard has, with what each holds.
async fn group_consumers(fx: &Fixture, id: &str) -> Vec<(String, u64)> {
    let mut conn = fx.redis_conn();
    let info: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(fx.key(id, "stream"))
        .arg("workers")
        .query_async(&mut conn)
        .await
        .expect("XINFO CONSUMERS");
    info.consumers
        .into_iter()
        .map(|c| (c.name, c.pending as u64))
        .collect()
}

async fn a_consumer_that_left_with_a_job_pending_is_reaped_from_the_group(topology: Topology) {
    let fx = Fixture::new(topology, |c| c.lease = Duration::from_millis(300)).await;
    let id = fx.push(1).await;
    // A consumer takes the job and leaves the live set without finishing
    // it (what an interrupted shutdown leaves behind).
    deliver_to(&fx, &id, "ghost").await;
    assert_eq!(
        group_consumers(&fx, &id).await,
        vec![("ghost".to_owned(), 1)]
    );

    // A live worker reclaims the job after the lease and runs it...
    let seen = Seen::default();
    let worker = spawn_worker!(fx.queue, 1, record_and_double, seen.clone());
    fx.wait_status(&id, JobStatus::Succeeded, Duration::from_secs(10))
        .await;
    // ...and the ghost, holding nothing and silent for three leases, is
    // deleted from the group.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let consumers = group_consumers(&fx, &id).await;
        if consumers.iter().all(|(name, _)| name != "ghost") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ghost consumer stays in the group: {consumers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.stop().await;
    assert!(
        group_consumers(&fx, &id).await.is_empty(),
        "a worker that stops leaves the group"
    );
}

async fn an_entry_another_consumer_claimed_before_the_start_is_not_started(topology: Topology) {
    let fx = Fixture::new(topology, |_| {}).await;
    let id = fx.push(1).await;
    let mut conn = fx.redis_conn();
    // Consumer A's blocking read delivers the entry...
    let entry = deliver_to(&fx, &id, "a").await;
    // ...but before A starts it (a stall longer than the lease), B claims it.
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(fx.key(&id, "stream"))
        .arg("workers")
        .arg("b")
        .arg(0)
        .arg(&entry)
        .query_async(&mut conn)
        .await
        .expect("XCLAIM");
    // The start script, as A's backend calls it after a blocking read.
    let start = redis::Script::new(concat!(
        include_str!("../src/lua/now.lua"),
        include_str!("../src/lua/lanes.lua"),
        include_str!("../src/lua/start.lua"),
        include_str!("../src/lua/start_read.lua")
    ));
    let started: Vec<redis::Value> = start
        .key(fx.key(&id, "stream"))
        .key(fx.key(&id, "failed"))
        .key(fx.key(&id, "stats"))
        .key(fx.key(&id, "stream:high"))
        .key(fx.key(&id, "stream:low"))
        .arg(fx.key(&id, "job:"))
        .arg("workers")
        .arg("a")
        .arg(3600)
        .arg(&entry)
        .arg(&id)
        .invoke_async(&mut conn)
        .await
        .expect("start script");
    assert!(started.is_empty(), "A started a job B owns: {started:?}");
    let record = fx.queue.status(&id).await.expect("status").expect("record");
    assert_eq!(record.status, JobStatus::Queued);
    assert_eq!(record.attempts, 0, "no attempt was counted");
}

async fn a_worker_never_reclaims_a_job_it_is_still_running(topology: Topology) {
    let fx = Fixture::new(topology, |c| c.lease = Duration::from_millis(600)).await;
    let id = fx.push(1).await;
    let starts = Arc::new(std::sync::atomic::AtomicU32::new(0));
    async fn hang(
        _job: Job,
        starts: Data<Arc<std::sync::atomic::AtomicU32>>,
    ) -> Result<u64, BoxDynError> {
        starts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::pending::<()>().await;
        Ok(0)
    }
    // Two slots, so the worker keeps reading (and reclaiming) while the
    // job runs.
    let worker = spawn_worker!(fx.queue, 2, hang, starts.clone());
    let running = fx
        .wait_status(&id, JobStatus::Running, Duration::from_secs(10))
        .await;
    let consumer = running.worker.expect("worker recorded");
    let mut conn = fx.redis_conn();
    let pending: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(fx.key(&id, "stream"))
        .arg("workers")
        .arg("-")
        .arg("+")
        .arg(1)
        .query_async(&mut conn)
        .await
        .expect("XPENDING");
    let entry = pending.ids[0].id.clone();
    // Its lease looks lapsed (as after a Redis outage longer than the
    // lease) until the worker's own reclaim scan has claimed the entry
    // (the scan counts a delivery; heartbeats and this XCLAIM do not).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(fx.key(&id, "stream"))
            .arg("workers")
            .arg(&consumer)
            .arg(0)
            .arg(&entry)
            .arg("IDLE")
            .arg(60_000)
            .arg("JUSTID")
            .query_async(&mut conn)
            .await
            .expect("XCLAIM");
        let pending: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(fx.key(&id, "stream"))
            .arg("workers")
            .arg("-")
            .arg("+")
            .arg(1)
            .query_async(&mut conn)
            .await
            .expect("XPENDING");
        if pending.ids[0].times_delivered >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never scanned for lapsed leases"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A restart would follow the claim at once, in the same read.
    let settle = Instant::now() + Duration::from_secs(1);
    while starts.load(std::sync::atomic::Ordering::SeqCst) < 2 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        starts.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the worker restarted the job it was running"
    );
    let rec = fx.queue.status(&id).await.expect("status").expect("record");
    assert_eq!(
        (rec.status, rec.attempts),
        (JobStatus::Running, 1),
        "{rec:?}"
    );
    worker.kill();
}

/// 100,000 jobs on one unsharded server (the layout apalis-redis crashed
/// on past about 8,000); 20,000 on the other layouts, which the same code
/// drains shard by shard.
async fn a_backlog_of_jobs_drains_with_none_lost_or_run_twice(topology: Topology) {
    let fx = Fixture::new(topology, |_| {}).await;
    let jobs: u64 = if topology.cluster || topology.shards > 1 {
        20_000
    } else {
        100_000
    };
    let batch: Vec<NewJob> = (0..jobs)
        .map(|n| NewJob::new(&Job { n }).expect("encode"))
        .collect();
    let pushed: HashSet<String> = batch.iter().map(|j| j.id().to_owned()).collect();
    let added = fx.queue.push_batch(batch).await.expect("push batch");
    assert!(added.iter().all(|a| *a));
    assert_eq!(fx.queue.stats().await.expect("stats").waiting, jobs);

    #[derive(Clone, Default)]
    struct Counts(Arc<Mutex<HashMap<String, u32>>>);
    async fn count(
        _job: Job,
        lease: Data<JobLease>,
        counts: Data<Counts>,
    ) -> Result<(), BoxDynError> {
        let counts: &Counts = &counts;
        *counts
            .0
            .lock()
            .expect("lock")
            .entry(lease.id.clone())
            .or_default() += 1;
        Ok(())
    }
    let counts = Counts::default();
    let a = spawn_worker!(fx.queue, 64, count, counts.clone());
    let b = spawn_worker!(fx.queue, 64, count, counts.clone());

    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let stats = fx.queue.stats().await.expect("stats");
        if stats.succeeded_total == jobs && stats.in_flight == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "backlog not drained: {stats:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.stop().await;
    b.stop().await;

    let counts = counts.0.lock().expect("lock").clone();
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c != 1).collect();
    assert!(
        twice.is_empty(),
        "jobs run more than once: {:?}",
        &twice[..twice.len().min(5)]
    );
    let ran: HashSet<String> = counts.into_keys().collect();
    assert_eq!(ran.len() as u64, jobs);
    assert!(ran == pushed, "the ids run are not the ids pushed");
    let stats = fx.queue.stats().await.expect("stats");
    assert_eq!(
        (stats.waiting, stats.in_flight, stats.failed),
        (0, 0, 0),
        "{stats:?}"
    );
}

async fn delayed_jobs_run_no_earlier_than_asked(topology: Topology) {
    let fx = Fixture::new(topology, |_| {}).await;
    let seen = Seen::default();
    let worker = spawn_worker!(fx.queue, 4, record_and_double, seen.clone());
    let mut wanted = HashMap::new();
    for (n, delay_ms) in [(1u64, 1500u64), (2, 600), (3, 0)] {
        let at = SystemTime::now() + Duration::from_millis(delay_ms);
        let id = fx
            .queue
            .push(NewJob::new(&Job { n }).expect("encode").run_at(at))
            .await
            .expect("push");
        wanted.insert(id, at);
    }
    let stats = fx.queue.stats().await.expect("stats");
    assert_eq!(stats.delayed, 2, "two jobs wait for their time: {stats:?}");
    for id in wanted.keys() {
        fx.wait_status(id, JobStatus::Succeeded, Duration::from_secs(10))
            .await;
    }
    worker.stop().await;
    for run in seen.runs() {
        let at = wanted[&run.id];
        // The queue keeps time in whole milliseconds of the server's clock.
        assert!(
            run.at + Duration::from_millis(1) >= at,
            "job {} ran {:?} early",
            run.n,
            at.duration_since(run.at)
        );
        let late = run.at.duration_since(at).unwrap_or_default();
        // Promotion looks every 250 ms; the bound leaves room for a loaded
        // machine (the 100k-job test runs beside this one).
        assert!(
            late < Duration::from_secs(3),
            "job {} ran {late:?} late",
            run.n
        );
    }
    let order: Vec<u64> = seen.runs().iter().map(|r| r.n).collect();
    assert_eq!(order, vec![3, 2, 1]);
}

async fn failures_retry_with_backoff_then_fail_for_good(topology: Topology) {
    let fx = Fixture::new(topology, |c| {
        c.max_attempts = 3;
        c.retry_backoff = Duration::from_millis(100);
    })
    .await;
    // n = 0: fails once then succeeds; n = 1: always fails; n = 2: aborts.
    async fn flaky(job: Job, lease: Data<JobLease>) -> Result<u64, BoxDynError> {
        match (job.n, lease.attempt) {
            (0, 1) => Err("upstream timed out".into()),
            (0, _) => Ok(10),
            (1, a) => Err(format!("still broken (attempt {a})").into()),
            _ => Err(AbortError::new("unknown place \"Atlantis\"").into()),
        }
    }
    let recovers = fx.push(0).await;
    let broken = fx.push(1).await;
    let aborted = fx.push(2).await;
    let worker = spawn_worker!(fx.queue, 2, flaky);

    let rec = fx
        .wait_status(&recovers, JobStatus::Succeeded, Duration::from_secs(10))
        .await;
    assert_eq!((rec.attempts, rec.result), (2, Some(serde_json::json!(10))));
    assert!(rec.error.is_none(), "a success clears the earlier error");

    let rec = fx
        .wait_status(&broken, JobStatus::Failed, Duration::from_secs(10))
        .await;
    assert_eq!(rec.attempts, 3);
    assert_eq!(rec.error.as_deref(), Some("still broken (attempt 3)"));

    let rec = fx
        .wait_status(&aborted, JobStatus::Failed, Duration::from_secs(10))
        .await;
    assert_eq!(rec.attempts, 1, "an aborted job is not retried");
    assert_eq!(rec.error.as_deref(), Some("unknown place \"Atlantis\""));
    worker.stop().await;

    let stats = fx.queue.stats().await.expect("stats");
    assert_eq!(stats.failed, 2, "{stats:?}");
    assert_eq!(stats.failed_total, 2);
    assert_eq!(stats.retried_total, 3, "one retry for n=0, two for n=1");
    assert_eq!(stats.succeeded_total, 1);
}

async fn a_deferred_run_is_no_attempt_until_the_job_was_deferred_the_most_allowed(
    topology: Topology,
) {
    let fx = Fixture::new(topology, |c| {
        c.max_attempts = 1;
        c.max_defer = Duration::from_secs(2);
    })
    .await;
    // n = 0: deferred three times (200 ms each), then runs; n = 1: always
    // deferred (300 ms each), so its seventh refusal passes the 2 s bound.
    async fn refused(job: Job, lease: Data<JobLease>) -> Result<u32, BoxDynError> {
        match job.n {
            0 if lease.deferred < Duration::from_millis(600) => {
                Err(Defer::new("breaker open", Duration::from_millis(200)).into())
            }
            0 => Ok(lease.attempt),
            _ => Err(Defer::new("breaker still open", Duration::from_millis(300)).into()),
        }
    }
    let recovers = fx.push(0).await;
    let refused_for_ever = fx.push(1).await;
    let worker = spawn_worker!(fx.queue, 2, refused);

    let rec = fx
        .wait_status(&recovers, JobStatus::Succeeded, Duration::from_secs(10))
        .await;
    assert_eq!(
        (
            rec.attempts,
            rec.result.clone(),
            rec.deferrals,
            rec.deferred_ms
        ),
        (1, Some(serde_json::json!(1)), 3, 600),
        "three deferrals, and its one attempt left: {rec:?}"
    );
    assert_eq!(rec.deferred_reason.as_deref(), Some("breaker open"));
    assert!(rec.error.is_none(), "a deferral is no error: {rec:?}");

    let rec = fx
        .wait_status(
            &refused_for_ever,
            JobStatus::Failed,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        (rec.attempts, rec.deferrals, rec.deferred_ms),
        (1, 6, 1800),
        "{rec:?}"
    );
    let error = rec.error.unwrap_or_default();
    assert!(
        error.starts_with("breaker still open (counted as an attempt"),
        "{error}"
    );
    worker.stop().await;
    let stats = fx.queue.stats().await.expect("stats");
    assert_eq!(
        (stats.deferred_total, stats.retried_total),
        (9, 0),
        "{stats:?}"
    );
}

async fn status_and_results_expire_after_the_retention(topology: Topology) {
    let fx = Fixture::new(topology, |c| {
        c.retention = Duration::from_secs(1);
        c.max_attempts = 1;
    })
    .await;
    async fn half_fail(job: Job) -> Result<u64, BoxDynError> {
        if job.n.is_multiple_of(2) {
            Ok(job.n)
        } else {
            Err("odd".into())
        }
    }
    let ids = [fx.push(0).await, fx.push(1).await];
    let worker = spawn_worker!(fx.queue, 2, half_fail);
    fx.wait_status(&ids[0], JobStatus::Succeeded, Duration::from_secs(10))
        .await;
    fx.wait_status(&ids[1], JobStatus::Failed, Duration::from_secs(10))
        .await;
    worker.stop().await;

    // Finished records expire one retention (1 s) after they finish.
    for id in &ids {
        let read = || async { Ok(fx.queue.status(id).await?) };
        wait_for_job(
            id,
            "expired",
            Duration::from_secs(10),
            read,
            Option::is_none,
        )
        .await
        .expect("the job outlives the retention");
    }
    let mut conn = fx.redis_conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("keys");
    let job_keys: Vec<&String> = keys.iter().filter(|k| k.contains(":job:")).collect();
    assert!(job_keys.is_empty(), "job records left: {job_keys:?}");
    for stream in fx.every_shards_key("stream") {
        let stream_len: u64 = redis::cmd("XLEN")
            .arg(&stream)
            .query_async(&mut conn)
            .await
            .expect("xlen");
        assert_eq!(
            stream_len, 0,
            "finished entries are deleted from the stream {stream}"
        );
    }
    assert_eq!(
        fx.queue.stats().await.expect("stats").failed,
        0,
        "the failed index honours the retention"
    );
}

async fn a_paused_queue_starts_nothing_and_its_running_jobs_finish(topology: Topology) {
    let fx = Fixture::new(topology, |_| {}).await;
    let release = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(std::sync::atomic::AtomicU64::new(0));
    async fn gated(
        job: Job,
        gate: Data<(Arc<tokio::sync::Notify>, Arc<std::sync::atomic::AtomicU64>)>,
    ) -> Result<u64, BoxDynError> {
        let (release, started) = &*gate;
        started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if job.n < 2 {
            release.notified().await;
        }
        Ok(job.n)
    }
    let data = (release.clone(), started.clone());
    // Two workers, one job at a time each.
    let workers = [
        spawn_worker!(fx.queue, 1, gated, data.clone()),
        spawn_worker!(fx.queue, 1, gated, data.clone()),
    ];
    let running = [fx.push(0).await, fx.push(1).await];
    let deadline = Instant::now() + Duration::from_secs(10);
    while fx.queue.stats().await.expect("stats").in_flight < 2 {
        assert!(Instant::now() < deadline, "the two jobs never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let since = fx.queue.pause().await.expect("pause");
    assert_eq!(fx.queue.paused_since().await.expect("state"), Some(since));
    assert_eq!(
        fx.queue.pause().await.expect("again"),
        since,
        "the first time is kept"
    );
    let mut waiting = Vec::new();
    for n in 2..7 {
        waiting.push(fx.push(n).await);
    }
    let due = NewJob::new(&Job { n: 7 })
        .expect("encode")
        .run_after(Duration::from_millis(300));
    waiting.push(fx.queue.push(due).await.expect("push"));
    // The running jobs finish.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fx.queue.stats().await.expect("stats").succeeded_total < 2 {
        release.notify_waiters();
        assert!(Instant::now() < deadline, "the running jobs never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &running {
        fx.wait_status(id, JobStatus::Succeeded, Duration::from_secs(5))
            .await;
    }
    // Then nothing starts, the delayed job's time come and gone included:
    // two workers free, six jobs waiting, for a second and a half.
    let watch_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < watch_until {
        let stats = fx.queue.stats().await.expect("stats");
        assert!(stats.paused, "{stats:?}");
        assert_eq!(stats.in_flight, 0, "a job started while paused: {stats:?}");
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in &waiting {
        let record = fx.queue.status(id).await.expect("status").expect("kept");
        assert!(
            matches!(record.status, JobStatus::Queued | JobStatus::Scheduled),
            "{id}: {:?}",
            record.status
        );
    }

    // Resumed: every waiting job runs.
    fx.queue.resume().await.expect("resume");
    assert_eq!(fx.queue.paused_since().await.expect("state"), None);
    for id in &waiting {
        fx.wait_status(id, JobStatus::Succeeded, Duration::from_secs(10))
            .await;
    }
    assert_eq!(
        started.load(std::sync::atomic::Ordering::SeqCst),
        8,
        "each job once"
    );
    for worker in workers {
        worker.stop().await;
    }
}

async fn stats_match_what_is_in_the_queue(topology: Topology) {
    let fx = Fixture::new(topology, |c| c.max_attempts = 1).await;
    let release = Arc::new(tokio::sync::Notify::new());
    async fn gated(job: Job, gate: Data<Arc<tokio::sync::Notify>>) -> Result<u64, BoxDynError> {
        gate.notified().await;
        if job.n == 0 {
            Err("boom".into())
        } else {
            Ok(job.n)
        }
    }
    for n in 0..5 {
        fx.push(n).await;
    }
    for n in 5..8 {
        let job = NewJob::new(&Job { n })
            .expect("encode")
            .run_after(Duration::from_secs(3600));
        fx.queue.push(job).await.expect("push");
    }
    let worker = spawn_worker!(fx.queue, 2, gated, release.clone());

    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let s = fx.queue.stats().await.expect("stats");
        if s.in_flight == 2 && s.live_consumers == 1 {
            break s;
        }
        assert!(Instant::now() < deadline, "worker never took 2 jobs: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(stats.waiting, 3, "{stats:?}");
    assert_eq!(stats.delayed, 3, "{stats:?}");
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert_eq!(stats.enqueued_total, 8, "{stats:?}");
    let consumers = fx.queue.consumers().await.expect("consumers");
    assert_eq!(consumers.len(), 1, "{consumers:?}");
    assert!(consumers[0].live, "{consumers:?}");
    assert_eq!(consumers[0].in_flight, 2, "the two running jobs");
    assert!(consumers[0].heartbeat_age_ms < 30_000, "{consumers:?}");

    // Let all five immediate jobs through; job 0 fails.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = loop {
        release.notify_waiters();
        let s = fx.queue.stats().await.expect("stats");
        if s.succeeded_total + s.failed_total == 5 {
            break s;
        }
        assert!(Instant::now() < deadline, "jobs did not finish: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (stats.waiting, stats.in_flight, stats.delayed),
        (0, 0, 3),
        "{stats:?}"
    );
    assert_eq!((stats.failed, stats.succeeded_total), (1, 4), "{stats:?}");
    let failed = fx.queue.failed_jobs(10).await.expect("failed jobs");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].payload, serde_json::json!({ "n": 0 }));
    assert_eq!(failed[0].error.as_deref(), Some("boom"));
    assert_eq!(
        fx.queue.consumers().await.expect("consumers")[0].in_flight,
        0
    );
    worker.stop().await;
    assert_eq!(fx.queue.stats().await.expect("stats").live_consumers, 0);
    assert!(
        fx.queue.consumers().await.expect("consumers").is_empty(),
        "a consumer that stopped leaves the list"
    );
}

async fn a_delay_past_any_date_is_refused_not_a_panic(topology: Topology) {
    let fx = Fixture::new(topology, |_| {}).await;
    let job = NewJob::new(&Job { n: 1 })
        .expect("encode")
        .run_after(Duration::MAX);
    let err = fx.queue.push(job).await.expect_err("refused");
    assert!(err.to_string().contains("run_after"), "{err}");
    let jobs = vec![
        NewJob::new(&Job { n: 2 }).expect("encode"),
        NewJob::new(&Job { n: 3 })
            .expect("encode")
            .run_after(Duration::MAX),
    ];
    fx.queue
        .push_batch(jobs)
        .await
        .expect_err("the batch is refused whole");
    assert_eq!(fx.queue.stats().await.expect("stats").enqueued_total, 0);
}

async fn a_hung_handler_times_out_and_is_retried_by_the_policy(topology: Topology) {
    let fx = Fixture::new(topology, |c| {
        c.job_timeout = Some(Duration::from_millis(300));
        c.max_attempts = 2;
        c.retry_backoff = Duration::from_millis(50);
    })
    .await;
    async fn hangs_unless_quick(job: Job) -> Result<u64, BoxDynError> {
        if job.n == 0 {
            std::future::pending::<()>().await;
        }
        Ok(job.n)
    }
    let hung = fx.push(0).await;
    // Its own limit, longer than the queue's: it finishes in time.
    let slow = fx
        .queue
        .push(
            NewJob::new(&Job { n: 1 })
                .expect("encode")
                .timeout(Duration::from_secs(30)),
        )
        .await
        .expect("push");
    let worker = spawn_worker!(fx.queue, 2, hangs_unless_quick);
    let rec = fx
        .wait_status(&hung, JobStatus::Failed, Duration::from_secs(10))
        .await;
    assert_eq!(rec.attempts, 2, "timed out, retried, timed out: {rec:?}");
    assert!(
        rec.error
            .as_deref()
            .unwrap_or_default()
            .contains("timeout of 300ms"),
        "{rec:?}"
    );
    let ran = rec.finished_at_ms.unwrap_or(0) - rec.enqueued_at_ms;
    assert!(ran < 5_000, "cut short, not held forever: {ran} ms");
    fx.wait_status(&slow, JobStatus::Succeeded, Duration::from_secs(10))
        .await;
    worker.stop().await;
}

async fn a_duplicate_id_is_refused_and_the_first_job_kept(topology: Topology) {
    let fx = Fixture::new(topology, |_| {}).await;
    let first = NewJob::new(&Job { n: 1 })
        .expect("encode")
        .with_id("order-42");
    fx.queue.push(first).await.expect("first push");
    let second = NewJob::new(&Job { n: 2 })
        .expect("encode")
        .with_id("order-42");
    let err = fx
        .queue
        .push(second)
        .await
        .expect_err("second push must be refused");
    assert!(err.to_string().contains("order-42"), "{err}");
    let rec = fx
        .queue
        .status("order-42")
        .await
        .expect("status")
        .expect("record");
    assert_eq!(rec.payload, serde_json::json!({ "n": 1 }));
    assert_eq!(fx.queue.stats().await.expect("stats").waiting, 1);
}

async fn an_undecodable_payload_fails_the_job_without_stopping_the_worker(topology: Topology) {
    let fx = Fixture::new(topology, |_| {}).await;
    let bad = fx
        .queue
        .push(NewJob::new(&serde_json::json!({ "wrong": true })).expect("encode"))
        .await
        .expect("push");
    let good = fx.push(3).await;
    let seen = Seen::default();
    let worker = spawn_worker!(fx.queue, 1, record_and_double, seen.clone());
    let rec = fx
        .wait_status(&bad, JobStatus::Failed, Duration::from_secs(10))
        .await;
    assert!(
        rec.error
            .as_deref()
            .unwrap_or_default()
            .contains("do not decode"),
        "{rec:?}"
    );
    fx.wait_status(&good, JobStatus::Succeeded, Duration::from_secs(10))
        .await;
    worker.stop().await;
}

async fn a_malformed_job_hash_written_into_redis_fails_and_the_worker_carries_on(
    topology: Topology,
) {
    let fx = Fixture::new(topology, |_| {}).await;
    // A record with neither an attempt budget nor numbers that parse, and
    // its stream entry, as a careless script might write them.
    let mut conn = fx.redis_conn();
    let _: () = redis::cmd("HSET")
        .arg(fx.key("hand-written", "job:hand-written"))
        .arg("status")
        .arg("queued")
        .arg("attempts")
        .arg("many")
        .arg("payload")
        .arg(r#"{"n":1}"#)
        .query_async(&mut conn)
        .await
        .expect("HSET");
    let _: String = redis::cmd("XADD")
        .arg(fx.key("hand-written", "stream"))
        .arg("*")
        .arg("id")
        .arg("hand-written")
        .query_async(&mut conn)
        .await
        .expect("XADD");
    let good = fx.push(3).await;
    let seen = Seen::default();
    let worker = spawn_worker!(fx.queue, 1, record_and_double, seen.clone());
    fx.wait_status(&good, JobStatus::Succeeded, Duration::from_secs(10))
        .await;
    let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(fx.key("hand-written", "job:hand-written"))
        .query_async(&mut conn)
        .await
        .expect("HGETALL");
    assert_eq!(
        fields.get("status").map(String::as_str),
        Some("failed"),
        "{fields:?}"
    );
    assert!(
        fields.get("error").is_some_and(|e| e.contains("malformed")),
        "{fields:?}"
    );
    assert_eq!(seen.runs().len(), 1, "only the good job ran");
    worker.stop().await;
}

async fn a_graceful_stop_finishes_running_jobs_and_leaves_the_rest_queued(topology: Topology) {
    let fx = Fixture::new(topology, |_| {}).await;
    // The job runs until the worker is told to stop, then finishes.
    async fn until_stopping(job: Job, worker: WorkerContext) -> Result<u64, BoxDynError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !worker.is_shutting_down() {
            if Instant::now() > deadline {
                return Err("the worker was never told to stop".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(job.n)
    }
    let worker = spawn_worker!(fx.queue, 1, until_stopping);
    let first = fx.push(1).await;
    fx.wait_status(&first, JobStatus::Running, Duration::from_secs(10))
        .await;
    let second = fx.push(2).await;
    let stopping = tokio::spawn(worker.stop());
    stopping.await.expect("stop");
    fx.wait_status(&first, JobStatus::Succeeded, Duration::from_secs(5))
        .await;
    let rec = fx
        .queue
        .status(&second)
        .await
        .expect("status")
        .expect("record");
    assert_eq!(
        (rec.status, rec.attempts),
        (JobStatus::Queued, 0),
        "{rec:?}"
    );
    let stats = fx.queue.stats().await.expect("stats");
    assert_eq!(
        (stats.waiting, stats.in_flight, stats.live_consumers),
        (1, 0, 0),
        "{stats:?}"
    );
}

async fn a_retried_job_sees_what_its_previous_attempt_carried_over(topology: Topology) {
    let fx = Fixture::new(topology, |c| c.retry_backoff = Duration::from_millis(50)).await;
    async fn carry(
        _job: Job,
        lease: Data<JobLease>,
        meta: MetadataStore,
    ) -> Result<String, BoxDynError> {
        if lease.attempt == 1 {
            lease.carry_to_next_attempt("previous", "attempt-1");
            return Err("try again".into());
        }
        Ok(format!(
            "{}+{}",
            meta.get("previous").unwrap_or("none"),
            meta.get("tenant").unwrap_or("none")
        ))
    }
    let id = fx
        .queue
        .push(
            NewJob::new(&Job { n: 1 })
                .expect("encode")
                .with_metadata("tenant", "acme"),
        )
        .await
        .expect("push");
    let worker = spawn_worker!(fx.queue, 1, carry);
    let rec = fx
        .wait_status(&id, JobStatus::Succeeded, Duration::from_secs(10))
        .await;
    worker.stop().await;
    assert_eq!(rec.attempts, 2);
    assert_eq!(rec.result, Some(serde_json::json!("attempt-1+acme")));
    assert_eq!(
        rec.metadata.get("previous").map(String::as_str),
        Some("attempt-1")
    );
}

/// A handler that records its run, then waits for the test's go.
async fn record_then_wait(
    job: Job,
    lease: Data<JobLease>,
    meta: MetadataStore,
    seen_and_gate: Data<(Seen, Arc<tokio::sync::Semaphore>)>,
) -> Result<u64, BoxDynError> {
    let (seen, gate) = &*seen_and_gate;
    seen.record(&job, &lease, &meta);
    let _ = gate.acquire().await.map(|p| p.forget());
    Ok(job.n * 2)
}

/// On one server, stopped and restarted, with one shard and three. (A
/// cluster's nodes fail one at a time: tests/shards.rs kills a master
/// under load.)
mod jobs_finishing_while_redis_is_down_past_the_lease_are_recorded_once_it_is_back {
    #[tokio::test]
    async fn one_server() {
        super::jobs_finishing_while_redis_is_down_past_the_lease_are_recorded_once_it_is_back(1)
            .await
    }

    #[tokio::test]
    async fn one_server_three_shards() {
        super::jobs_finishing_while_redis_is_down_past_the_lease_are_recorded_once_it_is_back(3)
            .await
    }
}

async fn jobs_finishing_while_redis_is_down_past_the_lease_are_recorded_once_it_is_back(
    shards: u16,
) {
    let lease = Duration::from_secs(1);
    let redis = RedisServer::start_persistent()
        .await
        .expect("start redis-server");
    let mut fx = Fixture::on(Backing::Server(redis), shards, |c| c.lease = lease).await;
    let seen = Seen::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(fx.push(n).await);
    }
    let workers = [
        spawn_worker!(fx.queue, 4, record_then_wait, (seen.clone(), gate.clone())),
        spawn_worker!(fx.queue, 4, record_then_wait, (seen.clone(), gate.clone())),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.runs().len() < ids.len() {
        assert!(Instant::now() < deadline, "jobs never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Redis goes away while the jobs run; they finish during the outage,
    // which lasts three leases (the outage's length is what is tested).
    fx.server().stop().await.expect("stop redis");
    // Enough for a second run of each, so a job run twice shows as such.
    gate.add_permits(ids.len() * 2);
    tokio::time::sleep(lease * 3).await;
    fx.server().restart().await.expect("restart redis");

    for id in &ids {
        let rec = fx
            .wait_status(id, JobStatus::Succeeded, Duration::from_secs(20))
            .await;
        assert_eq!(rec.attempts, 1, "{id} ran again: {rec:?}");
    }
    // Leases lapsed during the outage must not hand the jobs out again
    // once Redis is back: give the readers time to look (two leases).
    tokio::time::sleep(lease * 2).await;
    let runs = seen.runs();
    assert_eq!(
        runs.len(),
        ids.len(),
        "every job ran exactly once: {runs:?}"
    );
    for w in workers {
        w.stop().await;
    }
}

async fn listings_page_through_every_job_once_even_when_times_tie(topology: Topology) {
    let fx = Fixture::new(topology, |_| {}).await;
    // One push script: the same server time, so the same run time.
    let jobs: Vec<NewJob> = (0..5)
        .map(|n| {
            NewJob::new(&Job { n })
                .expect("encode")
                .run_after(Duration::from_secs(600))
        })
        .collect();
    fx.queue.push_batch(jobs).await.expect("push");
    let queued = [fx.push(10).await, fx.push(11).await, fx.push(12).await];

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = fx
            .queue
            .list(JobStatus::Scheduled, cursor.as_deref(), 2)
            .await
            .expect("list");
        pages += 1;
        assert!(page.jobs.len() <= 2);
        seen.extend(page.jobs.iter().map(|j| j.id.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 10, "the listing does not end");
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (5, 5), "{seen:?}");

    // Queued jobs list oldest first (shard after shard, with shards).
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let page = fx
            .queue
            .list(JobStatus::Queued, cursor.as_deref(), 2)
            .await
            .expect("list");
        assert!(page.jobs.len() <= 2);
        listed.extend(page.jobs.iter().map(|j| j.id.clone()));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert!(cursor.is_none(), "the listing does not end");
    let mut by_shard: Vec<&String> = queued.iter().collect();
    by_shard.sort_by_key(|id| shard_of(id, usize::from(fx.shards())));
    assert_eq!(listed.iter().collect::<Vec<_>>(), by_shard, "oldest first");
    assert!(
        fx.queue
            .list(JobStatus::Queued, Some("not a cursor"), 2)
            .await
            .is_err(),
        "a malformed cursor is an error"
    );
}

/// What a handler saw of each job: its id, number and lane, in run order.
#[derive(Clone, Default)]
struct Lanes(Arc<Mutex<Vec<(String, u64, Priority)>>>);

impl Lanes {
    fn record(&self, job: &Job, lease: &JobLease) {
        self.0
            .lock()
            .expect("lock")
            .push((lease.id.clone(), job.n, lease.priority()));
    }

    fn runs(&self) -> Vec<(u64, Priority)> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, n, p)| (*n, *p))
            .collect()
    }

    /// The runs of the jobs of each of `shards` shards, in run order.
    fn runs_by_shard(&self, shards: u16) -> Vec<Vec<(u64, Priority)>> {
        let mut out = vec![Vec::new(); usize::from(shards.max(1))];
        let count = out.len();
        for (id, n, p) in self.0.lock().expect("lock").iter() {
            out[shard_of(id, count)].push((*n, *p));
        }
        out
    }
}

async fn record_lane(
    job: Job,
    lease: Data<JobLease>,
    lanes: Data<Lanes>,
) -> Result<u64, BoxDynError> {
    lanes.record(&job, &lease);
    Ok(job.n)
}

fn with_priority(n: u64, priority: Priority) -> NewJob {
    NewJob::new(&Job { n })
        .expect("encode")
        .with_priority(priority)
}

async fn waiting_high_jobs_start_before_normal_ones_and_low_ones_never_starve(topology: Topology) {
    let fx = Fixture::new(topology, |_| {}).await;
    // The low and normal jobs were there first; the high ones come last.
    let mut jobs: Vec<NewJob> = (0..40).map(|n| with_priority(n, Priority::Low)).collect();
    jobs.extend((100..140).map(|n| with_priority(n, Priority::Normal)));
    jobs.extend((200..220).map(|n| with_priority(n, Priority::High)));
    fx.queue.push_batch(jobs).await.expect("push");
    let stats = fx.queue.stats().await.expect("stats");
    assert_eq!(
        (stats.waiting, stats.waiting_high, stats.waiting_low),
        (100, 20, 40),
        "{stats:?}"
    );
    let page = fx
        .queue
        .list(JobStatus::Queued, None, 1)
        .await
        .expect("list");
    assert_eq!(
        page.jobs[0].priority,
        Priority::High,
        "the high lane lists first"
    );

    // One job per read, so the order of runs is the order of reads.
    let lanes = Lanes::default();
    let worker = spawn_worker!(fx.queue, 1, record_lane, lanes.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while lanes.runs().len() < 100 {
        assert!(Instant::now() < deadline, "the 100 jobs did not all run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.stop().await;

    // The lanes' rule holds within each shard (a worker reads the shards in
    // turn, and each has its own high, normal and low jobs).
    for runs in lanes.runs_by_shard(fx.shards()) {
        let last_high = runs
            .iter()
            .rposition(|(_, p)| *p == Priority::High)
            .expect("high jobs ran");
        let first_normal = runs
            .iter()
            .position(|(_, p)| *p == Priority::Normal)
            .expect("normal jobs ran");
        assert!(
            last_high < first_normal,
            "a normal job ran at {first_normal} while high jobs waited (last at {last_high}): {runs:?}"
        );
        // Every job ran in its own lane's order, once.
        for (lane, range) in [
            (Priority::High, 200..220),
            (Priority::Normal, 100..140),
            (Priority::Low, 0..40),
        ] {
            let ns: Vec<u64> = runs
                .iter()
                .filter(|(_, p)| *p == lane)
                .map(|(n, _)| *n)
                .collect();
            let mut sorted = ns.clone();
            sorted.sort_unstable();
            assert_eq!(ns, sorted, "{lane:?} jobs in push order");
            assert!(ns.iter().all(|n| range.contains(n)), "{lane:?}: {ns:?}");
        }
        // While high and normal jobs still waited (as many runs as there
        // are of them), every LOW_LANE_EVERY-th read took a low job.
        let busy_len = runs.iter().filter(|(_, p)| *p != Priority::Low).count();
        let busy = &runs[..busy_len];
        let low = busy.iter().filter(|(_, p)| *p == Priority::Low).count() as u64;
        let share = busy_len as u64 / LOW_LANE_EVERY;
        assert!(
            low + 1 >= share,
            "only {low} low jobs ran in the first {busy_len} while the other lanes were full: {runs:?}"
        );
        assert!(
            low <= share + 1,
            "low jobs took more than their share: {low} of the first {busy_len}: {runs:?}"
        );
    }
    assert_eq!(lanes.runs().len(), 100, "every job ran once");
}

async fn a_job_keeps_its_lane_when_delayed_retried_reclaimed_or_redriven(topology: Topology) {
    let fx = Fixture::new(topology, |c| {
        c.lease = Duration::from_millis(500);
        c.retry_backoff = Duration::from_millis(50);
        c.max_attempts = 2;
        c.promote_interval = Duration::from_millis(50);
    })
    .await;
    // n = 1 fails once; n = 2 always fails (then is re-driven); n = 3 is
    // delayed; n = 4 is taken by a consumer that vanishes.
    async fn flaky(
        job: Job,
        lease: Data<JobLease>,
        lanes: Data<Lanes>,
    ) -> Result<u64, BoxDynError> {
        lanes.record(&job, &lease);
        match (job.n, lease.attempt) {
            (1, 1) => Err("once".into()),
            (2, a) if a <= 2 => Err("twice".into()),
            _ => Ok(job.n),
        }
    }
    // A consumer takes n = 4 from the low lane and vanishes.
    let reclaimed = fx
        .queue
        .push(with_priority(4, Priority::Low))
        .await
        .expect("push");
    let mut conn = fx.redis_conn();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("ghost")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(fx.key(&reclaimed, "stream:low"))
        .arg(">")
        .query_async(&mut conn)
        .await
        .expect("XREADGROUP");
    let retried = fx
        .queue
        .push(with_priority(1, Priority::High))
        .await
        .expect("push");
    let failed = fx
        .queue
        .push(with_priority(2, Priority::Low))
        .await
        .expect("push");
    let delayed = fx
        .queue
        .push(with_priority(3, Priority::High).run_after(Duration::from_millis(300)))
        .await
        .expect("push");
    let lanes = Lanes::default();
    let worker = spawn_worker!(fx.queue, 4, flaky, lanes.clone());
    for id in [&retried, &delayed, &reclaimed] {
        fx.wait_status(id, JobStatus::Succeeded, Duration::from_secs(15))
            .await;
    }
    fx.wait_status(&failed, JobStatus::Failed, Duration::from_secs(15))
        .await;
    assert_eq!(
        fx.queue.retry(&failed).await.expect("retry"),
        Some(JobStatus::Failed)
    );
    let rec = fx
        .wait_status(&failed, JobStatus::Succeeded, Duration::from_secs(15))
        .await;
    assert_eq!(rec.priority, Priority::Low);
    worker.stop().await;

    let runs = lanes.runs();
    let lane_of = |n: u64| -> Vec<Priority> {
        runs.iter()
            .filter(|(m, _)| *m == n)
            .map(|(_, p)| *p)
            .collect()
    };
    assert_eq!(lane_of(1), [Priority::High, Priority::High], "retried");
    assert_eq!(lane_of(2), [Priority::Low; 3], "failed, then re-driven");
    assert_eq!(lane_of(3), [Priority::High], "delayed");
    assert_eq!(lane_of(4), [Priority::Low], "reclaimed from the ghost");
}

async fn a_batch_lists_its_jobs_in_order_for_as_long_as_they_may_be_kept(topology: Topology) {
    let fx = Fixture::new(topology, |c| c.retention = Duration::from_secs(60)).await;
    let mut jobs: Vec<NewJob> = (0..3)
        .map(|n| NewJob::new(&Job { n }).expect("encode").in_batch("b1"))
        .collect();
    jobs.push(
        NewJob::new(&Job { n: 3 })
            .expect("encode")
            .in_batch("b1")
            .run_after(Duration::from_secs(600)),
    );
    let ids: Vec<String> = jobs.iter().map(|j| j.id().to_owned()).collect();
    fx.queue.push_batch(jobs).await.expect("push");
    fx.push(99).await;

    let batch = fx
        .queue
        .batch("b1", 1000)
        .await
        .expect("batch")
        .expect("known");
    let listed: Vec<&str> = batch.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(batch.iter().all(|r| r.batch.as_deref() == Some("b1")));
    assert_eq!(
        fx.queue
            .batch("b1", 2)
            .await
            .expect("batch")
            .map(|b| b.len()),
        Some(2)
    );
    assert_eq!(fx.queue.batch("b2", 10).await.expect("batch"), None);
    // The index outlives the delayed job's run time by the retention: in
    // the delayed job's shard (each shard holds the index of its own jobs).
    let mut conn = fx.redis_conn();
    let ttl: i64 = redis::cmd("TTL")
        .arg(fx.key(&ids[3], "batch:b1"))
        .query_async(&mut conn)
        .await
        .expect("TTL");
    assert!(
        (600..=660).contains(&ttl),
        "the batch index expires in {ttl} s"
    );
}

/// Every page of `q`'s search, followed to the end: the ids found, in
/// order.
async fn search_all(queue: &RedisQueue, q: &JobQuery, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let page = queue
            .search(q, cursor.as_deref(), limit)
            .await
            .expect("search");
        assert!(page.jobs.len() <= limit);
        ids.extend(page.jobs.into_iter().map(|j| j.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return ids,
        }
    }
    panic!("the search did not end");
}

fn place_job(n: u64, place: serde_json::Value) -> NewJob {
    NewJob::new(&serde_json::json!({ "n": n, "place": place })).expect("encode")
}

async fn a_search_finds_jobs_by_what_they_hold_and_their_status_now(topology: Topology) {
    let fx = Fixture::new(topology, |c| {
        c.max_attempts = 1;
    })
    .await;
    // n = 2 fails with an error type; the others succeed.
    async fn fail_two(job: Job, lease: Data<JobLease>) -> Result<u64, BoxDynError> {
        if job.n == 2 {
            lease.set_error_type("upstream_unavailable");
            return Err("the weather service is down".into());
        }
        Ok(job.n)
    }
    let oslo = fx
        .queue
        .push(place_job(1, serde_json::json!({ "city": "Oslo" })).with_priority(Priority::High))
        .await
        .expect("push");
    let osaka = fx
        .queue
        .push(place_job(2, serde_json::json!({ "city": " OSAKA " })))
        .await
        .expect("push");
    let coords = fx
        .queue
        .push(
            place_job(
                3,
                serde_json::json!({ "latitude": 59.91, "longitude": 10.75 }),
            )
            .with_priority(Priority::Low),
        )
        .await
        .expect("push");
    let later = fx
        .queue
        .push(
            place_job(4, serde_json::json!({ "city": "Bergen" }))
                .run_after(Duration::from_secs(3600)),
        )
        .await
        .expect("push");
    let batch: Vec<NewJob> = (5..8)
        .map(|n| place_job(n, serde_json::json!({ "city": "Berlin" })).in_batch("b-1"))
        .collect();
    fx.queue.push_batch(batch).await.expect("push a batch");
    let in_batch = search_all(
        &fx.queue,
        &JobQuery {
            batch: Some("b-1".into()),
            ..JobQuery::default()
        },
        10,
    )
    .await;
    assert_eq!(in_batch.len(), 3, "{in_batch:?}");

    let worker = spawn_worker!(fx.queue, 2, fail_two);
    fx.wait_status(&osaka, JobStatus::Failed, Duration::from_secs(10))
        .await;
    fx.wait_status(&oslo, JobStatus::Succeeded, Duration::from_secs(10))
        .await;
    fx.wait_status(&coords, JobStatus::Succeeded, Duration::from_secs(10))
        .await;
    for id in &in_batch {
        fx.wait_status(id, JobStatus::Succeeded, Duration::from_secs(10))
            .await;
    }
    let find = |q: JobQuery| {
        let queue = &fx.queue;
        async move { search_all(queue, &q, 2).await }
    };
    // Newest first by default; oldest first when asked.
    let every = find(JobQuery::default()).await;
    assert_eq!(every.len(), 7, "{every:?}");
    assert_eq!(every[6], oslo, "the first queued comes last");
    let oldest_first = find(JobQuery {
        order: Order::Asc,
        ..JobQuery::default()
    })
    .await;
    assert_eq!(
        oldest_first,
        every.iter().rev().cloned().collect::<Vec<_>>()
    );
    let city = |prefix: &str| JobQuery {
        text: Some(TextPrefix {
            path: "place.city".into(),
            prefix: prefix.into(),
        }),
        ..JobQuery::default()
    };
    let mut os = find(city("os")).await;
    os.sort();
    let mut want = vec![oslo.clone(), osaka.clone()];
    want.sort();
    assert_eq!(os, want, "a prefix of the city, any case");
    assert_eq!(find(city("BER")).await.len(), 4, "Bergen and Berlin");
    let near_oslo = JobQuery {
        geo: Some(GeoBox {
            lat_path: "place.latitude".into(),
            lon_path: "place.longitude".into(),
            south: 59.0,
            west: 10.0,
            north: 60.0,
            east: 11.0,
        }),
        ..JobQuery::default()
    };
    assert_eq!(find(near_oslo).await, vec![coords.clone()]);
    let failed = JobQuery {
        status: Some(JobStatus::Failed),
        error_type: Some("upstream_unavailable".into()),
        ..JobQuery::default()
    };
    assert_eq!(find(failed.clone()).await, vec![osaka.clone()]);
    let low = JobQuery {
        priority: Some(Priority::Low),
        ..JobQuery::default()
    };
    assert_eq!(find(low).await, vec![coords.clone()]);
    let normal_succeeded = JobQuery {
        priority: Some(Priority::Normal),
        status: Some(JobStatus::Succeeded),
        ..JobQuery::default()
    };
    assert_eq!(find(normal_succeeded).await.len(), 3, "the batch's jobs");
    assert_eq!(
        find(JobQuery {
            status: Some(JobStatus::Scheduled),
            ..JobQuery::default()
        })
        .await,
        vec![later.clone()]
    );
    // The time range: queued at or after the batch's first job.
    let first_of_batch = fx
        .queue
        .status(&in_batch[2])
        .await
        .expect("status")
        .expect("a record");
    let since = find(JobQuery {
        queued_after_ms: Some(first_of_batch.enqueued_at_ms),
        ..JobQuery::default()
    })
    .await;
    assert!(since.len() >= 3 && !since.contains(&oslo), "{since:?}");
    let before = find(JobQuery {
        queued_before_ms: Some(first_of_batch.enqueued_at_ms),
        ..JobQuery::default()
    })
    .await;
    assert_eq!(since.len() + before.len(), 7, "{since:?} {before:?}");

    // The status is the job's now: re-driven, the failed job is found
    // as queued (then succeeded, once the handler lets it), a cancelled
    // one as cancelled.
    worker.stop().await;
    assert_eq!(
        fx.queue.retry(&osaka).await.expect("retry"),
        Some(JobStatus::Failed)
    );
    assert!(find(failed).await.is_empty(), "no longer failed");
    assert_eq!(
        find(JobQuery {
            status: Some(JobStatus::Queued),
            ..JobQuery::default()
        })
        .await,
        vec![osaka.clone()]
    );
    fx.queue.cancel(&later).await.expect("cancel");
    assert_eq!(
        find(JobQuery {
            status: Some(JobStatus::Cancelled),
            ..JobQuery::default()
        })
        .await,
        vec![later]
    );
    // A cursor from another listing is refused, not misread.
    let err = fx
        .queue
        .search(&JobQuery::default(), Some("nonsense"), 10)
        .await
        .expect_err("a foreign cursor");
    assert!(err.to_string().contains("cursor"), "{err}");
}

async fn a_search_pages_through_many_jobs_once_each_and_forgets_expired_ones(topology: Topology) {
    let fx = Fixture::new(topology, |c| {
        c.retention = Duration::from_secs(1);
    })
    .await;
    // 300 jobs pushed in batches, so many share a millisecond.
    let mut pushed = HashSet::new();
    for chunk in 0..3u64 {
        let jobs: Vec<NewJob> = (0..100)
            .map(|i| NewJob::new(&Job { n: chunk * 100 + i }).expect("encode"))
            .collect();
        pushed.extend(jobs.iter().map(|j| j.id().to_owned()));
        fx.queue.push_batch(jobs).await.expect("push");
    }
    for order in [Order::Desc, Order::Asc] {
        let q = JobQuery {
            order,
            ..JobQuery::default()
        };
        let ids = search_all(&fx.queue, &q, 7).await;
        assert_eq!(ids.len(), 300, "{order:?}");
        assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), pushed);
    }
    // Run them; a second after they finish, their records expire, and so
    // does their place in the index (the search drops what it meets, the
    // workers' sweep the rest).
    let worker = spawn_worker!(fx.queue, 8, |job: Job| async move {
        Ok::<u64, BoxDynError>(job.n)
    });
    let read = || async {
        let stats = fx.queue.stats().await?;
        Ok(Some(stats.succeeded_total))
    };
    wait_for_job(
        "all",
        "succeeded",
        Duration::from_secs(30),
        read,
        |n: &Option<u64>| *n == Some(300),
    )
    .await
    .expect("all ran");
    let conn = fx.redis_conn();
    let index_len = || {
        let keys = fx.every_shards_key("index");
        let mut conn = conn.clone();
        async move {
            let mut n = 0u64;
            for key in keys {
                let len: u64 = redis::cmd("ZCARD").arg(&key).query_async(&mut conn).await?;
                n += len;
            }
            Ok(Some(n))
        }
    };
    // The sweep alone (no search) empties the index.
    wait_for_job(
        "the index",
        "swept",
        Duration::from_secs(30),
        index_len,
        |n: &Option<u64>| *n == Some(0),
    )
    .await
    .expect("the sweep drops expired jobs");
    worker.stop().await;
    assert!(
        search_all(&fx.queue, &JobQuery::default(), 50)
            .await
            .is_empty()
    );
}
