//! Span-store benchmark: fjall vs redb vs SQLite (see README.md).
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SPANS_PER_TRACE: usize = 10;
const TRACES_PER_BATCH: usize = 10;
const SPANS_PER_BATCH: usize = SPANS_PER_TRACE * TRACES_PER_BATCH;

// ---------------------------------------------------------------- data generator
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// (service, span name, kind, remote service, remote port)
const OPS: [(&str, &str, &str, &str, u16); 10] = [
    ("api", "GET /v1/forecast", "SERVER", "console", 0),
    ("api", "redis.lpush", "PRODUCER", "redis", 6379),
    ("worker", "weather.job", "CONSUMER", "redis", 6379),
    ("worker", "weather.fetch", "CLIENT", "weather-stub", 8080),
    ("worker", "redis.set", "CLIENT", "redis", 6379),
    ("worker", "job.complete", "PRODUCER", "redis", 6379),
    ("alerts", "alerts.evaluate", "CONSUMER", "redis", 6379),
    ("alerts", "redis.get", "CLIENT", "redis", 6379),
    ("console", "console.render", "SERVER", "api", 8080),
    ("console", "trace.query", "CLIENT", "api", 8080),
];

struct Item {
    trace: [u8; 16],
    seq: u64,
    val: Vec<u8>,
}

struct Gen {
    r: Rng,
    seq: u64,
    ts: u64,
}

impl Gen {
    fn new(seed: u64) -> Self {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        (0..16).for_each(|_| {
            r.next();
        });
        Gen {
            r,
            seq: 0,
            ts: 1_714_000_000_000_000,
        }
    }
    fn uuid(&mut self, s: &mut String) {
        let (a, b) = (self.r.next(), self.r.next());
        let _ = write!(
            s,
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0x3fff | 0x8000,
            b & 0xffff_ffff_ffff
        );
    }
    /// One trace = JSON array of 10 Zipkin v2 spans.
    fn trace(&mut self) -> Item {
        let trace = ((self.r.next() as u128) << 64 | self.r.next() as u128).to_be_bytes();
        let ids: Vec<u64> = (0..SPANS_PER_TRACE).map(|_| self.r.next()).collect();
        self.ts += self.r.below(20_000);
        let mut s = String::with_capacity(6000);
        s.push('[');
        for i in 0..SPANS_PER_TRACE {
            let (svc, name, kind, rsvc, rport) = OPS[i];
            let ts = self.ts + i as u64 * 150 + self.r.below(900);
            if i > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "{{\"traceId\":\"{:032x}\",\"id\":\"{:016x}\"",
                u128::from_be_bytes(trace),
                ids[i]
            );
            if i > 0 {
                let _ = write!(s, ",\"parentId\":\"{:016x}\"", ids[(i - 1) / 2]);
            }
            let _ = write!(
                s,
                ",\"kind\":\"{kind}\",\"name\":\"{name}\",\"timestamp\":{ts},\"duration\":{}",
                50 + self.r.below(250_000)
            );
            let _ = write!(
                s,
                ",\"localEndpoint\":{{\"serviceName\":\"{svc}\",\"ipv4\":\"10.0.{}.{}\"}}",
                self.r.below(8),
                2 + self.r.below(250)
            );
            let _ = write!(
                s,
                ",\"remoteEndpoint\":{{\"serviceName\":\"{rsvc}\",\"ipv4\":\"10.0.{}.{}\"",
                self.r.below(8),
                2 + self.r.below(250)
            );
            if rport > 0 {
                let _ = write!(s, ",\"port\":{rport}");
            }
            s.push('}');
            if i % 3 == 1 {
                let _ = write!(
                    s,
                    ",\"annotations\":[{{\"timestamp\":{},\"value\":\"job.enqueued\"}}]",
                    ts + self.r.below(5000)
                );
            }
            let _ = write!(
                s,
                ",\"tags\":{{\"otel.library.name\":\"{svc}\",\"thread.id\":\"{}\",\"busy_ns\":\"{}\",\"idle_ns\":\"{}\",\"job.id\":\"",
                self.r.below(32),
                self.r.below(10_000_000),
                self.r.below(100_000_000)
            );
            self.uuid(&mut s);
            s.push('"');
            let (start, extra) = (self.r.below(8), 1 + self.r.below(5)); // 6..=10 tags total
            for k in 0..extra {
                match (start + k) % 8 {
                    0 => s.push_str(",\"messaging.system\":\"redis\""),
                    1 => {
                        let (la, lo) = (
                            self.r.below(180_000_000) as f64 / 1e6 - 90.0,
                            self.r.below(360_000_000) as f64 / 1e6 - 180.0,
                        );
                        let _ = write!(
                            s,
                            ",\"http.url\":\"http://127.0.0.1:8080/v1/forecast?latitude={la:.4}&longitude={lo:.4}\""
                        );
                    }
                    2 => s.push_str(",\"http.method\":\"GET\""),
                    3 => {
                        let _ = write!(
                            s,
                            ",\"http.status_code\":\"{}\"",
                            if self.r.below(20) == 0 { 503 } else { 200 }
                        );
                    }
                    4 => {
                        let _ = write!(
                            s,
                            ",\"code.filepath\":\"{svc}/src/{}.rs\"",
                            ["jobs", "routes", "queue", "store"][self.r.below(4) as usize]
                        );
                    }
                    5 => {
                        let _ = write!(s, ",\"code.lineno\":\"{}\"", 10 + self.r.below(900));
                    }
                    6 => s.push_str(",\"otel.status_code\":\"OK\""),
                    _ => {
                        let _ = write!(s, ",\"net.peer.name\":\"{rsvc}\"");
                    }
                }
            }
            s.push_str("}}");
        }
        s.push(']');
        self.seq += 1;
        Item {
            trace,
            seq: self.seq,
            val: s.into_bytes(),
        }
    }
    fn batch(&mut self) -> Vec<Item> {
        (0..TRACES_PER_BATCH).map(|_| self.trace()).collect()
    }
}

