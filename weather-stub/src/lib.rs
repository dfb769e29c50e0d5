//! A stand-in for the Open-Meteo geocoding and forecast APIs.
//!
//! Same paths and JSON shapes as the real service, so the worker runs
//! unchanged against either:
//! - `GET /v1/search?name=Berlin&count=1`: one place for any name, with
//!   coordinates derived from the name (the same name always gives the same
//!   place). Names starting with `nowhere` (any case) are unknown places:
//!   the answer has no `results`, as Open-Meteo's does.
//! - `GET /v1/forecast?latitude=52.5&longitude=13.4&current=temperature_2m,…`:
//!   current conditions derived from the coordinates.
//! - `GET /healthz`.
//!
//! `latency` delays every weather answer and `fail_rate` turns that share
//! of them into `503`s, so slowness and errors can be seen in traces.
//! Requests are SERVER spans continuing the caller's trace.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use telemetry::TelemetryArgs;
use telemetry::propagation::Propagation;
use tokio::net::TcpListener;

/// The stub's settings.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "weather-stub",
    version,
    about = "An Open-Meteo compatible weather stub"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "STUB_LISTEN", default_value = "0.0.0.0:8090")]
    pub listen: SocketAddr,
    /// Delay added to every weather answer, in milliseconds.
    #[arg(long, env = "STUB_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of weather answers turned into 503 errors, from 0 to 1.
    #[arg(long, env = "STUB_FAIL_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub fail_rate: f64,
    /// Tracing and logging.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is outside 0..=1"))
    }
}

#[derive(Debug, Clone)]
struct Behaviour {
    latency: Duration,
    fail_rate: f64,
}

/// The stub's routes, traced with `propagation`.
pub fn app(config: &Config, propagation: Propagation) -> Router {
    let behaviour = Behaviour {
        latency: Duration::from_millis(config.latency_ms),
        fail_rate: config.fail_rate,
    };
    Router::new()
        .route("/v1/search", get(search))
        .route("/v1/forecast", get(forecast))
        .with_state(behaviour)
        .route("/healthz", get(telemetry::http_server::healthz))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(
            telemetry::http_server::HttpTelemetry {
                propagation,
                metrics: None,
            },
            telemetry::http_server::trace_request,
        ))
}

/// Serves the stub on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    propagation: Propagation,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(
        addr = %listener.local_addr()?,
        latency_ms = config.latency_ms,
        fail_rate = config.fail_rate,
        "weather stub listening"
    );
    axum::serve(listener, app(&config, propagation))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Open-Meteo's error shape.
fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": true, "reason": reason.into() })),
    )
        .into_response()
}

/// Applies the configured latency and failure rate.
async fn misbehave(b: &Behaviour) -> Option<Response> {
    if !b.latency.is_zero() {
        tokio::time::sleep(b.latency).await;
    }
    (b.fail_rate > 0.0 && fastrand::f64() < b.fail_rate).then(|| {
        tracing::warn!(fail_rate = b.fail_rate, "injecting a failure");
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("injected failure (STUB_FAIL_RATE={})", b.fail_rate),
        )
    })
}

/// FNV-1a: a stable hash, so answers do not change between runs.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A number in `lo..hi` taken from bits of `h`, rounded to `places`.
fn pick(h: u64, shift: u32, lo: f64, hi: f64, places: i32) -> f64 {
    let unit = ((h >> shift) & 0xffff) as f64 / 65536.0;
    let scale = 10f64.powi(places);
    ((lo + unit * (hi - lo)) * scale).round() / scale
}

#[derive(Debug, Deserialize)]
struct SearchQuery {
    name: Option<String>,
    count: Option<String>,
}

