//! Plots of a run (throughput and p99 latency over time) and of a capacity search
//! (loss and p99 against participants), as SVG or PNG. Labels are laid out with DejaVu
//! Sans (Debian's fonts-dejavu-core), loaded at run time.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{Capacity, Report};

/// Where PNG labels get their glyphs from.
const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn register_font() -> Result<()> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = FONT_PATHS
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .ok_or_else(|| {
                "plots need the DejaVu Sans font to lay out labels: apt-get install fonts-dejavu-core"
                    .to_owned()
            })?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| "the DejaVu font did not load".to_owned())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

fn draw(
    path: &Path,
    f: impl Fn(&DrawingArea<SVGBackend, Shift>) -> Result<()>,
    g: impl Fn(&DrawingArea<BitMapBackend, Shift>) -> Result<()>,
) -> Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => {
            register_font()?;
            let root = SVGBackend::new(path, (900, 700)).into_drawing_area();
            f(&root)?;
            root.present().map_err(|e| anyhow!("{e}"))
        }
        Some("png") => {
            register_font()?;
            let root = BitMapBackend::new(path, (900, 700)).into_drawing_area();
            g(&root)?;
            root.present().map_err(|e| anyhow!("{e}"))
        }
        _ => bail!("plot file must end in .svg or .png"),
    }
}

fn series_charts<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &Report) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (top, bottom) = root.split_vertically(350);
    let n = r.series.len().max(1) as f64;
    let max_pps = r
        .series
        .iter()
        .map(|s| s.received_pps)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut c = ChartBuilder::on(&top)
        .caption("received packets per second", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n, 0f64..max_pps * 1.1)
        .map_err(|e| anyhow!("{e}"))?;
    c.configure_mesh()
        .x_desc("seconds")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    c.draw_series(LineSeries::new(
        r.series.iter().map(|s| (s.t as f64, s.received_pps as f64)),
        &BLUE,
    ))
    .map_err(|e| anyhow!("{e}"))?;
    let max_p99 = r.series.iter().map(|s| s.p99_ms).fold(0.1, f64::max);
    let mut c = ChartBuilder::on(&bottom)
        .caption(
            format!(
                "p99 latency (ms); loss over the run {:.4}%",
                r.loss_ratio * 100.0
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n, 0f64..max_p99 * 1.1)
        .map_err(|e| anyhow!("{e}"))?;
    c.configure_mesh()
        .x_desc("seconds")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    c.draw_series(LineSeries::new(
        r.series.iter().map(|s| (s.t as f64, s.p99_ms)),
        &RED,
    ))
    .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn capacity_charts<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, cap: &Capacity) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (top, bottom) = root.split_vertically(350);
    let mut trials = cap.trials.clone();
    trials.sort_by_key(|t| t.participants);
    let max_p = trials
        .iter()
        .map(|t| t.participants)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let max_loss = trials
        .iter()
        .map(|t| t.loss_ratio * 100.0)
        .fold(cap.loss_bound * 200.0, f64::max);
    let mut c = ChartBuilder::on(&top)
        .caption(
            format!("loss (%) vs participants; capacity {}", cap.participants),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_p * 1.05, 0f64..max_loss * 1.1)
        .map_err(|e| anyhow!("{e}"))?;
    c.configure_mesh()
        .x_desc("participants")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    c.draw_series(LineSeries::new(
        trials
            .iter()
            .map(|t| (t.participants as f64, t.loss_ratio * 100.0)),
        &BLUE,
    ))
    .map_err(|e| anyhow!("{e}"))?;
    c.draw_series(LineSeries::new(
        [
            (0.0, cap.loss_bound * 100.0),
            (max_p * 1.05, cap.loss_bound * 100.0),
        ],
        &BLACK,
    ))
    .map_err(|e| anyhow!("{e}"))?;
    let max_p99 = trials
        .iter()
        .map(|t| t.p99_ms)
        .fold(cap.p99_bound_ms * 2.0, f64::max);
    let mut c = ChartBuilder::on(&bottom)
        .caption("p99 latency (ms) vs participants", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_p * 1.05, 0f64..max_p99 * 1.1)
        .map_err(|e| anyhow!("{e}"))?;
    c.configure_mesh()
        .x_desc("participants")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    c.draw_series(LineSeries::new(
        trials.iter().map(|t| (t.participants as f64, t.p99_ms)),
        &RED,
    ))
    .map_err(|e| anyhow!("{e}"))?;
    c.draw_series(LineSeries::new(
        [(0.0, cap.p99_bound_ms), (max_p * 1.05, cap.p99_bound_ms)],
        &BLACK,
    ))
    .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Writes the plot of a report: the capacity search when there was one, else the
/// run's time series.
pub fn write(path: &Path, r: &Report) -> Result<()> {
    match &r.capacity {
        Some(cap) => draw(
            path,
            |a| capacity_charts(a, cap),
            |a| capacity_charts(a, cap),
        ),
        None => draw(path, |a| series_charts(a, r), |a| series_charts(a, r)),
    }
}
