//! The calibration targets in the virtual room: RT60 0.6 s, SNR 10 dB (against the test
//! signal's own level), other devices heard at −10 dB; every device within ±0.1 ms of
//! its true latency, sequentially (< 30 s of audio) and simultaneously (< 15 s).
//!
//! `cargo test -p syncstream-calibration --test virtual_room -- --nocapture` prints the
//! accuracy table quoted in `docs/calibration.md`.

use syncstream_calibration::orthogonal::orthogonal_set;
use syncstream_calibration::{measure, LatencyMeasurement, MlsParams, TestSignal};
use syncstream_room::{Hearing, Room, VirtualDevice};
use syncstream_sim::calibrate::simulate::{
    run_pass, run_sequential, run_simultaneous, SimulatedPass,
};

const NAMES: [&str; 5] = ["kitchen", "tv", "cast", "airplay", "bt"];
const LATENCIES_MS: [f64; 5] = [8.0, 70.0, 300.0, 250.0, 200.0];
const MAX_LATENCY_MS: f64 = 400.0;

/// Noise SNR for the room so the test signal's RMS at the microphone is `snr_db` over
/// the noise (the room's `snr_db` is against a nominal −20 dBFS RMS).
fn room_snr_for(signal: &TestSignal, snr_db: f64) -> f64 {
    let n = signal.samples.len().max(1) as f64;
    let rms = (signal
        .samples
        .iter()
        .map(|v| (*v as f64).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    snr_db - 20.0 * (rms / 0.1).log10()
}

/// Five devices with fractional latencies (+0.37 ms, so the sub-sample path is used),
/// RT60 0.6 s, each hearing every other device at −10 dB from 3 m.
fn room(snr_db: f64, seed: u64) -> (Room, Vec<VirtualDevice>) {
    let devices: Vec<VirtualDevice> = NAMES
        .iter()
        .zip(LATENCIES_MS)
        .enumerate()
        .map(|(i, (name, lat))| {
            let mut d = VirtualDevice::new(name, lat + 0.37 + 0.011 * i as f64);
            d.rt60_s = 0.6;
            d.snr_db = snr_db;
            d.mic_distance_m = 0.3 + 0.1 * i as f64;
            d.hears = NAMES
                .iter()
                .filter(|n| *n != name)
                .map(|n| Hearing {
                    device: n.to_string(),
                    gain_db: -10.0,
                    distance_m: 3.0,
                })
                .collect();
            d
        })
        .collect();
    (Room::new(devices.clone(), 0, seed).unwrap(), devices)
}

fn check(label: &str, signal: &TestSignal, devices: &[VirtualDevice], pass: &SimulatedPass) {
    println!(
        "{label}: {:.1} s of audio\n| device | true ms | measured ms | error ms | ±1σ ms | confidence |\n|---|---|---|---|---|---|",
        pass.audio_ms / 1000.0
    );
    let mut worst = 0.0f64;
    for (d, r) in devices.iter().zip(&pass.recordings) {
        let sig = signal;
        let m: LatencyMeasurement =
            measure(sig, &r.recording, r.offset_samples, d.mic_distance_m).unwrap();
        let err = m.latency_ms - d.latency_ms;
        println!(
            "| {} | {:.3} | {:.3} | {:+.4} | {:.4} | {:.2} |",
            d.name, d.latency_ms, m.latency_ms, err, m.uncertainty_ms, m.confidence
        );
        worst = worst.max(err.abs());
        assert!(err.abs() <= 0.1, "{label} {}: {m:?}", d.name);
        assert!(m.confidence > 0.5, "{label} {}: {m:?}", d.name);
    }
    println!("worst |error| {worst:.4} ms\n");
}

#[test]
fn sequential_sweep_meets_the_targets() {
    let signal = TestSignal::default_sweep();
    let (room, devices) = room(room_snr_for(&signal, 10.0), 11);
    let pass = run_sequential(&room, &NAMES, &signal, MAX_LATENCY_MS).unwrap();
    assert!(pass.audio_ms < 30_000.0, "{}", pass.audio_ms);
    check("sequential sweep", &signal, &devices, &pass);
}

#[test]
fn simultaneous_mls_meets_the_targets() {
    let set = orthogonal_set(5, &MlsParams::default()).unwrap();
    let (room, devices) = room(room_snr_for(&set[0], 10.0), 12);
    let pass = run_simultaneous(&room, &NAMES, &set, MAX_LATENCY_MS).unwrap();
    assert!(pass.audio_ms < 15_000.0, "{}", pass.audio_ms);
    println!(
        "simultaneous MLS: {:.1} s of audio\n| device | true ms | measured ms | error ms | ±1σ ms | confidence |\n|---|---|---|---|---|---|",
        pass.audio_ms / 1000.0
    );
    for ((d, r), s) in devices.iter().zip(&pass.recordings).zip(&set) {
        let m = measure(s, &r.recording, r.offset_samples, d.mic_distance_m).unwrap();
        let err = m.latency_ms - d.latency_ms;
        println!(
            "| {} | {:.3} | {:.3} | {:+.4} | {:.4} | {:.2} |",
            d.name, d.latency_ms, m.latency_ms, err, m.uncertainty_ms, m.confidence
        );
        assert!(err.abs() <= 0.1, "{}: {m:?}", d.name);
        assert!(m.confidence > 0.5, "{}: {m:?}", d.name);
    }
}

#[test]
fn sequential_mls_meets_the_targets() {
    let signal = TestSignal::default_for(syncstream_calibration::SignalKind::Mls).unwrap();
    let (room, devices) = room(room_snr_for(&signal, 10.0), 13);
    let pass = run_sequential(&room, &NAMES, &signal, MAX_LATENCY_MS).unwrap();
    check("sequential MLS", &signal, &devices, &pass);
}

#[test]
fn a_microphone_that_hears_nothing_is_no_signal_not_a_number() {
    // "ghost" does not hear "other": while "other" plays the sweep, ghost's microphone
    // records room noise only (SNR 10 dB against the nominal level).
    let signal = TestSignal::default_sweep();
    let mut ghost = VirtualDevice::new("ghost", 50.0);
    ghost.snr_db = 10.0;
    let other = VirtualDevice::new("other", 10.0);
    let room = Room::new(vec![ghost, other], 0, 5).unwrap();
    let r = run_pass(
        &room,
        &[("other", &signal)],
        &["ghost"],
        signal.recording_samples(200.0),
    )
    .unwrap()
    .remove(0);
    let e = measure(&signal, &r.recording, r.offset_samples, 0.3).unwrap_err();
    assert!(e.to_string().contains("no test signal"), "{e}");
}
