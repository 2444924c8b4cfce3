//! The device side's decisions, without I/O: which announced bundle to take
//! ([`Updater::on_announcement`]), whether a downloaded bundle is the one announced
//! and intact ([`Updater::verify`]); [`Updater::install`] writes it.

use ed25519_dalek::VerifyingKey;

use crate::announce::{self, AnnouncedBundle};
use crate::bundle::{self, Manifest};
use crate::install::Layout;
use crate::Refusal;

/// What a device needs to decide on updates.
#[derive(Debug, Clone)]
pub struct UpdaterConfig {
    /// The pinned release public key.
    pub key: VerifyingKey,
    /// This device's target ([`crate::BUILD_TARGET`]).
    pub target: String,
    /// The running version ([`crate::launcher::running_version`]).
    pub running: semver::Version,
    /// Where updates are installed.
    pub layout: Layout,
    /// Base of relative bundle URLs: the transmitter's HTTP server, `http://host:port`.
    pub http_base: String,
}

/// A bundle to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The announcement's entry.
    pub bundle: AnnouncedBundle,
    /// Its version.
    pub version: semver::Version,
    /// Absolute URL.
    pub url: String,
}

/// Decides on announcements and bundles for one device.
#[derive(Debug, Clone)]
pub struct Updater {
    /// Settings.
    pub cfg: UpdaterConfig,
}

impl Updater {
    /// An updater with `cfg`.
    pub fn new(cfg: UpdaterConfig) -> Self {
        Self { cfg }
    }

    /// The bundle to fetch from an announcement payload: the newest one for this
    /// device's target. `Ok(None)` when it is the running version already (or the
    /// announcement is empty).
    ///
    /// Errors: [`Refusal::Malformed`] payload, [`Refusal::WrongTarget`] (bundles, none
    /// for this target), [`Refusal::Older`], [`Refusal::Unsigned`],
    /// [`Refusal::BadSignature`].
    pub fn on_announcement(&self, payload: &[u8]) -> Result<Option<Plan>, Refusal> {
        let a = announce::parse(payload)?;
        if a.bundles.is_empty() {
            return Ok(None);
        }
        let best = a
            .bundles
            .iter()
            .filter(|b| b.target == self.cfg.target)
            .filter_map(|b| semver::Version::parse(&b.version).ok().map(|v| (v, b)))
            .max_by(|x, y| x.0.cmp(&y.0));
        let Some((version, entry)) = best else {
            let offered: Vec<_> = a.bundles.iter().map(|b| b.target.as_str()).collect();
            return Err(Refusal::WrongTarget {
                want: self.cfg.target.clone(),
                offered: offered.join(", "),
            });
        };
        if version == self.cfg.running {
            return Ok(None);
        }
        if version < self.cfg.running {
            return Err(Refusal::Older {
                version: entry.version.clone(),
                running: self.cfg.running.to_string(),
            });
        }
        entry.manifest().verify(&self.cfg.key)?;
        Ok(Some(Plan {
            bundle: entry.clone(),
            version,
            url: self.resolve(&entry.url),
        }))
    }

    /// `url` made absolute against [`UpdaterConfig::http_base`].
    pub fn resolve(&self, url: &str) -> String {
        if url.starts_with("http://") || url.starts_with("https://") {
            url.to_string()
        } else {
            format!(
                "{}/{}",
                self.cfg.http_base.trim_end_matches('/'),
                url.trim_start_matches('/')
            )
        }
    }

