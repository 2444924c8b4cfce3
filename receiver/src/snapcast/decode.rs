//! Decoding a Snapcast server's chunks to the receiver's stream format (interleaved
//! f32, 48 kHz, stereo).
//!
//! - PCM: little-endian signed integers of 16, 24 (in 4 bytes) or 32 bits; the chunk's
//!   length must be a whole number of frames.
//! - Opus: one raw Opus packet per chunk (RFC 6716), decoded by libopus through the
//!   `opus` crate; snapserver always encodes Opus at 48000:16:2.
//! - FLAC: the CodecHeader holds the stream header (`fLaC`, STREAMINFO, …), read by
//!   `claxon`; each chunk holds whole FLAC frames, decoded by `claxon`'s frame reader.
//! - Ogg Vorbis: the CodecHeader holds the Ogg pages of the three Vorbis headers, each
//!   chunk whole Ogg pages of audio packets; the `ogg` crate's push parser splits pages
//!   into packets (a packet may continue on the next chunk's page) and symphonia's
//!   Vorbis decoder decodes them (it bounds a codebook's size; `lewton` reserved what a
//!   header claimed and aborted on a hostile one, found by fuzzing). Vorbis output lags
//!   its input by the overlap of two blocks; snapclient plays it so too.
//!
//! A SyncStream receiver plays 48 kHz stereo (the transmitter's format too); a server
//! stream in another format is refused with the `sampleformat` it needs.

use syncstream_protocol::snapcast::{SampleFormat, StreamCodec};
use syncstream_shared::time::{STREAM_CHANNELS, STREAM_SAMPLE_RATE};

/// Most frames one chunk may decode to: 120 ms at 48 kHz (Opus's longest packet; a
/// snapserver's chunks are 10 to 60 ms). Bounds the decoder's buffer.
pub const MAX_CHUNK_FRAMES: usize = 5_760;

/// A decoder for one codec header's chunks.
pub enum SnapDecoder {
    /// Raw PCM in this format (48 kHz stereo).
    Pcm(SampleFormat),
    /// libopus at 48 kHz stereo.
    Opus(Box<opus::Decoder>),
    /// FLAC frames of this many bits per sample; the buffer claxon decodes into.
    Flac {
        /// Bits per sample (STREAMINFO).
        bits: u32,
        /// Decoded samples of one frame (reused).
        buffer: Vec<i32>,
    },
    /// Ogg Vorbis.
    Vorbis(Box<Vorbis>),
}

/// An Ogg Vorbis stream's decoder state.
pub struct Vorbis {
    packets: ogg::reading::BasePacketReader,
    decoder: Box<dyn symphonia::core::codecs::audio::AudioDecoder>,
    /// Decoded samples of one packet (reused).
    samples: Vec<f32>,
}

/// Runs a third-party decoder's `f` so that a panic in it (a decoder's own assertion
/// on hostile input: symphonia's Vorbis codebook reader asserts codeword lengths of at
/// most 32 bits, found by fuzzing) is an error naming `what`, not the receiver's end.
fn contained<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(format!("{what}: the decoder failed on this input")))
}

/// Pushes the whole Ogg pages in `bytes` into `reader` one by one (RFC 3533: a 27-byte
/// header, the segment table, the body; the CRC is checked), handing each packet
/// completed to `packet` (the reader holds one page at a time).
///
/// Errors: a truncated page, a bad capture pattern, version or CRC, or `packet`'s.
fn push_ogg_pages(
    reader: &mut ogg::reading::BasePacketReader,
    bytes: &[u8],
    mut packet: impl FnMut(Vec<u8>) -> Result<(), String>,
) -> Result<(), String> {
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let header: [u8; 27] = rest
            .get(..27)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| format!("Ogg page header truncated at byte {at}"))?;
        let (mut parser, segments) =
            ogg::reading::PageParser::new(header).map_err(|e| format!("Ogg page: {e}"))?;
        let table = rest
            .get(27..27 + segments)
            .ok_or_else(|| format!("Ogg segment table truncated at byte {at}"))?;
        let body_len = parser.parse_segments(table.to_vec());
        let body = rest
            .get(27 + segments..27 + segments + body_len)
            .ok_or_else(|| format!("Ogg page body truncated at byte {at}"))?;
        let page = parser
            .parse_packet_data(body.to_vec())
            .map_err(|e| format!("Ogg page: {e}"))?;
        reader
            .push_page(page)
            .map_err(|e| format!("Ogg page: {e}"))?;
        while let Some(p) = reader.read_packet() {
            packet(p.data)?;
        }
        at += 27 + segments + body_len;
    }
    Ok(())
}

