//! The B3 propagator (<https://github.com/openzipkin/b3-propagation>),
//! single header and multiple headers.
//!
//! Written here: the only B3 propagator for opentelemetry-rust lives in the
//! `opentelemetry-zipkin` crate, which is deprecated as a whole.

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

/// How B3 is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum B3Encoding {
    /// One `b3` header.
    Single,
    /// `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled`.
    Multi,
}

const B3_SINGLE: &str = "b3";
const B3_TRACE_ID: &str = "x-b3-traceid";
const B3_SPAN_ID: &str = "x-b3-spanid";
const B3_PARENT_SPAN_ID: &str = "x-b3-parentspanid";
const B3_SAMPLED: &str = "x-b3-sampled";
const B3_FLAGS: &str = "x-b3-flags";

/// The B3 propagator (<https://github.com/openzipkin/b3-propagation>).
#[derive(Debug, Clone)]
pub(crate) struct B3Propagator {
    /// Reads the `b3` header.
    pub(crate) read_single: bool,
    /// Reads the `X-B3-*` headers.
    pub(crate) read_multi: bool,
    /// Writes one of the encodings.
    pub(crate) write: Option<B3Encoding>,
}

impl B3Propagator {
    /// Whether the headers carry only a "do not sample" decision.
    fn denied(&self, extractor: &dyn Extractor) -> bool {
        let single = self.read_single && extractor.get(B3_SINGLE).map(str::trim) == Some("0");
        let multi = self.read_multi
            && extractor.get(B3_TRACE_ID).is_none()
            && matches!(
                extractor.get(B3_SAMPLED).map(str::trim),
                Some("0") | Some("false")
            );
        single || multi
    }

    fn extract_single(value: &str) -> Option<SpanContext> {
        let parts: Vec<&str> = value.trim().split('-').collect();
        // `b3: 0` (deny) alone carries no ids: nothing to continue.
        let (trace, span) = (parts.first()?, parts.get(1)?);
        let sampled = match parts.get(2) {
            None => None,
            Some(&"1") | Some(&"d") => Some(true),
            Some(&"0") => Some(false),
            Some(_) => return None,
        };
        if let Some(parent) = parts.get(3) {
            parse_span_id(parent)?;
        }
        if parts.len() > 4 {
            return None;
        }
        remote_context(trace, span, sampled)
    }

    fn extract_multi(extractor: &dyn Extractor) -> Option<SpanContext> {
        let trace = extractor.get(B3_TRACE_ID)?;
        let span = extractor.get(B3_SPAN_ID)?;
        if let Some(parent) = extractor.get(B3_PARENT_SPAN_ID) {
            parse_span_id(parent)?;
        }
        let debug = extractor.get(B3_FLAGS).map(str::trim) == Some("1");
        let sampled = match extractor.get(B3_SAMPLED).map(str::trim) {
            _ if debug => Some(true),
            None => None,
            Some("1") | Some("true") => Some(true),
            Some("0") | Some("false") => Some(false),
            Some(_) => return None,
        };
        remote_context(trace, span, sampled)
    }
}

fn parse_span_id(s: &str) -> Option<SpanId> {
    let s = s.trim();
    if s.len() != 16 {
        return None;
    }
    let id = SpanId::from_hex(s).ok()?;
    (id != SpanId::INVALID).then_some(id)
}

fn parse_trace_id(s: &str) -> Option<TraceId> {
    let s = s.trim();
    // 64-bit trace ids are left-padded to 128 bits.
    if s.len() != 16 && s.len() != 32 {
        return None;
    }
    let id = TraceId::from_hex(s).ok()?;
    (id != TraceId::INVALID).then_some(id)
}

/// A remote span context; an absent sampling decision defers to us, and we
/// sample (the upstream asked nothing).
/// A remote parent that is not sampled, with fresh ids (the caller sent
/// none): what a "do not sample" decision becomes.
fn deny_context() -> SpanContext {
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
    let ids = RandomIdGenerator::default();
    SpanContext::new(
        ids.new_trace_id(),
        ids.new_span_id(),
        TraceFlags::default(),
        true,
        TraceState::default(),
    )
}

fn remote_context(trace: &str, span: &str, sampled: Option<bool>) -> Option<SpanContext> {
    let flags = if sampled.unwrap_or(true) {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    Some(SpanContext::new(
        parse_trace_id(trace)?,
        parse_span_id(span)?,
        flags,
        true,
        TraceState::default(),
    ))
}

static B3_FIELDS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    [
        B3_SINGLE,
        B3_TRACE_ID,
        B3_SPAN_ID,
        B3_PARENT_SPAN_ID,
        B3_SAMPLED,
        B3_FLAGS,
    ]
    .map(String::from)
    .to_vec()
});

impl TextMapPropagator for B3Propagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        let sampled = if sc.is_sampled() { "1" } else { "0" };
        match self.write {
            Some(B3Encoding::Single) => injector.set(
                B3_SINGLE,
                format!("{}-{}-{sampled}", sc.trace_id(), sc.span_id()),
            ),
            Some(B3Encoding::Multi) => {
                injector.set(B3_TRACE_ID, sc.trace_id().to_string());
                injector.set(B3_SPAN_ID, sc.span_id().to_string());
                injector.set(B3_SAMPLED, sampled.to_owned());
            }
            None => {}
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let found = self
            .read_single
            .then(|| extractor.get(B3_SINGLE).and_then(Self::extract_single))
            .flatten()
            .or_else(|| {
                self.read_multi
                    .then(|| Self::extract_multi(extractor))
                    .flatten()
            });
        match found {
            Some(sc) => cx.with_remote_span_context(sc),
            // "Do not sample" without ids (`b3: 0`, `X-B3-Sampled: 0`):
            // the caller asks that nothing be recorded. A remote parent
            // that is not sampled says so to the parent-based sampler, and
            // on to the job and the worker.
            None if self.denied(extractor) => cx.with_remote_span_context(deny_context()),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&B3_FIELDS)
    }
}