    /// Checks a downloaded bundle against `plan`: its manifest must be the announced
    /// one, for this target, signed with the pinned key, and its binary of the signed
    /// size and hash. Returns the manifest and the binary.
    ///
    /// Errors: every [`Refusal`] of [`bundle::open`], [`Refusal::NotAnnounced`],
    /// [`Refusal::WrongTarget`].
    pub fn verify<'a>(
        &self,
        plan: &Plan,
        bytes: &'a [u8],
    ) -> Result<(Manifest, &'a [u8]), Refusal> {
        let (header, _) = bundle::read_header(bytes)?;
        let announced = plan.bundle.manifest();
        if header.target != self.cfg.target {
            return Err(Refusal::WrongTarget {
                want: self.cfg.target.clone(),
                offered: header.target,
            });
        }
        for (field, a, b) in [
            ("version", &announced.version, &header.version),
            ("sha256", &announced.sha256, &header.sha256),
            ("signature", &announced.signature, &header.signature),
        ] {
            if a != b {
                return Err(Refusal::NotAnnounced {
                    url: plan.url.clone(),
                    reason: format!("{field} is {b}, the announcement says {a}"),
                });
            }
        }
        if header.size != announced.size {
            return Err(Refusal::NotAnnounced {
                url: plan.url.clone(),
                reason: format!(
                    "size is {}, the announcement says {}",
                    header.size, announced.size
                ),
            });
        }
        bundle::open(bytes, &self.cfg.key)
    }

    /// Installs a verified binary (see [`Layout::install`]).
    ///
    /// Errors: [`Refusal::Install`].
    pub fn install(&self, manifest: &Manifest, binary: &[u8]) -> Result<(), Refusal> {
        self.cfg
            .layout
            .install(manifest, binary, crate::install::unix_now_s())
    }

    /// Most bytes a download for `plan` may have: the announced binary plus the
    /// largest header.
    pub fn download_limit(plan: &Plan) -> u64 {
        plan.bundle.size + bundle::MAGIC.len() as u64 + bundle::MAX_MANIFEST_BYTES as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::Announcement;
    use ed25519_dalek::SigningKey;

    const TARGET: &str = "arm-unknown-linux-musleabihf";

    fn updater(dir: &std::path::Path) -> Updater {
        Updater::new(UpdaterConfig {
            key: SigningKey::from_bytes(&[7; 32]).verifying_key(),
            target: TARGET.into(),
            running: semver::Version::new(0, 2, 0),
            layout: Layout::new(dir),
            http_base: "http://tx:4954".into(),
        })
    }

    fn entry(version: &str, target: &str, key_seed: u8) -> (AnnouncedBundle, Vec<u8>) {
        let bin = format!("binary {version} {target}").into_bytes();
        let m = bundle::sign(
            &bin,
            version,
            target,
            &SigningKey::from_bytes(&[key_seed; 32]),
        )
        .unwrap();
        let e = AnnouncedBundle::new(&m, format!("/api/v1/updates/{version}-{target}.bundle"));
        (e, bundle::encode(&m, &bin))
    }

    fn payload(entries: &[&AnnouncedBundle]) -> Vec<u8> {
        serde_json::to_vec(&Announcement {
            bundles: entries.iter().map(|e| (*e).clone()).collect(),
        })
        .unwrap()
    }

    #[test]
    fn takes_the_newest_signed_bundle_for_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let u = updater(dir.path());
        let (a, _) = entry("0.3.0", TARGET, 7);
        let (b, bytes_b) = entry("0.4.0", TARGET, 7);
        let (c, _) = entry("9.0.0", "x86_64-unknown-linux-gnu", 7);
        let plan = u.on_announcement(&payload(&[&a, &b, &c])).unwrap().unwrap();
        assert_eq!(plan.version, semver::Version::new(0, 4, 0));
        assert_eq!(
            plan.url,
            format!("http://tx:4954/api/v1/updates/0.4.0-{TARGET}.bundle")
        );
        let (m, bin) = u.verify(&plan, &bytes_b).unwrap();
        assert_eq!(m.version, "0.4.0");
        u.install(&m, bin).unwrap();
        assert_eq!(std::fs::read(u.cfg.layout.current()).unwrap(), bin);
    }

    #[test]
    fn refuses_each_bad_announcement() {
        let dir = tempfile::tempdir().unwrap();
        let u = updater(dir.path());
        let (other, _) = entry("0.3.0", "x86_64-unknown-linux-gnu", 7);
        let (older, _) = entry("0.1.0", TARGET, 7);
        let (missigned, _) = entry("0.3.0", TARGET, 8);
        let (mut unsigned, _) = entry("0.3.0", TARGET, 7);
        unsigned.signature.clear();
        let (same, _) = entry("0.2.0", TARGET, 7);
        let code = |e: &AnnouncedBundle| u.on_announcement(&payload(&[e])).unwrap_err().code();
        assert_eq!(code(&other), "wrong_target");
        assert_eq!(code(&older), "older");
        assert_eq!(code(&missigned), "bad_signature");
        assert_eq!(code(&unsigned), "unsigned");
        assert_eq!(u.on_announcement(&payload(&[&same])).unwrap(), None);
        assert_eq!(
            u.on_announcement(b"{\"bundles\":7}").unwrap_err().code(),
            "malformed"
        );
        assert!(
            !u.cfg.layout.state_dir.join("bin").exists(),
            "nothing written"
        );
    }

    #[test]
    fn refuses_a_download_that_is_not_the_announced_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let u = updater(dir.path());
        let (a, bytes_a) = entry("0.3.0", TARGET, 7);
        let (_, bytes_b) = entry("0.4.0", TARGET, 7);
        let (_, bytes_other) = entry("0.3.0", "x86_64-unknown-linux-gnu", 7);
        let plan = u.on_announcement(&payload(&[&a])).unwrap().unwrap();
        assert_eq!(
            u.verify(&plan, &bytes_b).unwrap_err().code(),
            "not_announced"
        );
        assert_eq!(
            u.verify(&plan, &bytes_other).unwrap_err().code(),
            "wrong_target"
        );
        assert_eq!(
            u.verify(&plan, &bytes_a[..bytes_a.len() - 1])
                .unwrap_err()
                .code(),
            "truncated"
        );
        assert!(u.verify(&plan, &bytes_a).is_ok());
    }
}
