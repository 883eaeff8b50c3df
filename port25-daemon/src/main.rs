//! `port25d`: command-line entry point.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{CommandFactory, Parser, Subcommand};
use port25_daemon::{
    config::{Config, Overrides, XdpModeSetting},
    daemon::{RunOptions, run},
    pins::DEFAULT_PIN_DIR,
    top::{TopOptions, top},
};

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
    /// Write the man page (roff) to standard output, for packaging.
    #[command(hide = true)]
    Manpage,
    /// Write shell completions to standard output, for packaging.
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Validate the config and print the effective policy; exit 1 with file, line and reason on error.
    ///
    /// Example: port25d check-config --config /etc/port25/port25.toml
    CheckConfig {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(clap::Args)]
struct PinArgs {
    /// BPF filesystem directory where port25d pins what `top` reads.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
}

fn parse_interval(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if (0.1..=3600.0).contains(&secs) => Ok(secs),
        _ => Err(format!(
            "{text:?} is not a number of seconds from 0.1 to 3600"
        )),
    }
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// Config file (TOML). Default: /etc/port25/port25.toml if it exists, else the built-in default
    /// (port 25, policy ratelimit, empty lists).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
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
        } => {
            let options = RunOptions {
                config: config.config,
                pin_dir: pins.pin_dir,
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
        }
        Command::CheckConfig { config } => check_config(config.config),
        Command::Manpage => clap_mangen::Man::new(Cli::command())
            .section("8")
            .render(&mut std::io::stdout())
            .map_err(anyhow::Error::from),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "port25d",
                &mut std::io::stdout(),
            );
            Ok(())
        }
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
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("port25d: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(path.as_deref())?;
    config.check_interfaces()?;
    println!("{config}");
    println!("configuration OK");
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORT25_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}
