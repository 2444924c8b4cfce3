//! Calibration test tones: play a test signal through the receiver's real output path,
//! record the microphone over it and measure the device's output latency.
//!
//! On `{"cmd":"test_tone","signal":"sweep"|"mls",...}` the receiver
//! 1. builds the signal ([`syncstream_calibration::TestSignal`]) and picks a local DAC
//!    time for its sample 0, [`LEAD_US`] ahead (beyond what the sink has already
//!    rendered);
//! 2. arms a [`TestTone`] in the shared core: the render callback replaces the music by
//!    the signal over its span ([`TestTone::overlay`], music faded out and back in over
//!    [`MUSIC_FADE_FRAMES`], no allocation), and the capture callback copies the
//!    microphone into a buffer reserved in advance ([`TestTone::capture`]) from
//!    [`PRE_ROLL_US`] before sample 0's DAC time until the whole response is in;
//! 3. measures with [`syncstream_calibration::measure`], the recording's alignment being
//!    `(ADC time of its first sample − DAC time of signal sample 0) × 48 kHz`, both on
//!    the local clock;
//! 4. publishes a [`CalibrationResult`] on `syncstream/calibration/<device>`.
//!
//! While a test tone is armed, and for [`DRIFT_QUIET_US`] after it, the drift detector
//! is paused ([`TestTone::blocks_drift`]) so that the test signal never reaches the sync
//! controller as a drift measurement.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use syncstream_calibration::onset::OnsetParams;
use syncstream_calibration::{
    analyse, MlsParams, SignalKind, SignalParams, SweepParams, TestSignal, SAMPLE_RATE,
};
use syncstream_protocol::messages::{topics, CalibrationResult, TestToneRequest};
use syncstream_shared::time::Clock;
use tracing::{info, warn};

use crate::core::SharedCore;

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
const COMPLETION_SLACK_US: i64 = 3_000_000;

/// A test tone in progress: what to play when, and the microphone recording of it.
#[derive(Debug, Default)]
pub struct TestTone {
    /// Samples to play (mono, 48 kHz), while armed.
    samples: Option<Arc<Vec<f32>>>,
    /// Local DAC time of signal sample 0, µs.
    start_dac_us: i64,
    /// Local time from which to record, µs.
    record_from_us: i64,
    /// Samples to record.
    record_len: usize,
    /// The recording (capacity reserved when armed).
    recording: Vec<f32>,
    /// Local ADC time of `recording[0]`, µs (fractional).
    first_adc_us: Option<f64>,
    /// Microphone rate seen in the capture callback, Hz.
    mic_rate: u32,
    /// Drift measurements stay paused until this local time, µs.
    quiet_until_us: i64,
}

impl TestTone {
    /// Whether a test tone is armed (playing or recording).
    pub fn active(&self) -> bool {
        self.samples.is_some()
    }

    /// Whether the drift detector must not measure at local time `now_us` (a test tone
    /// is armed, or ended less than [`DRIFT_QUIET_US`] ago).
    pub fn blocks_drift(&self, now_us: i64) -> bool {
        self.active() || now_us < self.quiet_until_us
    }

    /// Arms a test tone: `samples` (mono, 48 kHz) leave the output from local DAC time
    /// `start_dac_us`; the microphone is recorded from `start_dac_us − PRE_ROLL_US` for
    /// `record_samples` samples. The recording buffer is allocated here, not in the
    /// audio callbacks.
    pub fn arm(&mut self, samples: Arc<Vec<f32>>, start_dac_us: i64, record_samples: usize) {
        self.samples = Some(samples);
        self.start_dac_us = start_dac_us;
        self.record_from_us = start_dac_us - PRE_ROLL_US;
        self.record_len = record_samples;
        self.recording = Vec::with_capacity(record_samples);
        self.first_adc_us = None;
    }

    /// Disarms (the music comes back, with a fade) and returns the recording and the
    /// local ADC time of its first sample, µs. `now_us` starts the drift quiet period.
    pub fn finish(&mut self, now_us: i64) -> (Vec<f32>, Option<f64>) {
        self.samples = None;
        self.quiet_until_us = now_us + DRIFT_QUIET_US;
        (
            std::mem::take(&mut self.recording),
            self.first_adc_us.take(),
        )
    }

