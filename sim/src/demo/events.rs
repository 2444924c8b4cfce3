//! Scenario events in the real-time demo (`syncstream demo --scenario`): each event
//! acts on the running processes and parts as it would in a home, so the production
//! code rides it out for real:
//!
//! | event | what the demo does |
//! |---|---|
//! | `latency_ms`, `volume_db`, `noise`, `clock_ppm` | changes the virtual room (and the device's [`ModelClock`]) |
//! | `muted` | mutes the device through the control plane, as the dashboard does |
//! | `network_outage_s` | holds the device's (or every device's) stream, HTTP and MQTT proxies |
//! | `silence_s` | the default stream's source plays digital silence |
//! | `restart` | drops the receiver (its MQTT last will fires) and starts a new one on its state folder after [`RECEIVER_RESTART_US`] |
//! | `transmitter_restart` | drops the transmitter and starts a new one on the same ports and state folder after [`TRANSMITTER_RESTART_US`]; the broker stays |
//!
//! The figures per event come from the same [`EveningLog`] as the simulator's.

use std::collections::BTreeMap;
use std::time::Duration;

use syncstream_room::TruthSample;
use syncstream_shared::time::STREAM_SAMPLE_RATE;

use super::{demo_sources, start_receiver, DemoSystem};
use crate::engine::{RECEIVER_RESTART_US, TRANSMITTER_RESTART_US};
use crate::evening::{EveningLog, ReportCounts, Sample, Totals};
use crate::events::EventAction;
use crate::report::Report;

/// How often the devices' offsets are sampled for the event figures, µs.
const OFFSET_SAMPLE_US: i64 = 250_000;

/// A process that comes back after a restart event.
#[derive(Debug, Clone, Copy)]
enum Back {
    Receiver(usize),
    Transmitter,
}

/// Applies a scenario's events to a running demo when they are due, and records what
/// the event report needs.
pub(super) struct EventDriver {
    events: Vec<(f64, Option<usize>, EventAction)>,
    next: usize,
    start_us: i64,
    /// Processes to start again, at local µs.
    back: Vec<(i64, Back)>,
    log: Option<EveningLog>,
    last_sample_us: Option<i64>,
    /// The controller's counters from transmitter processes that ended.
    past_counts: BTreeMap<String, ReportCounts>,
}

impl EventDriver {
    /// A driver for `events` (at s, device, action; in time order) of `n` devices, the
    /// run starting at `start_us`.
    pub(super) fn new(
        events: Vec<(f64, Option<usize>, EventAction)>,
        n: usize,
        start_us: i64,
    ) -> Self {
        let log = (!events.is_empty()).then(|| EveningLog::new(events.clone(), n, start_us));
        Self {
            events,
            next: 0,
            start_us,
            back: Vec::new(),
            log,
            last_sample_us: None,
            past_counts: BTreeMap::new(),
        }
    }

    /// Applies every event due at `now_us` and starts the processes due back.
    ///
    /// Errors: a restarted transmitter or receiver cannot start.
    pub(super) async fn run_due(
        &mut self,
        sys: &mut DemoSystem,
        now_us: i64,
    ) -> anyhow::Result<()> {
        while let Some(&(at_s, device, action)) = self.events.get(self.next) {
            if self.start_us + (at_s * 1e6) as i64 > now_us {
                break;
            }
            let k = self.next;
            self.next += 1;
            if let Some(log) = self.log.as_mut() {
                log.mark(k, now_us, totals(sys));
            }
            tracing::info!(at_s, ?device, ?action, "scenario event");
            self.apply(sys, now_us, device, action, k as u64);
        }
        let due: Vec<Back> = self
            .back
            .iter()
            .filter(|(at, _)| *at <= now_us)
            .map(|&(_, b)| b)
            .collect();
        self.back.retain(|(at, _)| *at > now_us);
        for b in due {
            match b {
                Back::Receiver(i) => {
                    let p = &sys.parts;
                    let r = start_receiver(&p.rx_cfgs[i], &sys.room, p.clocks[i].clone()).await?;
                    sys.receivers[i] = Some(r);
                }
                Back::Transmitter => {
                    let sources = demo_sources(&sys.parts.cfg, &sys.parts.silence)?;
                    let tx = syncstream_transmitter::start_streams(
                        sys.parts.tx_cfg.clone(),
                        sources,
                        sys.clock.clone(),
                    )
                    .await?;
                    sys.tx = Some(tx);
                }
            }
        }
        Ok(())
    }

