//! Spoken diagnostics ([`crate::voice`]): `{"cmd":"announce"}`, or the first time
//! the receiver plays when [`crate::voice::VoiceConfig::announce_at_start`] is set.
//!
//! The text is built from the node's figures at the time of the command, synthesised
//! off the node's task ([`Job::Speak`]), then played by the render callback's tone
//! overlay from [`LEAD_US`] ahead, as a calibration test tone is. One announcement at a
//! time, and never during a test tone (each refuses the other). The drift detector
//! skips the windows the speech may reach (`measure.rs`, [`SpeechSpan::overlaps`]).

use std::sync::Arc;

use tracing::{debug, info, warn};

use super::{Job, ReceiverIo, ReceiverNode};
use crate::realtime::ToRender;
use crate::test_tone::LEAD_US;
use crate::voice::{announcement, Figures, SpeechJob, SpeechSpan, SYNTH_TIMEOUT_US};

impl ReceiverNode {
    /// Starts an announcement (`{"cmd":"announce"}`): builds its text from the state,
    /// the last drift and the offset now, and asks for its synthesis. Refused, with a
    /// warning, while a test tone or another announcement is under way.
    pub(super) fn start_announcement(&mut self, now_us: i64, io: &mut impl ReceiverIo) {
        if self.tone.is_some() || self.tone_running.is_some() {
            warn!(
                device = self.device,
                "announce ignored: a test tone is playing on this device"
            );
            return;
        }
        if self.speaking() {
            warn!(
                device = self.device,
                "announce ignored: an announcement is already under way"
            );
            return;
        }
        let state = self.status(now_us).state;
        let text = announcement(&Figures {
            device: &self.device,
            state: &state,
            drift_ms: self.last_report.as_ref().and_then(|r| r.drift_ms),
            offset_ms: self.offset_now_ms(now_us).unwrap_or(self.offset.offset_ms),
        });
        self.speech_seq += 1;
        self.speech_pending = Some((self.speech_seq, now_us.saturating_add(SYNTH_TIMEOUT_US)));
        info!(device = self.device, text, "announcement");
        io.run_job(Job::Speak(SpeechJob {
            id: self.speech_seq,
            text,
            program: self.voice.program.clone(),
        }));
    }

    /// A synthesis came back: plays it from [`LEAD_US`] ahead, or logs why not.
    pub(super) fn on_speech(&mut self, id: u64, result: Result<Vec<f32>, String>, now_us: i64) {
        if self.speech_pending.map(|(p, _)| p) != Some(id) {
            debug!(device = self.device, id, "a late synthesis dropped");
            return;
        }
        self.speech_pending = None;
        let samples = match result {
            Ok(s) if !s.is_empty() => s,
            Ok(_) => {
                warn!(device = self.device, "announcement not spoken: no audio");
                return;
            }
            Err(e) => {
                warn!(device = self.device, "announcement not spoken: {e}");
                return;
            }
        };
        let span = SpeechSpan::new(now_us.saturating_add(LEAD_US), samples.len());
        let samples: Arc<[f32]> = samples.into();
        self.audio.send(ToRender::ToneArm {
            samples,
            start_dac_us: span.start_dac_us,
        });
        info!(
            device = self.device,
            seconds = (span.end_dac_us - span.start_dac_us) as f64 / 1e6,
            "announcement playing"
        );
        self.speech = Some(span);
        self.speech_armed = true;
    }

    /// Asks for the start-up announcement once the receiver first plays (when so
    /// configured); disarms the overlay after an announcement; gives up a synthesis
    /// that does not come back.
    pub(super) fn poll_speech(&mut self, now_us: i64, io: &mut impl ReceiverIo) {
        if let Some((id, deadline)) = self.speech_pending {
            if now_us > deadline {
                warn!(
                    device = self.device,
                    id,
                    "announcement not spoken: the text-to-speech program '{}' did not \
                     answer within {} s",
                    self.voice.program.display(),
                    SYNTH_TIMEOUT_US / 1_000_000
                );
                self.speech_pending = None;
            }
        }
        if self.speech_armed && self.speech.is_some_and(|s| now_us > s.over_at_us()) {
            self.audio.send(ToRender::ToneDisarm);
            self.speech_armed = false;
        }
        if self.voice.announce_at_start && !self.announced_at_start && self.played {
            self.announced_at_start = true;
            self.start_announcement(now_us, io);
        }
    }
}
