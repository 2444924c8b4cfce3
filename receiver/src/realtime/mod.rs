//! The real-time side of a receiver: the render and capture callbacks, and the
//! lock-free rings that connect them to the control side.
//!
//! The audio callbacks run on the audio device's thread (cpal's, or the virtual
//! room's) and must never wait: they take no lock that any other task holds, allocate
//! and free nothing, and cannot be poisoned by a panic elsewhere. So each callback
//! *owns* its state ([`Renderer`]: the playout, the jitter buffer, the test-tone
//! overlay; [`Capturer`]: a ring producer), and everything crosses between threads
//! through single-producer single-consumer rings (`rtrb`, wait-free) and atomics:
//!
//! ```text
//!  control side (ReceiverNode)                    render callback (Renderer)
//!   ToRender ring ── stream, clock mapping, offset, volume, mute, tone ──►
//!   chunk ring ───── decoded audio (DecodedChunk, fixed size) ───────────►
//!   ◄──────────────── BlockReport ring: each block's playout error ───────
//!   ◄──────────────── retire ring: buffers and tone signals to free ──────
//!   ◄──────────────── AudioStats: counters (atomics) ─────────────────────
//!                                                 capture callback (Capturer)
//!   ◄──────────────── mic ring: MicBlock (fixed size, with ADC time) ────
//! ```
//!
//! Anything that needs allocating (a jitter buffer sized for a new playout delay, a
//! test signal) is allocated on the control side and moved in through a ring; what
//! the callback lets go of goes back through the retire ring, to be freed on the
//! control side. When a ring is full the sender keeps the message on its own side and
//! tries again ([`AudioControl::pump`]), or, in a callback, drops it and counts the
//! drop in [`AudioStats`].

mod capture;
mod control;
mod render;
mod stats;

pub use capture::Capturer;
pub use control::AudioControl;
pub use render::Renderer;
pub use stats::{AudioStats, AudioStatsSnapshot};

use std::sync::Arc;

use syncstream_protocol::codec::CHUNK_FRAMES;

use crate::clock_sync::ClockMapping;
use crate::jitter_buffer::JitterBuffer;
use crate::offset::OffsetRamp;
use crate::playout::{StreamParams, PLAYOUT_CHANNELS};

/// Samples in a [`DecodedChunk`]: one 20 ms stream chunk, stereo.
pub const CHUNK_SAMPLES: usize = CHUNK_FRAMES * PLAYOUT_CHANNELS;
/// Samples in a [`MicBlock`] (10 ms at 48 kHz); longer captures are split.
pub const MIC_BLOCK_SAMPLES: usize = 480;
/// Capacity of the control → render message ring.
pub const TO_RENDER_CAPACITY: usize = 256;
/// Capacity of the decoded-chunk ring (1.28 s of audio; more waits on the control side).
pub const CHUNK_RING_CAPACITY: usize = 64;
/// Capacity of the block-report ring (about 20 s of 10 ms blocks).
pub const BLOCK_RING_CAPACITY: usize = 2048;
/// Capacity of the microphone ring (about 5 s at 48 kHz).
pub const MIC_RING_CAPACITY: usize = 512;
/// Capacity of the retire ring.
pub const RETIRE_CAPACITY: usize = 32;
/// How much audio the render callback keeps behind its read position, frames (for
/// slewing backwards and crossfades).
pub const HISTORY_FRAMES: i64 = 48_000;
/// A callback whose block starts more than this after the previous block ended is
/// late (the device skipped ahead), µs.
pub const LATE_TOLERANCE_US: i64 = 5_000;

