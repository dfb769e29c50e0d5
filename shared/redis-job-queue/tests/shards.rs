//! One queue in three shards, on one server and on a real Redis Cluster
//! (three masters, a replica each): jobs spread over the shards, every
//! operation spans them, workers drain them all, a master's failure under
//! load loses nothing, and the shard count cannot change under jobs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use apalis_core::error::{BoxDynError, WorkerError};
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use redis_job_queue::{JobLease, JobStatus, NewJob, QueueConfig, QueueError, RedisQueue, shard_of};
use serde::{Deserialize, Serialize};
use testkit::{RedisCluster, RedisServer, eventually};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    n: u64,
}

/// How many times each job ran.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<HashMap<String, u32>>>);

impl Runs {
    fn record(&self, id: &str) {
        if let Ok(mut runs) = self.0.lock() {
            *runs.entry(id.to_owned()).or_default() += 1;
        }
    }

    fn more_than_once(&self) -> usize {
        self.0
            .lock()
            .map(|r| r.values().filter(|n| **n > 1).count())
            .unwrap_or(0)
    }
}

async fn double(job: Job, lease: Data<JobLease>, runs: Data<Runs>) -> Result<u64, BoxDynError> {
    runs.record(&lease.id);
    Ok(job.n * 2)
}

struct Running {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<Result<(), WorkerError>>,
}

impl Running {
    fn spawn(queue: &RedisQueue, concurrency: usize, runs: &Runs) -> Self {
        let worker = WorkerBuilder::new("shards-worker")
            .backend(queue.backend::<Job>(concurrency))
            .data(runs.clone())
            .build(double);
        let (stop, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(worker.run_until(async move {
            let _ = rx.await;
            Ok::<(), std::io::Error>(())
        }));
        Self { stop, handle }
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.handle.await??;
        Ok(())
    }
}

fn config(shards: u16) -> QueueConfig {
    let mut cfg = QueueConfig::new("sharded");
    cfg.block_timeout = Duration::from_millis(200);
    cfg.shards = shards;
    cfg
}

async fn wait_all(queue: &RedisQueue, ids: &[String], limit: Duration) -> anyhow::Result<()> {
    eventually(
        "every job succeeded",
        limit,
        Duration::from_millis(100),
        || async {
            for id in ids {
                let record = queue.status(id).await?;
                if record.as_ref().map(|r| r.status) != Some(JobStatus::Succeeded) {
                    anyhow::bail!("job {id}: {record:?}");
                }
            }
            Ok(Some(()))
        },
    )
    .await
}

/// Every page of `status`, `limit` at a time.
async fn all_pages(
    queue: &RedisQueue,
    status: JobStatus,
    limit: usize,
) -> anyhow::Result<Vec<redis_job_queue::JobRecord>> {
    let (mut jobs, mut cursor) = (Vec::new(), None::<String>);
    for _ in 0..1000 {
        let page = queue.list(status, cursor.as_deref(), limit).await?;
        jobs.extend(page.jobs);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(jobs),
        }
    }
    anyhow::bail!("the listing never ended")
}

