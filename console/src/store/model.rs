//! Zipkin v2 spans as JSON: what is posted (borrowed from the request
//! body, validated and normalised as Zipkin does) and what is answered.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why a posted span was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpanError {
    /// `traceId` is not 1 to 32 hex digits.
    #[error("span {index}: traceId {value:?} is not 16 or 32 hex digits")]
    TraceId {
        /// The span's position in the list.
        index: usize,
        /// What was sent.
        value: String,
    },
    /// `id` or `parentId` is not 1 to 16 hex digits (or is zero).
    #[error("span {index}: {field} {value:?} is not 16 hex digits")]
    SpanId {
        /// The span's position in the list.
        index: usize,
        /// `id` or `parentId`.
        field: &'static str,
        /// What was sent.
        value: String,
    },
}

/// The kind of a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Kind {
    /// A request sent to a server.
    Client,
    /// A request served.
    Server,
    /// A message sent to a broker.
    Producer,
    /// A message received from a broker.
    Consumer,
}

/// A string of the request body: borrowed from it where the JSON has no
/// escapes, owned where it has (serde's `Cow` alone always copies inside
/// maps and lists).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Text<'a>(pub(crate) Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// An endpoint as posted.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointIn<'a> {
    #[serde(borrow, default)]
    pub(crate) service_name: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub(crate) ipv4: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub(crate) ipv6: Option<Text<'a>>,
    #[serde(default)]
    pub(crate) port: Option<i64>,
}

/// An annotation as posted.
#[derive(Debug, Deserialize)]
pub struct AnnotationIn<'a> {
    pub(crate) timestamp: u64,
    #[serde(borrow)]
    pub(crate) value: Text<'a>,
}

/// A span as posted. Unknown fields are ignored, as Zipkin does.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpanIn<'a> {
    #[serde(borrow)]
    pub(crate) trace_id: Text<'a>,
    #[serde(borrow)]
    pub(crate) id: Text<'a>,
    #[serde(borrow, default)]
    pub(crate) parent_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub(crate) name: Option<Text<'a>>,
    #[serde(default)]
    pub(crate) kind: Option<Kind>,
    #[serde(default)]
    pub(crate) timestamp: Option<u64>,
    #[serde(default)]
    pub(crate) duration: Option<u64>,
    #[serde(default)]
    pub(crate) debug: Option<bool>,
    #[serde(default)]
    pub(crate) shared: Option<bool>,
    #[serde(borrow, default)]
    pub(crate) local_endpoint: Option<EndpointIn<'a>>,
    #[serde(borrow, default)]
    pub(crate) remote_endpoint: Option<EndpointIn<'a>>,
    #[serde(borrow, default)]
    pub(crate) annotations: Vec<AnnotationIn<'a>>,
    #[serde(borrow, default)]
    pub(crate) tags: BTreeMap<Text<'a>, Text<'a>>,
}

/// A trace id: 64 or 128 bits, kept apart as Zipkin does (strict ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId {
    /// The bits.
    pub value: u128,
    /// Whether its high 64 bits are set (it prints as 32 hex digits).
    pub wide: bool,
}

impl TraceId {
    /// Parses 1 to 32 hex digits (upper case too), as Zipkin does: an id
    /// whose high 64 bits are zero is a 64-bit id, whatever its padding.
    /// Zero is no id.
    pub fn parse(s: &str) -> Option<Self> {
        if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let value = u128::from_str_radix(s, 16).ok()?;
        (value != 0).then_some(Self {
            value,
            wide: value >> 64 != 0,
        })
    }
}

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wide {
            write!(f, "{:032x}", self.value)
        } else {
            write!(f, "{:016x}", self.value)
        }
    }
}

/// Parses a span id: 1 to 16 hex digits, not zero.
pub(crate) fn parse_span_id(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok().filter(|v| *v != 0)
}

/// An endpoint as answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Lower-case service name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// IPv4 address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    /// IPv6 address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// Port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// An annotation as answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    /// Epoch microseconds.
    pub timestamp: u64,
    /// What happened.
    pub value: String,
}

