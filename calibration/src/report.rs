//! A calibration report: per device two PNG plots and a JSON summary for the run.
//!
//! - `<device>-impulse.png`: the impulse response's level (dB relative to its
//!   strongest peak) from 5 ms before to 60 ms after the direct-path onset, with the
//!   onset (red) and the detection threshold (dashed) marked: shows the direct sound,
//!   the early reflections and the noise floor.
//! - `<device>-peak.png`: the direct-path peak itself, ±1 ms around the onset, sample
//!   by sample on a linear scale, with the interpolated onset marked: shows the
//!   sub-sample fit (for an MLS this is the circular cross-correlation peak).
//! - `summary.json`: [`ReportSummary`].
//!
//! Plots are drawn with plotters' bitmap backend; text uses the DejaVu Sans Mono font
//! embedded in this crate (`assets/`, Bitstream Vera licence) through plotters'
//! `ab_glyph` feature, so no fontconfig or freetype is needed at build or run time.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::FontStyle;
use serde::{Deserialize, Serialize};

use crate::latency::ImpulseAnalysis;
use crate::profile_update::{now_rfc3339, ProfileChange};
use crate::signals::SAMPLE_RATE;
use crate::CalibrationError;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

fn register_font() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            let _ = plotters::style::register_font("sans-serif", style, FONT);
        }
    });
}

/// One device's outcome in a run.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportEntry {
    /// Device name.
    pub device: String,
    /// The analysis, when the measurement succeeded.
    pub analysis: Option<ImpulseAnalysis>,
    /// The profile change, when the profile was updated.
    pub change: Option<ProfileChange>,
    /// Why the device failed, when it did.
    pub error: Option<String>,
    /// The true latency, ms, when known (simulated rooms).
    pub true_latency_ms: Option<f64>,
}

/// Summary of one device, as written to `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceSummary {
    /// Device name.
    pub device: String,
    /// Measured output latency, ms.
    pub latency_ms: Option<f64>,
    /// 1 σ, ms.
    pub uncertainty_ms: Option<f64>,
    /// 0..=1.
    pub confidence: Option<f64>,
    /// `sweep` or `mls`.
    pub signal: Option<String>,
    /// Profile's `base_latency_ms` before, ms.
    pub previous_base_latency_ms: Option<f64>,
    /// Change of `base_latency_ms`, ms.
    pub change_ms: Option<f64>,
    /// True latency, ms (simulated rooms only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub true_latency_ms: Option<f64>,
    /// Measured − true, ms (simulated rooms only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error_ms: Option<f64>,
    /// Impulse-response plot, file name in the report folder.
    pub impulse_plot: Option<String>,
    /// Peak plot, file name in the report folder.
    pub peak_plot: Option<String>,
    /// Why the device failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub failure: Option<String>,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportSummary {
    /// When the report was written, RFC 3339 UTC.
    pub date: String,
    /// Per device.
    pub devices: Vec<DeviceSummary>,
}

