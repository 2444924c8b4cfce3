//! The drift detector: lines up what the microphone heard with the source audio that
//! should have been playing, and measures how late the device really sounds.
//!
//! A sample with PTS `T` should leave the speaker at transmitter time `T + P`
//! (P = playout delay) and reach the microphone `mic_distance / 343 m/s` later. So a
//! recording that starts at transmitter time `r0` should hold the source from
//! `r0 − P − mic_delay`. We fetch that source window with a margin `M` on both sides
//! and estimate the recording's delay against it; what is left after the margin is the
//! drift: positive means the device sounds late and needs a larger buffer offset.
//!
//! A window is only measured if playout was settled (no jump, no slew) with one offset
//! for the whole time its sound could have been produced, so every report states the
//! offset it was measured with.

use std::collections::VecDeque;

use syncstream_dsp::{DelayEstimator, LagSearch};
use syncstream_protocol::messages::DriftReport;
use syncstream_shared::time::{samples_to_us, us_to_samples};

use crate::clock_sync::ClockSync;
use crate::offset::OffsetRamp;
use crate::own_sound::{OwnSound, Verdict};
use crate::playout::StreamParams;
use crate::playout_log::PlayoutLog;
use crate::resampler::align_to_transmitter_clock;

/// The wide search's margin is at least this fraction of the offset (a device with
/// 2 s of latency is searched ±0.8 s).
pub const ACQUIRE_MARGIN_PER_OFFSET: f64 = 0.4;

/// Drift detector settings.
#[derive(Debug, Clone)]
pub struct DriftConfig {
    /// Length of a recording, ms.
    pub window_ms: u64,
    /// Time between the starts of two measurements, ms.
    pub interval_ms: u64,
    /// Search margin while acquiring (the device latency may be far from its profile), ms.
    pub acquire_margin_ms: f64,
    /// Search margin once in sync, ms.
    pub track_margin_ms: f64,
    /// A measured |drift| under this keeps the detector in tracking mode, ms.
    pub track_below_ms: f64,
    /// Time from start to the first measurement, ms.
    pub first_after_ms: u64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            window_ms: 2000,
            interval_ms: 2500,
            acquire_margin_ms: 400.0,
            track_margin_ms: 60.0,
            track_below_ms: 20.0,
            first_after_ms: 2500,
        }
    }
}

/// The last few seconds of microphone audio with the local ADC time of the first sample
/// (control side: fed from the capture callback's ring).
#[derive(Debug, Clone)]
pub struct MicRecorder {
    rate: u32,
    start_us: i64,
    data: VecDeque<f32>,
    capacity: usize,
}

impl MicRecorder {
    /// Keeps `seconds` of audio at `rate` Hz.
    pub fn new(rate: u32, seconds: f64) -> Self {
        Self {
            rate,
            start_us: 0,
            data: VecDeque::with_capacity((rate as f64 * seconds) as usize),
            capacity: (rate as f64 * seconds) as usize,
        }
    }

    /// Sample rate, Hz.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Local time just past the newest sample, µs.
    pub fn end_us(&self) -> i64 {
        self.start_us + samples_to_us(self.data.len() as i64, self.rate)
    }

    /// Appends a block whose first sample was taken at local `adc_time_us`. A block that
    /// does not follow on (a gap or overlap of more than 1 ms: the capture restarted)
    /// starts the recording afresh. Timestamps are anchored to the newest block.
    pub fn push(&mut self, block: &[f32], adc_time_us: i64) {
        if self.data.is_empty() || adc_time_us.saturating_sub(self.end_us()).abs() > 1000 {
            self.data.clear();
        }
        self.start_us = adc_time_us - samples_to_us(self.data.len() as i64, self.rate);
        self.data.extend(block);
        let over = self.data.len().saturating_sub(self.capacity);
        if over > 0 {
            self.data.drain(..over);
            self.start_us += samples_to_us(over as i64, self.rate);
        }
    }

