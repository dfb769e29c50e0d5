//! Trace-context propagation: into and out of HTTP headers and job metadata.
//!
//! - **Inbound HTTP** reads the formats named in `OTEL_PROPAGATORS`
//!   (`tracecontext`, `baggage`, `b3`, `b3multi`); unset, it reads all four.
//!   Malformed headers are ignored: the request starts a new trace.
//! - **Job metadata** always carries W3C `traceparent`/`tracestate` and
//!   `baggage`, whatever the setting, so workers never lose the trace.
//! - **Outbound HTTP** (to third parties) always writes W3C trace context,
//!   plus B3 (single or multi) when `OTEL_PROPAGATORS` names it; never the
//!   caller's baggage.
//!
//! W3C comes from the OpenTelemetry SDK; B3 is implemented here (`b3.rs`).

mod b3;
mod edge;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use opentelemetry::Context;
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

use b3::{B3Encoding, B3Propagator};
pub use edge::{BaggageAllow, DEFAULT_BAGGAGE_MAX_BYTES, EdgePolicy, Inbound};

/// A propagation format of `OTEL_PROPAGATORS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// W3C `traceparent` / `tracestate`.
    TraceContext,
    /// W3C `baggage`.
    Baggage,
    /// B3 single header (`b3`).
    B3,
    /// B3 multiple headers (`X-B3-TraceId`, ...).
    B3Multi,
}

impl Format {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "tracecontext" => Self::TraceContext,
            "baggage" => Self::Baggage,
            "b3" => Self::B3,
            "b3multi" => Self::B3Multi,
            _ => return None,
        })
    }
}

/// Which formats are read from and written to HTTP; built once from
/// `OTEL_PROPAGATORS` and shared.
#[derive(Clone)]
pub struct Propagation {
    formats: Vec<Format>,
    edge: EdgePolicy,
    inbound: Arc<TextMapCompositePropagator>,
    outbound: Arc<TextMapCompositePropagator>,
    job: Arc<TextMapCompositePropagator>,
    record: Arc<TextMapCompositePropagator>,
}

impl fmt::Debug for Propagation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Propagation")
            .field("formats", &self.formats)
            .field("edge", &self.edge)
            .finish()
    }
}

impl Default for Propagation {
    /// Reads every format; writes W3C trace context and baggage.
    fn default() -> Self {
        Self::build(
            vec![
                Format::TraceContext,
                Format::Baggage,
                Format::B3,
                Format::B3Multi,
            ],
            None,
        )
    }
}

impl Propagation {
    /// Parses an `OTEL_PROPAGATORS` value: a comma-separated list of
    /// `tracecontext`, `baggage`, `b3`, `b3multi`, or `none`. Empty or
    /// absent means the default (read all, write W3C).
    pub fn from_setting(value: Option<&str>) -> Result<Self, String> {
        let value = value.map(str::trim).unwrap_or_default();
        if value.is_empty() {
            return Ok(Self::default());
        }
        let mut formats = Vec::new();
        for name in value.split(',').map(|n| n.trim().to_ascii_lowercase()) {
            if name == "none" || name.is_empty() {
                continue;
            }
            let format = Format::parse(&name).ok_or_else(|| {
                format!(
                    "OTEL_PROPAGATORS: unknown propagator {name:?} \
                     (supported: tracecontext, baggage, b3, b3multi, none)"
                )
            })?;
            if !formats.contains(&format) {
                formats.push(format);
            }
        }
        let b3_out = if formats.contains(&Format::B3) {
            Some(B3Encoding::Single)
        } else if formats.contains(&Format::B3Multi) {
            Some(B3Encoding::Multi)
        } else {
            None
        };
        Ok(Self::build(formats, b3_out))
    }

