//! The packaging, checked with the tools that consume it: `cargo xtask package --debug` builds the
//! .deb once; systemd-analyze verifies and rates the unit it contains, the packaged port25d runs
//! with exactly the unit's capabilities (and with each one missing) and makes only the system
//! calls the unit allows, promtool checks and unit-tests the alert rules and every dashboard
//! query, a real fail2ban-server drives the fail2ban action, and systemd 252 runs the unit in a
//! container. A missing tool fails the test (`cargo xtask setup` installs them all); nothing is
//! skipped. The netns and container tests need root.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod deb;
mod fail2ban;
mod monitoring;
mod systemd;
mod unit;

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Every metric port25d exports; the dashboard and the alert rules may use these (and `up`).
const METRICS: &[&str] = &[
    "port25_packets_total",
    "port25_bytes_total",
    "port25_list_entries",
    "port25_attached",
    "port25_config_reloads_total",
    "port25_build_info",
    "port25_top_source_dropped",
    "port25_tracked_sources",
    "port25_pins_persistent",
    "port25_interfaces_configured",
    "port25_egress_attached",
    "port25_egress_connects_total",
    "port25_egress_forwarded_total",
    "port25_egress_events_lost_total",
    "port25_egress_top_denied",
    "port25_detached_total",
    "port25_crowdsec_decisions",
    "port25_crowdsec_decisions_skipped_total",
    "port25_crowdsec_decisions_overridden",
    "port25_crowdsec_polls_total",
    "port25_crowdsec_alerts_total",
    "port25_crowdsec_last_success_timestamp_seconds",
    "port25_crowdsec_failed_polls_in_a_row",
    "port25_shadow_loaded",
    "port25_shadow_syns_total",
    "port25_shadow_top_source",
];

/// The highest `systemd-analyze security` exposure the unit may have: what was measured with
/// systemd 252 (2.0, "OK", since policy synproxy's IPv6 needs CAP_NET_RAW and /proc/sys). Most single hardening lines are worth 0.1-0.2 on this scale; the few
/// that do not move the rounded score are caught by [`ACCEPTED_EXPOSURES`].
const MAX_EXPOSURE: f64 = 2.0;

/// The checks `systemd-analyze security` may fail for port25d.service, each for a reason. Any
/// other failed check is a regression of the unit's hardening.
const ACCEPTED_EXPOSURES: &[(&str, &str)] = &[
    (
        "User=/DynamicUser=",
        "root with a reduced bounding set, see the unit",
    ),
    (
        "RootDirectory=/RootImage=",
        "a single binary, ProtectSystem=strict instead",
    ),
    ("PrivateNetwork=", "XDP attaches to the host's interfaces"),
    (
        "PrivateUsers=",
        "capabilities in a user namespace are not CAP_BPF for the kernel",
    ),
    ("CapabilityBoundingSet=~CAP_BPF", "loads the XDP program"),
    (
        "CapabilityBoundingSet=~CAP_NET_ADMIN",
        "attaches XDP and TC",
    ),
    (
        "ProcSubset=",
        "policy synproxy reads net.netfilter.nf_conntrack_tcp_loose in /proc/sys",
    ),
    (
        "CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)",
        "CAP_NET_RAW: ip6tables-legacy-restore's raw socket (policy synproxy, IPv6)",
    ),
    ("SystemCallFilter=~@privileged", "bpf() is in @privileged"),
    (
        "RestrictAddressFamilies=~AF_NETLINK",
        "XDP/TC attach on older kernels",
    ),
    (
        "RestrictAddressFamilies=~AF_UNIX",
        "control socket, sd_notify",
    ),
    (
        "RestrictAddressFamilies=~AF_(INET|INET6)",
        "metrics endpoint",
    ),
    ("IPAddressDeny=", "the metrics address is configurable"),
    (
        "DeviceAllow=",
        "char-rtc:r, which ProtectClock= itself adds",
    ),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_path_buf()
}

fn packaging() -> PathBuf {
    workspace().join("packaging")
}

/// A program the tests need: on PATH or in the sbin directories; panics naming the Debian package.
fn tool(name: &str, deb: &str) -> PathBuf {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed (Debian package {deb}): run `cargo xtask setup`")
        })
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd`, panics with its output unless it exits 0.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(cmd)));
    assert!(
        out.status.success(),
        "`{}` failed ({}):\n{}\n{}",
        describe(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A fresh scratch directory under cargo's per-target tmp dir.
fn scratch(name: &str) -> PathBuf {
    // Fixed names: a rerun replaces the last run's files (left for inspection after a failure).
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("packaging-{name}"));
    if dir.exists() {
        fs::remove_dir_all(&dir).unwrap();
    }
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The .deb `cargo xtask package --debug` built, and its contents extracted.
struct Built {
    deb: PathBuf,
    /// `dpkg-deb -x` of the package, with its control files in `root/DEBIAN`.
    root: PathBuf,
}

impl Built {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }
}

/// Builds the package once for all tests (`xtask package` runs cargo, a no-op when port25d is
/// fresh).
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = scratch("deb");
        let started = Instant::now();
        let out = run(Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["package", "--debug", "--out-dir"])
            .arg(&dir));
        eprintln!(
            "xtask package --debug: {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let deb = PathBuf::from(stdout(&out).trim());
        assert!(
            deb.is_file(),
            "xtask package printed {deb:?}, which is not a file"
        );
        let root = dir.join("root");
        let dpkg_deb = tool("dpkg-deb", "dpkg");
        run(Command::new(&dpkg_deb).arg("-x").arg(&deb).arg(&root));
        run(Command::new(&dpkg_deb)
            .arg("-e")
            .arg(&deb)
            .arg(root.join("DEBIAN")));
        Built { deb, root }
    })
}
