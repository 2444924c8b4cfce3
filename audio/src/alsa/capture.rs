//! ALSA capture through cpal: a general interleaved capture stream (used by the
//! transmitter's `alsa` source) and the mono [`Microphone`] built on it.

use std::sync::Arc;
use std::time::Duration;

use cpal::traits::{DeviceTrait, StreamTrait};
use cpal::{FromSample, SizedSample};

use super::convert::{read_frames, SCRATCH_FRAMES};
use super::{
    instant_diff_us, label, log_opened, resolve, with_sample_type, Chosen, Direction, ErrorLog,
    BACKEND,
};
use crate::{AudioError, BackendConfig, CaptureFn, Microphone};
use syncstream_shared::time::{samples_to_us, Clock};

const BUILD_TIMEOUT: Duration = Duration::from_secs(5);

/// Receives interleaved f32 blocks (`channels` of [`AlsaCapture`]) whose first
/// frame was sampled at `adc_time_us` (µs, on the clock given to [`start_capture`]).
pub type InterleavedCaptureFn = Box<dyn FnMut(&[f32], i64) + Send>;

/// A running ALSA capture stream; capture stops when it is dropped.
pub struct AlsaCapture {
    stream: cpal::Stream,
    label: String,
    sample_rate: u32,
    channels: u16,
}

impl AlsaCapture {
    /// Sample rate of the delivered blocks, Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Channels of the delivered (interleaved) blocks.
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Device name (or `default`).
    pub fn device(&self) -> &str {
        &self.label
    }
}

impl Drop for AlsaCapture {
    fn drop(&mut self) {
        if let Err(e) = self.stream.pause() {
            tracing::debug!(device = %self.label, "pausing capture: {e}");
        }
    }
}

/// Starts capturing from `device` (`None`: ALSA's default) and delivers
/// interleaved f32 blocks with `channels` channels to `capture` from cpal's
/// thread (device channels are mapped: a stereo device to mono is the mean of
/// both, a mono device to stereo is duplicated, more channels are folded).
///
/// The device is opened at `rate_hz`; if it cannot do that rate and
/// `allow_other_rate` is set, at 48 kHz, 44.1 kHz or its maximum instead
/// ([`AlsaCapture::sample_rate`] tells which), otherwise it is an error naming
/// the device and the configurations it supports.
pub fn start_capture(
    device: Option<&str>,
    rate_hz: u32,
    channels: u16,
    allow_other_rate: bool,
    clock: Arc<dyn Clock>,
    capture: InterleavedCaptureFn,
) -> Result<AlsaCapture, AudioError> {
    start_capture_counting(
        device,
        rate_hz,
        channels,
        allow_other_rate,
        clock,
        capture,
        Arc::default(),
    )
}

/// [`start_capture`], counting the device's xruns in `xruns`.
pub fn start_capture_counting(
    device: Option<&str>,
    rate_hz: u32,
    channels: u16,
    allow_other_rate: bool,
    clock: Arc<dyn Clock>,
    capture: InterleavedCaptureFn,
    xruns: Arc<std::sync::atomic::AtomicU64>,
) -> Result<AlsaCapture, AudioError> {
    let lbl = label(device);
    if channels == 0 || rate_hz == 0 {
        return Err(AudioError::new(
            BACKEND,
            lbl,
            format!("invalid capture format: {channels} channels at {rate_hz} Hz"),
        ));
    }
    let (dev, chosen) = resolve(
        device,
        Direction::Input,
        rate_hz,
        channels,
        allow_other_rate,
    )?;
    log_opened(&lbl, Direction::Input, &chosen);
    let stream = with_sample_type!(chosen.sample_format, T =>
    build::<T>(&dev, &lbl, chosen, channels, clock, capture, xruns)?,
    else return Err(AudioError::new(
        BACKEND,
        lbl,
        format!("unsupported sample format {}", chosen.sample_format),
    )));
    stream
        .play()
        .map_err(|e| AudioError::new(BACKEND, &lbl, format!("cannot start capture: {e}")))?;
    Ok(AlsaCapture {
        stream,
        label: lbl,
        sample_rate: chosen.sample_rate,
        channels,
    })
}

