//! The embedded trace store: spans in memory, at most a set number of
//! them, the oldest traces evicted first, queried the way Zipkin's v2 API
//! asks.
//!
//! A span is kept compact: ids and times as integers, every string (names,
//! tag keys and values, annotation values, addresses) as a 4-byte symbol of
//! a reference-counted [`intern::Interner`], so a string repeated across
//! spans is stored once and freed with the last span that uses it.
//! Services, span names and autocomplete values are counted, so the
//! indexes shrink with eviction too.
//!
//! Bounds, whatever comes in:
//!
//! - **Spans and bytes.** At most `max_spans` spans and `max_bytes` bytes,
//!   counted from what the store keeps (each distinct string once with its
//!   slot, each span's record, each trace's entry); the oldest traces go
//!   first.
//! - **Values.** A tag value or annotation longer than
//!   [`MAX_VALUE_BYTES`], and a name, tag key or service longer than
//!   [`MAX_NAME_BYTES`], is cut (ending in `…`), and the span gets the tag
//!   [`TRUNCATED_TAG`] with the number of strings cut.
//! - **Time under the lock.** Searches, the service graph and the queue
//!   wait chart go over the traces in pieces of [`PIECE`] traces, taking
//!   the lock for each piece, so an ingest waits for one piece at most; the
//!   service graph links each trace in time linear in its size. The counts
//!   ([`Store::stats`]) are read without the lock.

mod disk;
mod ingest;
mod intern;
mod links;
pub mod model;
mod output;
mod persist;
mod query;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use intern::{Interner, Sym};
use model::{Kind, Span, SpanError, SpanIn, TraceId, prepare};

pub use disk::DiskError;
pub use model::DependencyLink;
pub use persist::{DiskOptions, Reopened};
pub use query::{QueryError, TraceQuery};

/// Longest tag value or annotation kept, in bytes; longer ones are cut.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
/// Longest span name, service name or tag key kept, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// The tag a span gets when strings of it were cut: how many.
pub const TRUNCATED_TAG: &str = "console.truncated";
/// Traces a search or the service graph reads under one taking of the
/// lock.
pub const PIECE: usize = 2048;

/// What one ingest did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Spans stored.
    pub spans: usize,
    /// Traces evicted to stay within the cap.
    pub evicted_traces: usize,
    /// Spans those traces held.
    pub evicted_spans: usize,
}

/// How full the store is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Spans stored.
    pub spans: usize,
    /// Traces stored.
    pub traces: usize,
    /// Distinct strings stored.
    pub strings: usize,
    /// Bytes the store counts against its cap.
    pub bytes: usize,
    /// Bytes of span records on disk, counted against the disk's cap (0
    /// without one).
    pub disk_bytes: u64,
    /// Writes to disk that failed since the start.
    pub disk_errors: u64,
}

/// [`StoreStats`], kept beside the lock so reading them never waits.
#[derive(Debug, Default)]
struct Counts {
    spans: AtomicUsize,
    traces: AtomicUsize,
    strings: AtomicUsize,
    bytes: AtomicUsize,
    disk_bytes: AtomicU64,
    disk_errors: AtomicU64,
}

/// An endpoint, every part a symbol ([`Sym::NONE`] when absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Ep {
    service: Sym,
    ipv4: Sym,
    ipv6: Sym,
    port: u16,
}

impl Ep {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One stored span.
#[derive(Debug)]
struct SpanRec {
    id: u64,
    /// 0 for a root.
    parent: u64,
    /// Epoch µs; 0 when unknown.
    timestamp: u64,
    /// µs; 0 when unknown.
    duration: u64,
    name: Sym,
    kind: Option<Kind>,
    debug: bool,
    shared: bool,
    local: Ep,
    remote: Ep,
    /// By time.
    annotations: Box<[(u64, Sym)]>,
    /// By key.
    tags: Box<[(Sym, Sym)]>,
}

impl SpanRec {
    fn tag(&self, key: Sym) -> Option<Sym> {
        self.tags
            .binary_search_by_key(&key, |(k, _)| *k)
            .ok()
            .map(|i| self.tags[i].1)
    }

