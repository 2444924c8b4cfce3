//! The sync controller's MQTT side: reads `syncstream/drift/+`, answers on
//! `syncstream/buffer_offset/<device>` (retained, so a receiver that restarts gets its
//! offset back at once), and resets a device on its `resync` command.

use std::sync::{Arc, Mutex};

use rumqttc::QoS;
use syncstream_protocol::messages::{parse, topics, Command, DriftReport};
use syncstream_protocol::mqtt::{connect, drive, BrokerUrl};
use tracing::{debug, info, warn};

use crate::controller::{Decision, LockState, SyncController};
use crate::history::ProfileKeeper;

/// Runs the controller's MQTT client forever. With `keeper`, every settled offset is
/// fed to the auto-calibration history ([`crate::history`]).
pub async fn run_controller(
    url: BrokerUrl,
    controller: Arc<Mutex<SyncController>>,
    mut keeper: Option<ProfileKeeper>,
) {
    let client_id = format!("syncstream-controller-{}", std::process::id());
    let (client, eventloop) = connect(&url, &client_id, None);
    let publisher = client.clone();
    let subs = vec![
        topics::DRIFT_ALL.to_string(),
        format!("{}/command/+", syncstream_protocol::messages::TOPIC_ROOT),
    ];
    drive(
        client,
        eventloop,
        subs,
        |_| info!("sync controller connected to {url}"),
        |p| {
            if let Some(device) = topics::device_of(&p.topic, "command") {
                if let Ok(Command::Resync) = parse::<Command>(&p.topic, &p.payload) {
                    info!(device, "resync: forgetting the device's lock");
                    controller.lock().unwrap().reset(device);
                    if let Some(k) = keeper.as_mut() {
                        k.reset(device);
                    }
                }
                return;
            }
            let Some(device) = topics::device_of(&p.topic, "drift") else { return };
            let report: DriftReport = match parse(&p.topic, &p.payload) {
                Ok(r) => r,
                Err(e) => {
                    warn!("{e}");
                    return;
                }
            };
            if report.device != device {
                warn!("drift report on {} names device '{}'; ignored", p.topic, report.device);
                return;
            }
            let (decision, settled) = {
                let mut c = controller.lock().unwrap();
                let d = c.on_report(&report);
                let settled = c
                    .device(device)
                    .filter(|s| s.state == LockState::Tracking)
                    .and_then(|s| s.offset_ms);
                (d, settled)
            };
            if let (Some(k), Some(offset_ms)) = (keeper.as_mut(), settled) {
                match k.observe(device, report.ts_us, offset_ms) {
                    Ok(Some(change)) => info!(
                        device,
                        previous_ms = change.previous_base_latency_ms,
                        new_ms = change.new_base_latency_ms,
                        "profile updated from the offset history"
                    ),
                    Ok(None) => {}
                    Err(e) => warn!("{e}"),
                }
            }
            match decision {
                Decision::Publish(offset) => {
                    info!(device, offset_ms = offset.offset_ms, drift_ms = ?report.drift_ms, "new buffer offset");
                    match serde_json::to_vec(&offset) {
                        Ok(payload) => {
                            if let Err(e) =
                                publisher.try_publish(topics::buffer_offset(device), QoS::AtLeastOnce, true, payload)
                            {
                                warn!("cannot publish the offset for {device}: {e}");
                            }
                        }
                        Err(e) => warn!("cannot encode the offset for {device}: {e}"),
                    }
                }
                Decision::Hold => debug!(device, "in sync"),
                Decision::Ignored(why) => debug!(device, "report ignored: {why}"),
            }
        },
    )
    .await
}