/// A span as answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    /// 16 or 32 lower-case hex digits.
    pub trace_id: String,
    /// The parent span's id; absent for a root.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub parent_id: Option<String>,
    /// 16 lower-case hex digits.
    pub id: String,
    /// Client, server, producer or consumer; absent for local spans.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kind: Option<Kind>,
    /// Lower-case operation name.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    /// Epoch microseconds of the start.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub timestamp: Option<u64>,
    /// Microseconds.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub duration: Option<u64>,
    /// Forced sampling.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub debug: Option<bool>,
    /// Shares its id with the client's span.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shared: Option<bool>,
    /// The service that recorded it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub local_endpoint: Option<Endpoint>,
    /// The other side.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub remote_endpoint: Option<Endpoint>,
    /// Events, by time.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub annotations: Vec<Annotation>,
    /// Tags.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub tags: BTreeMap<String, String>,
}

/// A link of the service graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DependencyLink {
    /// The caller: client, producer or broker.
    pub parent: String,
    /// The callee: server, broker or consumer.
    pub child: String,
    /// Calls traced.
    pub call_count: u64,
    /// Calls traced that failed.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub error_count: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A span checked and normalised, its strings still borrowed from the
/// request body.
pub(crate) struct Prepared<'a> {
    pub(crate) trace: TraceId,
    pub(crate) span: SpanIn<'a>,
    pub(crate) id: u64,
    pub(crate) parent: u64,
    /// Read back from the store's own disk: its `console.truncated` tag
    /// is kept.
    pub(crate) trusted: bool,
}

/// Checks and normalises one posted span.
pub(crate) fn prepare(index: usize, span: SpanIn<'_>) -> Result<Prepared<'_>, SpanError> {
    let trace = TraceId::parse(&span.trace_id).ok_or_else(|| SpanError::TraceId {
        index,
        value: span.trace_id.to_string(),
    })?;
    let bad_id = |field, value: &str| SpanError::SpanId {
        index,
        field,
        value: value.to_owned(),
    };
    let id = parse_span_id(&span.id).ok_or_else(|| bad_id("id", &span.id))?;
    let parent = match span.parent_id.as_deref() {
        None | Some("") => 0,
        Some(p) => parse_span_id(p).ok_or_else(|| bad_id("parentId", p))?,
    };
    Ok(Prepared {
        trace,
        id,
        // A span that names itself as parent is a root (Zipkin's rule).
        parent: if parent == id { 0 } else { parent },
        span,
        trusted: false,
    })
}

/// A span for tests: `id` and `parent` are small numbers, `at` and `dur`
/// µs, in trace `4bf92f3577b34da6a3ce929d0e0e4736`.
#[cfg(test)]
pub(crate) fn test_span(
    id: u64,
    parent: Option<u64>,
    service: &str,
    name: &str,
    kind: Option<Kind>,
    at: u64,
    dur: u64,
) -> Span {
    Span {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        parent_id: parent.map(|p| format!("{p:016x}")),
        id: format!("{id:016x}"),
        kind,
        name: Some(name.into()),
        timestamp: Some(1_000_000 + at),
        duration: Some(dur),
        debug: None,
        shared: None,
        local_endpoint: Some(Endpoint {
            service_name: Some(service.into()),
            ..Endpoint::default()
        }),
        remote_endpoint: None,
        annotations: Vec::new(),
        tags: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_as_zipkin_reads_them() {
        let t = TraceId::parse("4BF92F3577B34DA6A3CE929D0E0E4736").expect("upper case");
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let short = TraceId::parse("a3ce929d0e0e4736").expect("64 bits");
        assert!(!short.wide);
        assert_eq!(
            TraceId::parse("1").map(|t| t.to_string()),
            Some("0000000000000001".into())
        );
        assert_eq!(
            TraceId::parse("0000000000000000a3ce929d0e0e4736"),
            Some(short),
            "zero high bits are padding"
        );
        assert_ne!(
            TraceId::parse("1111111111111111a3ce929d0e0e4736"),
            Some(short),
            "a 128-bit id is not its low half"
        );
        for bad in ["", "xyz", &"a".repeat(33), "0000000000000000"] {
            assert_eq!(TraceId::parse(bad), None, "{bad:?}");
        }
        assert_eq!(parse_span_id("00f067aa0ba902b7"), Some(0x00f067aa0ba902b7));
        assert_eq!(parse_span_id("0"), None);
        assert_eq!(parse_span_id("12345678901234567"), None);
    }
}
