//! The weather domain shared by the api and the worker: the job the api
//! enqueues and the worker runs, its result, and the settings of Redis and
//! the weather queue ([`settings`]).

pub mod settings;

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
    /// `km/h` or `mph`.
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
