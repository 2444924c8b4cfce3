//! `syncstream calibrate --scenario s.json`: calibrates a scenario's virtual room.
//!
//! The room is the one the simulator builds ([`crate::room_setup::build_room`]: true
//! latencies, microphone distances, noise, reverberation, devices hearing each other,
//! clock rates); every device plays its test signal through its virtual output and
//! records its own microphone ([`syncstream_calibration::simulate`]), and the engine
//! measures the latency from the recording exactly as a receiver does. Since the room
//! knows each device's true latency, the result also says how far off each
//! measurement is.

use std::path::PathBuf;

use super::simulate::{run_pass, run_simultaneous, SimulatedRecording};
use syncstream_calibration::onset::OnsetParams;
use syncstream_calibration::orthogonal::orthogonal_set;
use syncstream_calibration::report::{write_report, ReportEntry};
use syncstream_calibration::{analyse, MlsParams, SignalKind, TestSignal};
use syncstream_room::Room;
use syncstream_shared::profile::DeviceProfile;

use crate::room_setup::build_room;
use crate::scenario::Scenario;
use syncstream_calibration::run::{listen_window_ms, CalibrationRun, DeviceOutcome};

/// Options of a scenario calibration.
#[derive(Debug, Clone)]
pub struct ScenarioOptions {
    /// Test signal family; simultaneous calibration needs [`SignalKind::Mls`].
    pub signal: SignalKind,
    /// All devices at once with orthogonal MLS, instead of one after the other.
    pub simultaneous: bool,
    /// Write plots and `summary.json` here.
    pub report_dir: Option<PathBuf>,
}

/// Calibrates every device of `sc` in its virtual room.
///
/// Errors: the room cannot be built, `--simultaneous` with a sweep, or the report
/// cannot be written. A device that cannot be measured is a failure in the result,
/// not an error.
pub fn calibrate_scenario(sc: &Scenario, opts: &ScenarioOptions) -> anyhow::Result<CalibrationRun> {
    if opts.simultaneous && opts.signal != SignalKind::Mls {
        anyhow::bail!(
            "simultaneous calibration uses one orthogonal MLS per device: use --signal mls \
             (or leave --signal out)"
        );
    }
    let (room, vdevs, profiles) = build_room(sc, 0)?;
    let names: Vec<&str> = vdevs.iter().map(|v| v.name.as_str()).collect();
    let t0 = room.now_us();
    // (signal, recording, true latency at the end of the device's pass)
    let played = if opts.simultaneous {
        simultaneous(&room, &names)?
    } else {
        sequential(&room, &names, &profiles, opts.signal)?
    };
    let audio_s = (room.now_us() - t0) as f64 / 1e6;
    let mut outcomes = Vec::new();
    let mut entries = Vec::new();
    for (i, (signal, rec, true_latency_ms)) in played.iter().enumerate() {
        let true_latency_ms = *true_latency_ms;
        let mut o = DeviceOutcome {
            device: rec.device.clone(),
            true_latency_ms: Some(true_latency_ms),
            ..Default::default()
        };
        let mut entry = ReportEntry {
            device: rec.device.clone(),
            analysis: None,
            change: None,
            error: None,
            true_latency_ms: Some(true_latency_ms),
        };
        match analyse(
            signal,
            &rec.recording,
            rec.offset_samples,
            profiles[i].mic_distance_m,
            &OnsetParams::default(),
        ) {
            Ok(a) => {
                let m = &a.measurement;
                o.latency_ms = Some(m.latency_ms);
                o.uncertainty_ms = Some(m.uncertainty_ms);
                o.confidence = Some(m.confidence);
                o.signal = Some(m.signal.as_str().to_string());
                o.error_ms = Some(m.latency_ms - true_latency_ms);
                entry.analysis = Some(a);
            }
            Err(e) => {
                o.failure = Some(format!("{}: {e}", rec.device));
                entry.error = o.failure.clone();
            }
        }
        outcomes.push(o);
        entries.push(entry);
    }
    if let Some(dir) = &opts.report_dir {
        write_report(dir, &entries)?;
    }
    let mut run = CalibrationRun {
        mode: "scenario".into(),
        signal: opts.signal.as_str().into(),
        simultaneous: opts.simultaneous,
        audio_s: Some(audio_s),
        devices: outcomes,
        report_dir: opts.report_dir.as_ref().map(|d| d.display().to_string()),
        ..Default::default()
    };
    run.tally();
    Ok(run)
}

/// One device after the other, each with the default signal of `kind`, recording long
/// enough for its profile's base latency + 500 ms.
fn sequential(
    room: &Room,
    names: &[&str],
    profiles: &[DeviceProfile],
    kind: SignalKind,
) -> anyhow::Result<Vec<(TestSignal, SimulatedRecording, f64)>> {
    let signal = TestSignal::default_for(kind)?;
    let mut out = Vec::new();
    for (i, (name, profile)) in names.iter().zip(profiles).enumerate() {
        let len = signal.recording_samples(listen_window_ms(profile.base_latency_ms));
        let mut rec = run_pass(room, &[(name, &signal)], &[name], len)?;
        if let Some(r) = rec.pop() {
            out.push((signal.clone(), r, room.true_latency_ms(i)));
        }
    }
    Ok(out)
}

/// All devices at once, device `k` playing member `k` of an orthogonal MLS set.
fn simultaneous(
    room: &Room,
    names: &[&str],
) -> anyhow::Result<Vec<(TestSignal, SimulatedRecording, f64)>> {
    let signals = orthogonal_set(names.len(), &MlsParams::default())?;
    let pass = run_simultaneous(room, names, &signals, 0.0)?;
    Ok(signals
        .into_iter()
        .zip(pass.recordings)
        .enumerate()
        .map(|(i, (s, r))| (s, r, room.true_latency_ms(i)))
        .collect())
}
