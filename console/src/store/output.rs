//! Stored spans back into Zipkin v2 JSON.

use super::intern::Sym;
use super::model::{Annotation, Endpoint, Span, TraceId};
use super::{Ep, Inner, SpanRec, TraceRec};

impl Inner {
    fn endpoint_out(&self, e: Ep) -> Option<Endpoint> {
        if e.is_empty() {
            return None;
        }
        let text = |s: Sym| (!s.is_none()).then(|| self.strings.get(s).to_owned());
        Some(Endpoint {
            service_name: text(e.service),
            ipv4: text(e.ipv4),
            ipv6: text(e.ipv6),
            port: (e.port != 0).then_some(e.port),
        })
    }

    fn span_out(&self, trace: TraceId, s: &SpanRec) -> Span {
        let text = |s: Sym| self.strings.get(s).to_owned();
        Span {
            trace_id: trace.to_string(),
            parent_id: (s.parent != 0).then(|| format!("{:016x}", s.parent)),
            id: format!("{:016x}", s.id),
            kind: s.kind,
            name: (!s.name.is_none()).then(|| text(s.name)),
            timestamp: (s.timestamp != 0).then_some(s.timestamp),
            duration: (s.duration != 0).then_some(s.duration),
            debug: s.debug.then_some(true),
            shared: s.shared.then_some(true),
            local_endpoint: self.endpoint_out(s.local),
            remote_endpoint: self.endpoint_out(s.remote),
            annotations: s
                .annotations
                .iter()
                .map(|&(timestamp, v)| Annotation {
                    timestamp,
                    value: text(v),
                })
                .collect(),
            tags: s.tags.iter().map(|&(k, v)| (text(k), text(v))).collect(),
        }
    }

    /// The span of `trace` stored last, as answered.
    pub(super) fn last_span_out(&self, trace: TraceId) -> Option<Span> {
        let span = self.traces.get(&trace)?.spans.last()?;
        Some(self.span_out(trace, span))
    }

    /// A trace as answered: its spans by time.
    pub(super) fn trace_out(&self, id: TraceId, trace: &TraceRec) -> Vec<Span> {
        let mut spans: Vec<&SpanRec> = trace.spans.iter().collect();
        spans.sort_by_key(|s| (s.timestamp, s.id));
        spans.into_iter().map(|s| self.span_out(id, s)).collect()
    }
}
