//! The alert rules: which weather raises which alert, and the alert it
//! makes.

use serde::{Deserialize, Serialize};
use weather_jobs::WeatherUpdated;

/// The thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// Wind at or above, km/h.
    pub wind_kmh: f64,
    /// Temperature at or above, °C.
    pub heat_c: f64,
    /// Temperature at or below, °C.
    pub frost_c: f64,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `wind`, `heat` or `frost`.
    pub kind: String,
    /// The event that raised it (the weather job's id).
    pub event_id: String,
    /// The place's name.
    pub place: String,
    /// The place's key (the event's Kafka key).
    pub key: String,
    /// Latitude, degrees.
    pub latitude: f64,
    /// Longitude, degrees.
    pub longitude: f64,
    /// The measured value, in `unit`.
    pub value: f64,
    /// The rule's threshold, in `unit`.
    pub threshold: f64,
    /// `km/h` or `°C`.
    pub unit: String,
    /// When the weather was fetched.
    pub fetched_at: String,
    /// When the alert was raised (RFC 3339).
    pub raised_at: String,
    /// The trace of the job that led to it.
    pub trace_id: Option<String>,
}

/// Kinds of alert, each the `kind` label of `alerts_raised_total`.
pub(crate) const KINDS: [&str; 3] = ["wind", "heat", "frost"];

impl Rules {
    /// The alerts `event` raises (kind, value, threshold, unit).
    pub fn check(&self, event: &WeatherUpdated) -> Vec<(&'static str, f64, f64, &'static str)> {
        let (wind, temperature) = (event.wind_kmh(), event.temperature_c());
        let mut raised = Vec::new();
        if wind >= self.wind_kmh {
            raised.push(("wind", wind, self.wind_kmh, "km/h"));
        }
        if temperature >= self.heat_c {
            raised.push(("heat", temperature, self.heat_c, "°C"));
        }
        if temperature <= self.frost_c {
            raised.push(("frost", temperature, self.frost_c, "°C"));
        }
        raised
    }

    /// The alerts `event` raises, raised at `raised_at` (RFC 3339) in the
    /// trace `trace_id`.
    pub fn alerts(
        &self,
        event: &WeatherUpdated,
        raised_at: &str,
        trace_id: Option<&str>,
    ) -> Vec<Alert> {
        self.check(event)
            .into_iter()
            .map(|(kind, value, threshold, unit)| Alert {
                kind: kind.into(),
                event_id: event.job_id.clone(),
                place: event.place.clone(),
                key: event.key.clone(),
                latitude: event.latitude,
                longitude: event.longitude,
                value,
                threshold,
                unit: unit.into(),
                fetched_at: event.fetched_at.clone(),
                raised_at: raised_at.to_owned(),
                trace_id: trace_id.map(str::to_owned),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weather_jobs::Source;

    fn event(temperature: f64, unit_t: &str, wind: f64, unit_w: &str) -> WeatherUpdated {
        WeatherUpdated {
            job_id: "j".into(),
            key: "city:oslo".into(),
            place: "Oslo".into(),
            country: None,
            latitude: 59.9,
            longitude: 10.7,
            temperature,
            temperature_unit: unit_t.into(),
            wind_speed: wind,
            wind_speed_unit: unit_w.into(),
            weather_code: 0,
            source: Source::Upstream,
            fetched_at: String::new(),
        }
    }

    #[test]
    fn rules_fire_at_their_thresholds_in_any_units() {
        let rules = Rules {
            wind_kmh: 60.0,
            heat_c: 35.0,
            frost_c: -10.0,
        };
        let kinds = |e: &WeatherUpdated| -> Vec<&str> {
            rules.check(e).into_iter().map(|(k, ..)| k).collect()
        };
        assert!(kinds(&event(20.0, "°C", 59.9, "km/h")).is_empty());
        assert_eq!(kinds(&event(35.0, "°C", 60.0, "km/h")), ["wind", "heat"]);
        assert_eq!(kinds(&event(-10.0, "°C", 0.0, "km/h")), ["frost"]);
        // 14 °F is -10 °C; 40 mp/h is 64 km/h.
        assert_eq!(kinds(&event(14.0, "°F", 40.0, "mp/h")), ["wind", "frost"]);
    }

    #[test]
    fn an_alert_carries_its_event_its_rule_and_its_trace() {
        let rules = Rules {
            wind_kmh: 60.0,
            heat_c: 35.0,
            frost_c: -10.0,
        };
        let alerts = rules.alerts(
            &event(40.0, "°C", 0.0, "km/h"),
            "2025-01-01T00:00:00.000Z",
            Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        );
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let heat = &alerts[0];
        assert_eq!(
            (
                heat.kind.as_str(),
                heat.event_id.as_str(),
                heat.key.as_str()
            ),
            ("heat", "j", "city:oslo")
        );
        assert_eq!(
            (heat.value, heat.threshold, heat.unit.as_str()),
            (40.0, 35.0, "°C")
        );
        assert_eq!(heat.raised_at, "2025-01-01T00:00:00.000Z");
        assert_eq!(
            heat.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }
}
