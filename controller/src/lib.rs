//! The sync controller: turns drift reports into buffer offsets.
//!
//! Each report says how late a device sounded (`drift_ms`) while a known offset was
//! applied (`applied_offset_ms`), so `applied + drift` is a measurement of the offset
//! that device needs (its output latency, plus any error in clock sync). Working on
//! that absolute *target*, not on increments, makes the loop immune to reports that
//! arrive late or twice.
//!
//! - Reports are checked first: a report stamped more than [`MAX_REPORT_AGE_US`] from
//!   the controller's clock, a drift beyond ±[`MAX_DRIFT_MS`], an applied offset
//!   outside the limits, or a confidence outside 0..=1 is refused. Reports below
//!   `min_confidence` or without an estimate are ignored.
//! - Acquiring: the first offset is set when two consecutive targets agree within
//!   `agree_ms`, or at once on a report of at least `lock_confidence` (the estimator's
//!   confidence is calibrated: at 0.99 it has not been wrong in its evaluation), so a
//!   doubtful estimate cannot move a speaker.
//! - Tracking: an α-β tracker (a steady-state Kalman filter over the offset and its
//!   drift rate) predicts the target at the report's time. A target further than
//!   `outlier_ms` from that prediction is an outlier and ignored, unless
//!   `relock_count` outliers in a row agree with each other within `agree_ms` (the
//!   device's latency really changed: a Bluetooth reconnect, a TV mode switch), which
//!   re-locks on their median. A report flagged `step` at `lock_confidence` or more
//!   re-locks at once: its receiver lost its own sound where it belonged and found it,
//!   as strong as usual, elsewhere (`receiver/src/own_sound.rs`). A target between
//!   `agree_ms` and `outlier_ms` from the prediction is a small step, not a drift to
//!   learn: two such reports in a row that agree move the offset to them, the rate
//!   kept; but the first such report after `gap_s` without one used (the device was
//!   muted, the programme silent, the own sound masked) is taken whole when it is at
//!   `lock_confidence`: over an unmeasured span the prediction's error grows with the
//!   span (a Kalman filter's gain goes to 1 as the predicted variance grows), so one
//!   confident measurement is worth more than it. Otherwise the offset moves a
//!   fraction `gain` (α) of the way to the target and the rate a fraction
//!   `velocity_gain` (β) of the residual per second, bounded by `max_rate_ms_per_s`;
//!   a device whose latency drifts steadily (Bluetooth, Cast buffers adapting) is
//!   followed without lag, as an offset plus a rate that the receiver applies
//!   continuously. Changes below `deadband_ms` are not
//!   sent, but an offset with a rate is re-sent every `refresh_s` of report time, since
//!   receivers stop extrapolating a rate that is not refreshed.
//! - A manual adjustment per device (`manual_adjust_ms`, positive: the device sounds
//!   later) is taken off the offset published, not the target: the controller goes on
//!   tracking the device's latency from `applied + drift` (the report's applied offset
//!   includes the adjustment and its drift shows it), so it keeps the device where the
//!   person put it instead of fighting the trim. Changing it republishes at once.
//! - Coarse reports (with `uncertainty_ms`: bass-only sound, a subwoofer) never
//!   fine-tune: one that agrees with the offset within its uncertainty (plus
//!   `outlier_ms`) is ignored; two in a row that agree with each other but not with the
//!   offset (or with no offset yet) move the offset to them and put the device back to
//!   acquiring, so that the next precise report locks it.
//! - Every offset is clamped to what the device's buffer can do
//!   ([`syncstream_shared::limits::OffsetLimits`] of the playout delay).
//! - State is bounded: per device a fixed number of pending targets and of offset
//!   history entries, and at most [`MAX_DEVICES`] devices (the one heard from longest
//!   ago is forgotten first).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use syncstream_protocol::messages::{BufferOffset, DriftReport};
use syncstream_shared::limits::OffsetLimits;
use syncstream_shared::stats::median;

/// A report stamped further than this from the controller's clock is refused, µs.
pub const MAX_REPORT_AGE_US: i64 = 60_000_000;
/// Largest |drift| believed, ms.
pub const MAX_DRIFT_MS: f64 = 10_000.0;
/// Largest uncertainty of a coarse report believed, ms.
pub const MAX_UNCERTAINTY_MS: f64 = 1000.0;
/// Most devices tracked at once.
pub const MAX_DEVICES: usize = 256;
/// A device not measured for this long gets no more [`SyncController::keepalive`]
/// offsets, s.
pub const KEEPALIVE_MAX_S: f64 = 120.0;
/// Offset history entries kept per device.
pub const OFFSET_HISTORY: usize = 4096;
/// Largest |manual adjustment|, ms.
pub const MAX_MANUAL_ADJUST_MS: f64 = 500.0;