/// The behaviour a queue of three shards must show wherever it runs.
async fn three_shards_work_as_one_queue(url: &str) -> anyhow::Result<()> {
    let queue = RedisQueue::connect(url, config(3)).await?;
    let mut ids = Vec::new();
    for n in 0..60 {
        ids.push(queue.push(NewJob::new(&Job { n })?).await?);
    }
    let batch: Vec<NewJob> = (60..90)
        .map(|n| NewJob::new(&Job { n }).map(|j| j.in_batch("b1")))
        .collect::<Result<_, _>>()?;
    let batch_ids: Vec<String> = batch.iter().map(|j| j.id().to_owned()).collect();
    assert!(queue.push_batch(batch).await?.iter().all(|a| *a));
    ids.extend(batch_ids.iter().cloned());
    // Every shard got some: ids pick shards evenly.
    let per_shard: Vec<u64> = queue
        .shard_infos()
        .await?
        .iter()
        .map(|s| s.stats.waiting)
        .collect();
    assert_eq!(per_shard.iter().sum::<u64>(), 90, "{per_shard:?}");
    assert!(per_shard.iter().all(|n| *n >= 15), "{per_shard:?}");
    for id in &ids {
        let shard = shard_of(id, 3);
        assert!(shard < 3);
    }
    // Queued jobs are listed shard after shard, each once.
    let queued = all_pages(&queue, JobStatus::Queued, 7).await?;
    let listed: HashSet<&str> = queued.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(listed.len(), 90, "each queued job listed once");
    // An idempotency key is checked in one place.
    let key_job = || -> anyhow::Result<NewJob> {
        Ok(NewJob::new(&Job { n: 1000 })?
            .with_id("idem-shards-1")
            .idempotency("k1", "f1"))
    };
    assert!(matches!(
        queue.push_once(key_job()?).await?,
        redis_job_queue::Pushed::New(_)
    ));
    assert!(matches!(
        queue.push_once(key_job()?).await?,
        redis_job_queue::Pushed::Repeat(_)
    ));
    ids.push("idem-shards-1".into());
    // Scheduled jobs, merged over the shards soonest first.
    let mut delayed = Vec::new();
    for n in 0..12 {
        let job = NewJob::new(&Job { n })?.run_after(Duration::from_secs(600 + n));
        delayed.push(queue.push(job).await?);
    }
    let scheduled = all_pages(&queue, JobStatus::Scheduled, 5).await?;
    assert_eq!(
        scheduled.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        delayed,
        "soonest first across shards"
    );

    let runs = Runs::default();
    let worker = Running::spawn(&queue, 8, &runs);
    wait_all(&queue, &ids, Duration::from_secs(30)).await?;
    assert_eq!(runs.more_than_once(), 0);
    assert_eq!(
        queue.status(&ids[70]).await?.context("kept")?.result,
        Some(serde_json::json!(140))
    );
    // The batch in the order it was sent, though its jobs sit in three
    // shards.
    let listed: Vec<String> = queue
        .batch("b1", 1000)
        .await?
        .context("the batch")?
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, batch_ids);
    let stats = queue.stats().await?;
    assert_eq!(stats.enqueued_total, 103, "{stats:?}");
    assert_eq!(stats.succeeded_total, 91, "{stats:?}");
    assert_eq!(stats.delayed, 12, "{stats:?}");
    assert_eq!(
        stats.live_consumers, 1,
        "one backend, counted once: {stats:?}"
    );
    let consumers = queue.consumers().await?;
    assert_eq!(consumers.len(), 1, "{consumers:?}");
    // Succeeded, merged newest first, each once.
    let succeeded = all_pages(&queue, JobStatus::Succeeded, 9).await?;
    assert_eq!(succeeded.len(), 91);
    let order: Vec<(Option<u64>, String)> = succeeded
        .iter()
        .map(|j| (j.finished_at_ms, j.id.clone()))
        .collect();
    let mut sorted = order.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(order, sorted, "newest first");
    for id in &delayed {
        assert!(matches!(
            queue.cancel(id).await?,
            redis_job_queue::Cancelled::Yes
        ));
    }
    worker.stop().await
}

#[tokio::test]
async fn three_shards_on_one_server_work_as_one_queue() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    three_shards_work_as_one_queue(&redis.url()).await
}

#[tokio::test]
async fn three_shards_on_a_redis_cluster_work_as_one_queue() -> anyhow::Result<()> {
    let cluster = RedisCluster::start(3, 1).await?;
    three_shards_work_as_one_queue(&cluster.url()).await
}

