//! Audio sources of the transmitter: an audio file, raw PCM on stdin, an ALSA
//! capture device, or a test tone. Every source yields interleaved stereo f32 at
//! the stream rate ([`STREAM_SAMPLE_RATE`], [`STREAM_CHANNELS`]), resampling and
//! folding channels as needed.
//!
//! Source specs for [`open_source`] (`--source`):
//!
//! | spec | source |
//! | --- | --- |
//! | `PATH` or `file:PATH` | an audio file (Ogg Vorbis, FLAC, WAV, MP3, ...), decoded as it is read |
//! | `-` | raw s16le PCM on stdin ([`SourceOptions::stdin_rate_hz`], [`SourceOptions::stdin_channels`]) |
//! | `alsa` or `alsa:DEVICE` | an ALSA capture device through cpal |
//! | `tone` or `tone:FREQ_HZ` | a sine at −12 dBFS (1 kHz by default) |
//! | a stream URI (`pipe://...`, see below) | that source |
//!
//! Named streams (`--stream`) are Snapcast-style URIs ([`uri`]); each source type is a
//! file of its own behind [`SOURCE_TYPES`] (type name → opener), and [`open_uri`] picks
//! one. A new type is one file and one line in that table.

use syncstream_shared::time::{STREAM_CHANNELS, STREAM_SAMPLE_RATE};

mod alsa;
mod file;
pub mod live;
mod pcm;
mod pipe;
mod process;
mod resample;
pub use resample::{MAX_SOURCE_RATE_HZ, MIN_SOURCE_RATE_HZ};
mod tone;
pub mod uri;

pub use uri::StreamUri;

pub use alsa::AlsaSource;
pub use file::FileSource;
pub use pcm::PcmSource;
pub use resample::{fold_to_stereo, StreamResampler};
pub use tone::{ToneSource, TONE_DEFAULT_HZ, TONE_LEVEL_DBFS};

/// A source of audio for the stream.
pub trait AudioSource: Send {
    /// Fills the start of `out` with interleaved stereo f32 samples at 48 kHz and
    /// returns how many **frames** (sample pairs) it wrote, like the pacer's
    /// `PullAudio`: more than 0 while the source has audio; 0 means the end of a
    /// finite source. Live sources block until audio arrives. An `out` shorter
    /// than one frame gets 0.
    fn read(&mut self, out: &mut [f32]) -> anyhow::Result<usize>;

    /// One line describing the source for logs, e.g. `file music.flac (44100 Hz, 2 ch)`.
    fn describe(&self) -> String;

    /// Whether the source produces audio in real time (stdin, ALSA). Sources that
    /// are not live (files, the tone) return audio as fast as they are read: the
    /// caller paces them to the clock.
    fn is_live(&self) -> bool;
}

/// Options for [`open_source`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOptions {
    /// Start a file again at its end instead of ending.
    pub loop_file: bool,
    /// Sample rate of raw PCM on stdin, Hz.
    pub stdin_rate_hz: u32,
    /// Channels of raw PCM on stdin (interleaved).
    pub stdin_channels: u16,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            loop_file: false,
            stdin_rate_hz: STREAM_SAMPLE_RATE,
            stdin_channels: STREAM_CHANNELS,
        }
    }
}

/// Opens a source from a parsed stream URI (its parameters are taken as it goes).
pub type UriOpener = fn(&mut StreamUri, &SourceOptions) -> anyhow::Result<Box<dyn AudioSource>>;

/// Source types of stream URIs, by scheme.
pub const SOURCE_TYPES: &[(&str, UriOpener)] = &[
    ("pipe", pipe::open_uri),
    ("file", file::open_uri),
    ("alsa", alsa::open_uri),
    ("process", process::open_uri),
    ("tone", tone::open_uri),
];

/// Names of the source types, for messages.
pub fn source_type_names() -> Vec<&'static str> {
    SOURCE_TYPES.iter().map(|(n, _)| *n).collect()
}

/// Opens the stream URI `raw` (see [`uri`]); returns the parsed URI (its `name`) and
/// the source.
///
/// Errors: a malformed URI, an unknown source type or parameter, or the source's own
/// errors (a missing file or program, an unknown ALSA device); each names the URI or
/// the thing and the reason.
pub fn open_uri(
    raw: &str,
    opts: &SourceOptions,
) -> anyhow::Result<(StreamUri, Box<dyn AudioSource>)> {
    let mut uri = StreamUri::parse(raw)?;
    let Some((_, open)) = SOURCE_TYPES.iter().find(|(n, _)| *n == uri.kind) else {
        anyhow::bail!(
            "stream URI '{raw}': unknown source type '{}' (expected one of {:?})",
            uri.kind,
            source_type_names()
        );
    };
    let src = open(&mut uri, opts)?;
    Ok((uri, src))
}

