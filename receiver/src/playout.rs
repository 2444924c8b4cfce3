//! Playout scheduling: decides which source sample leaves the output when.
//!
//! Source sample `T` (a PTS on the transmitter clock) must leave this receiver's
//! output at transmitter time `T + playout_delay − buffer_offset`. For every block
//! the output asks for, we know when its first frame leaves the output (DAC time,
//! local clock), map that to transmitter time with clock sync, and so know the
//! *target* read position in the jitter buffer. The actual read position follows the
//! target:
//!
//! - the read rate is fed forward from clock sync (the local DAC's rate against the
//!   transmitter) and from the buffer offset's own rate (a device whose latency drifts),
//!   and the frames are resampled to it by [`DriftResampler`] (rubato, asynchronous
//!   polynomial): nothing is dropped or repeated;
//! - an error under [`JUMP_THRESHOLD_US`] is slewed away on top of that by reading
//!   slightly faster or slower (at most [`MAX_SLEW_PPM`], time constant
//!   [`SLEW_TIME_S`]), which is inaudible (a 1000 ppm pitch change is 1.7 cents);
//! - a larger error (start, a big offset change, a clock step) is a jump, hidden by a
//!   [`CROSSFADE_FRAMES`]-frame crossfade from the old to the new position (no click).
//!
//! Start, mute, volume, stop and running dry (a lost connection) ramp the gain over
//! [`GAIN_RAMP_FRAMES`] frames, so nothing clicks.
//!
//! The playout runs inside the render callback ([`crate::realtime`]): it holds its own
//! state, gets the clock mapping and the offset as copies, and reports each block's
//! error as a [`BlockOutcome`] for the control side's [`crate::playout_log`].

use syncstream_audio::RenderInfo;

use crate::clock_sync::ClockMapping;
use crate::jitter_buffer::JitterBuffer;
use crate::offset::OffsetRamp;
use crate::resampler::DriftResampler;

/// Errors above this are corrected by a jump, below by slewing, µs.
pub const JUMP_THRESHOLD_US: f64 = 2_000.0;
/// Largest rate change used for slewing, parts per million.
pub const MAX_SLEW_PPM: f64 = 1_000.0;
/// Time constant of the slew: an error `e` is read away at rate `e / SLEW_TIME_S`.
pub const SLEW_TIME_S: f64 = 0.25;
/// Length of the crossfade on a jump, frames (5 ms at 48 kHz).
pub const CROSSFADE_FRAMES: usize = 240;
/// Length of a gain ramp (mute, volume, stop), frames (10 ms at 48 kHz).
pub const GAIN_RAMP_FRAMES: usize = 480;
/// Longest block [`Playout::render`] renders at once, frames; the render callback
/// splits longer blocks (its scratch is allocated for this many).
pub const MAX_BLOCK_FRAMES: usize = 4096;
/// Channels the playout renders (the stream is stereo; receivers refuse others).
pub const PLAYOUT_CHANNELS: usize = 2;

/// Stream parameters from the transmitter's hello.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamParams {
    /// Stream rate, Hz.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: usize,
    /// PTS of source sample 0, µs (transmitter clock).
    pub epoch_us: i64,
    /// Decoded index = source index + this.
    pub codec_delay_samples: u32,
    /// Playout delay, µs.
    pub playout_delay_us: i64,
}

/// What one rendered block did (reported to the control side).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BlockOutcome {
    /// Playout error of the block (target − actual read position), µs; 0 after a jump.
    pub err_us: f64,
    /// The block jumped (or started) to its target.
    pub jumped: bool,
    /// Some of its frames were missing from the jitter buffer.
    pub missing: bool,
    /// It ran out of audio while playing: an underrun.
    pub underrun: bool,
    /// Frames rendered.
    pub frames: usize,
    /// Whether the block was rendered from a stream at all (params and clock known).
    pub scheduled: bool,
}

/// The playout scheduler of one receiver. Lives in the render callback: rendering
/// allocates nothing and locks nothing.
#[derive(Debug)]
pub struct Playout {
    params: Option<StreamParams>,
    offset: OffsetRamp,
    pos: Option<f64>,
    volume: f32,
    muted: bool,
    stopped: bool,
    gain: f32,
    /// Whether a block has been played from buffered audio since the stream (re)started
    /// or last ran dry; only then does missing audio count as an underrun.
    started: bool,
    old: Vec<f32>,
    resampler: DriftResampler,
}

impl Playout {
    /// A playout with buffer offset `offset_ms` (the device's expected latency).
    /// Allocates its resampler and scratch here.
    pub fn new(offset_ms: f64) -> Self {
        Self {
            params: None,
            offset: OffsetRamp::constant(offset_ms),
            pos: None,
            volume: 1.0,
            muted: false,
            stopped: false,
            gain: 0.0,
            started: false,
            old: vec![0.0; MAX_BLOCK_FRAMES * PLAYOUT_CHANNELS],
            resampler: DriftResampler::new(PLAYOUT_CHANNELS),
        }
    }

