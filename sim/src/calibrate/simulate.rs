//! Plays test signals in the virtual room ([`syncstream_room`]) and records
//! the microphones, faster than real time: the harness behind the accuracy tests and
//! behind calibrating a simulated scenario.
//!
//! Each device's sink is started with a render function that plays its signal from a
//! chosen DAC time; its microphone with a capture function that keeps the samples and
//! the ADC time of the first one. The recording's alignment for [`syncstream_calibration::measure`] is
//! then `(first ADC time − signal DAC start) × 48 kHz`, both on the device's clock.
//! Recording starts one block (10 ms) before the signal, so the offset is −480.

use std::sync::{Arc, Mutex};

use syncstream_audio::RenderInfo;
use syncstream_room::Room;
use syncstream_shared::time::STREAM_CHANNELS;

use syncstream_calibration::CalibrationError;
use syncstream_calibration::{TestSignal, SAMPLE_RATE};

/// One device's recording of its test signal.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedRecording {
    /// Device name.
    pub device: String,
    /// Microphone samples, mono, 48 kHz.
    pub recording: Vec<f32>,
    /// `recording_start_offset_samples` for [`syncstream_calibration::measure`].
    pub offset_samples: f64,
}

/// Result of a simulated pass.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedPass {
    /// Per device, in the order asked for.
    pub recordings: Vec<SimulatedRecording>,
    /// Room audio consumed by the whole pass, ms.
    pub audio_ms: f64,
}

type Rec = Arc<Mutex<(Option<i64>, Vec<f32>)>>;

fn room_err(e: impl ToString) -> CalibrationError {
    CalibrationError::Room(e.to_string())
}

/// Plays `plays[i].1` on device `plays[i].0` and records the microphones of
/// `records`, all starting together at the room's next block + 10 ms, for
/// `record_samples` (+ the 480 early samples). Recordings come in `records` order.
pub fn run_pass(
    room: &Room,
    plays: &[(&str, &TestSignal)],
    records: &[&str],
    record_samples: usize,
) -> Result<Vec<SimulatedRecording>, CalibrationError> {
    let block_us = 10_000i64;
    let start_us = room.now_us() + block_us;
    let mut sinks = Vec::new();
    let mut mics = Vec::new();
    let mut recs: Vec<Rec> = Vec::new();
    for (name, signal) in plays {
        let mut sink = room.sink(name).map_err(room_err)?;
        let samples = Arc::new(signal.samples.clone());
        let ch = STREAM_CHANNELS as usize;
        sink.start(Box::new(move |out: &mut [f32], dac_us: i64| {
            let first = ((dac_us - start_us) as f64 * SAMPLE_RATE as f64 / 1e6).round() as i64;
            for (j, frame) in out.chunks_mut(ch).enumerate() {
                let i = first + j as i64;
                let v = if i >= 0 {
                    samples.get(i as usize).copied().unwrap_or(0.0)
                } else {
                    0.0
                };
                frame.fill(v);
            }
            RenderInfo::default()
        }))
        .map_err(room_err)?;
        sinks.push(sink);
    }
    for name in records {
        let rec: Rec = Arc::new(Mutex::new((None, Vec::new())));
        let rec2 = rec.clone();
        let mut mic = room.microphone(name).map_err(room_err)?;
        mic.start(Box::new(move |x: &[f32], adc_us: i64| {
            if let Ok(mut r) = rec2.lock() {
                r.0.get_or_insert(adc_us);
                r.1.extend_from_slice(x);
            }
        }))
        .map_err(room_err)?;
        mics.push(mic);
        recs.push(rec);
    }
    let need = record_samples + 480;
    loop {
        let done = recs
            .iter()
            .all(|r| r.lock().map(|r| r.1.len() >= need).unwrap_or(true));
        if done {
            break;
        }
        room.step();
    }
    for s in &mut sinks {
        s.stop().map_err(room_err)?;
    }
    for m in &mut mics {
        m.stop().map_err(room_err)?;
    }
    Ok(records
        .iter()
        .zip(recs)
        .map(|(name, r)| {
            let (first, samples) = r.lock().map(|r| r.clone()).unwrap_or_default();
            let first = first.unwrap_or(start_us);
            SimulatedRecording {
                device: name.to_string(),
                recording: samples,
                offset_samples: (first - start_us) as f64 * SAMPLE_RATE as f64 / 1e6,
            }
        })
        .collect())
}

/// Calibrates `devices` one after the other with the same `signal`, recording each
/// for [`TestSignal::recording_samples`]`(max_latency_ms)`.
pub fn run_sequential(
    room: &Room,
    devices: &[&str],
    signal: &TestSignal,
    max_latency_ms: f64,
) -> Result<SimulatedPass, CalibrationError> {
    let t0 = room.now_us();
    let mut recordings = Vec::new();
    for d in devices {
        recordings.extend(run_pass(
            room,
            &[(d, signal)],
            &[d],
            signal.recording_samples(max_latency_ms),
        )?);
    }
    Ok(SimulatedPass {
        recordings,
        audio_ms: (room.now_us() - t0) as f64 / 1000.0,
    })
}

/// Calibrates `devices` at once, device `k` playing `signals[k]` (see
/// [`syncstream_calibration::orthogonal::orthogonal_set`]).
pub fn run_simultaneous(
    room: &Room,
    devices: &[&str],
    signals: &[TestSignal],
    max_latency_ms: f64,
) -> Result<SimulatedPass, CalibrationError> {
    if devices.len() != signals.len() {
        return Err(CalibrationError::InvalidParameter(format!(
            "{} devices but {} signals",
            devices.len(),
            signals.len()
        )));
    }
    let t0 = room.now_us();
    let plays: Vec<(&str, &TestSignal)> = devices.iter().copied().zip(signals).collect();
    let len = signals
        .iter()
        .map(|s| s.recording_samples(max_latency_ms))
        .max()
        .unwrap_or(0);
    let recordings = run_pass(room, &plays, devices, len)?;
    Ok(SimulatedPass {
        recordings,
        audio_ms: (room.now_us() - t0) as f64 / 1000.0,
    })
}