impl SnapDecoder {
    /// A decoder for `codec`.
    ///
    /// Errors (in words, for the log and the status): a sample rate other than 48 kHz or
    /// channels other than 2 (the message names the server's `sampleformat` setting
    /// that fixes it), a codec this receiver does not decode yet (FLAC, Ogg Vorbis), or
    /// libopus refusing to start.
    pub fn new(codec: &StreamCodec, header: &[u8]) -> Result<SnapDecoder, String> {
        let fits = |f: &SampleFormat| {
            if f.rate_hz == STREAM_SAMPLE_RATE && f.channels == STREAM_CHANNELS {
                Ok(())
            } else {
                Err(format!(
                    "the server's stream is {}:{}:{}; a SyncStream receiver plays \
                     {STREAM_SAMPLE_RATE} Hz stereo (set `sampleformat = \
                     {STREAM_SAMPLE_RATE}:16:{STREAM_CHANNELS}` on the snapserver's stream)",
                    f.rate_hz, f.bits, f.channels
                ))
            }
        };
        match codec {
            StreamCodec::Pcm(f) => {
                fits(f)?;
                Ok(SnapDecoder::Pcm(*f))
            }
            StreamCodec::Opus(f) => {
                fits(f)?;
                let d = opus::Decoder::new(STREAM_SAMPLE_RATE, opus::Channels::Stereo)
                    .map_err(|e| format!("cannot start the Opus decoder: {e}"))?;
                Ok(SnapDecoder::Opus(Box::new(d)))
            }
            StreamCodec::Flac => {
                let reader = claxon::FlacReader::new(std::io::Cursor::new(header))
                    .map_err(|e| format!("FLAC stream header: {e}"))?;
                let info = reader.streaminfo();
                fits(&SampleFormat {
                    rate_hz: info.sample_rate,
                    bits: info.bits_per_sample as u16,
                    channels: info.channels as u16,
                })?;
                if !(4..=32).contains(&info.bits_per_sample) {
                    return Err(format!(
                        "FLAC stream of {} bits per sample",
                        info.bits_per_sample
                    ));
                }
                Ok(SnapDecoder::Flac {
                    bits: info.bits_per_sample,
                    buffer: Vec::with_capacity(2 * MAX_CHUNK_FRAMES),
                })
            }
            StreamCodec::Ogg => {
                let mut packets = ogg::reading::BasePacketReader::new();
                let mut headers = std::collections::VecDeque::new();
                push_ogg_pages(&mut packets, header, |p| {
                    headers.push_back(p);
                    Ok(())
                })?;
                let mut next = |what: &str| {
                    headers
                        .pop_front()
                        .ok_or_else(|| format!("the Ogg codec header has no Vorbis {what} header"))
                };
                let ident = next("identification")?;
                // Vorbis I, 4.2.2: type 1, "vorbis", version 0, channels (byte 11),
                // sample rate (bytes 12..16, little-endian).
                if ident.len() < 30 || !ident.starts_with(b"\x01vorbis") {
                    return Err("the Vorbis identification header is not one".into());
                }
                let rate_hz = u32::from_le_bytes([ident[12], ident[13], ident[14], ident[15]]);
                fits(&SampleFormat {
                    rate_hz,
                    bits: 16,
                    channels: u16::from(ident[11]),
                })?;
                if !next("comment")?.starts_with(b"\x03vorbis") {
                    return Err("the Vorbis comment header is not one".into());
                }
                let setup = next("setup")?;
                let mut extra = ident;
                extra.extend_from_slice(&setup);
                let mut params = symphonia::core::codecs::audio::AudioCodecParameters::new();
                params
                    .for_codec(symphonia::core::codecs::audio::well_known::CODEC_ID_VORBIS)
                    .with_sample_rate(rate_hz)
                    .with_extra_data(extra.into_boxed_slice());
                let decoder = contained("Vorbis headers", || {
                    symphonia::default::get_codecs()
                        .make_audio_decoder(
                            &params,
                            &symphonia::core::codecs::audio::AudioDecoderOptions::default(),
                        )
                        .map_err(|e| format!("Vorbis headers: {e}"))
                })?;
                Ok(SnapDecoder::Vorbis(Box::new(Vorbis {
                    packets,
                    decoder,
                    samples: Vec::with_capacity(2 * MAX_CHUNK_FRAMES),
                })))
            }
        }
    }

