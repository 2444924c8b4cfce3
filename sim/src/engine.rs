//! The simulator: runs the production receiver core ([`ReceiverNode`] with its
//! real-time audio engine), the production pacer, rolling buffer, stream hello and
//! sync service on virtual time, with the virtual room as audio hardware and a
//! simulated network, faster than real time.
//!
//! The simulator supplies only what a real deployment gets from the world: virtual
//! time, a network (every message delayed by the scenario's model, in order per
//! connection, held while the network is cut), an MQTT broker
//! ([`crate::broker::SimBroker`]), the transmitter's answers to hellos and clock-sync
//! requests (stamped with room time, which is transmitter time), source windows from
//! the rolling buffer, connection handling as the real transports do it (a stream
//! silent for 3 s is dropped and reconnected with the receivers' backoff), and the
//! audio devices. Everything else, from decoding the Opus stream and checking every
//! frame to the drift loop and the controller's decisions, is the code that runs on a
//! Pi.
//!
//! Time advances in room blocks of 10 ms. In each block: due scenario events happen
//! ([`crate::events`]); the pacer's due chunks are made and sent; the messages whose
//! delivery time has come are delivered in time order (each node is told the exact
//! local time of each arrival, so clock-sync exchanges are timed to the µs); every
//! node is polled; microphones are switched on only around measurements (a saving:
//! nobody listens otherwise); the room renders and records one block. The room's
//! ground truth feeds the report.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use syncstream_audio::{Microphone, Sink};
use syncstream_protocol::auth::{Nonce, PairingKey, StreamAuth};
use syncstream_protocol::codec::AudioEncoder;
use syncstream_protocol::messages::topics;
use syncstream_protocol::wire::Frame;
use syncstream_receiver::drift::DriftConfig;
use syncstream_receiver::node::{
    Job, NodeConfig, PersistedState, ReceiverIo, ReceiverNode, Window, WindowRequest,
};
use syncstream_receiver::realtime;
use syncstream_receiver::runtime::{
    RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN, STREAM_READ_TIMEOUT,
};
use syncstream_room::{ClockModel, Room, BLOCK_FRAMES};
use syncstream_shared::profile::DeviceProfile;
use syncstream_shared::time::{samples_to_us, STREAM_CHANNELS, STREAM_SAMPLE_RATE};
use syncstream_transmitter::controller::{ControllerConfig, SyncController};
use syncstream_transmitter::pacer::ChunkProducer;
use syncstream_transmitter::playout_delay::PlayoutDelay;
use syncstream_transmitter::rolling_buffer::RollingBuffer;
use syncstream_transmitter::stream_server::{
    check_hello, chunks_for_ms, server_hello, EncodedChunk, Hello,
};
use syncstream_transmitter::sync_service::SyncService;

use crate::broker::{ClientId, SimBroker};
use crate::evening::{EveningLog, Sample};
use crate::events::EventAction;
use crate::network::{DelayModel, InOrder};
use crate::report::{build_report, DeviceFacts, Report, TruthLog};
use crate::scenario::Scenario;
use crate::source::{looping_clip, SilenceSwitch};

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
/// A restarting receiver is gone this long before it starts again, µs.
pub const RECEIVER_RESTART_US: i64 = 1_000_000;
/// A restarting transmitter (and its embedded broker) is gone this long, µs.
pub const TRANSMITTER_RESTART_US: i64 = 2_000_000;
/// How long a TCP connect may wait for a network that is cut, µs.
const CONNECT_TIMEOUT_US: i64 = 5_000_000;
/// How long an HTTP request may take before it fails, µs.
const HTTP_TIMEOUT_US: i64 = 5_000_000;
/// The MQTT client's reconnection backoff: 0.2 s doubling to 5 s
/// (`syncstream_protocol::mqtt::drive`), µs.
const MQTT_BACKOFF_MIN_US: i64 = 200_000;
const MQTT_BACKOFF_MAX_US: i64 = 5_000_000;

/// What a node asked for (see [`ReceiverIo`]).
enum Effect {
    StreamSend(Frame),
    ClockSend(Frame),
    StreamReset(i64),
    Publish(String, Vec<u8>, bool),
    Fetch(WindowRequest),
    Job(Box<Job>),
}

/// A node's [`ReceiverIo`] in the simulator: collects what it asks for.
#[derive(Default)]
struct SimIo {
    effects: Vec<Effect>,
    /// What the node persisted (survives a simulated restart).
    persisted: Option<PersistedState>,
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
        self.effects.push(Effect::Job(Box::new(job)));
    }
    fn persist(&mut self, state: &PersistedState) {
        self.persisted = Some(*state);
    }
}