    fn build(formats: Vec<Format>, b3_out: Option<B3Encoding>) -> Self {
        // Later propagators win when several find a context: B3 first, so
        // W3C takes precedence when a request carries both.
        let mut inbound: Vec<Box<dyn TextMapPropagator + Send + Sync>> = Vec::new();
        let (b3, b3multi) = (
            formats.contains(&Format::B3),
            formats.contains(&Format::B3Multi),
        );
        if b3 || b3multi {
            inbound.push(Box::new(B3Propagator {
                read_single: b3,
                read_multi: b3multi,
                write: None,
            }));
        }
        if formats.contains(&Format::TraceContext) {
            inbound.push(Box::new(TraceContextPropagator::new()));
        }
        if formats.contains(&Format::Baggage) {
            inbound.push(Box::new(BaggagePropagator::new()));
        }
        // Outbound HTTP goes to third parties (the weather service): they
        // get the trace context, never the caller's baggage.
        let mut outbound: Vec<Box<dyn TextMapPropagator + Send + Sync>> =
            vec![Box::new(TraceContextPropagator::new())];
        if let Some(encoding) = b3_out {
            outbound.push(Box::new(B3Propagator {
                read_single: false,
                read_multi: false,
                write: Some(encoding),
            }));
        }
        // Event records (Kafka) go to our own consumers: W3C trace context
        // and baggage, plus B3 when it is configured.
        let mut record: Vec<Box<dyn TextMapPropagator + Send + Sync>> = vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ];
        if let Some(encoding) = b3_out {
            record.push(Box::new(B3Propagator {
                read_single: false,
                read_multi: false,
                write: Some(encoding),
            }));
        }
        Self {
            formats,
            edge: EdgePolicy::default(),
            record: Arc::new(TextMapCompositePropagator::new(record)),
            inbound: Arc::new(TextMapCompositePropagator::new(inbound)),
            outbound: Arc::new(TextMapCompositePropagator::new(outbound)),
            job: Arc::new(TextMapCompositePropagator::new(vec![
                Box::new(TraceContextPropagator::new()),
                Box::new(BaggagePropagator::new()),
            ])),
        }
    }

    /// The same propagators under another edge policy.
    pub fn with_edge(mut self, edge: EdgePolicy) -> Self {
        self.edge = edge;
        self
    }

    /// Where a request's SERVER span goes, under the edge policy: the
    /// caller's trace adopted or linked, and the caller's baggage kept.
    pub fn inbound_http(&self, headers: &http::HeaderMap) -> Inbound {
        self.edge.apply(&self.extract_http(headers))
    }

    /// The remote context carried by inbound HTTP headers (empty when none
    /// or malformed), before the edge policy.
    pub fn extract_http(&self, headers: &http::HeaderMap) -> Context {
        self.inbound.extract_with_context(
            &Context::new(),
            &opentelemetry_http::HeaderExtractor(headers),
        )
    }

    /// Writes `cx` into outbound HTTP headers.
    pub fn inject_http(&self, cx: &Context, headers: &mut http::HeaderMap) {
        self.outbound
            .inject_context(cx, &mut opentelemetry_http::HeaderInjector(headers));
    }

    /// The job-metadata carrier of `cx`: W3C trace context and baggage.
    pub fn inject_job(&self, cx: &Context) -> BTreeMap<String, String> {
        let mut carrier = MapCarrier(BTreeMap::new());
        self.job.inject_context(cx, &mut carrier);
        carrier.0
    }

    /// The remote context carried by job metadata (empty when none).
    pub fn extract_job<'a>(
        &self,
        metadata: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Context {
        let carrier = Pairs(metadata.into_iter().collect());
        self.job.extract_with_context(&Context::new(), &carrier)
    }
}

impl Propagation {
    /// The headers of an event record (Kafka) carrying `cx`: W3C trace
    /// context and baggage, plus B3 when `OTEL_PROPAGATORS` names it.
    pub fn inject_record(&self, cx: &Context) -> BTreeMap<String, String> {
        let mut carrier = MapCarrier(BTreeMap::new());
        self.record.inject_context(cx, &mut carrier);
        carrier.0
    }

    /// The remote context carried by an event record's headers, read with
    /// the inbound propagators (every configured format, B3 included).
    pub fn extract_record<'a>(
        &self,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Context {
        let carrier = Pairs(headers.into_iter().collect());
        self.inbound.extract_with_context(&Context::new(), &carrier)
    }
}

/// A string map as a propagation carrier (keys lower-case).
struct MapCarrier(BTreeMap<String, String>);

impl Injector for MapCarrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_ascii_lowercase(), value);
    }
}

/// Borrowed key-value pairs as an extraction carrier, keys matched without
/// regard to case. A job or a record carries a handful: a scan costs less
/// than building a map of owned, lower-cased copies for every job.
struct Pairs<'a>(Vec<(&'a str, &'a str)>);

