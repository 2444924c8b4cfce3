//! The `command` backend: plays by piping raw PCM into a player program's standard
//! input (16-bit little-endian, interleaved, at the sink's rate and channels), for
//! outputs reached through another program: `pacat --device=SINK` into a PulseAudio or
//! PipeWire sink (Bluetooth, AirPlay), `aplay -D bluealsa:DEV=...` into a Bluetooth
//! speaker through bluez-alsa. It also works in the static ARMv6 build, which cannot
//! load ALSA's external plugins.
//!
//! The device string is the command line, split on whitespace (no shell, no quoting):
//! `pacat --playback --raw --format=s16le --rate=48000 --channels=2 --device=x`.
//!
//! Timing: a writer thread renders 10 ms blocks and writes them to a pipe kept small
//! ([`PIPE_BYTES`]); a full pipe blocks the thread, so the player paces it. The DAC
//! time of a block is the time it reaches the player, "now" plus the audio still in
//! the pipe (`FIONREAD`), smoothed: successive blocks are one block apart and a slow
//! correction follows the player's clock. What the player and the device add after
//! that (their buffers, the radio, the speaker) is output latency the microphone
//! measures, like an HDMI TV's.
//!
//! A player that exits (a Bluetooth speaker that disconnects, a sound server that
//! restarts) makes [`Sink::failure`] say so, with the last lines it wrote on stderr;
//! the receiver then reopens the output with backoff.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::{AudioError, BackendConfig, RenderFn, Sink, StreamFormat};
use syncstream_shared::time::{samples_to_us, Clock};

/// Backend name used in errors.
const BACKEND: &str = "command";
/// Frames per rendered block: 10 ms at 48 kHz.
const BLOCK_MS: u32 = 10;
/// Pipe capacity asked for, bytes (85 ms of 48 kHz stereo 16-bit): what sits between
/// the receiver and the player.
pub const PIPE_BYTES: usize = 16 * 1024;
/// Gain of the DAC-time correction per block (a time constant of 2 s at 10 ms blocks).
const DAC_CORRECTION_GAIN: f64 = 0.005;
/// A DAC time later than predicted by more than this re-anchors instead of
/// correcting (the player ran dry and restarted), µs.
const DAC_REANCHOR_US: f64 = 30_000.0;
/// Lines of the player's stderr kept for error messages.
const STDERR_LINES: usize = 4;
/// Longest command line accepted, bytes.
const MAX_COMMAND_BYTES: usize = 4096;

/// A command line checked for use as a player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayerCommand {
    /// Program and arguments.
    pub argv: Vec<String>,
}

impl PlayerCommand {
    /// Splits `line` on whitespace. Errors: empty, too long, or a program not found
    /// on `PATH` (named, with what usually provides it).
    pub fn parse(line: &str) -> Result<Self, AudioError> {
        if line.len() > MAX_COMMAND_BYTES {
            return Err(AudioError::new(
                BACKEND,
                line.chars().take(64).collect::<String>(),
                format!("command line longer than {MAX_COMMAND_BYTES} bytes"),
            ));
        }
        let argv: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let Some(program) = argv.first() else {
            return Err(AudioError::new(
                BACKEND,
                line,
                "no command given (the device is the player's command line)",
            ));
        };
        if find_program(program).is_none() {
            return Err(AudioError::new(
                BACKEND,
                line,
                format!(
                    "player `{program}` not found on PATH{}",
                    provided_by(program)
                ),
            ));
        }
        Ok(Self { argv })
    }

    /// The command line as one string.
    pub fn line(&self) -> String {
        self.argv.join(" ")
    }
}

/// Where `program` is: itself when it has a `/`, else the first match on `PATH`.
pub fn find_program(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        let p = std::path::PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// A hint naming the Debian package of a player we generate command lines for.
fn provided_by(program: &str) -> &'static str {
    match program {
        "pacat" | "pactl" => " (Debian package pulseaudio-utils)",
        "aplay" => " (Debian package alsa-utils)",
        "pw-cat" => " (Debian package pipewire-bin)",
        _ => "",
    }
}

/// Plays into a player program's standard input.
pub struct CommandSink {
    cfg: BackendConfig,
    command: PlayerCommand,
    running: Option<Running>,
}

