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
    /// `capacity_frames × channels` samples; the oldest frame is at ring slot
    /// `start_slot`, frame `start + k` at slot `(start_slot + k) mod capacity`.
    data: Vec<f32>,
    capacity_frames: usize,
    /// Ring slot of the oldest frame. Kept instead of taking `index mod capacity` for
    /// every sample read: a 64-bit division is a library call of ~100 instructions on
    /// the Pi Zero's ARMv6, which has no divide instruction (it was 9 % of the
    /// receiver's instructions; tools/arm_cost/receiver_cost.sh).
    start_slot: usize,
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
            start_slot: 0,
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

    /// Offset in `data` of frame `index`, which must be in `start..start + capacity`.
    #[inline]
    fn slot(&self, index: i64) -> usize {
        let mut s = self.start_slot + (index - self.start) as usize;
        if s >= self.capacity_frames {
            s -= self.capacity_frames;
        }
        s * self.channels
    }

    /// Moves the oldest frame to `new_start` (not before `start`), its slot with it.
    fn advance_start(&mut self, new_start: i64) {
        let n = (new_start - self.start) as u64;
        let cap = self.capacity_frames as u64;
        let n = if n < cap { n } else { n % cap };
        let mut s = self.start_slot as u64 + n;
        if s >= cap {
            s -= cap;
        }
        self.start_slot = s as usize;
        self.start = new_start;
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
            self.start_slot = 0;
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
            self.advance_start(new_end - cap);
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
            self.advance_start(self.start + n as i64);
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

    /// Random pushes (gaps, overlaps, restarts, long chunks) and trims against a plain
    /// model of the same rules: every frame reads back right wherever the ring wraps.
    #[test]
    fn the_ring_agrees_with_a_plain_model() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let cap = 37usize;
        let mut jb = JitterBuffer::new(2, cap);
        // The model: the frames held, oldest first, and the index of the first.
        let mut model: std::collections::VecDeque<f32> = Default::default();
        let mut model_start = 0i64;
        let mut next = 0i64;
        for step in 0..5000 {
            if rnd(5) == 0 {
                let to = model_start + rnd(cap as u64 + 5) as i64;
                jb.trim_before(to);
                while model_start < to && !model.is_empty() {
                    model.pop_front();
                    model_start += 1;
                }
            } else {
                let index = match rnd(10) {
                    0 => next + 40 + rnd(100) as i64, // a gap (maybe beyond the capacity)
                    1 => next - rnd(20) as i64,       // an overlap (or the past: restart)
                    _ => next,
                };
                let longest = if rnd(8) == 0 { 60 } else { 9 };
                let frames = 1 + rnd(longest) as usize;
                let x: Vec<f32> = (0..frames)
                    .flat_map(|i| {
                        let v = (step * 100 + i) as f32;
                        [v, -v]
                    })
                    .collect();
                jb.push(index, &x);
                // The rules of `push`, on the model.
                let end = model_start + model.len() as i64;
                if model.is_empty() || index < model_start || index.saturating_sub(end) > cap as i64
                {
                    model.clear();
                    model_start = index;
                }
                let skip = frames.saturating_sub(cap);
                let first = index + skip as i64;
                let end = model_start + model.len() as i64;
                for f in end..first + (frames - skip) as i64 {
                    let v = if f < first {
                        0.0
                    } else {
                        (step * 100 + skip + (f - first) as usize) as f32
                    };
                    model.push_back(v);
                }
                while model.len() > cap {
                    model.pop_front();
                    model_start += 1;
                }
                next = index + frames as i64;
            }
            assert_eq!(
                (jb.start(), jb.len_frames()),
                (model_start, model.len()),
                "step {step}"
            );
            for (k, v) in model.iter().enumerate() {
                let i = model_start + k as i64;
                assert_eq!(jb.sample(i, 0), Some(*v), "step {step}, frame {i}");
                assert_eq!(jb.sample(i, 1), Some(-*v), "step {step}, frame {i}");
            }
        }
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
