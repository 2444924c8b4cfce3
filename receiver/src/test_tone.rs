//! Calibration test tones: play a test signal through the receiver's real output path,
//! record the microphone over it and measure the device's output latency.
//!
//! On `{"cmd":"test_tone","signal":"sweep"|"mls",...}` the receiver
//! 1. builds the signal ([`syncstream_calibration::TestSignal`], [`signal_for`]) and
//!    picks a local DAC time for its sample 0, [`LEAD_US`] ahead (beyond what the sink
//!    has already rendered);
//! 2. hands the signal to the render callback, whose [`ToneOverlay`] replaces the music
//!    by it over its span (music faded out and back in over [`MUSIC_FADE_FRAMES`], no
//!    allocation), and records, on the control side, the microphone blocks the capture
//!    callback delivers ([`ToneRecorder`]) from [`PRE_ROLL_US`] before sample 0's DAC
//!    time until the whole response is in;
//! 3. measures with [`syncstream_calibration::analyse`] ([`ToneJob::run`], off the
//!    control task), the recording's alignment being `(ADC time of its first sample −
//!    DAC time of signal sample 0) × 48 kHz`, both on the local clock;
//! 4. publishes a [`CalibrationResult`] on `syncstream/calibration/<device>`.
//!
//! While a test tone is armed, and for [`DRIFT_QUIET_US`] after it, the drift detector
//! is paused ([`ToneSession::blocks_drift`]) so that the test signal never reaches the
//! sync controller as a drift measurement.

use std::sync::Arc;

use syncstream_calibration::onset::OnsetParams;
use syncstream_calibration::{
    analyse, MlsParams, SignalKind, SignalParams, SweepParams, TestSignal, SAMPLE_RATE,
};
use syncstream_protocol::messages::{CalibrationResult, TestToneRequest};

/// How far ahead of now signal sample 0 is scheduled, µs (the sink renders ahead of
/// the DAC by its buffer; 400 ms covers ALSA periods and the virtual room).
pub const LEAD_US: i64 = 400_000;
/// Recording starts this long before signal sample 0's DAC time, µs.
pub const PRE_ROLL_US: i64 = 10_000;
/// Music fades out before and back in after the test signal over this many frames
/// (20 ms at 48 kHz).
pub const MUSIC_FADE_FRAMES: f64 = 960.0;
/// The drift detector stays paused this long after a test tone ends, µs (its ~2 s
/// window must no longer contain the signal).
pub const DRIFT_QUIET_US: i64 = 3_000_000;
/// Extra time allowed for the recording to complete beyond its nominal end, µs.
pub const COMPLETION_SLACK_US: i64 = 3_000_000;
/// Longest output latency a test tone listens for, ms.
pub const MAX_LISTEN_MS: f64 = 2000.0;

/// The render half of a test tone: replaces the music by the signal over its span.
/// Lives in the render callback; arming and disarming move an `Arc` in and out, so
/// nothing is allocated or freed there.
#[derive(Debug, Default)]
pub struct ToneOverlay {
    samples: Option<Arc<[f32]>>,
    start_dac_us: i64,
}

impl ToneOverlay {
    /// Plays `samples` (mono, 48 kHz) from local DAC time `start_dac_us`; returns the
    /// signal it replaces, if any (to be freed elsewhere).
    pub fn arm(&mut self, samples: Arc<[f32]>, start_dac_us: i64) -> Option<Arc<[f32]>> {
        self.start_dac_us = start_dac_us;
        self.samples.replace(samples)
    }

    /// Stops; returns the signal (to be freed elsewhere).
    pub fn disarm(&mut self) -> Option<Arc<[f32]>> {
        self.samples.take()
    }

    /// Whether a signal is armed.
    pub fn active(&self) -> bool {
        self.samples.is_some()
    }

