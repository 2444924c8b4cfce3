//! Snapcast-style stream URIs (`--stream`): `TYPE://PATH?name=NAME&KEY=VALUE...`.
//!
//! | URI | source |
//! | --- | --- |
//! | `pipe:///tmp/snapfifo?name=radio[&sampleformat=48000:16:2][&mode=create\|read]` | raw s16le PCM from a named pipe (created if missing with `mode=create`, the default), reopened when its writer closes; silence while nobody writes |
//! | `file:///srv/music/a.flac?name=music[&loop=false]` | an audio file, decoded (any format symphonia reads; Snapcast's `file` is raw PCM) |
//! | `alsa:///?name=tv[&device=hw:1]` | an ALSA capture device |
//! | `process:///usr/bin/librespot?name=spotify&params=--backend pipe[&sampleformat=..]` | a program's standard output as raw s16le PCM, restarted when it exits |
//! | `tone` or `tone:///?name=beep&freq=440` | a sine at −12 dBFS |
//!
//! `name` is the stream's name (letters, digits, `-`, `_`; 1 to 64 characters). The
//! Snapcast parameters that do not apply here (`codec`, `chunk_ms`, `controlscript`,
//! ...) are accepted and ignored with a warning; any other parameter is an error that
//! names it.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};
use syncstream_shared::names::check_device_name;

/// Snapcast parameters that are accepted and ignored.
pub const IGNORED_SNAPCAST_PARAMS: &[&str] = &[
    "codec",
    "chunk_ms",
    "controlscript",
    "controlscriptparams",
    "dryout_ms",
    "idle_threshold",
    "silence_threshold_percent",
    "send_silence",
    "wd_timeout",
    "log_stderr",
];

/// Longest URI accepted, bytes.
pub const MAX_URI_BYTES: usize = 4096;

/// A parsed stream URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamUri {
    /// Source type (`pipe`, `file`, `alsa`, `process`, `tone`).
    pub kind: String,
    /// The path part, percent-decoded (`/tmp/snapfifo`; `/` or empty when unused).
    pub path: String,
    /// The stream's name (`name=`), checked; `None` when absent.
    pub name: Option<String>,
    /// The other parameters, percent-decoded.
    pub params: BTreeMap<String, String>,
    /// The URI as given.
    pub raw: String,
}

