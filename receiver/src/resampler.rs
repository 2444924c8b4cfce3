//! Drift-correcting resampler: reads the jitter buffer at a variable rate with rubato's
//! asynchronous polynomial resampler, so a receiver whose DAC runs at its own rate
//! plays the stream at the transmitter's rate without dropping or repeating samples.
//!
//! Positions are *decoded-buffer frame indices* (see [`crate::jitter_buffer`]). The
//! resampler is fed consecutive frames from the jitter buffer; output frame `k` after a
//! [`DriftResampler::reset`] at integer position `P` lies at input position
//! `P + Σ rateᵢ` over the frames before it, exactly (rubato steps its interpolation
//! index by `1 / ratio` per output frame and we set `ratio = 1 / rate` once per block,
//! without ramping inside a block). The caller can therefore keep the read position
//! itself, as [`crate::playout::Playout`] does.
//!
//! Interpolation: rubato's quintic polynomial through 6 neighbouring frames. The rate
//! stays within ±0.2 % of 1, so no anti-aliasing filter is needed (the band does not
//! change); quintic interpolation of 48 kHz audio is accurate to about −70 dB at
//! 5 kHz and costs ~20 multiply-adds per sample, cheap enough for a Pi Zero W.

use std::sync::OnceLock;

use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{Adjustable, Async, FixedAsync, PolynomialDegree, Resampler, Resizable};

use crate::jitter_buffer::JitterBuffer;

/// Frames the resampler reads: the jitter buffer in playout, a recording when the drift
/// detector puts a microphone window on the transmitter's time base.
pub trait FrameSource {
    /// Sample `c` of frame `index`, or `None` where there is no audio.
    fn sample(&self, index: i64, c: usize) -> Option<f32>;
}

impl FrameSource for JitterBuffer {
    fn sample(&self, index: i64, c: usize) -> Option<f32> {
        JitterBuffer::sample(self, index, c)
    }
}

/// A mono recording as a frame source (frame 0 = `samples[0]`).
#[derive(Debug, Clone, Copy)]
pub struct MonoSlice<'a>(pub &'a [f32]);

impl FrameSource for MonoSlice<'_> {
    fn sample(&self, index: i64, _c: usize) -> Option<f32> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.0.get(i).copied())
    }
}

/// Resamples a mono recording made on a clock whose rate error against the
/// transmitter's is `clock_rate` (transmitter µs per local µs, minus 1) onto the
/// transmitter's time base: output sample `k` is the sound at `k / fs` transmitter
/// seconds after the recording's first sample. Without this a 2 s window from a
/// 100 ppm crystal is stretched by 200 µs, which smears the correlation peak by as much.
/// Returns fewer samples than given when the clock is slow (none past the recording).
pub fn align_to_transmitter_clock(recording: &[f32], clock_rate: f64) -> Vec<f32> {
    if recording.is_empty() || !clock_rate.is_finite() || clock_rate.abs() >= 0.005 {
        return recording.to_vec();
    }
    // Input (local) frames per output (transmitter-time) frame.
    let rate = 1.0 / (1.0 + clock_rate);
    let n_out = (((recording.len() - 1) as f64) / rate).floor() as usize;
    let mut out = vec![0.0f32; n_out.min(recording.len())];
    let mut rs = DriftResampler::new(1);
    rs.reset(0.0);
    rs.render(&MonoSlice(recording), rate, &mut out);
    out
}

/// Largest relative rate the resampler accepts (±1 %: clock error plus slew is ≤ 0.2 %).
const MAX_RELATIVE_RATE: f64 = 1.01;
/// Frames fed before the restart position so that its interpolation window (6 frames
/// for the quintic) holds real audio.
const PREROLL_FRAMES: usize = 8;
/// Output frames per rubato call; larger blocks are rendered in pieces.
const MAX_CHUNK_FRAMES: usize = 1024;

/// A rubato resampler fed from the jitter buffer (see the module docs).
pub struct DriftResampler {
    rs: Async<f32>,
    channels: usize,
    input: Vec<Vec<f32>>,
    output: Vec<Vec<f32>>,
    /// Next jitter-buffer frame to feed; `None` before the first reset.
    next_input: Option<i64>,
    /// Output frame `k` after a reset lies at input position `first fed + k − lead_frames`.
    lead_frames: i64,
    /// Output frames still to be discarded after a reset (the pre-roll that fills the
    /// interpolation history with real frames instead of rubato's zeros).
    preroll: usize,
}

impl std::fmt::Debug for DriftResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftResampler")
            .field("channels", &self.channels)
            .field("next_input", &self.next_input)
            .field("lead_frames", &self.lead_frames)
            .finish()
    }
}

