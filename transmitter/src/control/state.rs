//! The control plane's state, without I/O: groups (zones) and the stream each plays,
//! which device is in which group, each device's volume, mute and manual adjustment,
//! and what the system last said about each device (status, drift report, offset).
//! Every change is checked whole before anything is applied, so a refused request
//! leaves the state as it was.
//!
//! A device is in exactly one group: the one named in `membership`, else
//! [`DEFAULT_GROUP`], which always exists and cannot be deleted or renamed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use syncstream_protocol::messages::{BufferOffset, DeviceSettings, DriftReport, Status};
use syncstream_shared::names::check_device_name;

use super::error::ApiError;
use crate::stream_server::DEFAULT_STREAM;

/// The group every device is in unless put elsewhere.
pub const DEFAULT_GROUP: &str = "default";
/// Most groups.
pub const MAX_GROUPS: usize = 64;
/// Most devices remembered.
pub const MAX_DEVICES: usize = 256;
/// What was heard from a device not heard from for this long is forgotten, µs (a
/// day); its settings stay.
pub const LIVE_EXPIRY_US: i64 = 24 * 3600 * 1_000_000;
/// A device without a status for this long is offline, µs (statuses come every 5 s).
pub const ONLINE_TIMEOUT_US: i64 = 15_000_000;
/// Longest text kept from a device's status or report (a reason, a version), chars.
pub const MAX_TEXT_CHARS: usize = 300;

/// Cuts `text` to [`MAX_TEXT_CHARS`] characters.
fn cut(text: &mut String) {
    if let Some((i, _)) = text.char_indices().nth(MAX_TEXT_CHARS) {
        text.truncate(i);
    }
}

/// Drift reports kept per device (an hour at one per 2.5 s).
pub const HISTORY_REPORTS: usize = 1_500;

/// A group's settings (its devices are in [`Settings::membership`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSettings {
    /// The stream it plays.
    pub stream: String,
    /// Group volume, 0..=1 (times each device's).
    pub volume: f64,
    /// Group mute.
    pub muted: bool,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            stream: DEFAULT_STREAM.into(),
            volume: 1.0,
            muted: false,
        }
    }
}

/// A device's own settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceSettingsStored {
    /// Volume, 0..=1.
    pub volume: f64,
    /// Mute.
    pub muted: bool,
    /// Manual trim, ms (positive: later); the controller applies it.
    pub manual_adjust_ms: f64,
}

impl Default for DeviceSettingsStored {
    fn default() -> Self {
        Self {
            volume: 1.0,
            muted: false,
            manual_adjust_ms: 0.0,
        }
    }
}

/// A stream added through the API (reopened after a restart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredStream {
    /// Its name.
    pub name: String,
    /// Its URI.
    pub uri: String,
}

/// What persists across a restart (`state.json`, see [`super::persist`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// File format version.
    pub version: u32,
    /// Groups by name (always with [`DEFAULT_GROUP`]).
    pub groups: BTreeMap<String, GroupSettings>,
    /// Device → group, for devices not in [`DEFAULT_GROUP`].
    #[serde(default)]
    pub membership: BTreeMap<String, String>,
    /// Device settings by name.
    #[serde(default)]
    pub devices: BTreeMap<String, DeviceSettingsStored>,
    /// Streams added at runtime.
    #[serde(default)]
    pub streams: Vec<StoredStream>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            version: 1,
            groups: BTreeMap::from([(DEFAULT_GROUP.to_string(), GroupSettings::default())]),
            membership: BTreeMap::new(),
            devices: BTreeMap::new(),
            streams: Vec::new(),
        }
    }
}

