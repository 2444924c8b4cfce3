//! The microphone at the stream rate: converts microphone blocks captured at the
//! device's rate (an I²S microphone may only do 44.1 kHz) to the 48 kHz the drift loop
//! and calibration work at, on the control side (never in the capture callback).
//!
//! Rubato's synchronous FFT resampler (linear phase, fixed delay) is fed fixed input
//! chunks; its delay ([`rubato::Resampler::output_delay`], whole output frames) is
//! trimmed, so output frame `k` of a run of contiguous input lies at input time
//! `k / 48 kHz` exactly. ADC times stay exact: each output block is stamped from the
//! newest input block's ADC time, `T_b + k / 48 kHz − i_b / f_in`, where `i_b` is that
//! block's first input frame (the same "anchored to the newest block" rule as
//! [`crate::drift::MicRecorder`]). A gap or overlap in the input of more than 1 ms (the
//! capture restarted) starts a new run: the resampler is reset and its history
//! dropped. At 48 kHz the blocks pass through untouched.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use syncstream_shared::time::{samples_to_us, STREAM_SAMPLE_RATE};

/// Input frames per resampler call (23 ms at 44.1 kHz: the added latency of the
/// microphone path, which the timestamps account for).
pub const MIC_RESAMPLE_CHUNK: usize = 1024;
/// An input block starting this far from where the previous ended starts a new run, µs.
pub const MIC_GAP_US: i64 = 1000;

/// Converts mono microphone blocks at any rate to 48 kHz with exact ADC times.
pub struct MicResampler {
    from_hz: u32,
    rs: Option<Fft<f32>>,
    pending: Vec<f32>,
    out_buf: Vec<f32>,
    /// Output frames of the resampler's delay still to drop.
    skip: usize,
    /// Input frames given to `push` in this run.
    in_frames: u64,
    /// Output frames emitted in this run.
    out_frames: u64,
    /// The newest input block: (its first input frame in the run, its ADC time, µs).
    anchor: (u64, i64),
    /// Where the next input block should start, µs.
    next_adc_us: Option<i64>,
}

impl std::fmt::Debug for MicResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MicResampler")
            .field("from_hz", &self.from_hz)
            .field("in_frames", &self.in_frames)
            .field("out_frames", &self.out_frames)
            .finish()
    }
}

impl MicResampler {
    /// A converter from mono at `from_hz` to mono at 48 kHz.
    ///
    /// Errors: a rate of 0 or one rubato cannot convert (the message names it).
    pub fn new(from_hz: u32) -> Result<Self, String> {
        if from_hz == 0 {
            return Err("cannot resample a microphone at 0 Hz".into());
        }
        let rs = if from_hz == STREAM_SAMPLE_RATE {
            None
        } else {
            Some(
                Fft::<f32>::new(
                    from_hz as usize,
                    STREAM_SAMPLE_RATE as usize,
                    MIC_RESAMPLE_CHUNK,
                    1,
                    FixedSync::Input,
                )
                .map_err(|e| {
                    format!(
                        "cannot resample the microphone from {from_hz} Hz to {STREAM_SAMPLE_RATE} Hz: {e}"
                    )
                })?,
            )
        };
        let (skip, out_max) = rs
            .as_ref()
            .map_or((0, 0), |r| (r.output_delay(), r.output_frames_max()));
        Ok(Self {
            from_hz,
            rs,
            pending: Vec::with_capacity(MIC_RESAMPLE_CHUNK * 2),
            out_buf: vec![0.0; out_max],
            skip,
            in_frames: 0,
            out_frames: 0,
            anchor: (0, 0),
            next_adc_us: None,
        })
    }

    /// Input rate, Hz.
    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    /// The resampler's delay, µs at the output rate (0 at 48 kHz); trimmed, so the
    /// output timestamps already account for it.
    pub fn delay_us(&self) -> i64 {
        self.rs.as_ref().map_or(0, |r| {
            samples_to_us(r.output_delay() as i64, STREAM_SAMPLE_RATE)
        })
    }

    /// Starts a new run (after a gap in the input).
    fn restart(&mut self) {
        if let Some(rs) = self.rs.as_mut() {
            rs.reset();
            self.skip = rs.output_delay();
        }
        self.pending.clear();
        self.in_frames = 0;
        self.out_frames = 0;
    }

    /// Adds a block of mono samples whose first was taken at local `adc_time_us`, and
    /// hands every 48 kHz block now ready to `out` with the local ADC time of its
    /// first sample, µs.
    pub fn push(&mut self, block: &[f32], adc_time_us: i64, out: &mut impl FnMut(&[f32], i64)) {
        if self.rs.is_none() {
            out(block, adc_time_us);
            return;
        }
        if self
            .next_adc_us
            .is_some_and(|e| adc_time_us.saturating_sub(e).abs() > MIC_GAP_US)
        {
            self.restart();
        }
        self.next_adc_us =
            Some(adc_time_us.saturating_add(samples_to_us(block.len() as i64, self.from_hz)));
        self.anchor = (self.in_frames, adc_time_us);
        self.in_frames += block.len() as u64;
        self.pending.extend_from_slice(block);
        let mut used = 0;
        while self.pending.len() - used >= MIC_RESAMPLE_CHUNK {
            self.process(used, out);
            used += MIC_RESAMPLE_CHUNK;
        }
        self.pending.drain(..used);
    }