#[tokio::test]
async fn three_shards_land_on_three_masters_and_share_the_load_evenly() -> anyhow::Result<()> {
    let cluster = RedisCluster::start(3, 1).await?;
    let queue = RedisQueue::connect(&cluster.url(), config(3)).await?;
    let nodes: HashSet<String> = queue
        .shard_infos()
        .await?
        .into_iter()
        .map(|s| s.node)
        .collect();
    assert_eq!(nodes.len(), 3, "one shard per master: {nodes:?}");
    let masters: Vec<u16> = cluster
        .topology()?
        .into_iter()
        .filter(|(_, (role, _))| role == "master")
        .map(|(port, _)| port)
        .collect();
    for port in &masters {
        cluster.cli(*port, &["CONFIG", "RESETSTAT"])?;
    }
    let jobs: Vec<NewJob> = (0..3000)
        .map(|n| NewJob::new(&Job { n }))
        .collect::<Result<_, _>>()?;
    let ids: Vec<String> = jobs.iter().map(|j| j.id().to_owned()).collect();
    queue.push_batch(jobs).await?;
    let runs = Runs::default();
    let worker = Running::spawn(&queue, 32, &runs);
    wait_all(&queue, &ids, Duration::from_secs(120)).await?;
    worker.stop().await?;
    let mut calls = BTreeMap::new();
    for port in &masters {
        let stats = cluster.cli(*port, &["INFO", "commandstats"])?;
        let total: u64 = stats
            .lines()
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        calls.insert(*port, total);
    }
    let all: u64 = calls.values().sum();
    for (port, n) in &calls {
        let share = *n as f64 / all as f64;
        assert!(
            (share - 1.0 / 3.0).abs() <= 0.2 / 3.0,
            "master {port} served {share:.3} of the commands: {calls:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_master_killed_under_load_loses_no_job_pushed_with_a_replica_required()
-> anyhow::Result<()> {
    let mut cluster = RedisCluster::start(3, 1).await?;
    let mut cfg = config(3);
    cfg.wait_replicas = 1;
    cfg.lease = Duration::from_secs(5);
    let queue = RedisQueue::connect(&cluster.url(), cfg).await?;
    let jobs: Vec<NewJob> = (0..5000)
        .map(|n| NewJob::new(&Job { n }))
        .collect::<Result<_, _>>()?;
    let ids: Vec<String> = jobs.iter().map(|j| j.id().to_owned()).collect();
    // Acknowledged only once a replica has them.
    assert!(queue.push_batch(jobs).await?.iter().all(|a| *a));

    let runs = Runs::default();
    let worker = Running::spawn(&queue, 16, &runs);
    // Once the drain is under way, the master of shard 0 dies.
    eventually(
        "a tenth of the jobs done",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || async { Ok((queue.stats().await?.succeeded_total >= 500).then_some(())) },
    )
    .await?;
    let victim = cluster.master_of(queue.shard_infos().await?[0].slot)?;
    cluster.kill(victim).await?;
    wait_all(&queue, &ids, Duration::from_secs(120)).await?;
    worker.stop().await?;
    let twice = runs.more_than_once();
    println!(
        "failover under load: 5000 jobs succeeded, {twice} ran more than once \
         (their start or outcome had not reached the replica, or their lease lapsed)"
    );
    assert!(twice < 5000 / 3, "{twice} ran twice");
    Ok(())
}

#[tokio::test]
async fn the_shard_count_cannot_change_under_jobs() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let one = RedisQueue::connect(&redis.url(), config(1)).await?;
    let id = one
        .push(NewJob::new(&Job { n: 1 })?.run_after(Duration::from_secs(600)))
        .await?;
    let err = RedisQueue::connect(&redis.url(), config(3))
        .await
        .expect_err("a job waits in the one-shard layout");
    assert!(matches!(err, QueueError::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("1 shard") && text.contains("QUEUE_SHARDS"),
        "{text}"
    );
    // Drained (here: cancelled), it may change.
    one.cancel(&id).await?;
    let three = RedisQueue::connect(&redis.url(), config(3)).await?;
    three
        .push(NewJob::new(&Job { n: 2 })?.run_after(Duration::from_secs(600)))
        .await?;
    let err = RedisQueue::connect(&redis.url(), config(1))
        .await
        .expect_err("and now a job waits in three");
    assert!(err.to_string().contains("3 shard"), "{err}");
    Ok(())
}
