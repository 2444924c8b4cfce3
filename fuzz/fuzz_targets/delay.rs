//! The delay estimator (`dsp/src/delay.rs` over `gcc.rs`, `peak.rs`,
//! `confidence.rs`, `decimate.rs`) on arbitrary audio: a reference and a recording of
//! up to `MAX_SAMPLES` raw f32 samples each (any bit pattern: NaN, infinities,
//! subnormals, ±3.4e38), an arbitrary lag search (any f64, NaN included), a sample
//! rate, weighting and the two-stage switch. Checks: no panic, and either an error or
//! an estimate whose numbers are finite: `delay_ms` inside the search range and the
//! signals' overlap, confidence in 0..=1, a coarse delay with a finite, non-negative
//! uncertainty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncstream_dsp::gcc::Weighting;
use syncstream_dsp::{DelayEstimator, LagSearch};

/// Longest reference or recording, samples (the receiver's windows are 4 s at
/// 48 kHz; short ones keep 10⁷ runs feasible and reach the same code).
const MAX_SAMPLES: usize = 2048;

/// The input's layout (little-endian), so seeds can be written by hand
/// (`fuzz/seeds.py`): byte 0 the sample rate (index into `RATES`), byte 1 the
/// weighting (`% 4`: PHAT, SCOT, SCOT-β, ML), byte 2 flags (bit 0 two-stage, bit 1
/// an expected lag, bit 2 a gate), f32 β, f64 min lag, f64 max lag, f64 expected
/// lag, f64 gate (ms), u16 reference length (samples, at most `MAX_SAMPLES`); then
/// the reference's f32 samples and the recording's (the rest, at most
/// `MAX_SAMPLES`).
const HEADER: usize = 3 + 4 + 4 * 8 + 2;
const RATES: [u32; 6] = [48_000, 44_100, 16_000, 8_000, 1, 0];

#[derive(Debug)]
struct Input {
    rate: u32,
    weighting: Weighting,
    two_stage: bool,
    search: LagSearch,
    reference: Vec<f32>,
    recording: Vec<f32>,
}

fn f64_at(d: &[u8], at: usize) -> f64 {
    f64::from_le_bytes(d[at..at + 8].try_into().unwrap())
}

fn samples(d: &[u8], max: usize) -> Vec<f32> {
    d.chunks_exact(4)
        .take(max)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

impl Input {
    fn parse(d: &[u8]) -> Option<Self> {
        if d.len() < HEADER {
            return None;
        }
        let flags = d[2];
        let beta = f32::from_le_bytes(d[3..7].try_into().unwrap());
        let weighting = match d[1] % 4 {
            0 => Weighting::Phat,
            1 => Weighting::Scot,
            2 => Weighting::ScotBeta(beta),
            _ => Weighting::Ml,
        };
        let search = LagSearch {
            min_lag_ms: f64_at(d, 7),
            max_lag_ms: f64_at(d, 15),
            expected_lag_ms: (flags & 2 != 0).then(|| f64_at(d, 23)),
            gate_ms: (flags & 4 != 0).then(|| f64_at(d, 31)),
        };
        let ref_len = (u16::from_le_bytes([d[39], d[40]]) as usize).min(MAX_SAMPLES);
        let body = &d[HEADER..];
        let split = (ref_len * 4).min(body.len());
        Some(Self {
            rate: RATES[d[0] as usize % RATES.len()],
            weighting,
            two_stage: flags & 1 != 0,
            search,
            reference: samples(&body[..split], MAX_SAMPLES),
            recording: samples(&body[split..], MAX_SAMPLES),
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let mut est = DelayEstimator::new(input.rate)
        .with_weighting(input.weighting)
        .with_two_stage(input.two_stage);
    let Ok(e) = est.estimate(&input.reference, &input.recording, &input.search) else {
        return;
    };
    assert!(
        e.confidence.is_finite() && (0.0..=1.0).contains(&e.confidence),
        "{e:?}"
    );
    assert!(!e.signal_strength_db.is_nan(), "{e:?}");
    if let Some(d) = e.delay_ms {
        assert!(d.is_finite(), "{e:?}");
        let ms = |n: usize| n as f64 * 1000.0 / input.rate as f64;
        // One sample of slack either side for the sub-sample refinement.
        let slack = ms(1) + 1e-9;
        assert!(
            d >= input.search.min_lag_ms - slack && d <= input.search.max_lag_ms + slack,
            "{d} ms outside the search {:?}",
            input.search
        );
        assert!(
            d > -ms(input.reference.len()) - slack && d < ms(input.recording.len()) + slack,
            "{d} ms outside the overlap"
        );
    } else {
        assert!(e.reason.is_some(), "no delay and no reason: {e:?}");
    }
    if let Some(c) = e.coarse {
        assert!(c.delay_ms.is_finite(), "{c:?}");
        assert!(
            c.uncertainty_ms.is_finite() && c.uncertainty_ms >= 0.0,
            "{c:?}"
        );
        assert!(
            c.confidence.is_finite() && (0.0..=1.0).contains(&c.confidence),
            "{c:?}"
        );
    }
});