fn report_err(path: &Path, e: impl std::fmt::Display) -> CalibrationError {
    CalibrationError::Report {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// A file-name-safe version of a device name.
fn file_stem(device: &str) -> String {
    let s: String = device
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "device".into()
    } else {
        s
    }
}

/// Writes the plots and `summary.json` into `dir` (created if missing) and returns the
/// summary. A device whose plot cannot be drawn still gets its summary entry.
pub fn write_report(
    dir: &Path,
    entries: &[ReportEntry],
) -> Result<ReportSummary, CalibrationError> {
    std::fs::create_dir_all(dir).map_err(|e| report_err(dir, e))?;
    let mut devices = Vec::new();
    for e in entries {
        let stem = file_stem(&e.device);
        let mut s = DeviceSummary {
            device: e.device.clone(),
            latency_ms: None,
            uncertainty_ms: None,
            confidence: None,
            signal: None,
            previous_base_latency_ms: e.change.as_ref().map(|c| c.previous_base_latency_ms),
            change_ms: e.change.as_ref().map(|c| c.change_ms),
            true_latency_ms: e.true_latency_ms,
            error_ms: None,
            impulse_plot: None,
            peak_plot: None,
            failure: e.error.clone(),
        };
        if let Some(a) = &e.analysis {
            let m = &a.measurement;
            s.latency_ms = Some(m.latency_ms);
            s.uncertainty_ms = Some(m.uncertainty_ms);
            s.confidence = Some(m.confidence);
            s.signal = Some(m.signal.as_str().to_string());
            s.error_ms = e.true_latency_ms.map(|t| m.latency_ms - t);
            let imp = format!("{stem}-impulse.png");
            match plot_impulse(&dir.join(&imp), &e.device, a) {
                Ok(()) => s.impulse_plot = Some(imp),
                Err(err) => s.failure = Some(err.to_string()),
            }
            let peak = format!("{stem}-peak.png");
            match plot_peak(&dir.join(&peak), &e.device, a) {
                Ok(()) => s.peak_plot = Some(peak),
                Err(err) => s.failure = Some(err.to_string()),
            }
        }
        devices.push(s);
    }
    let summary = ReportSummary {
        date: now_rfc3339(),
        devices,
    };
    let path = dir.join("summary.json");
    let mut text = serde_json::to_vec_pretty(&summary).map_err(|e| report_err(&path, e))?;
    text.push(b'\n');
    syncstream_shared::fsutil::write_atomic(&path, &text).map_err(|e| report_err(&path, e))?;
    Ok(summary)
}

/// Time in ms after the signal's start of impulse-response index `i`.
fn time_ms(a: &ImpulseAnalysis, i: f64) -> f64 {
    (i + a.ir_origin_samples) * 1000.0 / SAMPLE_RATE as f64
}

/// Plots the impulse response's level around the onset.
pub fn plot_impulse(
    path: &Path,
    device: &str,
    a: &ImpulseAnalysis,
) -> Result<(), CalibrationError> {
    register_font();
    let fs = SAMPLE_RATE as f64;
    let o = &a.onset;
    let from = o.index.saturating_sub((0.005 * fs) as usize);
    let to = (o.index + (0.060 * fs) as usize).min(a.ir.len());
    if from >= to {
        return Err(report_err(path, "empty impulse response"));
    }
    let peak = o.max_amplitude.max(1e-30);
    let floor = -80.0;
    // The level's maximum per bucket of samples (≈ one per pixel column): a line
    // through every sample would let the plotting library merge points that share a
    // pixel and lose narrow peaks.
    let bucket = (to - from).div_ceil(900).max(1);
    let pts: Vec<(f64, f64)> = (from..to)
        .step_by(bucket)
        .map(|b| {
            let e = (b + bucket).min(to);
            let i = (b..e).fold(b, |m, i| if a.ir[i].abs() > a.ir[m].abs() { i } else { m });
            let v = (a.ir[i].abs() as f64 / peak).max(1e-12);
            (time_ms(a, i as f64), (20.0 * v.log10()).max(floor))
        })
        .collect();
    let onset_t = time_ms(a, o.position);
    let thr_db = 20.0 * (o.threshold / peak).max(1e-12).log10();
    let root = BitMapBackend::new(path, (1000, 500)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let m = &a.measurement;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{device}: impulse response ({}) · latency {:.3} ± {:.3} ms · confidence {:.2}",
                    m.signal.as_str(),
                    m.latency_ms,
                    m.uncertainty_ms,
                    m.confidence
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(time_ms(a, from as f64)..time_ms(a, to as f64), floor..3.0)?;
        chart
            .configure_mesh()
            .x_desc("time after the signal's start (ms)")
            .y_desc("level (dB re strongest peak)")
            .label_style(("sans-serif", 14))
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                vec![(onset_t, floor), (onset_t, 3.0)],
                RED.mix(0.45).stroke_width(3),
            ))?
            .label(format!(
                "direct-path onset {onset_t:.3} ms (− {:.3} ms acoustic)",
                m.acoustic_delay_ms
            ))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        let onset_db = 20.0 * (o.amplitude.abs() / peak).max(1e-12).log10();
        chart.draw_series(std::iter::once(Circle::new(
            (onset_t, onset_db),
            5,
            RED.stroke_width(2),
        )))?;
        chart
            .draw_series(LineSeries::new(pts, BLUE.stroke_width(1)))?
            .label("|h(t)|")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .draw_series(DashedLineSeries::new(
                vec![
                    (time_ms(a, from as f64), thr_db),
                    (time_ms(a, to as f64), thr_db),
                ],
                6,
                4,
                BLACK.stroke_width(1),
            ))?
            .label("detection threshold")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| report_err(path, e))
}

