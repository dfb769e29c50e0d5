//! The trace store's copy on disk (`CONSOLE_DATA_DIR`), in fjall, an
//! embedded log-structured key-value store (Rust, lz4-compressed blocks,
//! a journal that recovers after a crash).
//!
//! The memory store stays the one that answers; the disk holds exactly
//! what it holds, so that a restart reads it back:
//!
//! - Each ingest writes, in one atomic batch, one record per trace it
//!   touched: key `arrived ++ batch` (two big-endian u64: the trace's
//!   arrival number and the batch's, both microseconds since the epoch,
//!   made unique), value the trace's spans of that batch as Zipkin v2 JSON,
//!   as the store answers them (cut and normalised). The same batch
//!   deletes the records of every trace the memory store evicted.
//! - Keys sort by arrival, so reopening is one scan in key order: each
//!   trace's records come together, oldest trace first, and go back
//!   through the memory store's own ingest, which rebuilds its indexes.
//!   Traces older than the retention are dropped on the way.
//! - A batch is written to the operating system before the ingest
//!   answers (fjall's default), so a killed process loses nothing that was
//!   acknowledged; the journal is synced to the device once a second
//!   ([`Disk::sync`]), so a power cut loses at most that second.

use std::path::Path;

use fjall::config::CompressionPolicy;
use fjall::{CompressionType, Database, Keyspace, KeyspaceCreateOptions, PersistMode};

/// A record's key: the trace's arrival number, then the batch's.
pub(crate) fn key(arrived: u64, batch: u64) -> [u8; 16] {
    let mut k = [0; 16];
    k[..8].copy_from_slice(&arrived.to_be_bytes());
    k[8..].copy_from_slice(&batch.to_be_bytes());
    k
}

fn split(key: &[u8]) -> Option<(u64, u64)> {
    let arrived = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let batch = u64::from_be_bytes(key.get(8..16)?.try_into().ok()?);
    Some((arrived, batch))
}

/// Why the disk could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("the trace store on disk: {0}")]
pub struct DiskError(#[from] fjall::Error);

/// The store's directory, open.
pub(crate) struct Disk {
    db: Database,
    records: Keyspace,
}

impl Disk {
    /// Opens (or creates) the store in `dir`, recovering its journal.
    pub(crate) fn open(dir: &Path) -> Result<Self, DiskError> {
        let db = Database::builder(dir).open()?;
        // lz4 in every level (fjall's default leaves the first two raw):
        // span JSON shrinks about threefold, for little CPU.
        let records = db.keyspace("spans", || {
            KeyspaceCreateOptions::default()
                .data_block_compression_policy(CompressionPolicy::all(CompressionType::Lz4))
        })?;
        Ok(Self { db, records })
    }

    /// Writes `puts` and deletes every record of the traces that arrived
    /// at `gone`, in one atomic batch.
    pub(crate) fn commit(
        &self,
        puts: Vec<([u8; 16], Vec<u8>)>,
        gone: &[u64],
    ) -> Result<(), DiskError> {
        let mut batch = self.db.batch();
        for (k, v) in puts {
            batch.insert(&self.records, k, v);
        }
        for arrived in gone {
            for kv in self.records.prefix(arrived.to_be_bytes()) {
                batch.remove(&self.records, kv.key()?);
            }
        }
        Ok(batch.commit()?)
    }

    /// Calls `f(arrived, batch, value)` for every record, in key order.
    pub(crate) fn scan(&self, mut f: impl FnMut(u64, u64, &[u8])) -> Result<(), DiskError> {
        for kv in self.records.iter() {
            let (k, v) = kv.into_inner()?;
            if let Some((arrived, batch)) = split(&k) {
                f(arrived, batch, &v);
            }
        }
        Ok(())
    }

    /// Syncs the journal to the device.
    pub(crate) fn sync(&self) -> Result<(), DiskError> {
        Ok(self.db.persist(PersistMode::SyncData)?)
    }

    /// The bytes the directory holds now (tables and journal).
    pub(crate) fn space(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_arrival_then_batch() {
        let mut keys = [key(2, 1), key(1, 9), key(1, 3), key(256, 0)];
        keys.sort();
        let split: Vec<_> = keys.iter().filter_map(|k| split(k)).collect();
        assert_eq!(split, [(1, 3), (1, 9), (2, 1), (256, 0)]);
    }
}
