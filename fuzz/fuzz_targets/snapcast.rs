//! What a Snapcast server sends (`protocol/src/snapcast/`, `receiver/src/snapcast/`):
//! any bytes through the production incremental `Decoder` (pushed in two pieces, split
//! where the first byte says), and every CodecHeader's codec and every WireChunk
//! through the receiver's `SnapDecoder` (pcm, flac, opus, ogg vorbis).
//! Checks: no panic (a decoder library's own panic, which the receiver contains, is
//! not one); a decoded message re-encodes and decodes to the same message;
//! decoded audio is whole stereo frames, finite, and at most `MAX_CHUNK_FRAMES`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncstream_protocol::snapcast::{Body, Decoder, Message};
use syncstream_receiver::snapcast::decode::{SnapDecoder, MAX_CHUNK_FRAMES};

fuzz_target!(|data: &[u8]| {
    // The receiver contains a third-party decoder's panic (`decode.rs`, `contained`);
    // libfuzzer-sys's hook would abort on it first. With the default hook, a panic
    // anywhere else still unwinds out of this function, and libfuzzer-sys reports it.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let _ = std::panic::take_hook();
    });
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = (split as usize).min(rest.len());
    let mut decoder = Decoder::new();
    decoder.push(&rest[..split]);
    decoder.push(&rest[split..]);
    let mut audio: Option<SnapDecoder> = None;
    let mut out = Vec::new();
    for _ in 0..64 {
        let message = match decoder.next_message() {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => {
                let _ = e.to_string();
                return;
            }
        };
        if let Ok(bytes) = message.encode() {
            let mut again = Decoder::new();
            again.push(&bytes);
            let m: Message = again
                .next_message()
                .expect("an encoded message decodes")
                .expect("a whole message");
            assert_eq!(m.body, message.body);
        }
        match &message.body {
            Body::CodecHeader(h) => {
                audio = h
                    .stream_codec()
                    .ok()
                    .and_then(|c| SnapDecoder::new(&c, &h.payload).ok());
            }
            Body::WireChunk(c) => {
                if let Some(d) = audio.as_mut() {
                    if let Ok(frames) = d.decode(&c.payload, &mut out) {
                        assert_eq!(out.len(), frames * 2);
                        assert!(frames <= MAX_CHUNK_FRAMES);
                        assert!(out.iter().all(|s| s.is_finite()));
                    }
                }
            }
            _ => {}
        }
    }
});
