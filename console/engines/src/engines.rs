//! The three engines behind one trait.

use std::path::Path;
use std::time::Duration;

use crate::workload::*;

// ---------------------------------------------------------------- engines
pub(crate) trait Store {
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

pub(crate) struct Fjall {
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

pub(crate) const SPANS_T: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("spans");
pub(crate) const ARR_T: redb::TableDefinition<&[u8], ()> = redb::TableDefinition::new("arrivals");
pub(crate) struct Redb {
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

pub(crate) struct Sqlite {
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

pub(crate) fn open(engine: &str, dir: &Path) -> Box<dyn Store> {
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
