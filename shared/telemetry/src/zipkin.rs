//! A Zipkin v2 JSON span exporter for the OpenTelemetry SDK.
//!
//! Written here because `opentelemetry-zipkin` 0.33 is deprecated and its
//! JSON has no `localEndpoint.serviceName` (Zipkin needs it to show
//! anything useful), no `remoteEndpoint`, and drops links and event
//! attributes.
//!
//! Mapping (<https://zipkin.io/zipkin-api/#/default/post_spans>):
//! - kind: SERVER, CLIENT, PRODUCER, CONSUMER; internal spans have none;
//! - `localEndpoint.serviceName`: the resource's `service.name`;
//! - `remoteEndpoint` for CLIENT, PRODUCER and CONSUMER spans (the server
//!   or the broker): `serviceName` from
//!   `peer.service`, else `db.system.name`, else `messaging.system`; `ipv4`
//!   or `ipv6` and `port` from `server.address` / `server.port`;
//! - attributes become tags; status ERROR adds the `error` tag (Zipkin's
//!   convention) and `otel.status_code`;
//! - events become annotations (`name` or `name: {attributes JSON}`);
//! - links become tags `otel.link.{i}` = `{trace id}-{span id}`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::{Key, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use serde::Serialize;

use crate::attributes::{
    DB_SYSTEM_NAME, MESSAGING_SYSTEM, OTEL_SCOPE_NAME, OTEL_STATUS_CODE, PEER_SERVICE,
    SERVER_ADDRESS, SERVER_PORT, SERVICE_NAME,
};

/// One span in Zipkin v2 JSON.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct ZipkinSpan {
    trace_id: String,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<String>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    timestamp: u64,
    duration: u64,
    local_endpoint: Endpoint,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    annotations: Vec<Annotation>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Endpoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    service_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv4: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv6: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

#[derive(Debug, Serialize, PartialEq)]
struct Annotation {
    timestamp: u64,
    value: String,
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Bool(b) => (*b).into(),
        Value::I64(i) => (*i).into(),
        Value::F64(f) => (*f).into(),
        other => other.as_str().into_owned().into(),
    }
}

/// The Zipkin form of `span`, from service `service`.
fn to_zipkin(span: &SpanData, service: &str) -> ZipkinSpan {
    let sc = &span.span_context;
    let kind = match span.span_kind {
        SpanKind::Server => Some("SERVER"),
        SpanKind::Client => Some("CLIENT"),
        SpanKind::Producer => Some("PRODUCER"),
        SpanKind::Consumer => Some("CONSUMER"),
        SpanKind::Internal => None,
    };
    let attrs = &span.attributes;
    // Zipkin's dependency linker needs the broker on both messaging sides
    // to draw producer → broker → consumer.
    let remote_endpoint = matches!(
        span.span_kind,
        SpanKind::Client | SpanKind::Producer | SpanKind::Consumer
    )
    .then(|| remote_endpoint(attrs))
    .flatten();

    let mut tags: BTreeMap<String, String> = attrs
        .iter()
        .map(|kv| (kv.key.to_string(), kv.value.as_str().into_owned()))
        .collect();
    match &span.status {
        Status::Error { description } => {
            tags.insert(OTEL_STATUS_CODE.into(), "ERROR".into());
            let text = if description.is_empty() {
                "true"
            } else {
                description.as_ref()
            };
            tags.insert("error".into(), text.to_owned());
        }
        Status::Ok => {
            tags.insert(OTEL_STATUS_CODE.into(), "OK".into());
        }
        Status::Unset => {}
    }
    let scope = span.instrumentation_scope.name();
    if !scope.is_empty() {
        tags.insert(OTEL_SCOPE_NAME.into(), scope.to_owned());
    }
    for (i, link) in span.links.iter().enumerate() {
        let lc = &link.span_context;
        tags.insert(
            format!("otel.link.{i}"),
            format!("{}-{}", lc.trace_id(), lc.span_id()),
        );
    }

    let annotations = span
        .events
        .iter()
        .map(|e| {
            let value = if e.attributes.is_empty() {
                e.name.to_string()
            } else {
                let fields: serde_json::Map<String, serde_json::Value> = e
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.to_string(), value_json(&kv.value)))
                    .collect();
                format!("{}: {}", e.name, serde_json::Value::Object(fields))
            };
            Annotation {
                timestamp: micros(e.timestamp),
                value,
            }
        })
        .collect();

    let start = micros(span.start_time);
    ZipkinSpan {
        trace_id: sc.trace_id().to_string(),
        id: sc.span_id().to_string(),
        parent_id: (span.parent_span_id != SpanId::INVALID)
            .then(|| span.parent_span_id.to_string()),
        name: span.name.to_string(),
        kind,
        timestamp: start,
        // Zipkin reads 0 as "unknown": a finished span lasts at least 1 µs.
        duration: micros(span.end_time).saturating_sub(start).max(1),
        local_endpoint: Endpoint {
            service_name: Some(service.to_owned()),
            ipv4: None,
            ipv6: None,
            port: None,
        },
        remote_endpoint,
        annotations,
        tags,
    }
}

