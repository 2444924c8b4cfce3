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
        "--profile",
        bad.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("tv.json") && err.contains("base_latency_ms"),
        "{err}"
    );

    let (ok, err) = syncstream(&["receiver", "--name", "tv", "--output", "hologram"]);
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
