//! The simulator: runs the production receiver core ([`ReceiverNode`] with its
//! real-time audio engine), the production pacer, rolling buffer, stream hello and
//! sync service on virtual time, with the virtual room as audio hardware and a
//! simulated network, faster than real time.
//!
//! The simulator supplies only what a real deployment gets from the world: virtual
//! time, a network (every message delayed by the scenario's model, in order per
//! connection), an MQTT broker ([`crate::broker::SimBroker`]), the transmitter's
//! answers to hellos and clock-sync requests (stamped with room time, which is
//! transmitter time), source windows from the rolling buffer, and the audio devices.
//! Everything else, from decoding the Opus stream and checking every frame to the drift
//! loop and the controller's decisions, is the code that runs on a Pi.
//!
//! Time advances in room blocks of 10 ms. In each block: the pacer's due chunks are
//! made and sent; the messages whose delivery time has come are delivered in time
//! order (each node is told the exact local time of each arrival, so clock-sync
//! exchanges are timed to the µs); every node is polled; microphones are switched on
//! only around measurements (a saving: nobody listens otherwise); the room renders and
//! records one block. The room's ground truth feeds the report.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use syncstream_audio::{Microphone, Sink};
use syncstream_protocol::codec::{AudioEncoder, CHUNK_FRAMES};
use syncstream_protocol::wire::Frame;
use syncstream_receiver::drift::DriftConfig;
use syncstream_receiver::node::{Job, NodeConfig, ReceiverIo, ReceiverNode, Window, WindowRequest};
use syncstream_receiver::realtime;
use syncstream_room::{ClockModel, Room, BLOCK_FRAMES};
use syncstream_shared::limits::OffsetLimits;
use syncstream_shared::time::{samples_to_us, STREAM_CHANNELS, STREAM_SAMPLE_RATE};
use syncstream_transmitter::controller::{ControllerConfig, SyncController};
use syncstream_transmitter::pacer::ChunkProducer;
use syncstream_transmitter::rolling_buffer::RollingBuffer;
use syncstream_transmitter::stream_server::{check_hello, server_hello, EncodedChunk};
use syncstream_transmitter::sync_service::SyncService;

use crate::broker::{ClientId, SimBroker};
use crate::network::{DelayModel, InOrder};
use crate::report::{build_report, DeviceFacts, Report, TruthLog};
use crate::scenario::Scenario;
use crate::source::looping_clip;

/// First measurement of device `i`: once the rolling buffer holds a window's source
/// (window + playout delay + the acquiring search margin), staggered by 300 ms per
/// device as real receivers start at different moments, ms.
const FIRST_MEASUREMENT_MS: u64 = 3_500;
const STAGGER_MS: u64 = 300;
/// Clock-sync errors are sampled from this time on, every this often, µs.
const CLOCK_ERROR_FROM_US: i64 = 10_000_000;
const CLOCK_ERROR_EVERY_US: i64 = 100_000;
/// The microphone is switched on this long before a measurement's window starts, µs.
const MIC_LEAD_US: i64 = 200_000;
/// The transmitter's time to answer a clock-sync request, µs.
const SERVER_HOLD_US: i64 = 20;
/// The broker id of the sync controller.
const CONTROLLER: ClientId = usize::MAX;
/// Seconds of source the transmitter keeps.
const BUFFER_SECONDS: f64 = 30.0;

/// What a node asked for (see [`ReceiverIo`]).
enum Effect {
    StreamSend(Frame),
    ClockSend(Frame),
    StreamReset(i64),
    Publish(String, Vec<u8>, bool),
    Fetch(WindowRequest),
    Job(Job),
}

/// A node's [`ReceiverIo`] in the simulator: collects what it asks for.
#[derive(Default)]
struct SimIo {
    effects: Vec<Effect>,
}

impl ReceiverIo for SimIo {
    fn stream_send(&mut self, frame: Frame) {
        self.effects.push(Effect::StreamSend(frame));
    }
    fn clock_send(&mut self, frame: Frame) {
        self.effects.push(Effect::ClockSend(frame));
    }
    fn stream_reset(&mut self, _reason: &str, retry_after_us: i64) {
        self.effects.push(Effect::StreamReset(retry_after_us));
    }
    fn publish(&mut self, topic: String, payload: Vec<u8>, retain: bool) {
        self.effects.push(Effect::Publish(topic, payload, retain));
    }
    fn fetch_window(&mut self, request: WindowRequest) {
        self.effects.push(Effect::Fetch(request));
    }
    fn run_job(&mut self, job: Job) {
        self.effects.push(Effect::Job(job));
    }
}

