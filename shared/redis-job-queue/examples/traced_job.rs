//! A job whose trace crosses the queue: pushed inside a PRODUCER span that
//! writes its context into the job, run inside a CONSUMER span that
//! resumes it. The log lines of both sides carry the same `trace_id`.
//!
//! ```sh
//! redis-server --port 6379 &   # any Redis 6.2 or newer
//! OTEL_TRACES_EXPORTER=console cargo run -p redis-job-queue --example traced_job
//! ```
//!
//! Every `OTEL_*` setting applies (`OTEL_TRACES_EXPORTER=zipkin` posts to a
//! Zipkin on :9411); `REDIS_URL` picks another Redis.

use apalis_core::error::BoxDynError;
use apalis_core::worker::builder::WorkerBuilder;
use clap::Parser;
use redis_job_queue::{NewJob, QueueConfig, RedisQueue};
use telemetry::messaging::{ConsumerTracing, TracedProducer};
use tracing::Instrument;

#[derive(Parser)]
struct Settings {
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/")]
    redis_url: String,
    #[command(flatten)]
    telemetry: telemetry::TelemetryArgs,
}

async fn greet(name: String) -> Result<String, BoxDynError> {
    tracing::info!(%name, "greeting"); // inside the CONSUMER span
    Ok(format!("hello, {name}"))
}

#[tokio::main]
async fn main() -> Result<(), BoxDynError> {
    let settings = Settings::parse();
    let telemetry = telemetry::init(&settings.telemetry, "traced-job")?;
    let propagation = telemetry.propagation().clone();
    let queue = RedisQueue::connect(&settings.redis_url, QueueConfig::new("greetings")).await?;

    // Producer side: the PRODUCER span is a child of the caller's span.
    let producer = TracedProducer::new(queue.clone(), propagation.clone());
    let caller = tracing::info_span!("caller");
    let sent = producer
        .send(NewJob::new(&"Ada")?)
        .instrument(caller)
        .await?;
    tracing::info!(id = %sent.id, trace_id = sent.trace_id.as_deref(), "job sent");

    // Consumer side: one layer opens each attempt's CONSUMER span.
    let worker = WorkerBuilder::new("greeter")
        .backend(queue.backend::<String>(4))
        .layer(ConsumerTracing::new(&queue, propagation))
        .build(greet);
    let watched = queue.clone();
    worker
        .run_until(async move {
            while !watched
                .status(&sent.id)
                .await
                .is_ok_and(|r| r.is_some_and(|r| r.is_finished()))
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Ok::<(), std::io::Error>(())
        })
        .await?;
    telemetry.shutdown().await; // flushes the spans
    Ok(())
}
