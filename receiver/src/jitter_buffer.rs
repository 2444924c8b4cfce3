//! The jitter buffer: decoded audio waiting to be played, indexed by decoded sample
//! index (source sample index + codec delay).
//!
//! A fixed ring of `capacity_frames` interleaved frames, allocated once: it lives in
//! the render callback, which must not allocate, so pushing, reading and trimming
//! never allocate or free.

/// Interleaved decoded audio for a contiguous range of sample indices.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    channels: usize,
    /// Index of the oldest frame held.
    start: i64,
    /// Frames held.
    len: usize,
    /// `capacity_frames × channels` samples; frame `i` is at `(i mod capacity) × channels`.
    data: Vec<f32>,
    capacity_frames: usize,
}

impl JitterBuffer {
    /// A buffer for `channels` channels (at least 1) holding at most `capacity_frames`
    /// frames (at least 1). Allocates its whole capacity here.
    pub fn new(channels: usize, capacity_frames: usize) -> Self {
        let channels = channels.max(1);
        let capacity_frames = capacity_frames.max(1);
        Self {
            channels,
            start: 0,
            len: 0,
            data: vec![0.0; capacity_frames * channels],
            capacity_frames,
        }
    }

    /// Interleaved channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Most frames held.
    pub fn capacity_frames(&self) -> usize {
        self.capacity_frames
    }

    /// Empties the buffer.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Index just past the newest frame.
    pub fn end(&self) -> i64 {
        self.start + self.len as i64
    }

    /// Index of the oldest frame.
    pub fn start(&self) -> i64 {
        self.start
    }

    /// Frames held.
    pub fn len_frames(&self) -> usize {
        self.len
    }

    #[inline]
    fn slot(&self, index: i64) -> usize {
        (index.rem_euclid(self.capacity_frames as i64) as usize) * self.channels
    }

    /// Adds frames starting at `index`. A gap is filled with silence, a chunk from the
    /// past (a reconnect to a restarted stream) or too far ahead clears the buffer,
    /// frames already held are kept, and what falls out of the capacity is dropped
    /// from the front. Allocation-free.
    pub fn push(&mut self, index: i64, interleaved: &[f32]) {
        let ch = self.channels;
        let frames = interleaved.len() / ch;
        if frames == 0 {
            return;
        }
        let cap = self.capacity_frames as i64;
        if self.len == 0 || index < self.start || index.saturating_sub(self.end()) > cap {
            self.start = index;
            self.len = 0;
        }
        // Only the newest `cap` frames of the chunk can be kept.
        let skip = frames.saturating_sub(self.capacity_frames);
        let index = index.saturating_add(skip as i64);
        let chunk = &interleaved[skip * ch..frames * ch];
        let chunk_end = index.saturating_add((frames - skip) as i64);
        let old_end = self.end();
        let new_end = old_end.max(chunk_end);
        // Drop the oldest frames that the new end pushes out of the capacity.
        if new_end - self.start > cap {
            self.start = new_end - cap;
        }
        // Write every frame from the old end (or the new start) to the new end: silence
        // in a gap before the chunk, the chunk's frames after it.
        for f in old_end.max(self.start)..new_end {
            let s = self.slot(f);
            if f < index {
                self.data[s..s + ch].fill(0.0);
            } else {
                let src = (f - index) as usize * ch;
                self.data[s..s + ch].copy_from_slice(&chunk[src..src + ch]);
            }
        }
        self.len = (new_end - self.start) as usize;
    }

    /// Sample `c` of frame `index`, if buffered.
    #[inline]
    pub fn sample(&self, index: i64, c: usize) -> Option<f32> {
        if index < self.start || index >= self.end() || c >= self.channels {
            return None;
        }
        Some(self.data[self.slot(index) + c])
    }

    /// Drops frames before `index`.
    pub fn trim_before(&mut self, index: i64) {
        if index > self.start {
            let n = ((index - self.start) as usize).min(self.len);
            self.start += n as i64;
            self.len -= n;
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
        assert_eq!(jb.sample(103, 0), Some(0.0));
        jb.trim_before(104);
        assert_eq!(jb.start(), 104);
        jb.push(10, &[1.0, 1.0]); // restart
        assert_eq!(jb.start(), 10);
        assert_eq!(jb.len_frames(), 1);
    }

    #[test]
    fn capacity_is_bounded_and_wraps() {
        let mut jb = JitterBuffer::new(1, 10);
        for k in 0..5 {
            let x: Vec<f32> = (0..4).map(|i| (k * 4 + i) as f32).collect();
            jb.push(k * 4, &x);
        }
        assert_eq!(jb.len_frames(), 10);
        assert_eq!(jb.end(), 20);
        for i in 10..20 {
            assert_eq!(jb.sample(i, 0), Some(i as f32));
        }
        assert_eq!(jb.sample(9, 0), None);
        // A chunk longer than the capacity keeps its newest frames.
        let x: Vec<f32> = (0..25).map(|i| i as f32).collect();
        jb.push(100, &x);
        assert_eq!((jb.start(), jb.end()), (115, 125));
        assert_eq!(jb.sample(115, 0), Some(15.0));
        // Far ahead restarts.
        jb.push(10_000, &[7.0]);
        assert_eq!((jb.start(), jb.len_frames()), (10_000, 1));
        // Extreme indices neither panic nor overflow.
        jb.push(i64::MAX - 2, &[1.0, 2.0]);
        jb.push(i64::MIN, &[1.0]);
        let _ = jb.sample(i64::MIN, 0);
        let _ = jb.sample(i64::MAX, 0);
    }

    #[test]
    fn gaps_longer_than_the_capacity_restart() {
        let mut jb = JitterBuffer::new(1, 8);
        jb.push(0, &[1.0; 4]);
        jb.push(6, &[2.0; 2]);
        assert_eq!(jb.len_frames(), 8);
        assert_eq!(jb.sample(4, 0), Some(0.0));
        jb.push(12, &[3.0; 2]);
        assert_eq!((jb.start(), jb.end()), (6, 14));
        assert_eq!(jb.sample(8, 0), Some(0.0));
        assert_eq!(jb.sample(12, 0), Some(3.0));
    }
}
