//! What a [`CodecHeader`]'s blob says about the stream.
//!
//! - `pcm`: a 44-byte RIFF/WAVE header ("RIFF", 36, "WAVE", a 16-byte "fmt " chunk with
//!   format 1, channels, rate, byte rate, block align, bits, then "data" of size 0; all
//!   little-endian). The client reads rate, bits and channels from "fmt " and skips other
//!   chunks until "data" (`server/encoder/pcm_encoder.cpp`,
//!   `client/decoder/pcm_decoder.cpp`, v0.26.0). WireChunks then carry interleaved signed
//!   little-endian samples.
//! - `opus`: a 12-byte pseudo-header made up by Snapcast: the u32 0x4F505553 written
//!   little-endian (so the bytes "SUPO"), u32 rate, u16 bits, u16 channels
//!   (`server/encoder/opus_encoder.cpp`). WireChunks then carry one raw Opus packet each.
//! - `flac`, `ogg`: the blob is the codec's own stream header, passed through as bytes.
//!
//! The 24-bit caveat: Snapcast stores a 24-bit sample in **4** bytes
//! (`common/sample_format.cpp`), but its WAV header's block align counts 3; frame sizes
//! come from [`SampleFormat::frame_bytes`], never from the header's block align.

use super::body::CodecHeader;
use super::{Reader, SnapError};

/// Highest sample rate accepted from a header, Hz (a sanity bound).
pub const MAX_RATE_HZ: u32 = 768_000;
/// Most channels accepted from a header (a sanity bound).
pub const MAX_CHANNELS: u16 = 64;

/// A stream's sample format, as in Snapcast's `rate:bits:channels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SampleFormat {
    /// Frames per second, `1..=`[`MAX_RATE_HZ`].
    pub rate_hz: u32,
    /// Bits per sample: 8, 16, 24 or 32.
    pub bits: u16,
    /// Interleaved channels, `1..=`[`MAX_CHANNELS`].
    pub channels: u16,
}

impl SampleFormat {
    /// Checks the ranges above; `what` names the header in the error.
    ///
    /// Errors: [`SnapError::Invalid`] naming the field and the bad value.
    pub fn validate(&self, what: &'static str) -> Result<(), SnapError> {
        if !(1..=MAX_RATE_HZ).contains(&self.rate_hz) {
            return Err(SnapError::invalid(
                what,
                format!(
                    "sample rate {} Hz is outside 1..={MAX_RATE_HZ}",
                    self.rate_hz
                ),
            ));
        }
        if !matches!(self.bits, 8 | 16 | 24 | 32) {
            return Err(SnapError::invalid(
                what,
                format!("{} bits per sample (expected 8, 16, 24 or 32)", self.bits),
            ));
        }
        if !(1..=MAX_CHANNELS).contains(&self.channels) {
            return Err(SnapError::invalid(
                what,
                format!("{} channels is outside 1..={MAX_CHANNELS}", self.channels),
            ));
        }
        Ok(())
    }

    /// Bytes one sample takes in a PCM chunk: `bits/8`, except 24 bits → 4 bytes.
    pub fn sample_bytes(&self) -> usize {
        match self.bits {
            24 => 4,
            b => (b as usize).div_ceil(8),
        }
    }

    /// Bytes one interleaved frame takes in a PCM chunk (`sample_bytes · channels`).
    pub fn frame_bytes(&self) -> usize {
        self.sample_bytes() * self.channels as usize
    }
}

/// The stream codec a [`CodecHeader`] announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCodec {
    /// Raw PCM in this format.
    Pcm(SampleFormat),
    /// Opus packets decoding to this format (snapserver always uses 48000:16:2).
    Opus(SampleFormat),
    /// FLAC; the header blob is the FLAC stream header (`fLaC` + metadata blocks).
    Flac,
    /// Ogg Vorbis; the header blob is the Ogg pages of the three Vorbis headers.
    Ogg,
}

