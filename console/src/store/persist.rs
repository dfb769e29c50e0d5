//! The store's life on disk (`CONSOLE_DATA_DIR`): reading it back at
//! start, expiring what is past the retention, syncing the journal, and
//! counting failed writes. The records themselves are `disk.rs`'s.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::disk::{self, DiskError};
use super::model::{SpanIn, prepare};
use super::{Store, now_us};

/// Where and how long the store keeps its spans on disk.
#[derive(Debug, Clone)]
pub struct DiskOptions {
    /// The directory (created when missing).
    pub dir: PathBuf,
    /// Most bytes of span records kept (keys and values as written; the
    /// engine compresses them): the oldest traces go first.
    pub max_bytes: u64,
    /// How long a trace is kept after it arrived.
    pub retention: std::time::Duration,
}

/// What reopening the store found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reopened {
    /// Spans read back.
    pub spans: usize,
    /// Traces read back.
    pub traces: usize,
    /// Traces dropped on the way: past the retention, or over a cap.
    pub dropped_traces: usize,
    /// Records that did not parse (and were dropped).
    pub bad_records: usize,
}

impl Store {
    /// The store, kept on disk in `options.dir` too, and read back from
    /// it: what an earlier run kept, within the retention and the caps.
    pub fn with_disk(mut self, options: &DiskOptions) -> Result<(Self, Reopened), DiskError> {
        let disk = disk::Disk::open(&options.dir)?;
        let retention = u64::try_from(options.retention.as_micros()).unwrap_or(u64::MAX);
        let cutoff = now_us().saturating_sub(retention);
        let mut reopened = Reopened::default();
        let mut gone: Vec<u64> = Vec::new();
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        inner.max_disk_bytes = options.max_bytes;
        // The arrival of the trace being read back.
        let mut current = None;
        disk.scan(|arrived, batch, value| {
            inner.seq = inner.seq.max(arrived).max(batch);
            if gone.last() == Some(&arrived) {
                return;
            }
            if arrived < cutoff {
                gone.push(arrived);
                return;
            }
            let Ok(spans) = serde_json::from_slice::<Vec<SpanIn<'_>>>(value) else {
                // A trace whose first record is lost goes; a later record
                // lost leaves the rest of its trace.
                reopened.bad_records += 1;
                if current != Some(arrived) {
                    gone.push(arrived);
                }
                return;
            };
            let mut trace = None;
            for (i, span) in spans.into_iter().enumerate() {
                if let Ok(mut p) = prepare(i, span) {
                    p.trusted = true;
                    trace = Some(p.trace);
                    inner.insert(p, Some(arrived));
                }
            }
            if let Some(t) = trace.and_then(|t| inner.traces.get_mut(&t)) {
                current = Some(arrived);
                let cost = (16 + value.len()) as u64;
                t.disk_bytes += cost;
                inner.disk_bytes += cost;
            }
        })?;
        // Traces cut off above, and the ones over the caps, leave the disk.
        let mut dropped: HashSet<u64> = gone.iter().copied().collect();
        while let Some((_, arrived, _)) = inner.evict_over_caps() {
            dropped.insert(arrived);
        }
        reopened.dropped_traces = dropped.len();
        reopened.spans = inner.spans;
        reopened.traces = inner.traces.len();
        let dropped: Vec<u64> = dropped.into_iter().collect();
        disk.commit(Vec::new(), &dropped)?;
        self.disk = Some((disk, retention));
        self.count();
        Ok((self, reopened))
    }

    /// Counts a failed write to disk, and logs it.
    pub(super) fn wrote(&self, result: Result<(), DiskError>) {
        if let Err(e) = result {
            self.counts.disk_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "writing spans to disk failed; they are kept in memory only");
        }
    }

    /// Evicts the traces that arrived longer ago than the disk's retention
    /// (none without a disk: the memory store keeps traces until its caps
    /// push them out); answers how many.
    pub fn expire(&self) -> usize {
        let Some((disk, retention)) = &self.disk else {
            return 0;
        };
        let cutoff = now_us().saturating_sub(*retention);
        let mut inner = self.write();
        let mut gone = Vec::new();
        while let Some(id) = inner.order.front().copied() {
            if inner.traces.get(&id).is_some_and(|t| t.arrived >= cutoff) {
                break;
            }
            match inner.evict_oldest() {
                Some((_, arrived, _)) => gone.push(arrived),
                None => break,
            }
        }
        if !gone.is_empty() {
            self.wrote(disk.commit(Vec::new(), &gone));
        }
        drop(inner);
        self.count();
        gone.len()
    }

    /// Syncs the disk's journal to the device (nothing without a disk),
    /// and answers the bytes its directory holds.
    pub fn sync(&self) -> Option<u64> {
        let (disk, _) = self.disk.as_ref()?;
        self.wrote(disk.sync());
        Some(disk.space())
    }
}