/// A message from the control side to the render callback.
#[derive(Debug)]
pub enum ToRender {
    /// A new stream (every connect): its parameters, the chunks' generation, and an
    /// empty jitter buffer sized for its playout delay (the old one is retired).
    Stream {
        /// Stream parameters from the hello.
        params: StreamParams,
        /// Chunks of other generations are dropped.
        generation: u32,
        /// The new jitter buffer.
        buffer: Box<JitterBuffer>,
    },
    /// The current clock-sync mapping.
    Clock(ClockMapping),
    /// Clock sync was lost (a new connection): play nothing until the next mapping.
    ClockLost,
    /// The buffer offset.
    Offset(OffsetRamp),
    /// Linear volume, 0..=1.
    Volume(f64),
    /// Mute.
    Muted(bool),
    /// Stop (silence) or play.
    Stopped(bool),
    /// Play a test signal (mono, 48 kHz) from local DAC time `start_dac_us`.
    ToneArm {
        /// The signal.
        samples: Arc<[f32]>,
        /// Local DAC time of its sample 0, µs.
        start_dac_us: i64,
    },
    /// Stop the test signal (the music fades back in).
    ToneDisarm,
}

/// What the render callback hands back to be freed on the control side.
#[derive(Debug)]
pub enum Retired {
    /// A jitter buffer replaced by a new stream's.
    Buffer(Box<JitterBuffer>),
    /// A test signal no longer played.
    Tone(Arc<[f32]>),
}

/// One decoded stream chunk on its way to the render callback.
#[derive(Clone)]
pub struct DecodedChunk {
    /// Stream generation (see [`ToRender::Stream`]).
    pub generation: u32,
    /// Decoded-buffer index of its first frame.
    pub index: i64,
    /// Frames used of `samples` (at most [`CHUNK_FRAMES`]).
    pub frames: u32,
    /// Interleaved stereo samples.
    pub samples: [f32; CHUNK_SAMPLES],
}

impl std::fmt::Debug for DecodedChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedChunk")
            .field("generation", &self.generation)
            .field("index", &self.index)
            .field("frames", &self.frames)
            .finish()
    }
}

/// What the render callback reports of one block.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BlockReport {
    /// Local DAC time of its first frame, µs.
    pub dac_time_us: i64,
    /// Playout error (target − actual read position), µs; 0 on a jump.
    pub err_us: f32,
    /// The block jumped (or started).
    pub jumped: bool,
    /// Frames were missing from the jitter buffer.
    pub missing: bool,
    /// The block was scheduled from a stream (params and clock known).
    pub scheduled: bool,
    /// Frames.
    pub frames: u32,
}

/// Microphone samples on their way to the control side.
#[derive(Clone)]
pub struct MicBlock {
    /// Local ADC time of `samples[0]`, µs.
    pub adc_time_us: i64,
    /// Samples used.
    pub len: u16,
    /// Mono samples.
    pub samples: [f32; MIC_BLOCK_SAMPLES],
}

impl MicBlock {
    /// The samples used.
    pub fn samples(&self) -> &[f32] {
        &self.samples[..self.len as usize]
    }
}

impl std::fmt::Debug for MicBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MicBlock")
            .field("adc_time_us", &self.adc_time_us)
            .field("len", &self.len)
            .finish()
    }
}

/// Builds a receiver's audio engine: the render callback's state, the capture
/// callback's state and the control side's ends of the rings, for a microphone at
/// `mic_rate_hz`, starting with buffer offset `offset_ms`. Everything the callbacks
/// will need is allocated here.
pub fn engine(offset_ms: f64, mic_rate_hz: u32) -> (Renderer, Capturer, AudioControl) {
    let stats = Arc::new(AudioStats::default());
    let (to_render_tx, to_render_rx) = rtrb::RingBuffer::new(TO_RENDER_CAPACITY);
    let (chunk_tx, chunk_rx) = rtrb::RingBuffer::new(CHUNK_RING_CAPACITY);
    let (block_tx, block_rx) = rtrb::RingBuffer::new(BLOCK_RING_CAPACITY);
    let (retire_tx, retire_rx) = rtrb::RingBuffer::new(RETIRE_CAPACITY);
    let (mic_tx, mic_rx) = rtrb::RingBuffer::new(MIC_RING_CAPACITY);
    let renderer = Renderer::new(
        offset_ms,
        to_render_rx,
        chunk_rx,
        block_tx,
        retire_tx,
        stats.clone(),
    );
    let capturer = Capturer::new(mic_tx, mic_rate_hz, stats.clone());
    let control = AudioControl::new(to_render_tx, chunk_tx, block_rx, retire_rx, mic_rx, stats);
    (renderer, capturer, control)
}
