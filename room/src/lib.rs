//! The virtual room: simulated output devices with hidden latencies and microphones
//! that hear them through an acoustic path, with reverberation, noise and the other
//! devices in the room.
//!
//! The room has its own timeline, sampled at [`STREAM_SAMPLE_RATE`]: room sample `k`
//! is at room time `origin_us + k·10⁶/48000`. Room time *is* transmitter time (the
//! reference clock). Each device's local clock is a [`ClockModel`] of room time.
//!
//! Every [`Room::step`] advances one block of [`BLOCK_FRAMES`]:
//! 1. each device with a started sink renders the block whose first frame leaves its
//!    output at room sample `k` (told to it as its local DAC time); the mono mix is
//!    *emitted* into the room at `k + latency` (the device's true output latency,
//!    hidden from the system);
//! 2. each device with a started microphone records room samples `[k, k+block)`: the
//!    sum over the devices it hears of their emission, delayed by distance / 343 m/s,
//!    shaped by an impulse response, scaled by the path gain, plus noise.
//!
//! The room also records ground truth ([`TruthSample`]): which source PTS each device
//! emitted at which room time, so a report can compute true sync errors.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};

use syncstream_audio::{AudioError, CaptureFn, Microphone, RenderFn, Sink, StreamFormat};
use syncstream_shared::time::{samples_to_us, STREAM_CHANNELS, STREAM_SAMPLE_RATE};

pub mod model_clock;
pub mod noise;
pub mod rir;

pub use model_clock::ModelClock;
pub use noise::{NoiseKind, NoiseSource};

pub use rir::ImpulseResponse;

/// Frames per room step (10 ms at 48 kHz).
pub const BLOCK_FRAMES: usize = 480;

/// How a device's local clock relates to room time: `local = room·(1 + ppm·10⁻⁶) + offset`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ClockModel {
    /// Offset at room time 0, µs.
    pub offset_us: f64,
    /// Rate error, parts per million (positive: the device clock runs fast).
    pub ppm: f64,
}

impl ClockModel {
    /// Local time for room time `room_us`.
    pub fn local_from_room(&self, room_us: f64) -> f64 {
        room_us * (1.0 + self.ppm * 1e-6) + self.offset_us
    }
    /// Room time for local time `local_us`.
    pub fn room_from_local(&self, local_us: f64) -> f64 {
        (local_us - self.offset_us) / (1.0 + self.ppm * 1e-6)
    }
}

/// A device this microphone hears besides its own speaker.
#[derive(Debug, Clone, PartialEq)]
pub struct Hearing {
    /// The other device's name.
    pub device: String,
    /// Level of that device at this microphone relative to this device's own direct path, dB.
    pub gain_db: f64,
    /// Distance from that device's speaker to this microphone, m.
    pub distance_m: f64,
}

/// One simulated device.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualDevice {
    /// Name (the receiver's device name).
    pub name: String,
    /// True output latency, ms (hidden from the system).
    pub latency_ms: f64,
    /// Random-walk standard deviation of the latency per minute, ms: every minute the
    /// latency takes a step drawn from N(0, σ²), and moves linearly to it over that minute.
    pub latency_wander_ms_per_min: f64,
    /// Speaker-to-microphone distance, m.
    pub mic_distance_m: f64,
    /// Signal-to-noise ratio at the microphone, dB (noise against the own speaker's
    /// nominal level of −20 dBFS).
    pub snr_db: f64,
    /// Reverberation time RT60, s (0 for an anechoic path).
    pub rt60_s: f64,
    /// Measured impulse response to use instead of the RT60 model.
    pub rir: Option<ImpulseResponse>,
    /// Other devices heard by this device's microphone.
    pub hears: Vec<Hearing>,
    /// The device's local clock.
    pub clock: ClockModel,
}

impl VirtualDevice {
    /// A device with the given latency and otherwise quiet, dry defaults.
    pub fn new(name: &str, latency_ms: f64) -> Self {
        Self {
            name: name.to_string(),
            latency_ms,
            latency_wander_ms_per_min: 0.0,
            mic_distance_m: 0.3,
            snr_db: 30.0,
            rt60_s: 0.0,
            rir: None,
            hears: Vec::new(),
            clock: ClockModel::default(),
        }
    }
}

