//! `GET /api/v1/sync`: per device, the drift and the residual (drift minus the manual
//! adjustment: how far the sound sits from where it should) over the last minute and
//! the last hour, as p50/p95/max of their magnitudes; per group, the pairwise spread
//! (largest minus smallest residual of its devices, in 5 s bins) now and over the
//! same spans. Times are report times on the transmitter's clock.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use syncstream_shared::stats::percentile;

use super::state::{ControlState, ReportPoint};

/// Spans summarised: name and length, µs.
pub const SPANS: [(&str, i64); 2] = [("last_minute", 60_000_000), ("last_hour", 3_600_000_000)];
/// Bin of the group spread, µs.
pub const SPREAD_BIN_US: i64 = 5_000_000;

/// `{"n":..,"p50":..,"p95":..,"max":..}` of |values| (nulls when empty).
pub fn summary(values: &[f64]) -> Value {
    let mut mags: Vec<f64> = values.iter().map(|v| v.abs()).collect();
    mags.sort_by(f64::total_cmp);
    json!({
        "n": mags.len(),
        "p50": percentile(&mags, 50.0),
        "p95": percentile(&mags, 95.0),
        "max": mags.last(),
    })
}

fn spans_of(points: &[ReportPoint], now_us: i64, pick: fn(&ReportPoint) -> Option<f64>) -> Value {
    let mut out = serde_json::Map::new();
    for (name, len) in SPANS {
        let v: Vec<f64> = points
            .iter()
            .filter(|p| now_us - p.ts_us <= len)
            .filter_map(pick)
            .collect();
        out.insert(name.into(), summary(&v));
    }
    Value::Object(out)
}

fn spread(v: &[f64]) -> f64 {
    let max = v.iter().copied().fold(f64::MIN, f64::max);
    let min = v.iter().copied().fold(f64::MAX, f64::min);
    max - min
}

/// The pairwise spread of `devices` now, ms: the largest minus the smallest of their
/// latest residuals of the last 10 s; `None` with fewer than two.
pub fn spread_now_ms(state: &ControlState, devices: &[String], now_us: i64) -> Option<f64> {
    let latest: Vec<f64> = devices
        .iter()
        .filter_map(|d| state.live.get(d))
        .filter_map(|live| {
            live.history
                .iter()
                .rev()
                .find(|p| now_us - p.ts_us <= 10_000_000 && p.residual_ms.is_some())
                .and_then(|p| p.residual_ms)
        })
        .collect();
    (latest.len() >= 2).then(|| spread(&latest))
}

/// The largest [`spread_now_ms`] of any group, ms (`None`: no group has two devices
/// measured in the last 10 s).
pub fn worst_spread_now_ms(state: &ControlState, now_us: i64) -> Option<f64> {
    let mut members: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for d in state.devices() {
        members
            .entry(state.group_of(&d))
            .or_default()
            .push(d.clone());
    }
    members
        .values()
        .filter_map(|devs| spread_now_ms(state, devs, now_us))
        .reduce(f64::max)
}

/// The sync summary at transmitter time `now_us` (see the module docs).
pub fn sync_summary(state: &ControlState, now_us: i64) -> Value {
    let mut devices = serde_json::Map::new();
    for (name, live) in &state.live {
        let points: Vec<ReportPoint> = live.history.iter().copied().collect();
        devices.insert(
            name.clone(),
            json!({
                "reports": points.len(),
                "drift_ms": spans_of(&points, now_us, |p| p.drift_ms),
                "residual_ms": spans_of(&points, now_us, |p| p.residual_ms),
            }),
        );
    }
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in state.devices() {
        members
            .entry(state.group_of(&d).to_string())
            .or_default()
            .push(d);
    }
    let mut groups = serde_json::Map::new();
    for name in state.settings.groups.keys() {
        let devs = members.get(name).cloned().unwrap_or_default();
        // Mean residual per device per bin.
        let mut bins: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for d in &devs {
            let Some(live) = state.live.get(d) else {
                continue;
            };
            let mut per_bin: BTreeMap<i64, (f64, usize)> = BTreeMap::new();
            for p in &live.history {
                if let Some(r) = p.residual_ms {
                    let e = per_bin
                        .entry(p.ts_us.div_euclid(SPREAD_BIN_US))
                        .or_default();
                    e.0 += r;
                    e.1 += 1;
                }
            }
            for (b, (sum, n)) in per_bin {
                bins.entry(b).or_default().push(sum / n as f64);
            }
        }
        let mut spans = serde_json::Map::new();
        for (span, len) in SPANS {
            let v: Vec<f64> = bins
                .iter()
                .filter(|(b, vals)| now_us - (**b + 1) * SPREAD_BIN_US <= len && vals.len() >= 2)
                .map(|(_, vals)| spread(vals))
                .collect();
            spans.insert(span.into(), summary(&v));
        }
        groups.insert(
            name.clone(),
            json!({
                "devices": devs,
                "spread_ms": {
                    "now": spread_now_ms(state, &devs, now_us),
                    "last_minute": spans["last_minute"],
                    "last_hour": spans["last_hour"],
                },
            }),
        );
    }
    json!({ "now_us": now_us, "devices": devices, "groups": groups })
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstream_protocol::messages::{DriftReport, Status};

    #[test]
    fn spreads_and_percentiles() {
        let mut s = ControlState::default();
        for (d, r) in [("a", 0.1), ("b", -0.2)] {
            s.on_status(
                Status {
                    device: d.into(),
                    state: "playing".into(),
                    ..Default::default()
                },
                0,
            );
            for k in 0..24 {
                s.on_report(
                    DriftReport {
                        device: d.into(),
                        drift_ms: Some(r),
                        confidence: 0.9,
                        signal_strength_db: -30.0,
                        ts_us: k * 2_500_000,
                        applied_offset_ms: 0.0,
                        reason: None,
                        step: false,
                        uncertainty_ms: None,
                    },
                    k * 2_500_000,
                    0.0,
                );
            }
        }
        let v = sync_summary(&s, 60_000_000);
        let g = &v["groups"]["default"]["spread_ms"];
        assert!((g["now"].as_f64().unwrap() - 0.3).abs() < 1e-9, "{v}");
        assert!(
            (g["last_minute"]["max"].as_f64().unwrap() - 0.3).abs() < 1e-9,
            "{v}"
        );
        let a = &v["devices"]["a"]["residual_ms"]["last_minute"];
        assert!((a["p95"].as_f64().unwrap() - 0.1).abs() < 1e-9, "{v}");
        assert_eq!(v["devices"]["b"]["drift_ms"]["last_hour"]["n"], 24);
    }
}