impl Settings {
    /// Checks a loaded file: names, ranges, a default group, members of existing
    /// groups, and bounds. The error names the field.
    pub fn check(&self) -> Result<(), String> {
        if !self.groups.contains_key(DEFAULT_GROUP) {
            return Err(format!("groups: no '{DEFAULT_GROUP}' group"));
        }
        if self.groups.len() > MAX_GROUPS || self.devices.len() > MAX_DEVICES {
            return Err("too many groups or devices".into());
        }
        for (name, g) in &self.groups {
            check_device_name(name).map_err(|e| format!("groups.{name}: {e}"))?;
            check_device_name(&g.stream).map_err(|e| format!("groups.{name}.stream: {e}"))?;
            check_volume(g.volume).map_err(|e| format!("groups.{name}.{e}"))?;
        }
        for (d, g) in &self.membership {
            check_device_name(d).map_err(|e| format!("membership.{d}: {e}"))?;
            if !self.groups.contains_key(g) {
                return Err(format!("membership.{d}: no group '{g}'"));
            }
        }
        for (d, s) in &self.devices {
            check_device_name(d).map_err(|e| format!("devices.{d}: {e}"))?;
            check_volume(s.volume).map_err(|e| format!("devices.{d}.{e}"))?;
            if !(s.manual_adjust_ms.is_finite()
                && s.manual_adjust_ms.abs() <= crate::controller::MAX_MANUAL_ADJUST_MS)
            {
                return Err(format!("devices.{d}.manual_adjust_ms: out of range"));
            }
        }
        for s in &self.streams {
            check_device_name(&s.name).map_err(|e| format!("streams.{}: {e}", s.name))?;
        }
        Ok(())
    }
}

/// Checks a volume; the error is `volume: ...`.
pub fn check_volume(v: f64) -> Result<(), String> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(format!("volume: {v} is not between 0 and 1"))
    }
}

/// One drift report as kept for the sync summary and the heatmap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReportPoint {
    /// Transmitter time of the measurement, µs.
    pub ts_us: i64,
    /// The drift, ms (`None`: no estimate).
    pub drift_ms: Option<f64>,
    /// How far the sound was from where it should sit (drift minus the manual
    /// adjustment), ms, for estimates of at least 0.6 confidence.
    pub residual_ms: Option<f64>,
    /// Confidence, 0..=1.
    pub confidence: f64,
}

/// What the system last said about a device.
#[derive(Debug, Clone, Default)]
pub struct LiveDevice {
    /// Its last status, and when it came (transmitter clock, µs).
    pub status: Option<(Status, i64)>,
    /// Its last drift report.
    pub report: Option<DriftReport>,
    /// The last offset the controller published.
    pub offset: Option<BufferOffset>,
    /// Its target (`syncstream/config`).
    pub target: Option<String>,
    /// When anything was last heard from it, µs.
    pub last_seen_us: Option<i64>,
    /// Recent reports, oldest first.
    pub history: VecDeque<ReportPoint>,
}

/// The control plane's state (see the module docs).
#[derive(Debug, Default)]
pub struct ControlState {
    /// What persists.
    pub settings: Settings,
    /// What was heard, by device.
    pub live: BTreeMap<String, LiveDevice>,
}

/// A group request (`PUT /api/v1/groups/{name}`, `syncstream/group/<name>`).
pub use syncstream_protocol::messages::GroupRequest;

