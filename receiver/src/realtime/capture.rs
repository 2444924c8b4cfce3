//! The capture callback's state: a producer of fixed-size microphone blocks.

use std::sync::Arc;

use rtrb::Producer;
use syncstream_audio::CaptureFn;
use syncstream_shared::time::samples_to_us;

use super::{AudioStats, MicBlock, LATE_TOLERANCE_US, MIC_BLOCK_SAMPLES};

/// The capture callback's state (see [`crate::realtime`]).
pub struct Capturer {
    blocks: Producer<MicBlock>,
    rate_hz: u32,
    stats: Arc<AudioStats>,
    next_adc_us: Option<i64>,
}

impl Capturer {
    pub(super) fn new(blocks: Producer<MicBlock>, rate_hz: u32, stats: Arc<AudioStats>) -> Self {
        Self {
            blocks,
            rate_hz: rate_hz.max(1),
            stats,
            next_adc_us: None,
        }
    }

    /// The capture function to give a [`syncstream_audio::Microphone`].
    pub fn into_capture_fn(mut self) -> CaptureFn {
        Box::new(move |block: &[f32], adc_time_us: i64| self.capture(block, adc_time_us))
    }

    /// Queues a block of mono samples whose first was taken at local `adc_time_us`, in
    /// pieces of at most [`MIC_BLOCK_SAMPLES`]. A full ring drops the piece (counted as
    /// a microphone overrun). No lock, no allocation.
    pub fn capture(&mut self, block: &[f32], adc_time_us: i64) {
        if let Some(expected) = self.next_adc_us {
            if adc_time_us.saturating_sub(expected) > LATE_TOLERANCE_US {
                AudioStats::add(&self.stats.late_captures, 1);
            }
        }
        self.next_adc_us =
            Some(adc_time_us.saturating_add(samples_to_us(block.len() as i64, self.rate_hz)));
        for (k, piece) in block.chunks(MIC_BLOCK_SAMPLES).enumerate() {
            let mut b = MicBlock {
                adc_time_us: adc_time_us
                    .saturating_add(samples_to_us((k * MIC_BLOCK_SAMPLES) as i64, self.rate_hz)),
                len: piece.len() as u16,
                samples: [0.0; MIC_BLOCK_SAMPLES],
            };
            b.samples[..piece.len()].copy_from_slice(piece);
            if self.blocks.push(b).is_err() {
                AudioStats::add(&self.stats.mic_overruns, 1);
            }
        }
    }
}