    /// The last `ms` of audio and the local time of its first sample.
    pub fn latest(&self, ms: u64) -> Option<(i64, Vec<f32>)> {
        let n = us_to_samples(ms as i64 * 1000, self.rate) as usize;
        if self.data.len() < n {
            return None;
        }
        let first = self.data.len() - n;
        Some((
            self.start_us + samples_to_us(first as i64, self.rate),
            self.data.range(first..).copied().collect(),
        ))
    }
}

/// Largest variation of the playout error over a window while tracking, µs: a
/// measurement assumes one delay for the whole window.
pub const TRACKING_MAX_SPREAD_US: f64 = 250.0;
/// The same while acquiring, where a measurement only has to be right to 1 ms, µs.
pub const ACQUIRING_MAX_SPREAD_US: f64 = 500.0;
/// While tracking, how far (ms, beyond a fixed 100 ms) the output latency may be from
/// the offset for the span the playout must have been settled over: the offset was
/// measured; a latency that moved further is a step, reported as one.
pub const TRACKING_LATENCY_MARGIN_MS: f64 = 50.0;

/// A measurement ready to be analysed once its source window is fetched.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Microphone audio.
    pub recording: Vec<f32>,
    /// Transmitter time of the recording's first sample, µs.
    pub rec_start_tx_us: f64,
    /// Source window to fetch: start PTS, µs.
    pub ref_start_us: i64,
    /// Source window to fetch: length, ms.
    pub ref_duration_ms: u64,
    /// Search margin of the wide search (the source window's margin on each side), ms.
    pub margin_ms: f64,
    /// Search margin of a tracking measurement's first, narrow search, ms.
    pub track_margin_ms: f64,
    /// Tracking (the device was in sync at the last measurement): the drift is expected
    /// near 0 and the estimator may prefer the peak there; while acquiring it may not.
    pub tracking: bool,
    /// Buffer offset really in effect at the window's centre (the controller's offset
    /// minus the mean playout error while the window's sound was played), ms.
    pub applied_offset_ms: f64,
    /// Acoustic delay speaker → microphone, ms.
    pub mic_delay_ms: f64,
    /// Playout delay, µs.
    pub playout_delay_us: i64,
    /// Rate error of the local clock (transmitter µs per local µs, minus 1) when the
    /// window was recorded; [`analyze`] resamples the recording by it.
    pub clock_rate: f64,
}

/// Why no measurement can be taken now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// No stream or no clock sync yet.
    NotStreaming,
    /// Not enough microphone audio yet.
    NoRecording,
    /// Playout jumped during the window, or its error varied more than
    /// [`TRACKING_MAX_SPREAD_US`] (tracking) / [`ACQUIRING_MAX_SPREAD_US`] (acquiring).
    NotSettled,
}

/// What playout looks like to the planner: the stream, the offset asked for, and the
/// log of what the render callback did.
#[derive(Debug, Clone, Copy)]
pub struct PlayoutView<'a> {
    /// Stream parameters, once connected.
    pub params: Option<StreamParams>,
    /// The offset ramp sent to the render callback.
    pub offset: &'a OffsetRamp,
    /// What the render callback reported.
    pub log: &'a PlayoutLog,
}