impl ControlState {
    /// A state from persisted settings (checked by the caller).
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            live: BTreeMap::new(),
        }
    }

    /// Every device known: heard from, set, or put in a group.
    pub fn devices(&self) -> BTreeSet<String> {
        self.live
            .keys()
            .chain(self.settings.devices.keys())
            .chain(self.settings.membership.keys())
            .cloned()
            .collect()
    }

    /// Whether `device` is known.
    pub fn knows(&self, device: &str) -> bool {
        self.live.contains_key(device)
            || self.settings.devices.contains_key(device)
            || self.settings.membership.contains_key(device)
    }

    /// `device`'s group.
    pub fn group_of(&self, device: &str) -> &str {
        self.settings
            .membership
            .get(device)
            .map_or(DEFAULT_GROUP, String::as_str)
    }

    /// Group `name`'s settings (the defaults for a group that does not exist, which
    /// the checks on every change and on loading rule out).
    pub fn group(&self, name: &str) -> GroupSettings {
        self.settings.groups.get(name).cloned().unwrap_or_default()
    }

    /// `device`'s own settings.
    pub fn device_settings(&self, device: &str) -> DeviceSettingsStored {
        self.settings
            .devices
            .get(device)
            .cloned()
            .unwrap_or_default()
    }

    /// Which stream each known device plays.
    pub fn routes(&self) -> BTreeMap<String, String> {
        self.devices()
            .into_iter()
            .map(|d| {
                let s = self.group(self.group_of(&d)).stream;
                (d, s)
            })
            .collect()
    }

    /// The retained `syncstream/settings/<device>` payload.
    pub fn settings_message(&self, device: &str) -> DeviceSettings {
        let group = self.group_of(device);
        let g = &self.group(group);
        let d = self.device_settings(device);
        DeviceSettings {
            device: device.to_string(),
            group: group.to_string(),
            stream: g.stream.clone(),
            volume: d.volume,
            muted: d.muted,
            group_volume: g.volume,
            group_muted: g.muted,
        }
    }

    fn entry(&mut self, device: &str) -> Option<&mut DeviceSettingsStored> {
        if !self.settings.devices.contains_key(device) && self.settings.devices.len() >= MAX_DEVICES
        {
            return None;
        }
        Some(self.settings.devices.entry(device.to_string()).or_default())
    }

    /// Sets a device's volume (checked). Errors: 422 out of range or too many devices.
    pub fn set_volume(&mut self, device: &str, volume: f64) -> Result<(), ApiError> {
        check_volume(volume).map_err(ApiError::unprocessable)?;
        self.entry(device)
            .ok_or_else(|| ApiError::unprocessable(format!("at most {MAX_DEVICES} devices")))?
            .volume = volume;
        Ok(())
    }

    /// Sets a device's mute. Errors: 422 too many devices.
    pub fn set_muted(&mut self, device: &str, muted: bool) -> Result<(), ApiError> {
        self.entry(device)
            .ok_or_else(|| ApiError::unprocessable(format!("at most {MAX_DEVICES} devices")))?
            .muted = muted;
        Ok(())
    }

    /// Records a manual adjustment the controller accepted.
    pub fn set_manual_adjust(&mut self, device: &str, ms: f64) -> Result<(), ApiError> {
        self.entry(device)
            .ok_or_else(|| ApiError::unprocessable(format!("at most {MAX_DEVICES} devices")))?
            .manual_adjust_ms = ms;
        Ok(())
    }

    /// Creates or changes group `name` (only the fields given; `devices` move into it,
    /// and its former devices not listed go to [`DEFAULT_GROUP`]); `rename` renames it.
    /// `has_stream` says which streams exist. Returns the devices whose settings or
    /// stream changed.
    ///
    /// Errors: 422 for a bad name, an unknown stream or device, a volume out of range;
    /// 409 for renaming the default group or onto a taken name, or too many groups.
    pub fn put_group(
        &mut self,
        name: &str,
        req: &GroupRequest,
        has_stream: &dyn Fn(&str) -> bool,
    ) -> Result<BTreeSet<String>, ApiError> {
        check_device_name(name).map_err(|e| {
            ApiError::unprocessable(e.to_string().replace("device name", "group name"))
        })?;
        if req.delete {
            return Err(ApiError::unprocessable(
                "delete: use DELETE /api/v1/groups/{name} (or {\"delete\":true} on syncstream/group/<name>)",
            ));
        }
        let exists = self.settings.groups.contains_key(name);
        if !exists && self.settings.groups.len() >= MAX_GROUPS {
            return Err(ApiError::conflict(format!("at most {MAX_GROUPS} groups")));
        }
        if let Some(s) = &req.stream {
            if !has_stream(s) {
                return Err(ApiError::unprocessable(format!(
                    "stream: no stream named '{s}'"
                )));
            }
        }
        if let Some(v) = req.volume {
            check_volume(v).map_err(ApiError::unprocessable)?;
        }
        if let Some(devs) = &req.devices {
            if devs.len() > MAX_DEVICES {
                return Err(ApiError::unprocessable(format!(
                    "devices: more than {MAX_DEVICES}"
                )));
            }
            for (i, d) in devs.iter().enumerate() {
                if !self.knows(d) {
                    return Err(ApiError::unprocessable(format!(
                        "devices[{i}]: no device named '{}'",
                        d.chars().take(64).collect::<String>()
                    )));
                }
            }
        }
        let new_name = match &req.rename {
            Some(n) if n != name => {
                check_device_name(n).map_err(|e| {
                    ApiError::unprocessable(format!(
                        "rename: {}",
                        e.to_string().replace("device name", "group name")
                    ))
                })?;
                if name == DEFAULT_GROUP {
                    return Err(ApiError::conflict(
                        "rename: the default group keeps its name",
                    ));
                }
                if self.settings.groups.contains_key(n) {
                    return Err(ApiError::conflict(format!(
                        "rename: a group named '{n}' exists"
                    )));
                }
                n.clone()
            }
            _ => name.to_string(),
        };
        // Checked: apply.
        let before = self.routes_and_settings();
        let mut g = self.settings.groups.remove(name).unwrap_or_default();
        if let Some(s) = &req.stream {
            g.stream = s.clone();
        }
        if let Some(v) = req.volume {
            g.volume = v;
        }
        if let Some(m) = req.muted {
            g.muted = m;
        }
        self.settings.groups.insert(new_name.clone(), g);
        for grp in self.settings.membership.values_mut() {
            if grp == name {
                *grp = new_name.clone();
            }
        }
        if let Some(devs) = &req.devices {
            let listed: BTreeSet<&String> = devs.iter().collect();
            self.settings
                .membership
                .retain(|d, g| *g != new_name || listed.contains(d));
            for d in devs {
                self.settings.membership.insert(d.clone(), new_name.clone());
            }
        }
        self.settings.membership.retain(|_, g| g != DEFAULT_GROUP);
        Ok(self.changed_since(&before))
    }

    /// Deletes group `name`; its devices go to [`DEFAULT_GROUP`]. Returns the devices
    /// whose settings or stream changed.
    ///
    /// Errors: 404 no such group; 409 the default group.
    pub fn delete_group(&mut self, name: &str) -> Result<BTreeSet<String>, ApiError> {
        if name == DEFAULT_GROUP {
            return Err(ApiError::conflict("the default group cannot be deleted"));
        }
        if !self.settings.groups.contains_key(name) {
            return Err(ApiError::not_found(format!("no group named '{name}'")));
        }
        let before = self.routes_and_settings();
        self.settings.groups.remove(name);
        self.settings.membership.retain(|_, g| g != name);
        Ok(self.changed_since(&before))
    }

    /// Groups playing stream `name`.
    pub fn groups_playing(&self, stream: &str) -> Vec<String> {
        self.settings
            .groups
            .iter()
            .filter(|(_, g)| g.stream == stream)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn routes_and_settings(&self) -> BTreeMap<String, DeviceSettings> {
        self.devices()
            .into_iter()
            .map(|d| {
                let s = self.settings_message(&d);
                (d, s)
            })
            .collect()
    }

    fn changed_since(&self, before: &BTreeMap<String, DeviceSettings>) -> BTreeSet<String> {
        self.routes_and_settings()
            .into_iter()
            .filter(|(d, s)| before.get(d) != Some(s))
            .map(|(d, _)| d)
            .collect()
    }

    /// The groups as the API shows them.
    pub fn groups_json(&self) -> Value {
        let mut members: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for d in self.devices() {
            let g = self.group_of(&d).to_string();
            members
                .entry(
                    self.settings
                        .groups
                        .get_key_value(&g)
                        .map_or(DEFAULT_GROUP, |(k, _)| k.as_str()),
                )
                .or_default()
                .push(d);
        }
        let groups: Vec<Value> = self
            .settings
            .groups
            .iter()
            .map(|(name, g)| {
                json!({
                    "name": name,
                    "stream": g.stream,
                    "devices": members.get(name.as_str()).cloned().unwrap_or_default(),
                    "volume": g.volume,
                    "muted": g.muted,
                })
            })
            .collect();
        json!({ "groups": groups })
    }

    /// A device heard from (any message) at `now_us`. At most [`MAX_DEVICES`] are
    /// kept: a new one makes room by forgetting the one heard from longest ago (so
    /// made-up devices cannot lock real ones out, and do not pile up). Returns `true`.
    fn heard(&mut self, device: &str, now_us: i64) -> bool {
        if !self.live.contains_key(device) && self.live.len() >= MAX_DEVICES {
            if let Some(stalest) = self
                .live
                .iter()
                .min_by_key(|(_, l)| l.last_seen_us.unwrap_or(i64::MIN))
                .map(|(d, _)| d.clone())
            {
                self.live.remove(&stalest);
            }
        }
        self.live
            .entry(device.to_string())
            .or_default()
            .last_seen_us = Some(now_us);
        true
    }

    /// A receiver's status arrived at `now_us` (its texts cut to [`MAX_TEXT_CHARS`]).
    /// Returns whether the device is new.
    pub fn on_status(&mut self, mut status: Status, now_us: i64) -> bool {
        for text in [
            status.reason.as_mut(),
            Some(&mut status.output),
            status.version.as_mut(),
            status.stream.as_mut(),
            status.group.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            cut(text);
        }
        let new = !self.live.contains_key(&status.device);
        let device = status.device.clone();
        if !self.heard(&device, now_us) {
            return false;
        }
        if let Some(l) = self.live.get_mut(&device) {
            l.status = Some((status, now_us));
        }
        new
    }

    /// A drift report arrived at `now_us` (its reason cut to [`MAX_TEXT_CHARS`]);
    /// `adjust_ms` is the device's manual adjustment. Returns whether the device is new.
    pub fn on_report(&mut self, mut report: DriftReport, now_us: i64, adjust_ms: f64) -> bool {
        if let Some(r) = report.reason.as_mut() {
            cut(r);
        }
        let new = !self.live.contains_key(&report.device);
        let device = report.device.clone();
        if !self.heard(&device, now_us) {
            return false;
        }
        if let Some(l) = self.live.get_mut(&device) {
            l.history.push_back(ReportPoint {
                ts_us: report.ts_us,
                drift_ms: report.drift_ms,
                residual_ms: report
                    .drift_ms
                    .filter(|_| report.confidence >= 0.6)
                    .map(|d| d - adjust_ms),
                confidence: report.confidence,
            });
            while l.history.len() > HISTORY_REPORTS {
                l.history.pop_front();
            }
            l.report = Some(report);
        }
        new
    }

    /// Forgets what was heard from devices not heard from for [`LIVE_EXPIRY_US`] at
    /// `now_us` (their settings stay); returns their names.
    pub fn expire(&mut self, now_us: i64) -> Vec<String> {
        let old: Vec<String> = self
            .live
            .iter()
            .filter(|(_, l)| {
                l.last_seen_us
                    .is_none_or(|t| now_us.saturating_sub(t) > LIVE_EXPIRY_US)
            })
            .map(|(d, _)| d.clone())
            .collect();
        for d in &old {
            self.live.remove(d);
        }
        old
    }

    /// The controller published `offset`.
    pub fn on_offset(&mut self, offset: BufferOffset) {
        if let Some(l) = self.live.get_mut(&offset.device) {
            l.offset = Some(offset);
        }
    }

    /// Targets from a `syncstream/config` push.
    pub fn on_config(&mut self, targets: BTreeMap<String, String>) {
        for (d, mut t) in targets {
            if let Some(l) = self.live.get_mut(&d) {
                cut(&mut t);
                l.target = Some(t);
            }
        }
    }

    /// Forgets `device`: its settings, its group membership and what was heard from
    /// it. Returns whether it was known.
    pub fn forget(&mut self, device: &str) -> bool {
        let known = self.knows(device);
        self.live.remove(device);
        self.settings.devices.remove(device);
        self.settings.membership.remove(device);
        known
    }

    /// Whether `device` is online at `now_us`.
    pub fn online(&self, device: &str, now_us: i64) -> bool {
        self.live
            .get(device)
            .and_then(|l| l.status.as_ref())
            .is_some_and(|(s, at)| s.state != "offline" && now_us - at <= ONLINE_TIMEOUT_US)
    }

    /// A device as the API shows it (`locked`: the controller tracks it).
    pub fn device_json(&self, device: &str, now_us: i64, locked: bool) -> Value {
        let live = self.live.get(device);
        let status = live.and_then(|l| l.status.as_ref()).map(|(s, _)| s);
        let report = live.and_then(|l| l.report.as_ref());
        let offset_ms = live
            .and_then(|l| l.offset.as_ref())
            .map(|o| o.offset_ms)
            .or(status.map(|s| s.offset_ms));
        let d = self.device_settings(device);
        let group = self.group_of(device);
        let g = &self.group(group);
        let online = self.online(device, now_us);
        json!({
            "name": device,
            "group": group,
            "stream": g.stream,
            "output": status.map(|s| s.output.clone()).filter(|o| !o.is_empty()),
            "target": live.and_then(|l| l.target.clone()),
            "online": online,
            "state": if online { status.map_or("unknown".to_string(), |s| s.state.clone()) } else { "offline".to_string() },
            "offset_ms": offset_ms,
            "manual_adjust_ms": d.manual_adjust_ms,
            "drift_ms": report.and_then(|r| r.drift_ms),
            "confidence": report.map(|r| r.confidence),
            "signal_strength_db": report.map(|r| r.signal_strength_db),
            "locked": locked,
            "volume": d.volume,
            "muted": d.muted,
            "group_volume": g.volume,
            "group_muted": g.muted,
            "underruns": status.map_or(0, |s| s.underruns),
            "last_seen_us": live.and_then(|l| l.last_seen_us),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(devices: &[&str]) -> ControlState {
        let mut s = ControlState::default();
        for d in devices {
            s.on_status(
                Status {
                    device: d.to_string(),
                    state: "playing".into(),
                    ..Default::default()
                },
                0,
            );
        }
        s
    }

    fn req(json: &str) -> GroupRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn groups_move_devices_and_streams() {
        let mut s = state_with(&["kitchen", "tv", "cast"]);
        let has = |n: &str| n == "default" || n == "radio";
        let changed = s
            .put_group(
                "up",
                &req(r#"{"stream":"radio","devices":["kitchen","tv"],"volume":0.5}"#),
                &has,
            )
            .unwrap();
        assert_eq!(
            changed,
            ["kitchen", "tv"].iter().map(|x| x.to_string()).collect()
        );
        assert_eq!(s.routes()["kitchen"], "radio");
        assert_eq!(s.routes()["cast"], "default");
        assert_eq!(s.settings_message("tv").group_volume, 0.5);
        // Listing only kitchen sends tv back to the default group.
        s.put_group("up", &req(r#"{"devices":["kitchen"]}"#), &has)
            .unwrap();
        assert_eq!(s.group_of("tv"), DEFAULT_GROUP);
        // Rename keeps members; delete sends them home.
        s.put_group("up", &req(r#"{"rename":"upstairs"}"#), &has)
            .unwrap();
        assert_eq!(s.group_of("kitchen"), "upstairs");
        let changed = s.delete_group("upstairs").unwrap();
        assert!(changed.contains("kitchen"));
        assert_eq!(s.group_of("kitchen"), DEFAULT_GROUP);
        assert!(s.settings.check().is_ok());
    }

    #[test]
    fn bad_group_requests_change_nothing() {
        let mut s = state_with(&["kitchen"]);
        let has = |n: &str| n == "default";
        s.put_group("a", &req("{}"), &has).unwrap();
        let before = s.settings.clone();
        for (name, body, status, needle) in [
            ("b", r#"{"stream":"nope"}"#, 422, "stream"),
            ("b", r#"{"devices":["kitchen","ghost"]}"#, 422, "devices[1]"),
            ("b", r#"{"volume":1.5}"#, 422, "volume"),
            ("b/c", "{}", 422, "group name"),
            ("default", r#"{"rename":"x"}"#, 409, "rename"),
            ("b", r#"{"rename":"a"}"#, 409, "rename"),
            ("b", r#"{"rename":"no good"}"#, 422, "rename"),
        ] {
            let e = s.put_group(name, &req(body), &has).unwrap_err();
            assert_eq!(e.status.as_u16(), status, "{body}: {e}");
            assert!(e.message.contains(needle), "{body}: {e}");
        }
        assert_eq!(s.delete_group("default").unwrap_err().status.as_u16(), 409);
        assert_eq!(s.delete_group("zz").unwrap_err().status.as_u16(), 404);
        assert_eq!(
            s.settings, before,
            "refused requests leave the state as it was"
        );
    }

    #[test]
    fn residuals_take_the_manual_adjustment_off() {
        let mut s = state_with(&["tv"]);
        let r = DriftReport {
            device: "tv".into(),
            drift_ms: Some(2.1),
            confidence: 0.9,
            signal_strength_db: -30.0,
            ts_us: 5,
            applied_offset_ms: 10.0,
            reason: None,
            step: false,
            uncertainty_ms: None,
        };
        s.on_report(r.clone(), 5, 2.0);
        s.on_report(
            DriftReport {
                confidence: 0.2,
                ..r
            },
            6,
            2.0,
        );
        let h = &s.live["tv"].history;
        assert!((h[0].residual_ms.unwrap() - 0.1).abs() < 1e-9);
        assert_eq!(
            h[1].residual_ms, None,
            "doubtful estimates have no residual"
        );
    }

    /// Issue 14: drift reports and statuses for 2000 made-up devices are not all
    /// kept; a real device that comes after them is tracked; old ones expire.
    #[test]
    fn made_up_devices_are_bounded_and_expire() {
        let mut s = ControlState::default();
        let report = |d: &str, t: i64| DriftReport {
            device: d.into(),
            drift_ms: Some(0.5),
            confidence: 0.9,
            signal_strength_db: -30.0,
            ts_us: t,
            applied_offset_ms: 10.0,
            reason: None,
            step: false,
            uncertainty_ms: None,
        };
        for k in 0..2000i64 {
            let d = format!("fake{k}");
            s.on_report(report(&d, k), k, 0.0);
            s.on_status(
                Status {
                    device: d,
                    state: "playing".into(),
                    ..Default::default()
                },
                k,
            );
        }
        assert_eq!(s.live.len(), MAX_DEVICES);
        // Long texts are cut.
        s.on_status(
            Status {
                device: "fake1999".into(),
                state: "error".into(),
                reason: Some("ü".repeat(100_000)),
                version: Some("v".repeat(100_000)),
                ..Default::default()
            },
            2000,
        );
        let (st, _) = s.live["fake1999"].status.as_ref().unwrap();
        assert_eq!(st.reason.as_ref().unwrap().chars().count(), MAX_TEXT_CHARS);
        assert_eq!(st.version.as_ref().unwrap().len(), MAX_TEXT_CHARS);
        assert!(s.on_report(report("kitchen", 5000), 5000, 0.0), "new");
        assert!(s.live.contains_key("kitchen") && s.live.len() == MAX_DEVICES);
        assert!(!s.live.contains_key("fake0"), "the stalest went");
        let api = serde_json::to_vec(
            &s.devices()
                .iter()
                .map(|d| s.device_json(d, 5000, false))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert!(api.len() < 200 * 1024, "{} bytes", api.len());
        // A day later only what was heard since is kept.
        s.on_status(
            Status {
                device: "kitchen".into(),
                state: "playing".into(),
                ..Default::default()
            },
            LIVE_EXPIRY_US + 10_000,
        );
        let gone = s.expire(LIVE_EXPIRY_US + 10_000);
        assert_eq!(gone.len(), MAX_DEVICES - 1);
        assert_eq!(s.live.keys().collect::<Vec<_>>(), ["kitchen"]);
    }

    #[test]
    fn loaded_settings_are_checked() {
        let mut bad = Settings::default();
        bad.groups.remove(DEFAULT_GROUP);
        assert!(bad.check().unwrap_err().contains("default"));
        let mut bad = Settings::default();
        bad.membership.insert("tv".into(), "nowhere".into());
        assert!(bad.check().unwrap_err().contains("membership.tv"));
        let mut bad = Settings::default();
        bad.devices.insert(
            "tv".into(),
            DeviceSettingsStored {
                volume: 3.0,
                ..Default::default()
            },
        );
        assert!(bad.check().unwrap_err().contains("devices.tv.volume"));
    }
}