    fn has_error(&self, error: Option<Sym>) -> bool {
        error.is_some_and(|e| self.tag(e).is_some())
    }
}

/// The spans of one trace, in arrival order.
#[derive(Debug)]
struct TraceRec {
    spans: Vec<SpanRec>,
    /// When it arrived: epoch µs, unique per trace (the next number when
    /// two come in the same microsecond).
    arrived: u64,
    /// What its records cost on disk (0 without a disk).
    disk_bytes: u64,
}

impl TraceRec {
    /// The earliest span timestamp (0 when none has one).
    fn timestamp(&self) -> u64 {
        self.spans
            .iter()
            .map(|s| s.timestamp)
            .filter(|t| *t > 0)
            .min()
            .unwrap_or(0)
    }
}

/// The store's state, behind one lock.
struct Inner {
    strings: Interner,
    traces: HashMap<TraceId, TraceRec>,
    /// Traces by first arrival: eviction takes the front.
    order: VecDeque<TraceId>,
    spans: usize,
    max_spans: usize,
    /// What the span records and trace entries cost (the strings count
    /// theirs in the interner).
    record_bytes: usize,
    max_bytes: usize,
    /// Spans per local service name.
    services: HashMap<Sym, u32>,
    /// Spans per (local service, span name).
    names: HashMap<(Sym, Sym), u32>,
    /// The tag keys whose values are offered for autocompletion.
    autocomplete_keys: Vec<Sym>,
    /// Spans per (autocomplete key, value).
    autocomplete: HashMap<(Sym, Sym), u32>,
    /// The last arrival or batch number given ([`Inner::next_seq`]).
    seq: u64,
    /// What the records on disk cost (key and value bytes).
    disk_bytes: u64,
    /// The cap on it (`u64::MAX` without a disk).
    max_disk_bytes: u64,
}

/// The trace store. Ingest and queries may run from many tasks at once.
pub struct Store {
    inner: RwLock<Inner>,
    counts: Counts,
    /// The copy on disk, with the retention in µs.
    disk: Option<(disk::Disk, u64)>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Store {
    /// A store keeping at most `max_spans` spans, offering the values of
    /// `autocomplete_keys` for autocompletion.
    /// The byte cap is [`Self::DEFAULT_MAX_BYTES`] until
    /// [`Self::with_max_bytes`].
    pub fn new(max_spans: usize, autocomplete_keys: &[String]) -> Self {
        let mut strings = Interner::default();
        let autocomplete_keys = autocomplete_keys
            .iter()
            .filter(|k| !k.is_empty())
            .map(|k| strings.intern(k))
            .collect();
        Self {
            inner: RwLock::new(Inner {
                strings,
                traces: HashMap::new(),
                order: VecDeque::new(),
                spans: 0,
                max_spans: max_spans.max(1),
                record_bytes: 0,
                max_bytes: Self::DEFAULT_MAX_BYTES,
                services: HashMap::new(),
                names: HashMap::new(),
                autocomplete_keys,
                autocomplete: HashMap::new(),
                seq: 0,
                disk_bytes: 0,
                max_disk_bytes: u64::MAX,
            }),
            counts: Counts::default(),
            disk: None,
        }
    }

    /// The byte cap when none is given: 256 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 256 * 1024 * 1024;

    /// The store, keeping at most `max_bytes` bytes (see the module docs).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        inner.max_bytes = max_bytes.max(1);
        self
    }