/// Plans a measurement from the newest microphone audio.
///
/// Errors: see [`NotReady`].
pub fn plan(
    cfg: &DriftConfig,
    mic: &MicRecorder,
    playout: PlayoutView<'_>,
    clock: &ClockSync,
    mic_delay_ms: f64,
    tracking: bool,
) -> Result<Measurement, NotReady> {
    let params = playout.params.ok_or(NotReady::NotStreaming)?;
    let (rec_start_local, recording) = mic.latest(cfg.window_ms).ok_or(NotReady::NoRecording)?;
    let rec_start_tx_us = clock
        .tx_from_local(rec_start_local as f64)
        .ok_or(NotReady::NotStreaming)?;
    let window_us = cfg.window_ms as f64 * 1000.0;
    let centre_tx_us = rec_start_tx_us + 0.5 * window_us;
    let offset_ms = playout.offset.at_ms(centre_tx_us);
    // The sound recorded in the window left the DAC about (latency + mic delay) earlier;
    // latency ≈ offset (plus what is not corrected yet, hence the margin). Over that span
    // playout must have followed one offset (no jump) closely enough for one delay to
    // describe the window, and its mean error is taken off the offset: what counts is
    // the offset really in effect, whether or not playout had caught up with it.
    //
    // The span checked is where the heard sound may have left the DAC: the window moved
    // back by the latency, widened by how far the latency may be from the offset
    // (while acquiring, a fifth of the offset: a profile may be that far off; while
    // tracking, the offset was measured, and a latency that moved by more is a step the
    // detector reports whatever the span). So a correction made after the heard sound
    // left the DAC (a long-latency output's window is recorded seconds later) does not
    // hold the next measurement back.
    let window_us = window_us as i64;
    let lead_us = ((offset_ms.max(0.0) + mic_delay_ms) * 1000.0) as i64;
    let uncertainty_ms = if tracking {
        TRACKING_LATENCY_MARGIN_MS
    } else {
        0.2 * offset_ms.abs()
    };
    let margin_us = ((100.0 + uncertainty_ms) * 1000.0) as i64;
    let span = playout
        .log
        .error_over(
            rec_start_local - lead_us - margin_us,
            (rec_start_local + window_us - lead_us + margin_us).min(rec_start_local + window_us),
        )
        .ok_or(NotReady::NotSettled)?;
    let max_spread_us = if tracking {
        TRACKING_MAX_SPREAD_US
    } else {
        ACQUIRING_MAX_SPREAD_US
    };
    if span.spread_us > max_spread_us {
        return Err(NotReady::NotSettled);
    }
    let heard = playout
        .log
        .error_over(
            rec_start_local - lead_us,
            rec_start_local + window_us - lead_us,
        )
        .ok_or(NotReady::NotSettled)?;
    let applied_offset_ms = offset_ms - heard.mean_us / 1000.0;
    let p_ms = params.playout_delay_us as f64 / 1000.0;
    // The source window always covers the wide search: a tracking measurement that
    // misses its own sound near the expected lag searches wide on the same recording.
    // Outputs with seconds of latency (Cast, AirPlay) are known less precisely: the
    // margin grows with the offset, so a profile within 40 % of the truth is found.
    let margin_ms = cfg
        .acquire_margin_ms
        .max(ACQUIRE_MARGIN_PER_OFFSET * offset_ms.abs())
        .min(0.8 * p_ms);
    let track_margin_ms = cfg.track_margin_ms.min(margin_ms);
    let expected_pts = rec_start_tx_us - params.playout_delay_us as f64 - mic_delay_ms * 1000.0;
    Ok(Measurement {
        recording,
        rec_start_tx_us,
        ref_start_us: (expected_pts - margin_ms * 1000.0).round() as i64,
        ref_duration_ms: cfg.window_ms + (2.0 * margin_ms).ceil() as u64,
        margin_ms,
        track_margin_ms,
        tracking,
        applied_offset_ms,
        mic_delay_ms,
        playout_delay_us: params.playout_delay_us,
        clock_rate: clock.rate(),
    })
}

/// A drift measurement ready to run off the control task: the recording, its source
/// window and the estimator (moved in and handed back, so no lock is shared).
pub struct DriftJob {
    /// Device name for the report.
    pub device: String,
    /// The planned measurement.
    pub measurement: Measurement,
    /// The source window (mono, 48 kHz).
    pub reference: Vec<f32>,
    /// PTS of `reference[0]`, µs.
    pub ref_first_pts_us: i64,
    /// The estimator.
    pub estimator: Box<DelayEstimator>,
    /// What the device's own sound looked like so far (a copy).
    pub own: OwnSound,
}

