//! `results.png`: drain throughput per system, tracing off and on, and the
//! CPU each job costs the worker and Redis with tracing on.

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::results::Summary;
use crate::systems::System;

/// The font the labels are drawn with (Debian's `fonts-dejavu-core`).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

const OFF: RGBColor = RGBColor(0x9e, 0xb8, 0xd9);
const ON: RGBColor = RGBColor(0x1f, 0x5f, 0xa8);
const REDIS: RGBColor = RGBColor(0xd9, 0x53, 0x4f);

/// Draws the chart into `path`.
pub fn draw(path: &Path, summary: &[Summary]) -> anyhow::Result<()> {
    let font = std::fs::read(FONT).with_context(|| {
        format!(
            "reading {FONT} for the chart's labels: on Debian, apt-get install -y fonts-dejavu-core"
        )
    })?;
    // Plotters keeps the font for the life of the process.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow!("{FONT} is not a font plotters can read"))?;

    let systems: Vec<System> = System::ALL
        .into_iter()
        .filter(|s| summary.iter().any(|x| x.system == *s))
        .collect();
    let get = |s: System, tracing: bool| {
        summary
            .iter()
            .find(|x| x.system == s && x.tracing == tracing)
    };
    let root = BitMapBackend::new(path, (1200, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let (left, right) = root.split_horizontally(640);

    // Drain jobs/s, two bars per system.
    let top = systems
        .iter()
        .flat_map(|s| [get(*s, false), get(*s, true)])
        .flatten()
        .map(|x| x.drain_per_sec.max)
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = panel(
        &left,
        "Drain, jobs/s (median; higher is better)",
        &systems,
        top,
        0,
    )?;
    for (tracing, color, shift) in [(false, OFF, 0.12), (true, ON, 0.5)] {
        let bars = systems.iter().enumerate().filter_map(|(i, s)| {
            let v = get(*s, tracing)?.drain_per_sec.median;
            let x = i as f64 + shift;
            Some(Rectangle::new([(x, 0.0), (x + 0.38, v)], color.filled()))
        });
        chart
            .draw_series(bars)
            .map_err(draw_error)?
            .label(if tracing { "tracing on" } else { "tracing off" })
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled()));
    }
    legend(&mut chart)?;

    // CPU per job with tracing on: worker and Redis, stacked.
    let top = systems
        .iter()
        .filter_map(|s| get(*s, true))
        .map(|x| x.worker_cpu_ms.median + x.redis_cpu_ms.median)
        .fold(0.01, f64::max)
        * 1.15;
    let mut chart = panel(
        &right,
        "CPU per job, ms, tracing on (lower is better)",
        &systems,
        top,
        2,
    )?;
    let on: Vec<(usize, &Summary)> = systems
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((i, get(*s, true)?)))
        .collect();
    chart
        .draw_series(on.iter().map(|(i, x)| {
            let x0 = *i as f64 + 0.2;
            Rectangle::new([(x0, 0.0), (x0 + 0.6, x.worker_cpu_ms.median)], ON.filled())
        }))
        .map_err(draw_error)?
        .label("worker")
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], ON.filled()));
    chart
        .draw_series(on.iter().map(|(i, x)| {
            let x0 = *i as f64 + 0.2;
            let w = x.worker_cpu_ms.median;
            Rectangle::new(
                [(x0, w), (x0 + 0.6, w + x.redis_cpu_ms.median)],
                REDIS.filled(),
            )
        }))
        .map_err(draw_error)?
        .label("redis-server")
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], REDIS.filled()));
    legend(&mut chart)?;
    root.present().map_err(draw_error)?;
    Ok(())
}

type Panel<'a> = ChartContext<
    'a,
    BitMapBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// One bar chart of the figure: a bar group per system, from 0 to `top`,
/// its values shown with `decimals`.
fn panel<'a>(
    area: &DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
    caption: &str,
    systems: &[System],
    top: f64,
    decimals: usize,
) -> anyhow::Result<Panel<'a>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..systems.len() as f64, 0.0..top)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(systems.len() * 2 + 1)
        .x_label_formatter(&|x| label(systems, *x))
        .y_label_formatter(&|y| format!("{y:.decimals$}"))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(draw_error)?;
    Ok(chart)
}

/// The panel's legend, top right.
fn legend(chart: &mut Panel<'_>) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(draw_error)
}

/// The system whose bars are centred on `x` (key points fall on halves).
fn label(systems: &[System], x: f64) -> String {
    if (x.fract() - 0.5).abs() > 0.01 {
        return String::new();
    }
    systems
        .get(x.floor() as usize)
        .map(|s| s.key().to_owned())
        .unwrap_or_default()
}

fn draw_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e:?}")
}
