//! `port25d run`: load, attach, keep the maps in step with the config and the runtime lists, serve
//! metrics and the control socket, reload on SIGHUP and when watched list directories change, and
//! on SIGTERM/SIGINT detach (or leave the filter enforcing, with `on_exit = "keep"`).

mod changes;
mod crowdsec;
mod egress;
mod lists;
mod readers;
mod requests;
mod shadow;
mod transition;
pub(crate) mod watch;
mod watchdog;
mod why;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{error, info, warn};

use self::lists::effective_lists;
use self::readers::{kernel_log_level, spawn_log_forwarder};
use self::transition::{Acquired, abandon_start, transition};
use self::watch::{Look, Watch, watched_fingerprint};

use crate::{
    config::{Bounds, CidrSet, Config, Overrides, cgroup_display},
    control,
    crowdsec::{
        self as bouncer, Bouncer, SharedStanding,
        decisions::{CrowdsecList, Delta},
        reporter::Reporter,
    },
    datapath::{Datapath, EgressCounters},
    egress_guard::SharedLog,
    history::{Actor, Change, History},
    metrics::{Metrics, ReloadLabels, Snapshot, bind},
    model::{EgressMode, ListKind, Mode, OnExit},
    netfilter,
    pins::{Persistence, PinDir},
    proto,
    runtime::RuntimeLists,
};

/// Default state directory (runtime list entries).
pub(crate) const DEFAULT_STATE_DIR: &str = "/var/lib/port25";

/// How often watched list directories, and port25's hooks (`watchdog`), are looked at.
const WATCH_EVERY: Duration = Duration::from_secs(5);

pub(crate) struct RunOptions {
    pub config: Option<PathBuf>,
    pub overrides: Overrides,
    /// Where maps and links are pinned.
    pub pin_dir: PathBuf,
    /// Where runtime list entries are kept.
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
}

/// Reads the config the way `run` and SIGHUP both do: file (or default), overrides, interfaces.
pub(crate) fn effective_config(options: &RunOptions) -> anyhow::Result<Config> {
    let mut config = Config::load(options.config.as_deref())?;
    if options.overrides.monitor && config.mode == Mode::Enforce {
        warn!(
            "--monitor on the command line overrides mode = \"enforce\" in {}: nothing is \
             dropped, only counted, until port25d is started without it",
            config.source
        );
    }
    config.apply(&options.overrides);
    for warning in config.warnings() {
        warn!("{warning}");
    }
    if config.interfaces.is_empty() && config.egress.mode == EgressMode::Off {
        anyhow::bail!(
            "{}: no interface to protect; pass --iface IF or set interfaces = [\"IF\"] in the config",
            config.source
        );
    }
    config.check_interfaces()?;
    Ok(config)
}

/// Everything the running daemon holds. The event loop owns it, so nothing here needs a lock.
struct Daemon {
    options: RunOptions,
    config: Config,
    datapath: Datapath,
    runtime: RuntimeLists,
    /// The CrowdSec decisions held, the task that polls the LAPI, where it stands.
    crowdsec: CrowdsecList,
    bouncer: Option<Bouncer>,
    crowdsec_status: SharedStanding,
    reporter: Reporter,
    last_report_look: Instant,
    /// The CrowdSec list changed and the kernel's lists have not caught up yet: the next tick
    /// swaps them whole.
    crowdsec_dirty: bool,
    /// Decision prefixes the allowlist overrides that were logged (once each).
    overrides_logged: std::collections::BTreeSet<ipnet::IpNet>,
    /// Hooks someone took away that are not attached again (yet).
    lost: Vec<watchdog::Lost>,
    metrics: Arc<Metrics>,
    /// The egress guard's counters and the events it reported.
    egress_counters: Arc<EgressCounters>,
    egress_log: SharedLog,
    /// When the smart hosts' names were last resolved.
    resolved: Instant,
    /// Whether the pins outlive the daemon (see [`Persistence`]).
    pins_persist: bool,
    started: Instant,
    reloads_ok: u64,
    reloads_failed: u64,
    /// Why the last reload was rejected; `None` once one succeeds.
    last_reload_error: Option<String>,
    /// The watched list directories as loaded, and a change settling.
    watch: Watch,
    /// The settings only a restart changes, as this daemon started with them.
    in_effect: changes::InEffect,
    /// Every change of the effective policy, kept in the state directory.
    history: History,
    /// A candidate policy judged beside the live one, when loaded.
    shadow: Option<shadow::Candidate>,
}

