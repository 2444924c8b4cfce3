//! `syncstream service receiver|transmitter --config FILE`: the systemd services.
//!
//! The configuration file ([`crate::config_file`]) becomes the command line of
//! `syncstream receiver` / `syncstream transmitter`, which then run as usual; around
//! them this module
//!
//! - runs the installed signed update instead of this binary when there is a newer
//!   one, or rolls a failed one back ([`syncstream_update::launcher`]), before anything
//!   else starts;
//! - tells systemd when the service is ready and keeps its watchdog fed
//!   (`sd_notify`: `READY=1`, `WATCHDOG=1` every half `WatchdogSec`; nothing happens
//!   outside systemd);
//! - runs the receiver's update agent ([`syncstream_update::agent`]) with the
//!   receiver's health (connected to the transmitter and playing); after an install
//!   the process exits with [`RESTART_EXIT_CODE`] so systemd (`Restart=on-failure`)
//!   starts the new binary.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use syncstream_protocol::mqtt::BrokerUrl;
use syncstream_update::agent::{AgentConfig, AgentExit};
use syncstream_update::install::Layout;
use syncstream_update::updater::UpdaterConfig;
use syncstream_update::{keys, launcher};

use crate::config_file::{self, ReceiverFile, TransmitterFile};

/// Exit code after an update was installed (EX_TEMPFAIL): systemd restarts the unit.
pub const RESTART_EXIT_CODE: i32 = 75;

/// Arguments of `syncstream service`.
#[derive(Args, Debug)]
pub struct ServiceArgs {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// The receiver, configured by a TOML file.
    Receiver {
        /// The configuration file.
        #[arg(long, default_value = "/etc/syncstream/receiver.toml")]
        config: PathBuf,
    },
    /// The transmitter, configured by a TOML file.
    Transmitter {
        /// The configuration file.
        #[arg(long, default_value = "/etc/syncstream/transmitter.toml")]
        config: PathBuf,
    },
}

/// Set in service mode: what the running command needs besides its flags.
struct ServiceContext {
    update: Option<AgentConfig>,
}

static CONTEXT: OnceLock<ServiceContext> = OnceLock::new();

/// Turns `syncstream service ...` into the command line of the command it runs
/// (`["syncstream", "receiver", "--name", ...]`), after running the launcher (which
/// may replace this process with an installed update and then does not return).
///
/// Errors: the configuration file is missing or invalid (named, with the key), the
/// release public key is malformed.
pub fn command_line(a: &ServiceArgs) -> anyhow::Result<Vec<OsString>> {
    let argv0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| "syncstream".into());
    let (sub, args, update) = match &a.role {
        Role::Transmitter { config } => {
            let f: TransmitterFile = config_file::load(config)?;
            ("transmitter", f.to_args(), None)
        }
        Role::Receiver { config } => {
            let f: ReceiverFile = config_file::load(config)?;
            let update =
                receiver_updates(&f).with_context(|| format!("{}: [update]", config.display()))?;
            ("receiver", f.to_args()?, update)
        }
    };
    let _ = CONTEXT.set(ServiceContext { update });
    let mut argv = vec![argv0, sub.into()];
    argv.extend(args.into_iter().map(OsString::from));
    Ok(argv)
}

/// The update agent's settings for a receiver file with updates on; runs the
/// launcher first (exec of an installed update, or rollback).
fn receiver_updates(f: &ReceiverFile) -> anyhow::Result<Option<AgentConfig>> {
    let Some(u) = f.updates()? else {
        return Ok(None);
    };
    let key = keys::parse_public(&u.public_key)?;
    let layout = Layout::new(&u.state_dir);
    let timeout = Duration::from_secs(u.health_timeout_s);
    let own = semver::Version::parse(syncstream_update::PACKAGE_VERSION)?;
    if !launcher::is_update_child() {
        match launcher::choose(&layout, &own, timeout) {
            Ok(launcher::Choice::Exec { path, version }) => {
                let err = launcher::exec(&path, &version);
                tracing::error!(
                    "cannot run the installed update {}: {err}; rolling back",
                    path.display()
                );
                let _ = layout.rollback(
                    &format!("cannot run it: {err}"),
                    syncstream_update::install::unix_now_s(),
                );
            }
            Ok(launcher::Choice::RunSelf) => {}
            Err(e) => tracing::error!("update state: {e:#}; running the packaged binary"),
        }
    }
    let running = semver::Version::parse(&launcher::running_version()).unwrap_or(own);
    // Without a transmitter in the file, the host and ports are the one the receiver
    // finds over mDNS ([`receiver_running`] sets them).
    let broker = match &f.mqtt {
        Some(url) => url.parse::<BrokerUrl>().map_err(anyhow::Error::msg)?,
        None => BrokerUrl::new(f.transmitter.clone(), 1883),
    };
    let broker = match &f.mqtt_ca {
        Some(ca) => broker.with_ca_file(ca).map_err(anyhow::Error::msg)?,
        None => broker,
    };
    // The agent logs in as the receiver does (its pairing key, its device name).
    let broker = match crate::pairing::receiver_key(f.key.as_deref(), f.key_file.as_deref()) {
        Ok(key) => broker.with_key(&key, &f.device_name()?),
        Err(_) => broker,
    };
    Ok(Some(AgentConfig {
        device: f.device_name()?,
        broker,
        updater: UpdaterConfig {
            key,
            target: syncstream_update::BUILD_TARGET.to_string(),
            running,
            layout,
            http_base: format!("http://{}:{}", f.transmitter, f.http_port.unwrap_or(4954)),
        },
        health_timeout: timeout,
    }))
}

