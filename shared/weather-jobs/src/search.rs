//! The search filters that depend on what a weather job holds, shared by
//! the api (`GET /v1/jobs`) and the console (its Jobs page): where the
//! place is in the payload, and how a box and a time are written.

use redis_job_queue::{GeoBox, TextPrefix};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The city's path in a job's payload.
pub const CITY: &str = "place.city";
/// The latitude's.
pub const LATITUDE: &str = "place.latitude";
/// The longitude's.
pub const LONGITUDE: &str = "place.longitude";

/// Jobs whose city starts with `prefix` (any case, spaces around it
/// ignored; only spaces: any city).
pub fn place_prefix(prefix: &str) -> TextPrefix {
    TextPrefix {
        path: CITY.into(),
        prefix: prefix.trim().to_lowercase(),
    }
}

/// Jobs for coordinates in the box `west,south,east,north` (degrees; a
/// west past east crosses the antimeridian; edges past the poles or ±180°
/// are those; a south above the north holds nothing).
pub fn bbox(v: &str) -> Result<GeoBox, String> {
    let bad = || {
        format!(
            "bbox {v:?} is not four numbers: give west,south,east,north in degrees (10.5,59.8,11,60)"
        )
    };
    let n: Vec<f64> = v
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let [west, south, east, north] = n[..] else {
        return Err(bad());
    };
    if !n.iter().all(|x| x.is_finite()) {
        return Err(bad());
    }
    Ok(GeoBox {
        lat_path: LATITUDE.into(),
        lon_path: LONGITUDE.into(),
        south: south.clamp(-90.0, 90.0),
        west: west.clamp(-180.0, 180.0),
        north: north.clamp(-90.0, 90.0),
        east: east.clamp(-180.0, 180.0),
    })
}

/// An RFC 3339 time as epoch milliseconds; a time before 1970 is 1970
/// (no job was queued before). `name` names it in the error.
pub fn time_ms(name: &str, v: &str) -> Result<u64, String> {
    let at = OffsetDateTime::parse(v.trim(), &Rfc3339)
        .map_err(|e| format!("{name} {v:?} is not an RFC 3339 time (2026-12-04T15:00:00Z): {e}"))?;
    let ms = (at.unix_timestamp_nanos() / 1_000_000).max(0);
    Ok(u64::try_from(ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_and_times_read_as_written() {
        let b = bbox("10.5, 59.8,11,60").expect("a box");
        assert_eq!((b.west, b.south, b.east, b.north), (10.5, 59.8, 11.0, 60.0));
        let b = bbox("-200,-95,200,95").expect("past the edges");
        assert_eq!(
            (b.west, b.south, b.east, b.north),
            (-180.0, -90.0, 180.0, 90.0)
        );
        for bad in ["1,2,3", "1,2,3,4,5", "NaN,1,2,3", "a,b,c,d"] {
            assert!(bbox(bad).is_err(), "{bad}");
        }
        assert_eq!(time_ms("t", "2026-12-04T15:00:00Z"), Ok(1_796_396_400_000));
        assert_eq!(
            time_ms("t", "2026-12-04T17:00:00+01:00"),
            Ok(1_796_400_000_000)
        );
        assert_eq!(time_ms("t", "1960-01-01T00:00:00Z"), Ok(0));
        assert!(time_ms("t", "yesterday").is_err_and(|e| e.contains("RFC 3339")));
        assert_eq!(place_prefix(" BER ").prefix, "ber");
    }
}