/// Ground truth for one block: device `device` emitted source PTS `source_pts_us`
/// at room time `emit_room_us`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TruthSample {
    /// Index of the device in the room's device list.
    pub device: usize,
    /// Room time of the block (the DAC time of its first frame), µs.
    pub block_room_us: f64,
    /// Room time the block's first frame left the speaker, µs.
    pub emit_room_us: f64,
    /// Its presentation timestamp, µs (transmitter clock).
    pub source_pts_us: f64,
}

/// A room configuration error.
#[derive(Debug, thiserror::Error)]
#[error("virtual room: {0}")]
pub struct RoomError(pub String);

struct Path {
    source: usize,
    /// Taps of the full path: (delay in samples from emission, gain).
    taps: Vec<(usize, f32)>,
}

struct DeviceState {
    cfg: VirtualDevice,
    render: Option<RenderFn>,
    capture: Option<CaptureFn>,
    /// Emitted mono audio; `emitted[i]` is room sample `emitted_start + i`.
    emitted: VecDeque<f32>,
    paths: Vec<Path>,
    latency_samples: f64,
    noise_rms: f32,
    render_buf: Vec<f32>,
    mic_buf: Vec<f32>,
    /// Next local sample index (local µs × rate / 10⁶) the DAC plays, while started.
    dac_next: Option<i64>,
    /// Next local sample index the ADC takes, while started.
    adc_next: Option<i64>,
    /// Acoustic output level relative to the device's nominal one (linear).
    output_gain: f32,
    /// Extra noise at the microphone over spans of room samples.
    bursts: Vec<Burst>,
    /// Whether the microphone is computed (the simulator switches microphones off
    /// between measurements to save time; the capture function stays installed).
    mic_enabled: bool,
    wander: Wander,
    /// The latency random walk's own generator (seeded per device, so the walk is the
    /// same however much noise the microphones draw).
    wander_rng: StdRng,
}

/// State of the latency random walk: it moves linearly from `from_ms` to `to_ms` over
/// the minute that starts at `t0_us`.
#[derive(Debug, Clone, Copy)]
struct Wander {
    t0_us: f64,
    from_ms: f64,
    to_ms: f64,
}

/// Extra noise at a microphone from room sample `from_k` to `until_k`.
struct Burst {
    from_k: i64,
    until_k: i64,
    rms: f32,
    source: NoiseSource,
}

/// Interval between the random walk's steps, µs (one minute).
const WANDER_STEP_US: f64 = 60e6;

struct RoomState {
    origin_us: i64,
    /// Next room sample to step.
    k: i64,
    emitted_start: i64,
    history: usize,
    devices: Vec<DeviceState>,
    truth: Vec<TruthSample>,
    rng: StdRng,
    scratch: Vec<f32>,
}

/// A shared handle to a virtual room.
#[derive(Clone)]
pub struct Room {
    inner: Arc<Mutex<RoomState>>,
}

/// Nominal level of a speaker at its own microphone, RMS (−20 dBFS).
const NOMINAL_RMS: f32 = 0.1;

