//! Audio codecs of the stream: Opus (default) and 16-bit PCM.

use crate::wire::Codec;

/// A codec failure.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// libopus refused.
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    /// A payload that does not decode to the announced length.
    #[error("bad {codec:?} payload: {reason}")]
    BadPayload {
        /// Codec.
        codec: Codec,
        /// Why.
        reason: String,
    },
    /// Unsupported stream parameters.
    #[error("unsupported stream format: {0}")]
    Format(String),
}

/// Frames per chunk: 20 ms at 48 kHz (an Opus frame size).
pub const CHUNK_FRAMES: usize = 960;

fn opus_channels(channels: u16) -> Result<opus::Channels, CodecError> {
    match channels {
        1 => Ok(opus::Channels::Mono),
        2 => Ok(opus::Channels::Stereo),
        n => Err(CodecError::Format(format!(
            "{n} channels (Opus takes 1 or 2)"
        ))),
    }
}

/// Encodes interleaved f32 chunks of [`CHUNK_FRAMES`] frames.
pub enum AudioEncoder {
    /// Opus at 48 kHz, music mode.
    Opus(Box<opus::Encoder>, u16),
    /// PCM16 little-endian.
    Pcm16(u16),
}

impl AudioEncoder {
    /// An encoder for `codec` at `sample_rate` Hz with `channels` channels.
    /// Opus runs at 128 kbit/s (stereo) in its audio mode.
    pub fn new(codec: Codec, sample_rate: u32, channels: u16) -> Result<Self, CodecError> {
        match codec {
            Codec::Opus => {
                let mut enc = opus::Encoder::new(
                    sample_rate,
                    opus_channels(channels)?,
                    opus::Application::Audio,
                )?;
                enc.set_bitrate(opus::Bitrate::Bits(64_000 * channels as i32))?;
                Ok(AudioEncoder::Opus(Box::new(enc), channels))
            }
            Codec::Pcm16 => Ok(AudioEncoder::Pcm16(channels)),
        }
    }

    /// Samples by which decoded audio lags the input (Opus look-ahead; 0 for PCM).
    pub fn delay_samples(&mut self) -> Result<u32, CodecError> {
        match self {
            AudioEncoder::Opus(enc, _) => Ok(enc.get_lookahead()?.max(0) as u32),
            AudioEncoder::Pcm16(_) => Ok(0),
        }
    }

    /// Encodes one chunk (interleaved, `CHUNK_FRAMES` × channels samples).
    pub fn encode(&mut self, interleaved: &[f32]) -> Result<Vec<u8>, CodecError> {
        match self {
            AudioEncoder::Opus(enc, _) => Ok(enc.encode_vec_float(interleaved, 4000)?),
            AudioEncoder::Pcm16(_) => {
                let mut out = Vec::with_capacity(interleaved.len() * 2);
                for &s in interleaved {
                    let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
                    out.extend_from_slice(&v.to_le_bytes());
                }
                Ok(out)
            }
        }
    }
}

/// Decodes chunks back to interleaved f32.
pub enum AudioDecoder {
    /// Opus.
    Opus(Box<opus::Decoder>, u16),
    /// PCM16 little-endian.
    Pcm16(u16),
}

impl AudioDecoder {
    /// A decoder for `codec` at `sample_rate` Hz with `channels` channels.
    pub fn new(codec: Codec, sample_rate: u32, channels: u16) -> Result<Self, CodecError> {
        match codec {
            Codec::Opus => Ok(AudioDecoder::Opus(
                Box::new(opus::Decoder::new(sample_rate, opus_channels(channels)?)?),
                channels,
            )),
            Codec::Pcm16 => Ok(AudioDecoder::Pcm16(channels)),
        }
    }

    /// Decodes `payload` that must hold exactly `frames` frames into `out`
    /// (resized to `frames` × channels). Errors on a corrupt payload or a wrong length.
    pub fn decode(
        &mut self,
        payload: &[u8],
        frames: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), CodecError> {
        match self {
            AudioDecoder::Opus(dec, ch) => {
                out.resize(frames * *ch as usize, 0.0);
                let n = dec.decode_float(payload, out, false)?;
                if n != frames {
                    return Err(CodecError::BadPayload {
                        codec: Codec::Opus,
                        reason: format!("{n} frames decoded, {frames} announced"),
                    });
                }
                Ok(())
            }
            AudioDecoder::Pcm16(ch) => {
                let expect = frames * *ch as usize * 2;
                if payload.len() != expect {
                    return Err(CodecError::BadPayload {
                        codec: Codec::Pcm16,
                        reason: format!("{} bytes, expected {expect}", payload.len()),
                    });
                }
                out.clear();
                out.extend(
                    payload
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0),
                );
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(frames: usize, ch: usize, offset: usize) -> Vec<f32> {
        (0..frames * ch)
            .map(|i| {
                let n = (i / ch + offset) as f32;
                0.5 * (2.0 * std::f32::consts::PI * 440.0 * n / 48_000.0).sin()
            })
            .collect()
    }

    #[test]
    fn pcm_round_trip_is_exact_to_16_bits() {
        let mut e = AudioEncoder::new(Codec::Pcm16, 48_000, 2).unwrap();
        let mut d = AudioDecoder::new(Codec::Pcm16, 48_000, 2).unwrap();
        let x = tone(CHUNK_FRAMES, 2, 0);
        let mut y = Vec::new();
        d.decode(&e.encode(&x).unwrap(), CHUNK_FRAMES, &mut y)
            .unwrap();
        assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() < 1e-4));
        assert!(d.decode(&[1, 2, 3], CHUNK_FRAMES, &mut y).is_err());
    }

    #[test]
    fn opus_round_trip_keeps_the_tone_after_its_lookahead() {
        let mut e = AudioEncoder::new(Codec::Opus, 48_000, 2).unwrap();
        let delay = e.delay_samples().unwrap() as usize;
        assert!(delay > 0 && delay < 1000, "{delay}");
        let mut d = AudioDecoder::new(Codec::Opus, 48_000, 2).unwrap();
        let mut decoded = Vec::new();
        let mut buf = Vec::new();
        for k in 0..10 {
            let pkt = e.encode(&tone(CHUNK_FRAMES, 2, k * CHUNK_FRAMES)).unwrap();
            d.decode(&pkt, CHUNK_FRAMES, &mut buf).unwrap();
            decoded.extend_from_slice(&buf);
        }
        // Compare decoded[n + delay] with the input tone at n, over the later chunks.
        let reference = tone(10 * CHUNK_FRAMES, 2, 0);
        let mut err = 0.0f64;
        let mut energy = 0.0f64;
        for n in 4 * CHUNK_FRAMES..9 * CHUNK_FRAMES {
            let a = reference[2 * n] as f64;
            let b = decoded[2 * (n + delay)] as f64;
            err += (a - b).powi(2);
            energy += a * a;
        }
        assert!(err / energy < 0.01, "SNR too low: {}", err / energy);
        assert!(d.decode(&[0xff; 3], CHUNK_FRAMES, &mut buf).is_err());
    }
}
