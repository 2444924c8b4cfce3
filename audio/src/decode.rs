//! Decoding audio files (Ogg Vorbis, FLAC, WAV, MP3, ... anything symphonia reads)
//! and resampling them to the stream rate with rubato.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{Fft, FixedSync, Resampler};
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

/// Decoded audio, planar: `channels[c][n]` is sample `n` of channel `c`.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedAudio {
    /// Sample rate, Hz.
    pub sample_rate: u32,
    /// One vector per channel, all of the same length.
    pub channels: Vec<Vec<f32>>,
}

impl DecodedAudio {
    /// Frames (samples per channel).
    pub fn frames(&self) -> usize {
        self.channels.first().map_or(0, |c| c.len())
    }

    /// Mean of the channels.
    pub fn mono(&self) -> Vec<f32> {
        let n = self.frames();
        let k = self.channels.len().max(1) as f32;
        (0..n)
            .map(|i| self.channels.iter().map(|c| c[i]).sum::<f32>() / k)
            .collect()
    }

    /// Interleaved stereo (mono is duplicated, more than two channels are folded
    /// to left = even channels, right = odd channels).
    pub fn stereo_interleaved(&self) -> Vec<f32> {
        let n = self.frames();
        let mut out = Vec::with_capacity(n * 2);
        match self.channels.len() {
            0 => {}
            1 => {
                for &s in &self.channels[0] {
                    out.push(s);
                    out.push(s);
                }
            }
            c => {
                let left: Vec<usize> = (0..c).step_by(2).collect();
                let right: Vec<usize> = (1..c).step_by(2).collect();
                for i in 0..n {
                    let l =
                        left.iter().map(|&k| self.channels[k][i]).sum::<f32>() / left.len() as f32;
                    let r = right.iter().map(|&k| self.channels[k][i]).sum::<f32>()
                        / right.len() as f32;
                    out.push(l);
                    out.push(r);
                }
            }
        }
        out
    }
}

/// Reads an audio file packet by packet as interleaved f32 at its own rate.
pub struct AudioFileReader {
    path: PathBuf,
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    /// Sample rate of the file, Hz.
    pub sample_rate: u32,
    /// Channels of the file.
    pub channels: usize,
}

impl AudioFileReader {
    /// Opens `path`. Errors (naming the file): missing or unreadable file, not an
    /// audio file, no audio track, or a codec symphonia does not support.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path)
            .with_context(|| format!("cannot open audio file {}", path.display()))?;
        Self::from_source(
            path,
            Box::new(file),
            path.extension().and_then(|e| e.to_str()),
        )
    }

    /// Reads an audio file held in memory; `name` stands for it in errors and
    /// `extension` (`"ogg"`, `"wav"`, ...) is a hint for the format probe. Never panics.
    ///
    /// Errors: as [`AudioFileReader::open`], naming `name`.
    pub fn from_bytes(name: &str, bytes: Vec<u8>, extension: Option<&str>) -> anyhow::Result<Self> {
        Self::from_source(
            Path::new(name),
            Box::new(std::io::Cursor::new(bytes)),
            extension,
        )
    }

    fn from_source(
        path: &Path,
        source: Box<dyn symphonia::core::io::MediaSource>,
        extension: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mss = MediaSourceStream::new(source, Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = extension {
            hint.with_extension(ext);
        }
        let format = symphonia::default::get_probe()
            .probe(
                &hint,
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
            .map_err(|e| anyhow!("{} is not a readable audio file: {e}", path.display()))?;
        let track = format
            .default_track(TrackType::Audio)
            .ok_or_else(|| anyhow!("{} has no audio track", path.display()))?;
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or_else(|| anyhow!("{} has no audio codec parameters", path.display()))?;
        let sample_rate = params
            .sample_rate
            .ok_or_else(|| anyhow!("{} does not state its sample rate", path.display()))?;
        let channels = params.channels.as_ref().map(|c| c.count()).unwrap_or(0);
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(params, &AudioDecoderOptions::default())
            .map_err(|e| anyhow!("{}: unsupported codec: {e}", path.display()))?;
        let track_id = track.id;
        if !(MIN_SAMPLE_RATE_HZ..=MAX_SAMPLE_RATE_HZ).contains(&sample_rate) {
            bail!(
                "{} states a sample rate of {sample_rate} Hz (expected \
                 {MIN_SAMPLE_RATE_HZ} to {MAX_SAMPLE_RATE_HZ} Hz)",
                path.display()
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            format,
            decoder,
            track_id,
            sample_rate,
            channels,
        })
    }

    /// Decodes the next packet into `out` (interleaved, cleared first). Returns
    /// `Ok(false)` at the end of the file. Corrupt packets are skipped; I/O errors
    /// are returned.
    pub fn next_block(&mut self, out: &mut Vec<f32>) -> anyhow::Result<bool> {
        loop {
            let packet = match self.format.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(false),
                Err(SymphoniaError::IoError(e))
                    if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    return Ok(false)
                }
                Err(e) => return Err(anyhow!("reading {}: {e}", self.path.display())),
            };
            if packet.track_id != self.track_id {
                continue;
            }
            match self.decoder.decode(&packet) {
                Ok(buf) => {
                    let ch = buf.spec().channels().count();
                    if ch == 0 {
                        continue;
                    }
                    if self.channels == 0 {
                        self.channels = ch;
                    }
                    if ch != self.channels {
                        bail!(
                            "{}: channel count changed from {} to {ch}",
                            self.path.display(),
                            self.channels
                        );
                    }
                    out.clear();
                    buf.copy_to_vec_interleaved(out);
                    return Ok(true);
                }
                Err(SymphoniaError::DecodeError(_)) => continue,
                Err(e) => return Err(anyhow!("decoding {}: {e}", self.path.display())),
            }
        }
    }
}

