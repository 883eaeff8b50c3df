//! `port25-bench`: measures port25 and what a user would pick instead, on this machine, in one
//! run, and writes `report.md`, `per-packet.svg` and `flood.svg` to the output directory.
//! `cargo xtask bench [--smoke]` builds and runs it as root.
//!
//! A benchmark, not a test: it asserts nothing about speed. It does check that every figure is
//! there and that each measured path took the action it should (a fast wrong path is no figure),
//! and fails loudly otherwise.

mod daemon;
mod egress;
mod flood;
mod kernel;
mod markdown;
mod programs;
mod report;
mod results;
mod svg;
mod sys;
mod targets;
mod xdpfilter;

use std::{
    fs,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use port25_testkit::lab::WorkDir;

#[derive(Parser)]
#[command(
    name = "port25-bench",
    about = "port25 against the floor, xdp-filter, iptables and nftables"
)]
struct Cli {
    /// Small counts and a 1 s flood: checks the bench still works, measures little.
    #[arg(long)]
    smoke: bool,
    /// Where report.md and the plots go.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Sections 1 and 2 only (the kernel's per-packet and list-scale costs), printed as they are
    /// measured, no report: for working on the datapath.
    #[arg(long)]
    kernel_only: bool,
    /// What sends section 3's flood; by default live frames, or the packet socket where the
    /// kernel refuses those.
    #[arg(long, value_enum)]
    generator: Option<flood::Generator>,
    /// Section 3 only, for these receivers (their letters, e.g. `fgh`), printed as they are
    /// measured, no report: for working on the datapath under the flood.
    #[arg(long, value_name = "LETTERS")]
    receivers: Option<String>,
}

/// How much of everything: full or smoke.
pub struct Settings {
    /// BPF_PROG_TEST_RUN repeats per round, and rounds (median).
    pub repeat: u32,
    pub rounds: usize,
    /// Allowlist sizes of section 2 (prefixes per family).
    pub scale_sizes: Vec<usize>,
    /// Flood measurement window per receiver and round, and the rounds.
    pub flood: Duration,
    pub flood_rounds: usize,
    /// Live-frames batch size (frames per XDP_TX flush).
    pub live_batch: u32,
    /// Messages per mail batch.
    pub messages: usize,
    /// Allow entries of the loaded daemon in section 5.
    pub daemon_entries: usize,
    pub scrapes: usize,
    /// TCP connects per round of section 6.
    pub connects: u32,
}

impl Settings {
    fn new(smoke: bool) -> Self {
        if smoke {
            Self {
                repeat: 10_000,
                rounds: 3,
                scale_sizes: vec![10, 10_000],
                flood: Duration::from_secs(1),
                flood_rounds: 1,
                live_batch: 64,
                messages: 2,
                daemon_entries: 10_000,
                scrapes: 3,
                connects: 2_000,
            }
        } else {
            Self {
                repeat: 1_000_000,
                rounds: 7,
                scale_sizes: vec![10, 10_000, 1_000_000],
                flood: Duration::from_secs(5),
                flood_rounds: 3,
                live_batch: 64,
                messages: 50,
                daemon_entries: 1_000_000,
                scrapes: 20,
                connects: 20_000,
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("port25-bench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the bench needs root: it loads XDP programs and creates network namespaces");
    }
    flood::check_tools()?;
    let started = Instant::now();
    let settings = Settings::new(cli.smoke);
    let work = WorkDir::new("bench");
    fs::create_dir_all(&cli.out).with_context(|| format!("cannot create {}", cli.out.display()))?;

    if let Some(letters) = &cli.receivers {
        let receivers = flood::Receiver::parse_letters(letters)?;
        eprintln!("bench: 3-4. flood and mail, receivers {receivers:?}");
        flood::flood(&settings, cli.generator, &receivers)?;
        return Ok(());
    }
    eprintln!("bench: 1. per-packet cost");
    let per_packet = kernel::per_packet(&settings, work.path())?;
    eprintln!("bench: 2. list scale");
    let scale = kernel::scale(&settings)?;
    if cli.kernel_only {
        return Ok(());
    }
    eprintln!("bench: 3-4. flood and mail");
    let flood = flood::flood(&settings, cli.generator, &flood::Receiver::ALL)?;
    eprintln!("bench: 5. daemon");
    let daemon = daemon::daemon(&settings)?;
    eprintln!("bench: 6. egress guard");
    let egress = egress::egress(&settings)?;

    let results = results::Results {
        machine: sys::Machine::describe(),
        smoke: cli.smoke,
        wall_seconds: started.elapsed().as_secs_f64(),
        per_packet,
        scale,
        flood,
        daemon,
        scrapes: settings.scrapes,
        egress,
        connects: settings.connects,
    };
    let headline = report::headline(&results)?;
    let write = |name: &str, text: String| {
        let path = cli.out.join(name);
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write("report.md", report::markdown(&results, &headline))?;
    write("per-packet.svg", svg::per_packet_svg(&results.per_packet))?;
    write("flood.svg", svg::flood_svg(&results.flood))?;
    report::check_complete(&results)?;
    println!(
        "bench: wrote {} in {:.0} s; port25 vs floor {:.2}x, vs xdp-filter {}, iptables CPU {:.2}x port25's, nftables {:.2}x",
        cli.out.join("report.md").display(),
        results.wall_seconds,
        headline.vs_floor,
        headline
            .vs_xdp_filter
            .map_or("n/a".into(), |v| format!("{v:.2}x")),
        headline.iptables_cpu,
        headline.nftables_cpu
    );
    Ok(())
}