fn remote_endpoint(attrs: &[KeyValue]) -> Option<Endpoint> {
    let service_name = [PEER_SERVICE, DB_SYSTEM_NAME, MESSAGING_SYSTEM]
        .iter()
        .find_map(|k| attr(attrs, k))
        .map(|v| v.as_str().into_owned());
    let address = attr(attrs, SERVER_ADDRESS).map(|v| v.as_str().into_owned());
    let ip = address.as_deref().and_then(|a| a.parse::<IpAddr>().ok());
    let port = attr(attrs, SERVER_PORT).and_then(|v| match v {
        Value::I64(p) => u16::try_from(*p).ok(),
        other => other.as_str().parse().ok(),
    });
    if service_name.is_none() && ip.is_none() {
        return None;
    }
    Some(Endpoint {
        service_name,
        ipv4: ip.filter(IpAddr::is_ipv4).map(|i| i.to_string()),
        ipv6: ip.filter(IpAddr::is_ipv6).map(|i| i.to_string()),
        port,
    })
}

/// Posts batches of spans to a Zipkin v2 collector
/// (`…/api/v2/spans`). The HTTP call runs on the application's tokio
/// runtime; the SDK's batch processor waits for it on its own thread, so
/// exporting never blocks application work.
#[derive(Debug)]
pub struct ZipkinExporter {
    endpoint: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    service: String,
}

impl ZipkinExporter {
    /// An exporter posting to `endpoint`. Must be called inside a tokio
    /// runtime, which must outlive the exporter's last flush.
    pub fn new(endpoint: impl Into<String>, service: impl Into<String>) -> Result<Self, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the Zipkin exporter needs a tokio runtime".to_owned())?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the Zipkin HTTP client: {e}"))?;
        Ok(Self {
            endpoint: endpoint.into(),
            client,
            runtime,
            service: service.into(),
        })
    }
}

