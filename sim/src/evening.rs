//! The report of a scenario's events: what each one did to the sync, from the room's
//! ground truth.
//!
//! Per event (`EventReport`):
//! - `reconverge_s`: from the event (for an outage, from the network's return; for a
//!   restart, from the process being back) until every pair of devices is within 1 ms
//!   and stays so for 2 s, all devices playing; 0 when the event never took a pair
//!   past 1 ms; `null` when that did not happen before the next event (or the end).
//! - `worst_pairwise_ms`: the largest pairwise error from the event until then.
//! - For a mute, a silence, a noise burst and a volume change, over the event's span
//!   (the mute until the unmute, the silence or noise for its length, the volume
//!   change until the next event), for the affected devices (every device for a
//!   silence): `max_offset_move_ms`, how far their offsets were corrected (the offset
//!   in effect against what the offset in effect at the start would have given, going
//!   on at its rate), and `false_correction_ms`, how much further from the device's true
//!   latency those corrections took an offset than no correction would have;
//!   `false_corrections` when that is more than 0.2 ms.
//! - `jumps` and `underruns` over all devices from the event to the next one.
//!
//! Overall: `seconds_above_1ms`, the seconds after the first convergence in which some
//! pair of playing devices was more than 1 ms apart, and per device the drift reports
//! made, used, ignored and rejected as outliers.
//!
//! Residuals are averaged over [`BUCKET_US`] buckets, as in [`crate::report`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use syncstream_receiver::offset::OffsetRamp;
use syncstream_room::TruthSample;

use crate::engine::{RECEIVER_RESTART_US, TRANSMITTER_RESTART_US};
use crate::events::EventAction;
use crate::report::Report;

/// Width of a time bucket, µs.
pub const BUCKET_US: i64 = 100_000;
/// A pair more than this far apart is out of sync, ms.
pub const OUT_OF_SYNC_MS: f64 = 1.0;
/// How long every pair must stay in sync to count as back, µs.
pub const STAY_US: i64 = 2_000_000;
/// An offset that moves further than this against the true latency during a mute,
/// silence, noise or volume change is a false correction, ms.
pub const FALSE_CORRECTION_MS: f64 = 0.2;

/// What one event did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventReport {
    /// When, s.
    pub at_s: f64,
    /// What (`latency_ms`, `muted`, `network_outage_s`, ...).
    pub kind: String,
    /// To which device (`null`: the network, the source or the transmitter).
    pub device: Option<String>,
    /// See the module docs, s.
    pub reconverge_s: Option<f64>,
    /// See the module docs, ms.
    pub worst_pairwise_ms: Option<f64>,
    /// See the module docs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub false_corrections: Option<bool>,
    /// See the module docs, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_offset_move_ms: Option<f64>,
    /// See the module docs, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub false_correction_ms: Option<f64>,
    /// Playout jumps from the event to the next, all devices.
    pub jumps: u64,
    /// Underruns from the event to the next, all devices.
    pub underruns: u64,
}

/// Drift reports of one device.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ReportCounts {
    /// Device.
    pub device: String,
    /// Made by the receiver (over all its restarts; the controller's counts are over
    /// all of its restarts too).
    pub made: u64,
    /// Used by the controller (since its last start).
    pub used: u64,
    /// Ignored (no estimate, low confidence, out of range).
    pub ignored: u64,
    /// Rejected as outliers.
    pub outliers: u64,
    /// Used as latency steps, followed at once.
    pub steps: u64,
    /// Coarse estimates (bass only) among them.
    pub coarse: u64,
}

impl ReportCounts {
    /// Adds a controller's counts of this device (over one run of the controller).
    pub fn add(&mut self, d: &syncstream_transmitter::controller::DeviceSync) {
        self.used += d.used;
        self.ignored += d.ignored;
        self.outliers += d.outliers;
        self.steps += d.steps;
        self.coarse += d.coarse;
    }
}

/// One device's offset at a sample time: the ramp its receiver follows (`None` while
/// it is not running), and the transmitter time of the sample, µs.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// The offset (and its rate) in effect.
    pub ramp: Option<OffsetRamp>,
    /// Transmitter (room) time, µs.
    pub tx_us: f64,
    /// The device's true output latency then, ms.
    pub true_latency_ms: f64,
}

/// Counters of one device: (reports made, underruns, jumps, offsets applied).
pub type Totals = (u64, u64, u64, u64);

/// What the simulator records for the event report.
#[derive(Debug)]
pub struct EveningLog {
    events: Vec<(f64, Option<usize>, EventAction)>,
    n: usize,
    origin_us: i64,
    /// bucket → per device (sum of residual ms, count).
    buckets: BTreeMap<i64, Vec<(f64, u32)>>,
    offsets: Vec<(i64, Vec<Sample>)>,
    marks: Vec<Option<(i64, Vec<Totals>)>>,
    end: Option<(i64, Vec<Totals>)>,
}

