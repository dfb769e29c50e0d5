//! Spans into the store: strings cut and interned, records counted in
//! bytes, the indexes kept, and the oldest traces evicted.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::intern::Sym;
use super::model::{EndpointIn, Prepared};
use super::{
    Ep, Inner, MAX_NAME_BYTES, MAX_VALUE_BYTES, SpanRec, TRUNCATED_TAG, TraceId, TraceRec,
};

/// `s`, cut to at most `max` bytes at a character boundary and ending in
/// `…` when it was longer; counts the cut in `cut`.
fn clip<'a>(s: &'a str, max: usize, cut: &mut u32) -> Cow<'a, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    *cut += 1;
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

/// What a span's record costs beyond its strings.
pub(super) fn span_cost(annotations: usize, tags: usize) -> usize {
    std::mem::size_of::<SpanRec>()
        + annotations * std::mem::size_of::<(u64, Sym)>()
        + tags * std::mem::size_of::<(Sym, Sym)>()
}

/// What a trace's entry costs: its map entry and its place in the order.
const TRACE_COST: usize = 2 * std::mem::size_of::<TraceId>() + std::mem::size_of::<TraceRec>() + 16;

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
    fn intern_lower(&mut self, s: Option<&str>, cut: &mut u32) -> Sym {
        let s = s.map(|s| clip(s, MAX_NAME_BYTES, cut));
        match s.as_deref() {
            Some(s) if s.bytes().any(|b| b.is_ascii_uppercase()) => {
                self.strings.intern(&s.to_ascii_lowercase())
            }
            Some(s) => self.strings.intern(s),
            None => Sym::NONE,
        }
    }

    fn endpoint(&mut self, e: Option<&EndpointIn<'_>>, cut: &mut u32) -> Ep {
        let Some(e) = e else {
            return Ep::default();
        };
        // Addresses that do not parse are dropped, as Zipkin does.
        let ipv4 = e.ipv4.as_deref().filter(|a| a.parse::<Ipv4Addr>().is_ok());
        let ipv6 = e.ipv6.as_deref().filter(|a| a.parse::<Ipv6Addr>().is_ok());
        Ep {
            service: self.intern_lower(e.service_name.as_deref(), cut),
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

    /// The next arrival or batch number: epoch µs, above every one given
    /// before.
    pub(super) fn next_seq(&mut self) -> u64 {
        self.seq = super::now_us().max(self.seq.saturating_add(1));
        self.seq
    }

    /// Stores one span. A trace new to the store arrived `arrived` (read
    /// back from disk) or now.
    pub(super) fn insert(&mut self, p: Prepared<'_>, arrived: Option<u64>) {
        let s = &p.span;
        let mut cut = 0;
        let name = self.intern_lower(s.name.as_deref(), &mut cut);
        let local = self.endpoint(s.local_endpoint.as_ref(), &mut cut);
        let remote = self.endpoint(s.remote_endpoint.as_ref(), &mut cut);
        // Repeats are dropped before their strings are taken, so none is
        // kept without a span that names it.
        let mut annotations: Vec<(u64, Cow<'_, str>)> = s
            .annotations
            .iter()
            .map(|a| (a.timestamp, clip(&a.value, MAX_VALUE_BYTES, &mut cut)))
            .collect();
        annotations.sort_unstable();
        annotations.dedup();
        let annotations: Vec<(u64, Sym)> = annotations
            .iter()
            .map(|(t, v)| (*t, self.strings.intern(v)))
            .collect();
        // A tag under an empty key is not kept; keys cut to the same text
        // keep the first.
        let mut tags: Vec<(Cow<'_, str>, Cow<'_, str>)> = s
            .tags
            .iter()
            // The store's own count of cuts is taken only from its disk.
            .filter(|(k, _)| !k.is_empty() && (p.trusted || &***k != TRUNCATED_TAG))
            .map(|(k, v)| {
                (
                    clip(k, MAX_NAME_BYTES, &mut cut),
                    clip(v, MAX_VALUE_BYTES, &mut cut),
                )
            })
            .collect();
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        tags.dedup_by(|b, a| a.0 == b.0);
        if cut > 0 {
            tags.push((Cow::Borrowed(TRUNCATED_TAG), Cow::Owned(cut.to_string())));
        }
        let mut tags: Vec<(Sym, Sym)> = tags
            .iter()
            .map(|(k, v)| (self.strings.intern(k), self.strings.intern(v)))
            .collect();
        tags.sort_unstable_by_key(|(k, _)| *k);
        self.record_bytes += span_cost(annotations.len(), tags.len());
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
        if !self.traces.contains_key(&p.trace) {
            let arrived = arrived.unwrap_or_else(|| self.next_seq());
            self.order.push_back(p.trace);
            self.record_bytes += TRACE_COST;
            self.traces.insert(
                p.trace,
                TraceRec {
                    spans: Vec::new(),
                    arrived,
                    disk_bytes: 0,
                },
            );
        }
        if let Some(trace) = self.traces.get_mut(&p.trace) {
            trace.spans.push(span);
        }
        self.spans += 1;
    }

    /// What the store counts against its byte cap.
    pub(super) fn bytes(&self) -> usize {
        self.strings.bytes() + self.record_bytes
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

    /// Evicts the oldest trace while the store is over one of its caps;
    /// answers it as [`Self::evict_oldest`] does.
    pub(super) fn evict_over_caps(&mut self) -> Option<(TraceId, u64, usize)> {
        let over = self.spans > self.max_spans
            || self.bytes() > self.max_bytes
            || self.disk_bytes > self.max_disk_bytes;
        if over { self.evict_oldest() } else { None }
    }

    /// Evicts the oldest trace; answers its id, when it arrived and how
    /// many spans it held.
    pub(super) fn evict_oldest(&mut self) -> Option<(TraceId, u64, usize)> {
        let id = self.order.pop_front()?;
        let trace = self.traces.remove(&id)?;
        let n = trace.spans.len();
        self.record_bytes -= TRACE_COST;
        self.disk_bytes -= trace.disk_bytes;
        for span in trace.spans {
            self.record_bytes -= span_cost(span.annotations.len(), span.tags.len());
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
        Some((id, trace.arrived, n))
    }
}
