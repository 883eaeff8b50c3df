//! `cargo xtask`: installs what port25 needs, builds `port25d`, runs it in a throw-away lab and runs
//! every test. Orchestration only: the build itself stays with cargo (and aya-build in port25-daemon's
//! build.rs).

mod bench;
mod daemon;
mod lab;
mod package;
mod packages;
mod setup;
mod test;
mod util;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "port25 developer tasks",
    version
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install ahead of time what building, the tests, the lab and the bench need (Debian
    /// packages, rust-src, bpf-linker, bpffs), then check that it works. Idempotent. Needs root.
    /// (build, run, test, bench and package install what they need themselves.)
    Setup {
        /// Reinstall bpf-linker even if the right version is already installed.
        #[arg(long)]
        force: bool,
    },
    /// Build port25d (with the embedded XDP program) and print its path.
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Build, then run `port25d run`. Without `DAEMON_ARGS` it runs in a lab of two network namespaces
    /// (p25-run-gw, p25-run-client) joined by a veth pair, attached to gw0, with a control socket,
    /// state and pins of its own under /run/port25-lab; it prints commands to try and removes the
    /// lab on exit. Installs what the lab needs first.
    Run {
        /// Build and run the release binary.
        #[arg(long)]
        release: bool,
        /// Stop the daemon with SIGTERM after N seconds (smoke test).
        #[arg(long, value_name = "N")]
        seconds: Option<u64>,
        /// Arguments for `port25d run`, e.g. `-- --iface eth0 --config /etc/port25/port25.toml`.
        /// When given, no lab is made and port25d runs on this host's interfaces.
        #[arg(last = true, value_name = "DAEMON_ARGS")]
        daemon_args: Vec<String>,
    },
    /// Build port25d and the Debian package target/debian/port25_VERSION_ARCH.deb (unit, config,
    /// man page, completions, fail2ban action, alert rules, dashboard); print its path.
    Package {
        /// Package a debug build (quicker to build; for tests, not for gateways).
        #[arg(long)]
        debug: bool,
        /// Directory for the .deb instead of target/debian.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<std::path::PathBuf>,
    },
    /// Measure port25 against a bare XDP program, xdp-filter, iptables and nftables (per-packet
    /// cost, list scale, a SYN flood with mail during it, the daemon's memory) and write
    /// bench/report.md with its plots. Needs root.
    Bench {
        /// A short run that checks the bench works (CI): small counts, 1 s floods, the report to
        /// a temporary directory.
        #[arg(long)]
        smoke: bool,
        /// Directory for report.md and the plots instead of bench/ (or the temporary one).
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
        /// What sends the flood: live frames (`flood_tx`), or a packet socket; by default live
        /// frames, or the packet socket where the kernel refuses those.
        #[arg(long, value_parser = ["live-frames", "packet-socket"])]
        generator: Option<String>,
    },
    /// Run the kernel-facing test suites on other kernels, each in a QEMU guest booted into an
    /// initramfs of the test binaries (Debian's 6.1 and 6.12 cloud kernels by default), and print
    /// a table: kernel, test binaries passed and failed, time. Needs root.
    Vm {
        /// `6.1`, `6.12` (Debian 12's cloud kernels, fetched into target/vm), or a vmlinuz path
        /// (with --modules). Repeatable; default: 6.1 and 6.12.
        #[arg(long = "kernel", value_name = "KERNEL")]
        kernels: Vec<String>,
        /// lib/modules/RELEASE of a kernel given by path.
        #[arg(long, value_name = "DIR")]
        modules: Option<std::path::PathBuf>,
        /// Comma-separated suites of port25-tests to run in the guests.
        #[arg(long, value_name = "SUITES", default_value = vm::DEFAULT_TESTS)]
        tests: String,
        /// How the guest's CPU runs: auto picks KVM only where /dev/kvm opens and the CPU has
        /// vmx or svm, TCG otherwise.
        #[arg(long, value_enum, default_value = "auto")]
        accel: vm::Accel,
        /// Make the canary test fail on kernels whose release starts with this (proves that the
        /// matrix can fail, and names where).
        #[arg(long, value_name = "RELEASE_PREFIX")]
        canary: Option<String>,
        /// Seconds a guest may take to boot, then each test binary in it (TCG ran the slowest,
        /// operations on 6.1, in 385 s).
        #[arg(long, value_name = "SECONDS", default_value_t = 900)]
        timeout: u64,
    },
    /// Run every test, the root-only kernel and network-namespace tests included. Needs root.
    Test {
        /// Extra arguments for `cargo test --workspace`, e.g. `-- -p port25-tests -- --nocapture`.
        #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    util::complete_path();
    let result = match cli.cmd {
        Cmd::Setup { force } => setup::setup(force).map(|()| ExitCode::SUCCESS),
        Cmd::Build { release } => daemon::build(release).map(|path| {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }),
        Cmd::Run {
            release,
            seconds,
            daemon_args,
        } => daemon::run(release, seconds, &daemon_args),
        Cmd::Package { debug, out_dir } => package::package(debug, out_dir.as_deref()).map(|deb| {
            println!("{}", deb.display());
            ExitCode::SUCCESS
        }),
        Cmd::Test { args } => test::test(&args),
        Cmd::Vm {
            kernels,
            modules,
            tests,
            accel,
            canary,
            timeout,
        } => vm::vm(&vm::Options {
            kernels: if kernels.is_empty() {
                vec!["6.1".into(), "6.12".into()]
            } else {
                kernels
            },
            modules,
            tests,
            accel,
            canary,
            timeout: std::time::Duration::from_secs(timeout),
        }),
        Cmd::Bench {
            smoke,
            out,
            generator,
        } => bench::bench(smoke, out, generator.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn test_args_pass_through_including_a_second_separator() {
        let cli =
            Cli::try_parse_from(["xtask", "test", "--", "-p", "t", "--", "--nocapture"]).unwrap();
        let Cmd::Test { args } = cli.cmd else {
            panic!("not test")
        };
        assert_eq!(args, ["-p", "t", "--", "--nocapture"]);
    }

    #[test]
    fn run_options_before_the_separator_belong_to_xtask() {
        let cli = Cli::try_parse_from(["xtask", "run", "--seconds", "5", "--", "--iface", "eth0"])
            .unwrap();
        let Cmd::Run {
            release,
            seconds,
            daemon_args,
        } = cli.cmd
        else {
            panic!("not run")
        };
        assert!(!release);
        assert_eq!(seconds, Some(5));
        assert_eq!(daemon_args, ["--iface", "eth0"]);
        let cli = Cli::try_parse_from(["xtask", "run"]).unwrap();
        assert!(matches!(cli.cmd, Cmd::Run { daemon_args, .. } if daemon_args.is_empty()));
    }
}
