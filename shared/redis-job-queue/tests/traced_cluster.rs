//! On a Redis Cluster, a Redis span names the node that answered as
//! `server.address`, and a redirect (`ASK` while the queue's slot
//! migrates, `MOVED` once it has) or a reconnect after a failover becomes
//! one of its events. Checked on the PRODUCER spans of pushes, through the
//! Zipkin v2 JSON exported.
//!
//! One test: the telemetry pipeline is global to the process.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use redis_job_queue::{NewJob, QueueConfig, RedisQueue, slot};
use serde_json::Value;
use telemetry::messaging::TracedProducer;
use telemetry::propagation::Propagation;
use testkit::{RedisCluster, ZipkinCollector};
use tracing::Instrument;

const WAIT: Duration = Duration::from_secs(20);

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    telemetry: telemetry::TelemetryArgs,
}

/// `CLUSTER MYID` of the node on `port`.
fn node_id(cluster: &RedisCluster, port: u16) -> anyhow::Result<String> {
    Ok(cluster.cli(port, &["CLUSTER", "MYID"])?.trim().to_owned())
}

/// Starts moving `slot` from the master on `from` to the one on `to`
/// (`MIGRATING` and `IMPORTING`) and carries every key of it over, as
/// `redis-cli --cluster reshard` does: the source now answers `ASK`.
fn migrate(cluster: &RedisCluster, slot: u16, from: u16, to: u16) -> anyhow::Result<()> {
    let s = slot.to_string();
    let (from_id, to_id) = (node_id(cluster, from)?, node_id(cluster, to)?);
    cluster.cli(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id])?;
    cluster.cli(from, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id])?;
    let keys = cluster.cli(from, &["CLUSTER", "GETKEYSINSLOT", &s, "1000"])?;
    let keys: Vec<&str> = keys
        .lines()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect();
    anyhow::ensure!(!keys.is_empty(), "the queue's slot holds its keys");
    let port = to.to_string();
    let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
    args.extend(keys.iter().copied());
    let moved = cluster.cli(from, &args)?;
    anyhow::ensure!(moved.trim() == "OK", "MIGRATE: {moved}");
    Ok(())
}

/// Ends a migration: every master learns that `slot` is `to`'s.
fn assign(cluster: &RedisCluster, slot: u16, to: u16) -> anyhow::Result<()> {
    let to_id = node_id(cluster, to)?;
    for port in cluster.masters()? {
        cluster.cli(
            port,
            &["CLUSTER", "SETSLOT", &slot.to_string(), "NODE", &to_id],
        )?;
    }
    Ok(())
}

/// The PRODUCER span of job `id`, once exported.
async fn producer_span(zipkin: &ZipkinCollector, id: &str) -> anyhow::Result<Value> {
    zipkin
        .wait_for(WAIT, &format!("the PRODUCER span of {id}"), |spans| {
            spans
                .iter()
                .find(|s| s["kind"] == "PRODUCER" && s["tags"]["messaging.message.id"] == id)
                .cloned()
        })
        .await
}

/// The port the span names as its remote endpoint (its `server.port`).
fn port(span: &Value) -> Option<u16> {
    span["remoteEndpoint"]["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
}

/// The span's annotations whose value starts with `name`.
fn events<'a>(span: &'a Value, name: &str) -> Vec<&'a str> {
    span["annotations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["value"].as_str())
        .filter(|v| v.starts_with(name))
        .collect()
}

