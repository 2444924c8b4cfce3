//! ALSA output through cpal.

use std::sync::Arc;
use std::time::Duration;

use cpal::traits::{DeviceTrait, StreamTrait};
use cpal::{FromSample, SizedSample};

use super::convert::{write_frames, SCRATCH_FRAMES};
use super::mixer::HardwareMixer;
use super::{
    instant_diff_us, label, log_opened, resolve, with_sample_type, Chosen, Direction, ErrorLog,
    BACKEND,
};
use crate::{AudioError, BackendConfig, RenderFn, Sink, StreamFormat};
use syncstream_shared::time::{samples_to_us, Clock};

/// How long cpal may take to set a stream up.
const BUILD_TIMEOUT: Duration = Duration::from_secs(5);

/// An ALSA output device. Pulls `format` (interleaved f32) from the render
/// function and converts it to the device's sample format and channel count.
pub struct AlsaSink {
    cfg: BackendConfig,
    label: String,
    device: cpal::Device,
    chosen: Chosen,
    stream: Option<cpal::Stream>,
    xruns: Arc<std::sync::atomic::AtomicU64>,
    /// The card's playback volume element, when it has one.
    mixer: Option<HardwareMixer>,
    /// Why the running stream ended (set by its error callback).
    gone: Arc<std::sync::OnceLock<String>>,
}

impl AlsaSink {
    /// Opens the device named in `cfg` (or ALSA's default) and checks that it can
    /// play `cfg.format.sample_rate`. Nothing plays until [`Sink::start`].
    pub fn open(cfg: &BackendConfig) -> Result<Self, AudioError> {
        let lbl = label(cfg.device.as_deref());
        if cfg.format.channels == 0 || cfg.format.sample_rate == 0 {
            return Err(AudioError::new(
                BACKEND,
                lbl,
                format!(
                    "invalid format: {} channels at {} Hz",
                    cfg.format.channels, cfg.format.sample_rate
                ),
            ));
        }
        let (device, chosen) = resolve(
            cfg.device.as_deref(),
            Direction::Output,
            cfg.format.sample_rate,
            cfg.format.channels,
            false,
        )?;
        log_opened(&lbl, Direction::Output, &chosen);
        let mixer = HardwareMixer::find(cfg.device.as_deref());
        if let Some(m) = &mixer {
            tracing::info!(device = %lbl, control = m.control, element = m.element, "hardware volume");
        }
        Ok(Self {
            mixer,
            gone: Arc::default(),
            cfg: cfg.clone(),
            label: lbl,
            device,
            chosen,
            stream: None,
            xruns: Arc::default(),
        })
    }

    fn build<T>(&self, mut render: RenderFn) -> Result<cpal::Stream, AudioError>
    where
        T: SizedSample + FromSample<f32> + Send + 'static,
    {
        let src_ch = self.cfg.format.channels as usize;
        let dev_ch = self.chosen.channels as usize;
        let rate = self.chosen.sample_rate;
        let clock: Arc<dyn Clock> = self.cfg.clock.clone();
        let mut scratch = vec![0.0f32; SCRATCH_FRAMES * src_ch];
        let data_cb = move |data: &mut [T], info: &cpal::OutputCallbackInfo| {
            let ts = info.timestamp();
            // The first frame of `data` leaves the DAC this long after the callback.
            let lead_us = instant_diff_us(ts.playback, ts.callback);
            let base_us = clock.now_us() + lead_us;
            let frames = data.len() / dev_ch;
            let mut done = 0usize;
            while done < frames {
                let n = (frames - done).min(SCRATCH_FRAMES);
                let buf = &mut scratch[..n * src_ch];
                buf.fill(0.0);
                render(buf, base_us + samples_to_us(done as i64, rate));
                write_frames(
                    buf,
                    src_ch,
                    &mut data[done * dev_ch..(done + n) * dev_ch],
                    dev_ch,
                );
                done += n;
            }
        };
        let mut errors =
            ErrorLog::new(&self.label, "output", self.xruns.clone()).with_gone(self.gone.clone());
        let err_cb = move |e: cpal::Error| errors.log(&e);
        self.device
            .build_output_stream::<T, _, _>(
                self.chosen.stream_config(),
                data_cb,
                err_cb,
                Some(BUILD_TIMEOUT),
            )
            .map_err(|e| AudioError::new(BACKEND, &self.label, format!("cannot start output: {e}")))
    }
}

fn unsupported(label: &str, f: cpal::SampleFormat) -> AudioError {
    AudioError::new(BACKEND, label, format!("unsupported sample format {f}"))
}

impl Sink for AlsaSink {
    fn start(&mut self, render: RenderFn) -> Result<(), AudioError> {
        self.stop()?;
        self.gone = Arc::default();
        let stream = with_sample_type!(self.chosen.sample_format, T => self.build::<T>(render)?,
            else return Err(unsupported(&self.label, self.chosen.sample_format)));
        stream.play().map_err(|e| {
            AudioError::new(BACKEND, &self.label, format!("cannot start output: {e}"))
        })?;
        self.stream = Some(stream);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), AudioError> {
        if let Some(s) = self.stream.take() {
            if let Err(e) = s.pause() {
                tracing::debug!(device = %self.label, "pausing output: {e}");
            }
            drop(s);
        }
        Ok(())
    }

    fn format(&self) -> StreamFormat {
        self.cfg.format
    }

    fn xrun_counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.xruns.clone()
    }

    fn has_hardware_volume(&self) -> bool {
        self.mixer.is_some()
    }

    fn set_volume(&mut self, volume: f64, muted: bool) -> Result<(), AudioError> {
        match &self.mixer {
            Some(m) => m
                .set(volume, muted)
                .map_err(|e| AudioError::new(BACKEND, &self.label, e)),
            None => Ok(()),
        }
    }

    fn failure(&self) -> Option<String> {
        self.stream.as_ref()?;
        self.gone
            .get()
            .map(|e| format!("ALSA device {}: {e}", self.label))
    }
}

impl Drop for AlsaSink {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

// cpal streams must be Send (cpal asserts it per host); the sink relies on it.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<AlsaSink>();
};
