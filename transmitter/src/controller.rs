//! The sync controller: turns drift reports into buffer offsets.
//!
//! Each report says how late a device sounded (`drift_ms`) while a known offset was
//! applied (`applied_offset_ms`), so `applied + drift` is a measurement of the offset
//! that device needs (its output latency, plus any error in clock sync). Working on
//! that absolute *target*, not on increments, makes the loop immune to reports that
//! arrive late or twice.
//!
//! - Reports below `min_confidence` or without an estimate are ignored.
//! - Acquiring: the first offset is set when two consecutive targets agree within
//!   `agree_ms`, or at once on a report of at least `lock_confidence` (the estimator's
//!   confidence is calibrated: at 0.99 it has not been wrong in its evaluation), so a
//!   doubtful estimate cannot move a speaker.
//! - Tracking: a target further than `outlier_ms` from the median of the recent
//!   targets is an outlier and ignored, unless `relock_count` outliers in a row agree
//!   with each other (the device's latency really changed: a Bluetooth reconnect, a TV
//!   mode switch), which re-locks on them. Otherwise the offset moves a fraction
//!   `gain` of the way to the target, and changes below `deadband_ms` are not sent.
//!   Together with `velocity_gain` this is an α-β tracker (a steady-state Kalman filter
//!   over offset and its drift rate): a device whose latency drifts steadily (Bluetooth,
//!   Cast buffers adapting) is followed without lag, as an offset plus a rate that the
//!   receiver applies continuously.
//! - Every offset is clamped to what the device's buffer can do.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use syncstream_protocol::messages::{BufferOffset, DriftReport};
use syncstream_shared::stats::median;

/// Tuning of the controller. The defaults are documented in the README.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Reports below this confidence are ignored.
    pub min_confidence: f64,
    /// Two targets agreeing within this many ms lock a device, ms.
    pub agree_ms: f64,
    /// A single report at least this confident locks a device at once.
    pub lock_confidence: f64,
    /// Targets further than this from the recent median are outliers, ms.
    pub outlier_ms: f64,
    /// Outliers in a row that, agreeing with each other, re-lock the device.
    pub relock_count: usize,
    /// Fraction of the error corrected per report while tracking, 0..=1.
    pub gain: f64,
    /// Offset changes smaller than this are not published, ms.
    pub deadband_ms: f64,
    /// Smallest offset a device may get, ms.
    pub min_offset_ms: f64,
    /// Largest offset a device may get, ms (a bit below its playout delay).
    pub max_offset_ms: f64,
    /// Targets kept per device for the median.
    pub history: usize,
    /// Velocity gain of the α-β tracker (how fast a latency drift is learnt), 0..=1.
    pub velocity_gain: f64,
    /// Largest latency drift followed, ms/s.
    pub max_rate_ms_per_s: f64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            min_confidence: 0.6,
            agree_ms: 1.0,
            lock_confidence: 0.99,
            outlier_ms: 3.0,
            relock_count: 3,
            gain: 0.7,
            deadband_ms: 0.005,
            min_offset_ms: -50.0,
            max_offset_ms: 1900.0,
            history: 7,
            velocity_gain: 0.3,
            max_rate_ms_per_s: 0.5,
        }
    }
}

/// Where a device is in the control loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockState {
    /// Waiting for two agreeing measurements.
    Acquiring,
    /// Locked; following small changes.
    Tracking,
}