async fn search(
    State(b): State<Behaviour>,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let name = q.name.unwrap_or_default();
    let name = name.trim();
    if name.is_empty() {
        return error(StatusCode::BAD_REQUEST, "Parameter 'name' is required");
    }
    if let Some(count) = q.count {
        match count.parse::<u32>() {
            Ok(1..=100) => {}
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Parameter 'count' must be between 1 and 100",
                );
            }
        }
    }
    if let Some(failure) = misbehave(&b).await {
        return failure;
    }
    if name.to_ascii_lowercase().starts_with("nowhere") {
        return Json(json!({ "generationtime_ms": 0.1 })).into_response();
    }
    let h = fnv(name.to_lowercase().as_bytes());
    Json(json!({
        "results": [{
            "id": h % 10_000_000,
            "name": name,
            "latitude": pick(h, 0, -60.0, 70.0, 5),
            "longitude": pick(h, 16, -180.0, 180.0, 5),
            "elevation": pick(h, 32, 0.0, 2500.0, 0),
            "feature_code": "PPL",
            "country_code": "ZZ",
            "country": "Stubland",
            "timezone": "UTC",
            "population": (h >> 40) % 5_000_000,
        }],
        "generationtime_ms": 0.1,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct ForecastQuery {
    latitude: Option<String>,
    longitude: Option<String>,
    current: Option<String>,
    temperature_unit: Option<String>,
    wind_speed_unit: Option<String>,
}

/// Current-condition variables the stub knows, with their units.
const VARIABLES: &[(&str, &str)] = &[
    ("temperature_2m", "°C"),
    ("apparent_temperature", "°C"),
    ("relative_humidity_2m", "%"),
    ("wind_speed_10m", "km/h"),
    ("wind_direction_10m", "°"),
    ("weather_code", "wmo code"),
    ("is_day", ""),
];
const WEATHER_CODES: &[u64] = &[0, 1, 2, 3, 45, 51, 61, 63, 71, 80, 95];

/// A coordinate parameter, or why it is unusable.
fn coordinate(value: Option<&str>, name: &str, limit: f64) -> Result<f64, String> {
    let value = value.unwrap_or_default();
    if value.is_empty() {
        return Err(format!("Parameter '{name}' is required"));
    }
    let v: f64 = value
        .parse()
        .map_err(|_| format!("Parameter '{name}' must be a number, got {value:?}"))?;
    if !v.is_finite() || v.abs() > limit {
        return Err(format!(
            "Parameter '{name}' must be in range of -{limit} to {limit}. Given: {v}."
        ));
    }
    Ok(v)
}

async fn forecast(
    State(b): State<Behaviour>,
    query: Result<Query<ForecastQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let coordinates = coordinate(q.latitude.as_deref(), "latitude", 90.0).and_then(|lat| {
        coordinate(q.longitude.as_deref(), "longitude", 180.0).map(|lon| (lat, lon))
    });
    let (latitude, longitude) = match coordinates {
        Ok(c) => c,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let wanted: Vec<&str> = q
        .current
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if let Some(bad) = wanted
        .iter()
        .find(|w| !VARIABLES.iter().any(|(v, _)| v == *w))
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "Cannot initialize WeatherVariable from invalid String value {bad} for key current"
            ),
        );
    }
    let fahrenheit = match q.temperature_unit.as_deref() {
        None | Some("celsius") => false,
        Some("fahrenheit") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("Invalid temperature_unit {other:?}"),
            );
        }
    };
    let (wind_factor, wind_unit) = match q.wind_speed_unit.as_deref() {
        None | Some("kmh") => (1.0, "km/h"),
        Some("ms") => (1.0 / 3.6, "m/s"),
        Some("mph") => (1.0 / 1.609_344, "mp/h"),
        Some("kn") => (1.0 / 1.852, "kn"),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("Invalid wind_speed_unit {other:?}"),
            );
        }
    };
    if let Some(failure) = misbehave(&b).await {
        return failure;
    }
    let h = fnv(format!("{latitude:.2},{longitude:.2}").as_bytes());
    let round1 = |v: f64| (v * 10.0).round() / 10.0;
    let celsius = pick(h, 0, -20.0, 35.0, 1);
    let temperature = |c: f64| {
        if fahrenheit {
            round1(c * 9.0 / 5.0 + 32.0)
        } else {
            c
        }
    };
    let values = |name: &str| -> Value {
        match name {
            "temperature_2m" => temperature(celsius).into(),
            "apparent_temperature" => temperature(celsius - pick(h, 48, 0.0, 4.0, 1)).into(),
            "relative_humidity_2m" => ((h >> 8) % 101).into(),
            "wind_speed_10m" => round1(pick(h, 16, 0.0, 60.0, 1) * wind_factor).into(),
            "wind_direction_10m" => ((h >> 24) % 360).into(),
            "weather_code" => {
                WEATHER_CODES[((h >> 32) % WEATHER_CODES.len() as u64) as usize].into()
            }
            _ => ((h >> 40) % 2).into(),
        }
    };
    let mut units = serde_json::Map::new();
    let mut current = serde_json::Map::new();
    units.insert("time".into(), "iso8601".into());
    units.insert("interval".into(), "seconds".into());
    current.insert("time".into(), "2026-01-01T12:00".into());
    current.insert("interval".into(), 900.into());
    for name in &wanted {
        let unit = match *name {
            "temperature_2m" | "apparent_temperature" if fahrenheit => "°F",
            "wind_speed_10m" => wind_unit,
            _ => VARIABLES
                .iter()
                .find(|(v, _)| v == name)
                .map_or("", |(_, u)| u),
        };
        units.insert((*name).into(), unit.into());
        current.insert((*name).into(), values(name));
    }
    let mut body = json!({
        "latitude": latitude,
        "longitude": longitude,
        "generationtime_ms": 0.1,
        "utc_offset_seconds": 0,
        "timezone": "GMT",
        "timezone_abbreviation": "GMT",
        "elevation": pick(h, 32, 0.0, 2500.0, 0),
    });
    if !wanted.is_empty() {
        body["current_units"] = Value::Object(units);
        body["current"] = Value::Object(current);
    }
    Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn config(latency_ms: u64, fail_rate: f64) -> Config {
        use clap::Parser;
        let mut c = Config::parse_from(["weather-stub"]);
        c.latency_ms = latency_ms;
        c.fail_rate = fail_rate;
        c
    }

    async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
        let res = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("answer");
        let status = res.status();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&body).expect("JSON body"))
    }

    #[tokio::test]
    async fn search_answers_any_name_the_same_way_every_time() {
        let app = app(&config(0, 0.0), Propagation::default());
        let (status, a) = get(
            &app,
            "/v1/search?name=Berlin&count=1&language=en&format=json",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let place = &a["results"][0];
        assert_eq!(place["name"], "Berlin");
        let lat = place["latitude"].as_f64().expect("latitude");
        let lon = place["longitude"].as_f64().expect("longitude");
        assert!((-60.0..=70.0).contains(&lat) && (-180.0..=180.0).contains(&lon));
        let (_, b) = get(&app, "/v1/search?name=berlin").await;
        assert_eq!(
            b["results"][0]["latitude"], place["latitude"],
            "case does not matter"
        );
        let (_, c) = get(&app, "/v1/search?name=Oslo").await;
        assert_ne!(c["results"][0]["latitude"], place["latitude"]);
    }

    #[tokio::test]
    async fn nowhere_is_an_unknown_place() {
        let app = app(&config(0, 0.0), Propagation::default());
        let (status, body) = get(&app, "/v1/search?name=Nowhere%20Land").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.get("results").is_none(), "{body}");
    }

    #[tokio::test]
    async fn forecast_gives_the_requested_current_variables() {
        let app = app(&config(0, 0.0), Propagation::default());
        let (status, body) = get(
            &app,
            "/v1/forecast?latitude=52.52&longitude=13.41&current=temperature_2m,wind_speed_10m,wind_direction_10m,weather_code",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let t = body["current"]["temperature_2m"]
            .as_f64()
            .expect("temperature");
        assert!((-20.0..=35.0).contains(&t));
        assert!(WEATHER_CODES.contains(&body["current"]["weather_code"].as_u64().expect("code")));
        assert_eq!(body["current_units"]["temperature_2m"], "°C");
        assert!(
            body["current"].get("is_day").is_none(),
            "only what was asked"
        );
        let (_, again) = get(
            &app,
            "/v1/forecast?latitude=52.52&longitude=13.41&current=temperature_2m",
        )
        .await;
        assert_eq!(
            again["current"]["temperature_2m"],
            body["current"]["temperature_2m"]
        );

        let (_, f) = get(
            &app,
            "/v1/forecast?latitude=52.52&longitude=13.41&current=temperature_2m,wind_speed_10m&temperature_unit=fahrenheit&wind_speed_unit=mph",
        )
        .await;
        let want = ((t * 9.0 / 5.0 + 32.0) * 10.0).round() / 10.0;
        assert_eq!(f["current"]["temperature_2m"].as_f64(), Some(want));
        assert_eq!(f["current_units"]["temperature_2m"], "°F");
        assert_eq!(f["current_units"]["wind_speed_10m"], "mp/h");
    }

    #[tokio::test]
    async fn bad_queries_get_open_meteo_style_errors() {
        let app = app(&config(0, 0.0), Propagation::default());
        for uri in [
            "/v1/search",
            "/v1/search?name=%20",
            "/v1/search?name=Oslo&count=0",
            "/v1/forecast?longitude=1",
            "/v1/forecast?latitude=91&longitude=1",
            "/v1/forecast?latitude=abc&longitude=1",
            "/v1/forecast?latitude=1&longitude=1&current=snowfall_depth_of_doom",
        ] {
            let (status, body) = get(&app, uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
            assert_eq!(body["error"], true, "{uri}");
            assert!(
                body["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{uri}"
            );
        }
        let (status, _) = get(&app, "/v2/nothing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn injected_failures_and_latency() {
        let app = app(&config(0, 1.0), Propagation::default());
        let (status, body) = get(&app, "/v1/search?name=Oslo").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("STUB_FAIL_RATE")
        );
        let (status, _) = get(&app, "/healthz").await;
        assert_eq!(status, StatusCode::OK, "health is never failed");

        let app = super::app(&config(150, 0.0), Propagation::default());
        let started = std::time::Instant::now();
        let (status, _) = get(&app, "/v1/search?name=Oslo").await;
        assert_eq!(status, StatusCode::OK);
        assert!(started.elapsed() >= Duration::from_millis(150));
    }

    #[test]
    fn fail_rate_must_be_a_share() {
        use clap::Parser;
        assert!(Config::try_parse_from(["weather-stub", "--fail-rate", "1.5"]).is_err());
        assert!(Config::try_parse_from(["weather-stub", "--fail-rate", "x"]).is_err());
        assert!(Config::try_parse_from(["weather-stub", "--fail-rate", "0.25"]).is_ok());
    }
}
