//! The drift measurement loop and calibration test tones.
//!
//! Every [`crate::drift::DriftConfig::interval_ms`] the node plans a measurement from
//! the newest microphone audio ([`crate::drift::plan`]), fetches its source window,
//! runs the estimate off the control task and publishes the report on
//! `syncstream/drift/<device>`. One measurement is in flight at a time. A test tone
//! pauses the loop while it plays and for a quiet period after; a window that an
//! announcement may reach (`announce.rs`) is not measured.

use syncstream_protocol::messages::{topics, CalibrationResult, DriftReport, TestToneRequest};
use tracing::{debug, info, warn};

use super::{Job, JobDone, ReceiverIo, ReceiverNode, Window, WindowRequest, WINDOW_TIMEOUT_US};
use crate::drift::{plan, DriftJob, PlayoutView};
use crate::own_sound::STEP_HEIGHT_RATIO;
use crate::realtime::ToRender;
use crate::test_tone::{blocks_drift, ToneSession, DRIFT_QUIET_US};

/// A tracking measurement with no estimate, a step, or a drift beyond this is
/// followed up sooner, ms.
pub const FOLLOW_UP_ABOVE_MS: f64 = 1.0;
/// The follow-up measurement comes this long after, ms (its window shares half its
/// audio with the last one).
pub const FOLLOW_UP_AFTER_MS: i64 = 1000;
/// Follow-ups in a row at most for one kind of report (no estimate, moved, weak),
/// before the normal interval resumes. A silent programme is followed up for as long
/// as it lasts, so that the first window after the pause is measured at once.
pub const MAX_FOLLOW_UPS: u32 = 2;
/// When a silent output sounds again, its first measurement waits this much beyond a
/// window and its output latency, ms (a fade-in, the latency not yet corrected).
pub const RESUME_MARGIN_MS: i64 = 100;

impl ReceiverNode {
    /// Starts due measurements and finishes test tones whose recording is over.
    pub(super) fn poll_measurements(&mut self, now_us: i64, io: &mut impl ReceiverIo) {
        self.poll_tone(now_us, io);
        if let Some((id, _, deadline)) = &self.pending {
            if now_us > *deadline {
                debug!(device = self.device, id, "source window timed out");
                self.pending = None;
            }
        }
        let silent = self.silent();
        if self.was_silent && !silent {
            // Sound again (unmuted, volume up, output back): the first measurement
            // comes as soon as the microphone window can hold only the new sound, not
            // at the next regular time, up to an interval later.
            let latency_ms = self
                .offset_now_ms(now_us)
                .unwrap_or(self.offset.offset_ms)
                .max(0.0)
                + self.profile.mic_delay_ms().max(0.0);
            self.next_measure_us = now_us;
            self.skip_measurements_for_new_audio(
                now_us,
                latency_ms.ceil() as i64 + RESUME_MARGIN_MS,
            );
        }
        self.was_silent = silent;
        if now_us < self.next_measure_us {
            return;
        }
        self.next_measure_us = now_us + self.drift_cfg.interval_ms as i64 * 1000;
        let tone_active = self.tone.is_some() || self.tone_running.is_some();
        if blocks_drift(tone_active, self.quiet_until_us, now_us) {
            return;
        }
        if self.pending.is_some() || self.estimator.is_none() {
            return; // the previous measurement is still in flight
        }
        if let Some(clear_at_us) = self.speech_in_window() {
            // The window may hold an announcement: the next one that cannot is measured
            // as soon as it is recorded.
            debug!(
                device = self.device,
                "an announcement may be in the microphone window: no drift measurement"
            );
            self.next_measure_us = self.next_measure_us.min(clear_at_us.max(now_us + 1));
            return;
        }
        if self.silent() {
            // Its microphone would hear only the other speakers.
            debug!(
                device = self.device,
                "muted, stopped or nearly silent: no drift measurement"
            );
            return;
        }
        let view = PlayoutView {
            params: self.params,
            offset: &self.offset,
            log: &self.log,
        };
        let m = match plan(
            &self.drift_cfg,
            &self.mic,
            view,
            &self.clock,
            self.profile.mic_delay_ms(),
            self.tracking,
        ) {
            Ok(m) => m,
            Err(e) => {
                debug!(device = self.device, "no drift measurement: {e:?}");
                return;
            }
        };
        if let Some((first_pts_us, samples)) =
            self.reference.window(m.ref_start_us, m.ref_duration_ms)
        {
            // The source is here already: the decoded stream this receiver keeps.
            self.counters.windows_local += 1;
            if let Some(estimator) = self.estimator.take() {
                io.run_job(Job::Drift(DriftJob {
                    device: self.device.clone(),
                    measurement: m,
                    reference: samples,
                    ref_first_pts_us: first_pts_us,
                    estimator,
                    own: self.own_sound.clone(),
                }));
            }
            return;
        }
        self.counters.windows_fetched += 1;
        self.window_seq += 1;
        let req = WindowRequest {
            stream: self.stream.clone(),
            id: self.window_seq,
            start_us: m.ref_start_us,
            duration_ms: m.ref_duration_ms,
        };
        self.pending = Some((req.id, m, now_us + WINDOW_TIMEOUT_US));
        io.fetch_window(req);
    }

