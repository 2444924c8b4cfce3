//! Auto-calibration from history: keeps each device's *settled* buffer offset over
//! time and, when it has differed from the device's profile (`base_latency_ms`) by
//! more than a threshold for long enough, rewrites the profile so the next start
//! begins where the device really is.
//!
//! The controller's buffer offset converges to the device's output latency (that is
//! what it is for), so a device that keeps settling, say, 9 ms away from its profile
//! has a profile that is 9 ms wrong — a TV switched to another picture mode, a
//! Bluetooth speaker with a different codec. A single measurement is not enough to
//! rewrite it: the deviation must hold, on the same side, for
//! [`HistoryConfig::min_duration_s`] of tracking, with at least
//! [`HistoryConfig::min_samples`] observations and no gap longer than
//! [`HistoryConfig::max_gap_s`]. The new base latency is the median of the run's
//! offsets; its uncertainty is their median absolute deviation (scaled to a σ).
//!
//! [`OffsetHistory`] is pure (fed with times and values, unit-tested on synthetic
//! histories); [`ProfileKeeper`] adds the profile files of a `--profiles-dir`: it
//! reads each device's base latency once, writes a proposal with
//! [`syncstream_calibration::profile_update::apply_record`] (atomic; a profile that
//! does not parse or is read-only is reported and left untouched) and records
//! `calibration.signal = "history"`.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use syncstream_calibration::profile_update::{apply_record, now_rfc3339, ProfileChange};
use syncstream_shared::profile::{CalibrationRecord, DeviceProfile};

/// When a settled offset is different enough, for long enough, to rewrite a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryConfig {
    /// Smallest |settled offset − base latency| that counts as a deviation, ms.
    pub threshold_ms: f64,
    /// How long the deviation must last, s of transmitter time.
    pub min_duration_s: f64,
    /// Fewest observations in the run.
    pub min_samples: usize,
    /// A gap between observations longer than this starts the run afresh, s.
    pub max_gap_s: f64,
}

impl Default for HistoryConfig {
    /// 2 ms for 10 minutes, at least 20 observations, gaps under 2 minutes.
    fn default() -> Self {
        Self {
            threshold_ms: 2.0,
            min_duration_s: 600.0,
            min_samples: 20,
            max_gap_s: 120.0,
        }
    }
}

/// A proposed new base latency for a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// Device name.
    pub device: String,
    /// New base latency: median settled offset over the run, ms.
    pub base_latency_ms: f64,
    /// Spread of the run: 1.4826 × median absolute deviation, ms.
    pub spread_ms: f64,
    /// Observations in the run.
    pub samples: usize,
    /// Length of the run, s.
    pub duration_s: f64,
}

#[derive(Debug, Default, Clone)]
struct Run {
    /// (transmitter time µs, settled offset ms) of the current deviation run.
    samples: VecDeque<(i64, f64)>,
    /// Sign of the deviation (+1: offset above the profile).
    side: f64,
}

/// Most devices whose history (and profile) is kept at once (the controller's bound).
pub use crate::controller::MAX_DEVICES;

/// Settled-offset history per device, for at most [`MAX_DEVICES`] devices (the one
/// fed longest ago is forgotten first); see the module docs.
#[derive(Debug, Default, Clone)]
pub struct OffsetHistory {
    cfg: HistoryConfig,
    runs: BTreeMap<String, Run>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

impl OffsetHistory {
    /// An empty history.
    pub fn new(cfg: HistoryConfig) -> Self {
        Self {
            cfg,
            runs: BTreeMap::new(),
        }
    }