impl std::fmt::Debug for DriftJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftJob")
            .field("device", &self.device)
            .field("ref_first_pts_us", &self.ref_first_pts_us)
            .finish()
    }
}

impl DriftJob {
    /// Runs the estimate; returns the outcome and the estimator.
    pub fn run(mut self) -> (DriftOutcome, Box<DelayEstimator>) {
        let outcome = analyze(
            &mut self.estimator,
            &self.device,
            &self.measurement,
            &self.reference,
            self.ref_first_pts_us,
            &self.own,
        );
        (outcome, self.estimator)
    }
}

/// A tracking measurement whose drift is within this of 0 found the device's own
/// sound where it belongs, ms (the controller's outlier threshold).
pub const GATE_MS: f64 = 3.0;

/// What one measurement gave.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftOutcome {
    /// The report to publish.
    pub report: DriftReport,
    /// Set when the device's own sound was found where it belongs while tracking,
    /// for [`OwnSound::observe`].
    pub observation: Option<Observation>,
    /// The source window or the recording was silent (a pause in the programme):
    /// nothing could be measured anywhere.
    pub silent: bool,
}

/// What a window measured in sync shows of the device's own sound.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Height of the own peak over the correlation's noise (`z`).
    pub own_z: f64,
    /// Acoustic gain: the recording's level over the source's, dB.
    pub gain_db: f64,
    /// The other peaks: lag relative to the own peak (ms) and height.
    pub others: Vec<(f64, f64)>,
}

/// RMS level of `x`, dBFS (−200 for silence).
fn level_db(x: &[f32]) -> f64 {
    let e = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len().max(1) as f64;
    if e > 0.0 && e.is_finite() {
        10.0 * e.log10()
    } else {
        -200.0
    }
}