impl Room {
    /// A room with `devices`, whose sample 0 is at room time `origin_us`. `seed`
    /// makes noise and reverberation repeatable.
    ///
    /// Errors: duplicate names, a `hears` entry naming an unknown device, or
    /// out-of-range values (negative latency or distance).
    pub fn new(devices: Vec<VirtualDevice>, origin_us: i64, seed: u64) -> Result<Self, RoomError> {
        let mut rng = StdRng::seed_from_u64(seed);
        let names: Vec<String> = devices.iter().map(|d| d.name.clone()).collect();
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(RoomError(format!("device '{n}' appears twice")));
            }
        }
        let mut states = Vec::new();
        let mut max_tap = 0usize;
        for d in &devices {
            if !(d.latency_ms.is_finite() && d.latency_ms >= 0.0) {
                return Err(RoomError(format!(
                    "device '{}': latency_ms must be ≥ 0",
                    d.name
                )));
            }
            if !(d.mic_distance_m.is_finite() && d.mic_distance_m >= 0.0) {
                return Err(RoomError(format!(
                    "device '{}': mic_distance_m must be ≥ 0",
                    d.name
                )));
            }
            let own_ir = match &d.rir {
                Some(ir) => ir.clone(),
                None => ImpulseResponse::synthetic(
                    d.mic_distance_m,
                    d.rt60_s,
                    STREAM_SAMPLE_RATE,
                    rng.random(),
                ),
            };
            let mut paths = vec![Path {
                source: 0,
                taps: own_ir.taps(1.0),
            }];
            paths[0].source = names.iter().position(|n| n == &d.name).unwrap();
            for h in &d.hears {
                let src = names.iter().position(|n| n == &h.device).ok_or_else(|| {
                    RoomError(format!(
                        "device '{}' hears unknown device '{}'",
                        d.name, h.device
                    ))
                })?;
                if !(h.distance_m.is_finite() && h.distance_m >= 0.0) {
                    return Err(RoomError(format!(
                        "device '{}': distance_m to '{}' must be ≥ 0",
                        d.name, h.device
                    )));
                }
                // A faint path's tail is far below its own speaker's: a quarter of the taps.
                let ir = ImpulseResponse::synthetic_with_density(
                    h.distance_m,
                    d.rt60_s.max(0.0),
                    STREAM_SAMPLE_RATE,
                    rng.random(),
                    rir::TAIL_TAPS_PER_S / 4.0,
                );
                let gain = 10f64.powf(h.gain_db / 20.0) as f32;
                paths.push(Path {
                    source: src,
                    taps: ir.taps(gain),
                });
            }
            for p in &paths {
                max_tap = max_tap.max(p.taps.iter().map(|t| t.0).max().unwrap_or(0));
            }
            let noise_rms = NOMINAL_RMS * 10f64.powf(-d.snr_db / 20.0) as f32;
            states.push(DeviceState {
                latency_samples: d.latency_ms * STREAM_SAMPLE_RATE as f64 / 1000.0,
                cfg: d.clone(),
                render: None,
                capture: None,
                emitted: VecDeque::new(),
                paths,
                noise_rms,
                render_buf: vec![0.0; BLOCK_FRAMES * STREAM_CHANNELS as usize],
                mic_buf: vec![0.0; BLOCK_FRAMES],
                dac_next: None,
                adc_next: None,
                mic_enabled: true,
                output_gain: 1.0,
                bursts: Vec::new(),
                wander_rng: StdRng::seed_from_u64(
                    seed ^ 0x5745_4E44_4552_0000 ^ (states.len() as u64).wrapping_mul(0x9E37_79B9),
                ),
                wander: Wander {
                    t0_us: origin_us as f64,
                    from_ms: d.latency_ms,
                    to_ms: d.latency_ms,
                },
            });
        }
        let history = max_tap + 4 * BLOCK_FRAMES;
        Ok(Self {
            inner: Arc::new(Mutex::new(RoomState {
                origin_us,
                k: 0,
                emitted_start: -(history as i64),
                history,
                devices: states,
                truth: Vec::new(),
                rng,
                scratch: Vec::new(),
            })),
        })
    }

    /// Names of the devices, in index order.
    pub fn device_names(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap()
            .devices
            .iter()
            .map(|d| d.cfg.name.clone())
            .collect()
    }

    /// Room time of the next step, µs.
    pub fn now_us(&self) -> i64 {
        let s = self.inner.lock().unwrap();
        s.origin_us + samples_to_us(s.k, STREAM_SAMPLE_RATE)
    }

    /// The sink of device `name`.
    pub fn sink(&self, name: &str) -> Result<Box<dyn Sink>, RoomError> {
        let index = self.index_of(name)?;
        Ok(Box::new(RoomSink {
            room: self.clone(),
            index,
        }))
    }

    /// The microphone of device `name`.
    pub fn microphone(&self, name: &str) -> Result<Box<dyn Microphone>, RoomError> {
        let index = self.index_of(name)?;
        Ok(Box::new(RoomMicrophone {
            room: self.clone(),
            index,
        }))
    }

    fn index_of(&self, name: &str) -> Result<usize, RoomError> {
        self.inner
            .lock()
            .unwrap()
            .devices
            .iter()
            .position(|d| d.cfg.name == name)
            .ok_or_else(|| RoomError(format!("no virtual device called '{name}'")))
    }

    /// Switches the microphone of device `index` on or off without removing its capture
    /// function: while off, nothing is recorded or computed for it (its next block
    /// starts afresh).
    pub fn set_microphone_enabled(&self, index: usize, enabled: bool) {
        if let Some(d) = self.inner.lock().unwrap().devices.get_mut(index) {
            d.mic_enabled = enabled;
        }
    }

    /// Steps device `index`'s true output latency to `latency_ms` now (a picture-mode
    /// change, a Bluetooth reconnect); any wander goes on from there.
    pub fn set_latency_ms(&self, index: usize, latency_ms: f64) {
        let mut s = self.inner.lock().unwrap();
        let now = s.room_us(s.k);
        if let Some(d) = s.devices.get_mut(index) {
            let ms = latency_ms.max(0.0);
            d.wander = Wander {
                t0_us: now,
                from_ms: ms,
                to_ms: ms,
            };
            d.latency_samples = ms * STREAM_SAMPLE_RATE as f64 / 1000.0;
        }
    }

    /// Sets device `index`'s acoustic output level to `gain_db` relative to its nominal
    /// level (what its own and other microphones hear; the room noise stays).
    pub fn set_output_gain_db(&self, index: usize, gain_db: f64) {
        if let Some(d) = self.inner.lock().unwrap().devices.get_mut(index) {
            d.output_gain = 10f64.powf(gain_db / 20.0) as f32;
        }
    }

    /// Adds noise of `kind` at device `index`'s microphone from room time `from_us` to
    /// `until_us`, at `snr_db` below the device's nominal level there (−20 dBFS).
    pub fn add_noise_burst(
        &self,
        index: usize,
        kind: NoiseKind,
        snr_db: f64,
        from_us: i64,
        until_us: i64,
        seed: u64,
    ) {
        let mut s = self.inner.lock().unwrap();
        let to_k = |us: i64| us_to_samples_i64(us - s.origin_us);
        let (from_k, until_k) = (to_k(from_us), to_k(until_us));
        if let Some(d) = s.devices.get_mut(index) {
            d.bursts.push(Burst {
                from_k,
                until_k,
                rms: NOMINAL_RMS * 10f64.powf(-snr_db / 20.0) as f32,
                source: NoiseSource::new(kind, seed),
            });
        }
    }

    /// Device `index`'s clock.
    pub fn clock(&self, index: usize) -> ClockModel {
        self.inner
            .lock()
            .unwrap()
            .devices
            .get(index)
            .map_or_else(ClockModel::default, |d| d.cfg.clock)
    }

    /// Changes device `index`'s crystal to run `ppm` off from now on, keeping its local
    /// time continuous (a temperature change); returns the new clock.
    pub fn set_clock_ppm(&self, index: usize, ppm: f64) -> ClockModel {
        let mut s = self.inner.lock().unwrap();
        let now = s.room_us(s.k);
        let Some(d) = s.devices.get_mut(index) else {
            return ClockModel::default();
        };
        let local_now = d.cfg.clock.local_from_room(now);
        let new = ClockModel {
            ppm,
            offset_us: local_now - now * (1.0 + ppm * 1e-6),
        };
        d.cfg.clock = new;
        new
    }

    /// Takes the ground truth recorded since the last call.
    pub fn drain_truth(&self) -> Vec<TruthSample> {
        std::mem::take(&mut self.inner.lock().unwrap().truth)
    }

    /// The true latency of device `index` now, ms (it wanders for some devices).
    pub fn true_latency_ms(&self, index: usize) -> f64 {
        let s = self.inner.lock().unwrap();
        s.devices[index].latency_samples * 1000.0 / STREAM_SAMPLE_RATE as f64
    }

    /// Advances the room by one block (see the module docs).
    pub fn step(&self) {
        let mut s = self.inner.lock().unwrap();
        s.step();
    }
}