    /// Whether the recording holds all it should.
    pub fn recording_complete(&self) -> bool {
        self.active() && self.recording.len() >= self.record_len
    }

    /// Microphone rate seen by [`TestTone::capture`], Hz (0 before any block).
    pub fn mic_rate(&self) -> u32 {
        self.mic_rate
    }

    /// Render hook: replaces `out` (interleaved, `channels` per frame, first frame at
    /// local `dac_time_us`) by the test signal over its span, fading the music out over
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
        let first = ((dac_time_us - self.start_dac_us) as f64 * fs / 1e6).round();
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

    /// Capture hook: keeps the microphone samples (mono, `rate` Hz, first one taken at
    /// local `adc_time_us`) that fall in the recording span. Allocation-free (the
    /// buffer was reserved by [`TestTone::arm`]).
    pub fn capture(&mut self, block: &[f32], adc_time_us: i64, rate: u32) {
        self.mic_rate = rate;
        if self.samples.is_none() || rate == 0 || self.recording.len() >= self.record_len {
            return;
        }
        let dt = 1e6 / rate as f64;
        let skip = if self.first_adc_us.is_none() {
            let end_us = adc_time_us as f64 + block.len() as f64 * dt;
            if end_us <= self.record_from_us as f64 {
                return;
            }
            let skip = (((self.record_from_us - adc_time_us) as f64 / dt)
                .ceil()
                .max(0.0)) as usize;
            self.first_adc_us = Some(adc_time_us as f64 + skip as f64 * dt);
            skip
        } else {
            0
        };
        let room = self.record_len - self.recording.len();
        let take = block.len().saturating_sub(skip).min(room);
        self.recording
            .extend_from_slice(&block[skip.min(block.len())..skip.min(block.len()) + take]);
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
                if !(d.is_finite() && d > 0.0) {
                    return Err(format!("duration_ms must be positive, got {d}"));
                }
                p.periods = ((d / period_ms).round() as u32).saturating_sub(1).max(1);
            }
            SignalParams::Mls(p)
        }
    };
    TestSignal::new(params).map_err(|e| e.to_string())
}

