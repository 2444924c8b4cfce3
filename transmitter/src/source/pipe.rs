//! `pipe:///path?name=..`: raw s16le PCM from a named pipe, as snapserver reads one
//! (librespot, shairport-sync and Music Assistant write into such pipes). The pipe is
//! created when missing (`mode=create`, the default; `mode=read` only opens it),
//! reopened whenever its writer closes it, and the stream plays silence while nobody
//! writes ([`super::live::LiveFeed`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail};

use super::live::LiveFeed;
use super::uri::StreamUri;
use super::{AudioSource, PcmSource, SourceOptions};

/// Wait before reopening a pipe that failed to open or ended.
pub const PIPE_RETRY: Duration = Duration::from_millis(100);

/// Opens the pipe stream `uri` (see the module docs).
///
/// Errors: no path, a bad `sampleformat` or `mode`, a path that exists and is not a
/// pipe (with `mode=create`), a pipe that cannot be created.
pub fn open_uri(
    uri: &mut StreamUri,
    _opts: &SourceOptions,
) -> anyhow::Result<Box<dyn AudioSource>> {
    if uri.path.is_empty() || uri.path == "/" {
        bail!(
            "stream URI '{}': give the pipe's path, pipe:///tmp/snapfifo",
            uri.raw
        );
    }
    let (rate, channels) = uri.take_sample_format()?;
    let create = match uri.take("mode").as_deref() {
        None | Some("create") => true,
        Some("read") => false,
        Some(m) => bail!("stream URI '{}': mode={m} is not create or read", uri.raw),
    };
    uri.finish()?;
    let path = PathBuf::from(&uri.path);
    if create {
        make_fifo(&path).map_err(|e| anyhow!("pipe {}: {e}", path.display()))?;
    }
    let name = path.display().to_string();
    let description = format!("pipe {name} (s16le, {rate} Hz, {channels} ch)");
    let feed = LiveFeed::spawn(
        description,
        Box::new(move || {
            // Blocks until a writer opens the pipe.
            let f = std::fs::File::open(&path).map_err(|e| anyhow!("pipe {name}: {e}"))?;
            Ok(Box::new(PcmSource::new(f, &name, rate, channels)?) as Box<dyn AudioSource>)
        }),
        PIPE_RETRY,
    )?;
    Ok(Box::new(feed))
}

/// Creates a named pipe at `path` unless one is there.
fn make_fifo(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_fifo() => return Ok(()),
        Ok(_) => bail!("exists and is not a named pipe"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| anyhow!("a path with a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated path; mkfifo only reads it.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o660) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_pipe_is_created_read_and_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo");
        let mut uri = StreamUri::parse(&format!(
            "pipe://{}?name=radio&sampleformat=48000:16:2",
            p.display()
        ))
        .unwrap();
        let mut src = open_uri(&mut uri, &SourceOptions::default()).unwrap();
        assert!(src.is_live() && src.describe().contains("fifo"));
        let mut out = vec![0.0f32; 2 * 960];
        // Nobody writes yet: silence, at once.
        assert_eq!(src.read(&mut out).unwrap(), 960);
        assert!(out.iter().all(|&s| s == 0.0));
        for round in 0..2 {
            // A writer comes (and goes: the pipe is reopened for the second one).
            let mut w = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
            let block: Vec<u8> = (0..4800 * 2).flat_map(|_| 8192i16.to_le_bytes()).collect();
            w.write_all(&block).unwrap();
            drop(w);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                assert!(
                    std::time::Instant::now() < deadline,
                    "round {round}: no audio"
                );
                let n = src.read(&mut out).unwrap();
                if out[..n * 2].iter().any(|&s| (s - 0.25).abs() < 0.01) {
                    break;
                }
                std::thread::yield_now();
            }
        }
    }

    #[test]
    fn a_file_that_is_not_a_pipe_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plain");
        std::fs::write(&p, b"x").unwrap();
        let mut uri = StreamUri::parse(&format!("pipe://{}?name=r", p.display())).unwrap();
        let e = format!(
            "{:#}",
            open_uri(&mut uri, &SourceOptions::default()).err().unwrap()
        );
        assert!(e.contains("not a named pipe"), "{e}");
    }
}