pub(crate) async fn run(options: RunOptions) -> anyhow::Result<()> {
    // First of all: a SIGHUP (logrotate, `systemctl reload`) during start-up must not kill us. It is
    // kept pending and handled once the daemon runs.
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let config = tokio::task::block_in_place(|| effective_config(&options))?;
    prepare_state_dir(&options.state_dir)?;
    let runtime = RuntimeLists::load(Some(&options.state_dir))?;
    let history = History::load(Some(&options.state_dir));
    let crowdsec = CrowdsecList::load(
        Some(&options.state_dir),
        crate::clock::now_unix(),
        &config.allow,
        crowdsec_bounds(&config),
    )?;
    // The control socket comes before anything touches the kernel: it is also how a second
    // daemon on the same host finds out that one already runs.
    let (requests_tx, mut requests) = mpsc::channel(64);
    let control = control::serve(&options.control_socket, requests_tx)?;
    let _socket_file = RemoveOnDrop(options.control_socket.clone());
    // So does everything else that can be refused without the kernel (the metrics port, the pin
    // directory's owner): a start refused there leaves nothing behind.
    let listener = bind(config.metrics_listen).await?;
    let pins = PinDir::persistent(&options.pin_dir)?;
    let pins_persist = pins.persistence() == Persistence::Host;
    if !pins_persist {
        warn!(
            "the pins in {} are on a BPF filesystem that only this daemon's mount namespace has \
             (not the host's, as under `ip netns exec` or a private-mounts sandbox): the filter \
             will NOT survive the daemon, a crash or SIGKILL removes it. Mount bpffs on the host \
             (`mount -t bpf bpf /sys/fs/bpf`) before starting port25d, or pass --pin-dir on a \
             bpffs the host shares",
            options.pin_dir.display()
        );
    }
    let mut datapath = Datapath::load(config.ratelimit.tracked_sources, kernel_log_level(), pins)?;
    let lists = effective_lists(&config, &runtime, &crowdsec);
    let entries = (lists.0.len(), lists.1.len());
    // A start is the transition from nothing; a failed one is undone (`abandon_start`).
    let mut acquired = Acquired::default();
    let started = datapath
        .take_egress_events()
        .and_then(|events| Ok((events, datapath.take_egress_counters()?)))
        .map_err(anyhow::Error::from)
        .and_then(|taken| {
            tokio::task::block_in_place(|| {
                transition(&mut datapath, None, &config, lists, &mut acquired)
            })
            .map(|()| taken)
        });
    let (events, egress_counters) = match started {
        Ok(taken) => taken,
        Err(err) => {
            abandon_start(datapath, &acquired);
            return Err(err);
        }
    };
    let egress_log = SharedLog::default();
    egress::spawn_event_reader(events, egress_log.clone());
    let egress_counters = Arc::new(egress_counters);
    datapath.remove_foreign_maps();
    spawn_log_forwarder(&mut datapath);

    let crowdsec_status = SharedStanding::default();
    let metrics = Arc::new(Metrics::new(
        datapath.counters(),
        datapath.source_tables(),
        Arc::clone(&egress_counters),
        egress_log.clone(),
        crowdsec_status.clone(),
        datapath.shadow_tables(),
    ));
    let server = tokio::spawn(Arc::clone(&metrics).serve(listener));
    announce(&config, &runtime, entries);
    info!("metrics at http://{}/metrics", config.metrics_listen);
    let watch = Watch::new(watched_fingerprint(&config.watched_dirs));
    let in_effect = changes::InEffect::of(&config);
    let mut daemon = Daemon {
        options,
        config,
        datapath,
        runtime,
        crowdsec,
        bouncer: None,
        crowdsec_status,
        reporter: Reporter::default(),
        last_report_look: Instant::now(),
        crowdsec_dirty: false,
        overrides_logged: Default::default(),
        lost: Vec::new(),
        metrics,
        egress_counters,
        egress_log,
        resolved: Instant::now(),
        pins_persist,
        started: Instant::now(),
        reloads_ok: 0,
        reloads_failed: 0,
        last_reload_error: None,
        watch,
        in_effect,
        history,
        shadow: None,
    };
    let started = Change::new(
        "start",
        Actor::Start,
        format!(
            "{}: policy {}, mode {}, ports {:?}, {} allow and {} deny entries, generation {}",
            daemon.config.source,
            daemon.config.policy,
            daemon.config.mode,
            daemon.config.ports,
            entries.0,
            entries.1,
            daemon.datapath.generation()
        ),
        Vec::new(),
    );
    daemon.history.record(started);
    daemon.sync_configured_shadow(&Actor::Start);
    daemon.count_no_loss_yet();
    if daemon.crowdsec.len() > 0 && daemon.config.crowdsec.is_some() {
        info!(
            "{} CrowdSec decisions kept from the last run are enforced until the LAPI answers",
            daemon.crowdsec.len()
        );
    }
    if let Err(err) = daemon.sync_bouncer() {
        server.abort();
        abandon_start(daemon.datapath, &acquired);
        return Err(err);
    }
    daemon.crowdsec_changed(&Delta::default(), "start");
    // Changes asked while no daemon answered (fail2ban during a restart).
    daemon.apply_queued();
    daemon.publish();
    notify(&[sd_notify::NotifyState::Ready]);

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_watch = Instant::now();
    let mut on_exit = daemon.config.on_exit;
    let mut stopped_by = "";
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                daemon.reload(Actor::Signal { signal: "SIGHUP".to_owned() });
                notify(&[sd_notify::NotifyState::Ready]);
            }
            _ = terminate.recv() => { info!("SIGTERM: stopping"); stopped_by = "SIGTERM"; break; }
            _ = interrupt.recv() => { info!("SIGINT: stopping"); stopped_by = "SIGINT"; break; }
            Some((request, peer, reply)) = requests.recv() => {
                let detach = matches!(request, proto::Request::Detach);
                let response = daemon.handle_from(request, peer);
                let refused = matches!(response, proto::Response::Error { .. });
                let _ = reply.send(response);
                if detach && !refused {
                    info!("detach requested on the control socket: detaching and stopping");
                    on_exit = OnExit::Detach;
                    break;
                }
            }
            Some(poll) = bouncer::next_poll(&mut daemon.bouncer) => daemon.on_poll(poll),
            _ = tick.tick() => {
                daemon.expire();
                daemon.crowdsec_tick();
                daemon.refresh_smart_hosts();
                if last_watch.elapsed() >= WATCH_EVERY {
                    last_watch = Instant::now();
                    daemon.apply_queued();
                    daemon.check_watched();
                    daemon.check_hooks();
                } else if daemon.watch.is_settling() {
                    daemon.check_watched();
                }
            }
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    // A detach on the control socket was recorded as it was asked.
    if !stopped_by.is_empty() {
        let left = match on_exit {
            OnExit::Detach => "the filter is detached (on_exit = \"detach\")",
            OnExit::Keep => "the filter stays enforcing (on_exit = \"keep\")",
        };
        let stop = Change::new(
            "stop",
            Actor::Signal {
                signal: stopped_by.to_owned(),
            },
            left.to_owned(),
            Vec::new(),
        );
        daemon.history.record(stop);
    }
    server.abort();
    control.abort();
    daemon.datapath.release(on_exit);
    // With on_exit = keep the filter goes on answering SYNs with cookies: the table stays too.
    if on_exit == OnExit::Detach
        && let Err(err) = netfilter::remove()
    {
        error!("policy synproxy: removing its netfilter rules: {err}");
    }
    Ok(())
}

