//! The demo's and simulator's audio: a decoded clip played in a loop.

use std::path::Path;

use syncstream_shared::decode::decode_file;
use syncstream_shared::time::STREAM_SAMPLE_RATE;
use syncstream_transmitter::PullAudio;

/// Decodes `path` (resampled to 48 kHz stereo) and returns a source that loops it.
///
/// Errors: the file cannot be read or decoded (the message names it).
pub fn looping_clip(path: &Path) -> anyhow::Result<PullAudio> {
    let audio = decode_file(path, STREAM_SAMPLE_RATE)?;
    let clip = audio.stereo_interleaved();
    let mut pos = 0usize;
    Ok(Box::new(move |out: &mut [f32]| {
        for s in out.iter_mut() {
            *s = clip[pos];
            pos = (pos + 1) % clip.len();
        }
        Ok(out.len() / 2)
    }))
}
