//! Turns a request body into a weather job, or says precisely what is wrong.
//!
//! Accepted: `{"city": "Berlin"}` or `{"latitude": 52.5, "longitude": 13.4}`,
//! each with an optional `"units": "metric" | "imperial"`.

use serde_json::{Map, Value};
use weather_jobs::{Place, Units, WeatherJob};

/// Longest place name accepted (the longest real ones are under 100).
const MAX_CITY_CHARS: usize = 200;
const FIELDS: &[&str] = &["city", "latitude", "longitude", "units"];

fn number(body: &Map<String, Value>, name: &str, limit: f64) -> Result<Option<f64>, String> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let v = n
                .as_f64()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("\"{name}\" must be a finite number"))?;
            if v.abs() > limit {
                return Err(format!(
                    "\"{name}\" must be between -{limit} and {limit}, got {v}"
                ));
            }
            Ok(Some(v))
        }
        Some(other) => Err(format!("\"{name}\" must be a number, got {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The job `body` describes.
pub(crate) fn job(body: &Value) -> Result<WeatherJob, String> {
    let Value::Object(body) = body else {
        return Err(format!(
            "the body must be a JSON object such as {{\"city\": \"Berlin\"}}, got {}",
            kind(body)
        ));
    };
    if let Some(unknown) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "unknown field \"{unknown}\"; the fields are city, latitude, longitude and units"
        ));
    }
    let units = match body.get("units") {
        None | Some(Value::Null) => Units::default(),
        Some(Value::String(s)) => match s.as_str() {
            "metric" => Units::Metric,
            "imperial" => Units::Imperial,
            other => {
                return Err(format!(
                    "\"units\" must be \"metric\" or \"imperial\", got \"{other}\""
                ));
            }
        },
        Some(other) => return Err(format!("\"units\" must be a string, got {}", kind(other))),
    };
    let latitude = number(body, "latitude", 90.0)?;
    let longitude = number(body, "longitude", 180.0)?;
    let place = match (body.get("city"), latitude, longitude) {
        (Some(Value::String(city)), None, None) => {
            let city = city.trim();
            if city.is_empty() {
                return Err("\"city\" must not be empty".into());
            }
            if city.chars().count() > MAX_CITY_CHARS {
                return Err(format!(
                    "\"city\" must be at most {MAX_CITY_CHARS} characters"
                ));
            }
            if city.chars().any(char::is_control) {
                return Err("\"city\" must not contain control characters".into());
            }
            Place::City {
                city: city.to_owned(),
            }
        }
        (Some(Value::String(_)), _, _) => {
            return Err("give either \"city\" or \"latitude\" and \"longitude\", not both".into());
        }
        (Some(Value::Null) | None, Some(latitude), Some(longitude)) => Place::Coordinates {
            latitude,
            longitude,
        },
        (Some(Value::Null) | None, Some(_), None) => {
            return Err("\"longitude\" is missing (coordinates need both)".into());
        }
        (Some(Value::Null) | None, None, Some(_)) => {
            return Err("\"latitude\" is missing (coordinates need both)".into());
        }
        (Some(Value::Null) | None, None, None) => {
            return Err("missing place: give \"city\", or \"latitude\" and \"longitude\"".into());
        }
        (Some(other), _, _) => {
            return Err(format!("\"city\" must be a string, got {}", kind(other)));
        }
    };
    Ok(WeatherJob { place, units })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cities_and_coordinates_are_accepted() {
        assert_eq!(
            job(&json!({ "city": "  Berlin " })),
            Ok(WeatherJob {
                place: Place::City {
                    city: "Berlin".into()
                },
                units: Units::Metric
            })
        );
        assert_eq!(
            job(&json!({ "latitude": 52.5, "longitude": -13, "units": "imperial" })),
            Ok(WeatherJob {
                place: Place::Coordinates {
                    latitude: 52.5,
                    longitude: -13.0
                },
                units: Units::Imperial
            })
        );
        assert!(
            job(&json!({ "latitude": 90, "longitude": -180 })).is_ok(),
            "bounds are inclusive"
        );
    }

    #[test]
    fn every_mistake_gets_a_message_naming_it() {
        let cases = [
            (json!([1]), "JSON object"),
            (json!("Berlin"), "JSON object"),
            (json!({}), "missing place"),
            (json!({ "city": "" }), "must not be empty"),
            (json!({ "city": "   " }), "must not be empty"),
            (json!({ "city": 12 }), "\"city\" must be a string"),
            (json!({ "city": "a".repeat(201) }), "at most 200"),
            (json!({ "city": "Ber\u{0}lin" }), "control characters"),
            (
                json!({ "city": "Oslo", "latitude": 1, "longitude": 2 }),
                "not both",
            ),
            (
                json!({ "latitude": 91, "longitude": 0 }),
                "between -90 and 90",
            ),
            (
                json!({ "latitude": 0, "longitude": -180.5 }),
                "between -180 and 180",
            ),
            (
                json!({ "latitude": "52", "longitude": 13 }),
                "must be a number, got a string",
            ),
            (json!({ "latitude": 52 }), "\"longitude\" is missing"),
            (json!({ "longitude": 13 }), "\"latitude\" is missing"),
            (
                json!({ "city": "Oslo", "units": "kelvin" }),
                "\"metric\" or \"imperial\"",
            ),
            (
                json!({ "city": "Oslo", "units": 1 }),
                "\"units\" must be a string",
            ),
            (
                json!({ "city": "Oslo", "country": "NO" }),
                "unknown field \"country\"",
            ),
        ];
        for (body, want) in cases {
            let err = job(&body).expect_err(&body.to_string());
            assert!(err.contains(want), "{body}: {err:?} lacks {want:?}");
        }
    }
}
