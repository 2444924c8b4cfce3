//! Streaming conversion of interleaved audio at any rate and channel count to
//! interleaved stereo at the stream rate, with rubato's FFT resampler fed in
//! fixed input chunks (memory stays bounded whatever the length of the source).

use std::collections::VecDeque;

use anyhow::anyhow;
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};
use syncstream_audio::decode::MAX_SAMPLE_MAGNITUDE;
use syncstream_shared::time::STREAM_SAMPLE_RATE;

/// Input frames per resampler call.
const CHUNK_FRAMES: usize = 1024;
/// Output channels (interleaved stereo).
const CH: usize = 2;

/// Appends `frames` of `input` (interleaved, `channels` channels) to `out` as
/// interleaved stereo: mono is duplicated; two or more channels fold to
/// left = mean of the even channels, right = mean of the odd channels (the
/// convention of `DecodedAudio::stereo_interleaved`). Non-finite samples become 0,
/// samples beyond ±[`MAX_SAMPLE_MAGNITUDE`] are clamped to it (a float file or pipe may
/// hold anything; samples near `f32::MAX` overflowed the resampler, which panicked).
pub fn fold_to_stereo(input: &[f32], channels: usize, out: &mut Vec<f32>) {
    let clean = |v: f32| {
        if v.is_finite() {
            v.clamp(-MAX_SAMPLE_MAGNITUDE, MAX_SAMPLE_MAGNITUDE)
        } else {
            0.0
        }
    };
    match channels {
        0 => {}
        1 => {
            for &s in input {
                out.push(clean(s));
                out.push(clean(s));
            }
        }
        2 => out.extend(input.iter().map(|&v| clean(v))),
        c => {
            let n_left = c.div_ceil(2) as f32;
            let n_right = (c / 2) as f32;
            for frame in input.chunks_exact(c) {
                let (mut l, mut r) = (0.0f32, 0.0f32);
                for (k, &v) in frame.iter().enumerate() {
                    if k % 2 == 0 {
                        l += clean(v);
                    } else {
                        r += clean(v);
                    }
                }
                out.push(l / n_left);
                out.push(r / n_right);
            }
        }
    }
}

/// Lowest source sample rate, Hz.
pub const MIN_SOURCE_RATE_HZ: u32 = 1_000;
/// Highest source sample rate, Hz.
pub const MAX_SOURCE_RATE_HZ: u32 = 768_000;

/// Converts a stream of interleaved stereo blocks at `from_hz` to interleaved
/// stereo at [`STREAM_SAMPLE_RATE`]. The resampler's delay is trimmed, so output
/// frame `k` lines up with input time `k / 48 kHz`, and [`StreamResampler::finish`]
/// flushes the tail so the output has `ceil(input × 48000 / from_hz)` frames.
pub struct StreamResampler {
    from_hz: u32,
    rs: Option<Fft<f32>>,
    pending: Vec<f32>,
    out_buf: Vec<f32>,
    fifo: VecDeque<f32>,
    skip_frames: usize,
    in_frames: u64,
    out_frames: u64,
    finished: bool,
}

impl StreamResampler {
    /// A converter from stereo at `from_hz` (Hz) to stereo at 48 kHz.
    ///
    /// Errors: `from_hz` outside [`MIN_SOURCE_RATE_HZ`]..=[`MAX_SOURCE_RATE_HZ`] (the
    /// message gives the range), or the resampler cannot be built.
    pub fn new(from_hz: u32) -> anyhow::Result<Self> {
        if !(MIN_SOURCE_RATE_HZ..=MAX_SOURCE_RATE_HZ).contains(&from_hz) {
            return Err(anyhow!(
                "cannot resample from {from_hz} Hz (sources may have {MIN_SOURCE_RATE_HZ} to \
                 {MAX_SOURCE_RATE_HZ} Hz)"
            ));
        }
        let rs = if from_hz == STREAM_SAMPLE_RATE {
            None
        } else {
            Some(
                Fft::<f32>::new(
                    from_hz as usize,
                    STREAM_SAMPLE_RATE as usize,
                    CHUNK_FRAMES,
                    CH,
                    FixedSync::Input,
                )
                .map_err(|e| {
                    anyhow!("cannot resample {from_hz} Hz to {STREAM_SAMPLE_RATE} Hz: {e}")
                })?,
            )
        };
        let (skip_frames, out_max) = match &rs {
            Some(r) => (r.output_delay(), r.output_frames_max()),
            None => (0, 0),
        };
        Ok(Self {
            from_hz,
            rs,
            pending: Vec::with_capacity(CHUNK_FRAMES * CH * 2),
            out_buf: vec![0.0; out_max * CH],
            fifo: VecDeque::with_capacity(CHUNK_FRAMES * CH * 4),
            skip_frames,
            in_frames: 0,
            out_frames: 0,
            finished: false,
        })
    }