    /// Runs `f` on the store on tokio's threads for blocking work, so the
    /// runtime's own threads (which answer `/healthz` and every page) never
    /// wait on the store's lock.
    pub async fn off_runtime<T, F>(self: &Arc<Self>, f: F) -> T
    where
        F: FnOnce(&Store) -> T + Send + 'static,
        T: Send + 'static,
    {
        let store = self.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent counts behind
        // at worst stale ones; keep serving.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `spans`, all or none: one malformed span refuses the batch.
    /// Then evicts the oldest traces until the store is within its caps,
    /// and writes what changed to disk (when kept there).
    pub fn ingest(&self, spans: Vec<SpanIn<'_>>) -> Result<Ingested, SpanError> {
        let prepared = spans
            .into_iter()
            .enumerate()
            .map(|(i, s)| prepare(i, s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut done = Ingested {
            spans: prepared.len(),
            ..Ingested::default()
        };
        let mut inner = self.write();
        // Each trace's spans of this batch, as answered, for the disk.
        let mut written: Vec<(TraceId, Vec<Span>)> = Vec::new();
        let mut slot: HashMap<TraceId, usize> = HashMap::new();
        for p in prepared {
            let trace = p.trace;
            inner.insert(p, None);
            if self.disk.is_some()
                && let Some(span) = inner.last_span_out(trace)
            {
                let i = *slot.entry(trace).or_insert_with(|| {
                    written.push((trace, Vec::new()));
                    written.len() - 1
                });
                written[i].1.push(span);
            }
        }
        let mut puts = Vec::with_capacity(written.len());
        if !written.is_empty() {
            let batch = inner.next_seq();
            for (trace, spans) in written {
                let Ok(value) = serde_json::to_vec(&spans) else {
                    continue;
                };
                let cost = (16 + value.len()) as u64;
                if let Some(t) = inner.traces.get_mut(&trace) {
                    t.disk_bytes += cost;
                    puts.push((trace, disk::key(t.arrived, batch), value));
                    inner.disk_bytes += cost;
                }
            }
        }
        let mut gone = Vec::new();
        let mut gone_ids = HashSet::new();
        while let Some((id, arrived, n)) = inner.evict_over_caps() {
            done.evicted_traces += 1;
            done.evicted_spans += n;
            gone.push(arrived);
            gone_ids.insert(id);
        }
        if let Some((disk, _)) = &self.disk {
            let puts = puts
                .into_iter()
                .filter(|(id, _, _)| !gone_ids.contains(id))
                .map(|(_, k, v)| (k, v))
                .collect();
            self.wrote(disk.commit(puts, &gone));
        }
        drop(inner);
        self.count();
        Ok(done)
    }

    /// Publishes the counts of [`Self::stats`].
    fn count(&self) {
        let inner = self.read();
        let c = &self.counts;
        c.spans.store(inner.spans, Ordering::Relaxed);
        c.traces.store(inner.traces.len(), Ordering::Relaxed);
        c.strings.store(inner.strings.len(), Ordering::Relaxed);
        c.bytes.store(inner.bytes(), Ordering::Relaxed);
        c.disk_bytes.store(
            if self.disk.is_some() {
                inner.disk_bytes
            } else {
                0
            },
            Ordering::Relaxed,
        );
    }

    /// How full the store is, as of the last ingest; never waits.
    pub fn stats(&self) -> StoreStats {
        let c = &self.counts;
        StoreStats {
            spans: c.spans.load(Ordering::Relaxed),
            traces: c.traces.load(Ordering::Relaxed),
            strings: c.strings.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            disk_bytes: c.disk_bytes.load(Ordering::Relaxed),
            disk_errors: c.disk_errors.load(Ordering::Relaxed),
        }
    }

    /// The ids of the stored traces, oldest first: what the queries that
    /// read every trace go through in pieces.
    fn trace_ids(&self) -> Vec<TraceId> {
        self.read().order.iter().copied().collect()
    }

    /// Local service names, sorted.
    pub fn services(&self) -> Vec<String> {
        let inner = self.read();
        let mut out: Vec<String> = inner
            .services
            .keys()
            .map(|s| inner.strings.get(*s).to_owned())
            .collect();
        out.sort();
        out
    }

    /// The span names of `service` (any case), sorted.
    pub fn span_names(&self, service: &str) -> Vec<String> {
        let inner = self.read();
        let Some(service) = inner.strings.lookup(&service.to_ascii_lowercase()) else {
            return Vec::new();
        };
        let mut out: Vec<String> = inner
            .names
            .keys()
            .filter(|(s, _)| *s == service)
            .map(|(_, n)| inner.strings.get(*n).to_owned())
            .collect();
        out.sort();
        out
    }

    /// One trace's spans, by time; `None` when unknown.
    pub fn trace(&self, id: TraceId) -> Option<Vec<Span>> {
        let inner = self.read();
        inner.traces.get(&id).map(|t| inner.trace_out(id, t))
    }

    /// The traces of `ids` that are stored, in the order asked.
    pub fn traces_by_id(&self, ids: &[TraceId]) -> Vec<Vec<Span>> {
        let inner = self.read();
        ids.iter()
            .filter_map(|id| inner.traces.get(id).map(|t| inner.trace_out(*id, t)))
            .collect()
    }

    /// The traces matching `q`, newest first (at most `q.limit`).
    pub fn traces(&self, q: &TraceQuery) -> Vec<Vec<Span>> {
        let ids = self.trace_ids();
        let mut found: Vec<(u64, TraceId)> = Vec::new();
        for piece in ids.rchunks(PIECE) {
            let inner = self.read();
            let Some(matcher) = query::Matcher::new(q, &inner.strings) else {
                continue;
            };
            for id in piece.iter().rev() {
                if found.len() >= q.limit {
                    break;
                }
                if let Some(trace) = inner.traces.get(id)
                    && matcher.matches(trace)
                {
                    found.push((trace.timestamp(), *id));
                }
            }
            if found.len() >= q.limit {
                break;
            }
        }
        found.sort_by(|a, b| b.cmp(a));
        let ids: Vec<TraceId> = found.into_iter().map(|(_, id)| id).collect();
        self.traces_by_id(&ids)
    }

    /// The service graph of the traces with a span in
    /// `[end_ts - lookback, end_ts]` (epoch milliseconds).
    pub fn dependencies(&self, end_ts_ms: u64, lookback_ms: u64) -> Vec<DependencyLink> {
        let (from, to) = query::window_us(end_ts_ms, lookback_ms);
        let ids = self.trace_ids();
        let mut links = links::Links::default();
        for piece in ids.chunks(PIECE) {
            let inner = self.read();
            let error = inner.strings.lookup("error");
            for trace in piece.iter().filter_map(|id| inner.traces.get(id)) {
                if trace
                    .spans
                    .iter()
                    .any(|s| s.timestamp >= from && s.timestamp <= to)
                {
                    links.link_trace(&trace.spans, error);
                }
            }
            // Symbols are only good while the lock is held.
            links.flush(&inner.strings);
        }
        links.into_list()
    }

    /// How long the CONSUMER spans of queue `queue` lasted (µs), for those
    /// that started in `[from_us, to_us)`.
    pub fn consumer_durations(&self, queue: &str, from_us: u64, to_us: u64) -> Vec<u64> {
        let ids = self.trace_ids();
        let mut out = Vec::new();
        for piece in ids.chunks(PIECE) {
            let inner = self.read();
            let (Some(key), Some(value)) = (
                inner.strings.lookup("messaging.destination.name"),
                inner.strings.lookup(queue),
            ) else {
                continue;
            };
            out.extend(
                piece
                    .iter()
                    .filter_map(|id| inner.traces.get(id))
                    .flat_map(|t| t.spans.iter())
                    .filter(|s| {
                        s.kind == Some(Kind::Consumer)
                            && s.timestamp >= from_us
                            && s.timestamp < to_us
                            && s.duration > 0
                            && s.tag(key) == Some(value)
                    })
                    .map(|s| s.duration),
            );
        }
        out
    }

    /// The tag keys offered for autocompletion.
    pub fn autocomplete_keys(&self) -> Vec<String> {
        let inner = self.read();
        inner
            .autocomplete_keys
            .iter()
            .map(|k| inner.strings.get(*k).to_owned())
            .collect()
    }

    /// The values seen for autocomplete key `key`, sorted (none for a key
    /// not configured).
    pub fn autocomplete_values(&self, key: &str) -> Vec<String> {
        let inner = self.read();
        let Some(key) = inner.strings.lookup(key) else {
            return Vec::new();
        };
        let mut out: Vec<String> = inner
            .autocomplete
            .keys()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| inner.strings.get(*v).to_owned())
            .collect();
        out.sort();
        out
    }
}

/// Microseconds since the Unix epoch, now.
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