    /// Sets the stream parameters (on every connect); repositions on the next block.
    pub fn set_stream(&mut self, params: StreamParams) {
        self.pos = None;
        self.started = false;
        self.params = Some(params);
    }

    /// Stream parameters, once connected.
    pub fn stream(&self) -> Option<StreamParams> {
        self.params
    }

    /// The buffer offset ramp in effect.
    pub fn offset(&self) -> OffsetRamp {
        self.offset
    }

    /// Sets the buffer offset; playout follows by slewing, or by a jump when the step
    /// exceeds [`JUMP_THRESHOLD_US`]. A ramp with a non-finite field is ignored.
    pub fn set_offset(&mut self, ramp: OffsetRamp) {
        if ramp.offset_ms.is_finite() && ramp.rate_ms_per_s.is_finite() && ramp.ref_us.is_finite() {
            self.offset = ramp;
        }
    }

    /// Sets a constant buffer offset, ms.
    pub fn set_offset_ms(&mut self, offset_ms: f64) {
        self.set_offset(OffsetRamp::constant(offset_ms));
    }

    /// Sets the linear volume, clamped to 0..=1 (non-finite values are ignored).
    pub fn set_volume(&mut self, volume: f64) {
        if volume.is_finite() {
            self.volume = volume.clamp(0.0, 1.0) as f32;
        }
    }

    /// Mutes or unmutes.
    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    /// Stops (silence) or starts playing.
    pub fn set_stopped(&mut self, stopped: bool) {
        self.stopped = stopped;
    }

    /// Decoded-buffer position of the next frame to render, once playing.
    pub fn position(&self) -> Option<f64> {
        self.pos
    }

    /// The decoded-buffer position that should leave the output at local `dac_time_us`.
    pub fn target_position(&self, dac_time_us: i64, clock: &ClockMapping) -> Option<f64> {
        let p = self.params?;
        let tx_us = clock.tx_from_local(dac_time_us as f64);
        let pts_us = tx_us - p.playout_delay_us as f64 + self.offset.at_ms(tx_us) * 1000.0;
        let pos = (pts_us - p.epoch_us as f64) * p.sample_rate as f64 / 1e6
            + p.codec_delay_samples as f64;
        pos.is_finite().then_some(pos)
    }