/// Runs one test tone on a receiver and publishes the result on
/// `syncstream/calibration/<device>`. Never panics; every failure is published as
/// `{"device","run_id","error"}`.
pub async fn run(
    core: SharedCore,
    client: AsyncClient,
    clock: Arc<dyn Clock>,
    req: TestToneRequest,
) {
    let device = core.lock().map(|c| c.device.clone()).unwrap_or_default();
    let result = match measure_tone(&core, clock.as_ref(), &req).await {
        Ok(mut r) => {
            r.device = device.clone();
            r
        }
        Err(e) => {
            warn!(device, "test tone failed: {e}");
            CalibrationResult {
                device: device.clone(),
                error: Some(e),
                ..Default::default()
            }
        }
    };
    let result = CalibrationResult {
        run_id: req.run_id.clone(),
        ts_us: clock.now_us(),
        ..result
    };
    info!(
        device,
        latency_ms = ?result.latency_ms,
        uncertainty_ms = ?result.uncertainty_ms,
        error = ?result.error,
        "calibration result"
    );
    match serde_json::to_vec(&result) {
        Ok(payload) => {
            if let Err(e) = client
                .publish(
                    topics::calibration(&device),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await
            {
                warn!("cannot publish calibration result: {e}");
            }
        }
        Err(e) => warn!("cannot encode calibration result: {e}"),
    }
}

/// Plays, records and measures; returns the measurement or why there is none.
async fn measure_tone(
    core: &SharedCore,
    clock: &dyn Clock,
    req: &TestToneRequest,
) -> Result<CalibrationResult, String> {
    let signal = tokio::task::spawn_blocking({
        let req = req.clone();
        move || signal_for(&req)
    })
    .await
    .map_err(|e| format!("building the test signal: {e}"))??;
    let (mic_distance_m, base_latency_ms) = {
        let c = core
            .lock()
            .map_err(|_| "receiver state poisoned".to_string())?;
        if c.test_tone.active() {
            return Err("a test tone is already playing on this device".into());
        }
        (c.profile.mic_distance_m, c.profile.base_latency_ms)
    };
    let max_latency_ms = req
        .max_latency_ms
        .filter(|m| m.is_finite() && *m > 0.0)
        .unwrap_or(base_latency_ms + 500.0)
        .min(2000.0);
    let pre_roll = (PRE_ROLL_US as f64 * SAMPLE_RATE as f64 / 1e6).round() as usize;
    let record_samples = signal.recording_samples(max_latency_ms) + pre_roll;
    let samples = Arc::new(signal.samples.clone());
    let start_dac_us = clock.now_us() + LEAD_US;
    {
        let mut c = core
            .lock()
            .map_err(|_| "receiver state poisoned".to_string())?;
        c.test_tone.arm(samples, start_dac_us, record_samples);
    }
    let record_us = (record_samples as f64 * 1e6 / SAMPLE_RATE as f64) as i64;
    let deadline_us = start_dac_us - PRE_ROLL_US + record_us + COMPLETION_SLACK_US;
    // Poll the recording (bounded by the deadline).
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let complete = loop {
        tick.tick().await;
        let done = core
            .lock()
            .map(|c| c.test_tone.recording_complete())
            .unwrap_or(true);
        if done {
            break true;
        }
        if clock.now_us() > deadline_us {
            break false;
        }
    };
    let (recording, first_adc_us, mic_rate) = {
        let mut c = core
            .lock()
            .map_err(|_| "receiver state poisoned".to_string())?;
        let rate = c.test_tone.mic_rate();
        let (rec, first) = c.test_tone.finish(clock.now_us());
        (rec, first, rate)
    };
    if mic_rate != SAMPLE_RATE {
        return Err(if mic_rate == 0 {
            "the microphone delivered no audio".to_string()
        } else {
            format!("the microphone runs at {mic_rate} Hz; calibration needs {SAMPLE_RATE} Hz")
        });
    }
    let Some(first_adc_us) = first_adc_us.filter(|_| complete) else {
        return Err(format!(
            "the microphone recorded {} of {record_samples} samples in time",
            recording.len()
        ));
    };
    let offset_samples = (first_adc_us - start_dac_us as f64) * SAMPLE_RATE as f64 / 1e6;
    let a = tokio::task::spawn_blocking(move || {
        analyse(
            &signal,
            &recording,
            offset_samples,
            mic_distance_m,
            &OnsetParams::default(),
        )
    })
    .await
    .map_err(|e| format!("measurement task: {e}"))?
    .map_err(|e| e.to_string())?;
    let (ir, ir_origin_samples) = if req.include_ir == Some(true) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_replaces_music_by_the_signal_with_fades() {
        let mut t = TestTone::default();
        let sig: Vec<f32> = vec![0.5; 4800];
        t.arm(Arc::new(sig), 1_000_000, 10_000);
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
        // Disarmed: untouched.
        t.finish(0);
        let mut out = vec![1.0f32; 4];
        t.overlay(&mut out, 1_010_000, 2);
        assert!(out.iter().all(|&s| s == 1.0));
    }

    #[test]
    fn capture_keeps_the_span_and_its_first_adc_time() {
        let mut t = TestTone::default();
        t.arm(Arc::new(vec![0.0; 10]), 1_000_000, 1000);
        // Before the span (record from 990 000 µs): ignored.
        t.capture(&[1.0; 480], 970_000, 48_000);
        assert!(t.recording.is_empty());
        // A block straddling the start: from its 240th sample (5 ms in).
        let block: Vec<f32> = (0..480).map(|i| i as f32).collect();
        t.capture(&block, 985_000, 48_000);
        assert_eq!(t.recording[0], 240.0);
        assert_eq!(t.first_adc_us, Some(990_000.0));
        t.capture(&[2.0; 480], 995_000, 48_000);
        t.capture(&[3.0; 480], 1_005_000, 48_000);
        assert_eq!(t.recording.len(), 1000);
        assert!(t.recording_complete());
        let (rec, first) = t.finish(2_000_000);
        assert_eq!((rec.len(), first), (1000, Some(990_000.0)));
        assert!(t.blocks_drift(2_000_000 + DRIFT_QUIET_US - 1));
        assert!(!t.blocks_drift(2_000_000 + DRIFT_QUIET_US));
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
