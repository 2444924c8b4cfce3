//! Builds the virtual room of a scenario: one [`VirtualDevice`] per scenario device
//! (true latency, wander, microphone distance, SNR, reverberation or measured impulse
//! response, the other devices it hears, clock rate), shared by the simulator engine
//! and `syncstream calibrate --scenario`.

use syncstream_room::{ClockModel, Hearing, ImpulseResponse, Room, VirtualDevice};
use syncstream_shared::profile::DeviceProfile;
use syncstream_shared::time::STREAM_SAMPLE_RATE;

use crate::scenario::Scenario;

/// Most taps kept from a scenario's measured impulse response (`rir`).
const RIR_MAX_TAPS: usize = 400;

/// The scenario's devices as virtual hardware, and the profile each starts from, in
/// scenario order. Clocks run at the scenario's `clock_ppm` with a zero offset (the
/// caller may set offsets).
///
/// Errors: a profile that does not load, or an impulse response that cannot be read;
/// the message names the device.
pub fn virtual_devices(sc: &Scenario) -> anyhow::Result<(Vec<VirtualDevice>, Vec<DeviceProfile>)> {
    let mut vdevs = Vec::new();
    let mut profiles = Vec::new();
    for d in &sc.devices {
        let profile = sc
            .profile_of(d)
            .map_err(|e| anyhow::anyhow!("device {}: {e}", d.name))?;
        let mut v = VirtualDevice::new(&d.name, d.latency_ms);
        v.latency_wander_ms_per_min = d.latency_wander_ms;
        v.mic_distance_m = profile.mic_distance_m;
        v.snr_db = d.snr_db;
        v.rt60_s = d.rt60_s;
        if let Some(path) = &d.rir {
            v.rir = Some(
                ImpulseResponse::from_wav(
                    path,
                    profile.mic_distance_m,
                    STREAM_SAMPLE_RATE,
                    RIR_MAX_TAPS,
                )
                .map_err(|e| anyhow::anyhow!("device {}: {e:#}", d.name))?,
            );
        }
        v.hears = d
            .hears
            .iter()
            .map(|h| Hearing {
                device: h.device.clone(),
                gain_db: h.gain_db,
                distance_m: h.distance_m,
            })
            .collect();
        v.clock = ClockModel {
            offset_us: 0.0,
            ppm: d.clock_ppm,
        };
        vdevs.push(v);
        profiles.push(profile);
    }
    Ok((vdevs, profiles))
}

/// The scenario's room with its sample 0 at room time `origin_us` (device clocks with
/// zero offset), its virtual devices and their starting profiles.
///
/// Errors: as [`virtual_devices`], or the room refuses the devices.
pub fn build_room(
    sc: &Scenario,
    origin_us: i64,
) -> anyhow::Result<(Room, Vec<VirtualDevice>, Vec<DeviceProfile>)> {
    let (vdevs, profiles) = virtual_devices(sc)?;
    let room = Room::new(vdevs.clone(), origin_us, sc.seed)?;
    Ok((room, vdevs, profiles))
}