fn build<T>(
    dev: &cpal::Device,
    lbl: &str,
    chosen: Chosen,
    out_ch: u16,
    clock: Arc<dyn Clock>,
    mut capture: InterleavedCaptureFn,
    xruns: Arc<std::sync::atomic::AtomicU64>,
) -> Result<cpal::Stream, AudioError>
where
    T: SizedSample + Send + 'static,
    f32: FromSample<T>,
{
    let dev_ch = chosen.channels as usize;
    let out_ch = out_ch as usize;
    let rate = chosen.sample_rate;
    let mut scratch = vec![0.0f32; SCRATCH_FRAMES * out_ch];
    let data_cb = move |data: &[T], info: &cpal::InputCallbackInfo| {
        let ts = info.timestamp();
        // The first frame of `data` was sampled this long before the callback.
        let lag_us = instant_diff_us(ts.callback, ts.capture);
        let base_us = clock.now_us() - lag_us;
        let frames = data.len() / dev_ch;
        let mut done = 0usize;
        while done < frames {
            let n = (frames - done).min(SCRATCH_FRAMES);
            let buf = &mut scratch[..n * out_ch];
            read_frames(
                &data[done * dev_ch..(done + n) * dev_ch],
                dev_ch,
                buf,
                out_ch,
            );
            capture(buf, base_us + samples_to_us(done as i64, rate));
            done += n;
        }
    };
    let mut errors = ErrorLog::new(lbl, "capture", xruns);
    let err_cb = move |e: cpal::Error| errors.log(&e);
    dev.build_input_stream::<T, _, _>(chosen.stream_config(), data_cb, err_cb, Some(BUILD_TIMEOUT))
        .map_err(|e| AudioError::new(BACKEND, lbl, format!("cannot start capture: {e}")))
}

/// An ALSA capture device as a mono microphone at `cfg.format.sample_rate`, or, when
/// the device cannot do that rate, at 48 kHz, 44.1 kHz or its highest rate
/// ([`Microphone::sample_rate`] tells which; the receiver resamples it).
pub struct AlsaMicrophone {
    cfg: BackendConfig,
    label: String,
    rate_hz: u32,
    running: Option<AlsaCapture>,
    xruns: Arc<std::sync::atomic::AtomicU64>,
}

impl AlsaMicrophone {
    /// Checks that the device named in `cfg` (or ALSA's default) exists and can
    /// capture, at `cfg.format.sample_rate` or another rate (an I²S microphone that
    /// only does 44.1 kHz). Nothing is captured until [`Microphone::start`].
    pub fn open(cfg: &BackendConfig) -> Result<Self, AudioError> {
        let lbl = label(cfg.device.as_deref());
        if cfg.format.sample_rate == 0 {
            return Err(AudioError::new(BACKEND, lbl, "invalid sample rate 0 Hz"));
        }
        let (_, chosen) = resolve(
            cfg.device.as_deref(),
            Direction::Input,
            cfg.format.sample_rate,
            1,
            true,
        )?;
        if chosen.sample_rate != cfg.format.sample_rate {
            tracing::info!(
                device = %lbl,
                rate_hz = chosen.sample_rate,
                "the microphone cannot capture at {} Hz; capturing at {} Hz",
                cfg.format.sample_rate,
                chosen.sample_rate
            );
        }
        Ok(Self {
            cfg: cfg.clone(),
            label: lbl,
            rate_hz: chosen.sample_rate,
            running: None,
            xruns: Arc::default(),
        })
    }
}

impl Microphone for AlsaMicrophone {
    fn start(&mut self, capture: CaptureFn) -> Result<(), AudioError> {
        self.stop()?;
        let c = start_capture_counting(
            self.cfg.device.as_deref(),
            self.rate_hz,
            1,
            false,
            self.cfg.clock.clone(),
            capture,
            self.xruns.clone(),
        )?;
        tracing::debug!(device = %self.label, "microphone started");
        self.running = Some(c);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), AudioError> {
        self.running = None;
        Ok(())
    }

    fn sample_rate(&self) -> u32 {
        self.rate_hz
    }

    fn xrun_counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.xruns.clone()
    }
}