    /// Records that `device` was settled at `offset_ms` at transmitter time `ts_us`
    /// while its profile says `base_latency_ms`. Returns a proposal when the deviation
    /// has lasted long enough (the run then starts afresh). Non-finite input and times
    /// going backwards are ignored.
    pub fn observe(
        &mut self,
        device: &str,
        ts_us: i64,
        offset_ms: f64,
        base_latency_ms: f64,
    ) -> Option<Proposal> {
        if !(offset_ms.is_finite() && base_latency_ms.is_finite()) {
            return None;
        }
        let cfg = self.cfg.clone();
        if !self.runs.contains_key(device) && self.runs.len() >= MAX_DEVICES {
            // Bounded: the run last fed longest ago makes room (drift reports for
            // thousands of made-up devices must not all be kept).
            if let Some(stalest) = self
                .runs
                .iter()
                .min_by_key(|(_, r)| r.samples.back().map_or(i64::MIN, |s| s.0))
                .map(|(d, _)| d.clone())
            {
                self.runs.remove(&stalest);
            }
        }
        let run = self.runs.entry(device.to_string()).or_default();
        let dev = offset_ms - base_latency_ms;
        if dev.abs() <= cfg.threshold_ms {
            run.samples.clear();
            return None;
        }
        let side = dev.signum();
        if let Some(&(last, _)) = run.samples.back() {
            if ts_us < last {
                return None;
            }
            let gap_s = (ts_us - last) as f64 / 1e6;
            if gap_s > cfg.max_gap_s || side != run.side {
                run.samples.clear();
            }
        }
        run.side = side;
        run.samples.push_back((ts_us, offset_ms));
        let first = run.samples.front().map_or(ts_us, |s| s.0);
        let duration_s = (ts_us - first) as f64 / 1e6;
        if duration_s < cfg.min_duration_s || run.samples.len() < cfg.min_samples {
            return None;
        }
        let mut v: Vec<f64> = run.samples.iter().map(|s| s.1).collect();
        let samples = v.len();
        let m = median(&mut v);
        let mut dev: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
        let spread_ms = 1.4826 * median(&mut dev);
        run.samples.clear();
        Some(Proposal {
            device: device.to_string(),
            base_latency_ms: m,
            spread_ms,
            samples,
            duration_s,
        })
    }

    /// Forgets a device's run (e.g. on `resync`).
    pub fn reset(&mut self, device: &str) {
        self.runs.remove(device);
    }
}

/// [`OffsetHistory`] over the profile files `<dir>/<device>.json`.
#[derive(Debug)]
pub struct ProfileKeeper {
    dir: PathBuf,
    history: OffsetHistory,
    /// Base latency per device, or why its profile cannot be used (reported once).
    bases: BTreeMap<String, Result<f64, String>>,
}

impl ProfileKeeper {
    /// Keeps the profiles in `dir`.
    pub fn new(dir: PathBuf, cfg: HistoryConfig) -> Self {
        Self {
            dir,
            history: OffsetHistory::new(cfg),
            bases: BTreeMap::new(),
        }
    }

    /// The profile file of `device`.
    pub fn path_of(&self, device: &str) -> PathBuf {
        self.dir.join(format!("{device}.json"))
    }

    /// Feeds one settled offset; when the history proposes a new base latency, writes
    /// it into the device's profile. Returns the change written, or an error saying
    /// why the profile was not (or cannot be) updated; `Ok(None)` when nothing is due.
    /// A device without a usable profile is skipped (its error is returned once).
    pub fn observe(
        &mut self,
        device: &str,
        ts_us: i64,
        offset_ms: f64,
    ) -> Result<Option<ProfileChange>, String> {
        if device.is_empty() || device.contains(['/', '\\']) || device.starts_with('.') {
            return Err(format!("'{device}' cannot name a profile file"));
        }
        if !self.bases.contains_key(device) && self.bases.len() >= MAX_DEVICES {
            // Bounded: forget one (it is read again from its file if it reports again).
            self.bases.pop_first();
        }
        let base = match self.bases.get(device) {
            Some(Ok(b)) => *b,
            Some(Err(_)) => return Ok(None),
            None => match DeviceProfile::load(&self.path_of(device)) {
                Ok(p) => {
                    self.bases.insert(device.to_string(), Ok(p.base_latency_ms));
                    p.base_latency_ms
                }
                Err(e) => {
                    let msg = format!("history: {e}; device {device} is not auto-calibrated");
                    self.bases.insert(device.to_string(), Err(msg.clone()));
                    return Err(msg);
                }
            },
        };
        let Some(p) = self.history.observe(device, ts_us, offset_ms, base) else {
            return Ok(None);
        };
        let record = CalibrationRecord {
            date: now_rfc3339(),
            latency_ms: p.base_latency_ms,
            uncertainty_ms: p.spread_ms,
            confidence: 1.0,
            signal: "history".into(),
        };
        match apply_record(&self.path_of(device), record) {
            Ok(change) => {
                self.bases.insert(device.to_string(), Ok(p.base_latency_ms));
                Ok(Some(change))
            }
            Err(e) => {
                // Do not retry every report: a read-only or broken profile stays so.
                self.bases.insert(device.to_string(), Err(e.to_string()));
                Err(format!("history: {e}"))
            }
        }
    }