/// Plots the direct-path peak, ±1 ms around the onset, on a linear scale.
pub fn plot_peak(path: &Path, device: &str, a: &ImpulseAnalysis) -> Result<(), CalibrationError> {
    register_font();
    let fs = SAMPLE_RATE as f64;
    let o = &a.onset;
    let half = (0.001 * fs) as usize;
    let from = o.index.saturating_sub(half);
    let to = (o.index + half + 1).min(a.ir.len());
    if from >= to {
        return Err(report_err(path, "empty impulse response"));
    }
    let pts: Vec<(f64, f64)> = (from..to)
        .map(|i| (time_ms(a, i as f64), a.ir[i] as f64))
        .collect();
    let ymax = pts.iter().fold(1e-12f64, |m, p| m.max(p.1.abs())) * 1.15;
    let onset_t = time_ms(a, o.position);
    let root = BitMapBackend::new(path, (1000, 500)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{device}: direct-path peak · onset {onset_t:.4} ms · ±{:.4} ms (1σ)",
                    a.measurement.uncertainty_ms
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                time_ms(a, from as f64)..time_ms(a, (to - 1) as f64),
                -ymax..ymax,
            )?;
        chart
            .configure_mesh()
            .x_desc("time after the signal's start (ms)")
            .y_desc("impulse response (linear)")
            .label_style(("sans-serif", 14))
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                vec![(onset_t, -ymax), (onset_t, ymax)],
                RED.mix(0.45).stroke_width(3),
            ))?
            .label("interpolated onset")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .draw_series(LineSeries::new(pts.clone(), BLUE.stroke_width(1)))?
            .label("h[n] (48 kHz samples)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| report_err(path, e))
}

/// The path of a device's plots in a report folder: (impulse, peak).
pub fn plot_paths(dir: &Path, device: &str) -> (PathBuf, PathBuf) {
    let stem = file_stem(device);
    (
        dir.join(format!("{stem}-impulse.png")),
        dir.join(format!("{stem}-peak.png")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::analyse;
    use crate::onset::OnsetParams;
    use crate::signals::TestSignal;

    #[test]
    fn writes_plots_and_summary() {
        let s = TestSignal::default_sweep();
        let onset = 70.875 * 48.0;
        let mut y = vec![0.0f32; s.recording_samples(200.0)];
        for (i, v) in s.samples.iter().enumerate() {
            y[i + onset as usize] += 0.3 * v;
            y[i + onset as usize + 200] -= 0.5 * v; // a louder reflection
        }
        let a = analyse(&s, &y, 0.0, 0.3, &OnsetParams::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("report");
        let entries = vec![
            ReportEntry {
                device: "tv/1".into(),
                analysis: Some(a),
                change: None,
                error: None,
                true_latency_ms: Some(70.0),
            },
            ReportEntry {
                device: "ghost".into(),
                analysis: None,
                change: None,
                error: Some("no test signal".into()),
                true_latency_ms: None,
            },
        ];
        let sum = write_report(&out, &entries).unwrap();
        assert_eq!(sum.devices.len(), 2);
        let (imp, peak) = plot_paths(&out, "tv/1");
        for p in [&imp, &peak] {
            let b = std::fs::read(p).unwrap();
            assert!(
                b.len() > 5000 && b.starts_with(b"\x89PNG"),
                "{}",
                p.display()
            );
        }
        let text = std::fs::read_to_string(out.join("summary.json")).unwrap();
        let back: ReportSummary = serde_json::from_str(&text).unwrap();
        assert!(back.devices[0].error_ms.unwrap().abs() < 0.01);
        assert_eq!(back.devices[1].failure.as_deref(), Some("no test signal"));
        if let Ok(keep) = std::env::var("SYNCSTREAM_KEEP_REPORT") {
            let _ = std::fs::create_dir_all(&keep);
            let _ = std::fs::copy(&imp, Path::new(&keep).join("impulse.png"));
            let _ = std::fs::copy(&peak, Path::new(&keep).join("peak.png"));
        }
    }
}