/// Room samples in `us` µs (rounded).
fn us_to_samples_i64(us: i64) -> i64 {
    syncstream_shared::time::us_to_samples(us, STREAM_SAMPLE_RATE)
}

impl RoomState {
    fn room_us(&self, k: i64) -> f64 {
        self.origin_us as f64 + k as f64 * 1e6 / STREAM_SAMPLE_RATE as f64
    }

    /// Room position (fractional room sample index) of device-local time `local_us`.
    fn room_pos(&self, clock: &ClockModel, local_us: f64) -> f64 {
        (clock.room_from_local(local_us) - self.origin_us as f64) * STREAM_SAMPLE_RATE as f64 / 1e6
    }

    fn step(&mut self) {
        let k = self.k;
        let b = BLOCK_FRAMES as i64;
        let room_us_k = self.room_us(k);
        let room_us_next = self.room_us(k + b);
        let ch = STREAM_CHANNELS as usize;
        let fs = STREAM_SAMPLE_RATE as f64;
        // Latency wander: a random walk with one step of σ per minute, followed linearly.
        for d in 0..self.devices.len() {
            let sigma = self.devices[d].cfg.latency_wander_ms_per_min;
            if sigma > 0.0 {
                let dev = &mut self.devices[d];
                while room_us_k >= dev.wander.t0_us + WANDER_STEP_US {
                    dev.wander.t0_us += WANDER_STEP_US;
                    dev.wander.from_ms = dev.wander.to_ms;
                    let n: f64 = Normal::new(0.0, sigma)
                        .map(|n| n.sample(&mut dev.wander_rng))
                        .unwrap_or(0.0);
                    dev.wander.to_ms = (dev.wander.from_ms + n).max(0.0);
                }
                let w = &dev.wander;
                let lat_ms =
                    w.from_ms + (w.to_ms - w.from_ms) * (room_us_k - w.t0_us) / WANDER_STEP_US;
                dev.latency_samples = lat_ms * fs / 1000.0;
            }
        }
        // Make room in every emission history for [.., k + b + latency + slack).
        for d in 0..self.devices.len() {
            let needed_end = k + 2 * b + self.devices[d].latency_samples.ceil() as i64 + 2;
            let dev = &mut self.devices[d];
            let end = self.emitted_start + dev.emitted.len() as i64;
            for _ in end..needed_end {
                dev.emitted.push_back(0.0);
            }
        }
        // 1. Render and emit. Each device's DAC runs on its own clock: it plays the local
        // sample instants that fall in this block's room interval.
        for d in 0..self.devices.len() {
            let clock = self.devices[d].cfg.clock;
            let local_end = clock.local_from_room(room_us_next) * fs / 1e6;
            let dev = &mut self.devices[d];
            if dev.render.is_none() {
                dev.dac_next = None;
                continue;
            }
            let first = dev
                .dac_next
                .unwrap_or_else(|| (clock.local_from_room(room_us_k) * fs / 1e6).ceil() as i64);
            let n = (local_end.ceil() as i64 - first).clamp(0, 2 * b) as usize;
            dev.dac_next = Some(first + n as i64);
            dev.render_buf.resize(n * ch, 0.0);
            dev.render_buf.fill(0.0);
            let dac_us = first as f64 * 1e6 / fs;
            let render = dev.render.as_mut().expect("checked above");
            let info = render(&mut dev.render_buf, dac_us.round() as i64);
            let lat = dev.latency_samples;
            let pos0 = (clock.room_from_local(dac_us) - self.origin_us as f64) * fs / 1e6 + lat;
            let step = 1.0 / (1.0 + clock.ppm * 1e-6);
            for i in 0..n {
                let mono: f32 = dev.render_buf[i * ch..(i + 1) * ch].iter().sum::<f32>()
                    / ch as f32
                    * dev.output_gain;
                // Linear spreading onto the two nearest room samples (fractional delay).
                let pos = pos0 + i as f64 * step;
                let p0 = pos.floor();
                let frac = (pos - p0) as f32;
                let i0 = p0 as i64 - self.emitted_start;
                if i0 < 0 {
                    continue;
                }
                if let Some(x) = dev.emitted.get_mut(i0 as usize) {
                    *x += mono * (1.0 - frac);
                }
                if let Some(x) = dev.emitted.get_mut(i0 as usize + 1) {
                    *x += mono * frac;
                }
            }
            if let Some(pts) = info.source_pts_us {
                self.truth.push(TruthSample {
                    device: d,
                    block_room_us: room_us_k,
                    emit_room_us: self.origin_us as f64 + pos0 * 1e6 / fs,
                    source_pts_us: pts,
                });
            }
        }
        // 2. Record: each microphone samples the room at its own clock's instants.
        for d in 0..self.devices.len() {
            let clock = self.devices[d].cfg.clock;
            if self.devices[d].capture.is_none() || !self.devices[d].mic_enabled {
                self.devices[d].adc_next = None;
                continue;
            }
            let local_end = clock.local_from_room(room_us_next) * fs / 1e6;
            let first = self.devices[d]
                .adc_next
                .unwrap_or_else(|| (clock.local_from_room(room_us_k) * fs / 1e6).ceil() as i64);
            let n = (local_end.ceil() as i64 - first).clamp(0, 2 * b) as usize;
            self.devices[d].adc_next = Some(first + n as i64);
            let adc_us = first as f64 * 1e6 / fs;
            let pos0 = self.room_pos(&clock, adc_us);
            let step = 1.0 / (1.0 + clock.ppm * 1e-6);
            let mut mic = std::mem::take(&mut self.devices[d].mic_buf);
            mic.clear();
            mic.resize(n, 0.0);
            // Every tap delay is a whole number of room samples, so the sum over taps is
            // taken at whole positions `p_lo + k` first (contiguous multiply-adds), and the
            // microphone's own sampling instants are interpolated from it once.
            let base = pos0 - self.emitted_start as f64;
            let p_lo = base.floor() as i64;
            let p_hi = (base + n.saturating_sub(1) as f64 * step).floor() as i64 + 1;
            let len = (p_hi - p_lo + 1).max(0) as usize;
            let mut y = std::mem::take(&mut self.scratch);
            y.clear();
            y.resize(len, 0.0);
            for p in &self.devices[d].paths {
                let src = self.devices[p.source].emitted.as_slices();
                for &(delay, gain) in &p.taps {
                    // y[k] += gain · emitted[p_lo − delay + k]
                    let from = p_lo - delay as i64;
                    let (lo, hi) = (from.max(0), (from + len as i64).max(0));
                    let skip = (lo - from) as usize;
                    mac_range(&mut y[skip.min(len)..], src, lo as usize, hi as usize, gain);
                }
            }
            for (i, m) in mic.iter_mut().enumerate() {
                let q = base + i as f64 * step - p_lo as f64;
                let q0 = q.floor().max(0.0) as usize;
                let frac = (q - q0 as f64) as f32;
                let a = y.get(q0).copied().unwrap_or(0.0);
                let c = y.get(q0 + 1).copied().unwrap_or(a);
                *m = a + (c - a) * frac;
            }
            self.scratch = y;
            // Noise bursts, over the room samples this block covers.
            let k_first = pos0.floor() as i64;
            for burst in &mut self.devices[d].bursts {
                if burst.until_k <= k_first || burst.from_k > k_first + n as i64 {
                    continue;
                }
                for (i, m) in mic.iter_mut().enumerate() {
                    let k = k_first + i as i64;
                    if (burst.from_k..burst.until_k).contains(&k) {
                        *m += burst.rms * burst.source.next_sample();
                    }
                }
            }
            self.devices[d]
                .bursts
                .retain(|b| b.until_k > k_first + n as i64);
            let noise_rms = self.devices[d].noise_rms;
            if noise_rms > 0.0 {
                let normal = Normal::new(0.0f32, noise_rms).expect("finite noise level");
                for m in mic.iter_mut() {
                    *m += normal.sample(&mut self.rng);
                }
            }
            let dev = &mut self.devices[d];
            if let Some(cap) = dev.capture.as_mut() {
                cap(&mic, adc_us.round() as i64);
            }
            dev.mic_buf = mic;
        }
        // Drop history no path can reach any more.
        self.k += b;
        let keep_from = self.k - self.history as i64;
        if keep_from > self.emitted_start {
            let drop = (keep_from - self.emitted_start) as usize;
            for dev in &mut self.devices {
                let n = drop.min(dev.emitted.len());
                dev.emitted.drain(..n);
            }
            self.emitted_start = keep_from;
        }
    }
}

