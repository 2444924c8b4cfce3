//! The simulator: runs the production receiver core (clock sync, jitter buffer,
//! playout, microphone recorder, drift detection), the production rolling buffer and
//! sync controller on virtual time, with the virtual room as audio hardware and a
//! simulated network, faster than real time.
//!
//! Time advances in room blocks of 10 ms. In each block: the pacer's due chunks enter
//! the rolling buffer and the network; messages whose delivery time has come are
//! delivered (audio into jitter buffers in TCP order, clock-sync answers into clock
//! sync); the room renders every device and records the microphones that are on; due
//! drift measurements run and their reports reach the controller, whose offsets reach
//! the receivers one network delay later. The room's ground truth feeds the report.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use syncstream_dsp::DelayEstimator;
use syncstream_protocol::codec::CHUNK_FRAMES;
use syncstream_receiver::core::{capture_fn, render_fn, Core, SharedCore};
use syncstream_receiver::drift::{self, DriftConfig};
use syncstream_receiver::playout::StreamParams;
use syncstream_receiver::stream_client;
use syncstream_room::{ClockModel, Room, BLOCK_FRAMES};
use syncstream_shared::time::{samples_to_us, STREAM_CHANNELS, STREAM_SAMPLE_RATE};
use syncstream_transmitter::controller::{ControllerConfig, Decision, SyncController};
use syncstream_transmitter::rolling_buffer::RollingBuffer;

use crate::report::{build_report, DeviceFacts, Report, TruthLog};
use crate::scenario::Scenario;
use crate::source::looping_clip;

/// Interval between clock-sync requests, µs (the receivers').
const SYNC_INTERVAL_US: i64 = stream_client::SYNC_INTERVAL.as_micros() as i64;
/// First measurement: once the rolling buffer holds a window's source (window + playout
/// delay + the acquiring search margin), µs.
const FIRST_MEASUREMENT_US: i64 = 3_500_000;
/// Clock-sync errors are sampled from this time on, every this often, µs.
const CLOCK_ERROR_FROM_US: i64 = 10_000_000;
const CLOCK_ERROR_EVERY_US: i64 = 100_000;
/// The microphone is switched on this long before a measurement's window starts, µs.
const MIC_LEAD_US: i64 = 200_000;

enum Message {
    Audio {
        index: u64,
        samples: Arc<Vec<f32>>,
    },
    TimeResponse {
        t1: i64,
        t2: i64,
        t3: i64,
        t4_room_us: i64,
    },
    Offset {
        offset_ms: f64,
        rate_ms_per_s: f64,
        ref_us: i64,
    },
}

struct SimDevice {
    core: SharedCore,
    clock: ClockModel,
    /// (delivery room time, message); audio is delivered in order (TCP).
    inbox: VecDeque<(i64, Message)>,
    last_audio_delivery: i64,
    next_sync: i64,
    next_measure: i64,
    mic_on: bool,
    mic: Box<dyn syncstream_audio::Microphone>,
    _sink: Box<dyn syncstream_audio::Sink>,
    offsets_applied: u64,
    /// Clock-sync offset errors, µs (see [`crate::report::DeviceReport::clock_error_us`]).
    clock_errors_us: Vec<f64>,
}

/// Progress callback: (simulated s, total s).
pub type Progress<'a> = &'a mut dyn FnMut(f64, f64);

