//! The `null` backend: an output that discards audio and a microphone that hears
//! silence, both paced in real time by the clock (10 ms blocks on a thread).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{AudioError, BackendConfig, CaptureFn, Microphone, RenderFn, Sink, StreamFormat};
use syncstream_shared::time::{samples_to_us, Clock};

const BLOCK_MS: u64 = 10;

/// A thread that calls `tick(block_index)` every [`BLOCK_MS`] of `clock` time.
pub(crate) struct PacedThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl PacedThread {
    pub(crate) fn spawn(
        name: &str,
        clock: Arc<dyn Clock>,
        mut tick: impl FnMut(i64) + Send + 'static,
    ) -> Result<Self, std::io::Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let start = clock.now_us();
                let mut next = start;
                while !stop2.load(Ordering::Relaxed) {
                    tick(next);
                    next += BLOCK_MS as i64 * 1000;
                    let wait = next - clock.now_us();
                    if wait > 0 {
                        std::thread::sleep(Duration::from_micros(wait as u64));
                    }
                }
            })?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }

    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for PacedThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Frames in one block of [`BLOCK_MS`] at `rate`.
pub(crate) fn block_frames(rate: u32) -> usize {
    (rate as u64 * BLOCK_MS / 1000) as usize
}

/// Discards audio.
pub struct NullSink {
    cfg: BackendConfig,
    thread: Option<PacedThread>,
}

/// Opens the null sink.
pub fn open_sink(cfg: &BackendConfig) -> Result<Box<dyn Sink>, AudioError> {
    Ok(Box::new(NullSink {
        cfg: cfg.clone(),
        thread: None,
    }))
}

impl Sink for NullSink {
    fn start(&mut self, mut render: RenderFn) -> Result<(), AudioError> {
        let fmt = self.cfg.format;
        let mut buf = vec![0.0f32; block_frames(fmt.sample_rate) * fmt.channels as usize];
        let t = PacedThread::spawn("null-sink", self.cfg.clock.clone(), move |now| {
            render(&mut buf, now);
        })
        .map_err(|e| AudioError::new("null", "null", e))?;
        self.thread = Some(t);
        Ok(())
    }
    fn stop(&mut self) -> Result<(), AudioError> {
        if let Some(mut t) = self.thread.take() {
            t.stop();
        }
        Ok(())
    }
    fn format(&self) -> StreamFormat {
        self.cfg.format
    }
}

/// Hears silence.
pub struct NullMicrophone {
    cfg: BackendConfig,
    thread: Option<PacedThread>,
}

/// Opens the null microphone.
pub fn open_microphone(cfg: &BackendConfig) -> Result<Box<dyn Microphone>, AudioError> {
    Ok(Box::new(NullMicrophone {
        cfg: cfg.clone(),
        thread: None,
    }))
}

impl Microphone for NullMicrophone {
    fn start(&mut self, mut capture: CaptureFn) -> Result<(), AudioError> {
        let rate = self.cfg.format.sample_rate;
        let n = block_frames(rate);
        let buf = vec![0.0f32; n];
        let t = PacedThread::spawn("null-mic", self.cfg.clock.clone(), move |now| {
            capture(&buf, now - samples_to_us(n as i64, rate));
        })
        .map_err(|e| AudioError::new("null", "null", e))?;
        self.thread = Some(t);
        Ok(())
    }
    fn stop(&mut self) -> Result<(), AudioError> {
        if let Some(mut t) = self.thread.take() {
            t.stop();
        }
        Ok(())
    }
    fn sample_rate(&self) -> u32 {
        self.cfg.format.sample_rate
    }
}
