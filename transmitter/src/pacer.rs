//! The pacer: pulls source audio in 20 ms chunks at the real-time rate of the
//! transmitter clock, stamps each with its source sample index, stores it in the
//! rolling buffer, encodes it and publishes it to the receivers.
//!
//! [`ChunkProducer`] makes one chunk (pull, store, encode, frame); the real pacer
//! thread ([`run`]) calls it when each chunk is due, and the simulator calls the same
//! code on virtual time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use syncstream_protocol::codec::{AudioEncoder, CHUNK_FRAMES};
use syncstream_protocol::wire::Frame;
use syncstream_shared::time::{samples_to_us, Clock, STREAM_CHANNELS, STREAM_SAMPLE_RATE};
use tracing::{info, warn};

use crate::rolling_buffer::RollingBuffer;
use crate::stream_server::{EncodedChunk, StreamHub};

/// Fills an interleaved stereo 48 kHz buffer; returns the frames written (0 at the end).
pub type PullAudio = Box<dyn FnMut(&mut [f32]) -> anyhow::Result<usize> + Send>;

/// Makes the stream's chunks one after the other: chunk `n` holds source frames
/// `[n·960, (n+1)·960)`. After the source ends (or fails) it makes silence, so
/// receivers keep their clocks.
pub struct ChunkProducer {
    pull: PullAudio,
    encoder: AudioEncoder,
    chunk: Vec<f32>,
    index: u64,
    ended: bool,
}

impl ChunkProducer {
    /// A producer pulling from `pull` and encoding with `encoder`.
    pub fn new(pull: PullAudio, encoder: AudioEncoder) -> Self {
        Self {
            pull,
            encoder,
            chunk: vec![0.0; CHUNK_FRAMES * STREAM_CHANNELS as usize],
            index: 0,
            ended: false,
        }
    }

    /// Starts a new stream: the next chunk is index 0 again (a restarted transmitter;
    /// the source goes on where it was).
    pub fn restart_stream(&mut self) {
        self.index = 0;
    }

    /// Starts at source sample `index` (rounded down to a chunk) instead of 0: a stream
    /// added while others run joins their timeline now.
    pub fn start_at(mut self, index: u64) -> Self {
        self.index = index / CHUNK_FRAMES as u64 * CHUNK_FRAMES as u64;
        self
    }

    /// Source sample index of the next chunk.
    pub fn next_index(&self) -> u64 {
        self.index
    }

    /// PTS at which the next chunk is complete (its end), µs, for a stream whose
    /// sample 0 has PTS `epoch_us`.
    pub fn next_due_us(&self, epoch_us: i64) -> i64 {
        epoch_us
            + samples_to_us(
                (self.index + CHUNK_FRAMES as u64) as i64,
                STREAM_SAMPLE_RATE,
            )
    }

    /// Makes the next chunk: pulls it (silence after the source's end), stores it in
    /// `buffer`, and returns it encoded and framed, or `None` if it could not be encoded
    /// (logged; the chunk is skipped).
    pub fn produce(&mut self, buffer: &mut RollingBuffer) -> Option<EncodedChunk> {
        let ch = STREAM_CHANNELS as usize;
        // Fill the chunk completely (a source may return less than asked).
        let mut filled = 0;
        while !self.ended && filled < CHUNK_FRAMES {
            match (self.pull)(&mut self.chunk[filled * ch..]) {
                Ok(0) => {
                    info!("source ended; streaming silence");
                    self.ended = true;
                }
                Ok(n) => filled += n.min(CHUNK_FRAMES - filled),
                Err(e) => {
                    warn!("source failed, streaming silence: {e:#}");
                    self.ended = true;
                }
            }
        }
        self.chunk[filled * ch..].fill(0.0);
        let index = self.index;
        self.index += CHUNK_FRAMES as u64;
        buffer.push_interleaved(index, &self.chunk, ch);
        let payload = match self.encoder.encode(&self.chunk) {
            Ok(p) => p,
            Err(e) => {
                warn!("cannot encode chunk {index}: {e}");
                return None;
            }
        };
        let frame = Frame::Audio {
            sample_index: index,
            frames: CHUNK_FRAMES as u32,
            payload,
        };
        match frame.encode() {
            Ok(bytes) => Some(EncodedChunk {
                sample_index: index,
                frame: Bytes::from(bytes),
            }),
            Err(e) => {
                warn!("cannot frame chunk {index}: {e}");
                None
            }
        }
    }
}

/// Runs the pacer on the current thread until `stop` is set. Chunk `n` is sent once
/// the transmitter clock reaches the PTS of its end, so PTS = the time the audio
/// entered the transmitter.
pub fn run(
    mut producer: ChunkProducer,
    epoch_us: i64,
    clock: Arc<dyn Clock>,
    buffer: Arc<Mutex<RollingBuffer>>,
    hub: Arc<StreamHub>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let wait = producer.next_due_us(epoch_us) - clock.now_us();
        if wait > 0 {
            std::thread::sleep(Duration::from_micros(wait as u64));
        }
        let chunk = {
            let mut b = buffer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            producer.produce(&mut b)
        };
        if let Some(c) = chunk {
            hub.publish(c);
        }
    }
}
