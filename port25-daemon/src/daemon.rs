//! `port25d run`: load, attach, keep the maps in step with the config, serve metrics, reload on
//! SIGHUP, detach on SIGTERM/SIGINT.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::{
    config::{Config, Overrides},
    datapath::Datapath,
    metrics::{Metrics, ReloadLabels, Snapshot, bind},
};

pub struct RunOptions {
    pub config: Option<PathBuf>,
    pub overrides: Overrides,
    /// Where to pin what `port25d top` reads.
    pub pin_dir: PathBuf,
}

/// Reads the config the way `run` and SIGHUP both do: file (or default), overrides, interfaces.
pub fn effective_config(options: &RunOptions) -> anyhow::Result<Config> {
    let mut config = Config::load(options.config.as_deref())?;
    config.apply(&options.overrides);
    if config.interfaces.is_empty() {
        anyhow::bail!(
            "{}: no interface to protect; pass --iface IF or set interfaces = [\"IF\"] in the config",
            config.source
        );
    }
    config.check_interfaces()?;
    Ok(config)
}

pub async fn run(options: RunOptions) -> anyhow::Result<()> {
    // First of all: a SIGHUP (logrotate, `systemctl reload`) during start-up must not kill us. It is
    // kept pending and handled once the daemon runs.
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let config = effective_config(&options)?;
    let mut datapath = Datapath::load_pinned(&config, kernel_log_level(), Some(&options.pin_dir))?;
    datapath
        .apply(&config)
        .context("writing the policy into the kernel maps")?;
    for iface in &config.interfaces {
        let attachment = datapath.attach(iface, config.xdp_mode)?;
        info!(
            "attached to {} (ifindex {}) in {} XDP mode",
            attachment.iface, attachment.ifindex, attachment.mode
        );
    }
    spawn_log_forwarder(&mut datapath);

    let metrics = Arc::new(Metrics::new(datapath.counter_map(), datapath.source_map()));
    publish(&metrics, &datapath, &config);
    let listener = bind(config.metrics_listen).await?;
    let server = tokio::spawn(Arc::clone(&metrics).serve(listener));
    info!(
        "filtering TCP ports {:?} on {}: policy {}, mode {}, {} allow and {} deny entries; metrics at http://{}/metrics",
        config.ports,
        config.interfaces.join(", "),
        config.policy,
        config.mode,
        config.allow.len(),
        config.deny.len(),
        config.metrics_listen
    );

    let mut live = config;
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                match reload(&options, &live, &mut datapath) {
                    Ok(next) => {
                        metrics.reloads.get_or_create(&ReloadLabels { result: "success" }).inc();
                        publish(&metrics, &datapath, &next);
                        live = next;
                    }
                    Err(err) => {
                        metrics.reloads.get_or_create(&ReloadLabels { result: "failure" }).inc();
                        error!("reload rejected, the running policy stays: {err:#}");
                    }
                }
            }
            _ = terminate.recv() => { info!("SIGTERM: detaching"); break; }
            _ = interrupt.recv() => { info!("SIGINT: detaching"); break; }
        }
    }
    server.abort();
    for attachment in datapath.attachments() {
        info!("detached from {}", attachment.iface);
    }
    drop(datapath);
    Ok(())
}

/// Validates the new config completely before touching the kernel, then swaps generations.
fn reload(options: &RunOptions, live: &Config, datapath: &mut Datapath) -> anyhow::Result<Config> {
    let next = effective_config(options)?;
    if next.interfaces != live.interfaces || next.xdp_mode != live.xdp_mode {
        warn!(
            "interfaces or xdp_mode changed in {}: restart port25d to apply them; the policy is reloaded now",
            next.source
        );
    }
    if next.ratelimit.tracked_sources != live.ratelimit.tracked_sources {
        warn!("ratelimit.tracked_sources changed: restart port25d to resize the source table");
    }
    if next.metrics_listen != live.metrics_listen {
        warn!("[metrics] listen changed: restart port25d to apply it");
    }
    datapath
        .apply(&next)
        .context("writing the new policy into the kernel maps")?;
    info!(
        "reloaded {}: policy {}, mode {}, ports {:?}, allow {} -> {} entries, deny {} -> {} entries",
        next.source,
        next.policy,
        next.mode,
        next.ports,
        live.allow.len(),
        next.allow.len(),
        live.deny.len(),
        next.deny.len()
    );
    Ok(next)
}

fn publish(metrics: &Metrics, datapath: &Datapath, config: &Config) {
    let snapshot = Snapshot {
        attachments: datapath.attachments().to_vec(),
        allow_entries: config.allow.len(),
        deny_entries: config.deny.len(),
    };
    match metrics.snapshot.write() {
        Ok(mut guard) => *guard = snapshot,
        Err(poisoned) => *poisoned.into_inner() = snapshot,
    }
}

/// Forwards the XDP program's aya-log records into the daemon's log.
fn spawn_log_forwarder(datapath: &mut Datapath) {
    let logger = match aya_log::EbpfLogger::init(datapath.ebpf_mut()) {
        Ok(logger) => logger,
        Err(err) => {
            warn!("kernel-side logging unavailable: {err}");
            return;
        }
    };
    // SAFETY: the logger owns its ring buffer's fd and keeps it open for as long as it lives,
    // which is as long as the AsyncFd that owns the logger.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let mut logger = match registered {
        Ok(fd) => fd,
        Err(err) => {
            warn!("kernel-side logging unavailable: {}", err.into_parts().1);
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            match logger.readable_mut().await {
                Ok(mut guard) => {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                Err(err) => {
                    warn!("kernel-side logging stopped: {err}");
                    return;
                }
            }
        }
    });
}

/// The most verbose level the daemon logs, in aya-log's numbering, so the kernel skips the rest.
fn kernel_log_level() -> u8 {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => 1,
        LevelFilter::WARN => 2,
        LevelFilter::INFO => 3,
        LevelFilter::DEBUG => 4,
        _ => 5,
    }
}