/// A message in flight.
enum Event {
    /// A stream frame for device `.0`.
    DeviceFrame(usize, Bytes),
    /// An MQTT message for device `.0`.
    DeviceMqtt(usize, String, Vec<u8>),
    /// A source window for device `.0`.
    DeviceWindow(usize, u64, Result<Window, String>),
    /// A clock-connection frame for device `.0`.
    DeviceClockFrame(usize, Bytes),
    /// A stream frame from device `.0` at the transmitter.
    TransmitterFrame(usize, Bytes),
    /// A clock-connection frame from device `.0` at the transmitter.
    TransmitterClockFrame(usize, Bytes),
    /// A publish reaching the broker.
    Broker(String, Vec<u8>, bool),
    /// Device `.0` (re)connects its stream.
    Connect(usize),
}

struct Queued {
    at_us: i64,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at_us, self.seq) == (o.at_us, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at_us, self.seq).cmp(&(o.at_us, o.seq))
    }
}

/// One simulated receiver.
struct SimDevice {
    node: ReceiverNode,
    io: SimIo,
    clock: ClockModel,
    _sink: Box<dyn Sink>,
    _mic: Box<dyn Microphone>,
    mic_on: bool,
    /// The stream connection is open (from the receiver's side).
    stream_open: bool,
    /// The transmitter has accepted its hello and streams to it.
    served: bool,
    /// Last chunk the transmitter sent it.
    last_sent: Option<u64>,
    up: InOrder,
    down: InOrder,
    clock_up: InOrder,
    clock_down: InOrder,
    mqtt_up: InOrder,
    mqtt_down: InOrder,
    clock_errors_us: Vec<f64>,
}

impl SimDevice {
    fn local(&self, room_us: i64) -> i64 {
        self.clock.local_from_room(room_us as f64).round() as i64
    }
}

/// The world around the receivers: transmitter, broker, network and the event queue.
struct World {
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    net: DelayModel,
    broker: SimBroker,
    service: SyncService,
    buffer: RollingBuffer,
    hello: Bytes,
    history: VecDeque<EncodedChunk>,
    history_len: usize,
}

impl World {
    fn push(&mut self, at_us: i64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at_us,
            seq: self.seq,
            event,
        }));
    }

    /// Sends a stream frame to device `i` from the transmitter at `at_us`.
    fn send_down(&mut self, dev: &mut SimDevice, i: usize, at_us: i64, frame: Bytes) {
        let d = self.net.draw_us();
        let when = dev.down.deliver_at(at_us, d);
        self.push(when, Event::DeviceFrame(i, frame));
    }
}

/// Progress callback: (simulated s, total s).
pub type Progress<'a> = &'a mut dyn FnMut(f64, f64);