    /// Input rate, Hz.
    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    /// Output frames the whole input so far should give.
    fn target_out_frames(&self) -> u64 {
        (self.in_frames * STREAM_SAMPLE_RATE as u64).div_ceil(self.from_hz as u64)
    }

    /// Adds interleaved stereo samples (an odd trailing sample is ignored).
    pub fn push(&mut self, stereo: &[f32]) -> anyhow::Result<()> {
        let frames = stereo.len() / CH;
        self.in_frames += frames as u64;
        if self.rs.is_none() {
            self.fifo.extend(&stereo[..frames * CH]);
            self.out_frames += frames as u64;
            return Ok(());
        }
        self.pending.extend_from_slice(&stereo[..frames * CH]);
        let mut used = 0usize;
        while self.pending.len() - used >= CHUNK_FRAMES * CH {
            let (end, _) = self.process_chunk(used, CHUNK_FRAMES, None)?;
            used = end;
        }
        self.pending.drain(..used);
        Ok(())
    }

    /// Runs one resampler call on `pending[start..]` (`partial`: frames actually
    /// present when fewer than a chunk). Returns (end index in `pending`, frames out).
    fn process_chunk(
        &mut self,
        start: usize,
        frames: usize,
        partial: Option<usize>,
    ) -> anyhow::Result<(usize, usize)> {
        let Some(rs) = self.rs.as_mut() else {
            return Ok((start, 0));
        };
        let input = &self.pending[start..start + frames * CH];
        let adapter = InterleavedSlice::new(input, CH, frames)
            .map_err(|e| anyhow!("resampler input: {e}"))?;
        let out_frames_max = self.out_buf.len() / CH;
        let mut out = InterleavedSlice::new_mut(&mut self.out_buf, CH, out_frames_max)
            .map_err(|e| anyhow!("resampler output: {e}"))?;
        let idx = partial.map(|p| Indexing::new().partial_len(p));
        let (_, produced) = rs
            .process_into_buffer(&adapter, &mut out, idx.as_ref())
            .map_err(|e| {
                anyhow!(
                    "resampling {} Hz to {STREAM_SAMPLE_RATE} Hz: {e}",
                    self.from_hz
                )
            })?;
        let skip = self.skip_frames.min(produced);
        self.skip_frames -= skip;
        let keep = &self.out_buf[skip * CH..produced * CH];
        self.fifo.extend(keep);
        self.out_frames += (produced - skip) as u64;
        Ok((start + frames * CH, produced - skip))
    }