fn span_key(t: &[u8; 16], seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(t);
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}
fn arr_key(seq: u64, t: &[u8; 16]) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&seq.to_be_bytes());
    k[8..].copy_from_slice(t);
    k
}
fn parse_arr(k: &[u8]) -> (u64, [u8; 16]) {
    (
        u64::from_be_bytes(k[..8].try_into().unwrap()),
        k[8..24].try_into().unwrap(),
    )
}

// ---------------------------------------------------------------- engines
trait Store {
    /// One atomic write per batch. `durable`: this is the once-a-second (or final) fsync point.
    fn write(&mut self, batch: &[Item], durable: bool);
    /// Oldest `limit` entries of the arrival index.
    fn arrivals(&self, limit: usize) -> Vec<(u64, [u8; 16])>;
    /// Scan the arrival index, then read each trace's values by prefix; returns #traces.
    fn read_all(&self, f: &mut dyn FnMut(&[u8])) -> usize;
    /// Delete traces (prefix + arrival entry) in one transaction.
    fn delete(&mut self, traces: &[(u64, [u8; 16])]);
    /// Explicit space reclamation (fjall major compaction, redb compact, SQLite VACUUM).
    fn reclaim(&mut self);
    /// Engine's own flush/checkpoint on close.
    fn close(self: Box<Self>);
}

