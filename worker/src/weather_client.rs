//! The weather service (Open-Meteo or the stub): geocoding by name, then
//! current conditions.

use reqwest::Url;
use serde::Deserialize;
use telemetry::http_client::{HttpError, TracedClient};
use weather_jobs::Units;

/// `peer.service` of weather-service calls in traces.
pub const PEER_SERVICE: &str = "weather-service";

/// A geocoded place.
#[derive(Debug, Clone, Deserialize)]
pub struct GeoPlace {
    /// Name.
    pub name: String,
    /// Country.
    pub country: Option<String>,
    /// Degrees north.
    pub latitude: f64,
    /// Degrees east.
    pub longitude: f64,
}

#[derive(Debug, Deserialize)]
struct SearchAnswer {
    #[serde(default)]
    results: Vec<GeoPlace>,
}

/// Current conditions.
#[derive(Debug, Clone, Deserialize)]
pub struct Current {
    /// Temperature, in the units asked for.
    pub temperature_2m: f64,
    /// Wind speed, in the units asked for.
    pub wind_speed_10m: f64,
    /// Wind direction, degrees.
    pub wind_direction_10m: f64,
    /// WMO weather code.
    pub weather_code: u32,
}

#[derive(Debug, Deserialize)]
struct ForecastAnswer {
    current: Current,
    current_units: CurrentUnits,
}

#[derive(Debug, Deserialize)]
struct CurrentUnits {
    temperature_2m: String,
    wind_speed_10m: String,
}

/// Forecast with the units the service reports.
#[derive(Debug, Clone)]
pub struct Conditions {
    /// The values.
    pub current: Current,
    /// e.g. `°C`.
    pub temperature_unit: String,
    /// e.g. `km/h`.
    pub wind_speed_unit: String,
}

/// Talks to the geocoding and forecast APIs.
#[derive(Debug, Clone)]
pub struct WeatherClient {
    http: TracedClient,
    geocoding: Url,
    forecast: Url,
}

impl WeatherClient {
    /// A client for the APIs under these base URLs.
    pub fn new(
        http: TracedClient,
        geocoding_base: &Url,
        weather_base: &Url,
    ) -> Result<Self, String> {
        let join = |base: &Url, path: &str| {
            base.join(path)
                .map_err(|e| format!("cannot build a URL from {base}: {e}"))
        };
        Ok(Self {
            http,
            geocoding: join(geocoding_base, "v1/search")?,
            forecast: join(weather_base, "v1/forecast")?,
        })
    }

    /// The best match for `name`, or `None` for an unknown place;
    /// `resend` counts the sends before this one (0: the first).
    pub async fn geocode(&self, name: &str, resend: u32) -> Result<Option<GeoPlace>, HttpError> {
        let mut url = self.geocoding.clone();
        url.query_pairs_mut()
            .append_pair("name", name)
            .append_pair("count", "1")
            .append_pair("language", "en")
            .append_pair("format", "json");
        let answer: SearchAnswer = self.http.resend_json(url, PEER_SERVICE, resend).await?;
        Ok(answer.results.into_iter().next())
    }

    /// Current conditions at a point; `resend` counts the sends before
    /// this one (0: the first).
    pub async fn current(
        &self,
        latitude: f64,
        longitude: f64,
        units: Units,
        resend: u32,
    ) -> Result<Conditions, HttpError> {
        let mut url = self.forecast.clone();
        url.query_pairs_mut()
            .append_pair("latitude", &latitude.to_string())
            .append_pair("longitude", &longitude.to_string())
            .append_pair(
                "current",
                "temperature_2m,wind_speed_10m,wind_direction_10m,weather_code",
            )
            .append_pair("temperature_unit", units.temperature_param())
            .append_pair("wind_speed_unit", units.wind_speed_param());
        let answer: ForecastAnswer = self.http.resend_json(url, PEER_SERVICE, resend).await?;
        Ok(Conditions {
            current: answer.current,
            temperature_unit: answer.current_units.temperature_2m,
            wind_speed_unit: answer.current_units.wind_speed_10m,
        })
    }
}
