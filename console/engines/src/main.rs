//! Span-store benchmark: fjall vs redb vs SQLite (see README.md).
mod engines;
mod workload;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engines::*;
use workload::*;

// ---------------------------------------------------------------- harness
fn du(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                du(&e.path())
            } else {
                m.blocks() * 512
            }
        })
        .sum()
}

/// Writes `n` spans (or forever if None), calling `after` after each committed batch.
/// Returns (time spent in compress+write, raw JSON bytes).
fn ingest(
    st: &mut dyn Store,
    n: Option<usize>,
    lz4: bool,
    mut after: impl FnMut(usize),
) -> (Duration, u64) {
    let mut g = Gen::new(0x5eed);
    let (mut busy, mut raw, mut last_sync) = (Duration::ZERO, 0u64, Instant::now());
    let batches = n.map(|n| n / SPANS_PER_BATCH);
    let mut i = 0;
    while batches.is_none_or(|b| i < b) {
        let mut items = g.batch(); // generation is not timed
        let t0 = Instant::now();
        raw += items.iter().map(|it| it.val.len() as u64).sum::<u64>();
        if lz4 {
            items
                .iter_mut()
                .for_each(|it| it.val = lz4_flex::compress_prepend_size(&it.val));
        }
        let durable = batches == Some(i + 1) || last_sync.elapsed() >= Duration::from_secs(1);
        st.write(&items, durable);
        if durable {
            last_sync = Instant::now();
        }
        busy += t0.elapsed();
        i += 1;
        after((i * SPANS_PER_BATCH) as usize);
    }
    (busy, raw)
}

fn read_back(st: &dyn Store, lz4: bool) -> (usize, usize, u64) {
    let (mut vals, mut bytes) = (0usize, 0u64);
    let traces = st.read_all(&mut |v| {
        vals += 1;
        bytes += if lz4 {
            lz4_flex::decompress_size_prepended(v).unwrap().len() as u64
        } else {
            v.len() as u64
        };
    });
    (traces, vals, bytes)
}

#[derive(Default)]
struct Row {
    name: String,
    rate: f64,
    avg_json: f64,
    bps_open: f64,
    bps_closed: f64,
    close_s: f64,
    open_s: f64,
    read_s: f64,
    del_s: f64,
    bps_del: f64,
    reclaim_s: f64,
    bps_reclaim: f64,
    crash: String,
}

fn run(engine: &str, lz4: bool, n: usize, root: &Path, crash_secs: u64) -> Row {
    let name = format!("{engine}/{}", if lz4 { "b-lz4" } else { "a-raw" });
    let dir = root.join(name.replace('/', "-"));
    let _ = std::fs::remove_dir_all(&dir);
    let mb = |b: u64| b as f64 / n as f64;
    let mut row = Row {
        name: name.clone(),
        ..Default::default()
    };
    eprintln!("== {name}: ingest {n} spans");
    let mut st = open(engine, &dir);
    let (busy, raw) = ingest(st.as_mut(), Some(n), lz4, |_| {});
    row.rate = n as f64 / busy.as_secs_f64();
    row.avg_json = raw as f64 / n as f64;
    row.bps_open = mb(du(&dir));
    let t = Instant::now();
    st.close();
    row.close_s = t.elapsed().as_secs_f64();
    row.bps_closed = mb(du(&dir));
    eprintln!(
        "   {:.0} spans/s, {:.0} B/span open, {:.0} B/span closed",
        row.rate, row.bps_open, row.bps_closed
    );

    let t = Instant::now();
    let mut st = open(engine, &dir);
    row.open_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (traces, vals, bytes) = read_back(st.as_ref(), lz4);
    row.read_s = t.elapsed().as_secs_f64();
    assert_eq!(
        (traces, vals, bytes),
        (n / SPANS_PER_TRACE, n / SPANS_PER_TRACE, raw),
        "read-back mismatch"
    );
    eprintln!(
        "   reopen {:.3}s + read {:.2}s ({traces} traces verified)",
        row.open_s, row.read_s
    );

    let t = Instant::now();
    let victims = st.arrivals(n / SPANS_PER_TRACE / 10);
    for chunk in victims.chunks(1000) {
        st.delete(chunk);
    }
    row.del_s = t.elapsed().as_secs_f64();
    st.close();
    row.bps_del = mb(du(&dir));
    let mut st = open(engine, &dir);
    let t = Instant::now();
    st.reclaim();
    row.reclaim_s = t.elapsed().as_secs_f64();
    st.close();
    row.bps_reclaim = mb(du(&dir));
    let st = open(engine, &dir);
    let (left, _, _) = read_back(st.as_ref(), lz4);
    assert_eq!(left, n / SPANS_PER_TRACE - victims.len());
    drop(st);
    eprintln!(
        "   delete 10% {:.2}s -> {:.0} B/span; reclaim {:.2}s -> {:.0} B/span",
        row.del_s, row.bps_del, row.reclaim_s, row.bps_reclaim
    );
    let _ = std::fs::remove_dir_all(&dir);
    row.crash = crash_check(engine, lz4, &dir, crash_secs);
    eprintln!("   crash: {}", row.crash);
    let _ = std::fs::remove_dir_all(&dir);
    row
}

