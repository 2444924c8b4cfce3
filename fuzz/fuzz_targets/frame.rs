//! Stream frames (`protocol/src/wire.rs`): any bytes through the production decoder
//! `Frame::decode` (every frame type, present and future: it is the generic decoder).
//! Checks: no panic; a decoded frame re-encodes, no longer than its input, and decodes
//! to the same frame; an `Audio` frame the receiver would accept (1 to 6 chunks of
//! frames, as `receiver/src/node/stream.rs` checks) decodes through the production
//! PCM and Opus decoders to exactly `frames × channels` finite samples or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncstream_protocol::codec::{AudioDecoder, CHUNK_FRAMES};
use syncstream_protocol::wire::{Codec, Frame};

fuzz_target!(|data: &[u8]| {
    let frame = match Frame::decode(data) {
        Ok(f) => f,
        Err(e) => {
            // An error is an error: it formats.
            let _ = e.to_string();
            return;
        }
    };
    let bytes = frame.encode().expect("a decoded frame encodes");
    assert!(
        bytes.len() <= data.len(),
        "re-encoded {} bytes from {}",
        bytes.len(),
        data.len()
    );
    let again = Frame::decode(&bytes).expect("an encoded frame decodes");
    assert_eq!(again, frame);
    if let Frame::Audio {
        frames, payload, ..
    } = &frame
    {
        let frames = *frames as usize;
        if frames == 0 || frames > 6 * CHUNK_FRAMES {
            return; // the receiver drops it before decoding
        }
        for (codec, channels) in [(Codec::Pcm16, 1u16), (Codec::Pcm16, 2), (Codec::Opus, 2)] {
            let mut dec = AudioDecoder::new(codec, 48_000, channels).expect("a decoder");
            let mut out = Vec::new();
            if dec.decode(payload, frames, &mut out).is_ok() {
                assert_eq!(out.len(), frames * channels as usize);
                assert!(out.iter().all(|s| s.is_finite()));
            }
        }
    }
});