/// Opens the source described by `spec` (see the module docs). Errors name the
/// file or device and the reason: a missing or unreadable file, a file that is
/// not audio or uses an unsupported codec, an unknown ALSA device, a malformed
/// tone frequency or stdin format.
pub fn open_source(spec: &str, opts: &SourceOptions) -> anyhow::Result<Box<dyn AudioSource>> {
    let spec = spec.trim();
    if spec.is_empty() {
        anyhow::bail!("empty source: give a file, `-` (stdin), `alsa[:DEVICE]` or `tone[:HZ]`");
    }
    if spec.contains("://") {
        return Ok(open_uri(spec, opts)?.1);
    }
    if spec == "-" {
        return Ok(Box::new(PcmSource::new(
            std::io::stdin(),
            "stdin",
            opts.stdin_rate_hz,
            opts.stdin_channels,
        )?));
    }
    if spec == "tone" {
        return Ok(Box::new(ToneSource::new(TONE_DEFAULT_HZ)?));
    }
    if let Some(f) = spec.strip_prefix("tone:") {
        let hz: f64 = f
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("tone source `{spec}`: `{f}` is not a frequency in Hz"))?;
        return Ok(Box::new(ToneSource::new(hz)?));
    }
    if spec == "alsa" {
        return Ok(Box::new(AlsaSource::open(None)?));
    }
    if let Some(dev) = spec.strip_prefix("alsa:") {
        return Ok(Box::new(AlsaSource::open(Some(dev))?));
    }
    let path = spec.strip_prefix("file:").unwrap_or(spec);
    Ok(Box::new(FileSource::open(
        std::path::Path::new(path),
        opts.loop_file,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(spec: &str) -> String {
        match open_source(spec, &SourceOptions::default()) {
            Ok(s) => panic!("{spec} opened as {}", s.describe()),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn specs_pick_the_source() {
        let o = SourceOptions::default();
        assert!(open_source("tone", &o)
            .unwrap()
            .describe()
            .contains("1000 Hz"));
        assert!(open_source("tone:440", &o)
            .unwrap()
            .describe()
            .contains("440 Hz"));
        assert!(open_source("-", &o).unwrap().describe().contains("stdin"));
    }

    #[test]
    fn bad_specs_say_why() {
        let e = err("tone:abc");
        assert!(e.contains("abc") && e.contains("frequency"), "{e}");
        let e = err("tone:30000");
        assert!(e.contains("30000"), "{e}");
        let e = err("/no/such/file.flac");
        assert!(e.contains("/no/such/file.flac"), "{e}");
        let e = err("file:/no/such/other.ogg");
        assert!(e.contains("/no/such/other.ogg"), "{e}");
        let e = err("");
        assert!(e.contains("empty source"), "{e}");
        let e = err("alsa:no-such-capture-device");
        assert!(e.contains("no-such-capture-device"), "{e}");
    }

    #[test]
    fn uris_pick_their_source_type() {
        let o = SourceOptions::default();
        let (u, s) = open_uri("tone:///?name=beep&freq=440", &o).unwrap();
        assert_eq!(u.name.as_deref(), Some("beep"));
        assert!(s.describe().contains("440 Hz"));
        let e = format!("{:#}", open_uri("ftp:///x?name=a", &o).err().unwrap());
        assert!(
            e.contains("unknown source type 'ftp'") && e.contains("pipe"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            open_uri("tone:///?name=a&freq=abc", &o).err().unwrap()
        );
        assert!(e.contains("freq=abc"), "{e}");
        let e = format!(
            "{:#}",
            open_uri("file:///no/such.flac?name=a", &o).err().unwrap()
        );
        assert!(e.contains("/no/such.flac"), "{e}");
        assert!(open_source("tone:///?freq=500", &o)
            .unwrap()
            .describe()
            .contains("500 Hz"));
    }

    #[test]
    fn a_text_file_is_not_audio() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notes.ogg");
        std::fs::write(&p, "this is not audio").unwrap();
        let e = err(p.to_str().unwrap());
        assert!(
            e.contains("notes.ogg") && e.contains("not a readable audio file"),
            "{e}"
        );
    }

    #[test]
    fn bad_stdin_formats_are_rejected() {
        let o = SourceOptions {
            stdin_channels: 0,
            ..Default::default()
        };
        let e = format!("{:#}", open_source("-", &o).err().unwrap());
        assert!(e.contains("channels"), "{e}");
        let o = SourceOptions {
            stdin_rate_hz: 0,
            ..Default::default()
        };
        let e = format!("{:#}", open_source("-", &o).err().unwrap());
        assert!(e.contains("0 Hz"), "{e}");
    }
}