/// Says at start-up what port25d enforces: the filter, its lists, the egress guard.
fn announce(config: &Config, runtime: &RuntimeLists, entries: (usize, usize)) {
    if config.interfaces.is_empty() {
        info!("no XDP filter on incoming SMTP (interfaces = [])");
    } else {
        info!(
            "filtering TCP ports {:?} on {}: policy {}, mode {}, {} allow and {} deny entries ({} and {} runtime)",
            config.ports,
            config.interfaces.join(", "),
            config.policy,
            config.mode,
            entries.0,
            entries.1,
            runtime.len(ListKind::Allow),
            runtime.len(ListKind::Deny),
        );
    }
    if config.egress.mode != EgressMode::Off {
        let egress = &config.egress;
        info!(
            "egress guard in {} mode on cgroup {}: TCP ports {:?} only to {} smart-host entries, or from {} allowed users and {} allowed cgroups",
            egress.mode,
            cgroup_display(&egress.cgroup),
            egress.ports,
            egress.smart_hosts.len(),
            egress.allow_users.len(),
            egress.allow_cgroups.len()
        );
        if !egress.forward_interfaces.is_empty() {
            info!(
                "egress guard on forwarded SYNs arriving on {}",
                egress.forward_interfaces.join(", ")
            );
        }
    }
}