impl CodecHeader {
    /// Interprets the codec name and blob.
    ///
    /// Errors: [`SnapError::Invalid`] for an unknown codec name, or as
    /// [`parse_wav_header`] / [`parse_opus_header`].
    pub fn stream_codec(&self) -> Result<StreamCodec, SnapError> {
        match self.codec.as_str() {
            "pcm" => parse_wav_header(&self.payload).map(StreamCodec::Pcm),
            "opus" => parse_opus_header(&self.payload).map(StreamCodec::Opus),
            "flac" => Ok(StreamCodec::Flac),
            "ogg" => Ok(StreamCodec::Ogg),
            other => Err(SnapError::invalid(
                "CodecHeader.codec",
                format!("unknown codec {other:?} (expected pcm, flac, ogg or opus)"),
            )),
        }
    }
}

/// The sample format in a PCM codec header (a RIFF/WAVE header).
///
/// Reads "RIFF", skips the RIFF size, "WAVE", then walks chunks (u32 id, u32 LE size,
/// data padded to an even length) until "data", taking rate, bits and channels from
/// "fmt " (format tag 1, at least 16 bytes). Byte rate and block align are ignored (see
/// the module docs). Never reads past the blob.
///
/// Errors: [`SnapError::Truncated`] / [`SnapError::Invalid`] naming `"PCM header"`'s
/// part: missing magic, a chunk running past the end, no "fmt " before "data", a
/// format tag other than 1, or values out of [`SampleFormat::validate`]'s ranges.
pub fn parse_wav_header(blob: &[u8]) -> Result<SampleFormat, SnapError> {
    let mut r = Reader::new(blob);
    if r.array::<4>("PCM header RIFF magic")? != *b"RIFF" {
        return Err(SnapError::invalid(
            "PCM header",
            "does not start with \"RIFF\"",
        ));
    }
    r.u32("PCM header RIFF size")?;
    if r.array::<4>("PCM header WAVE magic")? != *b"WAVE" {
        return Err(SnapError::invalid(
            "PCM header",
            "no \"WAVE\" after the RIFF size",
        ));
    }
    let mut format = None;
    loop {
        let id = r.array::<4>("PCM header chunk id")?;
        let size = r.u32("PCM header chunk size")?;
        if &id == b"data" {
            break;
        }
        let padded = size as u64 + (size & 1) as u64;
        if padded > r.remaining() as u64 {
            return Err(SnapError::Truncated {
                field: "PCM header chunk",
                needed: padded,
                available: r.remaining(),
            });
        }
        let data = r.take(padded as usize, "PCM header chunk")?;
        if &id == b"fmt " {
            let mut f = Reader::new(data);
            let tag = f.u16("PCM header fmt chunk")?;
            let channels = f.u16("PCM header fmt chunk")?;
            let rate_hz = f.u32("PCM header fmt chunk")?;
            f.u32("PCM header fmt chunk")?; // byte rate
            f.u16("PCM header fmt chunk")?; // block align
            let bits = f.u16("PCM header fmt chunk")?;
            if tag != 1 {
                return Err(SnapError::invalid(
                    "PCM header fmt chunk",
                    format!("format tag {tag} (expected 1, integer PCM)"),
                ));
            }
            format = Some(SampleFormat {
                rate_hz,
                bits,
                channels,
            });
        }
    }
    let format = format
        .ok_or_else(|| SnapError::invalid("PCM header", "no \"fmt \" chunk before \"data\""))?;
    format.validate("PCM header fmt chunk")?;
    Ok(format)
}

