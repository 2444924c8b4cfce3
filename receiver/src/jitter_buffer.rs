//! The jitter buffer: decoded audio waiting to be played, indexed by decoded sample
//! index (source sample index + codec delay).

use std::collections::VecDeque;

/// Interleaved decoded audio for a contiguous range of sample indices.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    channels: usize,
    start: i64,
    data: VecDeque<f32>,
    capacity_frames: usize,
}

impl JitterBuffer {
    /// A buffer for `channels` channels holding at most `capacity_frames` frames.
    pub fn new(channels: usize, capacity_frames: usize) -> Self {
        Self {
            channels: channels.max(1),
            start: 0,
            data: VecDeque::new(),
            capacity_frames,
        }
    }

    /// Empties the buffer.
    pub fn clear(&mut self) {
        self.data.clear();
    }

    /// Index just past the newest frame.
    pub fn end(&self) -> i64 {
        self.start + (self.data.len() / self.channels) as i64
    }

    /// Index of the oldest frame.
    pub fn start(&self) -> i64 {
        self.start
    }

    /// Frames held.
    pub fn len_frames(&self) -> usize {
        self.data.len() / self.channels
    }

    /// Adds frames starting at `index`. A gap is filled with silence, a chunk from the
    /// past (a reconnect to a restarted stream) clears the buffer, and what falls out
    /// of the capacity is dropped from the front.
    pub fn push(&mut self, index: i64, interleaved: &[f32]) {
        let ch = self.channels;
        let frames = interleaved.len() / ch;
        if self.data.is_empty()
            || index < self.start
            || index - self.end() > self.capacity_frames as i64
        {
            self.data.clear();
            self.start = index;
        }
        let end = self.end();
        if index > end {
            self.data
                .extend(std::iter::repeat_n(0.0, (index - end) as usize * ch));
        }
        let skip = (end - index).clamp(0, frames as i64) as usize;
        self.data.extend(&interleaved[skip * ch..frames * ch]);
        let over = self.len_frames().saturating_sub(self.capacity_frames);
        if over > 0 {
            self.data.drain(..over * ch);
            self.start += over as i64;
        }
    }

    /// Sample `c` of frame `index`, if buffered.
    #[inline]
    pub fn sample(&self, index: i64, c: usize) -> Option<f32> {
        if index < self.start {
            return None;
        }
        self.data
            .get((index - self.start) as usize * self.channels + c)
            .copied()
    }

    /// Drops frames before `index`.
    pub fn trim_before(&mut self, index: i64) {
        if index > self.start {
            let n = ((index - self.start) as usize).min(self.len_frames());
            self.data.drain(..n * self.channels);
            self.start += n as i64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_read_gap_and_trim() {
        let mut jb = JitterBuffer::new(2, 1000);
        jb.push(100, &[1.0, 1.0, 2.0, 2.0]);
        jb.push(104, &[5.0, 5.0]);
        assert_eq!(jb.sample(101, 1), Some(2.0));
        assert_eq!(jb.sample(102, 0), Some(0.0));
        assert_eq!(jb.sample(104, 0), Some(5.0));
        assert_eq!(jb.sample(105, 0), None);
        assert_eq!(jb.sample(99, 0), None);
        jb.push(103, &[9.0, 9.0, 8.0, 8.0]); // overlap keeps the old frame 104
        assert_eq!(jb.sample(104, 0), Some(5.0));
        jb.trim_before(104);
        assert_eq!(jb.start(), 104);
        jb.push(10, &[1.0, 1.0]); // restart
        assert_eq!(jb.start(), 10);
        assert_eq!(jb.len_frames(), 1);
    }

    #[test]
    fn capacity_is_bounded() {
        let mut jb = JitterBuffer::new(1, 10);
        for k in 0..5 {
            jb.push(k * 4, &[0.5; 4]);
        }
        assert_eq!(jb.len_frames(), 10);
        assert_eq!(jb.end(), 20);
    }
}