/// Installs, replaces or removes policy synproxy's nftables table (docs/ARCHITECTURE.md, § SYN
/// cookies) as `config` needs, its allowlisted sources from `allow`, saying what it did.
pub(super) fn sync_netfilter(
    config: &Config,
    allow: &CidrSet,
) -> Result<(), netfilter::NetfilterError> {
    if let Some(exempt) = netfilter::apply(config, allow)? {
        info!(
            "policy synproxy: nftables table inet port25{} installed (SYNPROXY on ports {:?} of \
             {}; {}), net.netfilter.nf_conntrack_tcp_loose = 0",
            if config.synproxy.ipv6 {
                " and ip6tables chain PORT25 (IPv6)"
            } else {
                ""
            },
            config.ports,
            config.interfaces.join(", "),
            exempt.describe()
        );
        warn_too_many(&exempt);
    }
    Ok(())
}

fn warn_too_many(exempt: &netfilter::Exempt) {
    if !exempt.too_many.is_empty() {
        warn!("policy synproxy: {}", exempt.describe());
    }
}

impl Daemon {
    /// Validates the new config completely before touching the kernel, then swaps generations.
    /// On any error the running policy stays.
    fn reload(&mut self, by: Actor) {
        match tokio::task::block_in_place(|| self.try_reload(&by)) {
            Ok(()) => {
                self.reloads_ok += 1;
                self.last_reload_error = None;
                self.metrics
                    .reloads
                    .get_or_create(&ReloadLabels { result: "success" })
                    .inc();
            }
            Err(err) => {
                // What the CrowdSec decisions enforce goes back to the running config's allowlist;
                // if the rejected reload got as far as the kernel, the next tick writes it back.
                let back = self
                    .crowdsec
                    .rebase(&self.config.allow, crowdsec_bounds(&self.config));
                self.crowdsec_dirty |= !back.is_empty();
                self.reloads_failed += 1;
                self.metrics
                    .reloads
                    .get_or_create(&ReloadLabels { result: "failure" })
                    .inc();
                error!("reload rejected ({by}), the running policy stays: {err:#}");
                self.last_reload_error = Some(format!("{err:#}"));
            }
        }
    }