struct Running {
    child: Child,
    writer: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicBool>,
    why: Arc<Mutex<Option<String>>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

/// Opens the `command` sink: `cfg.device` is the player's command line.
pub fn open_sink(cfg: &BackendConfig) -> Result<Box<dyn Sink>, AudioError> {
    let line = cfg.device.as_deref().unwrap_or("");
    Ok(Box::new(CommandSink::new(cfg, PlayerCommand::parse(line)?)))
}

impl CommandSink {
    /// A sink that will run `command` when started.
    pub fn new(cfg: &BackendConfig, command: PlayerCommand) -> Self {
        Self {
            cfg: cfg.clone(),
            command,
            running: None,
        }
    }

    fn label(&self) -> String {
        self.command.line()
    }
}

impl Sink for CommandSink {
    fn start(&mut self, render: RenderFn) -> Result<(), AudioError> {
        self.stop()?;
        let label = self.label();
        let mut child = Command::new(&self.command.argv[0])
            .args(&self.command.argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| AudioError::new(BACKEND, &label, format!("cannot start: {e}")))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| AudioError::new(BACKEND, &label, "no stdin pipe"))?;
        set_pipe_size(&stdin, PIPE_BYTES);
        let stderr = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_LINES)));
        if let Some(err) = child.stderr.take() {
            let lines = stderr.clone();
            let _ = std::thread::Builder::new()
                .name("player-stderr".into())
                .spawn(move || {
                    for line in BufReader::new(err).lines().map_while(Result::ok) {
                        tracing::debug!("player: {line}");
                        if let Ok(mut l) = lines.lock() {
                            if l.len() == STDERR_LINES {
                                l.pop_front();
                            }
                            l.push_back(line.chars().take(300).collect());
                        }
                    }
                });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicBool::new(false));
        let why = Arc::new(Mutex::new(None));
        let writer = Writer {
            fmt: self.cfg.format,
            clock: self.cfg.clock.clone(),
            stdin,
            render,
            stop: stop.clone(),
            failed: failed.clone(),
            why: why.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("player-writer".into())
            .spawn(move || writer.run());
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(AudioError::new(BACKEND, label, e));
            }
        };
        tracing::info!(player = label, "output through a player program");
        self.running = Some(Running {
            child,
            writer: Some(handle),
            stop,
            failed,
            why,
            stderr,
        });
        Ok(())
    }

    fn stop(&mut self) -> Result<(), AudioError> {
        if let Some(mut r) = self.running.take() {
            r.stop.store(true, Ordering::Relaxed);
            // Killing the player unblocks a writer stuck on a full pipe (EPIPE).
            let _ = r.child.kill();
            let _ = r.child.wait();
            if let Some(h) = r.writer.take() {
                let _ = h.join();
            }
        }
        Ok(())
    }

    fn format(&self) -> StreamFormat {
        self.cfg.format
    }

    fn failure(&self) -> Option<String> {
        let r = self.running.as_ref()?;
        if !r.failed.load(Ordering::Relaxed) {
            return None;
        }
        let why = r
            .why
            .lock()
            .ok()
            .and_then(|w| w.clone())
            .unwrap_or_else(|| "the player stopped".into());
        let said: Vec<String> = r
            .stderr
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default();
        Some(if said.is_empty() {
            format!("{}: {why}", self.command.argv[0])
        } else {
            format!(
                "{}: {why}; it said: {}",
                self.command.argv[0],
                said.join(" / ")
            )
        })
    }
}

