//! An audio file, decoded packet by packet (memory stays bounded for long files).

use std::path::{Path, PathBuf};

use anyhow::Context;
use syncstream_audio::decode::AudioFileReader;

use super::resample::{fold_to_stereo, StreamResampler};
use super::AudioSource;

/// An audio file (anything symphonia reads) as stereo at 48 kHz, optionally looped.
pub struct FileSource {
    path: PathBuf,
    reader: Option<AudioFileReader>,
    file_rate_hz: u32,
    file_channels: usize,
    loop_file: bool,
    /// Frames decoded in the current pass (to refuse looping a file without audio).
    pass_frames: u64,
    block: Vec<f32>,
    stereo: Vec<f32>,
    rs: StreamResampler,
}

impl FileSource {
    /// Opens `path`. Errors name the file and the reason (missing, not audio,
    /// unsupported codec). With `loop_file`, reading starts over at the end of
    /// the file (seamlessly: the resampler is not flushed in between).
    pub fn open(path: &Path, loop_file: bool) -> anyhow::Result<Self> {
        let reader = AudioFileReader::open(path)?;
        let rs = StreamResampler::new(reader.sample_rate)
            .with_context(|| format!("resampling {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file_rate_hz: reader.sample_rate,
            file_channels: reader.channels,
            reader: Some(reader),
            loop_file,
            pass_frames: 0,
            block: Vec::new(),
            stereo: Vec::new(),
            rs,
        })
    }

    /// Decodes one packet into the resampler. Returns false at the (final) end.
    fn fill(&mut self) -> anyhow::Result<bool> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(false);
        };
        if reader.next_block(&mut self.block)? {
            let ch = reader.channels.max(1);
            self.file_channels = ch;
            self.pass_frames += (self.block.len() / ch) as u64;
            self.stereo.clear();
            fold_to_stereo(&self.block, ch, &mut self.stereo);
            self.rs.push(&self.stereo)?;
            return Ok(true);
        }
        if self.pass_frames == 0 {
            self.reader = None;
            anyhow::bail!("{} contains no audio samples", self.path.display());
        }
        if self.loop_file {
            tracing::debug!(file = %self.path.display(), "looping");
            let reader = AudioFileReader::open(&self.path)?;
            if reader.sample_rate != self.file_rate_hz {
                anyhow::bail!(
                    "{} changed its sample rate while looping ({} Hz, was {} Hz)",
                    self.path.display(),
                    reader.sample_rate,
                    self.file_rate_hz
                );
            }
            self.reader = Some(reader);
            self.pass_frames = 0;
            return Ok(true);
        }
        self.reader = None;
        self.rs.finish()?;
        Ok(false)
    }
}

impl AudioSource for FileSource {
    fn read(&mut self, out: &mut [f32]) -> anyhow::Result<usize> {
        if out.len() < 2 {
            return Ok(0);
        }
        while self.rs.available() < out.len() / 2 * 2 {
            if !self.fill()? {
                break;
            }
        }
        Ok(self.rs.pop(out) / 2)
    }

    fn describe(&self) -> String {
        format!(
            "file {} ({} Hz, {} ch{}{})",
            self.path.display(),
            self.file_rate_hz,
            self.file_channels,
            if self.file_rate_hz != syncstream_shared::time::STREAM_SAMPLE_RATE {
                ", resampled to 48000 Hz"
            } else {
                ""
            },
            if self.loop_file { ", looping" } else { "" }
        )
    }

    fn is_live(&self) -> bool {
        false
    }
}

