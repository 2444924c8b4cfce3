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

use std::collections::VecDeque;

use syncstream_audio::RenderInfo;

use crate::clock_sync::ClockSync;
use crate::jitter_buffer::JitterBuffer;
use crate::resampler::DriftResampler;

/// Errors above this are corrected by a jump, below by slewing, µs.
pub const JUMP_THRESHOLD_US: f64 = 2_000.0;
/// Largest rate change used for slewing, parts per million.
pub const MAX_SLEW_PPM: f64 = 1_000.0;
/// Time constant of the slew: an error `e` is read away at rate `e / SLEW_TIME_S`.
pub const SLEW_TIME_S: f64 = 0.25;
/// How much playout-error history is kept for the drift detector, µs.
pub const ERROR_LOG_SPAN_US: i64 = 10_000_000;
/// Length of the crossfade on a jump, frames (5 ms at 48 kHz).
pub const CROSSFADE_FRAMES: usize = 240;
/// Length of a gain ramp (mute, volume, stop), frames (10 ms at 48 kHz).
pub const GAIN_RAMP_FRAMES: usize = 480;

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

/// The playout error over a span of DAC time (see [`Playout::error_over`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlayoutError {
    /// Mean of (target − actual read position), µs: positive when playing behind the
    /// target, i.e. with an effective buffer offset smaller by this much.
    pub mean_us: f64,
    /// Largest minus smallest error over the span, µs.
    pub spread_us: f64,
}

/// Counters for status and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PlayoutStats {
    /// Blocks in which some frames were missing from the jitter buffer while playing.
    pub underruns: u64,
    /// Jumps (crossfaded repositionings).
    pub jumps: u64,
    /// Frames rendered.
    pub frames: u64,
}

/// The playout scheduler of one receiver.
#[derive(Debug)]
pub struct Playout {
    params: Option<StreamParams>,
    offset_ms: f64,
    /// The offset changes by this much per second of transmitter time, ms/s.
    offset_rate_ms_per_s: f64,
    /// Transmitter time at which `offset_ms` holds, µs.
    offset_ref_us: f64,
    pos: Option<f64>,
    volume: f32,
    muted: bool,
    stopped: bool,
    gain: f32,
    /// (local DAC time of a block's first frame µs, playout error µs), oldest first,
    /// over the last [`ERROR_LOG_SPAN_US`].
    error_log: VecDeque<(i64, f32)>,
    /// Local DAC time of the last jump or (re)start, µs.
    last_jump_us: Option<i64>,
    /// Whether a block has been played from buffered audio since the stream (re)started;
    /// only after that does missing audio count as an underrun.
    started: bool,
    stats: PlayoutStats,
    old: Vec<f32>,
    resampler: Option<DriftResampler>,
}

impl Playout {
    /// A playout with buffer offset `offset_ms` (the device's expected latency).
    pub fn new(offset_ms: f64) -> Self {
        Self {
            params: None,
            offset_ms,
            offset_rate_ms_per_s: 0.0,
            offset_ref_us: 0.0,
            pos: None,
            volume: 1.0,
            muted: false,
            stopped: false,
            gain: 0.0,
            error_log: VecDeque::new(),
            last_jump_us: None,
            started: false,
            stats: PlayoutStats::default(),
            old: Vec::new(),
            resampler: None,
        }
    }

    /// Sets the stream parameters (on every connect); repositions on the next block.
    pub fn set_stream(&mut self, params: StreamParams) {
        if self.params != Some(params) {
            self.pos = None;
            self.error_log.clear();
        }
        // Built here, not in the audio callback, so rendering allocates nothing.
        if self
            .resampler
            .as_ref()
            .is_none_or(|r| r.channels() != params.channels)
        {
            self.resampler = Some(DriftResampler::new(params.channels));
        }
        self.started = false;
        self.params = Some(params);
    }

    /// Stream parameters, once connected.
    pub fn stream(&self) -> Option<StreamParams> {
        self.params
    }

    /// The buffer offset last set, ms (at its reference time, see [`Playout::set_offset_ramp`]).
    pub fn offset_ms(&self) -> f64 {
        self.offset_ms
    }