impl EveningLog {
    /// A log for `events` (at s, device, action) of `n` devices; the run starts at room
    /// time `origin_us`.
    pub fn new(events: Vec<(f64, Option<usize>, EventAction)>, n: usize, origin_us: i64) -> Self {
        let marks = vec![None; events.len()];
        Self {
            events,
            n,
            origin_us,
            buckets: BTreeMap::new(),
            offsets: Vec::new(),
            marks,
            end: None,
        }
    }

    /// Event `k` happened at room time `t`, with these counters.
    pub fn mark(&mut self, k: usize, t: i64, totals: Vec<Totals>) {
        if let Some(m) = self.marks.get_mut(k) {
            *m = Some((t, totals));
        }
    }

    /// The run ended at `t` with these counters.
    pub fn finish(&mut self, t: i64, totals: Vec<Totals>) {
        self.end = Some((t, totals));
    }

    /// Adds ground truth (residual = emission − (PTS + playout delay)).
    pub fn add_truth(&mut self, samples: &[TruthSample], playout_delay_us: f64) {
        for s in samples {
            let residual_ms = (s.emit_room_us - (s.source_pts_us + playout_delay_us)) / 1000.0;
            let b = (s.block_room_us as i64 - self.origin_us).div_euclid(BUCKET_US);
            let v = self
                .buckets
                .entry(b)
                .or_insert_with(|| vec![(0.0, 0); self.n]);
            if let Some(e) = v.get_mut(s.device) {
                e.0 += residual_ms;
                e.1 += 1;
            }
        }
    }

    /// Adds every device's offset error at room time `t`.
    pub fn add_offsets(&mut self, t: i64, samples: Vec<Sample>) {
        self.offsets.push((t, samples));
    }

    /// Per bucket (start µs from origin): the largest pairwise error among the devices
    /// playing, and whether all were playing.
    fn pairwise(&self) -> Vec<(i64, Option<f64>, bool)> {
        self.buckets
            .iter()
            .map(|(&b, v)| {
                let r: Vec<f64> = v
                    .iter()
                    .filter(|(_, c)| *c > 0)
                    .map(|(s, c)| s / *c as f64)
                    .collect();
                let mut m: Option<f64> = None;
                for i in 0..r.len() {
                    for j in i + 1..r.len() {
                        let e = (r[i] - r[j]).abs();
                        m = Some(m.map_or(e, |x| x.max(e)));
                    }
                }
                (b * BUCKET_US, m, r.len() == self.n)
            })
            .collect()
    }

    /// Every pair's error of the devices playing, per bucket from `from_us` (from
    /// origin) on, ms.
    fn pair_errors(&self, from_us: i64) -> Vec<f64> {
        let mut out = Vec::new();
        for v in self
            .buckets
            .range(from_us.div_euclid(BUCKET_US)..)
            .map(|(_, v)| v)
        {
            let r: Vec<f64> = v
                .iter()
                .filter(|(_, c)| *c > 0)
                .map(|(s, c)| s / *c as f64)
                .collect();
            for i in 0..r.len() {
                for j in i + 1..r.len() {
                    out.push(r[i] - r[j]);
                }
            }
        }
        out
    }

    /// The first time at or after `from_us` (from origin) from which every pair stays
    /// within 1 ms, all playing, for [`STAY_US`], before `until_us`.
    fn back_in_sync(
        series: &[(i64, Option<f64>, bool)],
        from_us: i64,
        until_us: i64,
    ) -> Option<i64> {
        let mut start: Option<i64> = None;
        for &(t, m, all) in series.iter().filter(|(t, _, _)| *t >= from_us) {
            let ok = all && m.is_some_and(|m| m < OUT_OF_SYNC_MS);
            if ok {
                let s = *start.get_or_insert(t);
                if t + BUCKET_US - s >= STAY_US {
                    return (s < until_us).then_some(s);
                }
            } else {
                start = None;
                if t >= until_us {
                    return None;
                }
            }
        }
        None
    }

