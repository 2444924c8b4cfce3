//! `syncstream calibrate --mqtt mqtt://host:port`: calibrates the receivers of a live
//! system.
//!
//! For every device it publishes `{"cmd":"test_tone",...}` on
//! `syncstream/command/<device>` (one device after the other, or all at once with one
//! orthogonal MLS sequence per device), waits for the receiver's answer on
//! `syncstream/calibration/<device>` (bounded by a timeout), writes each measured
//! latency into `<profiles-dir>/<device>.json` with
//! [`syncstream_calibration::profile_update::apply_measurement`] (atomic; a profile
//! that does not parse or is read-only is reported and left untouched), and publishes
//! the run on `syncstream/calibration/summary`.
//!
//! Devices are the ones named, or else every device with a retained status on
//! `syncstream/status/+` seen within [`LiveOptions::discovery`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::onset::{detect_onset, OnsetParams};
use crate::orthogonal::orthogonal_set;
use crate::profile_update::apply_measurement;
use crate::report::{write_report, ReportEntry};
use crate::{ImpulseAnalysis, LatencyMeasurement, MlsParams, SignalKind, SignalParams};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rumqttc::{Event, Outgoing, Packet, QoS};
use syncstream_protocol::messages::{
    parse, topics, CalibrationResult, Command, Status, TestToneRequest,
};
use syncstream_protocol::mqtt::{self, BrokerUrl};
use tokio::sync::mpsc;

use crate::run::{CalibrationRun, DeviceOutcome};

/// Topic of the run summary.
pub const SUMMARY_TOPIC: &str = "syncstream/calibration/summary";

/// Options of a live calibration.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Broker of the system.
    pub broker: BrokerUrl,
    /// Devices to calibrate; `None`: every device with a retained status.
    pub devices: Option<Vec<String>>,
    /// Test signal; simultaneous calibration needs [`SignalKind::Mls`].
    pub signal: SignalKind,
    /// All devices at once with orthogonal MLS sequences.
    pub simultaneous: bool,
    /// Folder of the device profiles (`<device>.json`) to update; `None`: no update.
    pub profiles_dir: Option<PathBuf>,
    /// How long to wait for each answer (for all answers when simultaneous).
    pub timeout: Duration,
    /// How long to collect retained statuses when no devices are named.
    pub discovery: Duration,
    /// Write `summary.json` here.
    pub report_dir: Option<PathBuf>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

enum Incoming {
    Connected,
    Status(Status),
    Result(CalibrationResult),
}

/// A connection that forwards statuses and calibration results.
struct Conn {
    client: rumqttc::AsyncClient,
    rx: mpsc::UnboundedReceiver<Incoming>,
    task: tokio::task::JoinHandle<()>,
    statuses: BTreeMap<String, Status>,
}

impl Conn {
    async fn open(broker: &BrokerUrl) -> anyhow::Result<Conn> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let id = format!("syncstream-calibrate-{}-{nanos}", std::process::id());
        let (client, mut eventloop) = mqtt::connect(broker, &id, None);
        let (tx, rx) = mpsc::unbounded_channel();
        let sub = client.clone();
        let task = tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        failures = 0;
                        for t in ["syncstream/calibration/+", topics::STATUS_ALL] {
                            let _ = sub.try_subscribe(t, QoS::AtLeastOnce);
                        }
                        let _ = tx.send(Incoming::Connected);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if topics::device_of(&p.topic, "status").is_some() {
                            if let Ok(s) = parse::<Status>(&p.topic, &p.payload) {
                                let _ = tx.send(Incoming::Status(s));
                            }
                        } else if let Some(d) = topics::device_of(&p.topic, "calibration") {
                            if d != "summary" {
                                match parse::<CalibrationResult>(&p.topic, &p.payload) {
                                    Ok(r) => {
                                        let _ = tx.send(Incoming::Result(r));
                                    }
                                    Err(e) => tracing::warn!("{e}"),
                                }
                            }
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(e) => {
                        failures += 1;
                        tracing::debug!("calibrate: MQTT connection: {e}");
                        if failures > 50 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        let mut conn = Conn {
            client,
            rx,
            task,
            statuses: BTreeMap::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline.into(), conn.rx.recv()).await {
                Ok(Some(Incoming::Connected)) => return Ok(conn),
                Ok(Some(other)) => {
                    conn.note(other);
                }
                Ok(None) | Err(_) => {
                    conn.task.abort();
                    anyhow::bail!("cannot connect to the MQTT broker at {broker} within 5 s")
                }
            }
        }
    }