    /// The buffer offset in effect at transmitter time `tx_us`, ms.
    pub fn offset_at_ms(&self, tx_us: f64) -> f64 {
        self.offset_ms + self.offset_rate_ms_per_s * (tx_us - self.offset_ref_us) / 1e6
    }

    /// Sets a constant buffer offset, ms; playout moves to it on the next blocks (slew
    /// or jump).
    pub fn set_offset_ms(&mut self, offset_ms: f64) {
        self.set_offset_ramp(offset_ms, 0.0, 0.0);
    }

    /// Sets a buffer offset that is `offset_ms` at transmitter time `ref_us` and changes by
    /// `rate_ms_per_s` per second (the controller follows a device whose latency drifts).
    /// Playout follows by slewing, or by a jump when the step exceeds
    /// [`JUMP_THRESHOLD_US`].
    pub fn set_offset_ramp(&mut self, offset_ms: f64, rate_ms_per_s: f64, ref_us: f64) {
        if !(offset_ms.is_finite() && rate_ms_per_s.is_finite() && ref_us.is_finite()) {
            return;
        }
        self.offset_ms = offset_ms;
        self.offset_rate_ms_per_s = rate_ms_per_s;
        self.offset_ref_us = ref_us;
    }

    /// Sets the linear volume, clamped to 0..=1.
    pub fn set_volume(&mut self, volume: f64) {
        if volume.is_finite() {
            self.volume = volume.clamp(0.0, 1.0) as f32;
        }
    }

    /// Volume, 0..=1.
    pub fn volume(&self) -> f64 {
        self.volume as f64
    }

    /// Mutes or unmutes.
    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    /// Muted?
    pub fn muted(&self) -> bool {
        self.muted
    }

    /// Stops (silence) or starts playing.
    pub fn set_stopped(&mut self, stopped: bool) {
        self.stopped = stopped;
    }

    /// Stopped?
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Decoded-buffer position of the next frame to render, once playing.
    pub fn position(&self) -> Option<f64> {
        self.pos
    }

    /// Counters.
    pub fn stats(&self) -> PlayoutStats {
        self.stats
    }

    /// The playout error over local DAC times `from_us..=to_us`: what the drift detector
    /// subtracts from the offset to know the offset really in effect while it recorded.
    ///
    /// `None` when the history does not reach back to `from_us` or playout jumped (or
    /// started) after it: the sound of that span does not follow one offset.
    pub fn error_over(&self, from_us: i64, to_us: i64) -> Option<PlayoutError> {
        if self.last_jump_us.is_none_or(|j| j >= from_us) {
            return None;
        }
        let first = self.error_log.front()?.0;
        if first > from_us {
            return None;
        }
        let (mut sum, mut n, mut lo, mut hi) = (0.0f64, 0usize, f64::MAX, f64::MIN);
        // The block that was playing at `from_us` started at or before it.
        let begin = self
            .error_log
            .partition_point(|&(t, _)| t <= from_us)
            .saturating_sub(1);
        for &(t, e) in self.error_log.range(begin..) {
            if t > to_us {
                break;
            }
            let e = e as f64;
            sum += e;
            n += 1;
            lo = lo.min(e);
            hi = hi.max(e);
        }
        (n > 0).then(|| PlayoutError {
            mean_us: sum / n as f64,
            spread_us: hi - lo,
        })
    }

    fn log_error(log: &mut VecDeque<(i64, f32)>, dac_time_us: i64, err_us: f64) {
        log.push_back((dac_time_us, err_us as f32));
        while log
            .front()
            .is_some_and(|&(t, _)| t < dac_time_us - ERROR_LOG_SPAN_US)
        {
            log.pop_front();
        }
    }

    /// The decoded-buffer position that should leave the output at local `dac_time_us`.
    pub fn target_position(&self, dac_time_us: i64, clock: &ClockSync) -> Option<f64> {
        let p = self.params?;
        let tx_us = clock.tx_from_local(dac_time_us as f64)?;
        let pts_us = tx_us - p.playout_delay_us as f64 + self.offset_at_ms(tx_us) * 1000.0;
        Some(
            (pts_us - p.epoch_us as f64) * p.sample_rate as f64 / 1e6
                + p.codec_delay_samples as f64,
        )
    }