struct Fjall {
    db: fjall::Database,
    spans: fjall::Keyspace,
    arr: fjall::Keyspace,
}
impl Store for Fjall {
    fn write(&mut self, batch: &[Item], durable: bool) {
        // db.batch() has durability Some(PersistMode::Buffer) unless manual_journal_persist:
        // the journal BufWriter is flushed to the OS (write(2)) at every commit.
        let mut b = self.db.batch();
        for it in batch {
            b.insert(&self.spans, span_key(&it.trace, it.seq), it.val.as_slice());
            b.insert(&self.arr, arr_key(it.seq, &it.trace), &[][..]);
        }
        b.commit().unwrap();
        if durable {
            self.db.persist(fjall::PersistMode::SyncAll).unwrap();
        }
    }
    fn arrivals(&self, limit: usize) -> Vec<(u64, [u8; 16])> {
        self.arr
            .iter()
            .take(limit)
            .map(|g| parse_arr(&g.key().unwrap()))
            .collect()
    }
    fn read_all(&self, f: &mut dyn FnMut(&[u8])) -> usize {
        let arr = self.arrivals(usize::MAX);
        for (_, t) in &arr {
            for g in self.spans.prefix(t) {
                f(&g.into_inner().unwrap().1);
            }
        }
        arr.len()
    }
    fn delete(&mut self, traces: &[(u64, [u8; 16])]) {
        let mut b = self.db.batch();
        for (seq, t) in traces {
            for g in self.spans.prefix(t) {
                b.remove(&self.spans, g.key().unwrap());
            }
            b.remove(&self.arr, arr_key(*seq, t));
        }
        b.commit().unwrap();
        self.db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    fn reclaim(&mut self) {
        for ks in [&self.spans, &self.arr] {
            ks.rotate_memtable_and_wait().unwrap();
            ks.major_compact().unwrap();
        }
    }
    fn close(self: Box<Self>) {
        // Flush memtables to tables and let background compactions settle, then drop
        // (drop persists the journal with SyncAll).
        for ks in [&self.spans, &self.arr] {
            ks.rotate_memtable_and_wait().unwrap();
        }
        while self.db.active_compactions() > 0 || self.db.outstanding_flushes() > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
}

const SPANS_T: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("spans");
const ARR_T: redb::TableDefinition<&[u8], ()> = redb::TableDefinition::new("arrivals");
struct Redb {
    db: redb::Database,
    immediate_each_batch: bool,
}
impl Store for Redb {
    fn write(&mut self, batch: &[Item], durable: bool) {
        let mut tx = self.db.begin_write().unwrap();
        if !durable && !self.immediate_each_batch {
            tx.set_durability(redb::Durability::None).unwrap();
        }
        {
            let mut s = tx.open_table(SPANS_T).unwrap();
            let mut a = tx.open_table(ARR_T).unwrap();
            for it in batch {
                s.insert(&span_key(&it.trace, it.seq)[..], it.val.as_slice())
                    .unwrap();
                a.insert(&arr_key(it.seq, &it.trace)[..], ()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn arrivals(&self, limit: usize) -> Vec<(u64, [u8; 16])> {
        use redb::{ReadableDatabase, ReadableTable};
        let tx = self.db.begin_read().unwrap();
        let a = tx.open_table(ARR_T).unwrap();
        a.iter()
            .unwrap()
            .take(limit)
            .map(|r| parse_arr(r.unwrap().0.value()))
            .collect()
    }
    fn read_all(&self, f: &mut dyn FnMut(&[u8])) -> usize {
        use redb::{ReadableDatabase, ReadableTable};
        let tx = self.db.begin_read().unwrap();
        let (a, s) = (
            tx.open_table(ARR_T).unwrap(),
            tx.open_table(SPANS_T).unwrap(),
        );
        let arr: Vec<_> = a
            .iter()
            .unwrap()
            .map(|r| parse_arr(r.unwrap().0.value()))
            .collect();
        for (_, t) in &arr {
            let (lo, hi) = (span_key(t, 0), span_key(t, u64::MAX));
            for r in s.range(&lo[..]..=&hi[..]).unwrap() {
                f(r.unwrap().1.value());
            }
        }
        arr.len()
    }
    fn delete(&mut self, traces: &[(u64, [u8; 16])]) {
        let tx = self.db.begin_write().unwrap(); // Immediate
        {
            let mut s = tx.open_table(SPANS_T).unwrap();
            let mut a = tx.open_table(ARR_T).unwrap();
            for (seq, t) in traces {
                let (lo, hi) = (span_key(t, 0), span_key(t, u64::MAX));
                s.retain_in(&lo[..]..=&hi[..], |_, _| false).unwrap();
                a.remove(&arr_key(*seq, t)[..]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn reclaim(&mut self) {
        for _ in 0..4 {
            if !self.db.compact(redb::CompactionMode::Balanced).unwrap() {
                break;
            }
        }
    }
    fn close(self: Box<Self>) {
        self.db.close().unwrap();
    }
}

struct Sqlite {
    c: rusqlite::Connection,
}
impl Store for Sqlite {
    fn write(&mut self, batch: &[Item], _durable: bool) {
        // WAL + synchronous=NORMAL: every COMMIT write(2)s its frames to the WAL; fsync only at checkpoints.
        let tx = self.c.transaction().unwrap();
        {
            let mut s = tx
                .prepare_cached("INSERT INTO spans(trace, seq, body) VALUES (?1, ?2, ?3)")
                .unwrap();
            let mut a = tx
                .prepare_cached("INSERT INTO arrivals(seq, trace) VALUES (?1, ?2)")
                .unwrap();
            for it in batch {
                s.execute(rusqlite::params![&it.trace[..], it.seq as i64, &it.val[..]])
                    .unwrap();
                a.execute(rusqlite::params![it.seq as i64, &it.trace[..]])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn arrivals(&self, limit: usize) -> Vec<(u64, [u8; 16])> {
        let mut st = self
            .c
            .prepare("SELECT seq, trace FROM arrivals ORDER BY seq LIMIT ?1")
            .unwrap();
        let rows = st.query_map([limit.min(i64::MAX as usize) as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
        });
        rows.unwrap()
            .map(|r| {
                let (s, t) = r.unwrap();
                (s, t[..16].try_into().unwrap())
            })
            .collect()
    }
    fn read_all(&self, f: &mut dyn FnMut(&[u8])) -> usize {
        let arr = self.arrivals(usize::MAX);
        let mut st = self
            .c
            .prepare("SELECT body FROM spans WHERE trace = ?1 ORDER BY seq")
            .unwrap();
        for (_, t) in &arr {
            let mut rows = st.query([&t[..]]).unwrap();
            while let Some(row) = rows.next().unwrap() {
                f(row.get_ref(0).unwrap().as_blob().unwrap());
            }
        }
        arr.len()
    }
    fn delete(&mut self, traces: &[(u64, [u8; 16])]) {
        let tx = self.c.transaction().unwrap();
        {
            let mut s = tx
                .prepare_cached("DELETE FROM spans WHERE trace = ?1")
                .unwrap();
            let mut a = tx
                .prepare_cached("DELETE FROM arrivals WHERE seq = ?1")
                .unwrap();
            for (seq, t) in traces {
                s.execute([&t[..]]).unwrap();
                a.execute([*seq as i64]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn reclaim(&mut self) {
        self.c.execute_batch("VACUUM").unwrap();
    }
    fn close(self: Box<Self>) {
        // Closing the last connection checkpoints the WAL into the db file and deletes the WAL.
        self.c.close().map_err(|e| e.1).unwrap();
    }
}

fn open(engine: &str, dir: &Path) -> Box<dyn Store> {
    std::fs::create_dir_all(dir).unwrap();
    match engine {
        "fjall" => {
            let db = fjall::Database::builder(dir).open().unwrap();
            let spans = db
                .keyspace("spans", fjall::KeyspaceCreateOptions::default)
                .unwrap();
            let arr = db
                .keyspace("arrivals", fjall::KeyspaceCreateOptions::default)
                .unwrap();
            Box::new(Fjall { db, spans, arr })
        }
        "redb" | "redb-imm" => {
            let db = redb::Database::create(dir.join("db.redb")).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(SPANS_T).unwrap();
            tx.open_table(ARR_T).unwrap();
            tx.commit().unwrap();
            Box::new(Redb {
                db,
                immediate_each_batch: engine == "redb-imm",
            })
        }
        "sqlite" | "sqlite-rowid" => {
            let c = rusqlite::Connection::open(dir.join("db.sqlite")).unwrap();
            c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
                .unwrap();
            if engine == "sqlite" {
                c.execute_batch("CREATE TABLE IF NOT EXISTS spans(trace BLOB NOT NULL, seq INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY(trace, seq)) WITHOUT ROWID;").unwrap();
            } else {
                // rowid table (SQLite's advice for rows > ~1/20 page) + covering index on (trace, seq)
                c.execute_batch("CREATE TABLE IF NOT EXISTS spans(trace BLOB NOT NULL, seq INTEGER NOT NULL, body BLOB NOT NULL);
                                 CREATE INDEX IF NOT EXISTS spans_trace ON spans(trace, seq);").unwrap();
            }
            c.execute_batch("CREATE TABLE IF NOT EXISTS arrivals(seq INTEGER PRIMARY KEY, trace BLOB NOT NULL);").unwrap();
            Box::new(Sqlite { c })
        }
        e => panic!("unknown engine {e}"),
    }
}

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
