//! The api's contract as an OpenAPI 3.1 document, made from the code: the
//! handlers' `#[utoipa::path]` annotations and the shapes the api reads
//! ([`crate::requests`]) and writes ([`crate::views`]). Served at
//! `GET /openapi.json`; `GET /docs` renders it (`docs.rs`).
//!
//! Every error is an RFC 9457 problem ([`Problem`], `application/problem+json`);
//! the reusable responses below name each one a caller can meet.

use std::sync::LazyLock;

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse};

use crate::requests::{ListOrder, ListStatus};
use crate::views::{Health, Problem};

/// The request is malformed: the body is not valid JSON.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct BadRequest(pub Problem);

/// No valid API key: the api has keys (`API_KEYS`) and the request
/// carries none of them.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "`Bearer`"))
)]
pub struct Unauthorized(pub Problem);

/// No such job (it never existed, or it finished longer ago than the
/// retention time), or no such endpoint.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct NotFound(pub Problem);

/// The path exists, but not for this method.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Allow" = String, description = "The methods the path takes"))
)]
pub struct MethodNotAllowed(pub Problem);

/// The body is larger than 64 KiB (1 MiB for a batch).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct PayloadTooLarge(pub Problem);

/// The body is not sent as `application/json`.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct UnsupportedMediaType(pub Problem);

/// The job is not in a state that allows this: it has started or
/// finished (cancel), or it has not failed (retry).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct Conflict(pub Problem);

/// The body is JSON but not a job: `detail` names the field at fault.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct UnprocessableEntity(pub Problem);

/// A fault of the api's; the trace id in its logs leads to the cause.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct InternalError(pub Problem);

/// Try again later: the job queue (Redis) is unavailable, or the api has
/// as many requests in flight as it may (`API_MAX_IN_FLIGHT`; then with
/// `Retry-After: 1`).
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = String, description = "Seconds to wait, when the api sheds load"))
)]
pub struct ServiceUnavailable(pub Problem);

/// Whether the process runs
///
/// Outside the in-flight limit: an overloaded api still looks alive.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process runs", body = Health))
)]
#[allow(dead_code)] // served by the telemetry crate's routes; only described here
fn healthz() {}

/// Prometheus metrics
///
/// OpenMetrics, with trace ids as exemplars, when the `Accept` header asks
/// for `application/openmetrics-text`; the classic text format otherwise.
/// Outside the in-flight limit.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "The metrics", content(
        (String = "text/plain"),
        (String = "application/openmetrics-text"),
    )))
)]
#[allow(dead_code)] // served by the telemetry crate's routes; only described here
fn metrics() {}

const DESCRIPTION: &str = "\
Enqueues weather jobs for the workers and reports their status; every \
request is traced (W3C `traceparent` or B3 headers continue the caller's \
trace).

**Keys.** When the api is given keys (`API_KEYS`), every write under \
`/v1` (`POST /v1/jobs`, `DELETE /v1/jobs/{id}`) needs one, as `Authorization: Bearer <key>` \
or `X-API-Key: <key>`; reads need none. Without keys the api is open.

**Load.** Past `API_MAX_IN_FLIGHT` requests at once, the others are \
answered `503` with `Retry-After: 1` at once; `/healthz` and `/metrics` \
are always answered.

**Errors** are RFC 9457 problems (`application/problem+json`, schema \
`Problem`). A path the api does not serve is a `404` problem, a method a \
path does not take a `405` problem with an `Allow` header.";

/// The document's fixed parts; the operations come from the router.
#[derive(OpenApi)]
#[openapi(
    info(title = "traced-jobs api", description = DESCRIPTION),
    paths(healthz, metrics),
    components(
        schemas(Problem, ListStatus, ListOrder),
        responses(
            BadRequest,
            Unauthorized,
            NotFound,
            Conflict,
            MethodNotAllowed,
            PayloadTooLarge,
            UnsupportedMediaType,
            UnprocessableEntity,
            InternalError,
            ServiceUnavailable
        )
    ),
    modifiers(&KeySchemes),
    tags(
        (name = "jobs", description = "Enqueue weather jobs and follow them"),
        (name = "queues", description = "Pause and resume the queue"),
        (name = "operations", description = "Health, readiness, metrics"),
        (name = "contract", description = "This document, and a page to read it")
    )
)]
pub(crate) struct ApiDoc;

/// The two ways to send an API key.
struct KeySchemes;

impl Modify for KeySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key as a bearer token (when `API_KEYS` is set)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key (when `API_KEYS` is set)",
            ))),
        );
    }
}

/// The whole document: the fixed parts and every routed operation.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = crate::routes().split_for_parts().1;
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// Built once: it depends on the code alone. It is patched as JSON where
/// utoipa has no word for a rule: `delay_secs` and `run_at` exclude each
/// other (`not: {required: [delay_secs, run_at]}`).
static DOCUMENT: LazyLock<serde_json::Value> = LazyLock::new(|| {
    let mut doc = serde_json::to_value(openapi()).unwrap_or_default();
    for form in ["CityJob", "CoordinatesJob"] {
        if let Some(schema) = doc
            .pointer_mut(&format!("/components/schemas/{form}"))
            .and_then(serde_json::Value::as_object_mut)
        {
            schema.insert(
                "not".into(),
                serde_json::json!({ "required": ["delay_secs", "run_at"] }),
            );
        }
    }
    doc
});

/// This document
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "contract",
    responses(
        (status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub(crate) async fn openapi_json() -> Json<&'static serde_json::Value> {
    Json(&DOCUMENT)
}

/// The document as JSON, for the docs page.
pub(crate) fn document_json() -> Result<String, serde_json::Error> {
    serde_json::to_string(&*DOCUMENT)
}
