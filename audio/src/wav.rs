//! The `wav` backend: an output that writes what it plays to a WAV file (32-bit
//! float), and a microphone that plays a WAV file back as if recorded. Both are paced
//! in real time by the clock.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::null::{block_frames, PacedThread};
use super::{AudioError, BackendConfig, CaptureFn, Microphone, RenderFn, Sink, StreamFormat};
use syncstream_shared::time::{samples_to_us, Clock};

/// Writes rendered audio to a WAV file.
pub struct WavSink {
    cfg: BackendConfig,
    path: PathBuf,
    thread: Option<PacedThread>,
    writer: Arc<Mutex<Option<hound::WavWriter<std::io::BufWriter<std::fs::File>>>>>,
}

/// Opens a WAV sink on `cfg.device` (a path, required).
pub fn open_sink(cfg: &BackendConfig) -> Result<Box<dyn Sink>, AudioError> {
    let path = cfg
        .device
        .clone()
        .ok_or_else(|| AudioError::new("wav", "-", "needs a file path as its device"))?;
    Ok(Box::new(WavSink {
        cfg: cfg.clone(),
        path: PathBuf::from(path),
        thread: None,
        writer: Arc::new(Mutex::new(None)),
    }))
}

impl Sink for WavSink {
    fn start(&mut self, mut render: RenderFn) -> Result<(), AudioError> {
        let fmt = self.cfg.format;
        let spec = hound::WavSpec {
            channels: fmt.channels,
            sample_rate: fmt.sample_rate,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let w = hound::WavWriter::create(&self.path, spec)
            .map_err(|e| AudioError::new("wav", self.path.display().to_string(), e))?;
        *self.writer.lock().unwrap() = Some(w);
        let writer = self.writer.clone();
        let mut buf = vec![0.0f32; block_frames(fmt.sample_rate) * fmt.channels as usize];
        let t = PacedThread::spawn("wav-sink", self.cfg.clock.clone(), move |now| {
            render(&mut buf, now);
            if let Some(w) = writer.lock().unwrap().as_mut() {
                for &s in &buf {
                    if w.write_sample(s).is_err() {
                        break;
                    }
                }
            }
        })
        .map_err(|e| AudioError::new("wav", self.path.display().to_string(), e))?;
        self.thread = Some(t);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), AudioError> {
        if let Some(mut t) = self.thread.take() {
            t.stop();
        }
        if let Some(w) = self.writer.lock().unwrap().take() {
            w.finalize()
                .map_err(|e| AudioError::new("wav", self.path.display().to_string(), e))?;
        }
        Ok(())
    }

    fn format(&self) -> StreamFormat {
        self.cfg.format
    }
}

impl Drop for WavSink {
    fn drop(&mut self) {
        let _ = Sink::stop(self);
    }
}

/// Plays a mono mix of a WAV file as microphone input (then silence).
pub struct WavMicrophone {
    cfg: BackendConfig,
    samples: Arc<Vec<f32>>,
    thread: Option<PacedThread>,
}

/// Opens a WAV microphone on `cfg.device` (a path to a WAV file at the configured rate).
pub fn open_microphone(cfg: &BackendConfig) -> Result<Box<dyn Microphone>, AudioError> {
    let path = cfg
        .device
        .clone()
        .ok_or_else(|| AudioError::new("wav", "-", "needs a file path as its device"))?;
    let audio = crate::decode::decode_file(std::path::Path::new(&path), cfg.format.sample_rate)
        .map_err(|e| AudioError::new("wav", path.clone(), format!("{e:#}")))?;
    Ok(Box::new(WavMicrophone {
        cfg: cfg.clone(),
        samples: Arc::new(audio.mono()),
        thread: None,
    }))
}

impl Microphone for WavMicrophone {
    fn start(&mut self, mut capture: CaptureFn) -> Result<(), AudioError> {
        let rate = self.cfg.format.sample_rate;
        let n = block_frames(rate);
        let samples = self.samples.clone();
        let mut pos = 0usize;
        let mut buf = vec![0.0f32; n];
        let clock: Arc<dyn Clock> = self.cfg.clock.clone();
        let t = PacedThread::spawn("wav-mic", clock, move |now| {
            for (i, s) in buf.iter_mut().enumerate() {
                *s = samples.get(pos + i).copied().unwrap_or(0.0);
            }
            pos += n;
            capture(&buf, now - samples_to_us(n as i64, rate));
        })
        .map_err(|e| AudioError::new("wav", "mic", e))?;
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
