//! The weather domain shared by the api and the worker: the job the api
//! enqueues and the worker runs, its result, and the settings of Redis and
//! the weather queue ([`settings`]); and the [`problem()`] body every
//! service's HTTP errors share.

pub mod problem;
pub mod search;
pub mod settings;

pub use problem::problem;

use serde::{Deserialize, Serialize};

/// Name of the weather queue (also `messaging.destination.name`).
pub const WEATHER_QUEUE: &str = "weather";

/// Where to fetch the weather for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Place {
    /// A place name, geocoded by the weather service.
    City {
        /// The name as the caller gave it (trimmed).
        city: String,
    },
    /// Coordinates, used as they are.
    Coordinates {
        /// Degrees north, -90 to 90.
        latitude: f64,
        /// Degrees east, -180 to 180.
        longitude: f64,
    },
}

impl Place {
    /// The cache key part naming this place: case and spacing of names do
    /// not matter, coordinates are rounded to about a kilometre.
    pub fn cache_key(&self) -> String {
        match self {
            Self::City { city } => format!("city:{}", city.trim().to_lowercase()),
            Self::Coordinates {
                latitude,
                longitude,
            } => format!("coords:{latitude:.2},{longitude:.2}"),
        }
    }
}

/// Unit system of the result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Units {
    /// °C and km/h.
    #[default]
    Metric,
    /// °F and mph.
    Imperial,
}

impl Units {
    /// Open-Meteo's `temperature_unit`.
    pub fn temperature_param(self) -> &'static str {
        match self {
            Self::Metric => "celsius",
            Self::Imperial => "fahrenheit",
        }
    }

    /// Open-Meteo's `wind_speed_unit`.
    pub fn wind_speed_param(self) -> &'static str {
        match self {
            Self::Metric => "kmh",
            Self::Imperial => "mph",
        }
    }

    /// Lower-case name (`metric`, `imperial`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Metric => "metric",
            Self::Imperial => "imperial",
        }
    }
}

/// A weather-fetch job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeatherJob {
    /// Where.
    pub place: Place,
    /// In which units.
    #[serde(default)]
    pub units: Units,
}

/// Where a result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Fetched from the weather service for this job.
    Upstream,
    /// Read from the cache.
    Cache,
}

/// What a weather job produces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeatherResult {
    /// Place name (from geocoding; `null` for bare coordinates).
    pub place: Option<String>,
    /// Country, when geocoding gave one.
    pub country: Option<String>,
    /// Degrees north.
    pub latitude: f64,
    /// Degrees east.
    pub longitude: f64,
    /// Current temperature.
    pub temperature: f64,
    /// `°C` or `°F`.
    pub temperature_unit: String,
    /// Current wind speed.
    pub wind_speed: f64,
    /// As the weather service names it: `km/h`, or `mp/h` for imperial.
    pub wind_speed_unit: String,
    /// Wind direction, degrees.
    pub wind_direction: f64,
    /// WMO weather code.
    pub weather_code: u32,
    /// Upstream or cache.
    pub source: Source,
    /// When the weather service was asked (RFC 3339, UTC).
    pub fetched_at: String,
}

/// The default topic of [`WeatherUpdated`] events.
pub const WEATHER_UPDATED_TOPIC: &str = "weather.updated";

/// The event a successful weather job publishes to Kafka
/// (`weather.updated`), keyed by [`Self::key`], so events of one place
/// stay in order on one partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeatherUpdated {
    /// The job that fetched it: the event's id (a job that runs twice
    /// publishes the same id, which consumers recognise).
    pub job_id: String,
    /// The place's key (`city:oslo`, `coords:59.91,10.75`).
    pub key: String,
    /// The place's name (the geocoded city, or the coordinates).
    pub place: String,
    /// The country, for a city.
    pub country: Option<String>,
    /// Latitude, degrees.
    pub latitude: f64,
    /// Longitude, degrees.
    pub longitude: f64,
    /// Temperature, in `temperature_unit`.
    pub temperature: f64,
    /// `°C` or `°F`.
    pub temperature_unit: String,
    /// Wind speed, in `wind_speed_unit`.
    pub wind_speed: f64,
    /// `km/h`, `mp/h`, `m/s` or `kn`.
    pub wind_speed_unit: String,
    /// WMO weather code.
    pub weather_code: u32,
    /// Where the job found it.
    pub source: Source,
    /// When the weather was fetched (RFC 3339).
    pub fetched_at: String,
}

impl WeatherUpdated {
    /// The event of job `job_id`, which asked for `job` and found `result`.
    pub fn new(job_id: &str, job: &WeatherJob, result: &WeatherResult) -> Self {
        let place = match (&result.place, &job.place) {
            (Some(name), _) => name.clone(),
            (None, Place::City { city }) => city.clone(),
            (None, Place::Coordinates { .. }) => {
                format!("{:.2},{:.2}", result.latitude, result.longitude)
            }
        };
        Self {
            job_id: job_id.to_owned(),
            key: job.place.cache_key(),
            place,
            country: result.country.clone(),
            latitude: result.latitude,
            longitude: result.longitude,
            temperature: result.temperature,
            temperature_unit: result.temperature_unit.clone(),
            wind_speed: result.wind_speed,
            wind_speed_unit: result.wind_speed_unit.clone(),
            weather_code: result.weather_code,
            source: result.source,
            fetched_at: result.fetched_at.clone(),
        }
    }

    /// The temperature in °C.
    pub fn temperature_c(&self) -> f64 {
        if self.temperature_unit.contains('F') {
            (self.temperature - 32.0) * 5.0 / 9.0
        } else {
            self.temperature
        }
    }

    /// The wind speed in km/h.
    pub fn wind_kmh(&self) -> f64 {
        let factor = match self.wind_speed_unit.as_str() {
            "mp/h" | "mph" => 1.609_344,
            "m/s" | "ms" => 3.6,
            "kn" => 1.852,
            _ => 1.0,
        };
        self.wind_speed * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(unit_t: &str, unit_w: &str) -> WeatherResult {
        WeatherResult {
            place: None,
            country: None,
            latitude: 59.913,
            longitude: 10.752,
            temperature: 50.0,
            temperature_unit: unit_t.into(),
            wind_speed: 10.0,
            wind_speed_unit: unit_w.into(),
            wind_direction: 0.0,
            weather_code: 3,
            source: Source::Upstream,
            fetched_at: "2026-11-27T00:00:00Z".into(),
        }
    }

    #[test]
    fn an_event_names_its_place_and_converts_units() {
        let job = WeatherJob {
            place: Place::Coordinates {
                latitude: 59.913,
                longitude: 10.752,
            },
            units: Units::Imperial,
        };
        let e = WeatherUpdated::new("j1", &job, &result("°F", "mp/h"));
        assert_eq!(
            (e.key.as_str(), e.place.as_str()),
            ("coords:59.91,10.75", "59.91,10.75")
        );
        assert!((e.temperature_c() - 10.0).abs() < 1e-9);
        assert!((e.wind_kmh() - 16.093_44).abs() < 1e-9);
        let e = WeatherUpdated::new("j2", &job, &result("°C", "km/h"));
        assert_eq!((e.temperature_c(), e.wind_kmh()), (50.0, 10.0));
    }
}
