//! The command line: bad input gets a clear error naming the thing and the reason,
//! and a non-zero exit.

use std::process::Command;

fn syncstream(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_syncstream"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`syncstream`], killed after `limit` (then it fails with the time in the message).
fn syncstream_within(args: &[&str], limit: std::time::Duration) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_syncstream"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    (false, format!("still running after {limit:?}"))
}

#[test]
fn missing_and_non_audio_files_are_named_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.ogg");
    let (ok, err) = syncstream(&[
        "demo",
        "--audio",
        missing.to_str().unwrap(),
        "--duration",
        "1",
        "--quiet",
    ]);
    assert!(!ok);
    assert!(
        err.contains("missing.ogg") && err.contains("No such file"),
        "{err}"
    );

    let text = dir.path().join("notes.flac");
    std::fs::write(&text, "this is not audio").unwrap();
    let (ok, err) = syncstream(&[
        "demo",
        "--audio",
        text.to_str().unwrap(),
        "--duration",
        "1",
        "--quiet",
    ]);
    assert!(!ok);
    assert!(
        err.contains("notes.flac") && err.contains("not a readable audio file"),
        "{err}"
    );
}

#[test]
fn malformed_profiles_and_unknown_backends_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("tv.json");
    std::fs::write(&bad, r#"{"type":"hdmi","base_latency_ms":"slow"}"#).unwrap();
    let (ok, err) = syncstream(&[
        "receiver",
        "--name",
        "tv",
        "--transmitter",
        "127.0.0.1",
        "--profile",
        bad.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("tv.json") && err.contains("base_latency_ms"),
        "{err}"
    );

    let (ok, err) = syncstream(&[
        "receiver",
        "--name",
        "tv",
        "--transmitter",
        "127.0.0.1",
        "--output",
        "hologram",
    ]);
    assert!(!ok);
    assert!(err.contains("hologram") && err.contains("alsa"), "{err}");
}

#[test]
fn shipped_profiles_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            syncstream_shared::profile::DeviceProfile::load(&path).unwrap();
            n += 1;
        }
    }
    assert!(
        n >= 5,
        "expected the five default profiles in {}",
        dir.display()
    );
}

