//! The receiver binary a Pi gets (`cargo build -p syncstream --no-default-features`)
//! links neither the virtual room, the plotting library nor the embedded broker, and the
//! full build does (so the check below would see them if they crept in).

use std::process::Command;

/// The normal (non-dev, non-build) dependency names of the `syncstream` package with
/// `args` added to `cargo tree`.
fn dependencies(args: &[&str]) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            "syncstream",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn the_pi_receiver_leaves_out_the_room_the_plots_and_the_broker() {
    let pi = dependencies(&["--no-default-features"]);
    // mdns-sd: a receiver finds its transmitter over mDNS (docs/discovery.md).
    for needed in [
        "syncstream-receiver",
        "syncstream-dsp",
        "cpal",
        "opus",
        "mdns-sd",
    ] {
        assert!(pi.iter().any(|d| d == needed), "{needed} missing: {pi:?}");
    }
    for absent in [
        "syncstream-room",
        "plotters",
        "rumqttd",
        "syncstream-sim",
        "syncstream-transmitter",
    ] {
        assert!(
            !pi.iter().any(|d| d == absent),
            "{absent} is linked into the Pi receiver"
        );
    }
    let full = dependencies(&[]);
    for present in ["syncstream-room", "plotters", "rumqttd"] {
        assert!(
            full.iter().any(|d| d == present),
            "{present} missing from the full build"
        );
    }
}
