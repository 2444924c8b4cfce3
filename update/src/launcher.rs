//! Which binary runs: at start-up the packaged binary (what systemd starts) looks at
//! the installed update and either runs itself or `exec`s the update (same process,
//! so systemd's readiness and watchdog notifications still come from the service's
//! main PID). This is also where a failed update is rolled back: an update still
//! unconfirmed after the health timeout, or started [`MAX_ATTEMPTS`] times without
//! confirming (it crashes on start), is replaced by the previous binary.

use std::path::PathBuf;
use std::time::Duration;

use crate::bundle::sha256_hex;
use crate::install::{unix_now_s, Layout};

/// Starts of an unconfirmed update before it is rolled back.
pub const MAX_ATTEMPTS: u32 = 3;

/// Environment variable set for an exec'd update: the signed version it was
/// installed as (what the device reports as its version).
pub const CHILD_ENV: &str = syncstream_shared::version::UPDATE_VERSION_ENV;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Run this binary (no update installed, or it is not newer than this one).
    RunSelf,
    /// `exec` the installed update at `path`, of signed version `version`.
    Exec {
        /// The binary.
        path: PathBuf,
        /// Its signed version.
        version: String,
    },
}

/// The version this process runs as: the signed version of an exec'd update, else
/// the packaged one ([`crate::PACKAGE_VERSION`]).
pub fn running_version() -> String {
    syncstream_shared::version::running()
}

/// True in a process the launcher exec'd.
pub fn is_update_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Decides what to run, rolling back first if the pending update failed. `own` is
/// this binary's version, `health_timeout` how long an update may take to confirm.
/// Every decision that is not [`Choice::RunSelf`] without an update is logged.
///
/// Errors: the state cannot be read or written (the caller then runs itself).
pub fn choose(
    layout: &Layout,
    own: &semver::Version,
    health_timeout: Duration,
) -> anyhow::Result<Choice> {
    let now = unix_now_s();
    let mut state = layout.load()?;
    if let Some(p) = state.pending.clone() {
        let age = now.saturating_sub(p.installed_at_unix_s);
        let reason = if p.attempts >= MAX_ATTEMPTS {
            Some(format!(
                "version {} was started {} times without becoming healthy",
                p.version, p.attempts
            ))
        } else if age > health_timeout.as_secs() {
            Some(format!(
                "version {} was not healthy (online, playing) within {} s",
                p.version,
                health_timeout.as_secs()
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            tracing::error!("update rolled back: {reason}");
            layout.rollback(&reason, now)?;
            state = layout.load()?;
        } else {
            let mut s = state.clone();
            if let Some(p) = s.pending.as_mut() {
                p.attempts += 1;
            }
            layout.save(&s)?;
        }
    }
    let Some(current) = state.current.clone() else {
        return Ok(Choice::RunSelf);
    };
    let newer = semver::Version::parse(&current.version).is_ok_and(|v| v > *own);
    if !newer {
        tracing::info!(
            "installed update {} is not newer than this binary ({own}): running the packaged binary",
            current.version
        );
        return Ok(Choice::RunSelf);
    }
    let path = layout.current();
    let bytes = std::fs::read(&path);
    match bytes {
        Ok(b) if sha256_hex(&b) == current.sha256 => Ok(Choice::Exec {
            path,
            version: current.version,
        }),
        Ok(_) | Err(_) => {
            let reason = format!(
                "{} is missing or does not match its signed hash",
                path.display()
            );
            tracing::error!("update rolled back: {reason}");
            layout.rollback(&reason, now)?;
            choose(layout, own, health_timeout)
        }
    }
}

/// Replaces this process with `path`, same arguments, with [`CHILD_ENV`] set to
/// `version`. Returns only on failure.
pub fn exec(path: &std::path::Path, version: &str) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    tracing::info!(
        "running the installed update {version} ({})",
        path.display()
    );
    std::process::Command::new(path)
        .args(args)
        .env(CHILD_ENV, version)
        .exec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Manifest;

    fn install(l: &Layout, version: &str, bin: &[u8], at: u64) {
        let m = Manifest {
            version: version.into(),
            target: "t".into(),
            size: bin.len() as u64,
            sha256: sha256_hex(bin),
            signature: String::new(),
        };
        l.install(&m, bin, at).unwrap();
    }

    #[test]
    fn runs_a_newer_update_and_counts_its_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        let own = semver::Version::new(0, 1, 0);
        assert_eq!(
            choose(&l, &own, Duration::from_secs(60)).unwrap(),
            Choice::RunSelf
        );
        install(&l, "0.2.0", b"two", unix_now_s());
        for attempt in 1..=MAX_ATTEMPTS {
            let c = choose(&l, &own, Duration::from_secs(60)).unwrap();
            assert!(matches!(c, Choice::Exec { ref version, .. } if version == "0.2.0"));
            assert_eq!(l.load().unwrap().pending.unwrap().attempts, attempt);
        }
        // One start too many: rolled back to the packaged binary.
        assert_eq!(
            choose(&l, &own, Duration::from_secs(60)).unwrap(),
            Choice::RunSelf
        );
        let last = l.load().unwrap().last.unwrap();
        assert_eq!(last.state, "rolled_back");
        assert!(last.reason.unwrap().contains("started 3 times"));
    }

    #[test]
    fn an_update_past_its_health_timeout_is_rolled_back_to_the_previous() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        let own = semver::Version::new(0, 1, 0);
        install(&l, "0.2.0", b"two", unix_now_s());
        l.confirm(unix_now_s()).unwrap();
        install(&l, "0.3.0", b"three", unix_now_s() - 61);
        let c = choose(&l, &own, Duration::from_secs(60)).unwrap();
        assert!(
            matches!(c, Choice::Exec { ref version, .. } if version == "0.2.0"),
            "{c:?}"
        );
        assert!(l
            .load()
            .unwrap()
            .last
            .unwrap()
            .reason
            .unwrap()
            .contains("within 60 s"));
    }

    #[test]
    fn a_tampered_binary_is_not_run_and_an_older_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        install(&l, "0.2.0", b"two", unix_now_s());
        l.confirm(unix_now_s()).unwrap();
        std::fs::write(l.current(), b"evil").unwrap();
        let own = semver::Version::new(0, 1, 0);
        assert_eq!(
            choose(&l, &own, Duration::from_secs(60)).unwrap(),
            Choice::RunSelf
        );
        assert!(!l.current().exists());

        install(&l, "0.2.0", b"two", unix_now_s());
        l.confirm(unix_now_s()).unwrap();
        let newer_package = semver::Version::new(0, 3, 0);
        assert_eq!(
            choose(&l, &newer_package, Duration::from_secs(60)).unwrap(),
            Choice::RunSelf
        );
    }
}