/// Estimates the drift of `m` against its source window `reference`, whose first
/// sample has PTS `ref_first_pts_us`. `device` names the report; `own` is what the
/// device's own sound looked like so far.
///
/// While tracking, the first search is narrow (±`track_margin_ms`) and prefers the
/// peak at the expected lag. If that finds nothing within [`GATE_MS`] of it, the same
/// recording is searched wide (±`margin_ms`) and the best peak there is judged by
/// [`OwnSound::judge`]: the own sound moved (a report with `step`), another
/// loudspeaker (no estimate: the own sound is not heard), or too weak to tell.
pub fn analyze(
    estimator: &mut DelayEstimator,
    device: &str,
    m: &Measurement,
    reference: &[f32],
    ref_first_pts_us: i64,
    own: &OwnSound,
) -> DriftOutcome {
    // The reference "starts" (in the estimator's same-instant convention) when its first
    // sample should reach the microphone; the recording starts `delta` later. The
    // recording runs on the local clock, so it is first put on the transmitter's time
    // base (else its clock's rate error stretches it and smears the peak).
    let ref_heard_at_us =
        ref_first_pts_us as f64 + m.playout_delay_us as f64 + m.mic_delay_ms * 1000.0;
    let recording = align_to_transmitter_clock(&m.recording, m.clock_rate);
    let fs = estimator.sample_rate();
    let window_ms = recording.len() as f64 * 1000.0 / fs as f64;
    let delta_ms = (m.rec_start_tx_us - ref_heard_at_us) / 1000.0;
    // The source the recording should hold (the window's centre part), for the gain.
    let margin = us_to_samples((m.margin_ms * 1000.0).round() as i64, fs).max(0) as usize;
    let heard_ref = reference
        .get(margin..(margin + recording.len()).min(reference.len()))
        .filter(|r| !r.is_empty())
        .unwrap_or(reference);
    let gain_db = level_db(&recording) - level_db(heard_ref);
    let mut report = DriftReport {
        device: device.to_string(),
        drift_ms: None,
        confidence: 0.0,
        signal_strength_db: f64::NEG_INFINITY,
        ts_us: (m.rec_start_tx_us + 0.5 * window_ms * 1000.0).round() as i64,
        applied_offset_ms: m.applied_offset_ms,
        reason: None,
        step: false,
        uncertainty_ms: None,
    };
    let mut observation = None;
    let fill = |report: &mut DriftReport, est: &syncstream_dsp::DelayEstimate| {
        report.confidence = est.confidence;
        report.signal_strength_db = est.signal_strength_db;
        report.drift_ms = est.delay_ms.map(|d| d + delta_ms);
        report.reason = est.reason.clone();
        report.uncertainty_ms = None;
        if let (None, Some(c)) = (est.delay_ms, est.coarse) {
            // Bass only: a coarse drift with its uncertainty (the controller never
            // fine-tunes with it).
            report.drift_ms = Some(c.delay_ms + delta_ms);
            report.uncertainty_ms = Some(c.uncertainty_ms);
            report.confidence = c.confidence;
        }
    };
    let mut search_wide = !m.tracking;
    let mut silent = false;
    if m.tracking {
        // The narrow search on the part of the source window it needs (as a narrow
        // window would have been fetched).
        let trim_ms = (m.margin_ms - m.track_margin_ms).max(0.0);
        let trim = us_to_samples((trim_ms * 1000.0).round() as i64, fs).max(0) as usize;
        let narrow_ref = reference
            .get(trim..reference.len().saturating_sub(trim))
            .filter(|r| !r.is_empty())
            .unwrap_or(reference);
        let shift_ms = trim as f64 * 1000.0 / fs as f64;
        let centre = -(delta_ms - shift_ms);
        let search = LagSearch {
            min_lag_ms: centre - m.track_margin_ms,
            max_lag_ms: centre + m.track_margin_ms,
            expected_lag_ms: Some(centre),
            gate_ms: Some(GATE_MS),
        };
        match estimator.estimate(narrow_ref, &recording, &search) {
            Ok(est) => {
                // Only a precise estimate can show the own sound where it belongs.
                let drift = est.delay_ms.map(|d| d + delta_ms - shift_ms);
                match drift {
                    Some(d) if d.abs() <= GATE_MS => {
                        fill(&mut report, &est);
                        report.drift_ms = Some(d);
                        if let Some(diag) = estimator.diagnostics() {
                            let own_lag_ms = diag.peak_lag as f64 * 1000.0 / fs as f64;
                            observation = Some(Observation {
                                own_z: diag.z,
                                gain_db,
                                others: diag
                                    .other_peaks()
                                    .iter()
                                    .map(|o| (o.lag_ms - own_lag_ms, o.z))
                                    .collect(),
                            });
                        }
                    }
                    _ => {
                        // Silence or a silent source gives nothing anywhere: no need
                        // to look further.
                        silent = est.signal_strength_db < syncstream_dsp::delay::SILENCE_DBFS
                            || est.reason.as_deref().is_some_and(|r| r.contains("silent"));
                        fill(&mut report, &est);
                        if est.delay_ms.is_some() {
                            report.drift_ms = drift;
                        } else if let Some(d) = report.drift_ms.as_mut() {
                            *d -= shift_ms; // a coarse estimate, on the narrow window
                        }
                        search_wide = !silent;
                    }
                }
            }
            Err(e) => report.reason = Some(e.to_string()),
        }
    }
    if search_wide {
        let search = LagSearch {
            min_lag_ms: -delta_ms - m.margin_ms,
            max_lag_ms: -delta_ms + m.margin_ms,
            expected_lag_ms: None,
            gate_ms: None,
        };
        match estimator.estimate(reference, &recording, &search) {
            Ok(est) => {
                fill(&mut report, &est);
                if m.tracking {
                    judge_wide(&mut report, estimator, own, gain_db);
                }
            }
            Err(e) => report.reason = Some(e.to_string()),
        }
    }
    if !report.signal_strength_db.is_finite() {
        report.signal_strength_db = -200.0;
    }
    DriftOutcome {
        report,
        observation,
        silent,
    }
}