    /// Runs one chunk from `pending[start..]` and emits what survives the delay trim.
    fn process(&mut self, start: usize, out: &mut impl FnMut(&[f32], i64)) {
        let Some(rs) = self.rs.as_mut() else { return };
        let input = &self.pending[start..start + MIC_RESAMPLE_CHUNK];
        let out_len = self.out_buf.len();
        let (Ok(a_in), Ok(mut a_out)) = (
            InterleavedSlice::new(input, 1, MIC_RESAMPLE_CHUNK),
            InterleavedSlice::new_mut(&mut self.out_buf, 1, out_len),
        ) else {
            return;
        };
        let produced = match rs.process_into_buffer(&a_in, &mut a_out, None) {
            Ok((_, produced)) => produced,
            Err(e) => {
                tracing::warn!("microphone resampler: {e}");
                self.restart();
                return;
            }
        };
        let skip = self.skip.min(produced);
        self.skip -= skip;
        if produced > skip {
            let (i_b, t_b) = self.anchor;
            // Output frame k of the run is at input time k / 48 kHz (i128: exact).
            let k = self.out_frames as i128;
            let num = k * 1_000_000 * self.from_hz as i128
                - i_b as i128 * 1_000_000 * STREAM_SAMPLE_RATE as i128;
            let den = STREAM_SAMPLE_RATE as i128 * self.from_hz as i128;
            let rel_us = (num + den / 2).div_euclid(den); // rounded to the µs
            out(
                &self.out_buf[skip..produced],
                t_b.saturating_add(rel_us as i64),
            );
            self.out_frames += (produced - skip) as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Phase of a `freq` sinusoid in `x` (sampled at `rate`, first sample at time 0),
    /// as the time shift of a sine, µs.
    fn sine_shift_us(x: &[f32], rate: u32, freq: f64) -> f64 {
        let (mut s, mut c) = (0.0f64, 0.0f64);
        for (n, &v) in x.iter().enumerate() {
            let ph = 2.0 * std::f64::consts::PI * freq * n as f64 / rate as f64;
            s += v as f64 * ph.sin();
            c += v as f64 * ph.cos();
        }
        // x = sin(ω(t − d)) = sin ωt cos ωd − cos ωt sin ωd.
        let d = (-c).atan2(s);
        -d / (2.0 * std::f64::consts::PI * freq) * 1e6
    }

    /// Runs `seconds` of a 1 kHz sine captured at `rate` in blocks of `block`
    /// samples from ADC time `t0`, and returns the 48 kHz output with its times.
    fn run(rate: u32, block: usize, t0: i64) -> Vec<(i64, Vec<f32>)> {
        let mut rs = MicResampler::new(rate).unwrap();
        let x: Vec<f32> = (0..rate as usize)
            .map(|n| {
                (2.0 * std::f64::consts::PI * 1000.0 * (n as f64 / rate as f64)).sin() as f32 * 0.5
            })
            .collect();
        let mut got = Vec::new();
        for (k, b) in x.chunks(block).enumerate() {
            let t = t0 + samples_to_us((k * block) as i64, rate);
            rs.push(b, t, &mut |s: &[f32], t: i64| got.push((t, s.to_vec())));
        }
        got
    }

    #[test]
    fn the_timestamps_are_exact_after_resampling_from_44_1_khz() {
        let t0 = 1_000_000;
        let got = run(44_100, 441, t0);
        assert!(!got.is_empty());
        // Blocks follow on: each starts where the previous ended (within rounding).
        for w in got.windows(2) {
            let end = w[0].0 + samples_to_us(w[0].1.len() as i64, 48_000);
            assert!((w[1].0 - end).abs() <= 1, "{} vs {end}", w[1].0);
        }
        // The sine's phase in the output, measured from the stamped time of the first
        // output sample, is the input's: the delay is accounted for.
        let first_t = got[0].0;
        let all: Vec<f32> = got.iter().flat_map(|(_, s)| s.iter().copied()).collect();
        let shift = sine_shift_us(&all[4800..], 48_000, 1000.0);
        // The input's sine is at phase 0 at t0; the output's first sample at first_t.
        let expected = ((t0 - first_t) as f64 - 100_000.0).rem_euclid(1000.0);
        let err = (shift.rem_euclid(1000.0) - expected).abs();
        let err = err.min(1000.0 - err);
        assert!(
            err < 2.0,
            "phase error {err} µs (shift {shift}, expected {expected})"
        );
        assert_eq!(
            got[0].0, t0,
            "the delay is trimmed: output starts at input time 0"
        );
    }

    #[test]
    fn at_48_khz_blocks_pass_through() {
        let got = run(48_000, 480, 5_000);
        assert_eq!(got.len(), 100);
        assert_eq!(got[0].0, 5_000);
        assert_eq!(got[1].0, 15_000);
        assert_eq!(MicResampler::new(48_000).unwrap().delay_us(), 0);
    }

    #[test]
    fn a_gap_starts_a_new_run_with_exact_times() {
        let mut rs = MicResampler::new(44_100).unwrap();
        let mut got = Vec::new();
        let block = vec![0.1f32; 441];
        for k in 0..20 {
            rs.push(&block, k * 10_000, &mut |s: &[f32], t| {
                got.push((t, s.len()))
            });
        }
        got.clear();
        // The capture restarted 1 s later.
        for k in 0..20 {
            rs.push(&block, 1_200_000 + k * 10_000, &mut |s: &[f32], t| {
                got.push((t, s.len()))
            });
        }
        assert_eq!(got[0].0, 1_200_000);
    }

    #[test]
    fn a_zero_rate_is_an_error() {
        assert!(MicResampler::new(0).unwrap_err().contains("0 Hz"));
    }
}
