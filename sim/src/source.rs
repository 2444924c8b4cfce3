//! The demo's and simulator's audio: an audio file played in a loop through the
//! transmitter's file source, with spans of digital silence a scenario can ask for.

use std::path::Path;
use std::sync::{Arc, Mutex};

use syncstream_transmitter::source::{open_source, SourceOptions};
use syncstream_transmitter::PullAudio;

/// Opens `path` as a looping transmitter source (48 kHz stereo).
///
/// Errors: the file cannot be read or is not audio (the message names it).
pub fn looping_clip(path: &Path) -> anyhow::Result<PullAudio> {
    let opts = SourceOptions {
        loop_file: true,
        ..Default::default()
    };
    let mut src = open_source(&path.display().to_string(), &opts)?;
    Ok(Box::new(move |buf: &mut [f32]| src.read(buf)))
}

/// Silence on demand for a source: [`SilenceSwitch::silence_for`] makes the next
/// frames it pulls digital silence.
#[derive(Clone, Default)]
pub struct SilenceSwitch {
    /// Stereo frames of silence still to come.
    remaining: Arc<Mutex<u64>>,
}

impl SilenceSwitch {
    /// The next `frames` frames the source delivers are silence.
    pub fn silence_for(&self, frames: u64) {
        *self.remaining.lock().unwrap_or_else(|e| e.into_inner()) = frames;
    }

    /// `pull` with this switch applied.
    pub fn wrap(&self, mut pull: PullAudio) -> PullAudio {
        let remaining = self.remaining.clone();
        Box::new(move |buf: &mut [f32]| {
            let n = pull(buf)?;
            let mut left = remaining.lock().unwrap_or_else(|e| e.into_inner());
            let quiet = (*left).min(n as u64) as usize;
            buf[..quiet * 2].fill(0.0);
            *left -= quiet as u64;
            Ok(n)
        })
    }
}
