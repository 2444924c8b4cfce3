//! The render callback's state: everything playout needs, owned, fed through rings.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rtrb::{Consumer, Producer};
use syncstream_audio::{RenderFn, RenderInfo};
use syncstream_shared::time::{samples_to_us, STREAM_SAMPLE_RATE};

use super::{
    AudioStats, BlockReport, DecodedChunk, Retired, ToRender, HISTORY_FRAMES, LATE_TOLERANCE_US,
};
use crate::clock_sync::ClockMapping;
use crate::jitter_buffer::JitterBuffer;
use crate::playout::{Playout, MAX_BLOCK_FRAMES, PLAYOUT_CHANNELS};
use crate::test_tone::ToneOverlay;

/// Retired items held when the retire ring is full.
const RETIRE_SLOTS: usize = 4;

/// The render callback's state (see the module docs of [`crate::realtime`]).
pub struct Renderer {
    playout: Playout,
    jb: Box<JitterBuffer>,
    clock: Option<ClockMapping>,
    tone: ToneOverlay,
    generation: u32,
    from_control: Consumer<ToRender>,
    chunks: Consumer<DecodedChunk>,
    blocks: Producer<BlockReport>,
    retire: Producer<Retired>,
    retire_pending: [Option<Retired>; RETIRE_SLOTS],
    stats: Arc<AudioStats>,
    next_dac_us: Option<i64>,
}

impl Renderer {
    pub(super) fn new(
        offset_ms: f64,
        from_control: Consumer<ToRender>,
        chunks: Consumer<DecodedChunk>,
        blocks: Producer<BlockReport>,
        retire: Producer<Retired>,
        stats: Arc<AudioStats>,
    ) -> Self {
        Self {
            playout: Playout::new(offset_ms),
            jb: Box::new(JitterBuffer::new(PLAYOUT_CHANNELS, 1)),
            clock: None,
            tone: ToneOverlay::default(),
            generation: 0,
            from_control,
            chunks,
            blocks,
            retire,
            retire_pending: Default::default(),
            stats,
            next_dac_us: None,
        }
    }

    /// The render function to give a [`syncstream_audio::Sink`].
    pub fn into_render_fn(mut self) -> RenderFn {
        Box::new(move |out: &mut [f32], dac_time_us: i64| self.render(out, dac_time_us))
    }

    /// Hands `item` back to the control side to be freed (never frees here unless
    /// every slot is full, which the ring's capacity rules out in practice).
    fn retire(&mut self, item: Retired) {
        let item = match self.retire.push(item) {
            Ok(()) => return,
            Err(rtrb::PushError::Full(item)) => item,
        };
        if let Some(slot) = self.retire_pending.iter_mut().find(|s| s.is_none()) {
            *slot = Some(item);
        }
        // Otherwise `item` is dropped here: the last resort.
    }

    fn flush_retired(&mut self) {
        for i in 0..RETIRE_SLOTS {
            if let Some(item) = self.retire_pending[i].take() {
                if let Err(rtrb::PushError::Full(item)) = self.retire.push(item) {
                    self.retire_pending[i] = Some(item);
                    return;
                }
            }
        }
    }

    fn apply(&mut self, msg: ToRender) {
        match msg {
            ToRender::Stream {
                params,
                generation,
                buffer,
            } => {
                let old = std::mem::replace(&mut self.jb, buffer);
                self.retire(Retired::Buffer(old));
                self.generation = generation;
                self.playout.set_stream(params);
            }
            ToRender::Clock(m) => self.clock = Some(m),
            ToRender::ClockLost => self.clock = None,
            ToRender::Offset(ramp) => self.playout.set_offset(ramp),
            ToRender::Volume(v) => self.playout.set_volume(v),
            ToRender::Muted(m) => self.playout.set_muted(m),
            ToRender::Stopped(s) => self.playout.set_stopped(s),
            ToRender::ToneArm {
                samples,
                start_dac_us,
            } => {
                if let Some(old) = self.tone.arm(samples, start_dac_us) {
                    self.retire(Retired::Tone(old));
                }
            }
            ToRender::ToneDisarm => {
                if let Some(old) = self.tone.disarm() {
                    self.retire(Retired::Tone(old));
                }
            }
        }
    }

    /// Renders one block (interleaved stereo) whose first frame leaves the output at
    /// local `dac_time_us`: applies the control side's messages, moves newly decoded
    /// chunks into the jitter buffer, plays, overlays a test tone and reports the
    /// block. No lock, no allocation, no panic on any input.
    pub fn render(&mut self, out: &mut [f32], dac_time_us: i64) -> RenderInfo {
        self.flush_retired();
        while let Ok(msg) = self.from_control.pop() {
            self.apply(msg);
        }
        while let Ok(chunk) = self.chunks.pop() {
            if chunk.generation == self.generation {
                let n = (chunk.frames as usize).min(chunk.samples.len() / PLAYOUT_CHANNELS);
                self.jb
                    .push(chunk.index, &chunk.samples[..n * PLAYOUT_CHANNELS]);
            }
        }
        let ch = PLAYOUT_CHANNELS;
        let frames = out.len() / ch;
        if let Some(expected) = self.next_dac_us {
            if dac_time_us.saturating_sub(expected) > LATE_TOLERANCE_US {
                AudioStats::add(&self.stats.late_renders, 1);
            }
        }
        self.next_dac_us =
            Some(dac_time_us.saturating_add(samples_to_us(frames as i64, STREAM_SAMPLE_RATE)));
        let mut info = RenderInfo::default();
        let mut done = 0usize;
        let mut starved = false;
        while done < frames {
            let n = (frames - done).min(MAX_BLOCK_FRAMES);
            let piece = &mut out[done * ch..(done + n) * ch];
            let t = dac_time_us.saturating_add(samples_to_us(done as i64, STREAM_SAMPLE_RATE));
            let (i, o) = self.playout.render(piece, t, self.clock.as_ref(), &self.jb);
            if done == 0 {
                info = i;
            }
            if let Some(p) = self.playout.position() {
                if p.is_finite() {
                    self.jb.trim_before(p as i64 - HISTORY_FRAMES);
                }
            }
            self.tone.overlay(piece, t, ch);
            if o.jumped {
                AudioStats::add(&self.stats.jumps, 1);
                self.stats.last_jump_us.store(t, Ordering::Release);
            }
            if o.underrun {
                AudioStats::add(&self.stats.underruns, 1);
            }
            starved |= o.missing && o.scheduled;
            let report = BlockReport {
                dac_time_us: t,
                err_us: o.err_us as f32,
                jumped: o.jumped,
                missing: o.missing,
                scheduled: o.scheduled,
                frames: n as u32,
            };
            if self.blocks.push(report).is_err() {
                AudioStats::add(&self.stats.reports_dropped, 1);
            }
            done += n;
        }
        AudioStats::add(&self.stats.frames, frames as u64);
        self.stats.starved.store(starved, Ordering::Relaxed);
        let ahead = self
            .playout
            .position()
            .filter(|p| p.is_finite())
            .map_or(0, |p| self.jb.end().saturating_sub(p as i64));
        self.stats.ahead_frames.store(ahead, Ordering::Relaxed);
        info
    }
}
