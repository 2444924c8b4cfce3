//! Sync-accuracy reports from the virtual room's ground truth, shared by the demo and
//! the simulator.
//!
//! A device's *residual* at a block is when it really emitted a source sample minus
//! when it should have (`PTS + playout delay`), in ms; the *pairwise error* of two
//! devices is the difference of their residuals at the same block. Both are averaged
//! over [`BUCKET_MS`] buckets. The system has *converged* at the start of the first
//! bucket after which every pair stays within [`CONVERGED_MS`] for the rest of the run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use syncstream_room::TruthSample;
use syncstream_shared::stats::ErrorSummary;

/// Width of a time bucket, ms.
pub const BUCKET_MS: f64 = 100.0;
/// Pairwise error that counts as in sync, ms.
pub const CONVERGED_MS: f64 = 1.0;

/// Accumulates ground truth over a run.
#[derive(Debug, Default)]
pub struct TruthLog {
    /// bucket index → device → (sum of residual ms, count)
    buckets: BTreeMap<i64, BTreeMap<usize, (f64, u32)>>,
}

impl TruthLog {
    /// Adds samples; `start_us` is the run's start (room time), `playout_delay_us` P.
    pub fn add(&mut self, samples: &[TruthSample], start_us: f64, playout_delay_us: f64) {
        for s in samples {
            let residual_ms = (s.emit_room_us - (s.source_pts_us + playout_delay_us)) / 1000.0;
            let bucket = ((s.block_room_us - start_us) / (BUCKET_MS * 1000.0)).floor() as i64;
            let e = self
                .buckets
                .entry(bucket)
                .or_default()
                .entry(s.device)
                .or_insert((0.0, 0));
            e.0 += residual_ms;
            e.1 += 1;
        }
    }

    /// Latest mean residual per device, ms.
    pub fn latest_residuals(&self) -> BTreeMap<usize, f64> {
        let mut out = BTreeMap::new();
        for per in self.buckets.values().rev().take(3) {
            for (&d, &(sum, n)) in per {
                out.entry(d).or_insert(sum / n as f64);
            }
        }
        out
    }

    /// Per-bucket mean residual per device: (bucket start s, device → ms).
    fn series(&self, devices: usize) -> Vec<(f64, Vec<Option<f64>>)> {
        self.buckets
            .iter()
            .map(|(&b, per)| {
                let v = (0..devices)
                    .map(|d| per.get(&d).map(|&(s, n)| s / n as f64))
                    .collect();
                (b as f64 * BUCKET_MS / 1000.0, v)
            })
            .collect()
    }
}

/// Per-device result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceReport {
    /// Device name.
    pub name: String,
    /// Output type.
    pub output: String,
    /// Base latency in its profile at the start, ms.
    pub profile_latency_ms: f64,
    /// True output latency at the end, ms (hidden from the system).
    pub true_latency_ms: f64,
    /// Buffer offset at the end, ms.
    pub final_offset_ms: f64,
    /// |residual| after convergence (or over the last half if never converged), ms.
    pub residual_ms: Option<ErrorSummary>,
    /// Jitter-buffer underruns.
    pub underruns: u64,
    /// Playout jumps (crossfaded repositionings).
    pub jumps: u64,
    /// Buffer offsets received from the controller (corrections applied).
    pub offsets_applied: u64,
    /// |clock-sync offset error| (receiver's estimate of transmitter time − true
    /// transmitter time), sampled every 100 ms from 10 s on, µs (simulator only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_error_us: Option<ErrorSummary>,
}

/// Pairwise result for two devices.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairReport {
    /// First device.
    pub a: String,
    /// Second device.
    pub b: String,
    /// |residual a − residual b| after convergence, ms.
    pub error_ms: Option<ErrorSummary>,
}

/// The report of a demo or simulator run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Audio file played.
    pub audio: String,
    /// Length of the run, s.
    pub duration_s: f64,
    /// Playout delay at the end of the run, ms (it starts at the configured one and
    /// grows when a device's latency needs more).
    pub playout_delay_ms: f64,
    /// Whether all pairs converged within 1 ms and stayed there.
    pub converged: bool,
    /// Time from the start of the run to convergence, s.
    pub time_to_converge_s: Option<f64>,
    /// Over all pairs, |pairwise error| after convergence, ms.
    pub pairwise_ms: Option<ErrorSummary>,
    /// Per device.
    pub devices: Vec<DeviceReport>,
    /// Per pair.
    pub pairs: Vec<PairReport>,
    /// Largest pairwise error in each second of the run, ms (`null` before every device plays).
    pub pairwise_max_per_s: Vec<Option<f64>>,
    /// Pairwise error over the whole run from the first convergence on, events and
    /// all (every pair of devices playing, per 100 ms), ms (simulator, with events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairwise_evening_ms: Option<ErrorSummary>,
    /// Seconds after the first convergence in which some pair of playing devices was
    /// more than 1 ms apart (simulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_above_1ms: Option<f64>,
    /// What each scenario event did (simulator; see `crate::evening`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<crate::evening::EventReport>,
    /// Drift reports per device: made by the receiver, used, ignored and rejected as
    /// outliers by the controller (simulator).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift_reports: Vec<crate::evening::ReportCounts>,
}

/// What the report needs to know about each device besides the truth log.
#[derive(Debug, Clone)]
pub struct DeviceFacts {
    /// Name.
    pub name: String,
    /// Output type.
    pub output: String,
    /// Profile base latency, ms.
    pub profile_latency_ms: f64,
    /// True latency at the end, ms.
    pub true_latency_ms: f64,
    /// Final buffer offset, ms.
    pub final_offset_ms: f64,
    /// Underruns.
    pub underruns: u64,
    /// Jumps.
    pub jumps: u64,
    /// Offsets applied.
    pub offsets_applied: u64,
    /// Clock-sync offset errors sampled during the run, µs (empty when unknown).
    pub clock_errors_us: Vec<f64>,
}

