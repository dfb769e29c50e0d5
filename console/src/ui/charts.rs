//! Queue readings over the last minutes and their small charts:
//! throughput from the queue's counters, processing time (p50, p99) from
//! the CONSUMER spans (of the store, or of the Zipkin read from).

use std::sync::Arc;

use maud::{Markup, html};
use redis_job_queue::RedisQueue;

use super::{SAMPLE_EVERY, SAMPLES, Sample, UiState};
use crate::now_ms;

fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map(|us| *us as f64 / 1000.0)
}

/// Reads the queue every [`SAMPLE_EVERY`], keeping the last [`SAMPLES`].
pub(crate) async fn sample(state: Arc<UiState>, queue: RedisQueue) {
    let mut last: Option<(u64, u64)> = None;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tick.tick().await;
        let Ok(stats) = queue.stats().await else {
            continue;
        };
        let at = now_ms();
        let done = stats.succeeded_total + stats.failed_total;
        if let Some((then, done_then)) = last {
            let secs = (at.saturating_sub(then) as f64 / 1000.0).max(0.001);
            let mut d = state
                .source
                .consumer_durations(&state.http, &state.queue_name, then, at)
                .await;
            d.sort_unstable();
            let (p50, p99) = (percentile(&d, 0.5), percentile(&d, 0.99));
            if let Ok(mut samples) = state.samples.lock() {
                if samples.len() == SAMPLES {
                    samples.pop_front();
                }
                samples.push_back(Sample {
                    at_ms: at,
                    per_second: done.saturating_sub(done_then) as f64 / secs,
                    p50_ms: p50,
                    p99_ms: p99,
                });
            }
        }
        last = Some((at, done));
    }
}

/// A small line chart of `series` (one line each, same scale), labelled
/// for screen readers with the latest values.
pub(crate) fn sparkline(
    title: &str,
    unit: &str,
    series: &[(&str, &str, Vec<Option<f64>>)],
) -> Markup {
    const W: f64 = 300.0;
    const H: f64 = 60.0;
    let max = series
        .iter()
        .flat_map(|(_, _, v)| v.iter().flatten())
        .fold(0.0_f64, |m, v| m.max(*v))
        .max(f64::EPSILON);
    let latest: Vec<String> = series
        .iter()
        .map(|(name, _, v)| match v.iter().rev().flatten().next() {
            Some(x) => format!("{name} {x:.1} {unit}"),
            None => format!("{name}: no data"),
        })
        .collect();
    let label = format!("{title}, last {} readings: {}", SAMPLES, latest.join(", "));
    html! {
        figure.chart {
            figcaption { (title) ": " (latest.join(", ")) }
            svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(label) preserveAspectRatio="none" {
                line.axis x1="0" y1=(H) x2=(W) y2=(H) {}
                @for (_, colour, values) in series {
                    @let n = values.len().max(2) as f64 - 1.0;
                    @let points: Vec<String> = values.iter().enumerate().filter_map(|(i, v)| {
                        v.map(|v| format!("{:.1},{:.1}", i as f64 * W / n, H - v / max * (H - 4.0)))
                    }).collect();
                    polyline points=(points.join(" ")) fill="none" stroke=(colour) stroke-width="2" {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_charts_say_their_latest_values() {
        let d: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile(&d, 0.5), Some(51.0));
        assert_eq!(percentile(&d, 0.99), Some(99.0));
        assert_eq!(percentile(&[], 0.5), None);
        let chart = sparkline(
            "Processing time",
            "ms",
            &[
                ("p50", "#1a7f37", vec![Some(2.0), None, Some(4.0)]),
                ("p99", "#cf222e", vec![None, None, None]),
            ],
        )
        .into_string();
        assert!(chart.contains("p50 4.0 ms, p99: no data"), "{chart}");
        assert!(chart.contains(r#"points="0.0,32.0 300.0,4.0""#), "{chart}");
        assert!(chart.contains(r#"role="img""#));
    }
}
