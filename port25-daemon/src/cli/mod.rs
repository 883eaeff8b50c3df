//! `port25d`'s command line: the subcommands and their options (clap), and the dispatch to the
//! file of each (`check_config.rs`, `lists.rs`, `status.rs`, `top.rs`, `egress.rs`, `why.rs`,
//! `history.rs`, `detach.rs`; `run` is
//! `crate::daemon`, `audit` is `crate::audit`).

pub(crate) mod check_config;
mod detach;
mod egress;
mod history;
mod lists;
mod manpages;
pub(crate) mod output;
mod shadow;
mod status;
mod top;
mod why;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use self::top::{TopOptions, top};
use crate::{
    audit,
    config::Overrides,
    control::{DEFAULT_SOCKET, DEFAULT_TIMEOUT, Endpoint},
    daemon::{DEFAULT_STATE_DIR, RunOptions, run},
    model::{ListKind, XdpModeSetting},
    pins::DEFAULT_PIN_DIR,
};
use clap::{CommandFactory, Parser, Subcommand};

/// XDP filter for SMTP (TCP port 25) on mail gateways.
///
/// Drops, rate-limits or answers with SYN cookies inbound port-25 traffic in the kernel by CIDR
/// allow and deny lists (shared with a CrowdSec fleet), lets only the MTA and the smart hosts
/// speak SMTP outbound (the egress guard), and exports what it did to Prometheus.
#[derive(Parser)]
#[command(name = "port25d", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach the filter and run in the foreground until SIGTERM or SIGINT; SIGHUP reloads the config.
    ///
    /// Example: port25d run --config /etc/port25/port25.toml --iface eth0
    Run {
        #[command(flatten)]
        config: ConfigArgs,
        /// Interface to protect (repeatable); replaces the config's `interfaces`.
        #[arg(long = "iface", value_name = "IF")]
        interfaces: Vec<String>,
        /// How to attach: native (driver) XDP, skb (generic) XDP, or auto (native, else skb).
        #[arg(long, value_enum, value_name = "MODE")]
        xdp_mode: Option<XdpModeSetting>,
        /// Count what would be dropped, drop nothing (overrides `mode` in the config).
        #[arg(long)]
        monitor: bool,
        /// Address for the Prometheus endpoint; replaces [metrics] listen.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<SocketAddr>,
        #[command(flatten)]
        pins: PinArgs,
        #[command(flatten)]
        socket: SocketArgs,
        /// Where runtime list entries are kept across restarts.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Validate the config and print the effective policy; exit 1 with file, line and reason on error.
    ///
    /// Example: port25d check-config --config /etc/port25/port25.toml
    CheckConfig {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print only errors (for ExecStartPre= and scripts).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Show what the running daemon does: interfaces, policy, lists, counters per reason. Exit 3
    /// when no daemon runs (then what the pins show: a killed daemon leaves the filter enforcing).
    ///
    /// Example: port25d status --json
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        pins: PinArgs,
    },
    /// Add to, remove from or list the runtime allow list of the running daemon.
    ///
    /// Example: port25d allow add 198.18.0.0/24 --ttl 1h
    Allow {
        #[command(subcommand)]
        action: ListAction,
    },
    /// Add to, remove from or list the runtime deny list of the running daemon (fail2ban's way in).
    ///
    /// Example: port25d deny add 198.18.5.66 --ttl 600
    Deny {
        #[command(subcommand)]
        action: ListAction,
    },
    /// Show the source prefixes the rate limiter drops most, refreshed every --interval seconds.
    ///
    /// While the global cap is spent (a spoofed flood keeps it so), one drop in 16 of an
    /// unverified prefix is written to the table, counted as 16: DROPPED is then an estimate, and
    /// the table holds a sample of the flood's sources, not all of them.
    ///
    /// Example: port25d top --count 20
    Top {
        #[command(flatten)]
        pins: PinArgs,
        /// How many prefixes to show.
        #[arg(long, short = 'n', default_value_t = 20)]
        count: usize,
        /// Print one table and exit.
        #[arg(long)]
        once: bool,
        /// With --once: one JSON object (tracked, rows of source, dropped, admitted, completed,
        /// verified) instead of the table.
        #[arg(long, requires = "once")]
        json: bool,
        /// List every tracked prefix, also those without drops.
        #[arg(long)]
        all: bool,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 2.0, value_parser = parse_seconds)]
        interval: f64,
    },
    /// What the egress guard saw: the outbound connects it refused, with the process of each.
    ///
    /// Example: port25d egress log --follow
    Egress {
        #[command(subcommand)]
        action: EgressAction,
    },
    /// Check what listens on or connects to SMTP ports (25, 465, 587), by process, and whether
    /// the filter covers every interface a listener is reachable on; then the mail server itself:
    /// each listener as a mail client sees it (587: STARTTLS, then AUTH, never AUTH in clear;
    /// 465: TLS from the first byte; 25: no AUTH before STARTTLS), whether port 25 relays for an
    /// outsider, and whether the MTA's configuration (Postfix by postconf, Exim by exim -bP)
    /// agrees with port25's: its smart host among the egress guard's, the guard on when it has
    /// one, no public or catch-all range in mynetworks, no address it receives from dropped.
    /// A verdict per finding, each naming its fix.
    ///
    /// The open-relay probe runs from a network namespace of its own, joined to this host by a
    /// veth pair, as 198.19.255.254 (RFC 2544's benchmarking range, which no mail server trusts
    /// by default): MAIL FROM <port25-audit@example.com>, RCPT TO <relay-probe@example.net>,
    /// then RSET and QUIT: never DATA, so nothing is queued. It connects only to this host's own
    /// listeners, which the host delivers locally: nothing is forwarded or leaves the host. The
    /// namespace has no name and goes with the audit, also when it is killed. It needs root.
    /// port25's egress guard judges the audit as any process: a connect it refuses (EPERM) is
    /// said as such ("not asked").
    ///
    /// Exit 0 when nothing needs action, 2 when a finding says OPEN RELAY, NOT PROTECTED or CHECK,
    /// 1 on error.
    ///
    /// Example: port25d audit --json
    Audit {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Do not ask the mail server to relay (on hosts where the operator forbids the probe).
        #[arg(long)]
        no_relay_probe: bool,
        /// Look at sockets, processes and the filter only: no conversation with the mail server,
        /// no relay probe, no MTA configuration read.
        #[arg(long)]
        filter_only: bool,
        /// The Postfix instance's configuration directory (`postconf -c DIR`), when it is not
        /// the default one.
        #[arg(long, value_name = "DIR")]
        postfix_config: Option<std::path::PathBuf>,
        #[command(flatten)]
        pins: PinArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// What the filter decides now for a SYN from ADDRESS, and why: the list entries covering it
    /// with where each comes from (config file and line, list file and line, runtime entry with
    /// its TTL and who added it, CrowdSec decision), which one wins (deny beats allow, the
    /// allowlist beats CrowdSec), the policy's buckets as the kernel holds them, and what the
    /// egress guard lets this host's processes do with ADDRESS as a destination.
    ///
    /// Example: port25d why 198.18.7.7 --port 25
    Why {
        /// One IPv4 or IPv6 address.
        address: String,
        /// The destination port of the SYN.
        #[arg(long, short, default_value_t = 25)]
        port: u16,
        /// Machine-readable output: one JSON object (reason, verdict, entries with their source,
        /// bucket, steps, egress).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A candidate policy judged beside the live one on live traffic, enforcing nothing: load it,
    /// see which senders it would newly drop or pass (by reason, and the top source prefixes),
    /// then promote it (a reload to it, atomic) or drop it. A reload keeps the shadow; a restart
    /// drops it.
    ///
    /// Example: port25d shadow load --config /etc/port25/candidate.toml
    Shadow {
        #[command(subcommand)]
        action: ShadowAction,
    },
    /// Every change of the effective policy, oldest first: when, what (a reload's diff, a runtime
    /// entry, a CrowdSec delta as counts and a sample, an expiry, a start or stop), and who (the
    /// uid and pid of a control-socket client, the signal, the watched directory, the LAPI).
    /// Read from the state directory, so also while port25d is stopped; the last 10,000 changes
    /// are kept.
    ///
    /// Example: port25d history --since 7d
    History {
        /// Only changes since then: a time ago ("1h", "7d") or a date ("2026-12-01",
        /// "2026-12-01 09:30:00", UTC).
        #[arg(long, value_name = "WHEN", value_parser = history::parse_since)]
        since: Option<u64>,
        /// One JSON object a line: time (unix seconds), change, by (kind, and uid, pid, user,
        /// signal or lapi), summary, details.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Remove the filter: detach the programs and remove every pin (and take port25 out of
    /// libxdp's dispatchers). A running daemon is asked to detach and stop; otherwise the pins a
    /// stopped or killed daemon left are removed.
    ///
    /// Example: port25d detach
    Detach {
        /// When a live port25d on another control socket owns the pins: stop it (SIGTERM) and
        /// remove the filter; without it, detach refuses and names that daemon.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        pins: PinArgs,
    },
    /// Write the man page port25d(8) (roff) to standard output, or with --dir every man page
    /// (one per subcommand too) into a directory, for packaging.
    #[command(hide = true)]
    Manpage {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Write shell completions to standard output, for packaging.
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum ListAction {
    /// Add a CIDR (or one address); it takes effect at once and survives restarts. When no
    /// daemon answers (a restart), the change waits in the state directory and is carried out
    /// when port25d starts.
    Add {
        /// The source: a CIDR ("198.18.0.0/24", "2001:db8::/48") or one address.
        cidr: String,
        /// Remove it again after this long: "90s", "10m", "1h", "7d", or seconds; a negative
        /// number (fail2ban's permanent ban) means never.
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true, value_parser = parse_ttl)]
        ttl: Option<Ttl>,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Remove a runtime entry (waits in the state directory as `add` does when no daemon answers).
    Del {
        /// The entry as it was added: a CIDR or one address.
        cidr: String,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        state: StateArgs,
    },
    /// List the runtime entries, with what expires when.
    List {
        /// Machine-readable output: one JSON object (list, runtime entries with their expiry in
        /// unix seconds, how many the config brings, CrowdSec's decisions, now).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum ShadowAction {
    /// Load a config file (a whole port25.toml: lists, list files, policy, ports, rate limits,
    /// mode) as the shadow policy, replacing one loaded before; its counts start from zero. A
    /// config with errors is refused with file, line and fix, and nothing changes.
    Load {
        /// The candidate config.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Since when it is judged, how many new connection attempts it would newly drop and newly
    /// pass, by (live reason -> its reason), and the source prefixes of each with their last-seen
    /// times.
    Status {
        /// Machine-readable output: one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make the shadow policy the live one, as a reload to it (one generation swap: no packet sees
    /// half of each); the daemon reloads from its file from then on.
    Promote {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Discard the shadow policy; the live one is untouched.
    Drop {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum EgressAction {
    /// Print the refused (in monitor mode, would-be refused) outbound connects the daemon kept
    /// (the last 1,000): time, process, user, cgroup, destination.
    Log {
        /// One JSON object a line: time, pid, uid, user, comm, exe, cmdline, cgroup, dest, port,
        /// verdict, suppressed, seq.
        #[arg(long)]
        json: bool,
        /// Keep printing new events as they come, until interrupted.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Clone, Copy, Debug)]
enum Ttl {
    Seconds(u64),
    Never,
}

/// The longest TTL: ten years. Longer is a typo (`99999999999d`), or "never", which is `-1`.
const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

fn parse_ttl(text: &str) -> Result<Ttl, BadValue> {
    let secs = match text.parse::<i64>() {
        Ok(secs) => match u64::try_from(secs) {
            Ok(secs) => secs,
            Err(_) => return Ok(Ttl::Never),
        },
        Err(_) => {
            let duration = humantime::parse_duration(text).map_err(|reason| BadValue::Ttl {
                text: text.to_owned(),
                reason: reason.to_string(),
            })?;
            if duration.subsec_nanos() != 0 {
                return Err(BadValue::Ttl {
                    text: text.to_owned(),
                    reason: "a TTL counts whole seconds".to_owned(),
                });
            }
            duration.as_secs()
        }
    };
    match secs {
        0 => Err(BadValue::ZeroTtl),
        secs if secs > MAX_TTL_SECS => Err(BadValue::Ttl {
            text: text.to_owned(),
            reason: "longer than ten years; -1 or no --ttl means no expiry".to_owned(),
        }),
        secs => Ok(Ttl::Seconds(secs)),
    }
}

/// A command-line value clap cannot take, in the words clap shows after the option's name.
#[derive(Debug, thiserror::Error)]
enum BadValue {
    #[error("a TTL of 0 would expire at once; leave --ttl out for no expiry")]
    ZeroTtl,
    #[error("{text:?} is not a TTL ({reason}); write e.g. 600, 90s, 10m, 1h or 7d")]
    Ttl { text: String, reason: String },
    #[error("{0:?} is not a number of seconds from 0.1 to 3600")]
    Seconds(String),
}

#[derive(clap::Args)]
struct PinArgs {
    /// BPF filesystem directory where port25d pins its maps and links.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
}

#[derive(clap::Args)]
struct SocketArgs {
    /// The daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    control_socket: PathBuf,
}

/// port25d's state directory, where a list change waits while no daemon answers.
#[derive(clap::Args)]
struct StateArgs {
    /// The daemon's --state-dir.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

/// How a command reaches the running daemon.
#[derive(clap::Args)]
struct ClientArgs {
    /// The daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    control_socket: PathBuf,
    /// Seconds to wait for the daemon's answer before giving up with an error (a stopped or
    /// stuck daemon never blocks the caller longer).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT.as_secs_f64(), value_parser = parse_seconds)]
    timeout: f64,
}

impl ClientArgs {
    fn endpoint(&self) -> Endpoint {
        Endpoint {
            socket: self.control_socket.clone(),
            timeout: Duration::from_secs_f64(self.timeout),
        }
    }
}

/// A number of seconds from 0.1 to 3600 (`--interval`, `--timeout`).
fn parse_seconds(text: &str) -> Result<f64, BadValue> {
    match text.parse::<f64>() {
        Ok(secs) if (0.1..=3600.0).contains(&secs) => Ok(secs),
        _ => Err(BadValue::Seconds(text.to_owned())),
    }
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// Config file (TOML). Default: /etc/port25/port25.toml if it exists, else the built-in default
    /// (port 25, policy ratelimit, empty lists).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Parses the command line and runs the subcommand; what `port25d` exits with.
pub fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            config,
            interfaces,
            xdp_mode,
            monitor,
            metrics_listen,
            pins,
            socket,
            state_dir,
        } => {
            let options = RunOptions {
                config: config.config,
                pin_dir: pins.pin_dir,
                state_dir,
                control_socket: socket.control_socket,
                overrides: Overrides {
                    interfaces,
                    xdp_mode,
                    monitor,
                    metrics_listen,
                },
            };
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(run(options)))
                .map(|()| 0)
        }
        Command::CheckConfig { config, quiet } => {
            check_config::check_config(config.config, quiet).map(|()| 0)
        }
        Command::Status { json, client, pins } => {
            status::status(&client.endpoint(), &pins.pin_dir, json)
        }
        Command::Allow { action } => lists::list_action(ListKind::Allow, action).map(|()| 0),
        Command::Deny { action } => lists::list_action(ListKind::Deny, action).map(|()| 0),
        Command::Top {
            pins,
            count,
            once,
            json,
            all,
            interval,
        } => top(&TopOptions {
            pin_dir: &pins.pin_dir,
            count,
            all,
            once,
            json,
            interval: Duration::from_secs_f64(interval),
        })
        .map(|()| 0),
        Command::Egress {
            action:
                EgressAction::Log {
                    json,
                    follow,
                    client,
                },
        } => egress::log(&client.endpoint(), json, follow).map(|()| 0),
        Command::Audit {
            json,
            no_relay_probe,
            filter_only,
            postfix_config,
            pins,
            client,
        } => {
            let checks = audit::MailChecks {
                filter_only,
                no_relay_probe,
                postfix_config,
            };
            audit::audit(&client.endpoint(), &pins.pin_dir, &checks, json)
        }
        Command::Why {
            address,
            port,
            json,
            client,
        } => why::why(&client.endpoint(), &address, port, json).map(|()| 0),
        Command::Shadow { action } => match action {
            ShadowAction::Load { config, client } => shadow::load(&client.endpoint(), &config),
            ShadowAction::Status { json, client } => shadow::status(&client.endpoint(), json),
            ShadowAction::Promote { client } => shadow::promote(&client.endpoint()),
            ShadowAction::Drop { client } => shadow::drop(&client.endpoint()),
        }
        .map(|()| 0),
        Command::History { since, json, state } => {
            history::history(&state.state_dir, since, json).map(|()| 0)
        }
        Command::Detach {
            force,
            client,
            pins,
        } => detach::detach(&client.endpoint(), &pins.pin_dir, force).map(|()| 0),
        Command::Manpage { dir: None } => manpages::print_main().map(|()| 0),
        Command::Manpage { dir: Some(dir) } => manpages::write_all(&dir).and_then(|pages| {
            for page in pages {
                output::write(format_args!("{}", page.display()), true)?;
            }
            Ok(0)
        }),
        Command::Completions { shell } => {
            // Into memory first: clap_complete panics when its writer fails (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(
                shell,
                &mut without_hidden_subcommands(Cli::command()),
                "port25d",
                &mut script,
            );
            std::io::Write::write_all(&mut std::io::stdout(), &script)
                .map_err(|err| anyhow::anyhow!("writing the completion script: {err}"))
                .map(|()| 0)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // `| head`: the reader has what it wanted.
        Err(err) if err.is::<output::StdoutClosed>() => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("port25d: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command line as operators' shells complete it: clap's generators list hidden
/// subcommands too (`manpage`, `completions` are for packaging).
fn without_hidden_subcommands(command: clap::Command) -> clap::Command {
    let visible: Vec<clap::Command> = command
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    clap::Command::new("port25d")
        .args(command.get_arguments().cloned())
        .subcommands(visible)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORT25_LOG")
        // netlink-packet-route warns about every attribute newer than itself in an RTM_GETLINK
        // answer (IFLA_INET6_CONF grows with kernels); port25d reads only IFLA_XDP there.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,netlink_packet_route=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_is_whole_seconds_up_to_ten_years_or_never() {
        assert!(matches!(parse_ttl("600"), Ok(Ttl::Seconds(600))));
        assert!(matches!(parse_ttl("1h"), Ok(Ttl::Seconds(3600))));
        assert!(matches!(parse_ttl("-1"), Ok(Ttl::Never)));
        assert!(matches!(parse_ttl("0"), Err(BadValue::ZeroTtl)));
        for (text, reason) in [
            ("500ms", "whole seconds"),
            ("1.5s", "whole seconds"),
            ("99999999999d", "longer than ten years"),
            ("3651d", "longer than ten years"),
            ("soon", "not a TTL"),
        ] {
            let said = parse_ttl(text).map(|_| ()).unwrap_err().to_string();
            assert!(said.contains(reason), "{text}: {said}");
        }
        assert!(matches!(parse_ttl("3650d"), Ok(Ttl::Seconds(_))));
    }
}