/// Runs `scenario` and returns its report.
///
/// Errors: the audio file or an impulse response cannot be read, a device's name or
/// profile is refused, or the room refuses the devices.
pub fn run_scenario(sc: &Scenario, progress: Progress<'_>) -> anyhow::Result<Report> {
    let fs = STREAM_SAMPLE_RATE;
    let origin_us: i64 = 1_000_000_000;
    let epoch_us = origin_us;
    let playout_delay_us = sc.playout_delay_ms as i64 * 1000;
    // The transmitter's side: the production pacer, buffer, hello and sync service.
    let mut encoder = AudioEncoder::new(sc.codec, fs, STREAM_CHANNELS)?;
    let codec_delay = encoder.delay_samples()?;
    let mut producer = ChunkProducer::new(looping_clip(&sc.audio)?, encoder);
    let controller = Arc::new(Mutex::new(SyncController::new(ControllerConfig {
        limits: OffsetLimits::for_playout_delay_ms(sc.playout_delay_ms as f64),
        ..Default::default()
    })));
    let mut world = World {
        queue: BinaryHeap::new(),
        seq: 0,
        net: DelayModel::new(&sc.network, sc.seed),
        broker: SimBroker::default(),
        service: SyncService::new(controller, None),
        buffer: RollingBuffer::new(fs, BUFFER_SECONDS, epoch_us),
        hello: Bytes::from(
            server_hello(sc.codec, codec_delay, epoch_us, sc.playout_delay_ms).encode()?,
        ),
        history: VecDeque::new(),
        history_len: (sc.playout_delay_ms as usize * fs as usize / 1000) / CHUNK_FRAMES + 2,
    };
    world
        .broker
        .subscribe(CONTROLLER, &SyncService::subscriptions());
    // The room and the receivers.
    let (mut vdevs, profiles) = crate::room_setup::virtual_devices(sc)?;
    {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(sc.seed);
        for v in &mut vdevs {
            v.clock.offset_us = rng.random_range(-5e9..5e9);
        }
    }
    let room = Room::new(vdevs.clone(), origin_us, sc.seed)?;
    let mut devices: Vec<SimDevice> = Vec::new();
    for (i, d) in sc.devices.iter().enumerate() {
        let (renderer, capturer, control) = realtime::engine(profiles[i].base_latency_ms, fs);
        let mut sink = room.sink(&d.name)?;
        sink.start(renderer.into_render_fn())?;
        let mut mic = room.microphone(&d.name)?;
        mic.start(capturer.into_capture_fn())?;
        room.set_microphone_enabled(i, false);
        let clock = vdevs[i].clock;
        let drift = DriftConfig {
            first_after_ms: FIRST_MEASUREMENT_MS + i as u64 * STAGGER_MS,
            ..Default::default()
        };
        let node = ReceiverNode::new(
            NodeConfig {
                device: d.name.clone(),
                instance: i as u64 + 1,
                profile: profiles[i].clone(),
                drift,
                mic_rate_hz: fs,
            },
            control,
            clock.local_from_room(origin_us as f64).round() as i64,
        )
        .map_err(|e| anyhow::anyhow!("device {}: {e}", d.name))?;
        devices.push(SimDevice {
            node,
            io: SimIo::default(),
            clock,
            _sink: sink,
            _mic: mic,
            mic_on: false,
            stream_open: false,
            served: false,
            last_sent: None,
            up: InOrder::default(),
            down: InOrder::default(),
            clock_up: InOrder::default(),
            clock_down: InOrder::default(),
            mqtt_up: InOrder::default(),
            mqtt_down: InOrder::default(),
            clock_errors_us: Vec::new(),
        });
        world.push(origin_us, Event::Connect(i));
    }
    // MQTT connections.
    for i in 0..devices.len() {
        let subs = devices[i].node.mqtt_subscriptions();
        for (topic, payload) in world.broker.subscribe(i, &subs) {
            let d = world.net.draw_us();
            let at = devices[i].mqtt_down.deliver_at(origin_us, d);
            world.push(at, Event::DeviceMqtt(i, topic, payload));
        }
        let dev = &mut devices[i];
        let local = dev.local(origin_us);
        dev.node.on_mqtt_connected(local, &mut dev.io);
        settle(&mut world, &mut devices, i, origin_us);
    }
    let drift_window_us = DriftConfig::default().window_ms as i64 * 1000;
    let debug = std::env::var_os("SYNCSTREAM_SIM_DEBUG").is_some();
    let mut log = TruthLog::default();
    let end_us = origin_us + (sc.duration_s * 1e6) as i64;
    let mut last_progress = origin_us;
    let mut last_reports: Vec<u64> = vec![0; devices.len()];
    let mut t = origin_us;
    while t < end_us {
        // The pacer: chunks whose end is due.
        while producer.next_due_us(epoch_us) <= t {
            let Some(chunk) = producer.produce(&mut world.buffer) else {
                continue;
            };
            world.history.push_back(chunk.clone());
            while world.history.len() > world.history_len {
                world.history.pop_front();
            }
            for (i, dev) in devices.iter_mut().enumerate() {
                if dev.served {
                    dev.last_sent = Some(chunk.sample_index);
                    world.send_down(dev, i, t, chunk.frame.clone());
                }
            }
        }
        // Deliveries.
        while world.queue.peek().is_some_and(|q| q.0.at_us <= t) {
            let Some(Reverse(q)) = world.queue.pop() else {
                break;
            };
            deliver(&mut world, &mut devices, q.at_us, q.event);
        }
        // Every node's own timers; microphones around measurements.
        for i in 0..devices.len() {
            let local = devices[i].local(t);
            let dev = &mut devices[i];
            dev.node.poll(local, &mut dev.io);
            settle(&mut world, &mut devices, i, t);
            let dev = &mut devices[i];
            let want = dev.node.recording_tone()
                || local >= dev.node.next_measurement_us() - drift_window_us - MIC_LEAD_US;
            if want != dev.mic_on {
                room.set_microphone_enabled(i, want);
                dev.mic_on = want;
            }
            if debug {
                let n = dev.node.counters().reports;
                if n != last_reports[i] {
                    last_reports[i] = n;
                    if let Some(r) = dev.node.last_report() {
                        eprintln!(
                            "{:7.2} {} drift {:?} conf {:.2} applied {:.3} {:?}",
                            (t - origin_us) as f64 / 1e6,
                            dev.node.device(),
                            r.drift_ms,
                            r.confidence,
                            r.applied_offset_ms,
                            r.reason
                        );
                    }
                }
            }
        }
        room.step();
        t += samples_to_us(BLOCK_FRAMES as i64, fs);
        log.add(
            &room.drain_truth(),
            origin_us as f64,
            playout_delay_us as f64,
        );
        if t - origin_us >= CLOCK_ERROR_FROM_US && (t - origin_us) % CLOCK_ERROR_EVERY_US == 0 {
            for d in devices.iter_mut() {
                let local = d.clock.local_from_room(t as f64);
                if let Some(tx) = d.node.clock().tx_from_local(local) {
                    d.clock_errors_us.push(tx - t as f64);
                }
            }
        }
        if t - last_progress >= 10_000_000 {
            progress((t - origin_us) as f64 / 1e6, sc.duration_s);
            last_progress = t;
        }
    }
    let facts: Vec<DeviceFacts> = sc
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let dev = &mut devices[i];
            let snap = dev.node.snapshot();
            if debug {
                eprintln!(
                    "{}: clock rate {:.1} ppm (true {:.1}); {:?}",
                    d.name,
                    snap.clock_rate * 1e6,
                    -d.clock_ppm,
                    snap.counters
                );
            }
            DeviceFacts {
                name: d.name.clone(),
                output: profiles[i].output_type.as_str().to_string(),
                profile_latency_ms: profiles[i].base_latency_ms,
                true_latency_ms: room.true_latency_ms(i),
                final_offset_ms: dev.node.offset().offset_ms,
                underruns: snap.audio.underruns,
                jumps: snap.audio.jumps,
                offsets_applied: snap.counters.offsets_applied,
                clock_errors_us: std::mem::take(&mut dev.clock_errors_us),
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

/// The transmitter's answer to a clock-sync request that arrived at `t2_us` (room time
/// is transmitter time), sent [`SERVER_HOLD_US`] later.
fn time_answer(t1_us: i64, t2_us: i64) -> Bytes {
    let f = Frame::TimeResponse {
        t1_us,
        t2_us,
        t3_us: t2_us + SERVER_HOLD_US,
    };
    Bytes::from(f.encode().unwrap_or_default())
}

/// Delivers one event at room time `at_us`.
fn deliver(world: &mut World, devices: &mut [SimDevice], at_us: i64, event: Event) {
    match event {
        Event::DeviceFrame(i, bytes) => {
            let dev = &mut devices[i];
            if !dev.stream_open {
                return;
            }
            let local = dev.local(at_us);
            dev.node.on_stream_frame(&bytes, local, &mut dev.io);
            settle(world, devices, i, at_us);
        }
        Event::DeviceMqtt(i, topic, payload) => {
            let dev = &mut devices[i];
            let local = dev.local(at_us);
            dev.node
                .on_mqtt_message(&topic, &payload, local, &mut dev.io);
            settle(world, devices, i, at_us);
        }
        Event::DeviceWindow(i, id, result) => {
            let dev = &mut devices[i];
            let local = dev.local(at_us);
            dev.node.on_window(id, result, local, &mut dev.io);
            settle(world, devices, i, at_us);
        }
        Event::TransmitterFrame(i, bytes) => {
            let dev = &mut devices[i];
            if !dev.stream_open {
                return;
            }
            match Frame::decode(&bytes) {
                Ok(Frame::TimeRequest { t1_us }) if dev.served => {
                    let answer = time_answer(t1_us, at_us);
                    world.send_down(dev, i, at_us + SERVER_HOLD_US, answer);
                }
                Ok(hello @ Frame::ClientHello { .. }) => match check_hello(&hello) {
                    Ok(_) => {
                        dev.served = true;
                        let h = world.hello.clone();
                        world.send_down(dev, i, at_us, h);
                        let backlog: Vec<EncodedChunk> = world.history.iter().cloned().collect();
                        for c in backlog {
                            dev.last_sent = Some(c.sample_index);
                            world.send_down(dev, i, at_us, c.frame);
                        }
                    }
                    Err(reason) => {
                        if let Ok(b) = (Frame::Refused { reason }).encode() {
                            world.send_down(dev, i, at_us, Bytes::from(b));
                        }
                    }
                },
                _ => {}
            }
        }
        Event::DeviceClockFrame(i, bytes) => {
            let dev = &mut devices[i];
            if dev.stream_open {
                let local = dev.local(at_us);
                dev.node.on_clock_frame(&bytes, local);
            }
        }
        Event::TransmitterClockFrame(i, bytes) => {
            let dev = &mut devices[i];
            if let Ok(Frame::TimeRequest { t1_us }) = Frame::decode(&bytes) {
                let answer = time_answer(t1_us, at_us);
                let d = world.net.draw_us();
                let when = dev.clock_down.deliver_at(at_us + SERVER_HOLD_US, d);
                world.push(when, Event::DeviceClockFrame(i, answer));
            }
        }
        Event::Broker(topic, payload, retain) => {
            for client in world.broker.publish(&topic, &payload, retain) {
                if client == CONTROLLER {
                    for out in world.service.on_message(&topic, &payload, at_us) {
                        world.push(at_us, Event::Broker(out.topic, out.payload, out.retain));
                    }
                } else if let Some(dev) = devices.get_mut(client) {
                    let d = world.net.draw_us();
                    let when = dev.mqtt_down.deliver_at(at_us, d);
                    world.push(
                        when,
                        Event::DeviceMqtt(client, topic.clone(), payload.clone()),
                    );
                }
            }
        }
        Event::Connect(i) => {
            let dev = &mut devices[i];
            dev.stream_open = true;
            dev.served = false;
            dev.up = InOrder::default();
            let local = dev.local(at_us);
            dev.node.on_stream_connected(local, &mut dev.io);
            settle(world, devices, i, at_us);
        }
    }
}

/// Carries out what device `i`'s node asked for at room time `at_us`, until it asks
/// for nothing more (a job's result may ask for a publish).
fn settle(world: &mut World, devices: &mut [SimDevice], i: usize, at_us: i64) {
    loop {
        let effects = std::mem::take(&mut devices[i].io.effects);
        if effects.is_empty() {
            return;
        }
        for e in effects {
            let dev = &mut devices[i];
            match e {
                Effect::StreamSend(frame) => {
                    if !dev.stream_open {
                        continue;
                    }
                    if let Ok(b) = frame.encode() {
                        let d = world.net.draw_us();
                        let when = dev.up.deliver_at(at_us, d);
                        world.push(when, Event::TransmitterFrame(i, Bytes::from(b)));
                    }
                }
                Effect::ClockSend(frame) => {
                    if !dev.stream_open {
                        continue;
                    }
                    if let Ok(b) = frame.encode() {
                        let d = world.net.draw_us();
                        let when = dev.clock_up.deliver_at(at_us, d);
                        world.push(when, Event::TransmitterClockFrame(i, Bytes::from(b)));
                    }
                }
                Effect::StreamReset(retry_after_us) => {
                    dev.stream_open = false;
                    dev.served = false;
                    let local = dev.local(at_us);
                    dev.node.on_stream_closed(local, "reset", &mut dev.io);
                    world.push(at_us + retry_after_us.max(200_000), Event::Connect(i));
                }
                Effect::Publish(topic, payload, retain) => {
                    let d = world.net.draw_us();
                    let when = dev.mqtt_up.deliver_at(at_us, d);
                    world.push(when, Event::Broker(topic, payload, retain));
                }
                Effect::Fetch(r) => {
                    let result = world
                        .buffer
                        .window(r.start_us, r.duration_ms)
                        .map(|(first_pts_us, samples)| Window {
                            first_pts_us,
                            samples,
                        })
                        .map_err(|e| e.to_string());
                    let when = at_us + world.net.draw_us() + world.net.draw_us();
                    world.push(when, Event::DeviceWindow(i, r.id, result));
                }
                Effect::Job(job) => {
                    let done = job.run();
                    let local = dev.local(at_us);
                    dev.node.on_job_done(done, local, &mut dev.io);
                }
            }
        }
    }
}