/// Tuning of the controller. The defaults are documented in the README.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Reports below this confidence are ignored.
    pub min_confidence: f64,
    /// Two targets agreeing within this many ms lock a device, ms.
    pub agree_ms: f64,
    /// A single report at least this confident locks a device at once.
    pub lock_confidence: f64,
    /// Targets further than this from the tracker's prediction are outliers, ms.
    pub outlier_ms: f64,
    /// Outliers in a row that, agreeing with each other, re-lock the device.
    pub relock_count: usize,
    /// Fraction of the error corrected per report while tracking (α), 0..=1.
    pub gain: f64,
    /// Offset changes smaller than this are not published, ms.
    pub deadband_ms: f64,
    /// The offsets a device can take (from the playout delay).
    pub limits: OffsetLimits,
    /// Velocity gain of the α-β tracker (β: how fast a latency drift is learnt), 0..=1.
    pub velocity_gain: f64,
    /// Largest latency drift followed, ms/s.
    pub max_rate_ms_per_s: f64,
    /// An offset with a rate is re-sent at least this often, s of report time.
    pub refresh_s: f64,
    /// After this long without a used report (a mute, a silence, a noise burst), a
    /// report of at least `lock_confidence` between `agree_ms` and `outlier_ms` from
    /// the prediction is taken whole instead of waiting for a second, s of report
    /// time: the prediction carried across an unmeasured span is worth less than one
    /// confident measurement.
    pub gap_s: f64,
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
            limits: OffsetLimits::for_playout_delay_ms(
                syncstream_shared::limits::DEFAULT_PLAYOUT_DELAY_MS as f64,
            ),
            velocity_gain: 0.3,
            max_rate_ms_per_s: 0.5,
            refresh_s: 5.0,
            gap_s: 8.0,
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
    /// Latency steps followed at once (reports flagged `step`).
    pub steps: u64,
    /// Coarse reports (bass only) received.
    pub coarse: u64,
    /// Offsets published.
    pub seq: u64,
    /// Estimated drift of the device's latency, ms/s.
    pub rate_ms_per_s: f64,
    /// Transmitter time of the last used report, µs.
    #[serde(skip)]
    last_ts_us: Option<i64>,
    #[serde(skip)]
    published_rate_ms_per_s: f64,
    /// Report time of the last published offset, µs.
    #[serde(skip)]
    last_publish_ts_us: Option<i64>,
    /// Controller time of the last report, µs (to forget the stalest device first).
    #[serde(skip)]
    last_seen_us: i64,
    #[serde(skip)]
    pending: Vec<f64>,
    /// Coarse targets waiting for a second that agrees: (target, uncertainty), ms.
    #[serde(skip)]
    coarse_pending: Vec<(f64, f64)>,
    /// Offset history: (report ts_us, applied offset ms).
    #[serde(skip)]
    pub offset_history: VecDeque<(i64, f64)>,
    /// The offset wanted before it was clamped to the limits, ms (`None` when it fit).
    #[serde(skip)]
    unclamped_ms: Option<f64>,
    /// The limits grew to hold `unclamped_ms`: the next report publishes even if the
    /// offset did not move.
    #[serde(skip)]
    force_publish: bool,
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
            steps: 0,
            coarse: 0,
            seq: 0,
            rate_ms_per_s: 0.0,
            last_ts_us: None,
            published_rate_ms_per_s: 0.0,
            last_publish_ts_us: None,
            last_seen_us: 0,
            pending: Vec::new(),
            coarse_pending: Vec::new(),
            offset_history: VecDeque::new(),
            unclamped_ms: None,
            force_publish: false,
        }
    }
}

/// What [`SyncController::persisted`] keeps of one device.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PersistedDevice {
    /// Offset, ms, at `ref_us`.
    pub offset_ms: f64,
    /// Its rate, ms/s.
    pub rate_ms_per_s: f64,
    /// Transmitter time the offset holds at, µs.
    pub ref_us: i64,
}

/// The controller's state file (`controller.json` in the transmitter's state folder).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PersistedState {
    /// Per device.
    pub devices: BTreeMap<String, PersistedDevice>,
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

/// The offset to publish, ms: the tracked offset `tracked_ms` less the device's manual
/// adjustment `adjust_ms` (positive: the device sounds later), clamped into `limits`.
/// Every offset the controller sends goes through here, so a trim is never left out.
fn published_offset_ms(limits: OffsetLimits, tracked_ms: f64, adjust_ms: f64) -> f64 {
    limits.clamp(tracked_ms - adjust_ms)
}

/// `device`'s manual adjustment in `adjusts`, ms (0 unless set).
fn adjust_of(adjusts: &BTreeMap<String, f64>, device: &str) -> f64 {
    adjusts.get(device).copied().unwrap_or(0.0)
}

/// The controller for all devices.
#[derive(Debug, Default)]
pub struct SyncController {
    cfg: ControllerConfig,
    devices: BTreeMap<String, DeviceSync>,
    /// Manual adjustments, ms, by device (kept across a resync).
    adjust_ms: BTreeMap<String, f64>,
    /// The last offset wanted above the limits, ms, and its device (taken by
    /// [`SyncController::take_wanted_above_limits`]).
    wanted_above_limits: Option<(String, f64)>,
}

impl SyncController {
    /// A controller with `cfg`.
    pub fn new(cfg: ControllerConfig) -> Self {
        Self {
            cfg,
            devices: BTreeMap::new(),
            adjust_ms: BTreeMap::new(),
            wanted_above_limits: None,
        }
    }

    /// The manual adjustment of `device`, ms (0 unless set).
    pub fn manual_adjust_ms(&self, device: &str) -> f64 {
        adjust_of(&self.adjust_ms, device)
    }

