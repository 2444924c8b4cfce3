//! Raw interleaved s16le PCM from any reader (stdin for `--source -`).

use std::io::{ErrorKind, Read};

use anyhow::anyhow;

use super::resample::{fold_to_stereo, StreamResampler};
use super::AudioSource;

/// Bytes read from the reader at a time.
const READ_BYTES: usize = 16 * 1024;
/// Most channels accepted.
const MAX_CHANNELS: u16 = 32;

/// Raw signed 16-bit little-endian interleaved PCM at a given rate and channel
/// count, converted to stereo at 48 kHz. Ends at the reader's end of file (a
/// trailing partial frame is dropped).
pub struct PcmSource<R: Read + Send> {
    reader: Option<R>,
    name: String,
    rate_hz: u32,
    channels: u16,
    bytes: Vec<u8>,
    /// Bytes at the start of `bytes` left over from the last read (a partial frame).
    carry: usize,
    samples: Vec<f32>,
    stereo: Vec<f32>,
    rs: StreamResampler,
}

impl<R: Read + Send> PcmSource<R> {
    /// Reads s16le PCM with `channels` channels at `rate_hz` (Hz) from `reader`,
    /// called `name` in messages (e.g. `stdin`).
    pub fn new(reader: R, name: &str, rate_hz: u32, channels: u16) -> anyhow::Result<Self> {
        if channels == 0 || channels > MAX_CHANNELS {
            anyhow::bail!(
                "{name}: {channels} channels of raw PCM is not supported (1 to {MAX_CHANNELS})"
            );
        }
        let rs = StreamResampler::new(rate_hz).map_err(|e| anyhow!("{name}: {e}"))?;
        Ok(Self {
            reader: Some(reader),
            name: name.to_string(),
            rate_hz,
            channels,
            bytes: vec![0; READ_BYTES],
            carry: 0,
            samples: Vec::with_capacity(READ_BYTES / 2),
            stereo: Vec::with_capacity(READ_BYTES * 2),
            rs,
        })
    }

    /// Reads once from the reader into the resampler. Returns false at the end.
    fn fill(&mut self) -> anyhow::Result<bool> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(false);
        };
        let n = loop {
            match reader.read(&mut self.bytes[self.carry..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(anyhow!("reading raw PCM from {}: {e}", self.name)),
            }
        };
        if n == 0 {
            self.reader = None;
            self.rs.finish()?;
            return Ok(false);
        }
        let total = self.carry + n;
        let frame_bytes = 2 * self.channels as usize;
        let whole = total / frame_bytes * frame_bytes;
        self.samples.clear();
        self.samples.extend(
            self.bytes[..whole]
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0),
        );
        self.bytes.copy_within(whole..total, 0);
        self.carry = total - whole;
        self.stereo.clear();
        fold_to_stereo(&self.samples, self.channels as usize, &mut self.stereo);
        self.rs.push(&self.stereo)?;
        Ok(true)
    }
}

impl<R: Read + Send> AudioSource for PcmSource<R> {
    fn read(&mut self, out: &mut [f32]) -> anyhow::Result<usize> {
        if out.len() < 2 {
            return Ok(0);
        }
        while self.rs.available() < 2 {
            if !self.fill()? {
                break;
            }
        }
        Ok(self.rs.pop(out) / 2)
    }

    fn describe(&self) -> String {
        format!(
            "raw s16le PCM from {} ({} Hz, {} ch)",
            self.name, self.rate_hz, self.channels
        )
    }

    fn is_live(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn s16le(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    fn read_all(src: &mut dyn AudioSource) -> Vec<f32> {
        let mut out = Vec::new();
        let mut buf = vec![0.0f32; 1001];
        loop {
            let n = src.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..2 * n]);
        }
    }

    /// Hands out at most 3 bytes per read, to split samples and frames.
    struct Trickle(Cursor<Vec<u8>>);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(3);
            self.0.read(&mut buf[..n])
        }
    }

    #[test]
    fn stereo_48k_passes_through_exactly() {
        let x: Vec<i16> = (0..4000).map(|i| (i * 7 % 2000 - 1000) as i16).collect();
        let mut src = PcmSource::new(Cursor::new(s16le(&x)), "test", 48_000, 2).unwrap();
        let y = read_all(&mut src);
        assert_eq!(y.len(), x.len());
        for (a, b) in x.iter().zip(&y) {
            assert_eq!(*a as f32 / 32768.0, *b);
        }
        assert!(src.describe().contains("48000 Hz, 2 ch"));
    }

    #[test]
    fn split_reads_and_a_partial_last_frame() {
        let mut x: Vec<i16> = (0..1001).map(|i| i as i16).collect();
        x.push(5); // half a frame at the end: dropped
        let mut bytes = s16le(&x);
        bytes.push(0x7f); // and a stray byte
        let mut src = PcmSource::new(Trickle(Cursor::new(bytes)), "trickle", 48_000, 1).unwrap();
        let y = read_all(&mut src);
        assert_eq!(y.len(), 1002 * 2);
        assert_eq!(y[2 * 1000], 1000.0 / 32768.0);
        assert_eq!(y[2 * 1000 + 1], 1000.0 / 32768.0);
    }

    #[test]
    fn mono_44k1_is_resampled_and_duplicated() {
        let frames = 44_100;
        let x: Vec<i16> = (0..frames)
            .map(|n| {
                let t = n as f32 / 44_100.0;
                ((2.0 * std::f32::consts::PI * 500.0 * t).sin() * 16000.0) as i16
            })
            .collect();
        let mut src = PcmSource::new(Cursor::new(s16le(&x)), "test", 44_100, 1).unwrap();
        let y = read_all(&mut src);
        assert_eq!(y.len() / 2, 48_000);
        for k in [1000usize, 24_000, 47_000] {
            let want = (2.0 * std::f32::consts::PI * 500.0 * k as f32 / 48_000.0).sin() * 16000.0
                / 32768.0;
            assert!((y[2 * k] - want).abs() < 0.01, "{k}");
            assert_eq!(y[2 * k], y[2 * k + 1]);
        }
    }

    #[test]
    fn read_errors_name_the_input() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("pipe broke"))
            }
        }
        let mut src = PcmSource::new(Broken, "stdin", 48_000, 2).unwrap();
        let e = format!("{:#}", src.read(&mut [0.0; 8]).unwrap_err());
        assert!(e.contains("stdin") && e.contains("pipe broke"), "{e}");
    }
}
