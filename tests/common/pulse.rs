//! A PulseAudio server private to a test (`--load` of a null sink `ss_test` whose
//! monitor is the default source), for the tests of the ALSA, Bluetooth, AirPlay and
//! sound-server outputs.

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A PulseAudio server private to one test; killed (and its files removed) on drop.
pub struct PulseServer {
    child: Child,
    dir: tempfile::TempDir,
    /// `unix:/path/native`: the value for `PULSE_SERVER`.
    pub server: String,
}

impl PulseServer {
    fn log_path(dir: &Path) -> PathBuf {
        dir.join("pulseaudio.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(Self::log_path(self.dir.path())).unwrap_or_default()
    }

    /// Runs `pactl` against this server.
    pub fn pactl(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new("pactl")
            .args(args)
            .env("PULSE_SERVER", &self.server)
            .env("HOME", self.dir.path().join("home"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .stdin(Stdio::null())
            .output()
    }

    /// Starts the server and waits (bounded) until `pactl info` answers.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ss-pulse-")
            .tempdir()
            .expect("temp dir");
        for sub in ["home", "run", "state"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("create dir");
        }
        let socket = dir.path().join("native");
        let server = format!("unix:{}", socket.display());
        let log = File::create(Self::log_path(dir.path())).expect("log file");
        let child = Command::new("pulseaudio")
            .args([
                "--daemonize=no",
                "--system=false",
                "-n", // no default.pa: only the modules below
                "--exit-idle-time=-1",
                "--disallow-exit",
                "--use-pid-file=no",
                "--realtime=no",
                "--high-priority=no",
                "--disable-shm=yes",
                "--log-target=stderr",
                "--log-level=info",
                "--load=module-null-sink sink_name=ss_test rate=48000 channels=2",
            ])
            .arg(format!(
                "--load=module-native-protocol-unix socket={} auth-anonymous=1",
                socket.display()
            ))
            .env("HOME", dir.path().join("home"))
            .env("XDG_RUNTIME_DIR", dir.path().join("run"))
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .env("XDG_CONFIG_HOME", dir.path().join("home"))
            .env_remove("PULSE_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start pulseaudio");
        let mut s = Self { child, dir, server };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!(
                    "pulseaudio exited during startup ({status}); its log:\n{}",
                    s.log()
                );
            }
            if let Ok(out) = s.pactl(&["info"]) {
                if out.status.success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "pulseaudio did not answer `pactl info` within 20 s; its log:\n{}",
                s.log()
            );
            // Poll interval of the bounded readiness loop (not a synchronisation sleep).
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = s
            .pactl(&["set-default-source", "ss_test.monitor"])
            .expect("pactl");
        assert!(
            out.status.success(),
            "pactl set-default-source: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        s
    }
}

impl Drop for PulseServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `pulseaudio` can run here.
pub fn have_pulseaudio() -> bool {
    Command::new("pulseaudio")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