    fn apply(
        &mut self,
        sys: &mut DemoSystem,
        now_us: i64,
        device: Option<usize>,
        action: EventAction,
        seq: u64,
    ) {
        let room = &sys.room;
        match (action, device) {
            (EventAction::Latency(ms), Some(i)) => room.set_latency_ms(i, ms),
            (EventAction::Volume(db), Some(i)) => room.set_output_gain_db(i, db),
            (EventAction::Muted(m), Some(i)) => match &sys.tx {
                Some(tx) => {
                    if let Err(e) = tx.control.set_muted(&sys.devices[i].name, m) {
                        tracing::warn!("event muted={m}: {e:?}");
                    }
                }
                None => tracing::warn!("event muted={m}: the transmitter is down"),
            },
            (
                EventAction::Noise {
                    kind,
                    snr_db,
                    duration_s,
                },
                Some(i),
            ) => {
                let until = now_us + (duration_s * 1e6) as i64;
                room.add_noise_burst(i, kind, snr_db, now_us, until, seq * 7919);
            }
            (EventAction::ClockPpm(ppm), Some(i)) => {
                let model = room.set_clock_ppm(i, ppm);
                sys.parts.clocks[i].set_model(model);
            }
            (EventAction::Outage(s), _) => {
                for (i, proxies) in sys.parts.proxies.iter().enumerate() {
                    if device.is_none_or(|d| d == i) {
                        for p in proxies {
                            p.hold_for(Duration::from_secs_f64(s));
                        }
                    }
                }
            }
            (EventAction::Silence(s), _) => {
                sys.parts
                    .silence
                    .silence_for((s * STREAM_SAMPLE_RATE as f64) as u64);
            }
            (EventAction::Restart, Some(i)) => {
                if let Some(mut r) = sys.receivers[i].take() {
                    let t = receiver_totals(&r);
                    let p = &mut sys.parts.past[i];
                    *p = (p.0 + t.0, p.1 + t.1, p.2 + t.2, p.3 + t.3);
                    r.stop();
                    self.back
                        .push((now_us + RECEIVER_RESTART_US, Back::Receiver(i)));
                }
            }
            (EventAction::TransmitterRestart, _) => {
                if let Some(tx) = sys.tx.take() {
                    let snapshot = tx
                        .controller
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .snapshot();
                    for (name, d) in &snapshot {
                        self.past_counts.entry(name.clone()).or_default().add(d);
                    }
                    drop(tx);
                    self.back
                        .push((now_us + TRANSMITTER_RESTART_US, Back::Transmitter));
                }
            }
            (a, None) => tracing::warn!("event {}: no device", a.kind()),
        }
    }

    /// Records the truth drained from the room and, every 250 ms, the devices' offsets.
    pub(super) fn record(&mut self, sys: &DemoSystem, truth: &[TruthSample], now_us: i64) {
        let Some(log) = self.log.as_mut() else {
            return;
        };
        log.add_truth(truth, sys.playout_delay_now_ms() * 1000.0);
        if self
            .last_sample_us
            .is_none_or(|t| now_us - t >= OFFSET_SAMPLE_US)
        {
            self.last_sample_us = Some(now_us);
            let samples = sys
                .receivers
                .iter()
                .enumerate()
                .map(|(i, r)| Sample {
                    ramp: r.as_ref().map(|r| r.snapshot().offset),
                    tx_us: now_us as f64,
                    true_latency_ms: sys.room.true_latency_ms(i),
                })
                .collect();
            log.add_offsets(now_us, samples);
        }
    }

    /// Adds the event figures to `report` (nothing without events).
    pub(super) fn attach(
        &mut self,
        sys: &mut DemoSystem,
        report: &mut Report,
        end_us: i64,
        totals: Vec<Totals>,
    ) {
        let Some(log) = self.log.as_mut() else {
            return;
        };
        log.finish(end_us, totals.clone());
        let mut counts = self.past_counts.clone();
        if let Some(tx) = &sys.tx {
            let snapshot = tx
                .controller
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .snapshot();
            for (name, d) in &snapshot {
                counts.entry(name.clone()).or_default().add(d);
            }
        }
        log.attach(report, &totals, &counts);
    }
}

/// A running receiver's counters: (reports made, underruns, jumps, offsets applied).
fn receiver_totals(r: &syncstream_receiver::Receiver) -> Totals {
    let s = r.snapshot();
    (
        s.counters.reports,
        s.audio.underruns,
        s.audio.jumps,
        s.counters.offsets_applied,
    )
}

/// Every device's counters over all its receiver processes.
fn totals(sys: &DemoSystem) -> Vec<Totals> {
    (0..sys.devices.len()).map(|i| sys.totals(i)).collect()
}

impl DemoSystem {
    /// Device `i`'s counters over all its receiver processes: (reports made,
    /// underruns, jumps, offsets applied).
    pub fn totals(&self, i: usize) -> Totals {
        let past = self.parts.past.get(i).copied().unwrap_or_default();
        let now = self
            .receivers
            .get(i)
            .and_then(|r| r.as_ref())
            .map(receiver_totals)
            .unwrap_or_default();
        (
            past.0 + now.0,
            past.1 + now.1,
            past.2 + now.2,
            past.3 + now.3,
        )
    }
}