/// Runs `scenario` and returns its report.
///
/// Errors: the audio file or an impulse response cannot be read, or the room refuses
/// the devices.
pub fn run_scenario(sc: &Scenario, progress: Progress<'_>) -> anyhow::Result<Report> {
    let fs = STREAM_SAMPLE_RATE;
    let mut rng = StdRng::seed_from_u64(sc.seed);
    let mut source = looping_clip(&sc.audio)?;
    let origin_us: i64 = 1_000_000_000;
    let epoch_us = origin_us;
    let playout_delay_us = sc.playout_delay_ms as i64 * 1000;
    let params = StreamParams {
        sample_rate: fs,
        channels: STREAM_CHANNELS as usize,
        epoch_us,
        codec_delay_samples: 0,
        playout_delay_us,
    };
    let mut buffer = RollingBuffer::new(fs, 30.0, epoch_us);
    let mut controller = SyncController::new(ControllerConfig {
        max_offset_ms: sc.playout_delay_ms as f64 - 50.0,
        ..Default::default()
    });
    // The room.
    let (mut vdevs, profiles) = crate::room_setup::virtual_devices(sc)?;
    for v in &mut vdevs {
        v.clock.offset_us = rng.random_range(-5e9..5e9);
    }
    let room = Room::new(vdevs.clone(), origin_us, sc.seed)?;
    let drift_cfg = DriftConfig::default();
    let mut devices: Vec<SimDevice> = Vec::new();
    for (i, d) in sc.devices.iter().enumerate() {
        let core: SharedCore = Arc::new(Mutex::new(Core::new(&d.name, profiles[i].clone(), fs)));
        {
            let mut c = core.lock().unwrap();
            c.playout.set_stream(params);
            c.connected = true;
        }
        let mut sink = room.sink(&d.name)?;
        sink.start(render_fn(core.clone()))?;
        devices.push(SimDevice {
            core,
            clock: vdevs[i].clock,
            inbox: VecDeque::new(),
            last_audio_delivery: 0,
            next_sync: origin_us,
            next_measure: origin_us + FIRST_MEASUREMENT_US + i as i64 * 300_000,
            mic_on: false,
            mic: room.microphone(&d.name)?,
            _sink: sink,
            offsets_applied: 0,
            clock_errors_us: Vec::new(),
        });
    }
    let net = sc.network.clone();
    let delay_us = |rng: &mut StdRng| -> i64 {
        let burst = rng.random_bool(0.3);
        let j = if burst {
            net.jitter_ms
        } else {
            net.jitter_ms / 20.0
        };
        ((net.delay_ms + rng.random_range(0.0..=1.0) * j) * 1000.0).round() as i64
    };
    let mut estimator = DelayEstimator::new(fs);
    let debug = std::env::var_os("SYNCSTREAM_SIM_DEBUG").is_some();
    let mut log = TruthLog::default();
    let end_us = origin_us + (sc.duration_s * 1e6) as i64;
    let mut chunk = vec![0.0f32; CHUNK_FRAMES * STREAM_CHANNELS as usize];
    let mut next_chunk: u64 = 0;
    let mut last_progress = origin_us;
    let mut t = origin_us;
    while t < end_us {
        // Pacer: chunks whose end is due.
        while epoch_us + samples_to_us((next_chunk + CHUNK_FRAMES as u64) as i64, fs) <= t {
            let n = source(&mut chunk)?;
            chunk[n * STREAM_CHANNELS as usize..].fill(0.0);
            buffer.push_interleaved(next_chunk, &chunk, STREAM_CHANNELS as usize);
            let samples = Arc::new(chunk.clone());
            for d in devices.iter_mut() {
                let at = (t + delay_us(&mut rng)).max(d.last_audio_delivery);
                d.last_audio_delivery = at;
                d.inbox.push_back((
                    at,
                    Message::Audio {
                        index: next_chunk,
                        samples: samples.clone(),
                    },
                ));
            }
            next_chunk += CHUNK_FRAMES as u64;
        }
        for d in devices.iter_mut() {
            // Clock-sync requests.
            while d.next_sync <= t {
                let t1 = d.clock.local_from_room(d.next_sync as f64).round() as i64;
                let t2 = d.next_sync + delay_us(&mut rng);
                let t3 = t2 + 20;
                let t4_room_us = t3 + delay_us(&mut rng);
                d.inbox.push_back((
                    t4_room_us,
                    Message::TimeResponse {
                        t1,
                        t2,
                        t3,
                        t4_room_us,
                    },
                ));
                d.next_sync += SYNC_INTERVAL_US;
            }
            // Deliveries.
            let mut c = d.core.lock().unwrap();
            let mut k = 0;
            while k < d.inbox.len() {
                if d.inbox[k].0 > t {
                    k += 1;
                    continue;
                }
                let (_, msg) = d.inbox.remove(k).expect("index in range");
                match msg {
                    Message::Audio { index, samples } => {
                        c.jitter_buffer.push(index as i64, &samples)
                    }
                    Message::TimeResponse {
                        t1,
                        t2,
                        t3,
                        t4_room_us,
                    } => {
                        let t4 = d.clock.local_from_room(t4_room_us as f64).round() as i64;
                        c.clock.add_exchange(t1, t2, t3, t4);
                    }
                    Message::Offset {
                        offset_ms,
                        rate_ms_per_s,
                        ref_us,
                    } => {
                        c.apply_offset(offset_ms, rate_ms_per_s, ref_us);
                        d.offsets_applied += 1;
                    }
                }
            }
            drop(c);
            // Microphone on shortly before a measurement window.
            let window_us = drift_cfg.window_ms as i64 * 1000;
            if !d.mic_on && t >= d.next_measure - window_us - MIC_LEAD_US {
                d.mic.start(capture_fn(d.core.clone()))?;
                d.mic_on = true;
            }
        }
        room.step();
        t += samples_to_us(BLOCK_FRAMES as i64, fs);
        log.add(
            &room.drain_truth(),
            origin_us as f64,
            playout_delay_us as f64,
        );
        // Measurements.
        for d in devices.iter_mut() {
            if t < d.next_measure {
                continue;
            }
            let report = {
                let c = d.core.lock().unwrap();
                let planned = drift::plan(
                    &drift_cfg,
                    &c.mic,
                    &c.playout,
                    &c.clock,
                    c.profile.mic_delay_ms(),
                    c.tracking,
                );
                let r = match &planned {
                    Ok(m) => match buffer.window(m.ref_start_us, m.ref_duration_ms) {
                        Ok((first, reference)) => Some(drift::analyze(
                            &mut estimator,
                            &c.device,
                            m,
                            &reference,
                            first,
                        )),
                        Err(_) => None,
                    },
                    Err(_) => None,
                };
                if debug {
                    let t_s = (t - origin_us) as f64 / 1e6;
                    match (&planned, &r) {
                        (_, Some(r)) => eprintln!(
                            "{t_s:7.2} {} drift {:?} conf {:.2} applied {:.3} {:?}",
                            c.device, r.drift_ms, r.confidence, r.applied_offset_ms, r.reason
                        ),
                        (Err(e), _) => eprintln!("{t_s:7.2} {} no measurement: {e:?}", c.device),
                        _ => eprintln!("{t_s:7.2} {} no source window", c.device),
                    }
                }
                r
            };
            d.mic.stop()?;
            d.mic_on = false;
            if let Some(r) = &report {
                d.core
                    .lock()
                    .unwrap()
                    .note_report(r, drift_cfg.track_below_ms);
            }
            // The receivers' own cadence (`DriftConfig::interval_ms`), tracking or not.
            d.next_measure = t + drift_cfg.interval_ms as i64 * 1000;
            if let Some(r) = report {
                // Report → controller → offset, each one network delay.
                if let Decision::Publish(o) = controller.on_report(&r) {
                    let at = t + delay_us(&mut rng) + delay_us(&mut rng);
                    d.inbox.push_back((
                        at,
                        Message::Offset {
                            offset_ms: o.offset_ms,
                            rate_ms_per_s: o.rate_ms_per_s,
                            ref_us: o.ref_us,
                        },
                    ));
                }
            }
        }
        if t - origin_us >= CLOCK_ERROR_FROM_US && (t - origin_us) % CLOCK_ERROR_EVERY_US == 0 {
            for d in devices.iter_mut() {
                let local = d.clock.local_from_room(t as f64);
                if let Some(tx) = d.core.lock().unwrap().clock.tx_from_local(local) {
                    d.clock_errors_us.push(tx - t as f64);
                }
            }
        }
        if t - last_progress >= 10_000_000 {
            progress((t - origin_us) as f64 / 1e6, sc.duration_s);
            last_progress = t;
        }
    }
    let mut clock_errors: Vec<Vec<f64>> = devices
        .iter_mut()
        .map(|d| std::mem::take(&mut d.clock_errors_us))
        .collect();
    let facts: Vec<DeviceFacts> = sc
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let c = devices[i].core.lock().unwrap();
            if debug {
                eprintln!(
                    "{}: clock rate {:.1} ppm (true {:.1})",
                    d.name,
                    c.clock.rate() * 1e6,
                    -d.clock_ppm
                );
            }
            DeviceFacts {
                name: d.name.clone(),
                output: profiles[i].output_type.as_str().to_string(),
                profile_latency_ms: profiles[i].base_latency_ms,
                true_latency_ms: room.true_latency_ms(i),
                final_offset_ms: c.playout.offset_ms(),
                underruns: c.playout.stats().underruns,
                jumps: c.playout.stats().jumps,
                offsets_applied: devices[i].offsets_applied,
                clock_errors_us: std::mem::take(&mut clock_errors[i]),
            }
        })
        .collect();
    Ok(build_report(
        &log,
        &facts,
        &sc.audio.display().to_string(),
        sc.duration_s,
        sc.playout_delay_ms as f64,
    ))
}
