//! Push a job with a trace carrier in its metadata, run it on a worker, and
//! read its record back.
//!
//! ```sh
//! redis-server --port 6379 &   # any Redis 6.2 or newer
//! cargo run -p shared --example queue_quickstart [redis://127.0.0.1:6379/]
//! ```

use std::time::Duration;

use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use apalis_core::task::metadata::MetadataStore;
use apalis_core::worker::builder::WorkerBuilder;
use shared::queue::{JobLease, JobStatus, NewJob, QueueConfig, RedisQueue};

#[derive(serde::Serialize, serde::Deserialize)]
struct Fetch {
    city: String,
}

async fn handle(
    job: Fetch,
    lease: Data<JobLease>,
    meta: MetadataStore,
) -> Result<String, BoxDynError> {
    let parent = meta.get("traceparent").unwrap_or("none");
    Ok(format!(
        "{} (attempt {}, parent {parent})",
        job.city, lease.attempt
    ))
}

#[tokio::main]
async fn main() -> Result<(), BoxDynError> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".into());
    let queue = RedisQueue::connect(&url, QueueConfig::new("quickstart")).await?;

    let job = NewJob::new(&Fetch {
        city: "Oslo".into(),
    })?
    .with_metadata(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    let id = queue.push(job).await?;

    // At most 8 jobs at once; stop once our job is done.
    let worker = WorkerBuilder::new("quickstart-worker")
        .backend(queue.backend::<Fetch>(8))
        .build(handle);
    let watcher = queue.clone();
    let watched = id.clone();
    worker
        .run_until(async move {
            loop {
                match watcher.status(&watched).await {
                    Ok(Some(r)) if matches!(r.status, JobStatus::Succeeded | JobStatus::Failed) => {
                        return Ok::<(), std::io::Error>(());
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await?;

    let record = queue.status(&id).await?;
    println!("{}", serde_json::to_string_pretty(&record)?);
    println!("{}", serde_json::to_string_pretty(&queue.stats().await?)?);
    Ok(())
}