/// `y[i] += gain · x[lo + i]` for `lo + i < hi`, where `x` is a ring buffer's two
/// slices (as `VecDeque::as_slices` gives them).
fn mac_range(y: &mut [f32], x: (&[f32], &[f32]), lo: usize, hi: usize, gain: f32) {
    let (a, b) = x;
    let hi = hi.min(a.len() + b.len()).min(lo + y.len());
    if lo >= hi {
        return;
    }
    let mut out = &mut y[..hi - lo];
    if lo < a.len() {
        let end = hi.min(a.len());
        let (head, tail) = out.split_at_mut(end - lo);
        for (o, v) in head.iter_mut().zip(&a[lo..end]) {
            *o += gain * v;
        }
        out = tail;
    }
    let start = lo.max(a.len()) - a.len();
    for (o, v) in out.iter_mut().zip(&b[start..]) {
        *o += gain * v;
    }
}

struct RoomSink {
    room: Room,
    index: usize,
}

impl Sink for RoomSink {
    fn start(&mut self, render: RenderFn) -> Result<(), AudioError> {
        self.room.inner.lock().unwrap().devices[self.index].render = Some(render);
        Ok(())
    }
    fn stop(&mut self) -> Result<(), AudioError> {
        self.room.inner.lock().unwrap().devices[self.index].render = None;
        Ok(())
    }
    fn format(&self) -> StreamFormat {
        StreamFormat {
            sample_rate: STREAM_SAMPLE_RATE,
            channels: STREAM_CHANNELS,
        }
    }
}