fn crash_check(engine: &str, lz4: bool, dir: &Path, secs: u64) -> String {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child",
            engine,
            if lz4 { "lz4" } else { "raw" },
            dir.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let reported = Arc::new(AtomicU64::new(0));
    let out = child.stdout.take().unwrap();
    let rep = reported.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = line.trim().parse::<u64>() {
                rep.store(v, Ordering::Relaxed);
            }
        }
    });
    std::thread::sleep(Duration::from_secs(secs));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    let reported = reported.load(Ordering::Relaxed);
    let t = Instant::now();
    let res = std::panic::catch_unwind(|| {
        let st = open(engine, dir);
        let open_s = t.elapsed().as_secs_f64();
        let (traces, vals, _) = read_back(st.as_ref(), lz4);
        (open_s, traces, vals)
    });
    match res {
        Ok((open_s, traces, vals)) => {
            let kept = (vals * SPANS_PER_TRACE) as u64;
            let ok = if traces == vals {
                "clean"
            } else {
                "INCONSISTENT index"
            };
            let lost = reported.saturating_sub(kept);
            let loss = if lost == 0 {
                "no loss".to_string()
            } else {
                format!(
                    "lost {lost} = {:.2}s of writes",
                    lost as f64 * secs as f64 / reported.max(1) as f64
                )
            };
            format!("{ok}, open {open_s:.2}s, kept {kept} of {reported} reported: {loss}")
        }
        Err(_) => format!("FAILED to open/read after kill ({reported} reported)"),
    }
}

fn child(engine: &str, lz4: bool, dir: &Path) {
    use std::io::Write;
    let _ = std::fs::remove_dir_all(dir);
    let mut st = open(engine, dir);
    let stdout = std::io::stdout();
    ingest(st.as_mut(), None, lz4, |n| {
        let mut o = stdout.lock();
        let _ = writeln!(o, "{n}");
        let _ = o.flush();
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        return child(&args[2], args[3] == "lz4", Path::new(&args[4]));
    }
    if args.get(1).map(String::as_str) == Some("sample") {
        return println!(
            "{}",
            String::from_utf8(Gen::new(0x5eed).trace().val).unwrap()
        );
    }
    let opt = |k: &str, d: &str| -> String {
        args.iter()
            .position(|a| a == k)
            .map(|i| args[i + 1].clone())
            .unwrap_or_else(|| d.to_string())
    };
    let n: usize = opt("--n", "1000000").parse().unwrap();
    let root = PathBuf::from(opt("--dir", "/tmp/engines-bench-data"));
    let crash_secs: u64 = opt("--crash-secs", "3").parse().unwrap();
    let engines = opt("--engines", "fjall,redb,sqlite");
    let variants = opt("--variants", "a,b");
    let mut rows = vec![];
    for e in engines.split(',') {
        for v in variants.split(',') {
            rows.push(run(e, v == "b", n, &root, crash_secs));
        }
    }
    println!(
        "\nspans={n}  (B/span = du of store dir / spans; avg raw JSON/span = {:.0} B)\n",
        rows[0].avg_json
    );
    println!(
        "| engine/variant | ingest spans/s | B/span open | B/span closed (close s) | reopen s | read s | delete 10% s | B/span after delete | reclaim s -> B/span | crash (SIGKILL after {crash_secs}s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} ({:.2}) | {:.3} | {:.2} | {:.2} | {:.0} | {:.2} -> {:.0} | {} |",
            r.name,
            r.rate,
            r.bps_open,
            r.bps_closed,
            r.close_s,
            r.open_s,
            r.read_s,
            r.del_s,
            r.bps_del,
            r.reclaim_s,
            r.bps_reclaim,
            r.crash
        );
    }
}
