//! What a [`super::ReceiverNode`] asks of the world, and what comes back.
//!
//! The node never does I/O itself: it calls a [`ReceiverIo`] to send and fetch, and
//! the answers come back as calls on the node (`on_stream_frame`, `on_window`,
//! `on_job_done`, ...). The real receiver implements `ReceiverIo` with tokio, TCP,
//! rumqttc and reqwest ([`crate::runtime`]); the simulator with a simulated network,
//! broker and transmitter on virtual time.

use syncstream_dsp::DelayEstimator;
use syncstream_protocol::messages::CalibrationResult;
use syncstream_protocol::wire::Frame;

use crate::drift::{DriftJob, DriftOutcome};
use crate::test_tone::ToneJob;
use crate::voice::SpeechJob;

/// The transports and workers a receiver node uses.
pub trait ReceiverIo {
    /// Sends a frame on the stream connection (dropped when none is open).
    fn stream_send(&mut self, frame: Frame);
    /// Sends a clock-sync request on the clock connection (or, while that is not
    /// open, on the stream connection); answers go to
    /// [`super::ReceiverNode::on_clock_frame`] (or `on_stream_frame`).
    fn clock_send(&mut self, frame: Frame);
    /// Closes the stream connection (a protocol error, a refusal) and reconnects after
    /// at least `retry_after_us`.
    fn stream_reset(&mut self, reason: &str, retry_after_us: i64);
    /// Publishes an MQTT message (QoS 1).
    fn publish(&mut self, topic: String, payload: Vec<u8>, retain: bool);
    /// Fetches a source window from the transmitter; the answer goes to
    /// [`super::ReceiverNode::on_window`] with the request's `id`.
    fn fetch_window(&mut self, request: WindowRequest);
    /// Runs a job off the control task (a delay estimate, a calibration measurement,
    /// a speech synthesis: jobs may block); its result goes to [`super::ReceiverNode::on_job_done`].
    fn run_job(&mut self, job: Job);
    /// Keeps `state` where the next start of this receiver finds it (atomically; the
    /// real receiver writes it to its state folder).
    fn persist(&mut self, state: &PersistedState);
    /// Keeps `profile`, pushed on `syncstream/config`, where the next start of this
    /// receiver uses it over its local profile file (the real receiver writes
    /// `<state dir>/<device>.profile.json` atomically). Default: nowhere.
    fn keep_profile(&mut self, _profile: &syncstream_shared::profile::DeviceProfile) {}
}

/// What a receiver keeps across restarts, so it starts where it was rather than from
/// its profile.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PersistedState {
    /// The last buffer offset applied, ms.
    pub offset_ms: f64,
}

/// A request for source audio:
/// `GET /api/v1/window?stream=..&start_us=..&duration_ms=..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRequest {
    /// The stream the audio was played from (a checked name).
    pub stream: String,
    /// Identifies the answer.
    pub id: u64,
    /// PTS of the first sample wanted, µs.
    pub start_us: i64,
    /// Length, ms.
    pub duration_ms: u64,
}

/// Source audio as served: mono, 48 kHz.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// PTS of `samples[0]`, µs.
    pub first_pts_us: i64,
    /// Samples.
    pub samples: Vec<f32>,
}

/// Work to run off the control task.
#[derive(Debug)]
pub enum Job {
    /// A drift estimate.
    Drift(DriftJob),
    /// A calibration measurement of a test tone.
    Tone(ToneJob),
    /// A microphone check of mono samples at `rate_hz`.
    MicCheck {
        /// The recording.
        samples: Vec<f32>,
        /// Its sample rate, Hz.
        rate_hz: u32,
    },
    /// An announcement to synthesise (runs the text-to-speech program).
    Speak(SpeechJob),
}

impl Job {
    /// Runs the job (CPU-bound: tens of ms on a Pi Zero W; a synthesis waits for the
    /// text-to-speech program, up to a second or so there).
    pub fn run(self) -> JobDone {
        match self {
            Job::Drift(j) => {
                let (outcome, estimator) = j.run();
                JobDone::Drift { outcome, estimator }
            }
            Job::Tone(j) => JobDone::Tone(j.run()),
            Job::MicCheck { samples, rate_hz } => {
                JobDone::MicCheck(crate::mic_check::analyze(&samples, 1, rate_hz, None))
            }
            Job::Speak(j) => JobDone::Speech {
                id: j.id,
                result: j.run(),
            },
        }
    }
}

/// A finished [`Job`].
#[derive(Debug)]
pub enum JobDone {
    /// A drift estimate and the estimator it borrowed.
    Drift {
        /// The report, and what it taught about the device's own sound.
        outcome: DriftOutcome,
        /// The estimator, handed back.
        estimator: Box<DelayEstimator>,
    },
    /// A calibration measurement, or why there is none.
    Tone(Result<CalibrationResult, String>),
    /// A microphone check.
    MicCheck(crate::mic_check::MicCheckReport),
    /// A synthesised announcement (mono, 48 kHz), or why there is none.
    Speech {
        /// The [`SpeechJob`]'s id.
        id: u64,
        /// The speech, or the error (naming the program).
        result: Result<Vec<f32>, String>,
    },
}