/// Per-device controller state (also served on `/api/v1/status`).
#[derive(Debug, Clone, Serialize)]
pub struct DeviceSync {
    /// Loop state.
    pub state: LockState,
    /// Offset last published, ms (`None` before the first).
    pub offset_ms: Option<f64>,
    /// Last target measured, ms.
    pub last_target_ms: Option<f64>,
    /// Last drift reported, ms.
    pub last_drift_ms: Option<f64>,
    /// Last confidence reported.
    pub last_confidence: f64,
    /// Reports used / ignored / rejected as outliers.
    pub used: u64,
    /// Reports ignored for low confidence or no estimate.
    pub ignored: u64,
    /// Reports rejected as outliers.
    pub outliers: u64,
    /// Offsets published.
    pub seq: u64,
    /// Estimated drift of the device's latency, ms/s.
    pub rate_ms_per_s: f64,
    /// Transmitter time of the last used report, µs.
    #[serde(skip)]
    last_ts_us: Option<i64>,
    #[serde(skip)]
    published_rate_ms_per_s: f64,
    #[serde(skip)]
    targets: VecDeque<f64>,
    #[serde(skip)]
    pending: Vec<f64>,
    /// Offset history: (report ts_us, applied offset ms).
    #[serde(skip)]
    pub offset_history: VecDeque<(i64, f64)>,
}

impl DeviceSync {
    fn new() -> Self {
        Self {
            state: LockState::Acquiring,
            offset_ms: None,
            last_target_ms: None,
            last_drift_ms: None,
            last_confidence: 0.0,
            used: 0,
            ignored: 0,
            outliers: 0,
            seq: 0,
            rate_ms_per_s: 0.0,
            last_ts_us: None,
            published_rate_ms_per_s: 0.0,
            targets: VecDeque::new(),
            pending: Vec::new(),
            offset_history: VecDeque::new(),
        }
    }
}

/// What the controller decided for one report.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Publish this offset.
    Publish(BufferOffset),
    /// The report was used but no change is needed.
    Hold,
    /// The report was not used, and why.
    Ignored(String),
}

/// The controller for all devices.
#[derive(Debug, Default)]
pub struct SyncController {
    cfg: ControllerConfig,
    devices: BTreeMap<String, DeviceSync>,
}

impl SyncController {
    /// A controller with `cfg`.
    pub fn new(cfg: ControllerConfig) -> Self {
        Self {
            cfg,
            devices: BTreeMap::new(),
        }
    }

    /// Per-device state.
    pub fn snapshot(&self) -> BTreeMap<String, DeviceSync> {
        self.devices.clone()
    }

    /// State of one device.
    pub fn device(&self, name: &str) -> Option<&DeviceSync> {
        self.devices.get(name)
    }

    /// Forgets a device (after a `resync` command), so it is acquired again.
    pub fn reset(&mut self, device: &str) {
        self.devices.remove(device);
    }