    /// Sets `device`'s manual adjustment (see the module docs) and returns the offset
    /// to publish now when the device is locked (at its last report's time, with its
    /// rate).
    ///
    /// Errors: a value that is not finite or beyond ±[`MAX_MANUAL_ADJUST_MS`]; more
    /// than [`MAX_DEVICES`] adjusted devices.
    pub fn set_manual_adjust(
        &mut self,
        device: &str,
        adjust_ms: f64,
    ) -> Result<Option<BufferOffset>, String> {
        if !(adjust_ms.is_finite() && adjust_ms.abs() <= MAX_MANUAL_ADJUST_MS) {
            return Err(format!(
                "manual_adjust_ms: {adjust_ms} is outside ±{MAX_MANUAL_ADJUST_MS} ms"
            ));
        }
        if !self.adjust_ms.contains_key(device) && self.adjust_ms.len() >= MAX_DEVICES {
            return Err(format!("at most {MAX_DEVICES} devices can be adjusted"));
        }
        if adjust_ms == 0.0 {
            self.adjust_ms.remove(device);
        } else {
            self.adjust_ms.insert(device.to_string(), adjust_ms);
        }
        let limits = self.cfg.limits;
        let Some(dev) = self.devices.get_mut(device) else {
            return Ok(None);
        };
        let (Some(offset), Some(ref_us)) = (dev.offset_ms, dev.last_ts_us) else {
            return Ok(None);
        };
        dev.seq += 1;
        dev.published_rate_ms_per_s = dev.rate_ms_per_s;
        dev.last_publish_ts_us = Some(ref_us);
        Ok(Some(BufferOffset {
            device: device.to_string(),
            offset_ms: published_offset_ms(limits, offset, adjust_ms),
            seq: dev.seq,
            rate_ms_per_s: dev.rate_ms_per_s,
            ref_us,
        }))
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

    /// Number of devices tracked.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether no device is tracked.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The limits offsets are clamped to.
    pub fn limits(&self) -> OffsetLimits {
        self.cfg.limits
    }

    /// Clamps offsets to `limits` from now on (the playout delay changed; see
    /// the transmitter's `playout_delay`). A device whose offset was clamped to the old limits
    /// takes the offset it wanted (within the new ones) as its current one, and its
    /// next report publishes it: the receivers have their new playout delay by then
    /// (it reaches them on the stream connection at once, the report comes seconds
    /// later), so the offset is not refused for being above their old limits.
    pub fn set_limits(&mut self, limits: OffsetLimits) {
        self.cfg.limits = limits;
        for dev in self.devices.values_mut() {
            if let Some(u) = dev.unclamped_ms {
                let now = limits.clamp(u);
                if dev.offset_ms.is_some_and(|o| o != now) {
                    dev.offset_ms = Some(now);
                    dev.pending.clear();
                    dev.force_publish = true;
                }
                dev.unclamped_ms = (now != u).then_some(u);
            }
        }
    }

    /// The device and offset (ms) of the last accepted report whose offset was above
    /// the limits (and clamped), once: what a larger playout delay should make room
    /// for.
    pub fn take_wanted_above_limits(&mut self) -> Option<(String, f64)> {
        self.wanted_above_limits.take()
    }

    /// The offsets to re-send at controller time `now_us` although no report came:
    /// for each locked device whose offset has a rate, not published for `refresh_s`
    /// and measured within [`KEEPALIVE_MAX_S`], its offset extrapolated to `now_us`
    /// with `ref_us = now_us`. While a device cannot measure (muted, the programme
    /// silent, talk over it) its receiver so keeps following its latency's drift
    /// instead of letting the rate decay; once the controller itself goes quiet (or
    /// the device has not been measured for a long time) the receiver's own decay
    /// takes over.
    pub fn keepalive(&mut self, now_us: i64) -> Vec<BufferOffset> {
        let cfg = &self.cfg;
        let adjust_ms = &self.adjust_ms;
        let mut out = Vec::new();
        for (name, dev) in self.devices.iter_mut() {
            let (Some(offset), Some(last_ts)) = (dev.offset_ms, dev.last_ts_us) else {
                continue;
            };
            if dev.state != LockState::Tracking || dev.rate_ms_per_s == 0.0 {
                continue;
            }
            let since_report_s = (now_us as f64 - last_ts as f64) / 1e6;
            let since_publish_s = dev
                .last_publish_ts_us
                .map_or(f64::INFINITY, |t| (now_us as f64 - t as f64) / 1e6);
            if !(0.0..=KEEPALIVE_MAX_S).contains(&since_report_s) || since_publish_s < cfg.refresh_s
            {
                continue;
            }
            dev.last_publish_ts_us = Some(now_us);
            dev.seq += 1;
            out.push(BufferOffset {
                device: name.clone(),
                offset_ms: published_offset_ms(
                    cfg.limits,
                    offset + dev.rate_ms_per_s * since_report_s,
                    adjust_of(adjust_ms, name),
                ),
                seq: dev.seq,
                rate_ms_per_s: dev.rate_ms_per_s,
                ref_us: now_us,
            });
        }
        out
    }

    /// A coarse report (see the module docs): acquires, or catches a gross error, never
    /// fine-tunes.
    fn on_coarse(
        cfg: &ControllerConfig,
        dev: &mut DeviceSync,
        r: &DriftReport,
        target: f64,
        uncertainty_ms: f64,
        adjust: f64,
    ) -> Decision {
        dev.coarse += 1;
        let dt_s = dev.last_ts_us.map_or(0.0, |t| {
            ((r.ts_us as f64 - t as f64) / 1e6).clamp(0.0, 60.0)
        });
        let current = dev.offset_ms.map(|o| o + dev.rate_ms_per_s * dt_s);
        if let Some(c) = current {
            if (target - c).abs() <= uncertainty_ms + cfg.outlier_ms {
                dev.coarse_pending.clear();
                return Decision::Ignored(format!(
                    "coarse estimate (± {uncertainty_ms:.1} ms) agrees with the offset; coarse \
                     estimates never fine-tune"
                ));
            }
        }
        dev.coarse_pending.push((target, uncertainty_ms));
        if dev.coarse_pending.len() > 2 {
            dev.coarse_pending.remove(0);
        }
        let [(a, ua), (b, ub)] = dev.coarse_pending[..] else {
            return Decision::Ignored(format!(
                "coarse estimate {target:.1} ± {uncertainty_ms:.1} ms: waiting for a second"
            ));
        };
        if (a - b).abs() > ua.max(ub) {
            return Decision::Ignored(format!("coarse estimates {a:.1} and {b:.1} ms disagree"));
        }
        // Two coarse estimates agree, and the offset is unknown or grossly off: move
        // there, and acquire again (a precise report then locks).
        dev.coarse_pending.clear();
        dev.pending.clear();
        dev.state = LockState::Acquiring;
        dev.rate_ms_per_s = 0.0;
        dev.published_rate_ms_per_s = 0.0;
        dev.used += 1;
        let offset = cfg.limits.clamp(0.5 * (a + b));
        dev.offset_ms = Some(offset);
        dev.last_ts_us = Some(r.ts_us);
        dev.last_publish_ts_us = Some(r.ts_us);
        dev.seq += 1;
        Decision::Publish(BufferOffset {
            device: r.device.clone(),
            offset_ms: published_offset_ms(cfg.limits, offset, adjust),
            seq: dev.seq,
            rate_ms_per_s: 0.0,
            ref_us: r.ts_us,
        })
    }

    /// What the controller keeps across a restart: every locked device's offset, its
    /// rate and the report time both hold at.
    pub fn persisted(&self) -> PersistedState {
        PersistedState {
            devices: self
                .devices
                .iter()
                .filter(|(_, d)| d.state == LockState::Tracking)
                .filter_map(|(n, d)| {
                    Some((
                        n.clone(),
                        PersistedDevice {
                            offset_ms: d.offset_ms?,
                            rate_ms_per_s: d.rate_ms_per_s,
                            ref_us: d.last_ts_us?,
                        },
                    ))
                })
                .collect(),
        }
    }

    /// Starts from what an earlier run kept: each valid device (a valid name, finite
    /// numbers within the limits and bounds) is locked at its offset and rate.
    /// Returns how many were taken.
    pub fn restore(&mut self, state: &PersistedState) -> usize {
        let mut n = 0;
        for (name, p) in state.devices.iter().take(MAX_DEVICES) {
            if !syncstream_shared::names::is_valid_device_name(name)
                || !p.offset_ms.is_finite()
                || !self.cfg.limits.contains(p.offset_ms)
                || !p.rate_ms_per_s.is_finite()
                || p.rate_ms_per_s.abs() > self.cfg.max_rate_ms_per_s
            {
                continue;
            }
            let mut d = DeviceSync::new();
            d.state = LockState::Tracking;
            d.offset_ms = Some(p.offset_ms);
            d.rate_ms_per_s = p.rate_ms_per_s;
            d.published_rate_ms_per_s = p.rate_ms_per_s;
            d.last_ts_us = Some(p.ref_us);
            self.devices.insert(name.clone(), d);
            n += 1;
        }
        n
    }

    /// Every locked device's offset at controller time `now_us` (extrapolated with its
    /// rate for up to [`KEEPALIVE_MAX_S`]), to publish retained again: after a restart,
    /// or when the broker lost its retained messages.
    pub fn republish(&mut self, now_us: i64) -> Vec<BufferOffset> {
        let limits = self.cfg.limits;
        let adjust_ms = &self.adjust_ms;
        self.devices
            .iter_mut()
            .filter(|(_, d)| d.state == LockState::Tracking)
            .filter_map(|(name, d)| {
                let (offset, last) = (d.offset_ms?, d.last_ts_us?);
                let dt_s = ((now_us as f64 - last as f64) / 1e6).clamp(0.0, KEEPALIVE_MAX_S);
                d.seq += 1;
                d.last_publish_ts_us = Some(now_us);
                Some(BufferOffset {
                    device: name.clone(),
                    offset_ms: published_offset_ms(
                        limits,
                        offset + d.rate_ms_per_s * dt_s,
                        adjust_of(adjust_ms, name),
                    ),
                    seq: d.seq,
                    rate_ms_per_s: d.rate_ms_per_s,
                    ref_us: now_us,
                })
            })
            .collect()
    }

    /// Checks a report's numbers; the error says which is wrong.
    fn check(&self, r: &DriftReport, now_us: i64) -> Result<(), String> {
        let age = (now_us as i128 - r.ts_us as i128).abs();
        if age > MAX_REPORT_AGE_US as i128 {
            return Err(format!(
                "report stamped {} µs is {:.0} s from the controller's clock",
                r.ts_us,
                age as f64 / 1e6
            ));
        }
        if let Some(d) = r.drift_ms {
            if !(d.is_finite() && d.abs() <= MAX_DRIFT_MS) {
                return Err(format!("drift_ms {d} is out of range"));
            }
        }
        let l = self.cfg.limits;
        if !(r.applied_offset_ms.is_finite()
            && r.applied_offset_ms >= l.min_ms - 1.0
            && r.applied_offset_ms <= l.max_ms + 1.0)
        {
            return Err(format!(
                "applied_offset_ms {} is outside the limits ({} to {} ms)",
                r.applied_offset_ms, l.min_ms, l.max_ms
            ));
        }
        if !(0.0..=1.0).contains(&r.confidence) {
            return Err(format!("confidence {} is outside 0..=1", r.confidence));
        }
        if let Some(u) = r.uncertainty_ms {
            if !(u.is_finite() && u > 0.0 && u <= MAX_UNCERTAINTY_MS) {
                return Err(format!(
                    "uncertainty_ms {u} is outside 0 to {MAX_UNCERTAINTY_MS}"
                ));
            }
        }
        Ok(())
    }

    /// Handles one report that reached the controller at its time `now_us` (see the
    /// module docs).
    pub fn on_report(&mut self, r: &DriftReport, now_us: i64) -> Decision {
        if let Err(e) = self.check(r, now_us) {
            return Decision::Ignored(e);
        }
        let cfg = self.cfg.clone();
        let adjust = self.manual_adjust_ms(&r.device);
        if !self.devices.contains_key(&r.device) && self.devices.len() >= MAX_DEVICES {
            if let Some(stalest) = self
                .devices
                .iter()
                .min_by_key(|(_, d)| d.last_seen_us)
                .map(|(n, _)| n.clone())
            {
                self.devices.remove(&stalest);
            }
        }
        let dev = self
            .devices
            .entry(r.device.clone())
            .or_insert_with(DeviceSync::new);
        dev.last_seen_us = now_us;
        dev.last_drift_ms = r.drift_ms;
        dev.last_confidence = r.confidence;
        let Some(drift) = r.drift_ms else {
            dev.ignored += 1;
            return Decision::Ignored(r.reason.clone().unwrap_or_else(|| "no estimate".into()));
        };
        if r.confidence < cfg.min_confidence {
            dev.ignored += 1;
            return Decision::Ignored(format!(
                "confidence {:.2} below {:.2}",
                r.confidence, cfg.min_confidence
            ));
        }
        let target = r.applied_offset_ms + drift;
        dev.last_target_ms = Some(target);
        if let Some(u) = r.uncertainty_ms {
            let d = Self::on_coarse(&cfg, dev, r, target, u, adjust);
            if matches!(d, Decision::Publish(_)) && target > cfg.limits.max_ms {
                self.wanted_above_limits = Some((r.device.clone(), target));
            }
            return d;
        }
        dev.coarse_pending.clear();
        dev.offset_history.push_back((r.ts_us, r.applied_offset_ms));
        while dev.offset_history.len() > OFFSET_HISTORY {
            dev.offset_history.pop_front();
        }
        // The α-β tracker's prediction of the offset at this report's time.
        let dt_s = dev.last_ts_us.map_or(0.0, |t| {
            ((r.ts_us as f64 - t as f64) / 1e6).clamp(0.0, 60.0)
        });
        let current =
            dev.offset_ms.unwrap_or(r.applied_offset_ms + adjust) + dev.rate_ms_per_s * dt_s;
        let new_offset = match dev.state {
            LockState::Acquiring => {
                dev.pending.push(target);
                let n = dev.pending.len();
                if r.confidence >= cfg.lock_confidence {
                    dev.pending.clear();
                    dev.state = LockState::Tracking;
                    dev.used += 1;
                    dev.rate_ms_per_s = 0.0;
                    target
                } else if n >= 2 && (dev.pending[n - 1] - dev.pending[n - 2]).abs() <= cfg.agree_ms
                {
                    let locked = 0.5 * (dev.pending[n - 1] + dev.pending[n - 2]);
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
                let after_gap = dt_s >= cfg.gap_s && r.confidence >= cfg.lock_confidence;
                if (target - current).abs() > cfg.outlier_ms
                    && r.step
                    && r.confidence >= cfg.lock_confidence
                {
                    // The receiver found its own sound, as strong as usual, away from
                    // where it belonged: the latency stepped. Follow at once.
                    dev.pending.clear();
                    dev.used += 1;
                    dev.steps += 1;
                    dev.rate_ms_per_s = 0.0;
                    target
                } else if (target - current).abs() > cfg.outlier_ms {
                    dev.outliers += 1;
                    dev.pending.push(target);
                    if dev.pending.len() > cfg.relock_count.max(1) {
                        dev.pending.remove(0);
                    }
                    let n = dev.pending.len();
                    let recent = &dev.pending[n.saturating_sub(cfg.relock_count)..];
                    let m = median(recent).unwrap_or(target);
                    if n >= cfg.relock_count && recent.iter().all(|t| (t - m).abs() <= cfg.agree_ms)
                    {
                        dev.pending.clear();
                        dev.used += 1;
                        dev.rate_ms_per_s = 0.0;
                        m
                    } else {
                        return Decision::Ignored(format!(
                            "outlier: {target:.3} ms against the predicted {current:.3} ms"
                        ));
                    }
                } else if (target - current).abs() > cfg.agree_ms && !after_gap {
                    // A small step (a millisecond or two: wander is far slower): not a
                    // drift rate to learn. Two reports in a row that agree move the
                    // offset there at once, its rate kept.
                    dev.pending.push(target);
                    if dev.pending.len() > 2 {
                        dev.pending.remove(0);
                    }
                    match dev.pending.as_slice() {
                        [a, b] if (a - b).abs() <= cfg.agree_ms => {
                            let m = 0.5 * (a + b);
                            dev.pending.clear();
                            dev.used += 1;
                            m
                        }
                        _ => {
                            dev.outliers += 1;
                            return Decision::Ignored(format!(
                                "{target:.3} ms is {:.1} ms from the predicted {current:.3} ms: \
                                 waiting for a second report",
                                target - current
                            ));
                        }
                    }
                } else {
                    dev.pending.clear();
                    dev.used += 1;
                    let residual = target - current;
                    if dt_s > 0.0 {
                        dev.rate_ms_per_s = (dev.rate_ms_per_s
                            + cfg.velocity_gain * residual / dt_s)
                            .clamp(-cfg.max_rate_ms_per_s, cfg.max_rate_ms_per_s);
                    }
                    // The first report beyond `agree_ms` after an unmeasured span is
                    // taken whole: the prediction carried across it is worth less.
                    if after_gap && residual.abs() > cfg.agree_ms {
                        target
                    } else {
                        current + cfg.gain * residual
                    }
                }
            }
        };
        let clamped = cfg.limits.clamp(new_offset);
        if new_offset > cfg.limits.max_ms {
            self.wanted_above_limits = Some((r.device.clone(), new_offset));
        }
        dev.unclamped_ms = (clamped != new_offset).then_some(new_offset);
        if clamped != new_offset {
            tracing::warn!(
                device = r.device,
                "needed offset {new_offset:.2} ms is outside what the buffer can do; using {clamped:.2} ms"
            );
        }
        // `offset_ms` is kept as the value at the last used report's time.
        let unchanged = dev.offset_ms.is_some() && (clamped - current).abs() < cfg.deadband_ms;
        let rate_changed = (dev.rate_ms_per_s - dev.published_rate_ms_per_s).abs() > 1e-4;
        let refresh_due = dev.rate_ms_per_s != 0.0
            && dev
                .last_publish_ts_us
                .is_none_or(|t| (r.ts_us as f64 - t as f64) / 1e6 >= cfg.refresh_s);
        dev.offset_ms = Some(clamped);
        dev.last_ts_us = Some(r.ts_us);
        if unchanged && !rate_changed && !refresh_due && !dev.force_publish {
            return Decision::Hold;
        }
        dev.force_publish = false;
        dev.published_rate_ms_per_s = dev.rate_ms_per_s;
        dev.last_publish_ts_us = Some(r.ts_us);
        dev.seq += 1;
        Decision::Publish(BufferOffset {
            device: r.device.clone(),
            offset_ms: published_offset_ms(cfg.limits, clamped, adjust),
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
            step: false,
            uncertainty_ms: None,
        }
    }

    fn on(c: &mut SyncController, r: DriftReport) -> Decision {
        c.on_report(&r, r.ts_us)
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
            on(&mut c, report(Some(42.0), 0.9, 70.0)),
            Decision::Ignored(_)
        ));
        let o = offset(on(&mut c, report(Some(42.2), 0.9, 70.0)));
        assert!((o - 112.1).abs() < 1e-9);
        // Now tracking: the device is 0.1 ms early → converge monotonically to 112.0.
        let mut applied = o;
        let mut last_err = f64::MAX;
        for _ in 0..20 {
            if let Decision::Publish(b) = on(&mut c, report(Some(112.0 - applied), 0.9, applied)) {
                applied = b.offset_ms;
            }
            let err = (applied - 112.0).abs();
            assert!(err <= last_err + 1e-12);
            assert!(applied >= 112.0 - 1e-9, "overshoot: {applied}");
            last_err = err;
        }
        assert!(last_err < 0.01);
    }

    fn coarse(drift: f64, u: f64, applied: f64) -> DriftReport {
        DriftReport {
            uncertainty_ms: Some(u),
            ..report(Some(drift), 0.9, applied)
        }
    }

    #[test]
    fn coarse_reports_acquire_and_catch_gross_errors_but_never_fine_tune() {
        let mut c = SyncController::new(ControllerConfig::default());
        // Locked precisely at 112 ms.
        assert!((offset(on(&mut c, report(Some(42.0), 0.995, 70.0))) - 112.0).abs() < 1e-9);
        // Coarse reports within their uncertainty of it change nothing.
        for d in [8.0, -6.0, 12.0] {
            assert!(matches!(
                on(&mut c, coarse(d, 15.0, 112.0)),
                Decision::Ignored(_)
            ));
        }
        assert_eq!(c.device("tv").unwrap().offset_ms, Some(112.0));
        // A gross error (the subwoofer's amplifier now adds 150 ms): one coarse report
        // is not enough, two that agree move it and the device acquires again.
        assert!(matches!(
            on(&mut c, coarse(150.0, 15.0, 112.0)),
            Decision::Ignored(_)
        ));
        let o = offset(on(&mut c, coarse(156.0, 15.0, 112.0)));
        assert!((o - 265.0).abs() < 1e-9, "{o}");
        assert_eq!(c.device("tv").unwrap().state, LockState::Acquiring);
        // A precise report then locks it.
        assert!((offset(on(&mut c, report(Some(-3.0), 0.995, o))) - 262.0).abs() < 1e-9);
        // From nothing: two agreeing coarse reports give a first offset.
        let mut c = SyncController::new(ControllerConfig::default());
        assert!(matches!(
            on(&mut c, coarse(30.0, 10.0, 5.0)),
            Decision::Ignored(_)
        ));
        assert!(matches!(
            on(&mut c, coarse(80.0, 10.0, 5.0)),
            Decision::Ignored(_)
        ));
        assert!((offset(on(&mut c, coarse(84.0, 10.0, 5.0))) - 87.0).abs() < 1e-9);
        // Absurd uncertainties are refused.
        for u in [0.0, -1.0, f64::NAN, 5000.0] {
            assert!(matches!(
                on(&mut c, coarse(1.0, u, 5.0)),
                Decision::Ignored(_)
            ));
        }
    }

    #[test]
    fn a_very_confident_report_locks_at_once() {
        let mut c = SyncController::new(ControllerConfig::default());
        assert!((offset(on(&mut c, report(Some(42.0), 0.995, 70.0))) - 112.0).abs() < 1e-9);
        assert_eq!(c.device("tv").unwrap().state, LockState::Tracking);
    }

    #[test]
    fn ignores_low_confidence_missing_estimates_and_outliers() {
        let mut c = SyncController::new(ControllerConfig::default());
        on(&mut c, report(Some(10.0), 0.9, 100.0));
        on(&mut c, report(Some(10.0), 0.9, 100.0));
        assert!(matches!(
            on(&mut c, report(Some(50.0), 0.2, 110.0)),
            Decision::Ignored(_)
        ));
        assert!(matches!(
            on(&mut c, report(None, 0.0, 110.0)),
            Decision::Ignored(_)
        ));
        assert!(matches!(
            on(&mut c, report(Some(f64::NAN), 0.9, 110.0)),
            Decision::Ignored(_)
        ));
        // A single wild estimate is rejected.
        assert!(matches!(
            on(&mut c, report(Some(-30.0), 0.95, 110.0)),
            Decision::Ignored(_)
        ));
        assert_eq!(c.device("tv").unwrap().offset_ms, Some(110.0));
    }

    #[test]
    fn relocks_when_the_latency_really_changes() {
        let mut c = SyncController::new(ControllerConfig::default());
        on(&mut c, report(Some(0.0), 0.9, 200.0));
        on(&mut c, report(Some(0.0), 0.9, 200.0));
        // Bluetooth reconnect: now needs 260 ms.
        assert!(matches!(
            on(&mut c, report(Some(60.0), 0.9, 200.0)),
            Decision::Ignored(_)
        ));
        assert!(matches!(
            on(&mut c, report(Some(60.1), 0.9, 200.0)),
            Decision::Ignored(_)
        ));
        let o = offset(on(&mut c, report(Some(59.9), 0.9, 200.0)));
        assert!((o - 260.0).abs() < 0.2, "{o}");
    }

    /// A manual trim moves the published offset, not the tracked latency: reports made
    /// with the trimmed offset keep the device where it was put.
    #[test]
    fn a_manual_adjustment_is_kept_not_fought() {
        let mut c = SyncController::new(ControllerConfig::default());
        assert_eq!(c.set_manual_adjust("tv", 2.0), Ok(None), "not locked yet");
        // True latency 112 ms; the first offset is 112 − 2.
        let o = offset(on(&mut c, report(Some(42.0), 0.995, 70.0)));
        assert!((o - 110.0).abs() < 1e-9, "{o}");
        // The device now sounds 2 ms late, as asked: nothing changes.
        for _ in 0..10 {
            assert_eq!(on(&mut c, report(Some(2.0), 0.95, 110.0)), Decision::Hold);
        }
        // A new trim is published at once.
        let b = c.set_manual_adjust("tv", -0.5).unwrap().unwrap();
        assert!((b.offset_ms - 112.5).abs() < 1e-9, "{b:?}");
        assert_eq!(c.device("tv").unwrap().offset_ms, Some(112.0));
        for bad in [f64::NAN, 501.0, -1e9] {
            assert!(c
                .set_manual_adjust("tv", bad)
                .unwrap_err()
                .contains("manual_adjust_ms"));
        }
        assert_eq!(c.manual_adjust_ms("tv"), -0.5);
        c.reset("tv");
        assert_eq!(c.manual_adjust_ms("tv"), -0.5, "kept across a resync");
    }

    /// Offsets re-sent without a report (keepalive, republish) carry the trim too: a
    /// trimmed device's offset must not flip back and forth between the two.
    #[test]
    fn resent_offsets_keep_the_manual_adjustment() {
        let mut c = SyncController::new(ControllerConfig::default());
        c.set_manual_adjust("tv", 2.0).unwrap();
        let o = offset(on(&mut c, report(Some(42.0), 0.995, 70.0)));
        assert!((o - 110.0).abs() < 1e-9, "{o}");
        c.devices.get_mut("tv").unwrap().rate_ms_per_s = 0.001;
        let k = c.keepalive(10_000_000);
        assert_eq!(k.len(), 1, "{k:?}");
        assert!((k[0].offset_ms - 110.01).abs() < 1e-9, "{k:?}");
        let r = c.republish(10_000_000);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!((r[0].offset_ms - 110.01).abs() < 1e-9, "{r:?}");
    }

    /// A coarse move (two agreeing coarse reports) publishes the trimmed offset too.
    #[test]
    fn a_coarse_move_keeps_the_manual_adjustment() {
        let mut c = SyncController::new(ControllerConfig::default());
        c.set_manual_adjust("tv", 2.0).unwrap();
        assert!(matches!(
            on(&mut c, coarse(30.0, 10.0, 5.0)),
            Decision::Ignored(_)
        ));
        let o = offset(on(&mut c, coarse(32.0, 10.0, 5.0)));
        assert!((o - 34.0).abs() < 1e-9, "{o}");
        assert_eq!(c.device("tv").unwrap().offset_ms, Some(36.0));
    }

    #[test]
    fn offsets_stay_inside_the_buffer() {
        let cfg = ControllerConfig {
            limits: OffsetLimits::for_playout_delay_ms(550.0),
            ..Default::default()
        };
        let mut c = SyncController::new(cfg);
        on(&mut c, report(Some(900.0), 0.9, 0.0));
        assert_eq!(offset(on(&mut c, report(Some(900.0), 0.9, 0.0))), 500.0);
    }

    /// A device whose latency drifts at 0.2 ms/s, reported every 2.5 s with advancing
    /// timestamps and the offset the receiver really applied (the ramp): the α-β
    /// tracker learns the rate and the residual shrinks to the estimation noise.
    #[test]
    fn the_rate_path_follows_a_drifting_latency() {
        let mut c = SyncController::new(ControllerConfig::default());
        let latency = |ts: i64| 200.0 + 0.2 * ts as f64 / 1e6;
        let mut ramp = (200.0, 0.0, 0i64); // the receiver's (offset, rate, ref)
        let applied = |r: (f64, f64, i64), ts: i64| r.0 + r.1 * (ts - r.2) as f64 / 1e6;
        let mut last_rate = 0.0;
        let mut residuals = Vec::new();
        for k in 1..=80i64 {
            let ts = k * 2_500_000;
            let a = applied(ramp, ts);
            let r = DriftReport {
                ts_us: ts,
                ..report(Some(latency(ts) - a), 0.95, a)
            };
            residuals.push((latency(ts) - a).abs());
            if let Decision::Publish(o) = on(&mut c, r) {
                assert_eq!(o.ref_us, ts);
                ramp = (o.offset_ms, o.rate_ms_per_s, o.ref_us);
                last_rate = o.rate_ms_per_s;
            }
        }
        assert!((last_rate - 0.2).abs() < 0.01, "rate {last_rate}");
        let tail = &residuals[60..];
        assert!(
            tail.iter().all(|&e| e < 0.01),
            "residuals after the rate was learnt: {tail:?}"
        );
        // Without the rate a 0.2 ms/s drift leaves 0.5 ms behind per report.
        assert!(residuals[1] > 0.2);
    }

    /// After an unmeasured span (a mute) a confident report 1.8 ms from the
    /// prediction is followed at once; the same report without the span, or less
    /// confident, waits for a second that agrees.
    #[test]
    fn the_first_confident_report_after_a_gap_is_taken_whole() {
        let at = |drift: f64, conf: f64, ts_s: i64| DriftReport {
            ts_us: ts_s * 1_000_000,
            ..report(Some(drift), conf, 40.0)
        };
        let locked = || {
            let mut c = SyncController::new(ControllerConfig::default());
            on(&mut c, at(0.0, 0.995, 0));
            assert_eq!(c.device("tv").unwrap().offset_ms, Some(40.0));
            c
        };
        let mut c = locked();
        assert_eq!(offset(on(&mut c, at(1.8, 0.995, 30))), 41.8);
        let mut c = locked();
        assert!(matches!(
            on(&mut c, at(1.8, 0.995, 3)),
            Decision::Ignored(_)
        ));
        let mut c = locked();
        assert!(matches!(on(&mut c, at(1.8, 0.9, 30)), Decision::Ignored(_)));
        assert!((offset(on(&mut c, at(1.8, 0.9, 31))) - 41.8).abs() < 1e-9);
    }

    #[test]
    fn an_offset_with_a_rate_is_refreshed() {
        let mut c = SyncController::new(ControllerConfig::default());
        let mut published = Vec::new();
        let mut ramp = (100.0, 0.0, 0i64);
        for k in 1..=40i64 {
            let ts = k * 1_000_000;
            let a = ramp.0 + ramp.1 * (ts - ramp.2) as f64 / 1e6;
            let lat = 100.0 + 0.1 * ts as f64 / 1e6;
            let r = DriftReport {
                ts_us: ts,
                ..report(Some(lat - a), 0.95, a)
            };
            if let Decision::Publish(o) = on(&mut c, r) {
                ramp = (o.offset_ms, o.rate_ms_per_s, o.ref_us);
                published.push(ts);
            }
        }
        // Published at least every refresh_s (5 s) of report time once the rate is known.
        for w in published.windows(2).skip(5) {
            assert!(w[1] - w[0] <= 5_000_000, "{published:?}");
        }
    }

    #[test]
    fn reports_from_another_time_or_out_of_range_are_refused() {
        let mut c = SyncController::new(ControllerConfig::default());
        let r = DriftReport {
            ts_us: i64::MIN,
            ..report(Some(1.0), 0.9, 10.0)
        };
        assert!(
            matches!(c.on_report(&r, 1_000_000), Decision::Ignored(e) if e.contains("from the controller's clock"))
        );
        let r = DriftReport {
            ts_us: i64::MAX,
            ..report(Some(1.0), 0.9, 10.0)
        };
        assert!(matches!(c.on_report(&r, i64::MIN), Decision::Ignored(_)));
        for bad in [
            report(Some(1e9), 0.9, 10.0),
            report(Some(1.0), 0.9, 1e9),
            report(Some(1.0), 7.0, 10.0),
            report(Some(1.0), f64::NAN, 10.0),
            report(Some(f64::INFINITY), 0.9, 10.0),
        ] {
            assert!(matches!(on(&mut c, bad), Decision::Ignored(_)));
        }
        assert!(c.is_empty(), "refused reports leave no state");
    }

    #[test]
    fn state_is_bounded() {
        let mut c = SyncController::new(ControllerConfig::default());
        for k in 0..(MAX_DEVICES + 50) {
            let r = DriftReport {
                device: format!("d{k}"),
                ts_us: k as i64,
                ..report(Some(1.0), 0.9, 10.0)
            };
            c.on_report(&r, k as i64);
        }
        assert_eq!(c.len(), MAX_DEVICES);
        assert!(c.device("d0").is_none() && c.device(&format!("d{}", MAX_DEVICES + 49)).is_some());
        // Endless disagreeing outliers keep a bounded pending list.
        on(&mut c, report(Some(0.0), 0.995, 100.0));
        for k in 0..10_000 {
            on(
                &mut c,
                report(Some(50.0 + (k % 7) as f64 * 10.0), 0.9, 100.0),
            );
        }
        assert!(c.device("tv").unwrap().pending.len() <= 3);
    }
}
