//! The control side's ends of the audio rings.

use std::collections::VecDeque;
use std::sync::Arc;

use rtrb::{Consumer, Producer};

use super::{
    AudioStats, BlockReport, DecodedChunk, MicBlock, Retired, ToRender, CHUNK_SAMPLES,
    HISTORY_FRAMES,
};
use crate::jitter_buffer::JitterBuffer;
use crate::playout::{StreamParams, PLAYOUT_CHANNELS};

/// Most messages or chunks held on the control side while a ring is full (beyond that
/// the oldest chunks are dropped: the render callback is not running).
const MAX_PENDING: usize = 4096;

/// The control side's ends of the rings to and from the audio callbacks. Owned by the
/// receiver's control task ([`crate::node::ReceiverNode`]); sending never blocks.
pub struct AudioControl {
    to_render: Producer<ToRender>,
    pending: VecDeque<ToRender>,
    chunks: Producer<DecodedChunk>,
    pending_chunks: VecDeque<Box<DecodedChunk>>,
    blocks: Consumer<BlockReport>,
    retired: Consumer<Retired>,
    mic: Consumer<MicBlock>,
    stats: Arc<AudioStats>,
    generation: u32,
    /// Chunks dropped because the render callback took none for too long.
    pub chunks_dropped: u64,
}

impl AudioControl {
    pub(super) fn new(
        to_render: Producer<ToRender>,
        chunks: Producer<DecodedChunk>,
        blocks: Consumer<BlockReport>,
        retired: Consumer<Retired>,
        mic: Consumer<MicBlock>,
        stats: Arc<AudioStats>,
    ) -> Self {
        Self {
            to_render,
            pending: VecDeque::new(),
            chunks,
            pending_chunks: VecDeque::new(),
            blocks,
            retired,
            mic,
            stats,
            generation: 0,
            chunks_dropped: 0,
        }
    }

    /// The callbacks' counters.
    pub fn stats(&self) -> &Arc<AudioStats> {
        &self.stats
    }

    /// Sends a message to the render callback (queued here while its ring is full).
    pub fn send(&mut self, msg: ToRender) {
        if !self.pending.is_empty() {
            // A newer setting replaces a queued one of the same kind, so the queue stays
            // short however long the callback does not run.
            let kind = std::mem::discriminant(&msg);
            if matches!(
                msg,
                ToRender::Clock(_)
                    | ToRender::ClockLost
                    | ToRender::Offset(_)
                    | ToRender::Volume(_)
                    | ToRender::Muted(_)
                    | ToRender::Stopped(_)
            ) {
                self.pending.retain(|m| std::mem::discriminant(m) != kind);
            }
            self.pending.push_back(msg);
            return;
        }
        if let Err(rtrb::PushError::Full(msg)) = self.to_render.push(msg) {
            self.pending.push_back(msg);
        }
    }

    /// Starts a new stream: a jitter buffer sized for its playout delay (the delay plus
    /// the history kept behind the read position plus a second), allocated here, and a
    /// new chunk generation so chunks of the old stream are dropped.
    pub fn new_stream(&mut self, params: StreamParams) {
        self.generation = self.generation.wrapping_add(1);
        self.pending_chunks.clear();
        let frames = (params.playout_delay_us.max(0) as u64 * params.sample_rate as u64 / 1_000_000)
            as usize
            + HISTORY_FRAMES as usize
            + params.sample_rate as usize;
        self.send(ToRender::Stream {
            params,
            generation: self.generation,
            buffer: Box::new(JitterBuffer::new(PLAYOUT_CHANNELS, frames)),
        });
    }

    /// Queues decoded stereo audio starting at decoded-buffer index `index` for the
    /// render callback (in chunks of at most one stream chunk).
    pub fn push_audio(&mut self, index: i64, interleaved: &[f32]) {
        for (k, piece) in interleaved.chunks(CHUNK_SAMPLES).enumerate() {
            let frames = piece.len() / PLAYOUT_CHANNELS;
            let mut chunk = DecodedChunk {
                generation: self.generation,
                index: index.saturating_add((k * CHUNK_SAMPLES / PLAYOUT_CHANNELS) as i64),
                frames: frames as u32,
                samples: [0.0; CHUNK_SAMPLES],
            };
            chunk.samples[..frames * PLAYOUT_CHANNELS]
                .copy_from_slice(&piece[..frames * PLAYOUT_CHANNELS]);
            if !self.pending.is_empty() || !self.pending_chunks.is_empty() {
                self.queue_chunk(chunk);
                continue;
            }
            if let Err(rtrb::PushError::Full(chunk)) = self.chunks.push(chunk) {
                self.queue_chunk(chunk);
            }
        }
    }

    fn queue_chunk(&mut self, chunk: DecodedChunk) {
        if self.pending_chunks.len() >= MAX_PENDING {
            self.pending_chunks.pop_front();
            self.chunks_dropped += 1;
        }
        self.pending_chunks.push_back(Box::new(chunk));
    }

    /// Moves what waited into the rings, frees what the render callback retired, and
    /// hands every block report and microphone block that arrived to `on_block` and
    /// `on_mic`. Call it every few tens of ms.
    pub fn pump(
        &mut self,
        mut on_block: impl FnMut(&BlockReport),
        mut on_mic: impl FnMut(&MicBlock),
    ) {
        while let Some(msg) = self.pending.pop_front() {
            if let Err(rtrb::PushError::Full(msg)) = self.to_render.push(msg) {
                self.pending.push_front(msg);
                break;
            }
        }
        if self.pending.is_empty() {
            while let Some(chunk) = self.pending_chunks.pop_front() {
                if let Err(rtrb::PushError::Full(chunk)) = self.chunks.push(*chunk) {
                    self.pending_chunks.push_front(Box::new(chunk));
                    break;
                }
            }
        }
        while let Ok(item) = self.retired.pop() {
            drop(item);
        }
        while let Ok(b) = self.blocks.pop() {
            on_block(&b);
        }
        while let Ok(m) = self.mic.pop() {
            on_mic(&m);
        }
    }
}