    /// Keeps statuses; returns results.
    fn note(&mut self, m: Incoming) -> Option<CalibrationResult> {
        match m {
            Incoming::Status(s) => {
                self.statuses.insert(s.device.clone(), s);
                None
            }
            Incoming::Result(r) => Some(r),
            Incoming::Connected => None,
        }
    }

    /// Waits until `deadline` for results of `run_id` from `pending` devices; returns
    /// them as they come (stops early once every pending device answered).
    async fn collect(
        &mut self,
        run_id: &str,
        pending: &mut BTreeSet<String>,
        deadline: Instant,
        mut on_result: impl FnMut(CalibrationResult),
    ) {
        while !pending.is_empty() {
            match tokio::time::timeout_at(deadline.into(), self.rx.recv()).await {
                Ok(Some(m)) => {
                    if let Some(r) = self.note(m) {
                        if r.run_id.as_deref() == Some(run_id) && pending.remove(&r.device) {
                            on_result(r);
                        }
                    }
                }
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// Publishes, then disconnects once everything queued has been sent.
    async fn close(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(3), self.task).await;
    }
}

/// The measurement a receiver's answer describes.
fn measurement_of(r: &CalibrationResult, kind: SignalKind) -> Option<LatencyMeasurement> {
    let latency_ms = r.latency_ms?;
    let onset_ms = r.onset_ms.unwrap_or(latency_ms);
    Some(LatencyMeasurement {
        latency_ms,
        uncertainty_ms: r.uncertainty_ms.unwrap_or(f64::NAN),
        confidence: r.confidence.unwrap_or(0.0),
        onset_ms,
        acoustic_delay_ms: onset_ms - latency_ms,
        peak_to_noise_db: r.peak_to_noise_db.unwrap_or(0.0),
        signal: r
            .signal
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or(kind),
        periods: 1,
    })
}

/// Rebuilds an impulse analysis, for the report's plots, from the excerpt of the
/// impulse response a receiver sent (the direct path is detected again on the
/// excerpt; the measurement is the receiver's).
fn analysis_of(r: &CalibrationResult, kind: SignalKind) -> Option<ImpulseAnalysis> {
    let ir = r.ir.clone()?;
    let origin = r.ir_origin_samples?;
    let measurement = measurement_of(r, kind)?;
    let onset = detect_onset(&ir, 0, &OnsetParams::default()).ok()?;
    Some(ImpulseAnalysis {
        ir,
        ir_origin_samples: origin,
        onset,
        measurement,
    })
}

fn valid_device_name(d: &str) -> bool {
    !d.is_empty() && !d.contains(['/', '+', '#']) && d != "summary"
}

/// Calibrates the devices of a live system; see the module docs.
///
/// Errors: the broker cannot be reached, no device is named or found, a device name is
/// invalid, or `--simultaneous` with a sweep. Devices that fail (never answer, no signal
/// on the microphone, a profile that cannot be updated) are failures in the result.
pub async fn calibrate_live(opts: &LiveOptions) -> anyhow::Result<CalibrationRun> {
    if opts.simultaneous && opts.signal != SignalKind::Mls {
        anyhow::bail!(
            "simultaneous calibration uses one orthogonal MLS per device: use --signal mls \
             (or leave --signal out)"
        );
    }
    if let Some(devs) = &opts.devices {
        if let Some(bad) = devs.iter().find(|d| !valid_device_name(d)) {
            anyhow::bail!("'{bad}' is not a valid device name");
        }
    }
    let started = Instant::now();
    let mut conn = Conn::open(&opts.broker).await?;
    let devices: Vec<String> = match &opts.devices {
        Some(d) if !d.is_empty() => {
            let mut seen = BTreeSet::new();
            d.iter()
                .filter(|x| seen.insert((*x).clone()))
                .cloned()
                .collect()
        }
        _ => {
            // Retained statuses arrive right after subscribing; collect them briefly.
            let until = Instant::now() + opts.discovery;
            while let Ok(Some(m)) = tokio::time::timeout_at(until.into(), conn.rx.recv()).await {
                conn.note(m);
            }
            let found: Vec<String> = conn
                .statuses
                .values()
                .filter(|s| s.state != "offline" && valid_device_name(&s.device))
                .map(|s| s.device.clone())
                .collect();
            if found.is_empty() {
                conn.close().await;
                anyhow::bail!(
                    "no devices to calibrate: none named with --devices and no receiver \
                     status on syncstream/status/+ at {}",
                    opts.broker
                );
            }
            found
        }
    };
    let run_id = format!(
        "cal-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let bar = if opts.progress {
        ProgressBar::with_draw_target(Some(devices.len() as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("calibrating {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Sequence per device for a simultaneous pass.
    let sequences: Vec<Option<u32>> = if opts.simultaneous {
        orthogonal_set(devices.len(), &MlsParams::default())?
            .iter()
            .map(|s| match &s.params {
                SignalParams::Mls(p) => Some(p.sequence),
                SignalParams::Sweep(_) => None,
            })
            .collect()
    } else {
        vec![None; devices.len()]
    };
    let request = |seq: Option<u32>| {
        serde_json::to_vec(&Command::TestTone(TestToneRequest {
            signal: Some(opts.signal.as_str().into()),
            run_id: Some(run_id.clone()),
            sequence: seq,
            include_ir: opts.report_dir.is_some().then_some(true),
            ..Default::default()
        }))
    };
    let mut answers: BTreeMap<String, CalibrationResult> = BTreeMap::new();
    if opts.simultaneous {
        bar.set_message(format!("{} devices at once", devices.len()));
        for (d, seq) in devices.iter().zip(&sequences) {
            conn.client
                .publish(topics::command(d), QoS::AtLeastOnce, false, request(*seq)?)
                .await?;
        }
        let mut pending: BTreeSet<String> = devices.iter().cloned().collect();
        let deadline = Instant::now() + opts.timeout;
        conn.collect(&run_id, &mut pending, deadline, |r| {
            bar.inc(1);
            answers.insert(r.device.clone(), r);
        })
        .await;
    } else {
        for d in &devices {
            bar.set_message(d.clone());
            conn.client
                .publish(topics::command(d), QoS::AtLeastOnce, false, request(None)?)
                .await?;
            let mut pending: BTreeSet<String> = [d.clone()].into();
            let deadline = Instant::now() + opts.timeout;
            conn.collect(&run_id, &mut pending, deadline, |r| {
                answers.insert(r.device.clone(), r);
            })
            .await;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let mut outcomes = Vec::new();
    let mut entries = Vec::new();
    for d in &devices {
        let mut o = DeviceOutcome {
            device: d.clone(),
            ..Default::default()
        };
        match answers.get(d) {
            None => {
                let known = match conn.statuses.get(d) {
                    Some(s) if s.state == "offline" => "its status says offline".to_string(),
                    Some(s) => format!("its last status says '{}'", s.state),
                    None => "no receiver status was seen for it: unknown device?".to_string(),
                };
                o.failure = Some(format!(
                    "{d}: no answer on {} within {:.1} s ({known}); profile not touched",
                    topics::calibration(d),
                    opts.timeout.as_secs_f64()
                ));
            }
            Some(r) if r.error.is_some() || r.latency_ms.is_none() => {
                o.failure = Some(format!(
                    "{d}: {}; profile not touched",
                    r.error.as_deref().unwrap_or("answer without a latency")
                ));
            }
            Some(r) => {
                o.latency_ms = r.latency_ms;
                o.uncertainty_ms = r.uncertainty_ms;
                o.confidence = r.confidence;
                o.signal = r.signal.clone();
                if let (Some(dir), Some(m)) = (&opts.profiles_dir, measurement_of(r, opts.signal)) {
                    let path = dir.join(format!("{d}.json"));
                    match apply_measurement(&path, &m) {
                        Ok(change) => o.profile = Some(change),
                        Err(e) => o.failure = Some(format!("{d}: measured, but {e}")),
                    }
                }
            }
        }
        entries.push(ReportEntry {
            device: d.clone(),
            analysis: answers.get(d).and_then(|r| analysis_of(r, opts.signal)),
            change: o.profile.clone(),
            error: o.failure.clone(),
            true_latency_ms: None,
        });
        outcomes.push(o);
    }
    let mut run = CalibrationRun {
        mode: "mqtt".into(),
        run_id: Some(run_id),
        signal: opts.signal.as_str().into(),
        simultaneous: opts.simultaneous,
        elapsed_s: Some(started.elapsed().as_secs_f64()),
        devices: outcomes,
        report_dir: opts.report_dir.as_ref().map(|d| d.display().to_string()),
        ..Default::default()
    };
    run.tally();
    if let Some(dir) = &opts.report_dir {
        if let Err(e) = write_report(dir, &entries) {
            tracing::warn!("{e}");
        }
    }
    if let Ok(payload) = serde_json::to_vec(&run) {
        let _ = conn
            .client
            .publish(SUMMARY_TOPIC, QoS::AtLeastOnce, false, payload)
            .await;
    }
    conn.close().await;
    Ok(run)
}