    /// Replaces `out` (interleaved, `channels` per frame, first frame at local
    /// `dac_time_us`) by the test signal over its span, fading the music out over
    /// [`MUSIC_FADE_FRAMES`] before the signal and back in after it. Does nothing when
    /// no test tone is armed. Allocation-free.
    pub fn overlay(&self, out: &mut [f32], dac_time_us: i64, channels: usize) {
        let Some(samples) = &self.samples else {
            return;
        };
        if channels == 0 {
            return;
        }
        let fs = SAMPLE_RATE as f64;
        let len = samples.len() as f64;
        // Signal index of this block's first frame (fractional, rounded: the sink's
        // blocks are on the 48 kHz grid of the same clock).
        let first = ((dac_time_us as f64 - self.start_dac_us as f64) * fs / 1e6).round();
        for (j, frame) in out.chunks_exact_mut(channels).enumerate() {
            let i = first + j as f64;
            // Distance outside the signal's span, frames (0 inside it).
            let outside = if i < 0.0 {
                -i
            } else if i >= len {
                i - len + 1.0
            } else {
                0.0
            };
            let music_gain = (outside / MUSIC_FADE_FRAMES).min(1.0) as f32;
            let signal = if outside == 0.0 {
                samples.get(i as usize).copied().unwrap_or(0.0)
            } else {
                0.0
            };
            for s in frame.iter_mut() {
                *s = *s * music_gain + signal;
            }
        }
    }
}

/// The microphone recording of a test tone (control side): keeps the samples from
/// local time `record_from_us` on, up to `record_len` samples.
#[derive(Debug, Clone, Default)]
pub struct ToneRecorder {
    record_from_us: i64,
    record_len: usize,
    recording: Vec<f32>,
    first_adc_us: Option<f64>,
    mic_rate: u32,
}

impl ToneRecorder {
    /// Records `record_len` samples from local time `record_from_us`.
    pub fn new(record_from_us: i64, record_len: usize) -> Self {
        Self {
            record_from_us,
            record_len,
            recording: Vec::with_capacity(record_len),
            first_adc_us: None,
            mic_rate: 0,
        }
    }

    /// Keeps the microphone samples (mono, `rate` Hz, first one taken at local
    /// `adc_time_us`) that fall in the recording span.
    pub fn capture(&mut self, block: &[f32], adc_time_us: i64, rate: u32) {
        self.mic_rate = rate;
        if rate == 0 || self.recording.len() >= self.record_len {
            return;
        }
        let dt = 1e6 / rate as f64;
        let skip = if self.first_adc_us.is_none() {
            let end_us = adc_time_us as f64 + block.len() as f64 * dt;
            if end_us <= self.record_from_us as f64 {
                return;
            }
            let skip = (((self.record_from_us as f64 - adc_time_us as f64) / dt)
                .ceil()
                .max(0.0)) as usize;
            self.first_adc_us = Some(adc_time_us as f64 + skip as f64 * dt);
            skip
        } else {
            0
        };
        let room = self.record_len - self.recording.len();
        let from = skip.min(block.len());
        let take = (block.len() - from).min(room);
        self.recording.extend_from_slice(&block[from..from + take]);
    }

    /// Whether the recording holds all it should.
    pub fn complete(&self) -> bool {
        self.recording.len() >= self.record_len
    }

    /// Samples recorded so far.
    pub fn len(&self) -> usize {
        self.recording.len()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.recording.is_empty()
    }

    /// Microphone rate seen, Hz (0 before any block).
    pub fn mic_rate(&self) -> u32 {
        self.mic_rate
    }

    /// The recording and the local ADC time of its first sample, µs.
    pub fn finish(self) -> (Vec<f32>, Option<f64>) {
        (self.recording, self.first_adc_us)
    }
}

/// A test tone in progress on the control side.
#[derive(Debug)]
pub struct ToneSession {
    /// The request.
    pub request: TestToneRequest,
    /// The signal played.
    pub signal: TestSignal,
    /// Local DAC time of signal sample 0, µs.
    pub start_dac_us: i64,
    /// The microphone recording.
    pub recorder: ToneRecorder,
    /// Local time by which the recording must be complete, µs.
    pub deadline_us: i64,
    /// Speaker-to-microphone distance, m.
    pub mic_distance_m: f64,
}