struct RoomMicrophone {
    room: Room,
    index: usize,
}

impl Microphone for RoomMicrophone {
    fn start(&mut self, capture: CaptureFn) -> Result<(), AudioError> {
        self.room.inner.lock().unwrap().devices[self.index].capture = Some(capture);
        Ok(())
    }
    fn stop(&mut self) -> Result<(), AudioError> {
        self.room.inner.lock().unwrap().devices[self.index].capture = None;
        Ok(())
    }
    fn sample_rate(&self) -> u32 {
        STREAM_SAMPLE_RATE
    }
}

/// Steps `room` in real time on `clock` from a background thread until the handle is
/// dropped. Room time follows the clock (the room's origin must be on that clock).
pub struct RealtimeRoom {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl RealtimeRoom {
    /// Starts stepping.
    pub fn start(room: Room, clock: Arc<dyn syncstream_shared::time::Clock>) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("virtual-room".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    let now = clock.now_us();
                    // Step every block whose start has been reached.
                    while room.now_us() <= now {
                        room.step();
                    }
                    let wait = room.now_us() - clock.now_us();
                    if wait > 0 {
                        std::thread::sleep(std::time::Duration::from_micros(wait as u64));
                    }
                }
            })
            .expect("spawn the virtual room thread");
        Self {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for RealtimeRoom {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstream_audio::RenderInfo;

    #[test]
    fn emission_is_delayed_by_the_true_latency() {
        let mut dev = VirtualDevice::new("a", 10.0);
        dev.snr_db = 200.0;
        let room = Room::new(vec![dev], 0, 1).unwrap();
        let mut sink = room.sink("a").unwrap();
        // An impulse at local DAC time 0.
        sink.start(Box::new(move |out: &mut [f32], dac_us: i64| {
            if dac_us == 0 {
                out[0] = 1.0;
                out[1] = 1.0;
            }
            RenderInfo {
                source_pts_us: Some(dac_us as f64),
            }
        }))
        .unwrap();
        let rec = Arc::new(Mutex::new(Vec::new()));
        let rec2 = rec.clone();
        let mut mic = room.microphone("a").unwrap();
        mic.start(Box::new(move |x: &[f32], _t| {
            rec2.lock().unwrap().extend_from_slice(x)
        }))
        .unwrap();
        for _ in 0..10 {
            room.step();
        }
        let rec = rec.lock().unwrap();
        let peak = rec
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap()
            .0;
        // 10 ms latency + 0.3 m / 343 m/s = 0.875 ms → 522 samples.
        assert!((peak as i64 - 522).abs() <= 1, "{peak}");
        let truth = room.drain_truth();
        assert!((truth[0].emit_room_us - 10_000.0).abs() < 1.0);
    }

    #[test]
    fn unknown_hearing_is_an_error() {
        let mut dev = VirtualDevice::new("a", 1.0);
        dev.hears.push(Hearing {
            device: "ghost".into(),
            gain_db: -10.0,
            distance_m: 2.0,
        });
        assert!(Room::new(vec![dev], 0, 1)
            .err()
            .unwrap()
            .to_string()
            .contains("ghost"));
    }
}
