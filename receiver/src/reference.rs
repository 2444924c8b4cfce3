//! The source audio this receiver already has: the decoded stream, kept by PTS, so
//! that a drift measurement finds its reference here instead of fetching it from the
//! transmitter.
//!
//! A receiver gets every sample a playout delay before it is due, decodes it, and
//! plays it; the microphone hears it a little later. So the source window a
//! measurement needs (the span that should have been heard, with its search margin) was
//! received seconds ago. Keeping the last few seconds of the decoded stream, mixed down
//! to mono, costs 192 kB a second of memory (f32 at 48 kHz) and nothing on the
//! network; the transmitter's `GET /api/v1/window` is only the fallback for a span this
//! ring does not hold (just after connecting). The decoded stream is also exactly what
//! the speaker played, codec and all, which the correlation can only prefer.

use std::collections::VecDeque;

use syncstream_shared::time::{samples_to_us, us_to_samples};

/// The decoded stream's last seconds, mono, indexed by source sample index (see the
/// module docs). Control side only (never touched by an audio callback).
#[derive(Debug, Clone, Default)]
pub struct ReferenceRing {
    rate_hz: u32,
    epoch_us: i64,
    /// Source sample index of `data[0]`.
    first_index: i64,
    data: VecDeque<f32>,
    capacity: usize,
}

impl ReferenceRing {
    /// A ring keeping `seconds` of a stream at `rate_hz` whose sample index 0 has PTS
    /// `epoch_us`.
    pub fn new(rate_hz: u32, epoch_us: i64, seconds: f64) -> Self {
        let capacity = (rate_hz as f64 * seconds.clamp(0.0, 600.0)) as usize;
        Self {
            rate_hz,
            epoch_us,
            first_index: 0,
            data: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Appends interleaved audio (`channels` ≥ 1) whose first frame is source sample
    /// `index`. A chunk that does not follow on (a gap or a repeat: the stream
    /// restarted, chunks were lost) starts the ring afresh.
    pub fn push(&mut self, index: i64, interleaved: &[f32], channels: usize) {
        if channels == 0 || self.capacity == 0 {
            return;
        }
        let end = self.first_index + self.data.len() as i64;
        if self.data.is_empty() || index != end {
            self.data.clear();
            self.first_index = index;
        }
        let scale = 1.0 / channels as f32;
        self.data.extend(
            interleaved
                .chunks_exact(channels)
                .map(|f| f.iter().sum::<f32>() * scale),
        );
        let over = self.data.len().saturating_sub(self.capacity);
        if over > 0 {
            self.data.drain(..over);
            self.first_index += over as i64;
        }
    }

    /// The samples from PTS `start_us` for `duration_ms`, and the PTS of the first
    /// (the sample at or after `start_us`), if the ring holds all of them.
    pub fn window(&self, start_us: i64, duration_ms: u64) -> Option<(i64, Vec<f32>)> {
        let first = us_to_samples(start_us.checked_sub(self.epoch_us)?, self.rate_hz);
        let n = us_to_samples(
            i64::try_from(duration_ms).ok()?.checked_mul(1000)?,
            self.rate_hz,
        );
        let from = first.checked_sub(self.first_index)?;
        if from < 0 || n <= 0 || from + n > self.data.len() as i64 {
            return None;
        }
        let (from, n) = (from as usize, n as usize);
        Some((
            self.epoch_us + samples_to_us(first, self.rate_hz),
            self.data.range(from..from + n).copied().collect(),
        ))
    }

    /// Seconds held.
    pub fn seconds(&self) -> f64 {
        self.data.len() as f64 / self.rate_hz.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_and_finds_windows_by_pts() {
        let mut r = ReferenceRing::new(1000, 5_000_000, 2.0);
        // Stereo chunks of 100 frames, left = index, right = index + 2 → mono index + 1.
        for c in 0..50 {
            let chunk: Vec<f32> = (0..100)
                .flat_map(|i| {
                    let k = (c * 100 + i) as f32;
                    [k, k + 2.0]
                })
                .collect();
            r.push(c * 100, &chunk, 2);
        }
        assert!((r.seconds() - 2.0).abs() < 1e-9);
        // 1 kHz: index 4000 is at 5 s + 4 s.
        let (pts, w) = r.window(9_000_000, 500).unwrap();
        assert_eq!(pts, 9_000_000);
        assert_eq!(w.len(), 500);
        assert_eq!(w[0], 4001.0);
        assert!(r.window(2_000_000 + 5_000_000, 100).is_none(), "forgotten");
        assert!(r.window(9_900_000, 500).is_none(), "not received yet");
        assert!(r.window(i64::MIN, 500).is_none());
        assert!(r.window(9_000_000, u64::MAX).is_none());
    }

    #[test]
    fn a_gap_starts_afresh() {
        let mut r = ReferenceRing::new(1000, 0, 10.0);
        r.push(0, &[1.0; 100], 1);
        r.push(500, &[2.0; 100], 1);
        assert!(r.window(0, 50).is_none());
        assert_eq!(r.window(500_000, 100).unwrap().1, vec![2.0; 100]);
    }
}