impl Extractor for Pairs<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| *v)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use opentelemetry::trace::TraceContextExt;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    fn ids(cx: &Context) -> Option<(String, String, bool)> {
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| {
            (
                sc.trace_id().to_string(),
                sc.span_id().to_string(),
                sc.is_sampled(),
            )
        })
    }

    #[test]
    fn the_default_reads_w3c_b3_single_and_b3_multi() {
        let p = Propagation::default();
        let w3c = headers(&[("traceparent", &format!("00-{TRACE}-{SPAN}-01"))]);
        assert_eq!(
            ids(&p.extract_http(&w3c)),
            Some((TRACE.into(), SPAN.into(), true))
        );
        let single = headers(&[("b3", &format!("{TRACE}-{SPAN}-0"))]);
        assert_eq!(
            ids(&p.extract_http(&single)),
            Some((TRACE.into(), SPAN.into(), false))
        );
        let multi = headers(&[
            ("X-B3-TraceId", TRACE),
            ("X-B3-SpanId", SPAN),
            ("X-B3-ParentSpanId", "0000000000000001"),
            ("X-B3-Sampled", "1"),
        ]);
        assert_eq!(
            ids(&p.extract_http(&multi)),
            Some((TRACE.into(), SPAN.into(), true))
        );
    }

    #[test]
    fn b3_details_64_bit_ids_debug_flag_and_absent_sampling() {
        let p = Propagation::default();
        let short = headers(&[("b3", "a3ce929d0e0e4736-00f067aa0ba902b7")]);
        assert_eq!(
            ids(&p.extract_http(&short)),
            Some(("0000000000000000a3ce929d0e0e4736".into(), SPAN.into(), true))
        );
        let debug = headers(&[
            ("X-B3-TraceId", TRACE),
            ("X-B3-SpanId", SPAN),
            ("X-B3-Sampled", "0"),
            ("X-B3-Flags", "1"),
        ]);
        assert_eq!(
            ids(&p.extract_http(&debug)),
            Some((TRACE.into(), SPAN.into(), true))
        );
    }

    #[test]
    fn malformed_headers_are_ignored() {
        let p = Propagation::default();
        for bad in [
            headers(&[("traceparent", "00-zz-00f067aa0ba902b7-01")]),
            headers(&[("traceparent", &format!("00-{TRACE}-0000000000000000-01"))]),
            headers(&[("b3", &format!("{TRACE}-{SPAN}-maybe"))]),
            headers(&[("b3", &format!("{TRACE}-short"))]),
            headers(&[("X-B3-TraceId", TRACE)]),
            headers(&[
                ("X-B3-TraceId", "00000000000000000000000000000000"),
                ("X-B3-SpanId", SPAN),
            ]),
        ] {
            assert_eq!(ids(&p.extract_http(&bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn b3_do_not_sample_makes_an_unsampled_parent() {
        let p = Propagation::default();
        for deny in [headers(&[("b3", "0")]), headers(&[("X-B3-Sampled", "0")])] {
            let (_, _, sampled) = ids(&p.extract_http(&deny)).expect("a parent");
            assert!(!sampled, "{deny:?}");
        }
        let w3c_only = Propagation::from_setting(Some("tracecontext")).expect("valid");
        assert_eq!(ids(&w3c_only.extract_http(&headers(&[("b3", "0")]))), None);
    }

    #[test]
    fn w3c_wins_over_b3_when_both_are_sent() {
        let p = Propagation::default();
        let both = headers(&[
            ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
            ("b3", "11111111111111111111111111111111-2222222222222222-1"),
        ]);
        assert_eq!(ids(&p.extract_http(&both)).map(|i| i.0), Some(TRACE.into()));
    }

    #[test]
    fn a_configured_list_reads_only_its_formats() {
        let p = Propagation::from_setting(Some("b3multi")).expect("valid");
        let w3c = headers(&[("traceparent", &format!("00-{TRACE}-{SPAN}-01"))]);
        assert_eq!(ids(&p.extract_http(&w3c)), None);
        let err = Propagation::from_setting(Some("tracecontext,jaeger")).expect_err("unknown");
        assert!(err.contains("jaeger"), "{err}");
        assert_eq!(
            Propagation::from_setting(Some(" "))
                .expect("empty")
                .formats
                .len(),
            4
        );
    }

    #[test]
    fn outbound_http_writes_w3c_and_the_configured_b3() {
        let incoming = headers(&[("traceparent", &format!("00-{TRACE}-{SPAN}-01"))]);
        let p = Propagation::from_setting(Some("tracecontext,baggage,b3")).expect("valid");
        let cx = p.extract_http(&incoming);
        let mut out = HeaderMap::new();
        p.inject_http(&cx, &mut out);
        assert_eq!(out["traceparent"], format!("00-{TRACE}-{SPAN}-01"));
        assert_eq!(out["b3"], format!("{TRACE}-{SPAN}-1"));

        let p = Propagation::from_setting(Some("b3multi")).expect("valid");
        let multi = headers(&[("X-B3-TraceId", TRACE), ("X-B3-SpanId", SPAN)]);
        let mut out = HeaderMap::new();
        p.inject_http(&p.extract_http(&multi), &mut out);
        assert_eq!(out["x-b3-traceid"], TRACE);
        assert_eq!(out["x-b3-sampled"], "1");
        assert_eq!(
            out["traceparent"],
            format!("00-{TRACE}-{SPAN}-01"),
            "W3C is always written"
        );

        let p = Propagation::default();
        let mut out = HeaderMap::new();
        p.inject_http(&p.extract_http(&incoming), &mut out);
        assert!(!out.contains_key("b3"), "no B3 unless configured");
    }

    #[test]
    fn caller_baggage_never_leaves_for_outbound_http() {
        let p = Propagation::default();
        let incoming = headers(&[
            ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
            ("baggage", "tenant=acme,user.email=someone@example.com"),
        ]);
        let cx = p.extract_http(&incoming);
        assert!(p.inject_job(&cx).contains_key("baggage"), "jobs keep it");
        let mut out = HeaderMap::new();
        p.inject_http(&cx, &mut out);
        assert_eq!(out["traceparent"], format!("00-{TRACE}-{SPAN}-01"));
        assert!(
            !out.contains_key("baggage"),
            "a third party gets no caller baggage: {out:?}"
        );
    }

    #[test]
    fn job_metadata_round_trips_w3c_and_baggage_whatever_the_setting() {
        let p = Propagation::from_setting(Some("b3")).expect("valid");
        let incoming = headers(&[
            ("b3", &format!("{TRACE}-{SPAN}-1")),
            ("baggage", "tenant=acme"),
        ]);
        // b3 alone configured: baggage is not read from HTTP...
        let cx = p.extract_http(&incoming);
        let carrier = p.inject_job(&cx);
        assert_eq!(carrier["traceparent"], format!("00-{TRACE}-{SPAN}-01"));
        let back = p.extract_job(carrier.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(ids(&back), Some((TRACE.into(), SPAN.into(), true)));

        // ...but with the default, baggage crosses into the job.
        let p = Propagation::default();
        let carrier = p.inject_job(&p.extract_http(&incoming));
        assert_eq!(
            carrier.get("baggage").map(String::as_str),
            Some("tenant=acme")
        );
        let unsampled = headers(&[("traceparent", &format!("00-{TRACE}-{SPAN}-00"))]);
        let carrier = p.inject_job(&p.extract_http(&unsampled));
        assert_eq!(
            carrier["traceparent"],
            format!("00-{TRACE}-{SPAN}-00"),
            "the sampled flag travels"
        );
        assert_eq!(ids(&p.extract_job([])), None);
    }

    #[test]
    fn event_records_carry_w3c_baggage_and_the_configured_b3_and_round_trip() {
        let incoming = headers(&[
            ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
            ("baggage", "tenant=acme"),
        ]);
        let p = Propagation::default();
        let record = p.inject_record(&p.extract_http(&incoming));
        assert_eq!(record["traceparent"], format!("00-{TRACE}-{SPAN}-01"));
        assert_eq!(record["baggage"], "tenant=acme", "our own consumers get it");
        assert!(!record.contains_key("b3"), "no B3 unless configured");
        let back = p.extract_record(record.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(ids(&back), Some((TRACE.into(), SPAN.into(), true)));

        let p = Propagation::from_setting(Some("tracecontext,baggage,b3multi")).expect("valid");
        let record = p.inject_record(&p.extract_http(&incoming));
        assert_eq!(record["x-b3-traceid"], TRACE);
        assert_eq!(record["x-b3-spanid"], SPAN);
        // A consumer reading B3 alone finds the same span.
        let b3_only: Vec<(&str, &str)> = record
            .iter()
            .filter(|(k, _)| k.starts_with("x-b3-"))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            ids(&p.extract_record(b3_only)),
            Some((TRACE.into(), SPAN.into(), true))
        );
        assert_eq!(ids(&p.extract_record([("traceparent", "nonsense")])), None);
    }
}
