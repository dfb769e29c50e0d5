//! The Open-Meteo routes: geocoding search and current conditions, derived
//! from a stable hash of the question, plus the injected slowness and
//! failures.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

/// `GET /v1/search` and `GET /v1/forecast`, misbehaving as `behaviour`
/// says, `GET`/`PUT /stub/failures` to read and change how, and `GET
/// /stub/calls` to count the calls answered.
pub(crate) fn routes(behaviour: Behaviour) -> Router {
    Router::new()
        .route("/v1/search", get(search))
        .route("/v1/forecast", get(forecast))
        .route("/stub/failures", get(get_failures).put(put_failures))
        .with_state(behaviour)
}

/// How the stub misbehaves on purpose; the failure settings can change
/// while it runs (`PUT /stub/failures`), shared by every clone.
#[derive(Debug, Clone)]
pub(crate) struct Behaviour {
    pub(crate) latency: Duration,
    pub(crate) failures: Arc<RwLock<Failures>>,
    pub(crate) calls: Arc<Calls>,
}

/// `GET /stub/calls`, for the stub's untraced routes: polling it leaves no
/// span behind.
pub(crate) fn untraced_routes(behaviour: Behaviour) -> Router {
    Router::new()
        .route("/stub/calls", get(get_calls))
        .route("/stub/forecasts", get(get_forecasts))
        .with_state(behaviour)
}

/// Calls answered (with weather or with an error) since the stub started.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    search: AtomicU64,
    forecast: AtomicU64,
    /// The latest forecasts asked for, oldest first.
    arrivals: Mutex<VecDeque<Arrival>>,
}

/// Forecasts remembered for `GET /stub/forecasts`.
const ARRIVALS_KEPT: usize = 100_000;

/// When a forecast for a place was asked for.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Arrival {
    latitude: f64,
    longitude: f64,
    /// Microseconds since the Unix epoch.
    at_us: u64,
}

impl Calls {
    fn arrived(&self, latitude: f64, longitude: f64) {
        let at_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        if arrivals.len() == ARRIVALS_KEPT {
            arrivals.pop_front();
        }
        arrivals.push_back(Arrival {
            latitude,
            longitude,
            at_us,
        });
    }
}

/// `GET /stub/forecasts`: the latest forecasts asked for (at most
/// 100,000), with the place and when, so a benchmark reads each job's
/// latency to its forecast call.
async fn get_forecasts(State(b): State<Behaviour>) -> Response {
    let arrivals: Vec<Arrival> = b
        .calls
        .arrivals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect();
    Json(arrivals).into_response()
}

/// `GET /stub/calls`: how many searches and forecasts were answered, so a
/// test or a benchmark counts upstream calls without reading spans.
async fn get_calls(State(b): State<Behaviour>) -> Response {
    Json(json!({
        "search": b.calls.search.load(Ordering::Relaxed),
        "forecast": b.calls.forecast.load(Ordering::Relaxed),
    }))
    .into_response()
}

/// Which answers fail, and how.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Failures {
    /// Share of weather answers that fail, from 0 to 1.
    pub(crate) fail_rate: f64,
    /// Their status: 503, or 429 for rate limiting.
    pub(crate) status: u16,
    /// The `Retry-After` seconds a failure carries (0: none).
    pub(crate) retry_after_secs: u64,
}

/// Open-Meteo's error shape.
pub(crate) fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": true, "reason": reason.into() })),
    )
        .into_response()
}

/// Applies the configured latency and failures.
async fn misbehave(b: &Behaviour) -> Option<Response> {
    if !b.latency.is_zero() {
        tokio::time::sleep(b.latency).await;
    }
    let f = b.failures.read().map(|f| *f).ok()?;
    (f.fail_rate > 0.0 && fastrand::f64() < f.fail_rate).then(|| {
        tracing::warn!(
            fail_rate = f.fail_rate,
            status = f.status,
            "injecting a failure"
        );
        let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut res = error(
            status,
            format!("injected failure (STUB_FAIL_RATE={})", f.fail_rate),
        );
        if f.retry_after_secs > 0
            && let Ok(v) = HeaderValue::from_str(&f.retry_after_secs.to_string())
        {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        res
    })
}

/// `GET /stub/failures`: the failure settings.
pub(crate) async fn get_failures(State(b): State<Behaviour>) -> Response {
    match b.failures.read() {
        Ok(f) => Json(*f).into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "settings unreadable"),
    }
}

/// `PUT /stub/failures`: changes them while the stub runs, so tests can
/// make the weather service fail and recover.
pub(crate) async fn put_failures(
    State(b): State<Behaviour>,
    body: Result<Json<Failures>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(new)) = body else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "send {\"fail_rate\": 0..1, \"status\": 429 or 5xx, \"retry_after_secs\": n}",
        );
    };
    if !(0.0..=1.0).contains(&new.fail_rate)
        || !(new.status == 429 || (500..=599).contains(&new.status))
    {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "fail_rate must be 0 to 1, status 429 or 5xx",
        );
    }
    match b.failures.write() {
        Ok(mut f) => {
            *f = new;
            tracing::info!(
                fail_rate = new.fail_rate,
                status = new.status,
                "failures changed"
            );
            Json(new).into_response()
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "settings unwritable"),
    }
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
    b.calls.search.fetch_add(1, Ordering::Relaxed);
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
pub(crate) const WEATHER_CODES: &[u64] = &[0, 1, 2, 3, 45, 51, 61, 63, 71, 80, 95];

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
    b.calls.forecast.fetch_add(1, Ordering::Relaxed);
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
    b.calls.arrived(latitude, longitude);
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
