//! An ALSA capture device (AUX or optical input) through cpal.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use syncstream_audio::alsa::{start_capture, AlsaCapture};
use syncstream_shared::time::{MonotonicClock, STREAM_SAMPLE_RATE};

use super::resample::StreamResampler;
use super::AudioSource;

/// Audio the ring between cpal's callback and [`AudioSource::read`] holds, s.
const RING_SECONDS: usize = 2;
/// How long `read` waits for audio before it reports the device as stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(5);

struct Ring {
    samples: VecDeque<f32>,
    /// Samples dropped because the reader fell behind.
    overflowed: u64,
}

/// Captures stereo from an ALSA device at 48 kHz (or the device's rate,
/// resampled). cpal's callback writes into a bounded ring (oldest audio is
/// dropped if the reader falls more than two seconds behind) and `read` blocks
/// until audio arrives.
pub struct AlsaSource {
    capture: AlsaCapture,
    ring: Arc<(Mutex<Ring>, Condvar)>,
    rs: StreamResampler,
    chunk: Vec<f32>,
    reported_overflow: u64,
}

impl AlsaSource {
    /// Opens `device` (`None`: ALSA's default) for stereo capture. Errors name the
    /// device and the reason (no such device, no usable configuration, busy).
    pub fn open(device: Option<&str>) -> anyhow::Result<Self> {
        // Sized from the highest rate a device may pick, so the callback never
        // grows it.
        let capacity = 192_000 * 2 * RING_SECONDS;
        let ring = Arc::new((
            Mutex::new(Ring {
                samples: VecDeque::with_capacity(capacity),
                overflowed: 0,
            }),
            Condvar::new(),
        ));
        let ring2 = ring.clone();
        let capture = start_capture(
            device,
            STREAM_SAMPLE_RATE,
            2,
            true,
            Arc::new(MonotonicClock),
            Box::new(move |x: &[f32], _adc_time_us: i64| {
                let (m, cv) = &*ring2;
                if let Ok(mut r) = m.lock() {
                    let free = r.samples.capacity() - r.samples.len();
                    if x.len() > free {
                        let drop = (x.len() - free).min(r.samples.len());
                        r.samples.drain(..drop);
                        r.overflowed += drop as u64;
                    }
                    let take = x.len().min(r.samples.capacity() - r.samples.len());
                    r.samples.extend(&x[x.len() - take..]);
                }
                cv.notify_one();
            }),
        )?;
        let rs = StreamResampler::new(capture.sample_rate())
            .map_err(|e| anyhow!("ALSA device {}: {e}", capture.device()))?;
        Ok(Self {
            capture,
            ring,
            rs,
            chunk: Vec::with_capacity(capacity),
            reported_overflow: 0,
        })
    }
}

impl AudioSource for AlsaSource {
    fn read(&mut self, out: &mut [f32]) -> anyhow::Result<usize> {
        if out.len() < 2 {
            return Ok(0);
        }
        while self.rs.available() < 2 {
            {
                let (m, cv) = &*self.ring;
                let guard = m.lock().map_err(|_| {
                    anyhow!(
                        "ALSA device {}: capture ring poisoned",
                        self.capture.device()
                    )
                })?;
                let (mut r, timeout) = cv
                    .wait_timeout_while(guard, STALL_TIMEOUT, |r| r.samples.len() < 2)
                    .map_err(|_| {
                        anyhow!(
                            "ALSA device {}: capture ring poisoned",
                            self.capture.device()
                        )
                    })?;
                if timeout.timed_out() && r.samples.len() < 2 {
                    anyhow::bail!(
                        "ALSA device {}: no audio captured for {} s",
                        self.capture.device(),
                        STALL_TIMEOUT.as_secs()
                    );
                }
                let n = r.samples.len() / 2 * 2;
                self.chunk.clear();
                self.chunk.extend(r.samples.drain(..n));
                if r.overflowed > self.reported_overflow {
                    tracing::warn!(
                        device = %self.capture.device(),
                        dropped_samples = r.overflowed - self.reported_overflow,
                        "ALSA source: reader fell behind, oldest audio dropped"
                    );
                    self.reported_overflow = r.overflowed;
                }
            }
            self.rs.push(&self.chunk)?;
        }
        Ok(self.rs.pop(out) / 2)
    }

    fn describe(&self) -> String {
        format!(
            "ALSA capture {} ({} Hz, stereo{})",
            self.capture.device(),
            self.capture.sample_rate(),
            if self.capture.sample_rate() != STREAM_SAMPLE_RATE {
                ", resampled to 48000 Hz"
            } else {
                ""
            }
        )
    }

    fn is_live(&self) -> bool {
        true
    }
}

/// Opens the ALSA stream `alsa:///?name=..[&device=hw:1]` (ALSA's default device
/// without `device`).
///
/// Errors: as [`AlsaSource::open`].
pub fn open_uri(
    uri: &mut super::uri::StreamUri,
    _opts: &super::SourceOptions,
) -> anyhow::Result<Box<dyn AudioSource>> {
    let device = uri.take("device");
    uri.finish()?;
    Ok(Box::new(AlsaSource::open(device.as_deref())?))
}
