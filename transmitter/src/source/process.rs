//! `process:///usr/bin/librespot?name=spotify&params=...`: a program's standard output
//! as raw s16le PCM (`sampleformat`, default 48000:16:2), as snapserver runs one. The
//! program gets `params` split at white space as its arguments, its standard error
//! goes to the transmitter's log stream, it is started again 1 s after it exits, and
//! killed when the stream goes away. Only the command line (or the service's file) can
//! name a program: the control API refuses process streams.

use std::io::Read;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail};

use super::live::LiveFeed;
use super::uri::StreamUri;
use super::{AudioSource, PcmSource, SourceOptions};

/// Wait before restarting a program that exited.
pub const PROCESS_RETRY: Duration = Duration::from_secs(1);
/// Most arguments taken from `params`.
pub const MAX_PARAMS: usize = 64;

/// A running program's output; the program is killed when this is dropped.
struct ProcessOutput {
    child: Child,
    stdout: ChildStdout,
}

impl Read for ProcessOutput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl Drop for ProcessOutput {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens the process stream `uri` (see the module docs).
///
/// Errors: no program path, a program that does not exist or cannot be executed, a
/// bad `sampleformat`, too many parameters.
pub fn open_uri(
    uri: &mut StreamUri,
    _opts: &SourceOptions,
) -> anyhow::Result<Box<dyn AudioSource>> {
    if uri.path.is_empty() || uri.path == "/" {
        bail!(
            "stream URI '{}': give the program's path, process:///usr/bin/librespot",
            uri.raw
        );
    }
    let (rate, channels) = uri.take_sample_format()?;
    let params: Vec<String> = uri
        .take("params")
        .map(|p| p.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    if params.len() > MAX_PARAMS {
        bail!("stream URI '{}': more than {MAX_PARAMS} params", uri.raw);
    }
    uri.finish()?;
    let program = uri.path.clone();
    let meta = std::fs::metadata(&program).map_err(|e| anyhow!("program {program}: {e}"))?;
    {
        use std::os::unix::fs::PermissionsExt;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            bail!("program {program}: not an executable file");
        }
    }
    let description = format!("process {program} (s16le, {rate} Hz, {channels} ch)");
    let feed = LiveFeed::spawn(
        description,
        Box::new(move || {
            let mut child = Command::new(&program)
                .args(&params)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| anyhow!("starting {program}: {e}"))?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| anyhow!("{program}: no standard output"))?;
            let out = ProcessOutput { child, stdout };
            Ok(Box::new(PcmSource::new(out, &program, rate, channels)?) as Box<dyn AudioSource>)
        }),
        PROCESS_RETRY,
    )?;
    Ok(Box::new(feed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_programs_output_is_the_stream() {
        // A script writing a constant sample (0.25) as s16le stereo, then exiting (it
        // is restarted). python3 is installed by scripts/setup.sh.
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("gen.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\nexec python3 -c \"import sys,struct; sys.stdout.buffer.write(struct.pack('<h',8192)*int(sys.argv[1]))\" \"$1\"\n",
        )
        .unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut uri = StreamUri::parse(&format!(
            "process://{}?name=gen&params=96000",
            script.display()
        ))
        .unwrap();
        let mut src = open_uri(&mut uri, &SourceOptions::default()).unwrap();
        let mut out = vec![0.0f32; 2 * 960];
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "no audio from the program"
            );
            let n = src.read(&mut out).unwrap();
            if out[..n * 2].iter().any(|&s| (s - 0.25).abs() < 0.01) {
                break;
            }
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_missing_program_is_refused() {
        let mut uri = StreamUri::parse("process:///no/such/program?name=x").unwrap();
        let e = format!(
            "{:#}",
            open_uri(&mut uri, &SourceOptions::default()).err().unwrap()
        );
        assert!(e.contains("/no/such/program"), "{e}");
    }
}
