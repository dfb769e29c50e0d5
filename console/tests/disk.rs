//! The console keeping its spans on disk (`CONSOLE_DATA_DIR`), as a
//! process: what it acknowledged survives a SIGKILL in the middle of a
//! stream of batches, traces leave at the end of their retention and over
//! the disk's byte cap, and stay gone after a restart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use testkit::{Console, eventually};

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The 128-bit id of trace `n`.
fn id(n: u64) -> String {
    format!("{:016x}{n:016x}", 0x5eed_u64)
}

/// Trace `n`: `spans` spans under one root, each with a
/// tag of `pad` bytes.
fn trace(n: u64, spans: u64, pad: usize) -> Value {
    let trace = id(n);
    let at = now_us() - 1_000_000;
    json!(
        (1..=spans)
            .map(|i| {
                let mut s = json!({
                    "traceId": trace,
                    "id": format!("{i:016x}"),
                    "name": "op",
                    "timestamp": at + i,
                    "duration": 10,
                    "localEndpoint": { "serviceName": "svc" },
                    "tags": { "pad": "p".repeat(pad), "n": n.to_string() },
                });
                if i > 1 {
                    s["parentId"] = json!(format!("{:016x}", 1));
                }
                s
            })
            .collect::<Vec<_>>()
    )
}

/// The number of spans of each of `ids` the console holds (traceMany, in
/// pieces of 100).
async fn held(console: &Console, ids: &[u64]) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::new();
    for piece in ids.chunks(100) {
        let list: Vec<String> = piece.iter().map(|n| id(*n)).collect();
        if let [one] = &list[..] {
            let (status, trace) = console.get(&format!("/api/v2/trace/{one}")).await?;
            out.push(if status == 200 {
                trace.as_array().map_or(0, Vec::len)
            } else {
                0
            });
            continue;
        }
        let traces = console
            .get_ok(&format!("/api/v2/traceMany?traceIds={}", list.join(",")))
            .await?;
        let found: std::collections::HashMap<String, usize> = traces
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| Some((t[0]["traceId"].as_str()?.to_owned(), t.as_array()?.len())))
            .collect();
        out.extend(list.iter().map(|id| found.get(id).copied().unwrap_or(0)));
    }
    Ok(out)
}

#[tokio::test]
async fn every_acknowledged_batch_survives_a_sigkill_in_the_middle_of_a_stream()
-> anyhow::Result<()> {
    let mut console = Console::start_on_disk(env!("CARGO_BIN_EXE_console"), &[]).await?;
    let endpoint = console.endpoint();
    // Two senders, one trace of 20 spans a batch, as fast as they can.
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut senders = Vec::new();
    for sender in 0..2u64 {
        let (acked, endpoint) = (acked.clone(), endpoint.clone());
        senders.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..100_000u64 {
                let n = sender * 1_000_000 + i + 1;
                let sent = http
                    .post(&endpoint)
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&trace(n, 20, 64)).unwrap_or_default())
                    .send()
                    .await;
                match sent {
                    Ok(res) if res.status() == 202 => {
                        if let Ok(mut a) = acked.lock() {
                            a.push(n);
                        }
                    }
                    _ => return,
                }
            }
        }));
    }
    eventually(
        "400 batches acknowledged",
        Duration::from_secs(60),
        Duration::from_millis(10),
        || {
            let n = acked.lock().map(|a| a.len()).unwrap_or(0);
            async move { Ok((n >= 400).then_some(())) }
        },
    )
    .await?;
    // Killed while both senders are sending.
    console.kill_and_restart().await?;
    for s in senders {
        s.abort();
    }
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    let counts = held(&console, &acked).await?;
    let lost: Vec<(u64, usize)> = acked
        .iter()
        .zip(&counts)
        .filter(|(_, c)| **c != 20)
        .map(|(n, c)| (*n, *c))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged traces are not whole after the kill: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    let stored = console.metric("console_spans_stored").await? as usize;
    assert!(stored >= acked.len() * 20, "{stored} spans read back");
    Ok(())
}

#[tokio::test]
async fn traces_leave_at_the_end_of_their_retention_and_stay_gone() -> anyhow::Result<()> {
    let mut console = Console::start_on_disk(
        env!("CARGO_BIN_EXE_console"),
        &[("CONSOLE_RETENTION", "2s".into())],
    )
    .await?;
    assert_eq!(console.post_spans(&trace(1, 3, 10)).await?, 202);
    assert_eq!(held(&console, &[1]).await?, [3]);
    // The expiry runs every second: gone within the retention and two.
    eventually(
        "trace 1 expired",
        Duration::from_secs(6),
        Duration::from_millis(50),
        || async { Ok((held(&console, &[1]).await? == [0]).then_some(())) },
    )
    .await?;
    assert_eq!(console.metric("console_traces_expired_total").await?, 1.0);
    // A trace posted since is kept; the expired one does not come back.
    assert_eq!(console.post_spans(&trace(2, 3, 10)).await?, 202);
    console.kill_and_restart().await?;
    assert_eq!(held(&console, &[1, 2]).await?, [0, 3]);
    Ok(())
}

#[tokio::test]
async fn the_disk_keeps_within_its_bytes_the_oldest_traces_going_first() -> anyhow::Result<()> {
    let max = 1_048_576u64;
    let mut console = Console::start_on_disk(
        env!("CARGO_BIN_EXE_console"),
        &[("CONSOLE_DISK_BYTES", max.to_string())],
    )
    .await?;
    // 300 traces of 4 spans of 1 KiB: over a MiB in all.
    for n in 1..=300u64 {
        assert_eq!(console.post_spans(&trace(n, 4, 1024)).await?, 202);
    }
    let on_disk = console.metric("console_store_disk_bytes").await?;
    assert!(on_disk > 0.0 && on_disk <= max as f64, "{on_disk} bytes");
    let ids: Vec<u64> = (1..=300).collect();
    let before = held(&console, &ids).await?;
    let kept = before.iter().filter(|c| **c == 4).count();
    assert!(kept > 100 && kept < 300, "{kept} traces kept");
    assert!(
        before[..300 - kept].iter().all(|c| *c == 0),
        "the oldest went first: {before:?}"
    );
    console.kill_and_restart().await?;
    assert_eq!(
        held(&console, &ids).await?,
        before,
        "the same traces read back"
    );
    assert_eq!(console.metric("console_store_disk_bytes").await?, on_disk);
    Ok(())
}

#[tokio::test]
async fn an_unusable_data_directory_stops_the_start_with_its_name() -> anyhow::Result<()> {
    // A file where the directory should be.
    let file = std::env::temp_dir().join(format!("console-data-file-{}", std::process::id()));
    std::fs::write(&file, b"not a directory")?;
    let started = Console::start(
        env!("CARGO_BIN_EXE_console"),
        &[("CONSOLE_DATA_DIR", file.display().to_string())],
    )
    .await;
    let _ = std::fs::remove_file(&file);
    let err = format!(
        "{:#}",
        started.err().ok_or_else(|| anyhow::anyhow!("it started"))?
    );
    assert!(err.contains("CONSOLE_DATA_DIR"), "{err}");
    Ok(())
}
