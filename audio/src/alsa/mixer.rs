//! An ALSA output's hardware volume: the card's playback mixer element (`Master`,
//! `PCM`, `Digital`, ... as `alsamixer` shows them), set through the `alsa` crate's
//! simple mixer API, so volume is applied by the device and the samples keep their
//! full resolution.
//!
//! The mixer is reopened for every change (a few syscalls; volume changes are rare)
//! so the sink holds no ALSA handle outside its audio stream.

use alsa::mixer::{MilliBel, Mixer, Selem};
use alsa::Round;

/// Element names tried first, in order (the usual names of a card's main volume).
const PREFERRED: &[&str] = &[
    "Master",
    "PCM",
    "Digital",
    "Speaker",
    "Headphone",
    "HDMI",
    "Playback",
];
/// Quietest level set for a non-zero volume, dB (below it the mute switch or the
/// element's minimum applies).
const FLOOR_DB: f64 = -60.0;

/// A playback mixer element of a card: the control device and the element name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardwareMixer {
    /// ALSA control name (`hw:CARD=vc4hdmi`, `hw:1`, `default`, `pulse`).
    pub control: String,
    /// Simple element name (`PCM`, `Master`, ...).
    pub element: String,
}

/// The control device that holds the mixer of ALSA PCM `pcm` (`None`: `default`):
/// `hw:CARD=x` for any name with `CARD=x`, `hw:N` for `hw:N,..`/`plughw:N,..`, the
/// name itself for `default` and the `pulse` PCM; `None` for other plugins.
pub fn control_for_pcm(pcm: Option<&str>) -> Option<String> {
    let pcm = pcm.unwrap_or("default").trim();
    if pcm.is_empty() || pcm == "default" {
        return Some("default".into());
    }
    if pcm.starts_with("pulse") {
        return Some(pcm.to_string());
    }
    if let Some(i) = pcm.find("CARD=") {
        let card: String = pcm[i + 5..].chars().take_while(|c| *c != ',').collect();
        return (!card.is_empty()).then(|| format!("hw:CARD={card}"));
    }
    for prefix in ["hw:", "plughw:", "sysdefault:"] {
        if let Some(rest) = pcm.strip_prefix(prefix) {
            let card: String = rest.chars().take_while(|c| *c != ',').collect();
            return (!card.is_empty()).then(|| format!("hw:{card}"));
        }
    }
    None
}

impl HardwareMixer {
    /// Finds the playback volume element of the card behind `pcm`: a preferred name
    /// (`Master`, `PCM`, `Digital`, ...), else the first element with a playback
    /// volume. `None` when the output has none (then samples are scaled).
    pub fn find(pcm: Option<&str>) -> Option<Self> {
        let control = control_for_pcm(pcm)?;
        let mixer = Mixer::new(&control, false).ok()?;
        let mut names = Vec::new();
        for elem in mixer.iter() {
            let Some(selem) = Selem::new(elem) else {
                continue;
            };
            if !selem.has_playback_volume() {
                continue;
            }
            if let Ok(n) = selem.get_id().get_name() {
                names.push(n.to_string());
            }
        }
        let element = PREFERRED
            .iter()
            .find_map(|p| names.iter().find(|n| n == p))
            .or_else(|| names.first())?
            .clone();
        Some(Self { control, element })
    }

    /// Sets the element to `volume` (linear amplitude 0..=1: 20·log10(volume) dB where
    /// the element has a dB scale, floored at −60 dB; else linear in its raw range)
    /// and its switch to `!muted` (or its minimum when it has no switch).
    /// Errors: the control cannot be opened, the element is gone, ALSA refused.
    pub fn set(&self, volume: f64, muted: bool) -> Result<(), String> {
        let mixer = Mixer::new(&self.control, false)
            .map_err(|e| format!("cannot open mixer {}: {e}", self.control))?;
        let selem = mixer
            .iter()
            .filter_map(Selem::new)
            .find(|s| s.get_id().get_name().is_ok_and(|n| n == self.element))
            .ok_or_else(|| format!("mixer {} has no element {}", self.control, self.element))?;
        let v = if volume.is_finite() {
            volume.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let (min, max) = selem.get_playback_volume_range();
        let (min_db, max_db) = selem.get_playback_db_range();
        let silent = muted || v == 0.0;
        let res = if silent && !selem.has_playback_switch() {
            selem.set_playback_volume_all(min)
        } else if max_db.0 > min_db.0 && max_db.0 - min_db.0 < 20_000 {
            let db = (20.0 * v.max(1e-6).log10()).max(FLOOR_DB);
            let mb = ((db * 100.0) as i64).clamp(min_db.0, max_db.0);
            selem.set_playback_db_all(MilliBel(mb), Round::Floor)
        } else {
            selem.set_playback_volume_all(min + ((max - min) as f64 * v).round() as i64)
        };
        res.map_err(|e| format!("mixer {} {}: {e}", self.control, self.element))?;
        if selem.has_playback_switch() {
            selem
                .set_playback_switch_all(i32::from(!silent))
                .map_err(|e| format!("mixer {} {} switch: {e}", self.control, self.element))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_of_a_pcm() {
        assert_eq!(control_for_pcm(None).as_deref(), Some("default"));
        assert_eq!(
            control_for_pcm(Some("hdmi:CARD=vc4hdmi,DEV=0")).as_deref(),
            Some("hw:CARD=vc4hdmi")
        );
        assert_eq!(control_for_pcm(Some("plughw:1,0")).as_deref(), Some("hw:1"));
        assert_eq!(
            control_for_pcm(Some("plughw:CARD=Device")).as_deref(),
            Some("hw:CARD=Device")
        );
        assert_eq!(control_for_pcm(Some("pulse")).as_deref(), Some("pulse"));
        assert_eq!(control_for_pcm(Some("dmix")), None);
        assert_eq!(control_for_pcm(Some("hw:")), None);
    }
}