/// A tracking measurement searched wide because its own sound was not where it
/// belongs: decides what the wide search's peak is (see [`analyze`]).
fn judge_wide(report: &mut DriftReport, estimator: &DelayEstimator, own: &OwnSound, gain_db: f64) {
    let Some(drift) = report.drift_ms else {
        report.reason = Some(format!(
            "the device's own sound is not heard near its expected time nor elsewhere: {}",
            report.reason.as_deref().unwrap_or("no estimate")
        ));
        return;
    };
    if drift.abs() <= GATE_MS || report.uncertainty_ms.is_some() {
        // The own sound after all (the narrow search was misled), or a coarse
        // estimate, which is never a step.
        return;
    }
    let z = estimator.diagnostics().map_or(0.0, |d| d.z);
    tracing::debug!(
        device = %report.device,
        drift_ms = drift,
        z,
        typical_z = ?own.typical_z(),
        "wide search: judging a peak away from the expected time"
    );
    match own.judge(drift, z, gain_db) {
        Verdict::Step => report.step = true,
        Verdict::Neighbour(rel_ms) => {
            report.drift_ms = None;
            report.reason = Some(format!(
                "the device's own sound is not heard (quiet or masked); the strongest sound \
                 is another loudspeaker's, {rel_ms:+.1} ms away"
            ));
        }
        Verdict::Level(change_db) => {
            report.drift_ms = None;
            report.reason = Some(format!(
                "the device's own sound is not heard near its expected time, and the \
                 microphone hears the programme {:.0} dB {} than usual: the peak at \
                 {drift:+.1} ms is not taken for it",
                change_db.abs(),
                if change_db < 0.0 { "quieter" } else { "louder" }
            ));
        }
        Verdict::TooWeak(Some(typical)) => {
            report.drift_ms = None;
            report.reason = Some(format!(
                "the device's own sound is not heard near its expected time; a peak at \
                 {drift:+.1} ms is too weak to be it ({z:.0} σ, its own is usually {typical:.0} σ)"
            ));
        }
        // Nothing learnt yet: the controller decides (several reports must agree).
        Verdict::TooWeak(None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jitter_buffer::JitterBuffer;

    #[test]
    fn mic_recorder_keeps_the_latest_and_restarts_on_gaps() {
        let mut m = MicRecorder::new(48_000, 1.0);
        for k in 0..200 {
            m.push(&[k as f32; 480], k * 10_000);
        }
        let (t, x) = m.latest(500).unwrap();
        assert_eq!(t, 1_500_000);
        assert_eq!(x.len(), 24_000);
        assert_eq!(x[0], 150.0);
        m.push(&[0.0; 480], 99_000_000);
        assert!(m.latest(500).is_none());
    }

    /// A device in sync but turned down 30 dB, beside a neighbour 15 dB louder than it
    /// and 8 ms later: the tracking measurement still finds its own sound where it
    /// belongs (the 3 ms gate) instead of taking the louder neighbour for it.
    #[test]
    fn a_quiet_own_sound_beside_a_louder_neighbour_is_still_measured() {
        let fs = 48_000u32;
        let source = syncstream_testkit::white_noise(10 * fs as usize, 7, 0.5);
        let noise = syncstream_testkit::white_noise(2 * fs as usize, 8, 0.0005);
        let margin = (0.4 * fs as f64) as usize; // 400 ms: the recording starts there
        let neighbour_lag = (0.008 * fs as f64) as usize;
        let recording: Vec<f32> = (0..2 * fs as usize)
            .map(|n| {
                0.0316 * source[n + margin] + 0.18 * source[n + margin - neighbour_lag] + noise[n]
            })
            .collect();
        let m = Measurement {
            recording,
            rec_start_tx_us: 400_000.0,
            ref_start_us: 0,
            ref_duration_ms: 2800,
            margin_ms: 400.0,
            track_margin_ms: 60.0,
            tracking: true,
            applied_offset_ms: 0.0,
            mic_delay_ms: 0.0,
            playout_delay_us: 0,
            clock_rate: 0.0,
        };
        let mut estimator = DelayEstimator::new(fs);
        let reference = &source[..(2.8 * fs as f64) as usize];
        let out = analyze(&mut estimator, "bt", &m, reference, 0, &OwnSound::default());
        let drift = out.report.drift_ms.expect("an estimate");
        assert!(drift.abs() < 0.05, "{:?}", out.report);
        assert!(out.observation.is_some(), "{out:?}");
    }

    /// A device 37.5 ms late is measured as +37.5 ms from music-like noise.
    #[test]
    fn measures_a_late_device() {
        use crate::clock_sync::ClockMapping;
        use crate::realtime::BlockReport;
        let fs = 48_000u32;
        let params = StreamParams {
            sample_rate: fs,
            channels: 2,
            epoch_us: 0,
            codec_delay_samples: 0,
            playout_delay_us: 1_000_000,
        };
        let source = syncstream_testkit::white_noise(20 * fs as usize, 3, 0.5);
        let mut cs = ClockSync::default();
        cs.add_exchange(0, 0, 0, 0).unwrap();
        let mapping = ClockMapping {
            offset_us: 0.0,
            ref_local_us: 0.0,
            rate: 0.0,
        };
        let mut playout = crate::playout::Playout::new(10.0);
        playout.set_stream(params);
        let mut jb = JitterBuffer::new(2, 1 << 22);
        let stereo: Vec<f32> = source.iter().flat_map(|&x| [x, x]).collect();
        jb.push(0, &stereo);
        let mut out = vec![0.0; 960];
        let mut log = PlayoutLog::default();
        // Settle playout from t = 1 s.
        for k in 0..1000 {
            let t = 1_000_000 + k * 10_000;
            let (_, o) = playout.render(&mut out, t, Some(&mapping), &jb);
            log.record(&BlockReport {
                dac_time_us: t,
                err_us: o.err_us as f32,
                jumped: o.jumped,
                missing: o.missing,
                scheduled: o.scheduled,
                frames: 480,
            });
        }
        // Recording from t = 6 s: the device (offset 10 ms applied) sounds 37.5 ms late,
        // mic delay 1 ms → heard source at time t is t − 1 s + 10 ms − 37.5 ms − 1 ms.
        let mut mic = MicRecorder::new(fs, 3.0);
        let rec_start = 6_000_000i64;
        let shift_us = -1_000_000 + 10_000 - 37_500 - 1_000;
        let rec: Vec<f32> = (0..2 * fs as i64)
            .map(|n| {
                source[us_to_samples(rec_start + samples_to_us(n, fs) + shift_us, fs) as usize]
            })
            .collect();
        mic.push(&rec, rec_start);
        let offset = OffsetRamp::constant(10.0);
        let view = PlayoutView {
            params: Some(params),
            offset: &offset,
            log: &log,
        };
        let m = plan(&DriftConfig::default(), &mic, view, &cs, 1.0, false).unwrap();
        let first = us_to_samples(m.ref_start_us, fs) as usize;
        let n = us_to_samples(m.ref_duration_ms as i64 * 1000, fs) as usize;
        let job = DriftJob {
            device: "tv".into(),
            measurement: m,
            reference: source[first..first + n].to_vec(),
            ref_first_pts_us: samples_to_us(first as i64, fs),
            estimator: Box::new(DelayEstimator::new(fs)),
            own: OwnSound::default(),
        };
        let (r, _) = job.run();
        let r = r.report;
        assert!((r.drift_ms.unwrap() - 27.5).abs() < 0.05, "{r:?}");
        assert!((r.applied_offset_ms - 10.0).abs() < 1e-3, "{r:?}");
    }
}