impl ToneSession {
    /// Prepares a test tone for `req` at local time `now_us` on a device whose profile
    /// says `base_latency_ms` and `mic_distance_m`; the signal starts [`LEAD_US`] from
    /// now.
    ///
    /// Errors: an unknown signal or out-of-range parameters (see [`signal_for`]).
    pub fn new(
        req: &TestToneRequest,
        now_us: i64,
        base_latency_ms: f64,
        mic_distance_m: f64,
    ) -> Result<Self, String> {
        let signal = signal_for(req)?;
        let max_latency_ms = req
            .max_latency_ms
            .filter(|m| m.is_finite() && *m > 0.0)
            .unwrap_or(base_latency_ms + 500.0)
            .min(MAX_LISTEN_MS);
        let pre_roll = (PRE_ROLL_US as f64 * SAMPLE_RATE as f64 / 1e6).round() as usize;
        let record_samples = signal.recording_samples(max_latency_ms) + pre_roll;
        let start_dac_us = now_us + LEAD_US;
        let record_us = (record_samples as f64 * 1e6 / SAMPLE_RATE as f64) as i64;
        Ok(Self {
            request: req.clone(),
            start_dac_us,
            recorder: ToneRecorder::new(start_dac_us - PRE_ROLL_US, record_samples),
            deadline_us: start_dac_us - PRE_ROLL_US + record_us + COMPLETION_SLACK_US,
            mic_distance_m,
            signal,
        })
    }

    /// The samples to play, shared with the render callback.
    pub fn samples(&self) -> Arc<[f32]> {
        Arc::from(self.signal.samples.as_slice())
    }

    /// The measurement job once the recording is over (complete, or the deadline
    /// passed).
    ///
    /// Errors: the microphone delivered nothing or ran at another rate, or the
    /// recording is incomplete.
    pub fn into_job(self) -> Result<ToneJob, String> {
        let mic_rate = self.recorder.mic_rate();
        let complete = self.recorder.complete();
        let recorded = self.recorder.len();
        let wanted = self.recorder.record_len;
        let (recording, first_adc_us) = self.recorder.finish();
        if mic_rate != SAMPLE_RATE {
            return Err(if mic_rate == 0 {
                "the microphone delivered no audio".to_string()
            } else {
                format!("the microphone runs at {mic_rate} Hz; calibration needs {SAMPLE_RATE} Hz")
            });
        }
        let Some(first_adc_us) = first_adc_us.filter(|_| complete) else {
            return Err(format!(
                "the microphone recorded {recorded} of {wanted} samples in time"
            ));
        };
        Ok(ToneJob {
            offset_samples: (first_adc_us - self.start_dac_us as f64) * SAMPLE_RATE as f64 / 1e6,
            signal: self.signal,
            recording,
            mic_distance_m: self.mic_distance_m,
            include_ir: self.request.include_ir == Some(true),
        })
    }
}

/// Whether the drift detector must pause at local time `now_us`: a test tone is armed,
/// or one ended less than [`DRIFT_QUIET_US`] before (`quiet_until_us`).
pub fn blocks_drift(active: bool, quiet_until_us: i64, now_us: i64) -> bool {
    active || now_us < quiet_until_us
}

/// The measurement of a test tone (run off the control task).
#[derive(Debug)]
pub struct ToneJob {
    signal: TestSignal,
    recording: Vec<f32>,
    offset_samples: f64,
    mic_distance_m: f64,
    include_ir: bool,
}

impl ToneJob {
    /// Measures the latency from the recording (deconvolution, onset).
    ///
    /// Errors: no test signal in the recording, or an implausible measurement.
    pub fn run(self) -> Result<CalibrationResult, String> {
        let a = analyse(
            &self.signal,
            &self.recording,
            self.offset_samples,
            self.mic_distance_m,
            &OnsetParams::default(),
        )
        .map_err(|e| e.to_string())?;
        let (ir, ir_origin_samples) = if self.include_ir {
            let ms = SAMPLE_RATE as usize / 1000;
            let from = a.onset.index.saturating_sub(10 * ms);
            let to = (a.onset.index + 60 * ms).min(a.ir.len());
            (
                a.ir.get(from..to).map(|x| x.to_vec()),
                Some(a.ir_origin_samples + from as f64),
            )
        } else {
            (None, None)
        };
        let m = a.measurement;
        Ok(CalibrationResult {
            ir,
            ir_origin_samples,
            latency_ms: Some(m.latency_ms),
            uncertainty_ms: Some(m.uncertainty_ms),
            confidence: Some(m.confidence),
            onset_ms: Some(m.onset_ms),
            peak_to_noise_db: Some(m.peak_to_noise_db),
            signal: Some(m.signal.as_str().to_string()),
            ..Default::default()
        })
    }
}

