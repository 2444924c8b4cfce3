//! The control side's record of what playout did: each rendered block's playout error,
//! as the render callback reports it ([`crate::realtime::BlockReport`]), over the last
//! [`ERROR_LOG_SPAN_US`]. The drift detector asks it which offset was really in effect
//! while a recording's sound was played ([`PlayoutLog::error_over`]).

use std::collections::VecDeque;

use crate::realtime::BlockReport;

/// How much playout-error history is kept, µs.
pub const ERROR_LOG_SPAN_US: i64 = 10_000_000;

/// The playout error over a span of DAC time (see [`PlayoutLog::error_over`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlayoutError {
    /// Mean of (target − actual read position), µs: positive when playing behind the
    /// target, i.e. with an effective buffer offset smaller by this much.
    pub mean_us: f64,
    /// Largest minus smallest error over the span, µs.
    pub spread_us: f64,
}

/// Playout errors by local DAC time, and the time of the last jump.
#[derive(Debug, Clone, Default)]
pub struct PlayoutLog {
    /// (local DAC time of a block's first frame µs, playout error µs), oldest first.
    log: VecDeque<(i64, f32)>,
    /// Local DAC time of the last jump or (re)start, µs.
    last_jump_us: Option<i64>,
}

impl PlayoutLog {
    /// Records one block. Blocks that were not scheduled (no stream or clock yet) are
    /// not playout and are left out.
    pub fn record(&mut self, b: &BlockReport) {
        if !b.scheduled {
            return;
        }
        if b.jumped {
            self.note_jump(b.dac_time_us);
        }
        self.log
            .push_back((b.dac_time_us, if b.jumped { 0.0 } else { b.err_us }));
        let keep_from = b.dac_time_us.saturating_sub(ERROR_LOG_SPAN_US);
        while self.log.front().is_some_and(|&(t, _)| t < keep_from) {
            self.log.pop_front();
        }
    }

    /// Notes a jump at local DAC time `t_us` (also known from the callbacks' counters,
    /// so a jump is never missed even if its block report was dropped).
    pub fn note_jump(&mut self, t_us: i64) {
        if self.last_jump_us.is_none_or(|j| t_us > j) {
            self.last_jump_us = Some(t_us);
        }
    }

    /// Forgets everything (a new stream).
    pub fn clear(&mut self) {
        self.log.clear();
        self.last_jump_us = None;
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
        let first = self.log.front()?.0;
        if first > from_us {
            return None;
        }
        let (mut sum, mut n, mut lo, mut hi) = (0.0f64, 0usize, f64::MAX, f64::MIN);
        // The block that was playing at `from_us` started at or before it.
        let begin = self
            .log
            .partition_point(|&(t, _)| t <= from_us)
            .saturating_sub(1);
        for &(t, e) in self.log.range(begin..) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(t: i64, err_us: f32, jumped: bool) -> BlockReport {
        BlockReport {
            dac_time_us: t,
            err_us,
            jumped,
            missing: false,
            scheduled: true,
            frames: 480,
        }
    }

    #[test]
    fn error_over_a_span_after_the_last_jump() {
        let mut log = PlayoutLog::default();
        log.record(&block(0, 0.0, true));
        for k in 1..300 {
            log.record(&block(k * 10_000, if k < 100 { 50.0 } else { 10.0 }, false));
        }
        let e = log.error_over(1_500_000, 2_500_000).unwrap();
        assert!((e.mean_us - 10.0).abs() < 1e-9 && e.spread_us == 0.0);
        let e = log.error_over(500_000, 1_500_000).unwrap();
        assert!(e.spread_us == 40.0);
        // Spans reaching back to the jump do not follow one offset.
        assert_eq!(log.error_over(0, 100_000), None);
        // A jump known only from the counters (its report dropped) counts too.
        log.note_jump(2_000_000);
        assert_eq!(log.error_over(1_500_000, 2_500_000), None);
        // Unscheduled blocks are not playout.
        let mut empty = PlayoutLog::default();
        empty.record(&BlockReport::default());
        assert_eq!(empty.error_over(-10, 10), None);
    }
}