    /// Forgets a device's run and cached base latency (re-read on the next report).
    pub fn reset(&mut self, device: &str) {
        self.history.reset(device);
        self.bases.remove(device);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    /// Feeds `offset(t)` every `step_s` from 0 to `until_s`; returns the proposals.
    fn feed(
        h: &mut OffsetHistory,
        base: f64,
        step_s: i64,
        until_s: i64,
        offset: impl Fn(i64) -> f64,
    ) -> Vec<(i64, Proposal)> {
        let mut out = Vec::new();
        let mut t = 0;
        while t <= until_s {
            if let Some(p) = h.observe("tv", t * S, offset(t), base) {
                out.push((t, p));
            }
            t += step_s;
        }
        out
    }

    #[test]
    fn a_lasting_deviation_proposes_the_median_after_ten_minutes() {
        let mut h = OffsetHistory::new(HistoryConfig::default());
        // Profile 70 ms; the TV settles at 79 ± 0.3 ms (a little noise).
        let props = feed(&mut h, 70.0, 5, 900, |t| {
            79.0 + 0.3 * ((t as f64) * 0.7).sin()
        });
        assert_eq!(props.len(), 1, "{props:?}");
        let (t, p) = &props[0];
        assert_eq!(*t, 600);
        assert!((p.base_latency_ms - 79.0).abs() < 0.1, "{p:?}");
        assert!(p.spread_ms < 0.5 && p.samples == 121, "{p:?}");
    }

    #[test]
    fn small_or_brief_or_alternating_deviations_do_not() {
        let cfg = HistoryConfig::default();
        // Within the threshold for an hour.
        let mut h = OffsetHistory::new(cfg.clone());
        assert!(feed(&mut h, 70.0, 5, 3600, |_| 71.9).is_empty());
        // 9 minutes off, then back: the run is reset.
        let mut h = OffsetHistory::new(cfg.clone());
        assert!(feed(&mut h, 70.0, 5, 3600, |t| if t % 600 < 540 {
            75.0
        } else {
            70.0
        })
        .is_empty());
        // Alternating sides every 5 minutes never lasts 10 minutes on one side.
        let mut h = OffsetHistory::new(cfg.clone());
        assert!(feed(&mut h, 70.0, 5, 3600, |t| if (t / 300) % 2 == 0 {
            75.0
        } else {
            65.0
        })
        .is_empty());
        // Too few observations (one every 2 minutes → fewer than 20 in 10 minutes)...
        let mut h = OffsetHistory::new(cfg.clone());
        assert!(feed(&mut h, 70.0, 100, 1200, |_| 75.0).is_empty());
        // ...and a gap longer than 2 minutes restarts the run: observations up to
        // 400 s, none for 3 minutes, then from 580 s: the run counts from 580 s.
        let mut h = OffsetHistory::new(cfg);
        let mut props = Vec::new();
        for t in (0..=400).step_by(5).chain((580..=1300).step_by(5)) {
            if h.observe("tv", t * S, 75.0, 70.0).is_some() {
                props.push(t);
            }
        }
        assert_eq!(props, vec![1180]);
        let mut h2 = h.clone();
        h2.reset("tv");
        assert!(h2.observe("tv", 0, 75.0, 70.0).is_none());
        // Non-finite input is ignored.
        assert!(h.observe("tv", 5000 * S, f64::NAN, 70.0).is_none());
    }

    #[test]
    fn a_wandering_device_gets_its_median() {
        let mut h = OffsetHistory::new(HistoryConfig::default());
        // Bluetooth: profile 200 ms, settles 230 ms wandering ±3 ms.
        let props = feed(&mut h, 200.0, 5, 700, |t| {
            230.0 + 3.0 * ((t as f64) / 97.0).sin()
        });
        assert_eq!(props.len(), 1);
        assert!((props[0].1.base_latency_ms - 230.0).abs() < 3.0);
    }

    #[test]
    fn keeper_updates_the_profile_once_and_leaves_bad_ones_alone() {
        let dir = tempfile::tempdir().unwrap();
        let tv = dir.path().join("tv.json");
        std::fs::write(&tv, r#"{"type":"hdmi","target":"TV","base_latency_ms":70}"#).unwrap();
        let broken = dir.path().join("cast.json");
        std::fs::write(&broken, r#"{"type":"chromecast","base_latency_ms":"#).unwrap();
        let ro = dir.path().join("bt.json");
        std::fs::write(&ro, r#"{"type":"bluetooth","base_latency_ms":200}"#).unwrap();
        let mut perm = std::fs::metadata(&ro).unwrap().permissions();
        perm.set_readonly(true);
        std::fs::set_permissions(&ro, perm).unwrap();
        let mut k = ProfileKeeper::new(dir.path().to_path_buf(), HistoryConfig::default());
        let mut changes = Vec::new();
        let mut errors = Vec::new();
        for i in 0..=130 {
            let t = i * 5 * S;
            for (d, off) in [
                ("tv", 82.5),
                ("cast", 260.0),
                ("bt", 240.0),
                ("nobody", 10.0),
            ] {
                match k.observe(d, t, off) {
                    Ok(Some(c)) => changes.push((d, c)),
                    Ok(None) => {}
                    Err(e) => errors.push(e),
                }
            }
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].0, "tv");
        let p = DeviceProfile::load(&tv).unwrap();
        assert_eq!(p.base_latency_ms, 82.5);
        assert_eq!(p.target, "TV");
        let rec = p.calibration.unwrap();
        assert_eq!(rec.signal, "history");
        // Each bad profile is reported once, and left as it was.
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("cast.json")));
        assert!(errors.iter().any(|e| e.contains("read-only")));
        assert!(errors.iter().any(|e| e.contains("nobody.json")));
        assert_eq!(
            std::fs::read_to_string(&broken).unwrap(),
            r#"{"type":"chromecast","base_latency_ms":"#
        );
        assert_eq!(
            std::fs::read_to_string(&ro).unwrap(),
            r#"{"type":"bluetooth","base_latency_ms":200}"#
        );
        assert!(k.observe("../x", 0, 1.0).is_err());
    }

    /// Issue 14: settled offsets of thousands of made-up devices are not all kept.
    #[test]
    fn histories_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut k = ProfileKeeper::new(dir.path().to_path_buf(), HistoryConfig::default());
        for n in 0..2000 {
            let _ = k.observe(&format!("fake{n}"), n, 80.0);
        }
        assert!(k.bases.len() <= MAX_DEVICES, "{}", k.bases.len());
        let mut h = OffsetHistory::new(HistoryConfig::default());
        for n in 0..2000 {
            h.observe(&format!("fake{n}"), n, 80.0, 70.0);
        }
        assert_eq!(h.runs.len(), MAX_DEVICES);
        assert!(h.runs.contains_key("fake1999") && !h.runs.contains_key("fake0"));
    }
}