#[tokio::test]
async fn redis_spans_name_the_node_that_answered_and_say_when_the_slot_moved() -> anyhow::Result<()>
{
    let mut cluster = RedisCluster::start(3, 1).await?;
    let zipkin = ZipkinCollector::start().await?;
    let cli = Cli::parse_from([
        "test",
        "--traces-exporter=zipkin",
        &format!("--zipkin-endpoint={}", zipkin.endpoint()),
        "--bsp-schedule-delay=50",
        "--service-name=traced-cluster",
    ]);
    let telemetry = telemetry::init(&cli.telemetry, "traced-cluster")?;

    let queue_slot = slot(b"jobs:{moving}:stream");
    let holder = cluster.master_of(queue_slot)?;
    let masters = cluster.masters()?;
    let others: Vec<u16> = masters.iter().copied().filter(|p| *p != holder).collect();
    let (next, spare) = (others[0], others[1]);
    // The first seed is a master that does not hold the queue: the spans
    // must not name it.
    let url = format!("redis://127.0.0.1:{spare},{}", cluster.url());
    let mut cfg = QueueConfig::new("moving");
    cfg.block_timeout = Duration::from_millis(200);
    let queue = RedisQueue::connect(&url, cfg).await?;
    let producer = TracedProducer::new(queue.clone(), Propagation::default());

    // Nothing moves: the node that holds the queue answered.
    let plain = producer.send(NewJob::new(&1u32)?).await?;
    let span = producer_span(&zipkin, &plain.id).await?;
    assert_eq!(port(&span), Some(holder), "{span}");
    assert_eq!(span["remoteEndpoint"]["serviceName"], "redis");
    assert!(events(&span, "redis.").is_empty(), "{span}");

    // The slot migrates: the old master answers ASK for a key it has sent
    // over, and the new one answers. (A push, whose script makes a key,
    // waits out a migration: Redis answers TRYAGAIN to a command on keys
    // that are partly moved.)
    migrate(&cluster, queue_slot, holder, next)?;
    let conn = queue.connection();
    let key = format!("jobs:{{moving}}:job:{}", plain.id);
    let node = conn.node_for(&key).context("a cluster names the node")?;
    assert_eq!(node.port, holder);
    let span = telemetry::redis_span!(node.address.as_str(), node.port, "HGET", "HGET ? ?");
    let get = async {
        let mut c = conn.clone();
        redis::cmd("HGET")
            .arg(&key)
            .arg("status")
            .query_async::<Option<String>>(&mut c)
            .await
    };
    let (status, answered) = conn.observe(&key, get.instrument(span.clone())).await;
    telemetry::db::record_answered(&span, &node, &answered);
    drop(span);
    assert_eq!(status?.as_deref(), Some("queued"));
    let span = zipkin
        .wait_for(WAIT, "the HGET span", |spans| {
            spans
                .iter()
                .find(|s| s["tags"]["db.operation.name"] == "HGET")
                .cloned()
        })
        .await?;
    assert_eq!(port(&span), Some(next), "{span}");
    let redirects = events(&span, "redis.redirect");
    assert_eq!(redirects.len(), 1, "{span}");
    assert!(
        redirects[0].contains(r#""redis.redirect.kind":"ask""#),
        "{span}"
    );
    assert!(
        redirects[0].contains(&format!(r#""redis.redirect.from":"127.0.0.1:{holder}""#))
            && redirects[0].contains(&format!(r#""redis.redirect.to":"127.0.0.1:{next}""#))
            && redirects[0].contains(&format!(r#""redis.slot":"{queue_slot}""#)),
        "{span}"
    );

    // The migration ends: the old master answers MOVED.
    assign(&cluster, queue_slot, next)?;
    let moved = producer
        .send(NewJob::new(&3u32)?)
        .await
        .context("the push after it")?;
    let span = producer_span(&zipkin, &moved.id).await?;
    assert_eq!(port(&span), Some(next), "{span}");
    let redirects = events(&span, "redis.redirect");
    assert_eq!(redirects.len(), 1, "{span}");
    assert!(
        redirects[0].contains(r#""redis.redirect.kind":"moved""#),
        "{span}"
    );

    // The new master dies: its replica is promoted, and the push, which
    // waited through it, names the replica and says what happened.
    cluster.wait_replicated(Duration::from_secs(10)).await?;
    cluster.kill(next).await?;
    let failed_over = producer
        .send(NewJob::new(&4u32)?)
        .await
        .context("the push through the failover")?;
    let promoted = cluster.master_of(queue_slot)?;
    assert_ne!(promoted, next, "a replica was promoted");
    let span = producer_span(&zipkin, &failed_over.id).await?;
    assert_eq!(port(&span), Some(promoted), "{span}");
    let reconnects = events(&span, "redis.reconnect");
    assert_eq!(reconnects.len(), 1, "{span}");
    assert!(
        reconnects[0].contains(&format!(r#""redis.reconnect.from":"127.0.0.1:{next}""#))
            && reconnects[0].contains(&format!(r#""redis.reconnect.to":"127.0.0.1:{promoted}""#)),
        "{span}"
    );

    // Every job is where the queue finds it.
    for id in [&plain.id, &moved.id, &failed_over.id] {
        let record = queue.status(id).await?.context("the job's record")?;
        assert_eq!(record.id, *id);
    }
    telemetry.shutdown().await;
    Ok(())
}
