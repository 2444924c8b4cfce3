//! The pacer: pulls source audio in 20 ms chunks at the real-time rate of the
//! transmitter clock, stamps each with its source sample index, stores it in the
//! rolling buffer, encodes it and publishes it to the receivers.

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

/// Runs the pacer on the current thread until `stop` is set. Chunk `n` (frames
/// `[n·960, (n+1)·960)`) is sent once the transmitter clock reaches the PTS of its
/// end, so PTS = the time the audio entered the transmitter. After the source ends
/// (or fails) it keeps streaming silence so receivers keep their clocks.
pub fn run(
    mut pull: PullAudio,
    mut encoder: AudioEncoder,
    epoch_us: i64,
    clock: Arc<dyn Clock>,
    buffer: Arc<Mutex<RollingBuffer>>,
    hub: Arc<StreamHub>,
    stop: Arc<AtomicBool>,
) {
    let ch = STREAM_CHANNELS as usize;
    let mut chunk = vec![0.0f32; CHUNK_FRAMES * ch];
    let mut index: u64 = 0;
    let mut ended = false;
    while !stop.load(Ordering::Relaxed) {
        let due_us =
            epoch_us + samples_to_us((index + CHUNK_FRAMES as u64) as i64, STREAM_SAMPLE_RATE);
        let wait = due_us - clock.now_us();
        if wait > 0 {
            std::thread::sleep(Duration::from_micros(wait as u64));
        }
        // Fill the chunk completely (a source may return less than asked).
        let mut filled = 0;
        while !ended && filled < CHUNK_FRAMES {
            match pull(&mut chunk[filled * ch..]) {
                Ok(0) => {
                    info!("source ended; streaming silence");
                    ended = true;
                }
                Ok(n) => filled += n,
                Err(e) => {
                    warn!("source failed, streaming silence: {e:#}");
                    ended = true;
                }
            }
        }
        chunk[filled * ch..].fill(0.0);
        buffer.lock().unwrap().push_interleaved(index, &chunk, ch);
        match encoder.encode(&chunk) {
            Ok(payload) => {
                let frame = Frame::Audio {
                    sample_index: index,
                    frames: CHUNK_FRAMES as u32,
                    payload,
                };
                match frame.encode() {
                    Ok(bytes) => hub.publish(EncodedChunk {
                        sample_index: index,
                        frame: Bytes::from(bytes),
                    }),
                    Err(e) => warn!("cannot frame chunk {index}: {e}"),
                }
            }
            Err(e) => warn!("cannot encode chunk {index}: {e}"),
        }
        index += CHUNK_FRAMES as u64;
    }
}