    /// Adds the event reports, `seconds_above_1ms` and the report counts to `report`.
    pub fn attach(
        &self,
        report: &mut Report,
        totals: &[Totals],
        controller: &BTreeMap<String, ReportCounts>,
    ) {
        let series = self.pairwise();
        let end_us = self.end.as_ref().map_or(0, |(t, _)| t - self.origin_us);
        // Overall: seconds out of sync after the first convergence.
        if let Some(first) = Self::back_in_sync(&series, 0, end_us) {
            let mut bad = std::collections::BTreeSet::new();
            for &(t, m, _) in &series {
                if t >= first && m.is_some_and(|m| m > OUT_OF_SYNC_MS) {
                    bad.insert(t / 1_000_000);
                }
            }
            report.seconds_above_1ms = Some(bad.len() as f64);
            report.pairwise_evening_ms =
                syncstream_shared::stats::ErrorSummary::of_abs(&self.pair_errors(first));
        }
        for (k, &(at_s, device, action)) in self.events.iter().enumerate() {
            let start = (at_s * 1e6) as i64;
            let next = self
                .events
                .get(k + 1)
                .map_or(end_us, |(s, _, _)| ((s * 1e6) as i64).max(start));
            let reference = start
                + match action {
                    EventAction::Outage(s) => (s * 1e6) as i64,
                    EventAction::Restart => RECEIVER_RESTART_US,
                    EventAction::TransmitterRestart => TRANSMITTER_RESTART_US,
                    _ => 0,
                };
            let window: Vec<_> = series
                .iter()
                .filter(|(t, _, _)| (start..next.max(reference + STAY_US)).contains(t))
                .copied()
                .collect();
            let disturbed = window
                .iter()
                .any(|(_, m, all)| !all || m.is_some_and(|m| m >= OUT_OF_SYNC_MS));
            let back =
                Self::back_in_sync(&series, reference.max(start), next.max(reference + STAY_US));
            let reconverge_s = if !disturbed {
                Some(0.0)
            } else {
                back.map(|b| ((b - reference) as f64 / 1e6).max(0.0))
            };
            let until = back.unwrap_or(next);
            let worst = window
                .iter()
                .filter(|(t, _, _)| *t <= until)
                .filter_map(|(_, m, _)| *m)
                .reduce(f64::max);
            // False corrections during a span that must not move any offset.
            let span = match action {
                EventAction::Muted(true) => Some((
                    start,
                    self.events[k + 1..]
                        .iter()
                        .find(|(_, d, a)| *d == device && *a == EventAction::Muted(false))
                        .map_or(next, |(s, _, _)| (s * 1e6) as i64),
                )),
                EventAction::Silence(s) => Some((start, start + (s * 1e6) as i64)),
                EventAction::Noise { duration_s, .. } => {
                    Some((start, start + (duration_s * 1e6) as i64))
                }
                EventAction::Volume(_) => Some((start, next)),
                _ => None,
            };
            let moved = span.map(|(a, b)| self.max_move(device, a, b));
            let counters = |m: Option<&(i64, Vec<Totals>)>| m.map(|(_, v)| v.clone());
            let from = counters(self.marks[k].as_ref());
            let to = self
                .marks
                .get(k + 1)
                .and_then(|m| counters(m.as_ref()))
                .or_else(|| Some(totals.to_vec()));
            let diff = |f: fn(&Totals) -> u64| match (&from, &to) {
                (Some(a), Some(b)) => a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| f(y).saturating_sub(f(x)))
                    .sum(),
                _ => 0,
            };
            report.events.push(EventReport {
                at_s,
                kind: action.kind().to_string(),
                device: device.and_then(|d| report.devices.get(d).map(|r| r.name.clone())),
                reconverge_s,
                worst_pairwise_ms: worst,
                false_corrections: moved.map(|(_, harm)| harm > FALSE_CORRECTION_MS),
                max_offset_move_ms: moved.map(|(m, _)| m),
                false_correction_ms: moved.map(|(_, harm)| harm),
                jumps: diff(|t| t.2),
                underruns: diff(|t| t.1),
            });
        }
        for (i, d) in report.devices.iter().enumerate() {
            let c = controller.get(&d.name);
            report.drift_reports.push(ReportCounts {
                device: d.name.clone(),
                made: totals.get(i).map_or(0, |t| t.0),
                used: c.map_or(0, |c| c.used),
                ignored: c.map_or(0, |c| c.ignored),
                outliers: c.map_or(0, |c| c.outliers),
                steps: c.map_or(0, |c| c.steps),
                coarse: c.map_or(0, |c| c.coarse),
            });
        }
    }

    /// How far the offset of `device` (every device when `None`) was corrected over
    /// `from_us..until_us` (µs from origin), and how much further from the true latency
    /// the corrections took it than no correction would have (see the module docs),
    /// ms.
    fn max_move(&self, device: Option<usize>, from_us: i64, until_us: i64) -> (f64, f64) {
        let in_span: Vec<&(i64, Vec<Sample>)> = self
            .offsets
            .iter()
            .filter(|(t, _)| (from_us..=until_us).contains(&(t - self.origin_us)))
            .collect();
        let Some(first) = in_span.first() else {
            return (0.0, 0.0);
        };
        let devices: Vec<usize> = match device {
            Some(d) => vec![d],
            None => (0..self.n).collect(),
        };
        let (mut moved, mut harm) = (0.0f64, 0.0f64);
        for d in devices {
            let Some(base) = first.1.get(d).and_then(|s| s.ramp) else {
                continue;
            };
            for (_, v) in &in_span {
                let Some(s) = v.get(d) else { continue };
                let Some(r) = s.ramp else { continue };
                // Without corrections the offset would have gone on at its rate (the
                // controller keeps it alive while the device cannot measure).
                let uncorrected =
                    base.offset_ms + base.rate_ms_per_s * (s.tx_us - base.ref_us) / 1e6;
                let now = r.at_ms(s.tx_us);
                moved = moved.max((now - uncorrected).abs());
                harm = harm
                    .max((now - s.true_latency_ms).abs() - (uncorrected - s.true_latency_ms).abs());
            }
        }
        (moved, harm)
    }
}
