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

mod intern;
mod links;
pub mod model;
mod output;
mod query;

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use intern::{Interner, Sym};
use model::{EndpointIn, Kind, Prepared, Span, SpanError, SpanIn, TraceId, prepare};

pub use model::DependencyLink;
pub use query::{QueryError, TraceQuery};

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
#[derive(Debug, Default)]
struct TraceRec {
    spans: Vec<SpanRec>,
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
    /// Spans per local service name.
    services: HashMap<Sym, u32>,
    /// Spans per (local service, span name).
    names: HashMap<(Sym, Sym), u32>,
    /// The tag keys whose values are offered for autocompletion.
    autocomplete_keys: Vec<Sym>,
    /// Spans per (autocomplete key, value).
    autocomplete: HashMap<(Sym, Sym), u32>,
}

/// The trace store. Ingest and queries may run from many tasks at once.
pub struct Store {
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("stats", &self.stats())
            .finish()
    }
}

/// Counts `key` up (`add`) or down, forgetting it at zero.
fn tally<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: K, add: bool) {
    if add {
        *map.entry(key).or_insert(0) += 1;
    } else if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

impl Inner {
    /// Interns a lower-cased copy of `s` (Zipkin's rule for service and span
    /// names).
    fn intern_lower(&mut self, s: Option<&str>) -> Sym {
        match s {
            Some(s) if s.bytes().any(|b| b.is_ascii_uppercase()) => {
                self.strings.intern(&s.to_ascii_lowercase())
            }
            Some(s) => self.strings.intern(s),
            None => Sym::NONE,
        }
    }

    fn endpoint(&mut self, e: Option<&EndpointIn<'_>>) -> Ep {
        let Some(e) = e else {
            return Ep::default();
        };
        // Addresses that do not parse are dropped, as Zipkin does.
        let ipv4 = e.ipv4.as_deref().filter(|a| a.parse::<Ipv4Addr>().is_ok());
        let ipv6 = e.ipv6.as_deref().filter(|a| a.parse::<Ipv6Addr>().is_ok());
        Ep {
            service: self.intern_lower(e.service_name.as_deref()),
            ipv4: ipv4.map_or(Sym::NONE, |a| self.strings.intern(a)),
            ipv6: ipv6.map_or(Sym::NONE, |a| self.strings.intern(a)),
            port: e.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
        }
    }

    fn release_endpoint(&mut self, e: Ep) {
        for s in [e.service, e.ipv4, e.ipv6] {
            self.strings.release(s);
        }
    }

    fn insert(&mut self, p: Prepared<'_>) {
        let s = &p.span;
        let name = self.intern_lower(s.name.as_deref());
        let local = self.endpoint(s.local_endpoint.as_ref());
        let remote = self.endpoint(s.remote_endpoint.as_ref());
        let mut annotations: Vec<(u64, Sym)> = s
            .annotations
            .iter()
            .map(|a| (a.timestamp, self.strings.intern(&a.value)))
            .collect();
        annotations.sort_unstable();
        annotations.dedup();
        let tags: Vec<(Sym, Sym)> = s
            .tags
            .iter()
            .map(|(k, v)| (self.strings.intern(k), self.strings.intern(v)))
            .filter(|(k, _)| !k.is_none())
            .collect::<Vec<_>>();
        let mut tags = tags;
        tags.sort_unstable_by_key(|(k, _)| *k);
        let span = SpanRec {
            id: p.id,
            parent: p.parent,
            timestamp: s.timestamp.unwrap_or(0),
            duration: s.duration.unwrap_or(0),
            name,
            kind: s.kind,
            debug: s.debug == Some(true),
            shared: s.shared == Some(true),
            local,
            remote,
            annotations: annotations.into(),
            tags: tags.into(),
        };
        self.index(&span, true);
        let trace = self.traces.entry(p.trace).or_insert_with(|| {
            self.order.push_back(p.trace);
            TraceRec::default()
        });
        trace.spans.push(span);
        self.spans += 1;
    }

    /// Counts `span` in the indexes (or uncounts it).
    fn index(&mut self, span: &SpanRec, add: bool) {
        let service = span.local.service;
        if !service.is_none() {
            tally(&mut self.services, service, add);
            if !span.name.is_none() {
                tally(&mut self.names, (service, span.name), add);
            }
        }
        for &(k, v) in span.tags.iter() {
            if self.autocomplete_keys.contains(&k) {
                tally(&mut self.autocomplete, (k, v), add);
            }
        }
    }

    /// Evicts the oldest trace; answers how many spans it held.
    fn evict_oldest(&mut self) -> Option<usize> {
        let id = self.order.pop_front()?;
        let trace = self.traces.remove(&id)?;
        let n = trace.spans.len();
        for span in trace.spans {
            self.index(&span, false);
            self.strings.release(span.name);
            self.release_endpoint(span.local);
            self.release_endpoint(span.remote);
            for (_, v) in span.annotations.iter() {
                self.strings.release(*v);
            }
            for (k, v) in span.tags.iter() {
                self.strings.release(*k);
                self.strings.release(*v);
            }
        }
        self.spans -= n;
        Some(n)
    }
}

impl Store {
    /// A store keeping at most `max_spans` spans, offering the values of
    /// `autocomplete_keys` for autocompletion.
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
                services: HashMap::new(),
                names: HashMap::new(),
                autocomplete_keys,
                autocomplete: HashMap::new(),
            }),
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
    /// Then evicts the oldest traces until the store is within its cap.
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
        for p in prepared {
            inner.insert(p);
        }
        while inner.spans > inner.max_spans {
            match inner.evict_oldest() {
                Some(n) => {
                    done.evicted_traces += 1;
                    done.evicted_spans += n;
                }
                None => break,
            }
        }
        Ok(done)
    }

    /// How full the store is.
    pub fn stats(&self) -> StoreStats {
        let inner = self.read();
        StoreStats {
            spans: inner.spans,
            traces: inner.traces.len(),
            strings: inner.strings.len(),
        }
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

    /// The traces matching `q`, newest first.
    pub fn traces(&self, q: &TraceQuery) -> Vec<Vec<Span>> {
        let inner = self.read();
        let Some(matcher) = query::Matcher::new(q, &inner.strings) else {
            return Vec::new();
        };
        let mut found: Vec<(u64, TraceId)> = inner
            .order
            .iter()
            .rev()
            .filter_map(|id| {
                let trace = inner.traces.get(id)?;
                matcher.matches(trace).then(|| (trace.timestamp(), *id))
            })
            .take(q.limit)
            .collect();
        found.sort_by(|a, b| b.cmp(a));
        found
            .into_iter()
            .filter_map(|(_, id)| inner.traces.get(&id).map(|t| inner.trace_out(id, t)))
            .collect()
    }

    /// The service graph of the traces with a span in
    /// `[end_ts - lookback, end_ts]` (epoch milliseconds).
    pub fn dependencies(&self, end_ts_ms: u64, lookback_ms: u64) -> Vec<DependencyLink> {
        let inner = self.read();
        let (from, to) = query::window_us(end_ts_ms, lookback_ms);
        let error = inner.strings.lookup("error");
        let mut links = links::Links::default();
        for trace in inner.traces.values() {
            if trace
                .spans
                .iter()
                .any(|s| s.timestamp >= from && s.timestamp <= to)
            {
                links::link_trace(&trace.spans, error, &mut links);
            }
        }
        links.into_list(&inner.strings)
    }

    /// How long the CONSUMER spans of queue `queue` lasted (µs), for those
    /// that started in `[from_us, to_us)`.
    pub fn consumer_durations(&self, queue: &str, from_us: u64, to_us: u64) -> Vec<u64> {
        let inner = self.read();
        let (Some(key), Some(value)) = (
            inner.strings.lookup("messaging.destination.name"),
            inner.strings.lookup(queue),
        ) else {
            return Vec::new();
        };
        inner
            .traces
            .values()
            .flat_map(|t| t.spans.iter())
            .filter(|s| {
                s.kind == Some(Kind::Consumer)
                    && s.timestamp >= from_us
                    && s.timestamp < to_us
                    && s.duration > 0
                    && s.tag(key) == Some(value)
            })
            .map(|s| s.duration)
            .collect()
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
