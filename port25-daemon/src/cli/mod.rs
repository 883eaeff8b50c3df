//! `port25d`'s command line: the subcommands and their options (clap), and the dispatch to the
//! file of each (`check_config.rs`, `lists.rs`, `status.rs`, `top.rs`, `egress.rs`, `detach.rs`; `run` is
//! `crate::daemon`, `audit` is `crate::audit`).

mod check_config;
mod detach;
mod egress;
mod lists;
mod manpages;
mod status;
mod top;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use self::top::{TopOptions, top};
use crate::{
    audit,
    config::Overrides,
    control::DEFAULT_SOCKET,
    daemon::{DEFAULT_STATE_DIR, RunOptions, run},
    model::{ListKind, XdpModeSetting},
    pins::DEFAULT_PIN_DIR,
};
use clap::{CommandFactory, Parser, Subcommand};

/// XDP filter for SMTP (TCP port 25) on mail gateways.
///
/// Drops or rate-limits port-25 traffic in the kernel by CIDR allow and deny lists, and exports
/// what it did to Prometheus.
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
        socket: SocketArgs,
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
        /// List every tracked prefix, also those without drops.
        #[arg(long)]
        all: bool,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 2.0, value_parser = parse_interval)]
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
    /// the filter covers every interface a listener is reachable on; a verdict per finding.
    /// Exit 0 when nothing needs action, 2 when a finding says NOT PROTECTED or CHECK, 1 on error.
    ///
    /// Example: port25d audit --json
    Audit {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pins: PinArgs,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Remove the filter: detach the programs and remove every pin (and take port25 out of
    /// libxdp's dispatchers). A running daemon is asked to detach and stop; otherwise the pins a
    /// stopped or killed daemon left are removed.
    ///
    /// Example: port25d detach
    Detach {
        #[command(flatten)]
        socket: SocketArgs,
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
    /// Add a CIDR (or one address); it takes effect at once and survives restarts.
    Add {
        cidr: String,
        /// Remove it again after this long: "90s", "10m", "1h", "7d", or seconds; a negative
        /// number (fail2ban's permanent ban) means never.
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true, value_parser = parse_ttl)]
        ttl: Option<Ttl>,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// Remove a runtime entry.
    Del {
        cidr: String,
        #[command(flatten)]
        socket: SocketArgs,
    },
    /// List the runtime entries, with what expires when.
    List {
        #[command(flatten)]
        socket: SocketArgs,
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
        socket: SocketArgs,
    },
}

#[derive(Clone, Copy, Debug)]
enum Ttl {
    Seconds(u64),
    Never,
}

fn parse_ttl(text: &str) -> Result<Ttl, BadValue> {
    if let Ok(secs) = text.parse::<i64>() {
        return match u64::try_from(secs) {
            Ok(0) => Err(BadValue::ZeroTtl),
            Ok(secs) => Ok(Ttl::Seconds(secs)),
            Err(_) => Ok(Ttl::Never),
        };
    }
    humantime::parse_duration(text)
        .map(|d| Ttl::Seconds(d.as_secs().max(1)))
        .map_err(|reason| BadValue::Ttl {
            text: text.to_owned(),
            reason,
        })
}

/// A command-line value clap cannot take, in the words clap shows after the option's name.
#[derive(Debug, thiserror::Error)]
enum BadValue {
    #[error("a TTL of 0 would expire at once; leave --ttl out for no expiry")]
    ZeroTtl,
    #[error("{text:?} is not a duration ({reason}); write e.g. 600, 90s, 10m, 1h or 7d")]
    Ttl {
        text: String,
        reason: humantime::DurationError,
    },
    #[error("{0:?} is not a number of seconds from 0.1 to 3600")]
    Interval(String),
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

fn parse_interval(text: &str) -> Result<f64, BadValue> {
    match text.parse::<f64>() {
        Ok(secs) if (0.1..=3600.0).contains(&secs) => Ok(secs),
        _ => Err(BadValue::Interval(text.to_owned())),
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
        Command::Status { json, socket, pins } => {
            status::status(&socket.control_socket, &pins.pin_dir, json)
        }
        Command::Allow { action } => lists::list_action(ListKind::Allow, action).map(|()| 0),
        Command::Deny { action } => lists::list_action(ListKind::Deny, action).map(|()| 0),
        Command::Top {
            pins,
            count,
            once,
            all,
            interval,
        } => top(&TopOptions {
            pin_dir: &pins.pin_dir,
            count,
            all,
            once,
            interval: Duration::from_secs_f64(interval),
        })
        .map(|()| 0),
        Command::Egress {
            action:
                EgressAction::Log {
                    json,
                    follow,
                    socket,
                },
        } => egress::log(&socket.control_socket, json, follow).map(|()| 0),
        Command::Audit { json, pins, socket } => {
            audit::audit(&socket.control_socket, &pins.pin_dir, json)
        }
        Command::Detach { socket, pins } => {
            detach::detach(&socket.control_socket, &pins.pin_dir).map(|()| 0)
        }
        Command::Manpage { dir: None } => manpages::print_main().map(|()| 0),
        Command::Manpage { dir: Some(dir) } => manpages::write_all(&dir).map(|pages| {
            for page in pages {
                println!("{}", page.display());
            }
            0
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