/// A message in flight, or something due.
enum Event {
    /// A stream frame for device `.0` on its connection `.1`.
    DeviceFrame(usize, u64, Bytes),
    /// A clock-connection frame for device `.0` on its connection `.1`.
    DeviceClockFrame(usize, u64, Bytes),
    /// An MQTT message for device `.0` on its MQTT session `.1`.
    DeviceMqtt(usize, u64, String, Vec<u8>),
    /// A source window for device `.0` (its node `.1`).
    DeviceWindow(usize, u64, u64, Result<Window, String>),
    /// A stream frame from device `.0` (connection `.1`) at the transmitter.
    TransmitterFrame(usize, u64, Bytes),
    /// A clock-connection frame from device `.0` (connection `.1`) at the transmitter.
    TransmitterClockFrame(usize, u64, Bytes),
    /// A publish reaching the broker (while it runs: `.3` is its run).
    Broker(String, Vec<u8>, bool, u64),
    /// Device `.0` tries to connect its stream.
    Connect(usize),
    /// Device `.0` tries to connect to the broker.
    MqttConnect(usize),
    /// Device `.0` starts again after a restart.
    ReceiverBack(usize),
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
    name: String,
    profile: DeviceProfile,
    drift: DriftConfig,
    /// `None` while the receiver process is restarting.
    node: Option<ReceiverNode>,
    /// Incremented at every (re)start, so answers to a dead process are dropped.
    incarnation: u64,
    io: SimIo,
    clock: ClockModel,
    sink: Box<dyn Sink>,
    mic: Box<dyn Microphone>,
    mic_on: bool,
    /// The stream connection is open (from the receiver's side), and its number.
    stream_open: bool,
    connection: u64,
    /// A connection attempt is pending (a Connect event is queued).
    connecting: bool,
    backoff_us: i64,
    /// The transmitter has accepted its hello and streams to it.
    served: bool,
    /// The hello the transmitter challenged and its server nonce, until the
    /// receiver's answer passes.
    handshake: Option<(Hello, Nonce)>,
    /// Room time of the last frame that reached it on the stream connection.
    last_frame_us: i64,
    up: InOrder,
    down: InOrder,
    clock_up: InOrder,
    clock_down: InOrder,
    /// MQTT session number (0: not connected), and when it reconnects.
    mqtt_session: u64,
    mqtt_up: InOrder,
    mqtt_down: InOrder,
    /// Publishes made while MQTT was down (sent after the reconnect, as rumqttc does).
    mqtt_queue: Vec<(String, Vec<u8>, bool)>,
    clock_errors_us: Vec<f64>,
    /// Reports, underruns, jumps and offsets of earlier incarnations.
    past: (u64, u64, u64, u64),
}

impl SimDevice {
    fn local(&self, room_us: i64) -> i64 {
        self.clock.local_from_room(room_us as f64).round() as i64
    }

    fn totals(&self) -> (u64, u64, u64, u64) {
        let (r, u, j, o) = self.past;
        match &self.node {
            Some(n) => {
                let s = n.snapshot();
                (
                    r + s.counters.reports,
                    u + s.audio.underruns,
                    j + s.audio.jumps,
                    o + s.counters.offsets_applied,
                )
            }
            None => self.past,
        }
    }
}

/// The world around the receivers: transmitter, broker, network and the event queue.
struct World {
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    net: DelayModel,
    broker: SimBroker,
    broker_run: u64,
    service: SyncService,
    buffer: RollingBuffer,
    epoch_us: i64,
    codec_delay: u32,
    codec: syncstream_protocol::wire::Codec,
    /// The transmitter's playout delay (the production one: it grows when a receiver
    /// or the controller asks).
    playout: Arc<PlayoutDelay>,
    /// The delay the receivers were last sent a hello with, ms.
    announced_ms: u32,
    history: VecDeque<EncodedChunk>,
    history_len: usize,
    /// The transmitter is down (restarting) until this room time.
    tx_down_until: Option<i64>,
    /// Network cuts: (from, until, device or all).
    outages: Vec<(i64, i64, Option<usize>)>,
    /// Controller counters (used, ignored, outliers, steps) of runs before a restart.
    past_counts: std::collections::BTreeMap<String, crate::evening::ReportCounts>,
    /// What the controller last kept (its state file).
    persisted: syncstream_transmitter::controller::PersistedState,
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

    /// The end of the network cut device `i` is in at room time `t`, if any.
    fn cut_until(&self, i: usize, t: i64) -> Option<i64> {
        self.outages
            .iter()
            .filter(|(from, until, d)| (*from..*until).contains(&t) && d.is_none_or(|d| d == i))
            .map(|&(_, until, _)| until)
            .max()
    }

    /// When a message of device `i` sent at `sent_us` arrives on a connection with
    /// order `lane`: delayed by the model, held while the network is cut.
    fn arrival(&mut self, i: usize, sent_us: i64, lane: &mut InOrder) -> i64 {
        let sent = self.cut_until(i, sent_us).unwrap_or(sent_us);
        let d = self.net.draw_us();
        let mut at = lane.deliver_at(sent, d);
        if let Some(until) = self.cut_until(i, at) {
            at = lane.deliver_at(until, d);
        }
        at
    }

    fn tx_up(&self, t: i64) -> bool {
        self.tx_down_until.is_none_or(|u| t >= u)
    }

    /// The transmitter's hello now (its epoch and playout delay).
    fn hello(&self) -> anyhow::Result<Bytes> {
        Ok(Bytes::from(
            server_hello(
                self.codec,
                self.codec_delay,
                self.epoch_us,
                self.playout.current_ms(),
            )
            .encode()?,
        ))
    }

    /// The recent chunks a receiver that joins gets: those of the delay in effect.
    fn backlog(&self) -> Vec<EncodedChunk> {
        let want = chunks_for_ms(self.playout.current_ms());
        let skip = self.history.len().saturating_sub(want);
        self.history.iter().skip(skip).cloned().collect()
    }
}