/// The 44-byte RIFF/WAVE header snapserver sends for PCM in `format` (block align and
/// byte rate computed with `bits/8` bytes per sample, as snapserver does).
pub fn wav_header(format: SampleFormat) -> [u8; 44] {
    let block_align = (format.channels as u32 * (format.bits as u32 / 8)) as u16;
    let byte_rate = format.rate_hz.wrapping_mul(block_align as u32);
    let mut out = [0u8; 44];
    let mut w = 0;
    let mut put = |b: &[u8]| {
        out[w..w + b.len()].copy_from_slice(b);
        w += b.len();
    };
    put(b"RIFF");
    put(&36u32.to_le_bytes());
    put(b"WAVE");
    put(b"fmt ");
    put(&16u32.to_le_bytes());
    put(&1u16.to_le_bytes());
    put(&format.channels.to_le_bytes());
    put(&format.rate_hz.to_le_bytes());
    put(&byte_rate.to_le_bytes());
    put(&block_align.to_le_bytes());
    put(&format.bits.to_le_bytes());
    put(b"data");
    put(&0u32.to_le_bytes());
    out
}

/// The bytes "SUPO" that open Snapcast's Opus pseudo-header (0x4F505553 little-endian).
pub const OPUS_MAGIC: [u8; 4] = *b"SUPO";

/// The sample format in an Opus codec header: exactly 12 bytes, "SUPO", u32 rate,
/// u16 bits, u16 channels (little-endian).
///
/// Errors: [`SnapError::Invalid`] naming `"Opus header"` for a wrong length or magic,
/// or values out of [`SampleFormat::validate`]'s ranges.
pub fn parse_opus_header(blob: &[u8]) -> Result<SampleFormat, SnapError> {
    if blob.len() != 12 {
        return Err(SnapError::invalid(
            "Opus header",
            format!("{} bytes (expected 12)", blob.len()),
        ));
    }
    let mut r = Reader::new(blob);
    let magic = r.array::<4>("Opus header")?;
    if magic != OPUS_MAGIC {
        return Err(SnapError::invalid(
            "Opus header",
            format!("magic {magic:02x?} is not \"SUPO\""),
        ));
    }
    let format = SampleFormat {
        rate_hz: r.u32("Opus header")?,
        bits: r.u16("Opus header")?,
        channels: r.u16("Opus header")?,
    };
    format.validate("Opus header")?;
    Ok(format)
}

