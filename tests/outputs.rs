//! The outputs a profile chooses, through a real PulseAudio server that the test
//! starts (the same server Raspberry Pi OS runs, or PipeWire through pipewire-pulse):
//!
//! - `syncstream receiver --list-devices` lists the sinks with the output type that
//!   plays into each;
//! - `bluetooth` and `airplay` find their sink by address or name among sinks named
//!   as BlueZ (`bluez_output.<address>.1`) and the RAOP module (`raop_output.<name>`)
//!   name them, play a 1 kHz tone into it through `pacat`, and `parec` hears it on the
//!   sink's monitor. The sinks are null sinks with those names: no Bluetooth radio or
//!   AirPlay speaker exists here, so what is tested is everything up to the sink;
//! - a speaker that disconnects (its sink unloaded) is reported as the output's
//!   failure, and a receiver process whose speaker is missing stays online with a
//!   status saying why, then plays when the speaker's sink appears, and again after
//!   it drops and comes back (the reopen with backoff);
//! - `syncstream receiver --check-mic` hears its own test tone through the sound
//!   server (output into a null sink, the "microphone" its monitor) and says OK; with
//!   a microphone that hears nothing it says so and exits non-zero;
//! - the `alsa` output sets its volume and mute through the card's mixer (the `pulse`
//!   control's `Master`), seen by `pactl` as the sink's volume and mute.

mod common;
#[path = "common/pulse.rs"]
mod pulse;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pulse::{have_pulseaudio, PulseServer};
use rumqttc::{Client, Event, Packet, QoS};
use syncstream_audio::{self as audio, BackendConfig, RenderInfo, StreamFormat};
use syncstream_receiver::mic_check::goertzel_power;
use syncstream_shared::time::{Clock, MonotonicClock};

const RATE: u32 = 48_000;
const BT_SINK: &str = "bluez_output.00_11_22_33_44_55.1";
const BT_ADDRESS: &str = "00:11:22:33:44:55";
const AIRPLAY_SINK: &str = "raop_output.HomePod.local";

fn need_pulseaudio() -> bool {
    if have_pulseaudio() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "pulseaudio is not installed (CI must install it)"
    );
    println!("SKIPPED: pulseaudio is not installed");
    false
}

/// Points this process's sound-server clients (pactl, pacat, the ALSA pulse plugin)
/// at `pulse`. Every test of this file sets the same kind of value; each test binary
/// runs its tests on threads of one process, so the tests take a lock.
fn use_server(pulse: &PulseServer) {
    std::env::set_var("PULSE_SERVER", &pulse.server);
}