    fn try_reload(&mut self, by: &Actor) -> anyhow::Result<()> {
        // What the watched directories hold is looked at before they are read: a file that lands
        // while the reload runs is then a change the next look sees, never one taken as loaded.
        let seen = watched_fingerprint(&self.config.watched_dirs);
        let next = effective_config(&self.options)?;
        self.apply_config(next, seen, by, "reload")
    }

    /// Takes the kernel to `next` (read after the watched directories looked like `seen`), in the
    /// one order of a reload, and records the change as `change` made by `by`.
    fn apply_config(
        &mut self,
        next: Config,
        seen: Vec<watch::WatchedFile>,
        by: &Actor,
        change: &str,
    ) -> anyhow::Result<()> {
        for warning in changes::needs_restart(&self.in_effect, &next) {
            warn!("{warning}");
        }
        // The allowlist beats CrowdSec's decisions: what they enforce follows the new one.
        self.crowdsec.rebase(&next.allow, crowdsec_bounds(&next));
        let lists = self.effective_lists(&next);
        transition(
            &mut self.datapath,
            Some(&self.config),
            &next,
            lists,
            &mut Acquired::default(),
        )?;
        let described = changes::describe(&self.config, &next);
        let summary = format!(
            "{} (generation {}): {}",
            next.source,
            self.datapath.generation(),
            if described.is_empty() {
                "no change"
            } else {
                "changed"
            }
        );
        self.history
            .record(Change::new(change, by.clone(), summary, described));
        self.watch
            .loaded(if next.watched_dirs == self.config.watched_dirs {
                seen
            } else {
                watched_fingerprint(&next.watched_dirs)
            });
        self.config = next;
        self.sync_configured_shadow(by);
        self.forget_unconfigured_losses();
        self.crowdsec_changed(&Delta::default(), "reload");
        if let Err(err) = self.sync_bouncer() {
            error!("starting the CrowdSec bouncer: {err:#}");
        }
        self.publish();
        Ok(())
    }

    /// Reloads when a file in a watched list directory appeared, went or changed, and has
    /// stopped changing.
    fn check_watched(&mut self) {
        if self.config.watched_dirs.is_empty() {
            return;
        }
        let now = watched_fingerprint(&self.config.watched_dirs);
        if self.watch.look(now) == Look::Settled {
            info!("a watched list directory changed: reloading");
            self.reload(Actor::WatchedDir);
        }
    }

    /// Publishes what the gauges show: attachments and list sizes.
    fn publish(&self) {
        let snapshot = Snapshot {
            attachments: self.datapath.attachments().to_vec(),
            interfaces_configured: self.config.interfaces.len(),
            egress_mode: self.config.egress.mode,
            egress_cgroup: self
                .datapath
                .hooks()
                .map(|hooks| cgroup_display(&hooks.cgroup)),
            allow_entries: self.effective_len(ListKind::Allow),
            deny_entries: self.effective_len(ListKind::Deny),
            pins_persist: self.pins_persist,
            lost: self
                .lost
                .iter()
                .filter_map(|lost| Some((lost.status.iface.clone()?, lost.mode?)))
                .collect(),
        };
        *self.metrics.snapshot.lock() = snapshot;
        self.publish_crowdsec();
    }
}

/// The bounds on CrowdSec decisions `config` sets (the defaults while the bouncer is off: the
/// decisions a state file kept are then not enforced anyway).
fn crowdsec_bounds(config: &Config) -> Bounds {
    config
        .crowdsec
        .as_ref()
        .map_or_else(Bounds::default, |c| c.bounds)
}

/// Removes a file when dropped: the control socket goes on every way out of `run`, errors included.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn prepare_state_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "creating the state directory {} (or pass --state-dir)",
                dir.display()
            )
        })?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Tells systemd (Type=notify) where the daemon stands; a no-op outside systemd.
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(state) {
        warn!("sd_notify: {err}");
    }
}
