//! Network-namespace labs for the end-to-end tests: namespaces joined by veth pairs, the real
//! `port25d` attached in one of them, `smtp-sink` servers, `swaks` clients and `tcpdump` captures.
//!
//! Everything that lives longer than a call is a guard whose `Drop` cleans up, also when the test
//! panics: namespaces are deleted (with the veths and any process left inside), processes are stopped
//! (SIGTERM, then SIGKILL after a bounded wait), the work directory is removed (kept, and named on
//! stderr, when the test failed). Guards that run inside a namespace borrow its [`Netns`], so the
//! compiler makes sure the namespace outlives them.
//!
//! Helpers panic with a diagnostic (the daemon's log, the command's stderr) instead of returning
//! errors: they are for tests, where a panic is the failure report.

mod addresses;
mod bpffs;
mod capture;
mod cgroup;
mod crowdsec;
mod daemon;
mod fake_lapi;
mod gateway;
mod netns;
mod postfix;
mod process;
mod prometheus;
mod smtp;
mod wire;
mod workdir;
mod xdp_pass;

use std::{
    env,
    ffi::OsStr,
    fs::{self, File},
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use ipnet::{Ipv4Net, Ipv6Net};

pub use self::{
    addresses::*, bpffs::*, capture::*, cgroup::*, crowdsec::*, daemon::*, fake_lapi::*,
    gateway::*, netns::*, postfix::*, process::*, prometheus::*, smtp::*, wire::*, workdir::*,
    xdp_pass::*,
};

/// How often the `poll` loops look again.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// How long a stopped process gets between SIGTERM (or SIGINT) and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP port25_packets TCP packets
# TYPE port25_packets counter
port25_packets_total{iface="gw0",verdict="pass",reason="allowlisted"} 17
port25_packets_total{iface="gw0",verdict="drop",reason="not_allowlisted"} 3
port25_packets_total{iface="gw1",verdict="drop",reason="not_allowlisted"} 4
port25_config_reloads_total{result="success"} 1
port25_list_entries{list="a\"b,c"} 2
port25_build_info 1
# EOF
"#;

    #[test]
    fn metric_matches_name_and_exact_labels() {
        let pass = [
            ("reason", "allowlisted"),
            ("iface", "gw0"),
            ("verdict", "pass"),
        ];
        assert_eq!(metric(TEXT, "port25_packets_total", &pass), Some(17.0));
        assert_eq!(metric(TEXT, "port25_packets", &pass), None);
        assert_eq!(
            metric(TEXT, "port25_packets_total", &[("iface", "gw0")]),
            None
        );
        assert_eq!(
            metric(
                TEXT,
                "port25_config_reloads_total",
                &[("result", "success")]
            ),
            Some(1.0)
        );
        assert_eq!(
            metric(TEXT, "port25_list_entries", &[("list", "a\"b,c")]),
            Some(2.0)
        );
        assert_eq!(metric(TEXT, "port25_build_info", &[]), Some(1.0));
    }

    #[test]
    fn metric_sum_adds_matching_series() {
        assert_eq!(metric_sum(TEXT, "port25_packets_total", &[]), 24.0);
        assert_eq!(
            metric_sum(TEXT, "port25_packets_total", &[("verdict", "drop")]),
            7.0
        );
        assert_eq!(metric_sum(TEXT, "nope", &[]), 0.0);
    }

    #[test]
    fn pcap_summary_counts_frames() {
        let mut pcap = Vec::new();
        for word in [0xa1b2_c3d4_u32, 0x0004_0002, 0, 0, 65535, 1] {
            pcap.extend_from_slice(&word.to_le_bytes());
        }
        let frame = [0u8; 60];
        for _ in 0..2 {
            for word in [0u32, 0, 60, 60] {
                pcap.extend_from_slice(&word.to_le_bytes());
            }
            pcap.extend_from_slice(&frame);
        }
        let summary = summarize_pcap(&pcap).expect("a valid pcap");
        assert_eq!(
            summary,
            CaptureSummary {
                packets: 2,
                bytes: 120,
                syns: 0
            }
        );
    }
}