static ENV_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn load_null_sink(pulse: &PulseServer, name: &str, description: &str) -> String {
    let out = pulse
        .pactl(&[
            "load-module",
            "module-null-sink",
            &format!("sink_name={name}"),
            &format!("sink_properties=device.description={description}"),
            "rate=48000",
            "channels=2",
        ])
        .expect("pactl");
    assert!(
        out.status.success(),
        "load-module: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn unload(pulse: &PulseServer, module: &str) {
    let out = pulse.pactl(&["unload-module", module]).expect("pactl");
    assert!(out.status.success(), "unload-module {module}");
}

/// A render function playing a 1 kHz sine at amplitude 0.5 on both channels.
fn tone() -> audio::RenderFn {
    let mut phase = 0.0f64;
    Box::new(move |buf: &mut [f32], _dac| {
        for f in buf.chunks_exact_mut(2) {
            let v = (phase * std::f64::consts::TAU).sin() as f32 * 0.5;
            f.fill(v);
            phase = (phase + 1000.0 / RATE as f64).fract();
        }
        RenderInfo::default()
    })
}

fn cfg(device: &str) -> BackendConfig {
    BackendConfig {
        device: Some(device.into()),
        format: StreamFormat {
            sample_rate: RATE,
            channels: 2,
        },
        clock: Arc::new(MonotonicClock) as Arc<dyn Clock>,
    }
}

/// Records `seconds` from `sink`'s monitor with `parec` (mono, 48 kHz).
fn record_monitor(pulse: &PulseServer, sink: &str, seconds: f64) -> Vec<f32> {
    let mut child = Command::new("parec")
        .args([
            &format!("--device={sink}.monitor"),
            "--raw",
            "--format=s16le",
            "--rate=48000",
            "--channels=1",
        ])
        .env("PULSE_SERVER", &pulse.server)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("parec");
    let mut bytes = vec![0u8; (seconds * RATE as f64) as usize * 2];
    let read = child
        .stdout
        .as_mut()
        .expect("stdout")
        .read_exact(&mut bytes);
    let _ = child.kill();
    let _ = child.wait();
    read.expect("parec delivered the recording");
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect()
}

/// Amplitude of the `freq_hz` component of `x` (the receiver's Goertzel, which gives
/// a sine's mean square, A²/2).
fn amplitude_at(x: &[f32], freq_hz: f64) -> f64 {
    (2.0 * goertzel_power(x, 0.0, freq_hz, RATE)).sqrt()
}

/// Plays the tone through `backend` to `target` and checks `sink`'s monitor hears it.
fn plays_into(
    pulse: &PulseServer,
    backend: &str,
    target: &str,
    sink: &str,
) -> Box<dyn audio::Sink> {
    let open = audio::find_sink(backend).expect("backend registered");
    let mut out = open(&cfg(target)).expect("open");
    out.start(tone()).expect("start");
    // 1.5 s: the first half covers pacat's start-up.
    let rec = record_monitor(pulse, sink, 1.5);
    let tail = &rec[rec.len() / 2..];
    let a = amplitude_at(tail, 1000.0);
    assert!(
        (0.4..0.6).contains(&a),
        "{backend} to '{target}': the 1 kHz tone on {sink}.monitor has amplitude {a:.3}, want 0.5"
    );
    assert!(out.failure().is_none(), "{:?}", out.failure());
    out
}

#[test]
fn bluetooth_and_airplay_play_into_their_sinks_and_a_disconnect_is_seen() {
    if !need_pulseaudio() {
        return;
    }
    let _env = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let pulse = PulseServer::start();
    use_server(&pulse);
    let bt_module = load_null_sink(&pulse, BT_SINK, "JBL-Flip-5");
    load_null_sink(&pulse, AIRPLAY_SINK, "HomePod");

    // `syncstream receiver --list-devices` shows both sinks with the type that plays
    // into each, and the ALSA outputs.
    let out = Command::new(env!("CARGO_BIN_EXE_syncstream"))
        .args(["receiver", "--list-devices"])
        .env("PULSE_SERVER", &pulse.server)
        .output()
        .expect("run syncstream");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listed}");
    assert!(listed.contains("ALSA outputs"), "{listed}");
    for (sink, backend) in [(BT_SINK, "bluetooth"), (AIRPLAY_SINK, "airplay")] {
        assert!(
            listed
                .lines()
                .any(|l| l.contains(sink) && l.contains(&format!("--output {backend})"))),
            "{sink} is not listed for {backend}:\n{listed}"
        );
    }

    // Bluetooth by address and by name; AirPlay by name.
    drop(plays_into(&pulse, "bluetooth", BT_ADDRESS, BT_SINK));
    drop(plays_into(&pulse, "bluetooth", "jbl-flip-5", BT_SINK));
    drop(plays_into(&pulse, "airplay", "HomePod", AIRPLAY_SINK));

    // A speaker that is not there is named, with what there is.
    let mut missing = audio::find_sink("bluetooth").unwrap()(&cfg("Kitchen")).expect("open");
    let e = missing
        .start(tone())
        .expect_err("no such speaker")
        .to_string();
    assert!(
        e.contains("no Bluetooth sink matches 'Kitchen'") && e.contains(BT_SINK),
        "{e}"
    );
    let mut missing = audio::find_sink("airplay").unwrap()(&cfg("Kitchen")).expect("open");
    let e = missing
        .start(tone())
        .expect_err("no such speaker")
        .to_string();
    assert!(e.contains("AirPlay") && e.contains(AIRPLAY_SINK), "{e}");

    // The speaker disconnects while playing: its sink goes, the player exits, the
    // output reports it.
    let out = plays_into(&pulse, "bluetooth", BT_ADDRESS, BT_SINK);
    unload(&pulse, &bt_module);
    let deadline = Instant::now() + Duration::from_secs(20);
    let why = loop {
        if let Some(w) = out.failure() {
            break w;
        }
        assert!(Instant::now() < deadline, "the disconnect was not reported");
        std::thread::sleep(Duration::from_millis(50)); // poll interval, bounded above
    };
    assert!(
        (why.contains("pacat") && why.contains("exited"))
            || why.contains(&format!("{BT_SINK} is gone")),
        "{why}"
    );
}

