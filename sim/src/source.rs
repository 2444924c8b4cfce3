//! The demo's and simulator's audio: an audio file played in a loop through the
//! transmitter's file source.

use std::path::Path;

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
