//! The rolling RAM buffer of source audio: the last N seconds, mono, at the stream
//! rate, indexed by source sample index (and so by presentation timestamp).

use std::collections::VecDeque;

use syncstream_shared::time::{samples_to_us, us_to_samples};

/// Longest source window one request may ask for, ms.
pub const MAX_WINDOW_MS: u32 = 10_000;

/// Why a window cannot be served.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WindowError {
    /// Duration 0 or above [`MAX_WINDOW_MS`].
    #[error("duration_ms must be between 1 and {MAX_WINDOW_MS}, got {0}")]
    BadDuration(u64),
    /// The span starts before the oldest sample still buffered.
    #[error("window start {start_us} µs is older than the buffer, which starts at {oldest_us} µs")]
    TooOld {
        /// Requested start, µs.
        start_us: i64,
        /// Oldest buffered PTS, µs.
        oldest_us: i64,
    },
    /// The span ends after the newest sample buffered.
    #[error("window end {end_us} µs is newer than the buffer, which ends at {newest_us} µs")]
    NotYetAvailable {
        /// Requested end, µs.
        end_us: i64,
        /// PTS just past the newest buffered sample, µs.
        newest_us: i64,
    },
}

/// Mono source audio for the last `capacity` samples.
#[derive(Debug)]
pub struct RollingBuffer {
    sample_rate: u32,
    epoch_us: i64,
    start_index: u64,
    data: VecDeque<f32>,
    capacity: usize,
}

impl RollingBuffer {
    /// A buffer holding `seconds` of audio at `sample_rate` Hz; sample index 0 has
    /// PTS `epoch_us`.
    pub fn new(sample_rate: u32, seconds: f64, epoch_us: i64) -> Self {
        let capacity = (sample_rate as f64 * seconds.max(0.1)).round() as usize;
        Self {
            sample_rate,
            epoch_us,
            start_index: 0,
            data: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// PTS of sample index `index`, µs.
    pub fn pts_us(&self, index: u64) -> i64 {
        self.epoch_us + samples_to_us(index as i64, self.sample_rate)
    }

    /// Sample index just past the newest buffered sample.
    pub fn end_index(&self) -> u64 {
        self.start_index + self.data.len() as u64
    }

    /// Appends interleaved audio (`channels` per frame, mixed to mono) whose first
    /// frame has sample index `index`. A gap is filled with silence; a restart at a
    /// lower index clears the buffer.
    pub fn push_interleaved(&mut self, index: u64, interleaved: &[f32], channels: usize) {
        let channels = channels.max(1);
        let end = self.end_index();
        if self.data.is_empty() || index < self.start_index {
            self.data.clear();
            self.start_index = index;
        } else if index > end {
            let gap = index - end;
            if gap >= self.capacity as u64 {
                self.data.clear();
                self.start_index = index;
            } else {
                self.data.extend(std::iter::repeat_n(0.0, gap as usize));
            }
        } else if index < end {
            // Overlap with what we have: keep the old samples, append only the new tail.
            let skip = ((end - index) as usize).min(interleaved.len() / channels);
            self.extend_mono(&interleaved[skip * channels..], channels);
            return;
        }
        self.extend_mono(interleaved, channels);
    }

    fn extend_mono(&mut self, interleaved: &[f32], channels: usize) {
        let k = 1.0 / channels as f32;
        self.data.extend(
            interleaved
                .chunks_exact(channels)
                .map(|f| f.iter().sum::<f32>() * k),
        );
        let over = self.data.len().saturating_sub(self.capacity);
        if over > 0 {
            self.data.drain(..over);
            self.start_index += over as u64;
        }
    }

    /// The oldest and the just-past-newest PTS held, µs.
    pub fn span_us(&self) -> (i64, i64) {
        (self.pts_us(self.start_index), self.pts_us(self.end_index()))
    }

    /// Mono samples for `[start_us, start_us + duration_ms)`, starting at the sample
    /// whose PTS is nearest `start_us`. Also returns that sample's exact PTS, µs.
    ///
    /// Errors: a duration of 0 or above [`MAX_WINDOW_MS`], or a span not wholly in
    /// the buffer. Never allocates more than the bounded window.
    pub fn window(&self, start_us: i64, duration_ms: u64) -> Result<(i64, Vec<f32>), WindowError> {
        if duration_ms == 0 || duration_ms > MAX_WINDOW_MS as u64 {
            return Err(WindowError::BadDuration(duration_ms));
        }
        let n = us_to_samples(duration_ms as i64 * 1000, self.sample_rate) as u64;
        let first = us_to_samples(start_us.saturating_sub(self.epoch_us), self.sample_rate);
        let (oldest_us, newest_us) = self.span_us();
        if first < self.start_index as i64 {
            return Err(WindowError::TooOld {
                start_us,
                oldest_us,
            });
        }
        let first = first as u64;
        if first + n > self.end_index() {
            return Err(WindowError::NotYetAvailable {
                end_us: start_us.saturating_add(duration_ms as i64 * 1000),
                newest_us,
            });
        }
        let off = (first - self.start_index) as usize;
        let out: Vec<f32> = self.data.range(off..off + n as usize).copied().collect();
        Ok((self.pts_us(first), out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(start: u64, n: usize) -> Vec<f32> {
        // stereo, both channels = sample index (mono mix = index)
        (0..n)
            .flat_map(|i| [(start + i as u64) as f32; 2])
            .collect()
    }

    #[test]
    fn serves_windows_by_pts() {
        let mut b = RollingBuffer::new(48_000, 1.0, 1_000_000);
        for k in 0..100u64 {
            b.push_interleaved(k * 960, &ramp(k * 960, 960), 2);
        }
        // Capacity 1 s = 48000 samples; end index 96000.
        assert_eq!(b.end_index(), 96_000);
        let (pts, w) = b.window(1_000_000 + 1_500_000, 100).unwrap();
        assert_eq!(pts, 2_500_000);
        assert_eq!(w.len(), 4800);
        assert_eq!(w[0], 72_000.0);
        assert_eq!(w[4799], 76_799.0);
    }

    #[test]
    fn rejects_windows_outside_the_buffer_and_bad_durations() {
        let mut b = RollingBuffer::new(48_000, 1.0, 0);
        b.push_interleaved(0, &ramp(0, 48_000), 2);
        b.push_interleaved(48_000, &ramp(48_000, 48_000), 2);
        assert!(matches!(b.window(0, 10), Err(WindowError::TooOld { .. })));
        assert!(matches!(
            b.window(1_990_000, 20),
            Err(WindowError::NotYetAvailable { .. })
        ));
        assert!(matches!(
            b.window(1_500_000, 0),
            Err(WindowError::BadDuration(0))
        ));
        assert!(matches!(
            b.window(1_500_000, u64::MAX),
            Err(WindowError::BadDuration(_))
        ));
        assert!(b.window(i64::MIN, 10).is_err());
        assert!(b.window(i64::MAX, 10).is_err());
    }

    #[test]
    fn gaps_are_silence_and_restarts_clear() {
        let mut b = RollingBuffer::new(48_000, 1.0, 0);
        b.push_interleaved(0, &ramp(0, 10), 2);
        b.push_interleaved(20, &ramp(20, 10), 2);
        let (_, w) = b.window(0, 1).unwrap_or((0, vec![]));
        assert!(w.is_empty() || w.len() == 48);
        assert_eq!(b.end_index(), 30);
        b.push_interleaved(5, &ramp(5, 10), 2);
        assert_eq!(b.end_index(), 30);
    }
}