/// The simulated system's pairing key: the transmitter's handshake and the nodes'
/// are the production ones ([`StreamAuth`]), under one fixed key.
fn sim_key() -> PairingKey {
    // 64 hex digits: always a key.
    PairingKey::parse(&"51".repeat(32)).expect("a valid key")
}

/// The playout delay grew: every served receiver gets a new hello and the backlog of
/// the new delay, as each stream connection of the real transmitter sends them.
fn announce_playout_delay(
    world: &mut World,
    devices: &mut [SimDevice],
    t: i64,
) -> anyhow::Result<()> {
    let now_ms = world.playout.current_ms();
    if now_ms == world.announced_ms || !world.tx_up(t) {
        return Ok(());
    }
    world.announced_ms = now_ms;
    for (i, dev) in devices.iter_mut().enumerate() {
        if dev.served && dev.stream_open {
            send_hello_and_backlog(world, i, dev, t)?;
        }
    }
    Ok(())
}

/// Sends device `i` on its connection, at `t`, the transmitter's hello and the recent
/// chunks of the delay in effect (as a stream connection does after a hello or a
/// growth of the delay).
fn send_hello_and_backlog(
    world: &mut World,
    i: usize,
    dev: &mut SimDevice,
    t: i64,
) -> anyhow::Result<()> {
    let c = dev.connection;
    let hello = world.hello()?;
    let at = world.arrival(i, t, &mut dev.down);
    world.push(at, Event::DeviceFrame(i, c, hello));
    for chunk in world.backlog() {
        let at = world.arrival(i, t, &mut dev.down);
        world.push(at, Event::DeviceFrame(i, c, chunk.frame));
    }
    Ok(())
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
    let playout = Arc::new(PlayoutDelay::new(sc.playout_delay_ms, sc.growth_limit_ms()));
    let events = sc.event_actions().map_err(anyhow::Error::msg)?;
    // The transmitter's side: the production pacer, buffer, hello and sync service.
    let mut encoder = AudioEncoder::new(sc.codec, fs, STREAM_CHANNELS)?;
    let codec_delay = encoder.delay_samples()?;
    let silence = SilenceSwitch::default();
    let mut producer = ChunkProducer::new(silence.wrap(looping_clip(&sc.audio)?), encoder);
    let mut world = World {
        queue: BinaryHeap::new(),
        seq: 0,
        net: DelayModel::new(&sc.network, sc.seed),
        broker: SimBroker::default(),
        broker_run: 1,
        service: new_service(&playout),
        buffer: RollingBuffer::new(fs, BUFFER_SECONDS, epoch_us),
        epoch_us,
        codec_delay,
        codec: sc.codec,
        announced_ms: playout.current_ms(),
        history_len: chunks_for_ms(playout.max_ms()),
        playout,
        history: VecDeque::new(),
        tx_down_until: None,
        outages: Vec::new(),
        persisted: Default::default(),
        past_counts: Default::default(),
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
        let sink = room.sink(&d.name)?;
        let mic = room.microphone(&d.name)?;
        devices.push(SimDevice {
            name: d.name.clone(),
            profile: profiles[i].clone(),
            drift: DriftConfig {
                first_after_ms: FIRST_MEASUREMENT_MS + i as u64 * STAGGER_MS,
                ..Default::default()
            },
            node: None,
            incarnation: 0,
            io: SimIo::default(),
            clock: vdevs[i].clock,
            sink,
            mic,
            mic_on: false,
            stream_open: false,
            connection: 0,
            connecting: false,
            backoff_us: RECONNECT_BACKOFF_MIN.as_micros() as i64,
            served: false,
            handshake: None,
            last_frame_us: origin_us,
            up: InOrder::default(),
            down: InOrder::default(),
            clock_up: InOrder::default(),
            clock_down: InOrder::default(),
            mqtt_session: 0,
            mqtt_up: InOrder::default(),
            mqtt_down: InOrder::default(),
            mqtt_queue: Vec::new(),
            clock_errors_us: Vec::new(),
            past: (0, 0, 0, 0),
        });
        start_receiver(&mut world, &mut devices, &room, i, origin_us)?;
    }
    let drift_window_us = DriftConfig::default().window_ms as i64 * 1000;
    let debug = std::env::var_os("SYNCSTREAM_SIM_DEBUG").is_some();
    let mut log = TruthLog::default();
    let mut evening = EveningLog::new(events.clone(), devices.len(), origin_us);
    let end_us = origin_us + (sc.duration_s * 1e6) as i64;
    let mut last_progress = origin_us;
    let mut last_reports: Vec<u64> = vec![0; devices.len()];
    let mut next_event = 0usize;
    let mut t = origin_us;
    while t < end_us {
        // Scenario events.
        while next_event < events.len() && origin_us + (events[next_event].0 * 1e6) as i64 <= t {
            let (_, device, action) = events[next_event];
            next_event += 1;
            evening.mark(
                next_event - 1,
                t,
                devices.iter().map(SimDevice::totals).collect(),
            );
            apply_event(
                &mut world,
                &mut devices,
                &room,
                &silence,
                t,
                device,
                action,
                next_event,
            )?;
        }
        // The transmitter back after a restart.
        if world.tx_down_until.is_some_and(|u| t >= u) {
            world.tx_down_until = None;
            transmitter_back(&mut world, &mut producer, sc, t)?;
        }
        // The controller's state, kept every 5 s as the real transmitter keeps it.
        if world.tx_up(t) && (t - origin_us) % 5_000_000 == 0 {
            world.persisted = world
                .service
                .controller()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .persisted();
        }
        // The controller's keep-alive offsets, once a second.
        if world.tx_up(t) && (t - origin_us) % 1_000_000 == 0 {
            let run = world.broker_run;
            for out in world.service.on_tick(t) {
                world.push(t, Event::Broker(out.topic, out.payload, out.retain, run));
            }
        }
        // The pacer: chunks whose end is due.
        while world.tx_up(t) && producer.next_due_us(world.epoch_us) <= t {
            let Some(chunk) = producer.produce(&mut world.buffer) else {
                continue;
            };
            world.history.push_back(chunk.clone());
            while world.history.len() > world.history_len {
                world.history.pop_front();
            }
            for (i, dev) in devices.iter_mut().enumerate() {
                if dev.served {
                    let at = world.arrival(i, t, &mut dev.down);
                    world.push(
                        at,
                        Event::DeviceFrame(i, dev.connection, chunk.frame.clone()),
                    );
                }
            }
        }
        // Deliveries.
        while world.queue.peek().is_some_and(|q| q.0.at_us <= t) {
            let Some(Reverse(q)) = world.queue.pop() else {
                break;
            };
            deliver(&mut world, &mut devices, &room, q.at_us, q.event)?;
        }
        announce_playout_delay(&mut world, &mut devices, t)?;
        // Every node's own timers; the transports' read timeout; microphones around
        // measurements.
        for i in 0..devices.len() {
            if devices[i].node.is_none() {
                continue;
            }
            if devices[i].stream_open
                && t - devices[i].last_frame_us > STREAM_READ_TIMEOUT.as_micros() as i64
            {
                close_stream(&mut world, &mut devices, i, t, "nothing for 3 s", 0);
            }
            let local = devices[i].local(t);
            let dev = &mut devices[i];
            if let Some(node) = dev.node.as_mut() {
                node.poll(local, &mut dev.io);
            }
            settle(&mut world, &mut devices, i, t);
            let dev = &mut devices[i];
            let Some(node) = dev.node.as_ref() else {
                continue;
            };
            let want = node.recording_tone()
                || local >= node.next_measurement_us() - drift_window_us - MIC_LEAD_US;
            if want != dev.mic_on {
                room.set_microphone_enabled(i, want);
                dev.mic_on = want;
            }
            if debug {
                let n = node.counters().reports;
                if n != last_reports[i] {
                    last_reports[i] = n;
                    if let Some(r) = node.last_report() {
                        eprintln!(
                            "{:7.2} {} drift {:?} conf {:.2} applied {:.3} {:?}",
                            (t - origin_us) as f64 / 1e6,
                            node.device(),
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
        let truth = room.drain_truth();
        let playout_delay_us = world.playout.current_ms() as f64 * 1000.0;
        log.add(&truth, origin_us as f64, playout_delay_us);
        evening.add_truth(&truth, playout_delay_us);
        if (t - origin_us) % CLOCK_ERROR_EVERY_US == 0 {
            let samples: Vec<Sample> = devices
                .iter()
                .enumerate()
                .map(|(i, d)| Sample {
                    ramp: d.node.as_ref().map(|n| n.offset()),
                    tx_us: t as f64,
                    true_latency_ms: room.true_latency_ms(i),
                })
                .collect();
            evening.add_offsets(t, samples);
        }
        if t - origin_us >= CLOCK_ERROR_FROM_US && (t - origin_us) % CLOCK_ERROR_EVERY_US == 0 {
            for d in devices.iter_mut() {
                let local = d.clock.local_from_room(t as f64);
                if let Some(tx) = d.node.as_ref().and_then(|n| n.clock().tx_from_local(local)) {
                    d.clock_errors_us.push(tx - t as f64);
                }
            }
        }
        if t - last_progress >= 10_000_000 {
            progress((t - origin_us) as f64 / 1e6, sc.duration_s);
            last_progress = t;
        }
    }
    let totals: Vec<_> = devices.iter().map(SimDevice::totals).collect();
    evening.finish(t, totals.clone());
    let facts: Vec<DeviceFacts> = sc
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let dev = &mut devices[i];
            let (_, underruns, jumps, offsets_applied) = totals[i];
            if debug {
                if let Some(n) = &dev.node {
                    eprintln!(
                        "{}: clock rate {:.1} ppm (true {:.1}); {:?}",
                        d.name,
                        n.snapshot().clock_rate * 1e6,
                        -d.clock_ppm,
                        n.counters()
                    );
                }
            }
            DeviceFacts {
                name: d.name.clone(),
                output: profiles[i].output_type.as_str().to_string(),
                profile_latency_ms: profiles[i].base_latency_ms,
                true_latency_ms: room.true_latency_ms(i),
                final_offset_ms: dev.node.as_ref().map_or(f64::NAN, |n| n.offset().offset_ms),
                underruns,
                jumps,
                offsets_applied,
                clock_errors_us: std::mem::take(&mut dev.clock_errors_us),
            }
        })
        .collect();
    let mut report = build_report(
        &log,
        &facts,
        &sc.audio.display().to_string(),
        sc.duration_s,
        world.playout.current_ms() as f64,
    );
    let controller = world
        .service
        .controller()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .snapshot();
    let mut counts = world.past_counts.clone();
    for (name, d) in &controller {
        counts.entry(name.clone()).or_default().add(d);
    }
    evening.attach(&mut report, &totals, &counts);
    Ok(report)
}

/// A fresh sync service with the limits of `playout`'s delay, asking it to grow.
fn new_service(playout: &Arc<PlayoutDelay>) -> SyncService {
    let controller = Arc::new(Mutex::new(SyncController::new(ControllerConfig {
        limits: playout.limits(),
        ..Default::default()
    })));
    SyncService::new(controller, None).with_playout_delay(playout.clone())
}

/// Starts device `i`'s receiver process at room time `t`: a new audio engine and node
/// (from what its last run persisted), its stream and MQTT connections.
fn start_receiver(
    world: &mut World,
    devices: &mut [SimDevice],
    room: &Room,
    i: usize,
    t: i64,
) -> anyhow::Result<()> {
    let dev = &mut devices[i];
    let start_offset = dev
        .io
        .persisted
        .map_or(dev.profile.base_latency_ms, |p| p.offset_ms);
    let (renderer, capturer, control) = realtime::engine(start_offset, STREAM_SAMPLE_RATE);
    dev.sink.start(renderer.into_render_fn())?;
    dev.mic.start(capturer.into_capture_fn())?;
    room.set_microphone_enabled(i, false);
    dev.mic_on = false;
    dev.incarnation += 1;
    let mut drift = dev.drift.clone();
    if dev.incarnation > 1 {
        drift.first_after_ms = drift.interval_ms;
    }
    let node = ReceiverNode::new(
        NodeConfig {
            device: dev.name.clone(),
            instance: i as u64 * 1000 + dev.incarnation,
            profile: dev.profile.clone(),
            drift,
            mic_rate_hz: STREAM_SAMPLE_RATE,
            persisted: dev.io.persisted,
            key: sim_key(),
        },
        control,
        dev.local(t),
    )
    .map_err(|e| anyhow::anyhow!("device {}: {e}", dev.name))?;
    dev.node = Some(node);
    dev.backoff_us = RECONNECT_BACKOFF_MIN.as_micros() as i64;
    dev.connecting = true;
    world.push(t, Event::Connect(i));
    world.push(t, Event::MqttConnect(i));
    Ok(())
}

/// The receiver-side end of device `i`'s stream connection closes at `t` (a read
/// timeout, a reset, the transmitter gone); it reconnects after its backoff (at least
/// `retry_after_us`).
fn close_stream(
    world: &mut World,
    devices: &mut [SimDevice],
    i: usize,
    t: i64,
    why: &str,
    retry_after_us: i64,
) {
    let dev = &mut devices[i];
    if !dev.stream_open {
        return;
    }
    dev.stream_open = false;
    dev.served = false;
    dev.handshake = None;
    let local = dev.local(t);
    if let Some(n) = dev.node.as_mut() {
        n.on_stream_closed(local, why, &mut dev.io);
    }
    if !dev.connecting {
        dev.connecting = true;
        let wait = dev.backoff_us.max(retry_after_us);
        dev.backoff_us = (dev.backoff_us * 2).min(RECONNECT_BACKOFF_MAX.as_micros() as i64);
        world.push(t + wait, Event::Connect(i));
    }
    settle(world, devices, i, t);
}

/// The next MQTT reconnection attempt of a client that lost its broker at `lost_us`,
/// once the broker is back at `back_us`: the first of the attempts at 0.2 s, 0.6 s,
/// 1.4 s, ... after the loss (the driver's doubling backoff) that is at or after it.
fn mqtt_reconnect_at(lost_us: i64, back_us: i64) -> i64 {
    let (mut at, mut wait) = (lost_us, MQTT_BACKOFF_MIN_US);
    while at < back_us {
        at += wait;
        wait = (wait * 2).min(MQTT_BACKOFF_MAX_US);
    }
    at
}

/// Applies one scenario event at room time `t`.
#[allow(clippy::too_many_arguments)]
fn apply_event(
    world: &mut World,
    devices: &mut [SimDevice],
    room: &Room,
    silence: &SilenceSwitch,
    t: i64,
    device: Option<usize>,
    action: EventAction,
    seq: usize,
) -> anyhow::Result<()> {
    match action {
        EventAction::Latency(ms) => {
            if let Some(i) = device {
                room.set_latency_ms(i, ms);
            }
        }
        EventAction::Volume(db) => {
            if let Some(i) = device {
                room.set_output_gain_db(i, db);
            }
        }
        EventAction::Muted(m) => {
            // As from the dashboard: a command on MQTT.
            if let Some(i) = device {
                let cmd = if m { "mute" } else { "unmute" };
                let payload = format!("{{\"cmd\":\"{cmd}\"}}").into_bytes();
                let run = world.broker_run;
                world.push(
                    t,
                    Event::Broker(topics::command(&devices[i].name), payload, false, run),
                );
            }
        }
        EventAction::Noise {
            kind,
            snr_db,
            duration_s,
        } => {
            if let Some(i) = device {
                let until = t + (duration_s * 1e6) as i64;
                room.add_noise_burst(i, kind, snr_db, t, until, seq as u64 * 7919);
            }
        }
        EventAction::Outage(s) => {
            world.outages.push((t, t + (s * 1e6) as i64, device));
        }
        EventAction::Silence(s) => {
            silence.silence_for((s * STREAM_SAMPLE_RATE as f64) as u64);
        }
        EventAction::ClockPpm(ppm) => {
            if let Some(i) = device {
                devices[i].clock = room.set_clock_ppm(i, ppm);
            }
        }
        EventAction::Restart => {
            if let Some(i) = device {
                receiver_gone(world, devices, i, t);
                world.push(t + RECEIVER_RESTART_US, Event::ReceiverBack(i));
            }
        }
        EventAction::TransmitterRestart => {
            world.tx_down_until = Some(t + TRANSMITTER_RESTART_US);
            // Every connection ends with the process; the embedded broker goes too,
            // with its retained messages.
            for i in 0..devices.len() {
                close_stream(world, devices, i, t, "the transmitter went away", 0);
                if devices[i].mqtt_session != 0 {
                    devices[i].mqtt_session = 0;
                    let at = mqtt_reconnect_at(t, t + TRANSMITTER_RESTART_US);
                    world.push(at, Event::MqttConnect(i));
                }
            }
            world.broker = SimBroker::default();
            world.broker_run += 1;
            world.history.clear();
        }
    }
    Ok(())
}

/// Device `i`'s receiver process ends at `t` (its state is gone but for what it
/// persisted): audio stops, connections close, the broker publishes its last will.
fn receiver_gone(world: &mut World, devices: &mut [SimDevice], i: usize, t: i64) {
    let dev = &mut devices[i];
    let Some(node) = dev.node.take() else {
        return;
    };
    let s = node.snapshot();
    dev.past.0 += s.counters.reports;
    dev.past.1 += s.audio.underruns;
    dev.past.2 += s.audio.jumps;
    dev.past.3 += s.counters.offsets_applied;
    let (will_topic, will) = node.mqtt_last_will();
    drop(node);
    let _ = dev.sink.stop();
    let _ = dev.mic.stop();
    dev.stream_open = false;
    dev.served = false;
    dev.handshake = None;
    dev.connecting = false;
    dev.io.effects.clear();
    if dev.mqtt_session != 0 {
        dev.mqtt_session = 0;
        world.broker.disconnect(i);
        let run = world.broker_run;
        world.push(t, Event::Broker(will_topic, will, true, run));
    }
}

/// The transmitter starts again at `t`: a new stream (epoch `t`, index 0, an empty
/// rolling buffer), a new sync service restored from what the controller last kept,
/// which publishes its offsets again (the embedded broker lost them).
fn transmitter_back(
    world: &mut World,
    producer: &mut ChunkProducer,
    sc: &Scenario,
    t: i64,
) -> anyhow::Result<()> {
    world.epoch_us = t;
    producer.restart_stream();
    world.buffer = RollingBuffer::new(STREAM_SAMPLE_RATE, BUFFER_SECONDS, t);
    // A restarted transmitter starts from its configured playout delay again.
    world.playout = Arc::new(PlayoutDelay::new(sc.playout_delay_ms, sc.growth_limit_ms()));
    world.announced_ms = world.playout.current_ms();
    // The counters of the run that ended, for the report.
    let old = world
        .service
        .controller()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .snapshot();
    for (name, d) in old {
        world.past_counts.entry(name).or_default().add(&d);
    }
    world.service = new_service(&world.playout);
    world
        .broker
        .subscribe(CONTROLLER, &SyncService::subscriptions());
    // The controller starts from its state file and publishes the offsets again.
    let offsets = {
        let mut c = world
            .service
            .controller()
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        c.restore(&world.persisted);
        drop(c);
        syncstream_transmitter::sync_service::republish(world.service.controller(), t)
    };
    let run = world.broker_run;
    for out in offsets {
        world.push(t, Event::Broker(out.topic, out.payload, out.retain, run));
    }
    Ok(())
}

/// Delivers one event at room time `at_us`.
fn deliver(
    world: &mut World,
    devices: &mut [SimDevice],
    room: &Room,
    at_us: i64,
    event: Event,
) -> anyhow::Result<()> {
    match event {
        Event::DeviceFrame(i, c, bytes) => {
            let dev = &mut devices[i];
            if !dev.stream_open || dev.connection != c {
                return Ok(());
            }
            dev.last_frame_us = at_us;
            let local = dev.local(at_us);
            if let Some(n) = dev.node.as_mut() {
                n.on_stream_frame(&bytes, local, &mut dev.io);
            }
            settle(world, devices, i, at_us);
        }
        Event::DeviceClockFrame(i, c, bytes) => {
            let dev = &mut devices[i];
            if dev.stream_open && dev.connection == c {
                let local = dev.local(at_us);
                if let Some(n) = dev.node.as_mut() {
                    n.on_clock_frame(&bytes, local);
                }
            }
        }
        Event::DeviceMqtt(i, session, topic, payload) => {
            let dev = &mut devices[i];
            if dev.mqtt_session != session {
                return Ok(());
            }
            let local = dev.local(at_us);
            if let Some(n) = dev.node.as_mut() {
                n.on_mqtt_message(&topic, &payload, local, &mut dev.io);
            }
            settle(world, devices, i, at_us);
        }
        Event::DeviceWindow(i, incarnation, id, result) => {
            let dev = &mut devices[i];
            if dev.incarnation != incarnation {
                return Ok(());
            }
            let local = dev.local(at_us);
            if let Some(n) = dev.node.as_mut() {
                n.on_window(id, result, local, &mut dev.io);
            }
            settle(world, devices, i, at_us);
        }
        Event::TransmitterFrame(i, c, bytes) => {
            if !world.tx_up(at_us) || !devices[i].stream_open || devices[i].connection != c {
                return Ok(());
            }
            match Frame::decode(&bytes) {
                Ok(Frame::TimeRequest { t1_us }) if devices[i].served => {
                    let answer = time_answer(t1_us, at_us);
                    let at = world.arrival(i, at_us + SERVER_HOLD_US, &mut devices[i].down);
                    world.push(at, Event::DeviceFrame(i, c, answer));
                }
                Ok(hello @ Frame::ClientHello { .. }) => {
                    let answer = match check_hello(&hello) {
                        Ok(h) => {
                            let auth = StreamAuth::new(sim_key());
                            let (challenge, server_nonce) =
                                auth.challenge(&h.client_nonce, &h.device, h.instance);
                            devices[i].handshake = Some((h, server_nonce));
                            challenge
                        }
                        Err(reason) => Frame::Refused { reason },
                    };
                    if let Ok(b) = answer.encode() {
                        let at = world.arrival(i, at_us, &mut devices[i].down);
                        world.push(at, Event::DeviceFrame(i, c, Bytes::from(b)));
                    }
                }
                Ok(Frame::AuthResponse { proof }) => {
                    if let Some((h, server_nonce)) = devices[i].handshake.take() {
                        let auth = StreamAuth::new(sim_key());
                        match auth.check_response(
                            &h.client_nonce,
                            &server_nonce,
                            &proof,
                            &h.device,
                            h.instance,
                        ) {
                            Ok(()) => {
                                devices[i].served = true;
                                send_hello_and_backlog(world, i, &mut devices[i], at_us)?;
                            }
                            Err(reason) => {
                                if let Ok(b) = (Frame::Refused { reason }).encode() {
                                    let at = world.arrival(i, at_us, &mut devices[i].down);
                                    world.push(at, Event::DeviceFrame(i, c, Bytes::from(b)));
                                }
                            }
                        }
                    }
                }
                Ok(Frame::PlayoutDelayRequest { playout_delay_ms }) if devices[i].served => {
                    // A grant reaches every receiver (announce_playout_delay); a
                    // refusal this one only.
                    if let Err(reason) = world.playout.request(&devices[i].name, playout_delay_ms) {
                        if let Ok(b) = (Frame::Refused { reason }).encode() {
                            let at = world.arrival(i, at_us, &mut devices[i].down);
                            world.push(at, Event::DeviceFrame(i, c, Bytes::from(b)));
                        }
                    }
                }
                _ => {}
            }
        }
        Event::TransmitterClockFrame(i, c, bytes) => {
            if !world.tx_up(at_us) || !devices[i].stream_open || devices[i].connection != c {
                return Ok(());
            }
            if let Ok(Frame::TimeRequest { t1_us }) = Frame::decode(&bytes) {
                let answer = time_answer(t1_us, at_us);
                let at = world.arrival(i, at_us + SERVER_HOLD_US, &mut devices[i].clock_down);
                world.push(at, Event::DeviceClockFrame(i, c, answer));
            }
        }
        Event::Broker(topic, payload, retain, run) => {
            if run != world.broker_run || !world.tx_up(at_us) {
                return Ok(());
            }
            for client in world.broker.publish(&topic, &payload, retain) {
                if client == CONTROLLER {
                    for out in world.service.on_message(&topic, &payload, at_us) {
                        world.push(
                            at_us,
                            Event::Broker(out.topic, out.payload, out.retain, run),
                        );
                    }
                } else if let Some(dev) = devices.get_mut(client) {
                    if dev.mqtt_session == 0 {
                        continue;
                    }
                    let session = dev.mqtt_session;
                    let at = world.arrival(client, at_us, &mut dev.mqtt_down);
                    world.push(
                        at,
                        Event::DeviceMqtt(client, session, topic.clone(), payload.clone()),
                    );
                }
            }
        }
        Event::Connect(i) => {
            let dev = &mut devices[i];
            dev.connecting = false;
            if dev.node.is_none() || dev.stream_open {
                return Ok(());
            }
            // A cut network: the connect waits for it (up to the connect timeout).
            let mut when = at_us;
            if let Some(until) = world.cut_until(i, at_us) {
                if until - at_us > CONNECT_TIMEOUT_US {
                    dev.connecting = true;
                    let wait = CONNECT_TIMEOUT_US + dev.backoff_us;
                    dev.backoff_us =
                        (dev.backoff_us * 2).min(RECONNECT_BACKOFF_MAX.as_micros() as i64);
                    world.push(at_us + wait, Event::Connect(i));
                    return Ok(());
                }
                when = until;
            }
            if !world.tx_up(when) {
                // Refused at once: nobody listens.
                dev.connecting = true;
                let wait = dev.backoff_us;
                dev.backoff_us = (dev.backoff_us * 2).min(RECONNECT_BACKOFF_MAX.as_micros() as i64);
                world.push(when + wait, Event::Connect(i));
                return Ok(());
            }
            if when > at_us {
                dev.connecting = true;
                world.push(when, Event::Connect(i));
                return Ok(());
            }
            dev.stream_open = true;
            dev.served = false;
            dev.handshake = None;
            dev.connection += 1;
            dev.last_frame_us = at_us;
            dev.up = InOrder::default();
            dev.down = InOrder::default();
            dev.clock_up = InOrder::default();
            dev.clock_down = InOrder::default();
            dev.backoff_us = RECONNECT_BACKOFF_MIN.as_micros() as i64;
            let local = dev.local(at_us);
            if let Some(n) = dev.node.as_mut() {
                n.on_stream_connected(local, &mut dev.io);
            }
            settle(world, devices, i, at_us);
        }
        Event::MqttConnect(i) => {
            if devices[i].node.is_none() || devices[i].mqtt_session != 0 {
                return Ok(());
            }
            if !world.tx_up(at_us) || world.cut_until(i, at_us).is_some() {
                let next = mqtt_reconnect_at(at_us, at_us + 1);
                world.push(next.max(at_us + MQTT_BACKOFF_MIN_US), Event::MqttConnect(i));
                return Ok(());
            }
            world.seq += 1;
            let session = world.seq;
            let dev = &mut devices[i];
            dev.mqtt_session = session;
            dev.mqtt_up = InOrder::default();
            dev.mqtt_down = InOrder::default();
            let subs = dev
                .node
                .as_ref()
                .map(|n| n.mqtt_subscriptions())
                .unwrap_or_default();
            for (topic, payload) in world.broker.subscribe(i, &subs) {
                let at = world.arrival(i, at_us, &mut devices[i].mqtt_down);
                world.push(at, Event::DeviceMqtt(i, session, topic, payload));
            }
            let dev = &mut devices[i];
            let local = dev.local(at_us);
            if let Some(n) = dev.node.as_mut() {
                n.on_mqtt_connected(local, &mut dev.io);
            }
            for (topic, payload, retain) in std::mem::take(&mut dev.mqtt_queue) {
                dev.io.effects.push(Effect::Publish(topic, payload, retain));
            }
            settle(world, devices, i, at_us);
        }
        Event::ReceiverBack(i) => start_receiver(world, devices, room, i, at_us)?,
    }
    Ok(())
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

/// Carries out what device `i`'s node asked for at room time `at_us`, until it asks
/// for nothing more (a job's result may ask for a publish).
fn settle(world: &mut World, devices: &mut [SimDevice], i: usize, at_us: i64) {
    loop {
        let effects = std::mem::take(&mut devices[i].io.effects);
        if effects.is_empty() {
            return;
        }
        for e in effects {
            match e {
                Effect::StreamSend(frame) | Effect::ClockSend(frame) if !devices[i].stream_open => {
                    let _ = frame;
                }
                Effect::StreamSend(frame) => {
                    if let Ok(b) = frame.encode() {
                        let at = world.arrival(i, at_us, &mut devices[i].up);
                        let c = devices[i].connection;
                        world.push(at, Event::TransmitterFrame(i, c, Bytes::from(b)));
                    }
                }
                Effect::ClockSend(frame) => {
                    if let Ok(b) = frame.encode() {
                        let at = world.arrival(i, at_us, &mut devices[i].clock_up);
                        let c = devices[i].connection;
                        world.push(at, Event::TransmitterClockFrame(i, c, Bytes::from(b)));
                    }
                }
                Effect::StreamReset(retry_after_us) => {
                    close_stream(
                        world,
                        devices,
                        i,
                        at_us,
                        "reset",
                        retry_after_us.max(200_000),
                    );
                }
                Effect::Publish(topic, payload, retain) => {
                    let dev = &mut devices[i];
                    if dev.mqtt_session == 0 {
                        if dev.mqtt_queue.len() < 256 {
                            dev.mqtt_queue.push((topic, payload, retain));
                        }
                        continue;
                    }
                    let at = world.arrival(i, at_us, &mut dev.mqtt_up);
                    let run = world.broker_run;
                    world.push(at, Event::Broker(topic, payload, retain, run));
                }
                Effect::Fetch(r) => {
                    let dev_incarnation = devices[i].incarnation;
                    let d1 = world.net.draw_us();
                    let d2 = world.net.draw_us();
                    let cut = world.cut_until(i, at_us).is_some()
                        || world.cut_until(i, at_us + d1 + d2).is_some()
                        || !world.tx_up(at_us + d1);
                    let (when, result) = if cut {
                        (
                            at_us + HTTP_TIMEOUT_US,
                            Err("the request timed out".to_string()),
                        )
                    } else {
                        let result = world
                            .buffer
                            .window(r.start_us, r.duration_ms)
                            .map(|(first_pts_us, samples)| Window {
                                first_pts_us,
                                samples,
                            })
                            .map_err(|e| e.to_string());
                        (at_us + d1 + d2, result)
                    };
                    world.push(when, Event::DeviceWindow(i, dev_incarnation, r.id, result));
                }
                Effect::Job(job) => {
                    let done = job.run();
                    let dev = &mut devices[i];
                    let local = dev.local(at_us);
                    if let Some(n) = dev.node.as_mut() {
                        n.on_job_done(done, local, &mut dev.io);
                    }
                }
            }
        }
    }
}