/// Resamples planar audio from `from_hz` to `to_hz` with rubato's FFT resampler
/// (synchronous, trims its delay so the output lines up with the input).
pub fn resample(channels: &[Vec<f32>], from_hz: u32, to_hz: u32) -> anyhow::Result<Vec<Vec<f32>>> {
    if from_hz == to_hz || channels.is_empty() {
        return Ok(channels.to_vec());
    }
    let frames = channels[0].len();
    if frames == 0 {
        return Ok(channels.iter().map(|_| Vec::new()).collect());
    }
    let mut rs = Fft::<f32>::new(
        from_hz as usize,
        to_hz as usize,
        1024,
        channels.len(),
        FixedSync::Both,
    )
    .map_err(|e| anyhow!("cannot resample {from_hz} Hz to {to_hz} Hz: {e}"))?;
    let input = SequentialSliceOfVecs::new(channels, channels.len(), frames)
        .map_err(|e| anyhow!("resampler input: {e}"))?;
    let out = rs
        .process_all(&input, frames, None)
        .map_err(|e| anyhow!("resampling {from_hz} Hz to {to_hz} Hz: {e}"))?;
    let nch = channels.len();
    let data = out.take_data();
    let n_out = data.len() / nch;
    Ok((0..nch)
        .map(|c| (0..n_out).map(|i| data[i * nch + c]).collect())
        .collect())
}

/// Largest sample magnitude a decoded file may hold (full scale is 1.0; a float file
/// can hold anything, and samples near `f32::MAX` overflow the resampler).
pub const MAX_SAMPLE_MAGNITUDE: f32 = 1.0e6;

/// Lowest sample rate a file may state, Hz.
pub const MIN_SAMPLE_RATE_HZ: u32 = 1_000;
/// Highest sample rate a file may state, Hz (the highest in use is 768 kHz). Found by
/// the fuzzer: 2 kB of Matroska stating 4 294 967 295 Hz made the resampler plan a
/// 286-million-point FFT and fill 4 GB.
pub const MAX_SAMPLE_RATE_HZ: u32 = 768_000;

/// Most samples (all channels) a whole-file decode holds: 15 minutes of 48 kHz
/// stereo (345 MB of f32); a longer file is streamed (the transmitter's `--source`),
/// and a few kilobytes of a malformed container cannot fill the memory.
pub const MAX_DECODED_SAMPLES: usize = 15 * 60 * 48_000 * 2;

/// Decodes a whole file and resamples it to `target_rate_hz`.
///
/// Errors (naming the file): unreadable or non-audio file, an empty file (no
/// samples), more than [`MAX_DECODED_SAMPLES`], or samples that are not finite or
/// beyond ±[`MAX_SAMPLE_MAGNITUDE`].
pub fn decode_file(path: &Path, target_rate_hz: u32) -> anyhow::Result<DecodedAudio> {
    decode_all(AudioFileReader::open(path)?, path, target_rate_hz)
}

/// Decodes a whole audio file held in memory and resamples it to `target_rate_hz`, as
/// [`decode_file`] does; `name` stands for the file in errors, `extension` is a hint
/// for the format probe. Never panics.
///
/// Errors: as [`decode_file`].
pub fn decode_bytes(
    name: &str,
    bytes: Vec<u8>,
    extension: Option<&str>,
    target_rate_hz: u32,
) -> anyhow::Result<DecodedAudio> {
    decode_all(
        AudioFileReader::from_bytes(name, bytes, extension)?,
        Path::new(name),
        target_rate_hz,
    )
}