/// Builds the test signal a request asks for.
///
/// Errors: an unknown signal name or parameters out of range (the message says which).
pub fn signal_for(req: &TestToneRequest) -> Result<TestSignal, String> {
    let kind: SignalKind = req
        .signal
        .as_deref()
        .unwrap_or("sweep")
        .parse()
        .map_err(|e: syncstream_calibration::CalibrationError| e.to_string())?;
    let params = match kind {
        SignalKind::Sweep => {
            let mut p = SweepParams::default();
            if let Some(l) = req.level_dbfs {
                p.level_dbfs = l;
            }
            if let Some(d) = req.duration_ms {
                p.length_ms = d;
            }
            SignalParams::Sweep(p)
        }
        SignalKind::Mls => {
            let mut p = MlsParams::default();
            if let Some(l) = req.level_dbfs {
                p.level_dbfs = l;
            }
            if let Some(s) = req.sequence {
                p.sequence = s;
            }
            if let Some(d) = req.duration_ms {
                // Periods analysed to fill about `d` ms after the pre-roll period.
                let period_ms = p.period_len() as f64 * 1000.0 / SAMPLE_RATE as f64;
                if !(d.is_finite() && d > 0.0 && d <= 60_000.0) {
                    return Err(format!("duration_ms must be between 0 and 60000, got {d}"));
                }
                p.periods = ((d / period_ms).round() as u32).saturating_sub(1).max(1);
            }
            SignalParams::Mls(p)
        }
    };
    TestSignal::new(params).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_replaces_music_by_the_signal_with_fades() {
        let mut t = ToneOverlay::default();
        let sig: Arc<[f32]> = vec![0.5; 4800].into();
        assert!(t.arm(sig, 1_000_000).is_none());
        // A block of music (1.0) starting 10 ms before the signal: fades towards 0.
        let mut out = vec![1.0f32; 2 * 480];
        t.overlay(&mut out, 990_000, 2);
        assert_eq!(out[0], 0.5); // 480 frames before: gain 480/960
        assert!(out.chunks(2).all(|f| f[0] == f[1]));
        // Inside the span: exactly the signal.
        let mut out = vec![1.0f32; 2 * 480];
        t.overlay(&mut out, 1_010_000, 2);
        assert!(out.iter().all(|&s| s == 0.5));
        // Well after the span: music untouched.
        let mut out = vec![1.0f32; 2 * 480];
        t.overlay(&mut out, 1_200_000, 2);
        assert!(out.iter().all(|&s| s == 1.0));
        // Disarmed: untouched, and the signal comes back to be freed elsewhere.
        assert!(t.disarm().is_some());
        let mut out = vec![1.0f32; 4];
        t.overlay(&mut out, 1_010_000, 2);
        assert!(out.iter().all(|&s| s == 1.0));
    }

    #[test]
    fn capture_keeps_the_span_and_its_first_adc_time() {
        let mut t = ToneRecorder::new(990_000, 1000);
        // Before the span: ignored.
        t.capture(&[1.0; 480], 970_000, 48_000);
        assert!(t.is_empty());
        // A block straddling the start: from its 240th sample (5 ms in).
        let block: Vec<f32> = (0..480).map(|i| i as f32).collect();
        t.capture(&block, 985_000, 48_000);
        assert_eq!(t.recording[0], 240.0);
        assert_eq!(t.first_adc_us, Some(990_000.0));
        t.capture(&[2.0; 480], 995_000, 48_000);
        t.capture(&[3.0; 480], 1_005_000, 48_000);
        assert_eq!(t.len(), 1000);
        assert!(t.complete());
        let (rec, first) = t.finish();
        assert_eq!((rec.len(), first), (1000, Some(990_000.0)));
        assert!(blocks_drift(false, 2_000_000 + DRIFT_QUIET_US, 2_000_000));
        assert!(!blocks_drift(false, 2_000_000, 2_000_000));
    }

    #[test]
    fn bad_requests_are_errors() {
        let r = TestToneRequest {
            signal: Some("noise".into()),
            ..Default::default()
        };
        assert!(signal_for(&r).unwrap_err().contains("noise"));
        let r = TestToneRequest {
            signal: Some("sweep".into()),
            level_dbfs: Some(20.0),
            ..Default::default()
        };
        assert!(signal_for(&r).is_err());
    }
}
