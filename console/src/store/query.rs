//! `/traces` queries: their parameters, checked as Zipkin checks them, and
//! the test a trace must pass.

use super::TraceRec;
use super::intern::{Interner, Sym};

/// Most traces one search answers (a larger `limit` is taken as this).
pub const MAX_LIMIT: usize = 1000;

/// A `/traces` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceQuery {
    /// Only traces with a span of this (lower-cased) local service.
    pub service_name: Option<String>,
    /// Only traces with a span of this (lower-cased) name, of the service
    /// when one is given.
    pub span_name: Option<String>,
    /// `key=value` tag matches and single words (an annotation value or a
    /// tag key), all of which the trace's spans must match.
    pub annotation_query: Vec<(String, Option<String>)>,
    /// Only traces with a span lasting at least this long, µs.
    pub min_duration: Option<u64>,
    /// ...and at most this long, µs.
    pub max_duration: Option<u64>,
    /// End of the window, epoch ms.
    pub end_ts: u64,
    /// Length of the window, ms.
    pub lookback: u64,
    /// Most traces answered.
    pub limit: usize,
}

/// Why a query is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    /// A parameter is out of its range.
    #[error("{0}")]
    Invalid(String),
}

impl TraceQuery {
    /// A query from the raw parameters; `now_ms` is the default `endTs`,
    /// `max_lookback` the default and the ceiling of `lookback`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        service_name: Option<&str>,
        span_name: Option<&str>,
        annotation_query: Option<&str>,
        min_duration: Option<i64>,
        max_duration: Option<i64>,
        end_ts: Option<i64>,
        lookback: Option<i64>,
        limit: Option<i64>,
        now_ms: u64,
        max_lookback: u64,
    ) -> Result<Self, QueryError> {
        let invalid = |s: &str| Err(QueryError::Invalid(s.to_owned()));
        let positive = |v: Option<i64>, name: &str| -> Result<Option<u64>, QueryError> {
            match v {
                Some(v) if v <= 0 => Err(QueryError::Invalid(format!("{name} must be above 0"))),
                v => Ok(v.map(|v| v as u64)),
            }
        };
        let min_duration = positive(min_duration, "minDuration")?;
        let max_duration = positive(max_duration, "maxDuration")?;
        match (min_duration, max_duration) {
            (None, Some(_)) => return invalid("maxDuration is only valid with minDuration"),
            (Some(min), Some(max)) if min > max => {
                return invalid("minDuration must not be above maxDuration");
            }
            _ => {}
        }
        let end_ts = positive(end_ts, "endTs")?.unwrap_or(now_ms);
        let lookback = positive(lookback, "lookback")?
            .unwrap_or(max_lookback)
            .min(max_lookback);
        // Capped: a search holds the store's lock piece by piece, and its
        // answer is built whole.
        let limit = positive(limit, "limit")?
            .unwrap_or(10)
            .min(MAX_LIMIT as u64) as usize;
        let lower = |s: Option<&str>| {
            s.map(str::trim)
                .filter(|s| !s.is_empty() && *s != "all")
                .map(str::to_ascii_lowercase)
        };
        let annotation_query = annotation_query
            .unwrap_or_default()
            .split(" and ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| match t.split_once('=') {
                Some((k, v)) => (k.trim().to_owned(), Some(v.trim().to_owned())),
                None => (t.to_owned(), None),
            })
            .collect();
        Ok(Self {
            service_name: lower(service_name),
            span_name: lower(span_name),
            annotation_query,
            min_duration,
            max_duration,
            end_ts,
            lookback,
            limit,
        })
    }
}

/// `[end_ts - lookback, end_ts]` in epoch milliseconds, as µs bounds
/// (inclusive), the grain of span timestamps.
pub(crate) fn window_us(end_ts_ms: u64, lookback_ms: u64) -> (u64, u64) {
    let from = end_ts_ms.saturating_sub(lookback_ms).saturating_mul(1000);
    let to = end_ts_ms.saturating_mul(1000).saturating_add(999);
    (from, to)
}

/// One annotation-query term, as symbols.
enum Term {
    /// A tag with this value.
    Tag(Sym, Sym),
    /// An annotation with this value, or a tag with this key.
    Word(Sym),
}

/// A query with its strings resolved to symbols.
pub(crate) struct Matcher {
    service: Option<Sym>,
    span_name: Option<Sym>,
    terms: Vec<Term>,
    min: Option<u64>,
    max: Option<u64>,
    from: u64,
    to: u64,
}

impl Matcher {
    /// `None` when the query names a string no stored span has: nothing
    /// can match.
    pub(crate) fn new(q: &TraceQuery, strings: &Interner) -> Option<Self> {
        let sym = |s: &Option<String>| -> Option<Option<Sym>> {
            match s {
                None => Some(None),
                Some(s) => strings.lookup(s).map(Some),
            }
        };
        let terms = q
            .annotation_query
            .iter()
            .map(|(k, v)| {
                let k = strings.lookup(k)?;
                match v {
                    Some(v) => Some(Term::Tag(k, strings.lookup(v)?)),
                    None => Some(Term::Word(k)),
                }
            })
            .collect::<Option<Vec<_>>>()?;
        let (from, to) = window_us(q.end_ts, q.lookback);
        Some(Self {
            service: sym(&q.service_name)?,
            span_name: sym(&q.span_name)?,
            terms,
            min: q.min_duration,
            max: q.max_duration,
            from,
            to,
        })
    }

    /// Whether `trace` has a span in the window and, among the spans of
    /// the service asked for (all spans when none), spans that meet every
    /// condition (not necessarily the same span for each).
    pub(crate) fn matches(&self, trace: &TraceRec) -> bool {
        if !trace
            .spans
            .iter()
            .any(|s| s.timestamp >= self.from && s.timestamp <= self.to)
        {
            return false;
        }
        let mut spans = trace
            .spans
            .iter()
            .filter(|s| self.service.is_none_or(|svc| s.local.service == svc))
            .peekable();
        if spans.peek().is_none() {
            return false;
        }
        let spans: Vec<_> = spans.collect();
        if let Some(name) = self.span_name
            && !spans.iter().any(|s| s.name == name)
        {
            return false;
        }
        if let Some(min) = self.min
            && !spans
                .iter()
                .any(|s| s.duration >= min && self.max.is_none_or(|max| s.duration <= max))
        {
            return false;
        }
        self.terms.iter().all(|term| {
            spans.iter().any(|s| match *term {
                Term::Tag(k, v) => s.tag(k) == Some(v),
                Term::Word(w) => s.annotations.iter().any(|(_, a)| *a == w) || s.tag(w).is_some(),
            })
        })
    }
}