    /// Flushes the resampler at the end of the input; afterwards only
    /// [`StreamResampler::pop`] is useful.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        if self.rs.is_none() {
            return Ok(());
        }
        let target = self.target_out_frames();
        let rest = self.pending.len() / CH;
        self.pending.resize(CHUNK_FRAMES * CH, 0.0);
        self.process_chunk(0, CHUNK_FRAMES, Some(rest))?;
        // Zeros push the delayed tail out; bounded by the resampler's delay.
        let mut guard = 0;
        while self.out_frames < target && guard < 64 {
            self.pending.iter_mut().for_each(|v| *v = 0.0);
            self.process_chunk(0, CHUNK_FRAMES, Some(0))?;
            guard += 1;
        }
        self.pending.clear();
        if self.out_frames > target {
            let extra = (self.out_frames - target) as usize;
            let new_len = self.fifo.len().saturating_sub(extra * CH);
            self.fifo.truncate(new_len);
            self.out_frames = target;
        }
        Ok(())
    }

    /// Output samples (interleaved stereo) ready to pop.
    pub fn available(&self) -> usize {
        self.fifo.len()
    }

    /// Moves up to `out.len()` samples (whole frames) of output into `out`;
    /// returns how many samples were written.
    pub fn pop(&mut self, out: &mut [f32]) -> usize {
        let n = (out.len() / CH * CH).min(self.fifo.len());
        for (o, v) in out[..n].iter_mut().zip(self.fifo.drain(..n)) {
            *o = v;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_far_beyond_full_scale_are_clamped_not_a_panic() {
        // Found with the decoder fuzz target: ±3e38 overflowed the FFT resampler
        // ("Imaginary part of first value was non-zero", a panic in rubato).
        let mut stereo = Vec::new();
        fold_to_stereo(
            &[3.0e38, -3.0e38, f32::NAN, 0.5].repeat(2048),
            1,
            &mut stereo,
        );
        assert!(stereo.iter().all(|v| v.abs() <= MAX_SAMPLE_MAGNITUDE));
        let mut rs = StreamResampler::new(44_100).unwrap();
        rs.push(&stereo).unwrap();
        rs.finish().unwrap();
        let mut out = vec![0.0; rs.available()];
        rs.pop(&mut out);
        assert!(!out.is_empty() && out.iter().all(|v| v.is_finite()));
    }

    fn sine(rate: u32, freq: f32, frames: usize) -> Vec<f32> {
        (0..frames)
            .flat_map(|n| {
                let v = (2.0 * std::f32::consts::PI * freq * n as f32 / rate as f32).sin() * 0.5;
                [v, -v]
            })
            .collect()
    }

    fn run(rate: u32, input: &[f32], block: usize) -> Vec<f32> {
        let mut rs = StreamResampler::new(rate).unwrap();
        for b in input.chunks(block) {
            rs.push(b).unwrap();
        }
        rs.finish().unwrap();
        let mut out = vec![0.0; rs.available()];
        let n = rs.pop(&mut out);
        out.truncate(n);
        out
    }

    #[test]
    fn resamples_44k1_with_the_right_length_and_alignment() {
        let frames = 44_100 + 123;
        let x = sine(44_100, 440.0, frames);
        let y = run(44_100, &x, 999 * 2);
        let expected = (frames as u64 * 48_000).div_ceil(44_100) as usize;
        assert_eq!(y.len() / 2, expected);
        // Output time t matches input time t (delay trimmed).
        for k in [4_800usize, 20_000, 40_000] {
            let t = k as f32 / 48_000.0;
            let want = (2.0 * std::f32::consts::PI * 440.0 * t).sin() * 0.5;
            assert!(
                (y[2 * k] - want).abs() < 0.01,
                "{k}: {} vs {want}",
                y[2 * k]
            );
            assert!((y[2 * k + 1] + want).abs() < 0.01);
        }
    }

    #[test]
    fn passes_48k_through() {
        let x = sine(48_000, 1000.0, 5000);
        assert_eq!(run(48_000, &x, 777 * 2), x);
    }

    #[test]
    fn folds_channels() {
        let mut out = Vec::new();
        fold_to_stereo(&[0.5, -0.25], 1, &mut out);
        assert_eq!(out, [0.5, 0.5, -0.25, -0.25]);
        out.clear();
        fold_to_stereo(&[0.1, 0.2, 0.3, 0.4, 0.5, f32::NAN], 6, &mut out);
        assert!((out[0] - 0.3).abs() < 1e-6);
        assert!((out[1] - 0.2).abs() < 1e-6, "{out:?}");
    }

    /// Delay (output samples at 48 kHz) that best fits a sine of `f` Hz to `y`.
    fn fitted_delay(y: &[f32], f: f64) -> f64 {
        let mut best = (f64::MAX, 0.0);
        for i in -100..=100 {
            let d = i as f64 * 0.01;
            let e: f64 = (10_000..30_000)
                .map(|k| {
                    let t = (k as f64 - d) / 48_000.0;
                    let w = (2.0 * std::f64::consts::PI * f * t).sin() * 0.5;
                    (y[k] as f64 - w).powi(2)
                })
                .sum();
            if e < best.0 {
                best = (e, d);
            }
        }
        best.1
    }

    #[test]
    fn output_is_aligned_to_the_sample() {
        for (rate, f) in [(44_100u32, 3000.0f64), (8_000, 1500.0), (96_000, 5000.0)] {
            let x: Vec<f32> = (0..rate as usize)
                .flat_map(|n| {
                    let v = (2.0 * std::f64::consts::PI * f * n as f64 / rate as f64).sin() * 0.5;
                    [v as f32, v as f32]
                })
                .collect();
            let y = run(rate, &x, 4096);
            let left: Vec<f32> = y.iter().step_by(2).copied().collect();
            let d = fitted_delay(&left, f);
            assert!(d.abs() <= 0.05, "{rate} Hz: output delayed by {d} samples");
        }
    }
}