/// Opens the file stream `file:///path?name=..[&loop=true|false]` (`loop` defaults to
/// [`SourceOptions::loop_file`]).
///
/// Errors: as [`FileSource::open`], or a bad `loop`.
pub fn open_uri(
    uri: &mut super::uri::StreamUri,
    opts: &super::SourceOptions,
) -> anyhow::Result<Box<dyn AudioSource>> {
    let loop_file = uri.take_bool("loop", opts.loop_file)?;
    uri.finish()?;
    if uri.path.is_empty() || uri.path == "/" {
        anyhow::bail!(
            "stream URI '{}': give the file's path, file:///srv/music/a.flac",
            uri.raw
        );
    }
    Ok(Box::new(FileSource::open(Path::new(&uri.path), loop_file)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstream_audio::decode::decode_file;
    use syncstream_testkit::write_wav_f32;

    fn clips_dir() -> Option<PathBuf> {
        let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/audio");
        if d.is_dir() {
            Some(d)
        } else {
            println!("SKIPPED: {} is absent", d.display());
            None
        }
    }

    fn read_all(src: &mut dyn AudioSource, block: usize) -> Vec<f32> {
        let mut out = Vec::new();
        let mut buf = vec![0.0f32; block];
        loop {
            let n = src.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..2 * n]);
        }
    }

    #[test]
    fn shared_clips_stream_at_48k_like_a_full_decode() {
        let Some(dir) = clips_dir() else { return };
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !["ogg", "flac", "wav", "mp3"].contains(&ext) {
                continue;
            }
            seen += 1;
            let full = decode_file(&p, 48_000).unwrap();
            let reference = full.stereo_interleaved();
            let mut src = FileSource::open(&p, false).unwrap();
            assert!(src
                .describe()
                .contains(p.file_name().unwrap().to_str().unwrap()));
            let y = read_all(&mut src, 4097);
            // Same length as decoding the whole file (± a frame of rounding).
            let diff = (y.len() as i64 - reference.len() as i64).abs();
            assert!(
                diff <= 4,
                "{}: {} vs {} samples",
                p.display(),
                y.len(),
                reference.len()
            );
            // Same audio as the one-shot decode. (Its `resample` places 44.1 kHz
            // material about half a sample early, while the streaming resampler is
            // aligned to within 0.05 samples (see resample.rs), so they differ
            // by roughly −25 dB on music; garbage or a whole-sample slip does not pass.)
            let n = y.len().min(reference.len());
            let (a, b) = (&y[n / 4..3 * n / 4], &reference[n / 4..3 * n / 4]);
            let err: f64 = a.iter().zip(b).map(|(x, r)| ((x - r) as f64).powi(2)).sum();
            let pow: f64 = b.iter().map(|r| (*r as f64).powi(2)).sum();
            assert!(
                err <= pow * 1e-2,
                "{}: error {err} vs power {pow}",
                p.display()
            );
            println!(
                "{}: {} frames at 48 kHz, error {:.1} dB",
                p.display(),
                y.len() / 2,
                10.0 * (err / pow).log10()
            );
            // The block size of the reads does not change the audio.
            if seen == 1 {
                let mut again = FileSource::open(&p, false).unwrap();
                assert_eq!(read_all(&mut again, 334), y);
            }
        }
        assert!(seen > 0, "no audio clips in {}", dir.display());
    }

    #[test]
    fn mono_files_duplicate_and_loop_seamlessly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("click.wav");
        let x: Vec<f32> = (0..4800).map(|n| (n as f32 / 4800.0) - 0.5).collect();
        write_wav_f32(&p, 48_000, 1, &x).unwrap();
        let mut once = FileSource::open(&p, false).unwrap();
        let y = read_all(&mut once, 1000);
        assert_eq!(y.len(), 9600);
        assert!(y.chunks(2).all(|f| f[0] == f[1]));
        let mut looped = FileSource::open(&p, true).unwrap();
        assert!(looped.describe().contains("looping"));
        let mut buf = vec![0.0f32; 3 * 9600 + 10];
        let mut got = 0;
        while got < buf.len() {
            let n = looped.read(&mut buf[got..]).unwrap();
            assert!(n > 0, "a looping file never ends");
            got += 2 * n;
        }
        for k in 0..3 {
            assert_eq!(&buf[k * 9600..(k + 1) * 9600], &y[..], "pass {k}");
        }
    }

    #[test]
    fn more_than_two_channels_fold_and_empty_files_fail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("quad.wav");
        let x: Vec<f32> = (0..100).flat_map(|_| [0.1f32, 0.2, 0.3, 0.4]).collect();
        write_wav_f32(&p, 48_000, 4, &x).unwrap();
        let mut src = FileSource::open(&p, false).unwrap();
        let y = read_all(&mut src, 64);
        assert_eq!(y.len(), 200);
        assert!((y[0] - 0.2).abs() < 1e-6 && (y[1] - 0.3).abs() < 1e-6);

        let empty = dir.path().join("empty.wav");
        write_wav_f32(&empty, 44_100, 2, &[]).unwrap();
        for looped in [false, true] {
            let mut src = FileSource::open(&empty, looped).unwrap();
            let e = format!("{:#}", src.read(&mut [0.0; 64]).unwrap_err());
            assert!(e.contains("empty.wav") && e.contains("no audio"), "{e}");
        }
    }
}