    /// The answer to a [`WindowRequest`]: starts the estimate.
    pub fn on_window(
        &mut self,
        id: u64,
        result: Result<Window, String>,
        _now_us: i64,
        io: &mut impl ReceiverIo,
    ) {
        let Some((pending_id, _, _)) = &self.pending else {
            return;
        };
        if *pending_id != id {
            return;
        }
        let Some((_, measurement, _)) = self.pending.take() else {
            return;
        };
        let window = match result {
            Ok(w) => w,
            Err(e) => {
                debug!(device = self.device, "no source window: {e}");
                return;
            }
        };
        let Some(estimator) = self.estimator.take() else {
            return;
        };
        io.run_job(Job::Drift(DriftJob {
            device: self.device.clone(),
            measurement,
            reference: window.samples,
            ref_first_pts_us: window.first_pts_us,
            estimator,
            own: self.own_sound.clone(),
        }));
    }

    /// A job finished: publishes its result.
    pub fn on_job_done(&mut self, done: JobDone, now_us: i64, io: &mut impl ReceiverIo) {
        match done {
            JobDone::Drift { outcome, estimator } => {
                self.estimator = Some(estimator);
                let report = outcome.report;
                // The own peak much weaker than usual: part of the window may be
                // something else already (a step just happened, the sound is fading).
                let weak = outcome.observation.as_ref().is_some_and(|o| {
                    self.own_sound
                        .typical_z()
                        .is_some_and(|t| o.own_z < STEP_HEIGHT_RATIO * t)
                });
                if let Some(o) = outcome.observation {
                    self.own_sound.observe(o.own_z, o.gain_db, o.others);
                }
                // Something changed (the own sound is not where it was, or moved a
                // little): look again sooner, a few times, rather than a whole
                // interval later.
                // What kind of report this is: in sync (0), nothing measured (1), the
                // sound moved (2), the own peak weak (3).
                let class = if !self.tracking {
                    0
                } else if report.step
                    || report
                        .drift_ms
                        .is_some_and(|d| d.abs() > FOLLOW_UP_ABOVE_MS)
                {
                    2
                } else if report.drift_ms.is_none() {
                    1
                } else if weak {
                    3
                } else {
                    0
                };
                if class != self.last_class {
                    self.follow_ups = 0;
                }
                self.last_class = class;
                if class != 0 && (self.follow_ups < MAX_FOLLOW_UPS || outcome.silent) {
                    self.follow_ups += 1;
                    self.next_measure_us =
                        self.next_measure_us.min(now_us + FOLLOW_UP_AFTER_MS * 1000);
                }
                self.note_report(&report);
                self.counters.reports += 1;
                debug!(?report, "drift");
                match serde_json::to_vec(&report) {
                    Ok(payload) => io.publish(topics::drift(&self.device), payload, false),
                    Err(e) => warn!("cannot encode a drift report: {e}"),
                }
                self.correct_locally(&report, now_us, io);
            }
            JobDone::Tone(result) => {
                let run_id = self.tone_running.take().flatten();
                self.publish_calibration(result, run_id, now_us, io);
            }
            JobDone::Speech { id, result } => self.on_speech(id, result, now_us),
            JobDone::MicCheck(report) => {
                let mut v = serde_json::to_value(&report).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("device".into(), self.device.clone().into());
                }
                io.publish(
                    topics::mic_check(&self.device),
                    v.to_string().into_bytes(),
                    false,
                );
            }
        }
    }

    /// When the microphone window a measurement would take now (the newest
    /// [`crate::drift::DriftConfig::window_ms`] of microphone audio) may hold the last
    /// announcement: the local time from which a window no longer can, µs; `None`
    /// when it cannot. The sound reaches the microphone a buffer offset and the
    /// acoustic delay after its DAC time.
    fn speech_in_window(&self) -> Option<i64> {
        let span = self.speech?;
        let to_us = self.mic.end_us();
        let window_us = self.drift_cfg.window_ms as i64 * 1000;
        let latency_ms = self.offset.offset_ms.max(0.0) + self.profile.mic_delay_ms().max(0.0);
        let latency_us = (latency_ms * 1000.0).ceil() as i64;
        span.overlaps(to_us.saturating_sub(window_us), to_us, latency_us)
            .then(|| span.heard_until_us(latency_us).saturating_add(window_us))
    }

    /// Records a drift report this node made: a confident small drift keeps the
    /// detector in tracking mode (narrow search), anything else acquiring.
    fn note_report(&mut self, report: &DriftReport) {
        if let Some(d) = report.drift_ms.filter(|_| report.confidence >= 0.6) {
            self.tracking = d.abs() < self.drift_cfg.track_below_ms;
        }
        self.last_report = Some(report.clone());
    }

    /// Starts a calibration test tone (`{"cmd":"test_tone",...}`).
    pub(super) fn start_test_tone(
        &mut self,
        req: TestToneRequest,
        now_us: i64,
        io: &mut impl ReceiverIo,
    ) {
        if self.tone.is_some() || self.tone_running.is_some() {
            let e = "a test tone is already playing on this device".to_string();
            self.publish_calibration(Err(e), req.run_id.clone(), now_us, io);
            return;
        }
        if self.speaking() {
            let e =
                "the device is speaking an announcement; try again in a few seconds".to_string();
            self.publish_calibration(Err(e), req.run_id.clone(), now_us, io);
            return;
        }
        match ToneSession::new(
            &req,
            now_us,
            self.profile.base_latency_ms,
            self.profile.mic_distance_m,
        ) {
            Ok(session) => {
                self.audio.send(ToRender::ToneArm {
                    samples: session.samples(),
                    start_dac_us: session.start_dac_us,
                });
                info!(device = self.device, run_id = ?req.run_id, "test tone armed");
                self.tone = Some(session);
            }
            Err(e) => self.publish_calibration(Err(e), req.run_id.clone(), now_us, io),
        }
    }

    fn poll_tone(&mut self, now_us: i64, io: &mut impl ReceiverIo) {
        let Some(t) = &self.tone else { return };
        if !(t.recorder.complete() || now_us > t.deadline_us) {
            return;
        }
        let Some(session) = self.tone.take() else {
            return;
        };
        self.audio.send(ToRender::ToneDisarm);
        self.quiet_until_us = now_us + DRIFT_QUIET_US;
        let run_id = session.request.run_id.clone();
        match session.into_job() {
            Ok(job) => {
                self.tone_running = Some(run_id);
                io.run_job(Job::Tone(job));
            }
            Err(e) => self.publish_calibration(Err(e), run_id, now_us, io),
        }
    }

    fn publish_calibration(
        &mut self,
        result: Result<CalibrationResult, String>,
        run_id: Option<String>,
        now_us: i64,
        io: &mut impl ReceiverIo,
    ) {
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                warn!(device = self.device, "test tone failed: {e}");
                CalibrationResult {
                    error: Some(e),
                    ..Default::default()
                }
            }
        };
        let result = CalibrationResult {
            device: self.device.clone(),
            run_id,
            ts_us: now_us,
            ..result
        };
        info!(
            device = self.device,
            latency_ms = ?result.latency_ms,
            uncertainty_ms = ?result.uncertainty_ms,
            error = ?result.error,
            "calibration result"
        );
        match serde_json::to_vec(&result) {
            Ok(payload) => io.publish(topics::calibration(&self.device), payload, false),
            Err(e) => warn!("cannot encode a calibration result: {e}"),
        }
    }
}