    /// Decodes one chunk's `payload` into `out` (cleared first; interleaved stereo
    /// f32 in −1..1) and returns the number of frames.
    ///
    /// Errors: a PCM chunk that is not a whole number of frames or is longer than
    /// [`MAX_CHUNK_FRAMES`], a corrupt packet or frame, samples that are not finite.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<f32>) -> Result<usize, String> {
        let frames = self.decode_unchecked(payload, out)?;
        // A hostile stream can make a decoder compute infinities (found by fuzzing):
        // they must not reach the output or the measurements.
        if !out.iter().all(|s| s.is_finite()) {
            out.clear();
            return Err("the chunk decodes to samples that are not finite".into());
        }
        Ok(frames)
    }

    fn decode_unchecked(&mut self, payload: &[u8], out: &mut Vec<f32>) -> Result<usize, String> {
        out.clear();
        match self {
            SnapDecoder::Pcm(f) => {
                let frame_bytes = f.frame_bytes();
                if !payload.len().is_multiple_of(frame_bytes) {
                    return Err(format!(
                        "PCM chunk of {} bytes is not a whole number of {frame_bytes}-byte frames",
                        payload.len()
                    ));
                }
                let frames = payload.len() / frame_bytes;
                if frames > MAX_CHUNK_FRAMES {
                    return Err(format!(
                        "PCM chunk of {frames} frames is longer than {MAX_CHUNK_FRAMES}"
                    ));
                }
                let width = f.sample_bytes();
                out.extend(payload.chunks_exact(width).map(|b| match f.bits {
                    8 => (b[0] as i8) as f32 / 128.0,
                    16 => i16::from_le_bytes([b[0], b[1]]) as f32 / 32_768.0,
                    // 24 bits in the low three bytes of four, sign-extended.
                    24 => {
                        (i32::from_le_bytes([b[0], b[1], b[2], 0]) << 8 >> 8) as f32 / 8_388_608.0
                    }
                    _ => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / 2_147_483_648.0,
                }));
                Ok(frames)
            }
            SnapDecoder::Opus(d) => {
                out.resize(MAX_CHUNK_FRAMES * STREAM_CHANNELS as usize, 0.0);
                let frames = d
                    .decode_float(payload, out, false)
                    .map_err(|e| format!("Opus packet of {} bytes: {e}", payload.len()))?;
                out.truncate(frames * STREAM_CHANNELS as usize);
                Ok(frames)
            }
            SnapDecoder::Flac { bits, buffer } => {
                let scale = 1.0 / (1u64 << (*bits - 1)) as f32;
                let mut frames_in = claxon::frame::FrameReader::new(std::io::Cursor::new(payload));
                loop {
                    match frames_in.read_next_or_eof(std::mem::take(buffer)) {
                        Ok(Some(block)) => {
                            if block.channels() != u32::from(STREAM_CHANNELS) {
                                return Err(format!("FLAC frame of {} channels", block.channels()));
                            }
                            if out.len() / 2 + block.duration() as usize > MAX_CHUNK_FRAMES {
                                return Err(format!(
                                    "FLAC chunk longer than {MAX_CHUNK_FRAMES} frames"
                                ));
                            }
                            out.extend(
                                block
                                    .stereo_samples()
                                    .flat_map(|(l, r)| [l as f32 * scale, r as f32 * scale]),
                            );
                            *buffer = block.into_buffer();
                        }
                        Ok(None) => break,
                        Err(e) => return Err(format!("FLAC frame: {e}")),
                    }
                }
                Ok(out.len() / 2)
            }
            SnapDecoder::Vorbis(v) => {
                let Vorbis {
                    packets,
                    decoder,
                    samples,
                } = &mut **v;
                push_ogg_pages(packets, payload, |packet| {
                    let packet = symphonia::core::packet::Packet::new(
                        0,
                        symphonia::core::units::Timestamp::new(0),
                        symphonia::core::units::Duration::new(0),
                        packet,
                    );
                    contained("Vorbis packet", || {
                        let decoded = decoder
                            .decode(&packet)
                            .map_err(|e| format!("Vorbis packet: {e}"))?;
                        if decoded.spec().channels().count() != usize::from(STREAM_CHANNELS) {
                            return Err("a Vorbis packet of another channel count".into());
                        }
                        samples.clear();
                        decoded.copy_to_vec_interleaved(&mut *samples);
                        Ok(())
                    })?;
                    if out.len() / 2 + samples.len() / 2 > MAX_CHUNK_FRAMES {
                        return Err(format!(
                            "Vorbis chunk longer than {MAX_CHUNK_FRAMES} frames"
                        ));
                    }
                    out.extend_from_slice(samples);
                    Ok(())
                })?;
                Ok(out.len() / 2)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcm(bits: u16) -> SnapDecoder {
        SnapDecoder::new(
            &StreamCodec::Pcm(SampleFormat {
                rate_hz: 48_000,
                bits,
                channels: 2,
            }),
            &[],
        )
        .unwrap()
    }

    #[test]
    fn pcm_of_every_width_decodes_to_the_same_values() {
        let mut out = Vec::new();
        // 0.5 and −0.25 in 16, 24 (in 4 bytes) and 32 bits.
        let s16: Vec<u8> = [16_384i16, -8_192]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let s24: Vec<u8> = [4_194_304i32, -2_097_152]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let s32: Vec<u8> = [1_073_741_824i32, -536_870_912]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        for (bits, bytes) in [(16, s16), (24, s24), (32, s32)] {
            assert_eq!(pcm(bits).decode(&bytes, &mut out), Ok(1), "{bits} bits");
            assert_eq!(out, [0.5, -0.25], "{bits} bits");
        }
    }

    #[test]
    fn a_pcm_chunk_of_part_of_a_frame_is_refused() {
        let err = pcm(16).decode(&[0; 6], &mut Vec::new()).unwrap_err();
        assert!(err.contains("not a whole number of 4-byte frames"), "{err}");
        let err = pcm(16)
            .decode(&vec![0; (MAX_CHUNK_FRAMES + 1) * 4], &mut Vec::new())
            .unwrap_err();
        assert!(err.contains("longer than"), "{err}");
    }

    #[test]
    fn a_stream_in_another_format_or_codec_is_refused_naming_the_fix() {
        let err = SnapDecoder::new(
            &StreamCodec::Pcm(SampleFormat {
                rate_hz: 44_100,
                bits: 16,
                channels: 2,
            }),
            &[],
        )
        .err()
        .unwrap();
        assert!(err.contains("44100:16:2") && err.contains("sampleformat = 48000:16:2"));
        let err = SnapDecoder::new(&StreamCodec::Flac, b"fLaC").err().unwrap();
        assert!(err.contains("FLAC stream header"), "{err}");
        let err = SnapDecoder::new(&StreamCodec::Ogg, b"OggS").err().unwrap();
        assert!(err.contains("Ogg page header truncated"), "{err}");
    }

    #[test]
    fn opus_packets_decode_and_garbage_is_an_error() {
        let fmt = SampleFormat {
            rate_hz: 48_000,
            bits: 16,
            channels: 2,
        };
        let mut enc =
            opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::Audio).unwrap();
        let tone: Vec<f32> = (0..960 * 2)
            .map(|i| 0.3 * ((i / 2) as f32 * 0.05).sin())
            .collect();
        let packet = enc.encode_vec_float(&tone, 4000).unwrap();
        let mut dec = SnapDecoder::new(&StreamCodec::Opus(fmt), &[]).unwrap();
        let mut out = Vec::new();
        assert_eq!(dec.decode(&packet, &mut out), Ok(960));
        assert_eq!(out.len(), 1920);
        // Code 3 with a frame count of 0: not a valid packet (RFC 6716, 3.2.5).
        assert!(dec.decode(&[0x03, 0x00], &mut out).is_err());
    }
}