impl StreamUri {
    /// Parses `raw`. Errors: not a URI, a bad name, a parameter given twice; the
    /// message names the URI and the reason. Unknown source types are checked by
    /// [`super::open_uri`].
    pub fn parse(raw: &str) -> anyhow::Result<StreamUri> {
        let raw = raw.trim();
        if raw.len() > MAX_URI_BYTES {
            bail!("stream URI of {} bytes is over {MAX_URI_BYTES}", raw.len());
        }
        if raw.is_empty() {
            bail!("empty stream URI");
        }
        if !raw.contains("://") {
            // A bare type (`tone`), as Snapcast users write it.
            if raw.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Ok(StreamUri {
                    kind: raw.to_ascii_lowercase(),
                    path: String::new(),
                    name: None,
                    params: BTreeMap::new(),
                    raw: raw.to_string(),
                });
            }
            bail!("stream '{raw}' is not a URI like pipe:///tmp/snapfifo?name=radio");
        }
        let url = url::Url::parse(raw).map_err(|e| anyhow!("stream URI '{raw}': {e}"))?;
        let path = percent_decode(url.path());
        let mut params = BTreeMap::new();
        let mut name = None;
        for (k, v) in url.query_pairs() {
            let (k, v) = (k.into_owned(), v.into_owned());
            if k == "name" {
                check_device_name(&v).map_err(|e| {
                    anyhow!(
                        "stream URI '{raw}': name: {}",
                        e.to_string().replace("device name", "stream name")
                    )
                })?;
                if name.replace(v).is_some() {
                    bail!("stream URI '{raw}': name is given twice");
                }
            } else if params.insert(k.clone(), v).is_some() {
                bail!("stream URI '{raw}': parameter {k} is given twice");
            }
        }
        let host = url.host_str().unwrap_or("");
        // `file://relative/path` puts the first segment in the host: keep it.
        let path = if host.is_empty() {
            path
        } else {
            format!("{host}{path}")
        };
        Ok(StreamUri {
            kind: url.scheme().to_ascii_lowercase(),
            path,
            name,
            params,
            raw: raw.to_string(),
        })
    }

    /// The stream's name, or `fallback`.
    pub fn name_or(&self, fallback: &str) -> String {
        self.name.clone().unwrap_or_else(|| fallback.to_string())
    }

    /// Takes parameter `key` (so that [`StreamUri::finish`] sees only unknown ones).
    pub fn take(&mut self, key: &str) -> Option<String> {
        self.params.remove(key)
    }

    /// Refuses parameters no source type took (warning about ignored Snapcast ones).
    pub fn finish(&self) -> anyhow::Result<()> {
        for k in self.params.keys() {
            if IGNORED_SNAPCAST_PARAMS.contains(&k.as_str()) {
                tracing::warn!(
                    "stream URI '{}': parameter {k} does not apply here; ignored",
                    self.raw
                );
            } else {
                bail!(
                    "stream URI '{}': unknown parameter {k} for a {} stream",
                    self.raw,
                    self.kind
                );
            }
        }
        Ok(())
    }

    /// A boolean parameter (`true`/`false`/`1`/`0`), taken.
    pub fn take_bool(&mut self, key: &str, default: bool) -> anyhow::Result<bool> {
        match self.take(key).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(v) => bail!("stream URI '{}': {key}={v} is not true or false", self.raw),
        }
    }

    /// Snapcast's `sampleformat=RATE:BITS:CHANNELS` (only 16-bit), taken; default
    /// 48000:16:2. Returns (rate Hz, channels).
    pub fn take_sample_format(&mut self) -> anyhow::Result<(u32, u16)> {
        let Some(f) = self.take("sampleformat") else {
            return Ok((48_000, 2));
        };
        let parts: Vec<&str> = f.split(':').collect();
        let bad = || {
            anyhow!(
                "stream URI '{}': sampleformat={f} is not RATE:16:CHANNELS (e.g. 48000:16:2)",
                self.raw
            )
        };
        if parts.len() != 3 || parts[1] != "16" {
            return Err(bad());
        }
        let rate: u32 = parts[0].parse().map_err(|_| bad())?;
        let channels: u16 = parts[2].parse().map_err(|_| bad())?;
        if !(8_000..=384_000).contains(&rate) || !(1..=32).contains(&channels) {
            return Err(bad());
        }
        Ok((rate, channels))
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapcast_uris_parse() {
        let u =
            StreamUri::parse("pipe:///tmp/snap%20fifo?name=radio&sampleformat=44100:16:2").unwrap();
        assert_eq!(
            (u.kind.as_str(), u.path.as_str()),
            ("pipe", "/tmp/snap fifo")
        );
        assert_eq!(u.name.as_deref(), Some("radio"));
        assert_eq!(u.params["sampleformat"], "44100:16:2");
        let u = StreamUri::parse("alsa:///?device=hw:1&name=tv").unwrap();
        assert_eq!(
            (u.kind.as_str(), u.params["device"].as_str()),
            ("alsa", "hw:1")
        );
        let u = StreamUri::parse(
            "process:///usr/bin/librespot?name=spotify&params=--name%20Kitchen%20--backend%20pipe",
        )
        .unwrap();
        assert_eq!(u.params["params"], "--name Kitchen --backend pipe");
        let u = StreamUri::parse("tone").unwrap();
        assert_eq!((u.kind.as_str(), u.name.clone()), ("tone", None));
    }

    #[test]
    fn bad_uris_say_why() {
        for (raw, want) in [
            ("pipe:///x?name=a/b", "stream name"),
            ("pipe:///x?name=a&name=b", "twice"),
            ("not a uri", "not a URI"),
            ("", "empty"),
        ] {
            let e = format!("{:#}", StreamUri::parse(raw).unwrap_err());
            assert!(e.contains(want), "{raw}: {e}");
        }
        let mut u = StreamUri::parse("pipe:///x?name=a&sampleformat=48000:24:2").unwrap();
        assert!(u
            .take_sample_format()
            .unwrap_err()
            .to_string()
            .contains("sampleformat"));
        let mut u = StreamUri::parse("pipe:///x?name=a&colour=red&codec=flac").unwrap();
        let _ = u.take("mode");
        let e = u.finish().unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
    }
}