/// The 12-byte Opus pseudo-header for `format`.
pub fn opus_header(format: SampleFormat) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[0..4].copy_from_slice(&OPUS_MAGIC);
    out[4..8].copy_from_slice(&format.rate_hz.to_le_bytes());
    out[8..10].copy_from_slice(&format.bits.to_le_bytes());
    out[10..12].copy_from_slice(&format.channels.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const F48: SampleFormat = SampleFormat {
        rate_hz: 48_000,
        bits: 16,
        channels: 2,
    };

    /// Captured from snapserver 0.26.0 for 48000:16:2 (research notes, 1.4).
    const WAV_48000_16_2: &str = "52494646 24000000 57415645 666d7420 10000000 0100 0200 \
                                  80bb0000 00ee0200 0400 1000 64617461 00000000";
    const OPUS_48000_16_2: &str = "5355504f 80bb0000 1000 0200";

    #[test]
    fn golden_pcm_header() {
        let golden = hex(WAV_48000_16_2);
        assert_eq!(golden.len(), 44);
        assert_eq!(parse_wav_header(&golden).unwrap(), F48);
        assert_eq!(wav_header(F48).to_vec(), golden);
        assert_eq!(F48.frame_bytes(), 4);
        let ch = CodecHeader {
            codec: "pcm".into(),
            payload: golden,
        };
        assert_eq!(ch.stream_codec().unwrap(), StreamCodec::Pcm(F48));
    }

    #[test]
    fn golden_opus_header() {
        let golden = hex(OPUS_48000_16_2);
        assert_eq!(parse_opus_header(&golden).unwrap(), F48);
        assert_eq!(opus_header(F48).to_vec(), golden);
        let ch = CodecHeader {
            codec: "opus".into(),
            payload: golden,
        };
        assert_eq!(ch.stream_codec().unwrap(), StreamCodec::Opus(F48));
    }

    #[test]
    fn twenty_four_bits_take_four_bytes() {
        let f = SampleFormat {
            rate_hz: 96_000,
            bits: 24,
            channels: 2,
        };
        let h = wav_header(f);
        // The header says block align 6 (3 bytes per sample) ...
        assert_eq!(&h[32..34], &6u16.to_le_bytes());
        // ... but the chunks hold 4 bytes per sample.
        let parsed = parse_wav_header(&h).unwrap();
        assert_eq!(parsed, f);
        assert_eq!((parsed.sample_bytes(), parsed.frame_bytes()), (4, 8));
        let f32b = SampleFormat { bits: 32, ..f };
        assert_eq!(f32b.frame_bytes(), 8);
        let f8 = SampleFormat { bits: 8, ..f };
        assert_eq!(f8.frame_bytes(), 2);
    }

    #[test]
    fn wav_extra_chunks_are_skipped() {
        let g = hex(WAV_48000_16_2);
        let mut h = g[..12].to_vec();
        h.extend_from_slice(b"LIST");
        h.extend_from_slice(&3u32.to_le_bytes());
        h.extend_from_slice(&[1, 2, 3, 0]); // odd size + pad byte
        h.extend_from_slice(&g[12..]);
        assert_eq!(parse_wav_header(&h).unwrap(), F48);
    }

    #[test]
    fn bad_wav_headers_are_errors() {
        let g = hex(WAV_48000_16_2);
        for n in 0..g.len() {
            assert!(parse_wav_header(&g[..n]).is_err(), "prefix of {n}");
        }
        let with = |at: usize, bytes: &[u8]| {
            let mut h = g.clone();
            h[at..at + bytes.len()].copy_from_slice(bytes);
            parse_wav_header(&h).unwrap_err().to_string()
        };
        assert!(with(0, b"RIFX").contains("RIFF"));
        assert!(with(8, b"AVI ").contains("WAVE"));
        assert!(with(12, b"junk").contains("fmt "));
        assert!(with(20, &3u16.to_le_bytes()).contains("format tag 3"));
        assert!(with(22, &0u16.to_le_bytes()).contains("0 channels"));
        assert!(with(24, &0u32.to_le_bytes()).contains("sample rate 0"));
        assert!(with(34, &12u16.to_le_bytes()).contains("12 bits"));
        // A chunk size past the end is refused, not trusted.
        let e = with(16, &u32::MAX.to_le_bytes());
        assert!(e.contains("truncated"), "{e}");
        let ch = CodecHeader {
            codec: "mp3".into(),
            payload: vec![],
        };
        assert!(ch.stream_codec().unwrap_err().to_string().contains("mp3"));
    }

    #[test]
    fn bad_opus_headers_are_errors() {
        let g = hex(OPUS_48000_16_2);
        for n in 0..g.len() {
            assert!(parse_opus_header(&g[..n]).is_err());
        }
        let mut long = g.clone();
        long.push(0);
        assert!(parse_opus_header(&long)
            .unwrap_err()
            .to_string()
            .contains("13 bytes"));
        let mut m = g.clone();
        m[0..4].copy_from_slice(b"OPUS");
        assert!(parse_opus_header(&m)
            .unwrap_err()
            .to_string()
            .contains("SUPO"));
        let mut c = g.clone();
        c[10..12].copy_from_slice(&0u16.to_le_bytes());
        assert!(parse_opus_header(&c).is_err());
    }

    #[test]
    fn flac_and_ogg_pass_through() {
        for (name, want) in [("flac", StreamCodec::Flac), ("ogg", StreamCodec::Ogg)] {
            let ch = CodecHeader {
                codec: name.into(),
                payload: vec![1, 2, 3],
            };
            assert_eq!(ch.stream_codec().unwrap(), want);
        }
    }
}