/// Builds the report from the truth log.
pub fn build_report(
    log: &TruthLog,
    facts: &[DeviceFacts],
    audio: &str,
    duration_s: f64,
    playout_delay_ms: f64,
) -> Report {
    let n = facts.len();
    let series = log.series(n);
    // Buckets where every device has a residual.
    let full: Vec<(f64, Vec<f64>)> = series
        .into_iter()
        .filter_map(|(t, v)| {
            v.iter()
                .copied()
                .collect::<Option<Vec<f64>>>()
                .map(|v| (t, v))
        })
        .collect();
    let max_pair = |v: &[f64]| {
        let mut m = 0.0f64;
        for i in 0..v.len() {
            for j in i + 1..v.len() {
                m = m.max((v[i] - v[j]).abs());
            }
        }
        m
    };
    // Convergence: the first bucket after which every bucket is within CONVERGED_MS.
    let mut converge_idx = None;
    for i in (0..full.len()).rev() {
        if max_pair(&full[i].1) < CONVERGED_MS {
            converge_idx = Some(i);
        } else {
            break;
        }
    }
    // Require the converged stretch to be a real stretch (≥ 2 s), not the last bucket.
    let converge_idx = converge_idx.filter(|&i| full.len() - i >= (2000.0 / BUCKET_MS) as usize);
    let converged = converge_idx.is_some();
    let from = converge_idx.unwrap_or(full.len() / 2);
    let after = &full[from.min(full.len())..];
    let devices = facts
        .iter()
        .enumerate()
        .map(|(d, f)| DeviceReport {
            name: f.name.clone(),
            output: f.output.clone(),
            profile_latency_ms: f.profile_latency_ms,
            true_latency_ms: f.true_latency_ms,
            final_offset_ms: f.final_offset_ms,
            residual_ms: ErrorSummary::of_abs(&after.iter().map(|(_, v)| v[d]).collect::<Vec<_>>()),
            underruns: f.underruns,
            jumps: f.jumps,
            offsets_applied: f.offsets_applied,
            clock_error_us: ErrorSummary::of_abs(&f.clock_errors_us),
        })
        .collect();
    let mut pairs = Vec::new();
    let mut all = Vec::new();
    for i in 0..n {
        for j in i + 1..n {
            let e: Vec<f64> = after.iter().map(|(_, v)| v[i] - v[j]).collect();
            all.extend_from_slice(&e);
            pairs.push(PairReport {
                a: facts[i].name.clone(),
                b: facts[j].name.clone(),
                error_ms: ErrorSummary::of_abs(&e),
            });
        }
    }
    let seconds = duration_s.ceil().max(0.0) as usize;
    let mut pairwise_max_per_s: Vec<Option<f64>> = vec![None; seconds];
    for (t, v) in &full {
        if let Some(slot) = pairwise_max_per_s.get_mut(*t as usize) {
            let m = max_pair(v);
            *slot = Some(slot.map_or(m, |x: f64| x.max(m)));
        }
    }
    Report {
        pairwise_max_per_s,
        seconds_above_1ms: None,
        pairwise_evening_ms: None,
        events: Vec::new(),
        drift_reports: Vec::new(),
        audio: audio.to_string(),
        duration_s,
        playout_delay_ms,
        converged,
        time_to_converge_s: converge_idx.map(|i| full[i].0),
        pairwise_ms: ErrorSummary::of_abs(&all),
        devices,
        pairs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(device: usize, t_us: f64, residual_ms: f64) -> TruthSample {
        TruthSample {
            device,
            block_room_us: t_us,
            emit_room_us: t_us + residual_ms * 1000.0,
            source_pts_us: t_us,
        }
    }

    fn facts(n: usize) -> Vec<DeviceFacts> {
        (0..n)
            .map(|i| DeviceFacts {
                name: format!("d{i}"),
                output: "analog".into(),
                profile_latency_ms: 0.0,
                true_latency_ms: 0.0,
                final_offset_ms: 0.0,
                underruns: 0,
                jumps: 0,
                offsets_applied: 0,
                clock_errors_us: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn finds_convergence_and_pairwise_error() {
        let mut log = TruthLog::default();
        let mut v = Vec::new();
        for k in 0..1000 {
            let t = k as f64 * 10_000.0; // 10 s
            let off = if t < 3_000_000.0 { 30.0 } else { 0.2 };
            v.push(sample(0, t, 0.0));
            v.push(sample(1, t, off));
        }
        log.add(&v, 0.0, 0.0);
        let r = build_report(&log, &facts(2), "x", 10.0, 0.0);
        assert!(r.converged);
        assert!((r.time_to_converge_s.unwrap() - 3.0).abs() < 1e-9);
        let p = r.pairwise_ms.unwrap();
        assert!((p.p95 - 0.2).abs() < 1e-9 && (p.max - 0.2).abs() < 1e-9);
    }

    #[test]
    fn never_converging_is_reported() {
        let mut log = TruthLog::default();
        let v: Vec<_> = (0..500)
            .flat_map(|k| {
                [
                    sample(0, k as f64 * 1e4, 0.0),
                    sample(1, k as f64 * 1e4, 5.0),
                ]
            })
            .collect();
        log.add(&v, 0.0, 0.0);
        let r = build_report(&log, &facts(2), "x", 5.0, 0.0);
        assert!(!r.converged);
        assert_eq!(r.time_to_converge_s, None);
        assert!((r.pairwise_ms.unwrap().p50 - 5.0).abs() < 1e-9);
    }
}
