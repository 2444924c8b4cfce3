//! A live feed for sources that may go quiet (pipes, programs): a thread reads the
//! source and hands 20 ms blocks over a bounded channel; [`LiveFeed`] gives the pacer
//! what has arrived and silence while nothing has, so a stream whose writer stopped
//! keeps its timeline. The channel's bound is the back-pressure that paces a writer
//! faster than real time (a player writing a file into a pipe).

use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};
use std::time::Duration;

use tracing::{info, warn};

use super::AudioSource;

/// Blocks held between the reading thread and the pacer (0.5 s of audio).
pub const FEED_BLOCKS: usize = 25;
/// Frames per block.
pub const BLOCK_FRAMES: usize = 960;

/// Opens (or reopens) the source behind a feed.
pub type Opener = Box<dyn FnMut() -> anyhow::Result<Box<dyn AudioSource>> + Send>;

/// See the module docs.
pub struct LiveFeed {
    rx: Receiver<Vec<f32>>,
    block: Vec<f32>,
    pos: usize,
    description: String,
}

impl LiveFeed {
    /// Starts the reading thread: it calls `open`, reads until the source ends or
    /// fails, waits `retry`, and opens again, until the feed is dropped.
    ///
    /// Errors: the thread cannot be started.
    pub fn spawn(description: String, mut open: Opener, retry: Duration) -> anyhow::Result<Self> {
        let (tx, rx) = sync_channel::<Vec<f32>>(FEED_BLOCKS);
        let what = description.clone();
        std::thread::Builder::new()
            .name("live-source".into())
            .spawn(move || {
                let mut complained = false;
                loop {
                    match open() {
                        Ok(mut src) => {
                            complained = false;
                            loop {
                                let mut block = vec![0.0f32; BLOCK_FRAMES * 2];
                                match src.read(&mut block) {
                                    Ok(0) => {
                                        info!("{what}: ended; reopening");
                                        break;
                                    }
                                    Ok(n) => {
                                        block.truncate(n.min(BLOCK_FRAMES) * 2);
                                        if tx.send(block).is_err() {
                                            return; // the stream is gone
                                        }
                                    }
                                    Err(e) => {
                                        warn!("{what}: {e:#}; reopening");
                                        break;
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            if !complained {
                                warn!("{what}: {e:#}; retrying every {retry:?}");
                                complained = true;
                            }
                        }
                    }
                    // A dropped feed is noticed at the next send; meanwhile wait.
                    std::thread::sleep(retry);
                }
            })?;
        Ok(Self {
            rx,
            block: Vec::new(),
            pos: 0,
            description,
        })
    }
}

impl AudioSource for LiveFeed {
    fn read(&mut self, out: &mut [f32]) -> anyhow::Result<usize> {
        let want = out.len() / 2;
        if want == 0 {
            return Ok(0);
        }
        let mut frames = 0;
        while frames < want {
            if self.pos >= self.block.len() {
                match self.rx.try_recv() {
                    Ok(b) => {
                        self.block = b;
                        self.pos = 0;
                        continue;
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            let n = ((self.block.len() - self.pos) / 2).min(want - frames);
            out[frames * 2..(frames + n) * 2]
                .copy_from_slice(&self.block[self.pos..self.pos + n * 2]);
            self.pos += n * 2;
            frames += n;
        }
        if frames == 0 {
            // Nothing has arrived: silence, so the stream's timeline goes on.
            out[..want * 2].fill(0.0);
            return Ok(want);
        }
        Ok(frames)
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn is_live(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting(u32);
    impl AudioSource for Counting {
        fn read(&mut self, out: &mut [f32]) -> anyhow::Result<usize> {
            if self.0 == 0 {
                return Ok(0);
            }
            self.0 -= 1;
            out.fill(0.5);
            Ok(out.len() / 2)
        }
        fn describe(&self) -> String {
            "counting".into()
        }
        fn is_live(&self) -> bool {
            false
        }
    }

    #[test]
    fn gives_audio_then_silence_never_blocks() {
        let mut opened = 0;
        let mut feed = LiveFeed::spawn(
            "test".into(),
            Box::new(move || {
                opened += 1;
                Ok(Box::new(Counting(if opened == 1 { 3 } else { 0 })) as Box<dyn AudioSource>)
            }),
            Duration::from_millis(50),
        )
        .unwrap();
        let mut out = vec![1.0f32; 2 * 960];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut audio_frames = 0;
        while audio_frames < 3 * 960 {
            assert!(std::time::Instant::now() < deadline, "no audio arrived");
            let n = feed.read(&mut out).unwrap();
            assert!(n > 0, "a live feed never ends");
            if out[0] == 0.5 {
                audio_frames += n;
            } else {
                assert!(out[..n * 2].iter().all(|&s| s == 0.0));
                std::thread::yield_now();
            }
        }
        assert_eq!(audio_frames, 3 * 960);
        // The source ended: silence from now on.
        let n = feed.read(&mut out).unwrap();
        assert!(n > 0 && out[..n * 2].iter().all(|&s| s == 0.0));
    }
}