impl SpanExporter for ZipkinExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans: Vec<ZipkinSpan> = batch.iter().map(|s| to_zipkin(s, &self.service)).collect();
        let body = serde_json::to_vec(&spans)
            .map_err(|e| OTelSdkError::InternalFailure(format!("encoding spans: {e}")))?;
        let request = self
            .client
            .post(&self.endpoint)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        let sent = self.runtime.spawn(async move { request.send().await });
        let response = sent
            .await
            .map_err(|e| OTelSdkError::InternalFailure(format!("export task: {e}")))?
            .map_err(|e| OTelSdkError::InternalFailure(format!("posting spans to Zipkin: {e}")))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(OTelSdkError::InternalFailure(format!(
                "Zipkin answered {} to {} spans",
                response.status(),
                spans.len()
            )))
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(name) = resource.get(&Key::from_static_str(SERVICE_NAME)) {
            self.service = name.as_str().into_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::InstrumentationScope;
    use opentelemetry::trace::{Event, Link, SpanContext, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use serde_json::json;

    const T0: u64 = 1_700_000_000_000_000;

    fn at(us: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(us)
    }

    fn span(kind: SpanKind, parent: u64, attributes: Vec<KeyValue>) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736u128),
                SpanId::from(0x00f067aa0ba902b7u64),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: false,
            span_kind: kind,
            name: "GET".into(),
            start_time: at(T0),
            end_time: at(T0 + 1500),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("worker").build(),
        }
    }

    #[test]
    fn a_client_span_names_its_service_and_its_peer() {
        let s = span(
            SpanKind::Client,
            0x1111,
            vec![
                KeyValue::new("db.system.name", "redis"),
                KeyValue::new("db.operation.name", "GET"),
                KeyValue::new("server.address", "127.0.0.1"),
                KeyValue::new("server.port", 6379i64),
            ],
        );
        let got = serde_json::to_value(to_zipkin(&s, "worker")).expect("json");
        assert_eq!(
            got,
            json!({
                "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                "id": "00f067aa0ba902b7",
                "parentId": "0000000000001111",
                "name": "GET",
                "kind": "CLIENT",
                "timestamp": T0,
                "duration": 1500,
                "localEndpoint": { "serviceName": "worker" },
                "remoteEndpoint": { "serviceName": "redis", "ipv4": "127.0.0.1", "port": 6379 },
                "tags": {
                    "db.system.name": "redis",
                    "db.operation.name": "GET",
                    "server.address": "127.0.0.1",
                    "server.port": "6379",
                    "otel.scope.name": "worker"
                }
            })
        );
    }

    #[test]
    fn a_root_server_span_has_no_parent_and_no_remote_endpoint() {
        let s = span(
            SpanKind::Server,
            0,
            vec![KeyValue::new("server.address", "10.0.0.1")],
        );
        let got = serde_json::to_value(to_zipkin(&s, "api")).expect("json");
        assert!(got.get("parentId").is_none(), "{got}");
        assert!(got.get("remoteEndpoint").is_none(), "{got}");
        assert_eq!(got["kind"], "SERVER");
        assert_eq!(got["localEndpoint"]["serviceName"], "api");
    }

    #[test]
    fn internal_spans_have_no_kind_and_peers_by_hostname_keep_the_service() {
        let s = span(SpanKind::Internal, 1, vec![]);
        let got = serde_json::to_value(to_zipkin(&s, "api")).expect("json");
        assert!(got.get("kind").is_none(), "{got}");

        let s = span(
            SpanKind::Client,
            1,
            vec![
                KeyValue::new("peer.service", "weather-service"),
                KeyValue::new("server.address", "api.open-meteo.com"),
                KeyValue::new("server.port", 443i64),
            ],
        );
        let got = serde_json::to_value(to_zipkin(&s, "worker")).expect("json");
        assert_eq!(
            got["remoteEndpoint"],
            json!({ "serviceName": "weather-service", "port": 443 })
        );
    }

    #[test]
    fn errors_events_and_links_are_kept() {
        let mut s = span(SpanKind::Consumer, 1, vec![]);
        s.status = Status::error("upstream answered 503");
        s.events.events.push(Event::new(
            "exception",
            at(T0 + 10),
            vec![
                KeyValue::new("exception.type", "UpstreamError"),
                KeyValue::new("exception.message", "503"),
            ],
            0,
        ));
        s.events.events.push(Event::with_name("cache miss"));
        s.links.links.push(Link::with_context(SpanContext::new(
            TraceId::from(0xabcu128),
            SpanId::from(0xdefu64),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        )));
        let got = serde_json::to_value(to_zipkin(&s, "worker")).expect("json");
        assert_eq!(got["tags"]["error"], "upstream answered 503");
        assert_eq!(got["tags"]["otel.status_code"], "ERROR");
        assert_eq!(
            got["tags"]["otel.link.0"],
            "00000000000000000000000000000abc-0000000000000def"
        );
        assert_eq!(
            got["annotations"][0],
            json!({
                "timestamp": T0 + 10,
                "value": r#"exception: {"exception.message":"503","exception.type":"UpstreamError"}"#
            })
        );
        assert_eq!(got["annotations"][1]["value"], "cache miss");
    }

    #[test]
    fn consumer_spans_name_their_broker() {
        let s = span(
            SpanKind::Consumer,
            1,
            vec![
                KeyValue::new("messaging.system", "redis"),
                KeyValue::new("server.address", "127.0.0.1"),
                KeyValue::new("server.port", 6379i64),
            ],
        );
        let got = serde_json::to_value(to_zipkin(&s, "worker")).expect("json");
        assert_eq!(
            got["remoteEndpoint"],
            json!({ "serviceName": "redis", "ipv4": "127.0.0.1", "port": 6379 })
        );
    }

    #[test]
    fn a_zero_length_span_lasts_one_microsecond() {
        let mut s = span(
            SpanKind::Producer,
            1,
            vec![KeyValue::new("messaging.system", "redis")],
        );
        s.end_time = s.start_time;
        let got = serde_json::to_value(to_zipkin(&s, "api")).expect("json");
        assert_eq!(got["duration"], 1);
        assert_eq!(got["remoteEndpoint"], json!({ "serviceName": "redis" }));
    }
}