#[test]
fn alsa_volume_goes_through_the_mixer() {
    if !need_pulseaudio() {
        return;
    }
    let _env = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let pulse = PulseServer::start();
    use_server(&pulse);
    std::env::set_var("PULSE_SINK", "ss_test");
    let mut out = audio::find_sink("alsa").unwrap()(&cfg("pulse")).expect("open pulse");
    assert!(
        out.has_hardware_volume(),
        "the pulse control has a Master element"
    );
    let volume = |pulse: &PulseServer| -> String {
        let o = pulse.pactl(&["get-sink-volume", "ss_test"]).expect("pactl");
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let mute = |pulse: &PulseServer| -> String {
        let o = pulse.pactl(&["get-sink-mute", "ss_test"]).expect("pactl");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    out.set_volume(1.0, false).expect("volume 1");
    assert!(volume(&pulse).contains("100%"), "{}", volume(&pulse));
    out.set_volume(0.25, false).expect("volume 0.25");
    let v = volume(&pulse);
    assert!(!v.contains("100%") && !v.contains(" 0%"), "{v}");
    assert_eq!(mute(&pulse), "Mute: no");
    out.set_volume(0.25, true).expect("mute");
    assert_eq!(mute(&pulse), "Mute: yes");
    out.set_volume(0.25, false).expect("unmute");
    assert_eq!(mute(&pulse), "Mute: no");
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A receiver process whose profile names a Bluetooth speaker: online while the
/// speaker is missing (status `error`, naming it), playing once its sink appears,
/// `error` again when it drops, playing again when it is back.
#[test]
fn a_receiver_waits_for_its_speaker_and_survives_a_reconnect() {
    if !need_pulseaudio() {
        return;
    }
    let _env = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let pulse = PulseServer::start();
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("speaker.json");
    std::fs::write(
        &profile,
        format!(r#"{{"type":"bluetooth","target":"{BT_ADDRESS}","base_latency_ms":200}}"#),
    )
    .unwrap();
    let (stream, http, mqtt) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let exe = env!("CARGO_BIN_EXE_syncstream");
    let _tx = Killed(
        Command::new(exe)
            .args(["transmitter", "--source", "tone:440"])
            .args(["--stream-listen", &format!("127.0.0.1:{stream}")])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .args(["--broker-listen", &format!("127.0.0.1:{mqtt}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        common::wait_for_port(mqtt, Duration::from_secs(20)),
        "embedded broker did not start"
    );
    let _rx = Killed(
        Command::new(exe)
            .args([
                "receiver",
                "--name",
                "speaker",
                "--transmitter",
                "127.0.0.1",
            ])
            .args(["--stream-port", &stream.to_string()])
            .args(["--http-port", &http.to_string()])
            .args(["--mqtt", &format!("mqtt://127.0.0.1:{mqtt}")])
            .args(["--profile", profile.to_str().unwrap(), "--mic", "null"])
            .env("PULSE_SERVER", &pulse.server)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let opts = common::mqtt_options("watcher", mqtt, &common::default_key());
    let (client, mut conn) = Client::new(opts, 10);
    client
        .subscribe("syncstream/status/speaker", QoS::AtLeastOnce)
        .unwrap();
    // Waits (bounded) for a status for which `want` holds; returns it.
    let mut wait_status = |what: &str, want: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(45);
        while Instant::now() < deadline {
            if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
                conn.recv_timeout(Duration::from_millis(500))
            {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) {
                    if want(&v) {
                        return v;
                    }
                }
            }
        }
        panic!("no status: {what}");
    };
    let s = wait_status("error: the speaker is missing", &|v| v["state"] == "error");
    let reason = s["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("bluetooth") && reason.contains(BT_ADDRESS) && reason.contains("retrying"),
        "{reason}"
    );
    for round in 0..2 {
        let module = load_null_sink(&pulse, BT_SINK, "JBL-Flip-5");
        wait_status("playing once the speaker is there", &|v| {
            v["state"] == "playing"
        });
        // The audio reaches the speaker's sink.
        let rec = record_monitor(&pulse, BT_SINK, 1.0);
        let a = amplitude_at(&rec, 440.0);
        assert!(
            a > 0.05,
            "round {round}: the 440 Hz tone on the sink has amplitude {a:.3}"
        );
        unload(&pulse, &module);
        let s = wait_status("error: the speaker dropped", &|v| v["state"] == "error");
        assert!(
            s["reason"]
                .as_str()
                .is_some_and(|r| r.contains("bluetooth")),
            "{s}"
        );
    }
}

#[test]
fn check_mic_hears_the_test_tone_and_names_a_dead_microphone() {
    if !need_pulseaudio() {
        return;
    }
    let _env = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let pulse = PulseServer::start();
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("analog.json");
    std::fs::write(
        &profile,
        r#"{"type":"analog","target":"pulse","base_latency_ms":5}"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_syncstream"))
            .args(["receiver", "--check-mic", "--check-seconds", "2"])
            .args(["--profile", profile.to_str().unwrap()])
            .args(args)
            .env("PULSE_SERVER", &pulse.server)
            .env("PULSE_SINK", "ss_test")
            .env("PULSE_SOURCE", "ss_test.monitor")
            .output()
            .expect("run syncstream")
    };
    let out = run(&["--mic", "alsa", "--mic-device", "pulse", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(&text).expect("JSON report");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["signal_on"], "both", "{r}");
    assert!(r["tone_db"].as_f64().unwrap() > 20.0, "{r}");
    assert!(r["seconds"].as_f64().unwrap() >= 1.99, "{r}");
    assert!(r["summary"].as_str().unwrap().starts_with("OK"), "{r}");

    let out = run(&["--mic", "null", "--no-tone"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("hears nothing"), "{text}");
}
