//! The queue on a real Redis Cluster (three masters, one replica each):
//! reached through any seed node, every operation works, and a master's
//! failure is survived once its replica is promoted.

use std::time::Duration;

use anyhow::Context;

use apalis_core::error::{BoxDynError, WorkerError};
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use redis_job_queue::{JobLease, JobStatus, NewJob, Priority, QueueConfig, RedisQueue, slot};
use serde::{Deserialize, Serialize};
use testkit::{RedisCluster, eventually};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    n: u64,
}

async fn double(job: Job, _lease: Data<JobLease>) -> Result<u64, BoxDynError> {
    Ok(job.n * 2)
}

/// A worker of `queue` in the background, stopped gracefully by
/// [`Running::stop`].
struct Running {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<Result<(), WorkerError>>,
}

impl Running {
    fn spawn(queue: &RedisQueue) -> Self {
        let worker = WorkerBuilder::new("cluster-worker")
            .backend(queue.backend::<Job>(8))
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

fn config() -> QueueConfig {
    let mut cfg = QueueConfig::new("cluster");
    cfg.block_timeout = Duration::from_millis(200);
    cfg
}

async fn wait_succeeded(queue: &RedisQueue, ids: &[String], limit: Duration) -> anyhow::Result<()> {
    eventually(
        "every job succeeded",
        limit,
        Duration::from_millis(50),
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

#[tokio::test]
async fn a_queue_on_a_redis_cluster_works_through_any_seed_node() -> anyhow::Result<()> {
    let cluster = RedisCluster::start(3, 1).await?;
    // One seed is enough: the client learns the rest from it. Take one
    // that does not hold the queue, so the first commands are redirected.
    let queue_slot = slot(b"jobs:{cluster}:stream");
    let holder = cluster.master_of(queue_slot)?;
    let seed = cluster
        .ports()
        .into_iter()
        .find(|p| *p != holder)
        .expect("six nodes");
    let queue = RedisQueue::connect(&format!("redis://127.0.0.1:{seed}"), config())
        .await
        .context("connect")?;

    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(queue.push(NewJob::new(&Job { n })?).await.context("push")?);
    }
    let batch: Vec<NewJob> = (20..120)
        .map(|n| {
            NewJob::new(&Job { n }).map(|j| {
                j.with_priority(if n % 2 == 0 {
                    Priority::High
                } else {
                    Priority::Low
                })
                .in_batch("b1")
            })
        })
        .collect::<Result<_, _>>()?;
    let pushed = queue
        .push_batch(batch.clone())
        .await
        .context("push_batch")?;
    assert!(pushed.iter().all(|added| *added), "{pushed:?}");
    ids.extend(batch.iter().map(|j| j.id().to_owned()));
    let delayed = queue
        .push(NewJob::new(&Job { n: 7 })?.run_after(Duration::from_secs(600)))
        .await?;
    assert_eq!(
        queue.list(JobStatus::Scheduled, None, 10).await?.jobs[0].id,
        delayed
    );

    let worker = Running::spawn(&queue);
    wait_succeeded(&queue, &ids, Duration::from_secs(30)).await?;
    let record = queue.status(&ids[5]).await?.expect("kept");
    assert_eq!(record.result, Some(serde_json::json!(10)));
    assert_eq!(queue.batch("b1", 1000).await?.map(|b| b.len()), Some(100));
    let stats = queue.stats().await?;
    assert_eq!(stats.enqueued_total, 121, "{stats:?}");
    assert_eq!(stats.succeeded_total, 120, "{stats:?}");
    assert_eq!(stats.delayed, 1, "{stats:?}");
    assert_eq!(queue.consumers().await?.len(), 1);
    let listed = queue.list(JobStatus::Succeeded, None, 1000).await?;
    assert_eq!(listed.jobs.len(), 120);
    assert!(matches!(
        queue.cancel(&delayed).await?,
        redis_job_queue::Cancelled::Yes
    ));
    queue.ping(Duration::from_secs(1)).await?;
    // A graceful stop cuts the blocked read short on the node that
    // holds the queue, where it blocks.
    let stopping = std::time::Instant::now();
    worker.stop().await?;
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "stopped in {:?}",
        stopping.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn the_queue_goes_on_when_its_master_fails_and_the_replica_takes_over() -> anyhow::Result<()>
{
    let mut cluster = RedisCluster::start(3, 1).await?;
    let queue = RedisQueue::connect(&cluster.url(), config()).await?;
    let worker = Running::spawn(&queue);
    let mut before = Vec::new();
    for n in 0..50 {
        before.push(queue.push(NewJob::new(&Job { n })?).await?);
    }
    wait_succeeded(&queue, &before, Duration::from_secs(30)).await?;
    cluster.wait_replicated(Duration::from_secs(10)).await?;

    let master = cluster.master_of(slot(b"jobs:{cluster}:stream"))?;
    cluster.kill(master).await?;
    // Pushes made while the replica is being promoted wait for it (the
    // client retries through the failover) rather than fail.
    let mut after = Vec::new();
    for n in 50..60 {
        let pushed = queue.push(NewJob::new(&Job { n })?).await;
        after.push(pushed.context("a push during the failover")?);
    }
    assert_ne!(
        cluster.master_of(slot(b"jobs:{cluster}:stream"))?,
        master,
        "a replica was promoted"
    );
    // The worker reads from the new master; what ran before is still
    // there (it had reached the replica).
    wait_succeeded(&queue, &after, Duration::from_secs(60)).await?;
    wait_succeeded(&queue, &before, Duration::from_secs(5)).await?;
    worker.stop().await
}

#[tokio::test]
async fn a_push_waits_for_the_replicas_asked_for_or_says_it_did_not_reach_them()
-> anyhow::Result<()> {
    let cluster = RedisCluster::start(3, 1).await?;
    let mut cfg = config();
    cfg.wait_replicas = 1;
    let queue = RedisQueue::connect(&cluster.url(), cfg.clone()).await?;
    let id = queue.push(NewJob::new(&Job { n: 1 })?).await?;
    assert!(queue.status(&id).await?.is_some());
    assert_eq!(
        queue.push_batch(vec![NewJob::new(&Job { n: 2 })?]).await?,
        vec![true]
    );

    // Each master has one replica: two cannot confirm.
    cfg.wait_replicas = 2;
    cfg.wait_timeout = Duration::from_millis(100);
    let queue = RedisQueue::connect(&cluster.url(), cfg).await?;
    let err = queue
        .push(NewJob::new(&Job { n: 3 })?)
        .await
        .expect_err("one replica cannot confirm for two");
    assert!(
        matches!(
            err,
            redis_job_queue::QueueError::NotReplicated {
                wanted: 2,
                reached: 1
            }
        ),
        "{err:?}"
    );
    assert!(err.is_unavailable());
    let err = queue
        .push_batch(vec![NewJob::new(&Job { n: 4 })?])
        .await
        .expect_err("nor for a batch");
    assert!(
        matches!(err, redis_job_queue::QueueError::NotReplicated { .. }),
        "{err:?}"
    );
    Ok(())
}