/// The transmitter's streams: none given, a bad URI, an unnamed extra stream and two
/// streams with one name are refused before anything starts, each with its reason.
#[test]
fn bad_streams_are_refused_with_the_reason() {
    for (args, needle) in [
        (vec!["transmitter"], "give --source"),
        (
            vec!["transmitter", "--stream", "ftp:///x?name=a"],
            "unknown source type 'ftp'",
        ),
        (
            vec![
                "transmitter",
                "--source",
                "tone",
                "--stream",
                "tone:///?freq=300",
            ],
            "give it a name",
        ),
        (
            vec![
                "transmitter",
                "--source",
                "tone",
                "--stream",
                "tone:///?name=default",
            ],
            "already given",
        ),
        (
            vec!["transmitter", "--stream", "pipe:///tmp/x?name=a&colour=red"],
            "unknown parameter colour",
        ),
        (
            vec!["transmitter", "--stream", "tone:///?name=a/b"],
            "stream name",
        ),
    ] {
        let (ok, err) = syncstream(&args);
        assert!(!ok, "{args:?} started");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// Issue 14: every numeric option is checked when the command line is read: `inf`,
/// `NaN` and numbers out of range are refused at once, naming the option and giving
/// the range (`--buffer-seconds 1e12` aborted, `inf` panicked, `NaN` was accepted).
#[test]
fn numeric_options_are_checked_with_their_range() {
    let tx = ["transmitter", "--source", "tone"];
    for (args, option, range) in [
        (
            vec!["--buffer-seconds", "1e12"],
            "--buffer-seconds",
            "1 to 600",
        ),
        (
            vec!["--buffer-seconds", "inf"],
            "--buffer-seconds",
            "1 to 600",
        ),
        (
            vec!["--buffer-seconds", "NaN"],
            "--buffer-seconds",
            "1 to 600",
        ),
        (
            vec!["--buffer-seconds", "0"],
            "--buffer-seconds",
            "1 to 600",
        ),
        (
            vec!["--buffer-seconds", "lots"],
            "--buffer-seconds",
            "not a number",
        ),
        (
            vec!["--playout-delay-ms", "20"],
            "--playout-delay-ms",
            "100..=10000",
        ),
        (vec!["--stdin-rate", "0"], "--stdin-rate", "1000..=768000"),
        (
            vec!["--stdin-rate", "4000000000"],
            "--stdin-rate",
            "1000..=768000",
        ),
        (vec!["--stdin-channels", "0"], "--stdin-channels", "1..=32"),
    ] {
        let all: Vec<&str> = tx.iter().copied().chain(args.iter().copied()).collect();
        let (ok, err) = syncstream(&all);
        assert!(!ok, "{all:?} started");
        assert!(
            err.contains(option) && err.contains(range),
            "{all:?}: {err}"
        );
    }
    for (args, option, range) in [
        (
            vec![
                "delay",
                "--reference",
                "a",
                "--recording",
                "b",
                "--max-lag-ms",
                "1e12",
            ],
            "--max-lag-ms",
            "0 to 60000",
        ),
        (
            vec![
                "delay",
                "--reference",
                "a",
                "--recording",
                "b",
                "--max-lag-ms=-inf",
            ],
            "--max-lag-ms",
            "0 to 60000",
        ),
        (
            vec!["receiver", "--name", "tv", "--check-seconds", "NaN"],
            "--check-seconds",
            "1 to 60",
        ),
        (
            vec!["receiver", "--name", "tv", "--stream-port", "0"],
            "--stream-port",
            "1..=65535",
        ),
        (
            vec!["demo", "--duration", "inf"],
            "--duration",
            "0.1 to 86400",
        ),
        (
            vec![
                "calibrate",
                "--mqtt",
                "mqtt://127.0.0.1:1",
                "--timeout-s",
                "1e300",
            ],
            "--timeout-s",
            "0.1 to 3600",
        ),
    ] {
        let (ok, err) = syncstream(&args);
        assert!(!ok, "{args:?} started");
        assert!(
            err.contains(option) && err.contains(range),
            "{args:?}: {err}"
        );
    }
}

/// Issue 14: files are read with a size cap, so `/dev/zero` (or a huge file) fails at
/// once with an error naming the file and the cap instead of eating all memory; a
/// profiles folder that is a file is refused at start.
#[test]
fn outside_files_are_read_with_a_cap() {
    for (args, what, cap) in [
        (
            vec!["receiver", "--name", "tv", "--profile", "/dev/zero"],
            "profile /dev/zero",
            "65536 bytes",
        ),
        (
            vec!["sim", "--scenario", "/dev/zero", "--quiet"],
            "scenario /dev/zero",
            "1048576 bytes",
        ),
        (
            vec!["calibrate", "--scenario", "/dev/zero", "--quiet"],
            "scenario /dev/zero",
            "1048576 bytes",
        ),
        (
            vec!["demo", "--scenario", "/dev/zero", "--quiet"],
            "scenario /dev/zero",
            "1048576 bytes",
        ),
        (
            vec!["service", "receiver", "--config", "/dev/zero"],
            "configuration file /dev/zero",
            "65536 bytes",
        ),
        (
            vec!["release", "public-key", "--secret", "/dev/zero"],
            "secret key file /dev/zero",
            "4096 bytes",
        ),
        (
            vec![
                "release",
                "verify",
                "--public-key",
                &"0".repeat(64),
                "/dev/zero",
            ],
            "bundle /dev/zero",
            "bytes",
        ),
    ] {
        let started = std::time::Instant::now();
        let (ok, err) = syncstream_within(&args, std::time::Duration::from_secs(20));
        assert!(!ok, "{args:?} succeeded");
        assert!(err.contains(what) && err.contains(cap), "{args:?}: {err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    let (ok, err) = syncstream(&[
        "transmitter",
        "--source",
        "tone",
        "--profiles-dir",
        file.path().to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("--profiles-dir") && err.contains("not a folder"),
        "{err}"
    );
}

/// Discovery's options (docs/discovery.md): without --transmitter and with --no-mdns a
/// receiver cannot find one; --transmitter-name goes with neither --transmitter nor
/// --snapserver; names and the discover timeout are checked.
#[test]
fn discovery_options_are_checked() {
    let rx = [
        "receiver", "--name", "tv", "--output", "null", "--mic", "null",
    ];
    for (extra, want) in [
        (
            vec!["--no-mdns"],
            "give the transmitter's address with --transmitter",
        ),
        (
            vec!["--transmitter", "10.0.0.2", "--transmitter-name", "a"],
            "cannot be used with",
        ),
        (
            vec!["--snapserver", "music.local", "--transmitter-name", "a"],
            "cannot be used with",
        ),
        (vec!["--transmitter-name", ""], "the instance name is empty"),
    ] {
        let args: Vec<&str> = rx.iter().copied().chain(extra.iter().copied()).collect();
        let (ok, err) = syncstream_within(&args, std::time::Duration::from_secs(20));
        assert!(!ok && err.contains(want), "{args:?}: {err}");
    }
    let (ok, err) = syncstream(&["discover", "--timeout", "0"]);
    assert!(
        !ok && err.contains("--timeout") && err.contains("0.2 to 60"),
        "{err}"
    );
    let long = "x".repeat(64);
    let (ok, err) = syncstream(&["transmitter", "--source", "tone", "--mdns-name", &long]);
    assert!(
        !ok && err.contains("--mdns-name") && err.contains("64 bytes"),
        "{err}"
    );
}
