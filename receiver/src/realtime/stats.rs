//! Counters the audio callbacks keep, as atomics the control side reads.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// Counters of the render and capture callbacks (relaxed atomics: each is written by
/// one callback and read for status).
#[derive(Debug)]
pub struct AudioStats {
    /// Times playout ran out of audio while playing.
    pub underruns: AtomicU64,
    /// Jumps (crossfaded repositionings, including starts).
    pub jumps: AtomicU64,
    /// Frames rendered.
    pub frames: AtomicU64,
    /// Render callbacks whose block started more than
    /// [`super::LATE_TOLERANCE_US`] after the previous one ended.
    pub late_renders: AtomicU64,
    /// The same for capture callbacks.
    pub late_captures: AtomicU64,
    /// Block reports dropped because the control side did not drain them in time.
    pub reports_dropped: AtomicU64,
    /// Microphone blocks dropped because the control side did not drain them in time.
    pub mic_overruns: AtomicU64,
    /// Local DAC time of the last jump or (re)start, µs (`i64::MIN`: none yet).
    pub last_jump_us: AtomicI64,
    /// Whether the last block ran short of audio (a connection that ran dry).
    pub starved: AtomicBool,
    /// Frames of audio buffered ahead of the read position after the last block.
    pub ahead_frames: AtomicI64,
}

/// A copy of [`AudioStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AudioStatsSnapshot {
    /// See [`AudioStats::underruns`].
    pub underruns: u64,
    /// See [`AudioStats::jumps`].
    pub jumps: u64,
    /// See [`AudioStats::frames`].
    pub frames: u64,
    /// See [`AudioStats::late_renders`].
    pub late_renders: u64,
    /// See [`AudioStats::late_captures`].
    pub late_captures: u64,
    /// See [`AudioStats::reports_dropped`].
    pub reports_dropped: u64,
    /// See [`AudioStats::mic_overruns`].
    pub mic_overruns: u64,
    /// See [`AudioStats::starved`].
    pub starved: bool,
    /// See [`AudioStats::ahead_frames`].
    pub ahead_frames: i64,
}

impl Default for AudioStats {
    fn default() -> Self {
        Self {
            underruns: AtomicU64::new(0),
            jumps: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            late_renders: AtomicU64::new(0),
            late_captures: AtomicU64::new(0),
            reports_dropped: AtomicU64::new(0),
            mic_overruns: AtomicU64::new(0),
            last_jump_us: AtomicI64::new(i64::MIN),
            starved: AtomicBool::new(false),
            ahead_frames: AtomicI64::new(0),
        }
    }
}

impl AudioStats {
    /// Adds `n` to a counter.
    #[inline]
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The local DAC time of the last jump, µs, if any.
    pub fn last_jump_us(&self) -> Option<i64> {
        let v = self.last_jump_us.load(Ordering::Acquire);
        (v != i64::MIN).then_some(v)
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> AudioStatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AudioStatsSnapshot {
            underruns: r(&self.underruns),
            jumps: r(&self.jumps),
            frames: r(&self.frames),
            late_renders: r(&self.late_renders),
            late_captures: r(&self.late_captures),
            reports_dropped: r(&self.reports_dropped),
            mic_overruns: r(&self.mic_overruns),
            starved: self.starved.load(Ordering::Relaxed),
            ahead_frames: self.ahead_frames.load(Ordering::Relaxed),
        }
    }
}