fn decode_all(
    mut reader: AudioFileReader,
    path: &Path,
    target_rate_hz: u32,
) -> anyhow::Result<DecodedAudio> {
    let mut interleaved = Vec::new();
    let mut block = Vec::new();
    while reader.next_block(&mut block)? {
        if interleaved.len() + block.len() > MAX_DECODED_SAMPLES {
            bail!(
                "{} decodes to more than {MAX_DECODED_SAMPLES} samples (15 minutes of 48 kHz \
                 stereo): too long to load whole (stream it with the transmitter's --source)",
                path.display()
            );
        }
        interleaved.extend_from_slice(&block);
    }
    let ch = reader.channels.max(1);
    if interleaved.is_empty() {
        bail!("{} contains no audio samples", path.display());
    }
    if interleaved.iter().any(|s| !s.is_finite()) {
        bail!(
            "{} contains samples that are not finite numbers (NaN or infinity)",
            path.display()
        );
    }
    // A float file may hold anything: samples near f32::MAX overflow the resampler's
    // FFT (rubato panicked on the infinities; found by the fuzzer).
    if let Some(s) = interleaved.iter().find(|s| s.abs() > MAX_SAMPLE_MAGNITUDE) {
        bail!(
            "{} contains a sample of {s}, beyond ±{MAX_SAMPLE_MAGNITUDE} (full scale is ±1)",
            path.display()
        );
    }
    let frames = interleaved.len() / ch;
    let planar: Vec<Vec<f32>> = (0..ch)
        .map(|c| (0..frames).map(|i| interleaved[i * ch + c]).collect())
        .collect();
    let channels = resample(&planar, reader.sample_rate, target_rate_hz)
        .with_context(|| format!("resampling {}", path.display()))?;
    // Defence in depth: what the resampler gives must be finite too.
    if channels.iter().flatten().any(|s| !s.is_finite()) {
        bail!(
            "{}: resampled to {target_rate_hz} Hz, its samples are not finite numbers \
             (samples far beyond full scale)",
            path.display()
        );
    }
    Ok(DecodedAudio {
        sample_rate: target_rate_hz,
        channels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstream_testkit::write_wav_f32;

    #[test]
    fn decodes_and_resamples_a_wav() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.wav");
        let x: Vec<f32> = (0..8000).map(|n| (n as f32 * 0.05).sin() * 0.5).collect();
        write_wav_f32(&p, 8000, 1, &x).unwrap();
        let a = decode_file(&p, 48_000).unwrap();
        assert_eq!(a.sample_rate, 48_000);
        assert!((a.frames() as i64 - 48_000).abs() < 10, "{}", a.frames());
        // Sample 6·n of the output matches sample n of the input.
        for n in [1000usize, 3000, 5000] {
            assert!((a.channels[0][6 * n] - x[n]).abs() < 0.02);
        }
    }

    #[test]
    fn bad_files_name_the_file_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("not-audio.ogg");
        std::fs::write(&p, b"hello, this is text").unwrap();
        let e = format!("{:#}", decode_file(&p, 48_000).unwrap_err());
        assert!(e.contains("not-audio.ogg"), "{e}");
        let e = format!(
            "{:#}",
            decode_file(&dir.path().join("missing.wav"), 48_000).unwrap_err()
        );
        assert!(e.contains("missing.wav"), "{e}");
        // Found by the fuzzer (fuzz/corpus/decode/resampled-not-finite-*): finite float
        // samples near f32::MAX became infinities in the resampler, which panicked.
        let huge = dir.path().join("huge.wav");
        write_wav_f32(
            &huge,
            44_100,
            1,
            &[3.0e38, -3.0e38, 3.0e38, 1.0e38].repeat(64),
        )
        .unwrap();
        let e = format!("{:#}", decode_file(&huge, 48_000).unwrap_err());
        assert!(e.contains("huge.wav") && e.contains("beyond"), "{e}");
        let empty = dir.path().join("empty.wav");
        write_wav_f32(&empty, 48_000, 1, &[]).unwrap();
        let e = format!("{:#}", decode_file(&empty, 48_000).unwrap_err());
        assert!(e.contains("no audio"), "{e}");
    }

    /// Found by the fuzzer (fuzz/corpus/decode/absurd-rate-mkv-6eb6e695; its first
    /// byte picks the "mkv" hint): 2 kB of Matroska stating 4 294 967 295 Hz made the
    /// resampler fill 4 GB.
    #[test]
    fn an_absurd_sample_rate_is_an_error_not_all_memory() {
        let input = include_bytes!("../../fuzz/corpus/decode/absurd-rate-mkv-6eb6e695");
        let e = decode_bytes("absurd.mkv", input[1..].to_vec(), Some("mkv"), 48_000).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("absurd.mkv") && e.contains("4294967295 Hz"),
            "{e}"
        );
    }
}