    /// Handles one report (see the module docs).
    pub fn on_report(&mut self, r: &DriftReport) -> Decision {
        let cfg = self.cfg.clone();
        let dev = self
            .devices
            .entry(r.device.clone())
            .or_insert_with(DeviceSync::new);
        dev.last_drift_ms = r.drift_ms;
        dev.last_confidence = r.confidence;
        let Some(drift) = r.drift_ms.filter(|d| d.is_finite()) else {
            dev.ignored += 1;
            return Decision::Ignored(r.reason.clone().unwrap_or_else(|| "no estimate".into()));
        };
        if r.confidence.is_nan()
            || r.confidence < cfg.min_confidence
            || !r.applied_offset_ms.is_finite()
        {
            dev.ignored += 1;
            return Decision::Ignored(format!(
                "confidence {:.2} below {:.2}",
                r.confidence, cfg.min_confidence
            ));
        }
        let target = r.applied_offset_ms + drift;
        dev.last_target_ms = Some(target);
        dev.offset_history.push_back((r.ts_us, r.applied_offset_ms));
        while dev.offset_history.len() > 4096 {
            dev.offset_history.pop_front();
        }
        // The α-β tracker's prediction of the offset at this report's time.
        let dt_s = dev
            .last_ts_us
            .map_or(0.0, |t| ((r.ts_us - t) as f64 / 1e6).clamp(0.0, 60.0));
        let current = dev.offset_ms.unwrap_or(r.applied_offset_ms) + dev.rate_ms_per_s * dt_s;
        let new_offset = match dev.state {
            LockState::Acquiring => {
                dev.pending.push(target);
                let n = dev.pending.len();
                if r.confidence >= cfg.lock_confidence {
                    dev.targets = std::iter::once(target).collect();
                    dev.pending.clear();
                    dev.state = LockState::Tracking;
                    dev.used += 1;
                    dev.rate_ms_per_s = 0.0;
                    target
                } else if n >= 2 && (dev.pending[n - 1] - dev.pending[n - 2]).abs() <= cfg.agree_ms
                {
                    let locked = 0.5 * (dev.pending[n - 1] + dev.pending[n - 2]);
                    dev.targets = dev.pending[n - 2..].iter().copied().collect();
                    dev.pending.clear();
                    dev.state = LockState::Tracking;
                    dev.used += 1;
                    dev.rate_ms_per_s = 0.0;
                    locked
                } else {
                    if n > 4 {
                        dev.pending.remove(0);
                    }
                    return Decision::Ignored(
                        "acquiring: waiting for two agreeing measurements".into(),
                    );
                }
            }
            LockState::Tracking => {
                let med = current;
                if (target - med).abs() > cfg.outlier_ms {
                    dev.outliers += 1;
                    dev.pending.push(target);
                    let n = dev.pending.len();
                    if n >= cfg.relock_count {
                        let recent = &dev.pending[n - cfg.relock_count..];
                        let m = median(recent).unwrap_or(target);
                        if recent.iter().all(|t| (t - m).abs() <= cfg.agree_ms) {
                            dev.targets = recent.iter().copied().collect();
                            dev.pending.clear();
                            dev.used += 1;
                            dev.rate_ms_per_s = 0.0;
                            m
                        } else {
                            return Decision::Ignored(format!(
                                "outlier: {target:.3} ms against median {med:.3} ms"
                            ));
                        }
                    } else {
                        return Decision::Ignored(format!(
                            "outlier: {target:.3} ms against median {med:.3} ms"
                        ));
                    }
                } else {
                    dev.pending.clear();
                    dev.targets.push_back(target);
                    while dev.targets.len() > cfg.history {
                        dev.targets.pop_front();
                    }
                    dev.used += 1;
                    let residual = target - current;
                    if dt_s > 0.0 {
                        dev.rate_ms_per_s = (dev.rate_ms_per_s
                            + cfg.velocity_gain * residual / dt_s)
                            .clamp(-cfg.max_rate_ms_per_s, cfg.max_rate_ms_per_s);
                    }
                    current + cfg.gain * residual
                }
            }
        };
        let clamped = new_offset.clamp(cfg.min_offset_ms, cfg.max_offset_ms);
        if clamped != new_offset {
            tracing::warn!(
                device = r.device,
                "needed offset {new_offset:.2} ms is outside what the buffer can do; using {clamped:.2} ms"
            );
        }
        // `offset_ms` is kept as the value at the last used report's time.
        let unchanged = dev.offset_ms.is_some() && (clamped - current).abs() < cfg.deadband_ms;
        let rate_changed = (dev.rate_ms_per_s - dev.published_rate_ms_per_s).abs() > 1e-4;
        dev.offset_ms = Some(clamped);
        dev.last_ts_us = Some(r.ts_us);
        if unchanged && !rate_changed {
            return Decision::Hold;
        }
        dev.published_rate_ms_per_s = dev.rate_ms_per_s;
        dev.seq += 1;
        Decision::Publish(BufferOffset {
            device: r.device.clone(),
            offset_ms: clamped,
            seq: dev.seq,
            rate_ms_per_s: dev.rate_ms_per_s,
            ref_us: r.ts_us,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(drift: Option<f64>, conf: f64, applied: f64) -> DriftReport {
        DriftReport {
            device: "tv".into(),
            drift_ms: drift,
            confidence: conf,
            signal_strength_db: -30.0,
            ts_us: 0,
            applied_offset_ms: applied,
            reason: None,
        }
    }

    fn offset(d: Decision) -> f64 {
        match d {
            Decision::Publish(o) => o.offset_ms,
            other => panic!("expected an offset, got {other:?}"),
        }
    }

    #[test]
    fn locks_after_two_agreeing_reports_then_tracks_without_overshoot() {
        let mut c = SyncController::new(ControllerConfig::default());
        // True need: 112 ms. Profile said 70.
        assert!(matches!(
            c.on_report(&report(Some(42.0), 0.9, 70.0)),
            Decision::Ignored(_)
        ));
        let o = offset(c.on_report(&report(Some(42.2), 0.9, 70.0)));
        assert!((o - 112.1).abs() < 1e-9);
        // Now tracking: the device is 0.1 ms early → converge monotonically to 112.0.
        let mut applied = o;
        let mut last_err = f64::MAX;
        for _ in 0..20 {
            if let Decision::Publish(b) = c.on_report(&report(Some(112.0 - applied), 0.9, applied))
            {
                applied = b.offset_ms;
            }
            let err = (applied - 112.0).abs();
            assert!(err <= last_err + 1e-12);
            assert!(applied >= 112.0 - 1e-9, "overshoot: {applied}");
            last_err = err;
        }
        assert!(last_err < 0.01);
    }

    #[test]
    fn a_very_confident_report_locks_at_once() {
        let mut c = SyncController::new(ControllerConfig::default());
        assert!((offset(c.on_report(&report(Some(42.0), 0.995, 70.0))) - 112.0).abs() < 1e-9);
        assert_eq!(c.device("tv").unwrap().state, LockState::Tracking);
    }

    #[test]
    fn ignores_low_confidence_missing_estimates_and_outliers() {
        let mut c = SyncController::new(ControllerConfig::default());
        c.on_report(&report(Some(10.0), 0.9, 100.0));
        c.on_report(&report(Some(10.0), 0.9, 100.0));
        assert!(matches!(
            c.on_report(&report(Some(50.0), 0.2, 110.0)),
            Decision::Ignored(_)
        ));
        assert!(matches!(
            c.on_report(&report(None, 0.0, 110.0)),
            Decision::Ignored(_)
        ));
        assert!(matches!(
            c.on_report(&report(Some(f64::NAN), 0.9, 110.0)),
            Decision::Ignored(_)
        ));
        // A single wild estimate is rejected.
        assert!(matches!(
            c.on_report(&report(Some(-30.0), 0.95, 110.0)),
            Decision::Ignored(_)
        ));
        assert_eq!(c.device("tv").unwrap().offset_ms, Some(110.0));
    }

    #[test]
    fn relocks_when_the_latency_really_changes() {
        let mut c = SyncController::new(ControllerConfig::default());
        c.on_report(&report(Some(0.0), 0.9, 200.0));
        c.on_report(&report(Some(0.0), 0.9, 200.0));
        // Bluetooth reconnect: now needs 260 ms.
        assert!(matches!(
            c.on_report(&report(Some(60.0), 0.9, 200.0)),
            Decision::Ignored(_)
        ));
        assert!(matches!(
            c.on_report(&report(Some(60.1), 0.9, 200.0)),
            Decision::Ignored(_)
        ));
        let o = offset(c.on_report(&report(Some(59.9), 0.9, 200.0)));
        assert!((o - 260.0).abs() < 0.2, "{o}");
    }

    #[test]
    fn offsets_stay_inside_the_buffer() {
        let cfg = ControllerConfig {
            max_offset_ms: 500.0,
            ..Default::default()
        };
        let mut c = SyncController::new(cfg);
        c.on_report(&report(Some(900.0), 0.9, 0.0));
        assert_eq!(offset(c.on_report(&report(Some(900.0), 0.9, 0.0))), 500.0);
    }
}