    /// Renders one block into `out` (interleaved stereo, at most [`MAX_BLOCK_FRAMES`]
    /// frames; longer blocks render silence) whose first frame leaves the output at
    /// local `dac_time_us`, with the clock mapping `clock` (`None` before clock sync).
    /// See the module docs. Allocation-free.
    pub fn render(
        &mut self,
        out: &mut [f32],
        dac_time_us: i64,
        clock: Option<&ClockMapping>,
        jb: &JitterBuffer,
    ) -> (RenderInfo, BlockOutcome) {
        out.fill(0.0);
        let ch = PLAYOUT_CHANNELS;
        let n = out.len() / ch;
        let none = (RenderInfo::default(), BlockOutcome::default());
        let (Some(p), Some(clock)) = (self.params, clock) else {
            return none;
        };
        if n == 0 || n > MAX_BLOCK_FRAMES || p.channels != ch {
            return none;
        }
        let Some(target) = self.target_position(dac_time_us, clock) else {
            return none;
        };
        let fs = p.sample_rate as f64;
        let jump_samples = JUMP_THRESHOLD_US * fs / 1e6;
        let rs = &mut self.resampler;
        let mut outcome = BlockOutcome {
            frames: n,
            scheduled: true,
            ..Default::default()
        };
        let start = match self.pos {
            Some(pos) => pos,
            None => {
                outcome.jumped = true;
                rs.reset(target) as f64
            }
        };
        // Where the target moves per output frame: the clock's rate and the offset's rate.
        let tx_us = clock.tx_from_local(dac_time_us as f64);
        let feed_forward = (1.0 + clock.rate) * (1.0 + self.offset.rate_at(tx_us) / 1000.0);
        let err = target - start;
        let mut missing = false;
        let first_pos;
        if err.abs() > jump_samples {
            // Jump: crossfade from the old position to the target.
            outcome.jumped = true;
            let old = &mut self.old[..out.len()];
            missing |= rs.render(jb, feed_forward, old);
            let new_start = rs.reset(target) as f64;
            missing |= rs.render(jb, feed_forward, out);
            let fade = n.min(CROSSFADE_FRAMES);
            for i in 0..fade {
                let w = 0.5 - 0.5 * (std::f32::consts::PI * (i as f32 + 0.5) / fade as f32).cos();
                for c in 0..ch {
                    out[i * ch + c] = out[i * ch + c] * w + old[i * ch + c] * (1.0 - w);
                }
            }
            self.pos = Some(new_start + n as f64 * feed_forward);
            first_pos = new_start;
        } else {
            // Feed forward the rates, then slew the remaining error away.
            let max = MAX_SLEW_PPM * 1e-6;
            let rate = feed_forward + (err / (SLEW_TIME_S * fs)).clamp(-max, max);
            missing |= rs.render(jb, rate, out);
            self.pos = Some(start + n as f64 * rate);
            first_pos = start;
            if !outcome.jumped {
                outcome.err_us = err * 1e6 / fs;
            }
        }
        // Gain ramp towards volume; to 0 when muted, stopped, or about to run dry (a lost
        // connection fades out instead of clicking, and fades back in when audio returns).
        let ahead = jb.end() as f64 - self.pos.unwrap_or(f64::MAX);
        let running_dry = ahead < GAIN_RAMP_FRAMES as f64;
        let goal = if self.muted || self.stopped || running_dry {
            0.0
        } else {
            self.volume
        };
        let step = 1.0 / GAIN_RAMP_FRAMES as f32;
        for frame in out.chunks_exact_mut(ch) {
            if self.gain < goal {
                self.gain = (self.gain + step).min(goal);
            } else if self.gain > goal {
                self.gain = (self.gain - step).max(goal);
            }
            for s in frame {
                *s *= self.gain;
            }
        }
        outcome.missing = missing;
        // An underrun is running out of audio while playing (counted once per dry spell).
        outcome.underrun = missing && self.started && !self.stopped;
        self.started = !missing;
        let source_pts_us =
            p.epoch_us as f64 + (first_pos - p.codec_delay_samples as f64) * 1e6 / fs;
        (
            RenderInfo {
                source_pts_us: (!missing).then_some(source_pts_us),
            },
            outcome,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resampled values of a ramp in the tens of thousands are exact to f32 precision.
    fn close(got: f32, expect: f32) {
        assert!((got - expect).abs() < 0.02, "{got} vs {expect}");
    }

    /// Transmitter clock = local clock.
    const SAME: ClockMapping = ClockMapping {
        offset_us: 0.0,
        ref_local_us: 0.0,
        rate: 0.0,
    };

    /// A stereo ramp: frame i = (i, −i).
    fn ramp(frames: usize) -> JitterBuffer {
        let mut jb = JitterBuffer::new(2, 1_000_000);
        let x: Vec<f32> = (0..frames).flat_map(|i| [i as f32, -(i as f32)]).collect();
        jb.push(0, &x);
        jb
    }

    fn setup() -> (Playout, JitterBuffer) {
        let mut p = Playout::new(0.0);
        p.set_stream(StreamParams {
            sample_rate: 48_000,
            channels: 2,
            epoch_us: 0,
            codec_delay_samples: 0,
            playout_delay_us: 1_000_000,
        });
        (p, ramp(200_000))
    }

    #[test]
    fn plays_the_sample_due_at_the_dac_time() {
        let (mut p, jb) = setup();
        // DAC time 1.5 s, playout delay 1 s → source time 0.5 s = sample 24000.
        let mut out = vec![0.0; 960];
        let (info, o) = p.render(&mut out, 1_500_000, Some(&SAME), &jb);
        assert!(o.jumped && !o.missing);
        // The first block fades in from silence.
        assert!((out[0] - 24_000.0 / GAIN_RAMP_FRAMES as f32).abs() < 1e-3);
        close(out[2 * 479], 24_479.0);
        close(out[2 * 479 + 1], -24_479.0);
        assert!((info.source_pts_us.unwrap() - 500_000.0).abs() < 1.0);
        // Next block continues seamlessly.
        let (_, o) = p.render(&mut out, 1_510_000, Some(&SAME), &jb);
        assert!(!o.jumped && o.err_us.abs() < 1.0);
        close(out[0], 24_480.0);
        close(out[2 * 479], 24_959.0);
        // Without clock sync nothing can be scheduled.
        let (_, o) = p.render(&mut out, 1_520_000, None, &jb);
        assert!(!o.scheduled && out.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn a_big_offset_change_jumps_a_small_one_slews() {
        let (mut p, jb) = setup();
        let mut out = vec![0.0; 960];
        let mut t = 1_000_000;
        p.render(&mut out, t, Some(&SAME), &jb);
        // +100 ms offset: play 4800 samples further ahead, at once (after the crossfade).
        p.set_offset_ms(100.0);
        t += 10_000;
        let (_, o) = p.render(&mut out, t, Some(&SAME), &jb);
        assert!(o.jumped);
        close(out[2 * 479], (480 + 4800 + 479) as f32);
        // +0.5 ms: slewed over a few blocks, no jump, every block read at ≤ 1 + 1000 ppm
        // (measured over a block's 479 steps; a single step is blurred by f32 rounding).
        p.set_offset_ms(100.5);
        let mut last = out[2 * 479];
        let mut errs = Vec::new();
        for _ in 0..200 {
            t += 10_000;
            let (_, o) = p.render(&mut out, t, Some(&SAME), &jb);
            assert!(!o.jumped);
            errs.push(o.err_us);
            let d = out[0] - last;
            assert!((d - 1.0).abs() <= 0.01, "{d}");
            let rate = (out[2 * 479] - out[0]) as f64 / 479.0;
            assert!((rate - 1.0).abs() <= 0.001_05, "{rate}");
            last = out[2 * 479];
        }
        let expect = (t - 1_000_000) as f64 * 0.048 + 4824.0;
        assert!(
            (out[0] as f64 - expect).abs() < 1.0,
            "{} vs {expect}",
            out[0]
        );
        // The 0.5 ms error decays with SLEW_TIME_S: after 1.5 s, 500·e⁻⁶ ≈ 1 µs.
        assert!((errs[0] - 500.0).abs() < 15.0, "{}", errs[0]);
        assert!(errs.last().unwrap().abs() < 3.0);
    }

    #[test]
    fn an_offset_rate_is_fed_forward() {
        let (mut p, jb) = setup();
        // 0.2 ms/s from t = 1 s: after 3 s the target is 0.6 ms further.
        p.set_offset(OffsetRamp {
            offset_ms: 0.0,
            rate_ms_per_s: 0.2,
            ref_us: 1_000_000.0,
        });
        let mut out = vec![0.0; 960];
        let mut t = 1_000_000;
        let mut worst = 0.0f64;
        for k in 0..300 {
            let (_, o) = p.render(&mut out, t, Some(&SAME), &jb);
            if k > 0 {
                worst = worst.max(o.err_us.abs());
            }
            t += 10_000;
        }
        // Fed forward, not slewed: the error stays near zero all along.
        assert!(worst < 2.0, "{worst} µs");
        let expect = (t - 10_000) as f64 * 0.048 - 48_000.0 + 0.2 * 2.99 * 48.0;
        close(out[0], expect as f32);
    }

    #[test]
    fn missing_audio_is_an_underrun_and_silence() {
        let (mut p, full) = setup();
        let mut out = vec![1.0; 960];
        // Before any audio arrived, silence is not an underrun.
        let empty = JitterBuffer::new(2, 10);
        let (_, o) = p.render(&mut out, 1_000_000, Some(&SAME), &empty);
        assert!(o.missing && !o.underrun);
        p.render(&mut out, 1_010_000, Some(&SAME), &full);
        // Running dry after playing is, once per dry spell.
        let (info, o) = p.render(&mut out, 1_020_000, Some(&SAME), &empty);
        assert!(o.underrun);
        // (The resampler's interpolation history reaches a few frames into the block.)
        assert!(out[16..].iter().all(|&s| s == 0.0));
        assert_eq!(info.source_pts_us, None);
        let (_, o) = p.render(&mut out, 1_030_000, Some(&SAME), &empty);
        assert!(o.missing && !o.underrun);
    }

    #[test]
    fn fades_out_before_running_dry() {
        let (mut p, _) = setup();
        // 1.5 s of audio buffered; playback at t = 1.0 s reads sample 0 onwards.
        let mut jb = JitterBuffer::new(2, 1_000_000);
        jb.push(0, &vec![1.0; 2 * 72_000]);
        let mut out = vec![0.0; 960];
        let mut t = 1_000_000;
        let mut last = 0.0f32;
        let mut max_step = 0.0f32;
        let mut dry_blocks = 0;
        for _ in 0..200 {
            p.render(&mut out, t, Some(&SAME), &jb);
            for &x in out.iter().step_by(2) {
                max_step = max_step.max((x - last).abs());
                last = x;
            }
            if out.iter().all(|&x| x == 0.0) {
                dry_blocks += 1;
            }
            t += 10_000;
        }
        // It ran dry after 1.5 s of audio, without a step larger than the ramp's.
        assert!(dry_blocks > 0);
        assert!(
            max_step <= 1.0 / GAIN_RAMP_FRAMES as f32 + 1e-6,
            "{max_step}"
        );
    }

    #[test]
    fn mute_ramps_to_silence() {
        let (mut p, jb) = setup();
        let mut out = vec![0.0; 960];
        p.render(&mut out, 1_000_000, Some(&SAME), &jb);
        p.set_muted(true);
        p.render(&mut out, 1_010_000, Some(&SAME), &jb);
        assert!(out[0] > 0.0 && out[2 * 479] == 0.0);
        // no step larger than the ramp allows
        assert!(out[2] <= out[0] * 1.01 + 1.0);
    }
}