impl Drop for CommandSink {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The writer thread: renders blocks and writes them to the player.
struct Writer {
    fmt: StreamFormat,
    clock: Arc<dyn Clock>,
    stdin: ChildStdin,
    render: RenderFn,
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicBool>,
    why: Arc<Mutex<Option<String>>>,
}

impl Writer {
    fn run(mut self) {
        let frames = (self.fmt.sample_rate * BLOCK_MS / 1000) as usize;
        let channels = self.fmt.channels.max(1) as usize;
        let mut samples = vec![0.0f32; frames * channels];
        let mut bytes = vec![0u8; frames * channels * 2];
        let bytes_per_frame = (channels * 2) as f64;
        let block_us = samples_to_us(frames as i64, self.fmt.sample_rate) as f64;
        let mut dac_us: Option<f64> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let queued_frames = pipe_queued_bytes(&self.stdin) as f64 / bytes_per_frame;
            let measured =
                self.clock.now_us() as f64 + queued_frames * 1e6 / self.fmt.sample_rate as f64;
            let dac = match dac_us {
                Some(prev) => {
                    let predicted = prev + block_us;
                    let err = measured - predicted;
                    // A gap (the player ran dry) re-anchors; audio consumed faster
                    // than predicted only pulls slowly, so DAC times never go back.
                    if err > DAC_REANCHOR_US {
                        measured
                    } else {
                        predicted + err * DAC_CORRECTION_GAIN
                    }
                }
                None => measured,
            };
            dac_us = Some(dac);
            (self.render)(&mut samples, dac.round() as i64);
            for (s, b) in samples.iter().zip(bytes.chunks_exact_mut(2)) {
                let v = (s.clamp(-1.0, 1.0) * i16::MAX as f32).round() as i16;
                b.copy_from_slice(&v.to_le_bytes());
            }
            if let Err(e) = self.stdin.write_all(&bytes) {
                if !self.stop.load(Ordering::Relaxed) {
                    if let Ok(mut w) = self.why.lock() {
                        *w = Some(if e.kind() == std::io::ErrorKind::BrokenPipe {
                            "the player exited".to_string()
                        } else {
                            format!("cannot write to the player: {e}")
                        });
                    }
                    self.failed.store(true, Ordering::Relaxed);
                }
                return;
            }
        }
    }
}

/// Asks the kernel for a pipe of `bytes` (Linux `F_SETPIPE_SZ`; ignored elsewhere or
/// when refused: the default 64 KiB only adds latency the microphone measures).
fn set_pipe_size(pipe: &ChildStdin, bytes: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: fcntl on a file descriptor this process owns, with an integer argument.
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, bytes as libc::c_int);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (pipe, bytes);
}

/// Bytes written to the pipe and not yet read by the player (`FIONREAD`; 0 when the
/// kernel does not say).
fn pipe_queued_bytes(pipe: &ChildStdin) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which outlives the call.
    let rc = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc == 0 && n > 0 {
        n as usize
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstream_shared::time::MonotonicClock;

    fn cfg(device: &str) -> BackendConfig {
        BackendConfig {
            device: Some(device.into()),
            format: StreamFormat {
                sample_rate: 48_000,
                channels: 2,
            },
            clock: Arc::new(MonotonicClock),
        }
    }

    #[test]
    fn a_missing_player_is_named_with_its_package() {
        let e = open_sink(&cfg("pacat-that-is-not-there --raw"))
            .err()
            .expect("error");
        assert!(e.to_string().contains("pacat-that-is-not-there"), "{e}");
        let e = PlayerCommand::parse("").unwrap_err();
        assert!(e.to_string().contains("no command"), "{e}");
    }

    /// `head -c N` reads N bytes and exits: the sink hears every byte went through,
    /// then reports the player's exit.
    #[test]
    fn plays_into_a_program_and_reports_its_exit() {
        let bytes = 48_000 * 4 / 10; // 100 ms
        let mut sink = open_sink(&cfg(&format!("head -c {bytes}"))).expect("open");
        let (tx, rx) = std::sync::mpsc::channel::<i64>();
        sink.start(Box::new(move |buf: &mut [f32], dac| {
            buf.fill(0.25);
            let _ = tx.send(dac);
            crate::RenderInfo::default()
        }))
        .expect("start");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut dacs = Vec::new();
        let why = loop {
            if let Some(w) = sink.failure() {
                break w;
            }
            assert!(std::time::Instant::now() < deadline, "no failure reported");
            if let Ok(d) = rx.recv_timeout(std::time::Duration::from_millis(50)) {
                dacs.push(d);
            }
        };
        assert!(why.contains("head") && why.contains("exited"), "{why}");
        dacs.extend(rx.try_iter());
        assert!(dacs.len() >= 10, "rendered {} blocks", dacs.len());
        assert!(dacs.windows(2).all(|w| w[1] > w[0]), "DAC times increase");
        sink.stop().expect("stop");
        assert!(sink.failure().is_none(), "a stopped sink has no failure");
    }
}
