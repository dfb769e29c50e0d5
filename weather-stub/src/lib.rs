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
//! of them into `503`s (or `429`s with `Retry-After`), so slowness and
//! errors can be seen in traces. `GET`/`PUT /stub/failures` reads and
//! changes the failures while the stub runs, so a test can make the
//! service fail and then recover. `GET /stub/calls` counts the searches
//! and forecasts answered, and `GET /stub/forecasts` lists the latest
//! forecasts asked for, with when (untraced, so polling leaves no span).
//! Requests are SERVER spans continuing the caller's trace.

mod open_meteo;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use telemetry::TelemetryArgs;
use telemetry::propagation::Propagation;
use tokio::net::TcpListener;

use open_meteo::{Behaviour, Failures, error};

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
    /// Share of weather answers turned into errors, from 0 to 1
    /// (changeable while running: `PUT /stub/failures`).
    #[arg(long, env = "STUB_FAIL_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub fail_rate: f64,
    /// The status of those errors: 503, or 429 (rate limited).
    #[arg(long, env = "STUB_FAIL_STATUS", default_value_t = 503, value_parser = parse_fail_status)]
    pub fail_status: u16,
    /// The `Retry-After` seconds the errors carry (0: none).
    #[arg(long, env = "STUB_RETRY_AFTER_SECS", default_value_t = 0)]
    pub retry_after_secs: u64,
    /// Tracing and logging.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

fn parse_fail_status(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(status) if status == 429 || (500..=599).contains(&status) => Ok(status),
        _ => Err(format!("{s:?} is not 429 or a 5xx status")),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is outside 0..=1"))
    }
}

/// The stub's routes, traced with `propagation`.
pub fn app(config: &Config, propagation: Propagation) -> Router {
    let behaviour = Behaviour {
        latency: Duration::from_millis(config.latency_ms),
        failures: std::sync::Arc::new(std::sync::RwLock::new(Failures {
            fail_rate: config.fail_rate,
            status: config.fail_status,
            retry_after_secs: config.retry_after_secs,
        })),
        calls: std::sync::Arc::default(),
    };
    open_meteo::routes(behaviour.clone())
        .route("/healthz", get(telemetry::ops::healthz))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(
            telemetry::http_server::HttpTelemetry {
                propagation,
                metrics: None,
            },
            telemetry::http_server::trace_request,
        ))
        .merge(open_meteo::untraced_routes(behaviour))
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use open_meteo::WEATHER_CODES;
    use serde_json::Value;
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
    async fn the_calls_answered_are_counted() {
        let app = app(&config(0, 0.0), Propagation::default());
        get(&app, "/v1/search?name=Oslo").await;
        for lat in ["1", "2", "x"] {
            get(&app, &format!("/v1/forecast?latitude={lat}&longitude=3")).await;
        }
        let (status, calls) = get(&app, "/stub/calls").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(calls, serde_json::json!({ "search": 1, "forecast": 3 }));
        // The forecasts for a place, with when they came.
        let (status, arrivals) = get(&app, "/stub/forecasts").await;
        assert_eq!(status, StatusCode::OK);
        let places: Vec<(f64, f64)> = arrivals
            .as_array()
            .expect("a list")
            .iter()
            .map(|a| {
                (
                    a["latitude"].as_f64().unwrap_or(f64::NAN),
                    a["longitude"].as_f64().unwrap_or(f64::NAN),
                )
            })
            .collect();
        assert_eq!(places, [(1.0, 3.0), (2.0, 3.0)], "{arrivals}");
        assert!(
            arrivals[0]["at_us"]
                .as_u64()
                .is_some_and(|t| t > 1_600_000_000_000_000)
        );
    }

    #[tokio::test]
    async fn failures_change_while_the_stub_runs() {
        let app = app(&config(0, 0.0), Propagation::default());
        let put = |body: &str| {
            Request::put("/stub/failures")
                .header("content-type", "application/json")
                .body(Body::from(body.to_owned()))
                .expect("request")
        };
        let res = app
            .clone()
            .oneshot(put(
                r#"{"fail_rate": 1, "status": 429, "retry_after_secs": 7}"#,
            ))
            .await
            .expect("answer");
        assert_eq!(res.status(), StatusCode::OK);
        let res = app
            .clone()
            .oneshot(
                Request::get("/v1/search?name=Oslo")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("answer");
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()["retry-after"], "7");
        let (_, now) = get(&app, "/stub/failures").await;
        assert_eq!(now["status"], 429);
        let bad = app
            .clone()
            .oneshot(put(
                r#"{"fail_rate": 2, "status": 200, "retry_after_secs": 0}"#,
            ))
            .await
            .expect("answer");
        assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
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
