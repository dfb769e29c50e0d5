//! The results: every run as JSON, and the medians as a Markdown table with
//! the ratios to the peers and the targets, each marked met or not.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::results::{Run, Spread, Summary, summarize};
use crate::systems::System;

/// Writes `results.json`, `results.md` and `results.png` into `out`.
pub fn write(out: &Path, runs: &[Run], quick: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let summary = summarize(runs);
    let json = serde_json::json!({ "quick": quick, "runs": runs, "summary": summary });
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    tables_and_chart(out, &summary, quick)
}

fn tables_and_chart(out: &Path, summary: &[Summary], quick: bool) -> anyhow::Result<()> {
    let md = markdown(summary, quick);
    std::fs::write(out.join("results.md"), &md)?;
    println!("{md}");
    crate::chart::draw(&out.join("results.png"), &fewest_workers(summary))
}

/// Each system's runs with the fewest worker processes: the main table's
/// and the chart's.
fn fewest_workers(summary: &[Summary]) -> Vec<Summary> {
    summary
        .iter()
        .filter(|s| {
            summary
                .iter()
                .filter(|x| x.system == s.system)
                .all(|x| x.workers >= s.workers)
        })
        .cloned()
        .collect()
}

/// Writes the table and the chart again from the `results.json` of a run.
pub fn rewrite(results: &Path, out: Option<&Path>) -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    struct Saved {
        quick: bool,
        runs: Vec<Run>,
    }
    let saved: Saved = serde_json::from_slice(
        &std::fs::read(results).with_context(|| format!("reading {}", results.display()))?,
    )?;
    let out = out
        .or_else(|| results.parent())
        .unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(out)?;
    tables_and_chart(out, &summarize(&saved.runs), saved.quick)
}

fn find(summary: &[Summary], system: System, tracing: bool) -> Option<&Summary> {
    summary
        .iter()
        .find(|s| s.system == system && s.tracing == tracing)
}

/// The Markdown tables.
pub fn markdown(all: &[Summary], quick: bool) -> String {
    let main = fewest_workers(all);
    let summary = main.as_slice();
    let mut md = String::new();
    if quick {
        md.push_str(
            "**Quick run** (one round of 300 jobs): it checks the benchmark runs; \
             the figures mean nothing.\n\n",
        );
    }
    let rounds = summary.iter().map(|s| s.rounds).max().unwrap_or(0);
    let _ = writeln!(
        md,
        "Medians of {rounds} interleaved round(s); in brackets, the range.\n"
    );
    md.push_str(
        "| system | drain jobs/s, tracing off → on | tracing cost on drain | enqueue jobs/s, off → on | \
         worker CPU ms/job | Redis CPU ms/job | stub CPU ms/job | Redis commands/job | \
         worker RSS MiB | spans/job | traces/job |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for system in System::ALL {
        let (off, on) = (find(summary, system, false), find(summary, system, true));
        // The per-job columns are tracing on's when it ran.
        let Some(main) = on.or(off) else {
            continue;
        };
        let cost = match (off, on) {
            (Some(off), Some(on)) => format!(
                "{:.0}%",
                (1.0 - on.drain_per_sec.median / off.drain_per_sec.median) * 100.0
            ),
            _ => "–".into(),
        };
        let both = |f: fn(&Summary) -> Spread| {
            let show = |x: Option<&Summary>| x.map_or_else(|| "–".into(), |x| rate(f(x)));
            format!("{} → {}", show(off), show(on))
        };
        let _ = writeln!(
            md,
            "| {} | {} | {cost} | {} | {:.3} | {:.3} | {:.3} | {:.1} | {:.0} | {:.2} | {:.2} |",
            main.label,
            both(|x| x.drain_per_sec),
            both(|x| x.enqueue_per_sec),
            main.worker_cpu_ms.median,
            main.redis_cpu_ms.median,
            main.stub_cpu_ms.median,
            main.redis_calls.median,
            main.worker_rss_mib.median,
            main.spans_per_job.median,
            main.traces_per_job.median,
        );
    }
    md.push_str("\nThe per-job columns are with tracing on (off when only off ran).\n\n");
    md.push_str(&targets(summary));
    md.push_str(&scaling(all));
    md
}

/// Drain by the number of worker processes, when several ran: jobs/s
/// (worker CPU ms/job), tracing on where it ran.
fn scaling(summary: &[Summary]) -> String {
    let mut counts: Vec<usize> = summary.iter().map(|s| s.workers).collect();
    counts.sort_unstable();
    counts.dedup();
    if counts.len() < 2 {
        return String::new();
    }
    let mut md = String::from(
        "\nDrain by worker processes, jobs/s (worker CPU ms/job, all processes):\n\n| system | tracing |",
    );
    for n in &counts {
        let _ = write!(md, " {n} worker{} |", if *n == 1 { "" } else { "s" });
    }
    md.push_str("\n|---|---|");
    md.push_str(&"---:|".repeat(counts.len()));
    md.push('\n');
    for system in System::ALL {
        for tracing in [false, true] {
            let rows: Vec<Option<&Summary>> = counts
                .iter()
                .map(|n| {
                    summary
                        .iter()
                        .find(|s| s.system == system && s.tracing == tracing && s.workers == *n)
                })
                .collect();
            if rows.iter().flatten().count() < 2 {
                continue;
            }
            let _ = write!(
                md,
                "| {} | {} |",
                system.name(),
                if tracing { "on" } else { "off" }
            );
            for row in rows {
                match row {
                    Some(s) => {
                        let _ = write!(
                            md,
                            " {:.0} ({:.3}) |",
                            s.drain_per_sec.median, s.worker_cpu_ms.median
                        );
                    }
                    None => md.push_str(" – |"),
                }
            }
            md.push('\n');
        }
    }
    md
}

