//! What the benchmark measures: one run ([`Run`]), and the runs of one
//! system and setting over the rounds ([`Summary`]: medians and ranges).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::systems::System;

/// What one run measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Run {
    pub system: System,
    pub tracing: bool,
    pub round: usize,
    /// The worker's concurrency (Celery: processes).
    #[serde(default)]
    pub concurrency: usize,
    /// Worker processes that drained the queue together.
    #[serde(default = "one_worker")]
    pub workers: usize,
    pub jobs: usize,
    /// Jobs pushed per second by the system's producer.
    pub enqueue_per_sec: f64,
    /// Jobs finished per second, between 10% and 90% of the drain.
    pub drain_per_sec: f64,
    /// CPU of the worker (and its child processes) per job, ms.
    pub worker_cpu_ms: f64,
    /// CPU of redis-server per job during the drain, ms (summed over a
    /// cluster's nodes).
    pub redis_cpu_ms: f64,
    /// CPU of the weather stub per job during the drain, ms: the third
    /// party's share of the machine.
    #[serde(default)]
    pub stub_cpu_ms: f64,
    /// Redis commands per job during the drain (`INFO commandstats`; a
    /// script's own commands are counted with it).
    #[serde(default)]
    pub redis_calls: f64,
    /// The worker's resident memory (with its children) at 90%, MiB.
    pub worker_rss_mib: f64,
    /// Spans received per job (producer and worker).
    pub spans_per_job: f64,
    /// Distinct traces per job.
    pub traces_per_job: f64,
}

fn one_worker() -> usize {
    1
}

/// The median and the range of one measure over the rounds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn spread(values: &[f64]) -> Spread {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let median = match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    Spread {
        median,
        min: v.first().copied().unwrap_or(f64::NAN),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

/// One system with tracing off or on, over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub system: System,
    pub label: String,
    pub tracing: bool,
    /// Worker processes draining together.
    pub workers: usize,
    pub rounds: usize,
    pub enqueue_per_sec: Spread,
    pub drain_per_sec: Spread,
    pub worker_cpu_ms: Spread,
    pub redis_cpu_ms: Spread,
    pub stub_cpu_ms: Spread,
    pub redis_calls: Spread,
    pub worker_rss_mib: Spread,
    pub spans_per_job: Spread,
    pub traces_per_job: Spread,
}

pub fn summarize(runs: &[Run]) -> Vec<Summary> {
    let mut groups: BTreeMap<(System, bool, usize), Vec<&Run>> = BTreeMap::new();
    for r in runs {
        groups
            .entry((r.system, r.tracing, r.workers))
            .or_default()
            .push(r);
    }
    groups
        .into_iter()
        .map(|((system, tracing, workers), rs)| {
            let of = |f: fn(&Run) -> f64| spread(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
            Summary {
                system,
                // Results written before the concurrency was recorded
                // ran at the system's own.
                label: system.label(
                    rs.first()
                        .map(|r| r.concurrency)
                        .filter(|c| *c > 0)
                        .unwrap_or(system.concurrency()),
                    workers,
                ),
                tracing,
                workers,
                rounds: rs.len(),
                enqueue_per_sec: of(|r| r.enqueue_per_sec),
                drain_per_sec: of(|r| r.drain_per_sec),
                worker_cpu_ms: of(|r| r.worker_cpu_ms),
                redis_cpu_ms: of(|r| r.redis_cpu_ms),
                stub_cpu_ms: of(|r| r.stub_cpu_ms),
                redis_calls: of(|r| r.redis_calls),
                worker_rss_mib: of(|r| r.worker_rss_mib),
                spans_per_job: of(|r| r.spans_per_job),
                traces_per_job: of(|r| r.traces_per_job),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ranges_of_odd_and_even_counts() {
        let s = spread(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(spread(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert!(spread(&[]).median.is_nan());
    }
}