impl DriftResampler {
    /// A resampler for `channels` interleaved channels (≥ 1).
    ///
    /// Panics only if rubato refuses its fixed, valid construction parameters.
    pub fn new(channels: usize) -> Self {
        let channels = channels.max(1);
        let rs = Async::<f32>::new_poly(
            1.0,
            MAX_RELATIVE_RATE,
            PolynomialDegree::Quintic,
            MAX_CHUNK_FRAMES,
            channels,
            FixedAsync::Output,
        )
        .expect("fixed resampler parameters are valid");
        let mut me = Self {
            input: vec![vec![0.0; rs.input_frames_max()]; channels],
            output: vec![vec![0.0; MAX_CHUNK_FRAMES]; channels],
            rs,
            channels,
            next_input: None,
            lead_frames: 0,
            preroll: 0,
        };
        // The same for every resampler of this kind: measured by the first one.
        static LEAD_FRAMES: OnceLock<i64> = OnceLock::new();
        me.lead_frames = *LEAD_FRAMES.get_or_init(|| me.measure_lead());
        me.rs.reset();
        me
    }

    /// How far output frame `k` lies behind `k` input frames after a reset,
    /// measured (once per process) by passing a ramp (`x[i] = i`, which the polynomial reproduces
    /// exactly) so that it does not depend on rubato's internals.
    fn measure_lead(&mut self) -> i64 {
        self.rs.reset();
        let n_in = self.rs.input_frames_next();
        for ch in &mut self.input {
            for (i, x) in ch.iter_mut().enumerate().take(n_in) {
                *x = i as f32;
            }
        }
        let _ = self.rs.set_chunk_size(MAX_CHUNK_FRAMES);
        let input = SequentialSliceOfVecs::new(&self.input, self.channels, n_in)
            .expect("input scratch has the shape rubato asked for");
        let mut output =
            SequentialSliceOfVecs::new_mut(&mut self.output, self.channels, MAX_CHUNK_FRAMES)
                .expect("output scratch has the chunk's shape");
        self.rs
            .process_into_buffer(&input, &mut output, None)
            .expect("shapes checked above");
        // Output k = k − lead (late in the chunk, where the zero history plays no part).
        let k = MAX_CHUNK_FRAMES - 1;
        (k as f64 - self.output[0][k] as f64).round() as i64
    }

    /// Restarts at jitter-buffer frame `position` (rounded to a whole frame, which is
    /// returned): the next output frame is that input frame.
    pub fn reset(&mut self, position: f64) -> i64 {
        let p = position.round() as i64;
        self.rs.reset();
        // Feed from PREROLL_FRAMES before `p` and discard the outputs before `p`.
        self.next_input = Some(p - PREROLL_FRAMES as i64);
        self.preroll = (PREROLL_FRAMES as i64 + self.lead_frames).max(0) as usize;
        p
    }

    /// Interleaved channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Renders `out.len() / channels` interleaved frames, reading `rate` input frames per
    /// output frame (`rate` = 1 + clock rate error + slew, clamped to ±1 %). Frames the
    /// jitter buffer does not hold are read as silence; returns whether any was missing.
    /// Allocates nothing.
    pub fn render(&mut self, jb: &impl FrameSource, rate: f64, out: &mut [f32]) -> bool {
        let ch = self.channels;
        let Some(mut next) = self.next_input else {
            out.fill(0.0);
            return true;
        };
        let mut missing = false;
        if self.preroll > 0 {
            let _ = self.rs.set_resample_ratio(1.0, false);
            missing |= self.process(jb, &mut next, self.preroll);
            self.preroll = 0;
        }
        let ratio = (1.0 / rate).clamp(1.0 / MAX_RELATIVE_RATE, MAX_RELATIVE_RATE);
        let _ = self.rs.set_resample_ratio(ratio, false);
        for block in out.chunks_mut(MAX_CHUNK_FRAMES * ch) {
            let n = block.len() / ch;
            if n == 0 {
                continue;
            }
            if self.process(jb, &mut next, n) {
                missing = true;
            }
            for (i, frame) in block.chunks_exact_mut(ch).enumerate() {
                for (c, s) in frame.iter_mut().enumerate() {
                    *s = self.output[c][i];
                }
            }
        }
        self.next_input = Some(next);
        missing
    }

