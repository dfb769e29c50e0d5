//! The queue over TLS (`rediss://`) with a password, against a real
//! `redis-server` that speaks only TLS, its certificate signed by a CA the
//! test made.

use std::time::Duration;

use apalis_core::error::BoxDynError;
use apalis_core::worker::builder::WorkerBuilder;
use redis_job_queue::{JobStatus, NewJob, QueueConfig, QueueError, RedisQueue};
use serde::{Deserialize, Serialize};
use testkit::{RedisServer, wait_for_job};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    n: u64,
}

async fn double(job: Job) -> Result<u64, BoxDynError> {
    Ok(job.n * 2)
}

fn config(ca: Option<&str>) -> QueueConfig {
    let mut cfg = QueueConfig::new("tls");
    cfg.block_timeout = Duration::from_millis(200);
    cfg.tls_ca_pem = ca.map(|pem| pem.as_bytes().to_vec());
    cfg
}

#[tokio::test]
async fn jobs_run_over_tls_with_a_password() {
    let redis = RedisServer::start_tls("s3cret-pass").await.expect("start");
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());
    let queue = RedisQueue::connect(&redis.url(), config(Some(redis.ca_pem())))
        .await
        .expect("connect over TLS");
    let worker = WorkerBuilder::new("tls-worker")
        .backend(queue.backend::<Job>(2))
        .build(double);
    let running = tokio::spawn(worker.run());
    let id = queue
        .push(NewJob::new(&Job { n: 21 }).expect("encode"))
        .await
        .expect("push");
    let read = || async { Ok(queue.status(&id).await?) };
    let rec = wait_for_job(&id, "run over TLS", Duration::from_secs(10), read, |rec| {
        rec.as_ref()
            .is_some_and(|r| r.status == JobStatus::Succeeded)
    })
    .await
    .expect("the job runs over TLS")
    .expect("a job in a status has a record");
    assert_eq!(rec.result, Some(serde_json::json!(42)));
    running.abort();
}

#[tokio::test]
async fn a_wrong_password_an_unknown_ca_or_plain_text_are_refused_with_an_error() {
    let redis = RedisServer::start_tls("s3cret-pass").await.expect("start");
    let port = redis
        .url()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();

    let wrong = format!("rediss://:wrong@127.0.0.1:{port}");
    let err = RedisQueue::connect(&wrong, config(Some(redis.ca_pem())))
        .await
        .expect_err("a wrong password is refused");
    assert!(
        err.to_string().to_lowercase().contains("pass"),
        "the error names the password: {err}"
    );
    assert!(
        !err.to_string().contains("wrong"),
        "no password echoed: {err}"
    );

    // The system's roots do not know the test's CA.
    let err = RedisQueue::connect(&redis.url(), config(None))
        .await
        .expect_err("an unknown issuer is refused");
    assert!(matches!(err, QueueError::Redis(_)), "{err}");

    let plain = format!("redis://:s3cret-pass@127.0.0.1:{port}");
    RedisQueue::connect(&plain, config(None))
        .await
        .expect_err("plain text to a TLS port fails");
    let err = RedisQueue::connect(&plain, config(Some(redis.ca_pem())))
        .await
        .expect_err("a CA with a plain URL is a mistake");
    assert!(matches!(err, QueueError::Config(_)), "{err}");
}
