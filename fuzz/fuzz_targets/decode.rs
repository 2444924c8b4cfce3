//! Audio files through the production decoder (`audio/src/decode.rs`, symphonia +
//! rubato): the first byte picks the file-name extension hint, the rest is the file,
//! decoded whole and resampled to 48 kHz by `decode_bytes` (what `decode_file` does
//! with a file's bytes), and streamed as the transmitter's file source does
//! (`AudioFileReader` packets → `fold_to_stereo` → `StreamResampler`). Checks: no
//! panic; decoded audio has at least one channel, channels of equal length, and
//! finite samples; the streamed output is finite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncstream_audio::decode::{decode_bytes, AudioFileReader, MAX_DECODED_SAMPLES};
use syncstream_transmitter::source::{fold_to_stereo, StreamResampler};

const HINTS: [Option<&str>; 8] = [
    None,
    Some("wav"),
    Some("ogg"),
    Some("flac"),
    Some("mp3"),
    Some("aiff"),
    Some("caf"),
    Some("mkv"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&hint, file)) = data.split_first() else {
        return;
    };
    let hint = HINTS[hint as usize % HINTS.len()];
    match decode_bytes("fuzz", file.to_vec(), hint, 48_000) {
        Ok(a) => {
            assert_eq!(a.sample_rate, 48_000);
            assert!(!a.channels.is_empty());
            let n = a.frames();
            assert!(a.channels.iter().all(|c| c.len() == n));
            assert!(a.channels.iter().flatten().all(|s| s.is_finite()));
        }
        Err(e) => {
            let _ = format!("{e:#}");
        }
    }
    stream(file, hint);
});

/// As `transmitter/src/source/file.rs` reads a file: packet by packet, folded to
/// stereo, resampled to 48 kHz in chunks.
fn stream(file: &[u8], hint: Option<&str>) {
    let Ok(mut reader) = AudioFileReader::from_bytes("fuzz", file.to_vec(), hint) else {
        return;
    };
    let Ok(mut rs) = StreamResampler::new(reader.sample_rate) else {
        return;
    };
    let (mut block, mut stereo) = (Vec::new(), Vec::new());
    let mut out = vec![0.0f32; 4096];
    // A file may decode without end (a malformed container): the transmitter would
    // play it as an endless source; here it stops where a whole-file decode would.
    let mut total = 0usize;
    while let Ok(true) = reader.next_block(&mut block) {
        total += block.len();
        if total > MAX_DECODED_SAMPLES {
            return;
        }
        stereo.clear();
        fold_to_stereo(&block, reader.channels.max(1), &mut stereo);
        if rs.push(&stereo).is_err() {
            return;
        }
        drain(&mut rs, &mut out);
    }
    if rs.finish().is_ok() {
        drain(&mut rs, &mut out);
    }
}

fn drain(rs: &mut StreamResampler, out: &mut [f32]) {
    loop {
        let n = rs.pop(out);
        if n == 0 {
            return;
        }
        assert!(out[..n].iter().all(|v| v.is_finite()));
    }
}