    /// Resamples `n` ≤ [`MAX_CHUNK_FRAMES`] frames into the output scratch, feeding from
    /// `next`, which it advances. Returns whether a frame was missing (or rubato failed,
    /// which the shapes here rule out; the scratch is then silent).
    fn process(&mut self, jb: &impl FrameSource, next: &mut i64, n: usize) -> bool {
        let ch = self.channels;
        let _ = self.rs.set_chunk_size(n);
        let n_in = self.rs.input_frames_next();
        let mut missing = false;
        for i in 0..n_in {
            for c in 0..ch {
                let s = jb.sample(*next + i as i64, c);
                missing |= s.is_none();
                self.input[c][i] = s.unwrap_or(0.0);
            }
        }
        *next += n_in as i64;
        let input = SequentialSliceOfVecs::new(&self.input, ch, n_in)
            .expect("input scratch has the shape rubato asked for");
        let mut output = SequentialSliceOfVecs::new_mut(&mut self.output, ch, n)
            .expect("output scratch holds a chunk");
        if self
            .rs
            .process_into_buffer(&input, &mut output, None)
            .is_err()
        {
            for o in &mut self.output {
                o[..n].fill(0.0);
            }
            return true;
        }
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp_buffer(frames: usize) -> JitterBuffer {
        let mut jb = JitterBuffer::new(2, frames);
        let x: Vec<f32> = (0..frames).flat_map(|i| [i as f32, -(i as f32)]).collect();
        jb.push(0, &x);
        jb
    }

    /// On a ramp the output equals the read position, so this checks the bookkeeping:
    /// every output frame lies at `P + Σ rate` exactly, across rate changes and block
    /// sizes.
    #[test]
    fn output_lies_at_the_accumulated_position() {
        let jb = ramp_buffer(100_000);
        let mut rs = DriftResampler::new(2);
        let mut pos = rs.reset(1000.4) as f64;
        assert_eq!(pos, 1000.0);
        let rates = [1.0, 1.0005, 0.9993, 1.000_123, 1.002];
        let mut out = vec![0.0f32; 2 * 1500];
        for (k, &rate) in rates.iter().cycle().take(40).enumerate() {
            let n = [480, 1500, 64, 1024][k % 4];
            let missing = rs.render(&jb, rate, &mut out[..2 * n]);
            assert!(!missing);
            for i in 0..n {
                let expect = pos + i as f64 * rate;
                // f32 ramp values up to ~10⁴: precision ~10⁻³ frame.
                assert!(
                    (out[2 * i] as f64 - expect).abs() < 1e-2,
                    "block {k} frame {i}: {} vs {expect}",
                    out[2 * i]
                );
                assert!((out[2 * i + 1] as f64 + expect).abs() < 1e-2);
            }
            pos += n as f64 * rate;
        }
    }

    /// A recording stretched by a +150 ppm clock is put back on the transmitter's grid.
    #[test]
    fn aligns_a_recording_to_the_transmitter_clock() {
        let clock_rate = 150e-6;
        // The transmitter-time signal is a ramp; the local clock records it at local
        // sample n = transmitter time n·(1 + rate).
        let rec: Vec<f32> = (0..96_000)
            .map(|n| n as f32 * (1.0 + clock_rate) as f32 * 0.01)
            .collect();
        let out = align_to_transmitter_clock(&rec, clock_rate);
        assert!(out.len() >= 95_990 && out.len() <= 96_000);
        for k in [10usize, 1000, 50_000, out.len() - 10] {
            assert!((out[k] - k as f32 * 0.01).abs() < 1e-3, "{k}: {}", out[k]);
        }
    }

    #[test]
    fn missing_frames_are_reported_and_silent() {
        let jb = ramp_buffer(1000);
        let mut rs = DriftResampler::new(2);
        rs.reset(900.0);
        let mut out = vec![1.0f32; 2 * 480];
        assert!(rs.render(&jb, 1.0, &mut out));
        assert_eq!(out[2 * 479], 0.0);
    }

    /// A sine resampled at a slightly different rate keeps its shape: the error against
    /// the exact sine at the accumulated position stays below −60 dB.
    #[test]
    fn resampled_sine_is_clean() {
        let fs = 48_000.0;
        let f = 3_000.0;
        let frames = 60_000;
        let mut jb = JitterBuffer::new(1, frames);
        let x: Vec<f32> = (0..frames)
            .map(|i| (2.0 * std::f64::consts::PI * f * i as f64 / fs).sin() as f32)
            .collect();
        jb.push(0, &x);
        let mut rs = DriftResampler::new(1);
        let mut pos = rs.reset(100.0) as f64;
        let rate = 1.000_15;
        let mut out = vec![0.0f32; 480];
        let mut err2 = 0.0;
        let mut sig2 = 0.0;
        for _ in 0..100 {
            rs.render(&jb, rate, &mut out);
            for (i, &y) in out.iter().enumerate() {
                let p = pos + i as f64 * rate;
                let exact = (2.0 * std::f64::consts::PI * f * p / fs).sin();
                err2 += (y as f64 - exact).powi(2);
                sig2 += exact * exact;
            }
            pos += 480.0 * rate;
        }
        let snr_db = 10.0 * (sig2 / err2).log10();
        assert!(snr_db > 60.0, "{snr_db:.1} dB");
    }
}