    /// Renders one block into `out` (interleaved, the stream's channel count) whose first
    /// frame leaves the output at local `dac_time_us`. See the module docs.
    pub fn render(
        &mut self,
        out: &mut [f32],
        dac_time_us: i64,
        clock: &ClockSync,
        jb: &JitterBuffer,
    ) -> RenderInfo {
        out.fill(0.0);
        let (Some(p), Some(target)) = (self.params, self.target_position(dac_time_us, clock))
        else {
            return RenderInfo::default();
        };
        let ch = p.channels;
        let n = out.len() / ch;
        if n == 0 {
            return RenderInfo::default();
        }
        let fs = p.sample_rate as f64;
        let jump_samples = JUMP_THRESHOLD_US * fs / 1e6;
        // Exists whenever `params` does (built in `set_stream`).
        let Some(rs) = self.resampler.as_mut() else {
            return RenderInfo::default();
        };
        let start = match self.pos {
            Some(pos) => pos,
            None => {
                self.stats.jumps += 1;
                self.last_jump_us = Some(dac_time_us);
                rs.reset(target) as f64
            }
        };
        // Where the target moves per output frame: the clock's rate and the offset's rate.
        let feed_forward = (1.0 + clock.rate()) * (1.0 + self.offset_rate_ms_per_s / 1000.0);
        let err = target - start;
        let mut missing = false;
        let first_pos;
        if err.abs() > jump_samples {
            // Jump: crossfade from the old position to the target.
            self.stats.jumps += 1;
            self.last_jump_us = Some(dac_time_us);
            Self::log_error(&mut self.error_log, dac_time_us, 0.0);
            self.old.resize(out.len(), 0.0);
            let mut old = std::mem::take(&mut self.old);
            missing |= rs.render(jb, feed_forward, &mut old);
            let new_start = rs.reset(target) as f64;
            missing |= rs.render(jb, feed_forward, out);
            let fade = n.min(CROSSFADE_FRAMES);
            for i in 0..fade {
                let w = 0.5 - 0.5 * (std::f32::consts::PI * (i as f32 + 0.5) / fade as f32).cos();
                for c in 0..ch {
                    out[i * ch + c] = out[i * ch + c] * w + old[i * ch + c] * (1.0 - w);
                }
            }
            self.old = old;
            self.pos = Some(new_start + n as f64 * feed_forward);
            first_pos = new_start;
        } else {
            // Feed forward the rates, then slew the remaining error away.
            let max = MAX_SLEW_PPM * 1e-6;
            let rate = feed_forward + (err / (SLEW_TIME_S * fs)).clamp(-max, max);
            missing |= rs.render(jb, rate, out);
            self.pos = Some(start + n as f64 * rate);
            first_pos = start;
            Self::log_error(&mut self.error_log, dac_time_us, err * 1e6 / fs);
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
        self.stats.frames += n as u64;
        if missing && self.started && !self.stopped {
            self.stats.underruns += 1;
        }
        self.started |= !missing;
        let source_pts_us =
            p.epoch_us as f64 + (first_pos - p.codec_delay_samples as f64) * 1e6 / fs;
        RenderInfo {
            source_pts_us: (!missing).then_some(source_pts_us),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resampled values of a ramp in the tens of thousands are exact to f32 precision.
    fn close(got: f32, expect: f32) {
        assert!((got - expect).abs() < 0.02, "{got} vs {expect}");
    }

    fn setup() -> (Playout, ClockSync, JitterBuffer) {
        let mut cs = ClockSync::default();
        // transmitter clock = local clock
        cs.add_exchange(0, 0, 0, 0);
        let mut jb = JitterBuffer::new(1, 1_000_000);
        let ramp: Vec<f32> = (0..200_000).map(|i| i as f32).collect();
        jb.push(0, &ramp);
        let mut p = Playout::new(0.0);
        p.set_stream(StreamParams {
            sample_rate: 48_000,
            channels: 1,
            epoch_us: 0,
            codec_delay_samples: 0,
            playout_delay_us: 1_000_000,
        });
        (p, cs, jb)
    }

    #[test]
    fn plays_the_sample_due_at_the_dac_time() {
        let (mut p, cs, jb) = setup();
        // DAC time 1.5 s, playout delay 1 s → source time 0.5 s = sample 24000.
        let mut out = vec![0.0; 480];
        let info = p.render(&mut out, 1_500_000, &cs, &jb);
        // The first block fades in from silence.
        assert!((out[0] - 24_000.0 / GAIN_RAMP_FRAMES as f32).abs() < 1e-3);
        close(out[479], 24_479.0);
        assert!((info.source_pts_us.unwrap() - 500_000.0).abs() < 1.0);
        // Next block continues seamlessly.
        p.render(&mut out, 1_510_000, &cs, &jb);
        close(out[0], 24_480.0);
        close(out[479], 24_959.0);
    }

    #[test]
    fn a_big_offset_change_jumps_a_small_one_slews() {
        let (mut p, cs, jb) = setup();
        let mut out = vec![0.0; 480];
        let mut t = 1_000_000;
        p.render(&mut out, t, &cs, &jb);
        // +100 ms offset: play 4800 samples further ahead, at once (after the crossfade).
        p.set_offset_ms(100.0);
        t += 10_000;
        p.render(&mut out, t, &cs, &jb);
        close(out[479], (480 + 4800 + 479) as f32);
        assert_eq!(p.stats().jumps, 2);
        // +0.5 ms: slewed over a few blocks, no jump, every block read at ≤ 1 + 1000 ppm
        // (measured over a block's 479 steps; a single step is blurred by f32 rounding).
        p.set_offset_ms(100.5);
        let mut last = out[479];
        for _ in 0..200 {
            t += 10_000;
            p.render(&mut out, t, &cs, &jb);
            let d = out[0] - last;
            assert!((d - 1.0).abs() <= 0.01, "{d}");
            let rate = (out[479] - out[0]) as f64 / 479.0;
            assert!((rate - 1.0).abs() <= 0.001_05, "{rate}");
            last = out[479];
        }
        assert_eq!(p.stats().jumps, 2);
        let expect = (t - 1_000_000) as f64 * 0.048 + 4824.0;
        assert!(
            (out[0] as f64 - expect).abs() < 1.0,
            "{} vs {expect}",
            out[0]
        );
        // The 0.5 ms error decays with SLEW_TIME_S: after 1.5 s, 500·e⁻⁶ ≈ 1 µs.
        let e = p.error_over(t - 500_000, t).unwrap();
        assert!(e.mean_us.abs() < 3.0 && e.spread_us < 3.0, "{e:?}");
        // The jump 2 s ago is inside a longer span.
        assert_eq!(p.error_over(t - 2_500_000, t), None);
    }

    #[test]
    fn missing_audio_is_an_underrun_and_silence() {
        let (mut p, cs, full) = setup();
        let mut out = vec![1.0; 480];
        // Before any audio arrived, silence is not an underrun.
        let empty = JitterBuffer::new(1, 10);
        p.render(&mut out, 1_000_000, &cs, &empty);
        assert_eq!(p.stats().underruns, 0);
        p.render(&mut out, 1_010_000, &cs, &full);
        // Running dry after playing is.
        let info = p.render(&mut out, 1_020_000, &cs, &empty);
        // (The resampler's interpolation history reaches a few frames into the block.)
        assert!(out[8..].iter().all(|&s| s == 0.0));
        assert_eq!(info.source_pts_us, None);
        assert_eq!(p.stats().underruns, 1);
    }

    #[test]
    fn fades_out_before_running_dry() {
        let (mut p, cs, _) = setup();
        // 1.5 s of audio buffered; playback at t = 1.0 s reads sample 0 onwards.
        let mut jb = JitterBuffer::new(1, 1_000_000);
        jb.push(0, &vec![1.0; 72_000]);
        let mut out = vec![0.0; 480];
        let mut t = 1_000_000;
        let mut last = 0.0f32;
        let mut max_step = 0.0f32;
        let mut dry_blocks = 0;
        for _ in 0..200 {
            p.render(&mut out, t, &cs, &jb);
            for &x in &out {
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
        let (mut p, cs, jb) = setup();
        let mut out = vec![0.0; 480];
        p.render(&mut out, 1_000_000, &cs, &jb);
        p.set_muted(true);
        p.render(&mut out, 1_010_000, &cs, &jb);
        assert!(out[0] > 0.0 && out[479] == 0.0);
        // no step larger than the ramp allows
        assert!(out[1] <= out[0] * 1.01 + 1.0);
    }
}