/// Tells systemd the service is up and feeds its watchdog from the runtime (a hung
/// runtime stops feeding it and systemd restarts the service). Once: later calls do
/// nothing. Needs a tokio runtime. Watches for SIGTERM first ([`watch_for_stop`]), so
/// that a service stopped at any moment after it is ready exits cleanly.
pub fn notify_ready() {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    if let Err(e) = watch_for_stop() {
        tracing::warn!("{e:#}: SIGTERM stops the service without a clean exit");
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        let period = Duration::from_micros(usec / 2);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
}

/// Turns true once Ctrl-C or SIGTERM arrived; `Err` when SIGTERM cannot be watched
/// (see [`watch_for_stop`]).
static STOP: OnceLock<Result<tokio::sync::watch::Receiver<bool>, String>> = OnceLock::new();

/// Starts watching for Ctrl-C and SIGTERM, from now until the process ends (once;
/// later calls do nothing). From then on SIGTERM no longer kills the process: it is
/// remembered, and [`stopped`] returns, however late it is awaited. Needs a tokio
/// runtime.
///
/// Errors: the signal handler cannot be installed.
pub fn watch_for_stop() -> anyhow::Result<()> {
    stop_watch().map(drop)
}

fn stop_watch() -> anyhow::Result<tokio::sync::watch::Receiver<bool>> {
    let watch = STOP.get_or_init(|| {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("cannot watch for SIGTERM: {e}"))?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                r = tokio::signal::ctrl_c() => {
                    if let Err(e) = r {
                        tracing::warn!("cannot watch for Ctrl-C: {e}");
                        // SIGTERM still stops the process.
                        term.recv().await;
                    }
                }
                _ = term.recv() => {}
            }
            let _ = tx.send(true);
            // The sender stays, so that every later wait sees the stop.
            std::future::pending::<()>().await
        });
        Ok(rx)
    });
    watch.clone().map_err(anyhow::Error::msg)
}

/// Waits for Ctrl-C or SIGTERM (since [`watch_for_stop`], which it calls).
///
/// Errors: the signal handler cannot be installed.
pub async fn stopped() -> anyhow::Result<()> {
    let mut rx = stop_watch()?;
    // The sender is never dropped, so this only returns once the stop has come.
    let _ = rx.wait_for(|stop| *stop).await;
    Ok(())
}

/// Where a receiver reaches the transmitter it found over mDNS (the update agent
/// follows it).
pub struct Discovered {
    /// The transmitter's HTTP API, `http://host:port`.
    pub http_base: String,
    /// The MQTT broker the receiver uses.
    pub broker: Option<BrokerUrl>,
}

/// Runs while the receiver runs: readiness and watchdog, the update agent in service
/// mode with updates on (at the transmitter found over mDNS when `discovered`);
/// returns on Ctrl-C or SIGTERM, exits the process after an update
/// ([`RESTART_EXIT_CODE`]) or when a new version was not healthy in time (1).
pub async fn receiver_running(
    rx: &syncstream_receiver::Receiver,
    discovered: Option<Discovered>,
) -> anyhow::Result<()> {
    notify_ready();
    let Some(mut cfg) = CONTEXT.get().and_then(|c| c.update.clone()) else {
        return stopped().await;
    };
    if let Some(d) = discovered {
        cfg.updater.http_base = d.http_base;
        if let Some(b) = d.broker {
            // The file's login and CA stay; the place is the receiver's.
            cfg.broker.host = b.host;
            cfg.broker.port = b.port;
            cfg.broker.tls = b.tls;
        }
    }
    let health: syncstream_update::agent::Health = Arc::new(rx.health_probe());
    tokio::select! {
        r = stopped() => r,
        exit = syncstream_update::agent::run(cfg, health) => match exit {
            AgentExit::Restart { version } => {
                tracing::info!("exiting with {RESTART_EXIT_CODE} so systemd starts version {version}");
                std::process::exit(RESTART_EXIT_CODE)
            }
            AgentExit::Unhealthy { version } => {
                anyhow::bail!("version {version} did not become healthy in time; it is rolled back at the next start")
            }
        },
    }
}

/// Runs while the transmitter runs: readiness and watchdog; returns on Ctrl-C or SIGTERM.
#[cfg(feature = "transmitter")]
pub async fn transmitter_running() -> anyhow::Result<()> {
    notify_ready();
    stopped().await
}