fn rate(s: Spread) -> String {
    format!("{:.0} [{:.0}–{:.0}]", s.median, s.min, s.max)
}

/// The targets, each met or not (tracing on, drain).
fn targets(summary: &[Summary]) -> String {
    let drain = |s: System| find(summary, s, true).map(|x| x.drain_per_sec.median);
    let ours_on = find(summary, System::Ours, true);
    let ours_off = find(summary, System::Ours, false);
    let mut rows = Vec::new();
    let mut ratio = |peer: System, want: f64| {
        if let (Some(o), Some(p)) = (drain(System::Ours), drain(peer)) {
            rows.push((
                format!("drain ≥ {want}× {} (tracing on)", peer.key()),
                format!("{:.2}×", o / p),
                o / p >= want,
            ));
        }
    };
    ratio(System::Bullmq, 2.5);
    ratio(System::Celery, 20.0);
    if let (Some(on), Some(off)) = (ours_on, ours_off) {
        let cost = 1.0 - on.drain_per_sec.median / off.drain_per_sec.median;
        rows.push((
            "tracing cost on drain ≤ 5%".into(),
            format!("{:.0}%", cost * 100.0),
            cost <= 0.05,
        ));
    }
    if let Some(on) = ours_on {
        rows.push((
            "worker CPU ≤ 0.045 ms/job".into(),
            format!("{:.3}", on.worker_cpu_ms.median),
            on.worker_cpu_ms.median <= 0.045,
        ));
        rows.push((
            "Redis CPU ≤ 0.025 ms/job".into(),
            format!("{:.3}", on.redis_cpu_ms.median),
            on.redis_cpu_ms.median <= 0.025,
        ));
        rows.push((
            "worker RSS < 30 MiB".into(),
            format!("{:.0}", on.worker_rss_mib.median),
            on.worker_rss_mib.median < 30.0,
        ));
    }
    let mut md = String::from("| target (this project) | measured | met |\n|---|---:|:---:|\n");
    for (what, got, met) in rows {
        let _ = writeln!(
            md,
            "| {what} | {got} | {} |",
            if met { "yes" } else { "no" }
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_marks_each_target_met_or_not() {
        let run = |system, tracing, drain, cpu| Run {
            system,
            tracing,
            round: 1,
            concurrency: 8,
            workers: 1,
            jobs: 100,
            enqueue_per_sec: 1000.0,
            drain_per_sec: drain,
            worker_cpu_ms: cpu,
            redis_cpu_ms: 0.02,
            stub_cpu_ms: 0.05,
            redis_calls: 10.0,
            worker_rss_mib: 20.0,
            spans_per_job: 6.0,
            traces_per_job: 1.0,
        };
        let runs = [
            run(System::Ours, false, 21_000.0, 0.04),
            run(System::Ours, true, 20_000.0, 0.044),
            run(System::Bullmq, false, 9_000.0, 0.1),
            run(System::Bullmq, true, 8_000.0, 0.15),
        ];
        let md = markdown(&summarize(&runs), false);
        assert!(
            md.contains("| drain ≥ 2.5× bullmq (tracing on) | 2.50× | yes |"),
            "{md}"
        );
        assert!(
            md.contains("| tracing cost on drain ≤ 5% | 5% | yes |"),
            "{md}"
        );
        assert!(
            md.contains("| worker CPU ≤ 0.045 ms/job | 0.044 | yes |"),
            "{md}"
        );
        assert!(md.contains("21000 [21000–21000] → 20000"), "{md}");
        assert!(!md.contains("celery"), "no row for a system not run: {md}");
        assert!(!md.contains("by worker processes"), "one count: {md}");
    }

    #[test]
    fn runs_with_more_workers_get_a_table_of_their_own() {
        let run = |workers, drain| Run {
            system: System::Ours,
            tracing: true,
            round: 1,
            concurrency: 8,
            workers,
            jobs: 100,
            enqueue_per_sec: 1000.0,
            drain_per_sec: drain,
            worker_cpu_ms: 0.05,
            redis_cpu_ms: 0.02,
            stub_cpu_ms: 0.05,
            redis_calls: 10.0,
            worker_rss_mib: 20.0,
            spans_per_job: 5.0,
            traces_per_job: 1.0,
        };
        let md = markdown(&summarize(&[run(1, 10_000.0), run(2, 12_000.0)]), false);
        // The main table has the one-process run only.
        assert!(md.contains("→ 10000 [10000–10000] |"), "{md}");
        assert!(!md.contains("12000 ["), "{md}");
        assert!(
            md.contains("| traced-jobs | on | 10000 (0.050) | 12000 (0.050) |"),
            "{md}"
        );
    }
}
