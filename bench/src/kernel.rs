//! Sections 1 and 2: the per-packet cost in the kernel, with BPF_PROG_TEST_RUN.
//!
//! The kernel runs the program `repeat` times on one frame and reports the average time per run,
//! from its own clock: the syscall is outside the figure, the test-run loop's own overhead is in
//! it, and that is why the bare XDP_PASS/XDP_DROP programs (the floor) are measured the same way.
//! Each figure is the median of several rounds.

use std::{fs, path::Path, time::Instant};

use anyhow::{Context, Result, bail};
use aya::programs::{TestRun, TestRunOptions};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use port25_common::maps;
use port25_daemon::testing::{CidrSet, Config, Datapath, ListKind};
use port25_testkit::frames::{
    self, ALLOWED4, ALLOWED6, DENIED4, EXT_DEST_OPTS, EXT_HOP_BY_HOP, OTHER4, OTHER6,
};

use crate::{
    Settings, programs,
    sys::{self, Spread},
    xdpfilter::XdpFilter,
};

pub(crate) use port25_testkit::reference::{XDP_DROP, XDP_PASS, XDP_TX};

/// The closed-port policy, with one entry of each kind the rows need.
const DROP_POLICY: &str = r#"
policy = "drop"
ports = [25]
[allow]
cidrs = ["198.18.1.0/24", "2001:db8:1::/48"]
[deny]
cidrs = ["198.18.2.64/26", "2001:db8:2::/48"]
"#;

/// The open-MX policy with buckets so small that every SYN after the first is rate-limited.
const RATELIMIT_POLICY: &str = r#"
policy = "ratelimit"
ports = [25]
[ratelimit]
syn_rate = 1
syn_burst = 1
global_syn_rate = 1
global_syn_burst = 1
"#;

/// A shadow policy's candidate for the rows of `DROP_POLICY` (rows "a shadow loaded"): an open
/// MX with a blocklist, which agrees on the allowlisted source and would admit the others.
const SHADOW_OF_DROP: &str = r#"
policy = "ratelimit"
ports = [25]
[allow]
cidrs = ["198.18.1.0/24", "2001:db8:1::/48"]
[deny]
cidrs = ["198.18.2.64/26", "2001:db8:2::/48", "198.18.9.0/24", "198.18.10.0/24", "2001:db8:9::/48"]
[ratelimit]
syn_rate = 1000000
syn_burst = 1000000
global_syn_rate = 10000000
global_syn_burst = 10000000
"#;

/// The open MX answering every SYN with a cookie, with buckets and a SYN-ACK budget larger than
/// the rounds' runs: every SYN is answered.
const SYNPROXY_POLICY: &str = r#"
policy = "synproxy"
ports = [25]
[ratelimit]
syn_rate = 1000000
syn_burst = 1000000
[synproxy]
synack_rate = 10000000
synack_burst = 10000000
ipv6 = true
"#;

/// xdp-filter's closest rule for each row: which load (its policy and rules) and why.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum XfSetup {
    /// `xdp-filter load -p allow` + `xdp-filter ip DENIED -m src`: a source denylist.
    DenyList,
    /// `xdp-filter load -p deny` + `xdp-filter ip ALLOWED -m src`: a source allowlist; xdp-filter
    /// cannot say "port 25 AND not this source", so everything else on the interface is dropped.
    AllowList,
}

pub(crate) struct PathRow {
    pub path: &'static str,
    pub expected: u32,
    /// The median of `port25`.
    pub port25_ns: f64,
    pub port25: Spread,
    /// xdp-filter's figure and action, or why there is none.
    pub xdp_filter: Result<(Spread, u32), String>,
}

pub(crate) struct PerPacket {
    pub floor_pass_ns: f64,
    pub floor_drop_ns: f64,
    pub floor_pass: Spread,
    pub floor_drop: Spread,
    /// The XDP_DROP floor measured in the rounds of each xdp-filter load (its phase).
    pub xdp_filter_floor: Option<Spread>,
    pub rows: Vec<PathRow>,
    pub repeat: u32,
    pub rounds: usize,
}

impl PerPacket {
    pub(crate) fn floor_for(&self, action: u32) -> f64 {
        if action == XDP_DROP {
            self.floor_drop_ns
        } else {
            self.floor_pass_ns
        }
    }

    pub(crate) fn row(&self, path: &str) -> Option<&PathRow> {
        self.rows.iter().find(|r| r.path == path)
    }
}

pub(crate) const ROW_DROPPED: &str = "port 25, not allowlisted (dropped)";
pub(crate) const ROW_OTHER_PORT: &str = "TCP, other port (80)";
pub(crate) const ROW_ALLOWED: &str = "port 25, allowlisted";
pub(crate) const ROW_RATELIMITED: &str = "port 25, rate-limited (policy ratelimit)";
/// A source in a /16 where no list has an entry, as most of a random-source flood: the prefilter
/// answers without the trie.
pub(crate) const ROW_UNLISTED: &str = "port 25, not allowlisted, /16 in no list (dropped)";
const UNLISTED4: &str = "198.19.7.7";
/// Rows run behind the bench's `fresh_syn`: a SYN from a source never seen, as a spoofed flood's.
pub(crate) const ROW_FRESH_FLOOR: &str = "floor: fresh SYN written (fresh_syn alone)";
pub(crate) const ROW_FRESH_RATELIMIT: &str =
    "port 25, SYN from a source never seen, global cap spent (policy ratelimit)";
pub(crate) const ROW_FRESH_SYNPROXY: &str =
    "port 25, SYN from a source never seen, answered with a cookie (policy synproxy)";
pub(crate) const ROW_FRESH6_FLOOR: &str = "floor: fresh IPv6 SYN written (fresh_syn6 alone)";
/// Runs alternate a SYN from a new source, answered, and the ACK that brings its cookie back: the
/// row is their mean, so the ACK's own cost is twice it less the answered SYN's row.
/// The same paths with a shadow policy loaded (docs/ARCHITECTURE.md, § Shadow policy): one that
/// agrees, and one that would admit what the live policy drops (the costlier case: the differing
/// source is noted at every run). Each pairs with the row named second.
pub(crate) const SHADOW_PAIRS: [(&str, &str); 3] = [
    (
        "port 25, allowlisted, a shadow loaded that agrees",
        ROW_ALLOWED,
    ),
    (
        "port 25, not allowlisted (dropped), a shadow loaded that would admit it",
        ROW_DROPPED,
    ),
    (
        "port 25, rate-limited, a shadow loaded that agrees (policy ratelimit)",
        ROW_RATELIMITED,
    ),
];
pub(crate) const ROW_HANDSHAKE: &str =
    "port 25, SYN answered and its ACK with a valid cookie, run after run (policy synproxy)";

/// Which port25 datapath a row runs on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Policy {
    Drop,
    /// Its buckets primed by one run of the row's frame first.
    Ratelimit,
    Synproxy,
    /// `Drop` with `SHADOW_OF_DROP` loaded as a shadow policy.
    DropShadowed,
    /// `Ratelimit` with itself loaded as a shadow policy (its own buckets, primed the same way).
    RatelimitShadowed,
}

/// What runs a row's frame.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Runner {
    /// port25's filter, on the frame as it is, `repeat` times.
    Port25(Policy),
    /// The bench's `fresh_syn` (`fresh_syn6` for IPv6) in front of port25's filter (None: alone,
    /// its floor): every run gets the template SYN afresh, from a random source, as a spoofed
    /// flood's SYNs are.
    Fresh(Family, Option<Policy>),
    /// The bench's `fresh_handshake` (`fresh_handshake6`) in front of port25's filter under
    /// policy synproxy: a fresh SYN, answered, then its ACK with the valid cookie, run after run.
    Handshake(Family),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// One row: a path through the datapath, the frame that takes it, the action it must end in,
/// what runs it, and which xdp-filter setup measures the same path.
struct Case {
    path: &'static str,
    frame: Vec<u8>,
    expected: u32,
    runner: Runner,
    xdp_filter: Option<XfSetup>,
}

/// A row measured on the `drop` datapath and on xdp-filter's `xdp_filter` setup.
fn row(path: &'static str, frame: impl Into<Vec<u8>>, expected: u32, xdp_filter: XfSetup) -> Case {
    let (frame, xdp_filter) = (frame.into(), Some(xdp_filter));
    Case {
        path,
        frame,
        expected,
        runner: Runner::Port25(Policy::Drop),
        xdp_filter,
    }
}

/// A row of an open MX's policy, which xdp-filter has nothing like.
fn open_mx(path: &'static str, frame: impl Into<Vec<u8>>, expected: u32, runner: Runner) -> Case {
    Case {
        path,
        frame: frame.into(),
        expected,
        runner,
        xdp_filter: None,
    }
}

/// `fresh_syn`'s template (`fresh_syn6`'s for IPv6): an untagged SYN to port 25 without options,
/// checksums valid.
fn fresh_template(family: Family) -> Vec<u8> {
    let source = match family {
        Family::V4 => OTHER4,
        Family::V6 => OTHER6,
    };
    let mut frame = frames::tcp(source, 25).build();
    frames::fix_tcp_checksums(&mut frame);
    frame
}

/// A plain ACK whose acknowledgment number is no cookie.
fn forged_ack(src: &str) -> Vec<u8> {
    frames::tcp(src, 25)
        .seq_ack(1001, 12_345)
        .flags(frames::TCP_ACK)
        .checksummed()
        .build()
}

#[rustfmt::skip] // a table: one row a line
fn rows() -> Vec<Case> {
    use XfSetup::{AllowList, DenyList};
    use frames::{arp, tcp, udp};
    use Runner::{Fresh, Handshake, Port25};
    use Family::{V4, V6};
    vec![
        row("not IPv4/IPv6 (ARP)", arp(), XDP_PASS, DenyList),
        row("UDP", udp(OTHER4, 53), XDP_PASS, DenyList),
        row(ROW_OTHER_PORT, tcp(OTHER4, 80), XDP_PASS, DenyList),
        row(ROW_ALLOWED, tcp(ALLOWED4, 25), XDP_PASS, AllowList),
        row("port 25, denylisted", tcp(DENIED4, 25), XDP_DROP, DenyList),
        row(ROW_DROPPED, tcp(OTHER4, 25), XDP_DROP, AllowList),
        row(ROW_UNLISTED, tcp(UNLISTED4, 25), XDP_DROP, AllowList),
        open_mx(ROW_RATELIMITED, tcp(OTHER4, 25), XDP_DROP, Port25(Policy::Ratelimit)),
        open_mx("IPv6 port 25, rate-limited (policy ratelimit)", tcp(OTHER6, 25), XDP_DROP, Port25(Policy::Ratelimit)),
        open_mx(ROW_FRESH_FLOOR, fresh_template(V4), XDP_DROP, Fresh(V4, None)),
        open_mx(ROW_FRESH_RATELIMIT, fresh_template(V4), XDP_DROP, Fresh(V4, Some(Policy::Ratelimit))),
        open_mx(ROW_FRESH_SYNPROXY, fresh_template(V4), XDP_TX, Fresh(V4, Some(Policy::Synproxy))),
        open_mx(ROW_FRESH6_FLOOR, fresh_template(V6), XDP_DROP, Fresh(V6, None)),
        open_mx("IPv6 port 25, SYN from a source never seen, global cap spent (policy ratelimit)", fresh_template(V6), XDP_DROP, Fresh(V6, Some(Policy::Ratelimit))),
        open_mx("IPv6 port 25, SYN from a source never seen, answered with a cookie (policy synproxy)", fresh_template(V6), XDP_TX, Fresh(V6, Some(Policy::Synproxy))),
        open_mx(ROW_HANDSHAKE, fresh_template(V4), XDP_PASS, Handshake(V4)),
        open_mx("IPv6 port 25, SYN answered and its ACK with a valid cookie, run after run (policy synproxy)", fresh_template(V6), XDP_PASS, Handshake(V6)),
        open_mx("port 25, ACK with an invalid cookie (policy synproxy)", forged_ack(OTHER4), XDP_DROP, Port25(Policy::Synproxy)),
        open_mx("IPv6 port 25, ACK with an invalid cookie (policy synproxy)", forged_ack(OTHER6), XDP_DROP, Port25(Policy::Synproxy)),
        open_mx(SHADOW_PAIRS[0].0, tcp(ALLOWED4, 25), XDP_PASS, Port25(Policy::DropShadowed)),
        open_mx(SHADOW_PAIRS[1].0, tcp(OTHER4, 25), XDP_DROP, Port25(Policy::DropShadowed)),
        open_mx(SHADOW_PAIRS[2].0, tcp(OTHER4, 25), XDP_DROP, Port25(Policy::RatelimitShadowed)),
        row("IPv6 port 25, allowlisted", tcp(ALLOWED6, 25), XDP_PASS, AllowList),
        row(
            "IPv6 + hop-by-hop + dest-opts, port 25, dropped",
            tcp(OTHER6, 25).ext(EXT_HOP_BY_HOP).ext(EXT_DEST_OPTS),
            XDP_DROP,
            AllowList,
        ),
    ]
}

/// One of the bench's programs that write a frame afresh at every run (`fresh_syn`,
/// `fresh_syn6`, `fresh_handshake`, `fresh_handshake6`), loaded from a bench object of its own
/// with the templates written and, for a policy, that datapath's filter in its slot.
struct FreshSyn {
    object: aya::Ebpf,
    name: &'static str,
}

impl FreshSyn {
    fn new(name: &'static str, filter: Option<&Datapath>) -> Result<Self> {
        let mut object = programs::object()?;
        programs::set_template(&mut object, &fresh_template(Family::V4))?;
        programs::set_template6(&mut object, &fresh_template(Family::V6))?;
        if let Some(datapath) = filter {
            let fd = datapath.filter_program()?.fd()?.try_clone()?;
            let mut measured = aya::maps::ProgramArray::try_from(
                object.map_mut("MEASURED").context("no map MEASURED")?,
            )?;
            measured.set(0, &fd, 0)?;
        }
        programs::xdp(&mut object, name)?;
        Ok(Self { object, name })
    }

    fn program(&self) -> Result<&aya::programs::Xdp> {
        Ok(self
            .object
            .program(self.name)
            .with_context(|| format!("no program {}", self.name))?
            .try_into()?)
    }
}

/// `policy`'s datapath with `candidate` loaded as its shadow policy.
fn load_shadowed(policy: &str, candidate: &str) -> Result<Datapath> {
    let mut datapath = load(policy)?;
    let config =
        Config::parse(candidate, Path::new("candidate.toml")).context("bench candidate")?;
    datapath
        .load_shadow(&config, config.allow.clone(), config.deny.clone())
        .context("loading the bench's shadow policy")?;
    Ok(datapath)
}

fn load(policy: &str) -> Result<Datapath> {
    let config = Config::parse(policy, Path::new("bench.toml")).context("bench policy")?;
    let mut datapath = Datapath::load_private(config.ratelimit.tracked_sources)
        .context("loading port25's XDP program")?;
    datapath
        .apply_policy(&config, config.allow.clone(), config.deny.clone())
        .context("applying the bench policy")?;
    counts_in_bucket(&mut datapath)?;
    Ok(datapath)
}

/// Test runs arrive on the loopback (ifindex 1): it counts in a counter bucket of its own, as an
/// interface the daemon attaches to does.
fn counts_in_bucket(datapath: &mut Datapath) -> Result<()> {
    if !datapath.count_in_bucket(1, "lo") {
        bail!("the loopback got no counter bucket in fresh maps");
    }
    Ok(())
}

/// One round of a measurement: the kernel's average ns per run over `repeat` runs; checks the
/// action.
fn once(
    settings: &Settings,
    expected: u32,
    what: &str,
    run: impl FnOnce(u32) -> Result<(u32, f64)>,
) -> Result<f64> {
    let (action, ns) = run(settings.repeat)?;
    if action != expected {
        bail!(
            "{what}: XDP action {action}, expected {expected}: the bench measures the wrong path"
        );
    }
    Ok(ns)
}

fn floor_run(program: &aya::programs::Xdp, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
    let result = program.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..TestRunOptions::default()
    })?;
    Ok((result.return_value, result.duration.as_nanos() as f64))
}

/// Section 1. Round by round, the floors and every port25 row, then, per xdp-filter load, the
/// XDP_DROP floor and that load's rows: a change in the machine's speed moves them alike.
pub(crate) fn per_packet(settings: &Settings, work: &Path) -> Result<PerPacket> {
    let drop_dp = load(DROP_POLICY)?;
    let ratelimit_dp = load(RATELIMIT_POLICY)?;
    let synproxy_dp = load(SYNPROXY_POLICY)?;
    // The handshakes' flows on maps of their own: a random source that happens to be a row's
    // would let that row's forged ACK through as a known flow.
    let handshake_dp = load(SYNPROXY_POLICY)?;
    let drop_shadowed_dp = load_shadowed(DROP_POLICY, SHADOW_OF_DROP)?;
    let ratelimit_shadowed_dp = load_shadowed(RATELIMIT_POLICY, RATELIMIT_POLICY)?;
    let datapath = |policy| match policy {
        Policy::Drop => &drop_dp,
        Policy::Ratelimit => &ratelimit_dp,
        Policy::Synproxy => &synproxy_dp,
        Policy::DropShadowed => &drop_shadowed_dp,
        Policy::RatelimitShadowed => &ratelimit_shadowed_dp,
    };
    // One program per runner: a program array slot holds one filter.
    let mut fresh = Vec::new();
    for case in rows() {
        let (name, policy) = match case.runner {
            Runner::Fresh(Family::V4, policy) => ("fresh_syn", policy),
            Runner::Fresh(Family::V6, policy) => ("fresh_syn6", policy),
            Runner::Handshake(family) => {
                let name = match family {
                    Family::V4 => "fresh_handshake",
                    Family::V6 => "fresh_handshake6",
                };
                fresh.push((case.runner, FreshSyn::new(name, Some(&handshake_dp))?));
                continue;
            }
            Runner::Port25(_) => continue,
        };
        fresh.push((case.runner, FreshSyn::new(name, policy.map(datapath))?));
    }
    let fresh_for = |runner: Runner| -> Result<&aya::programs::Xdp> {
        fresh
            .iter()
            .find(|(key, _)| *key == runner)
            .context("no fresh program for this row")?
            .1
            .program()
    };
    let syn = frames::tcp(OTHER4, 25).build();
    let mut bench = programs::object()?;
    for name in ["floor_pass", "floor_drop"] {
        programs::xdp(&mut bench, name)?;
    }
    let floor = |name: &str| -> Result<&aya::programs::Xdp> {
        let program = bench
            .program(name)
            .with_context(|| format!("no program {name}"))?;
        Ok(program.try_into()?)
    };
    let (pass_prog, drop_prog) = (floor("floor_pass")?, floor("floor_drop")?);
    let rows = rows();
    // The rate-limited row: the first SYN spends the only token; every later one is dropped.
    for case in rows.iter().filter(|case| {
        matches!(
            case.runner,
            Runner::Port25(Policy::Ratelimit | Policy::RatelimitShadowed)
        )
    }) {
        let Runner::Port25(policy) = case.runner else {
            continue;
        };
        datapath(policy).test_run(&case.frame)?;
    }
    let (mut floor_pass, mut floor_drop) = (Vec::new(), Vec::new());
    let mut port25: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for _ in 0..settings.rounds {
        floor_pass.push(once(settings, XDP_PASS, "floor_pass", |r| {
            floor_run(pass_prog, &syn, r)
        })?);
        floor_drop.push(once(settings, XDP_DROP, "floor_drop", |r| {
            floor_run(drop_prog, &syn, r)
        })?);
        for (case, samples) in rows.iter().zip(&mut port25) {
            samples.push(once(
                settings,
                case.expected,
                case.path,
                |repeat| match case.runner {
                    Runner::Port25(policy) => {
                        let (action, duration) =
                            datapath(policy).test_run_timed(&case.frame, repeat)?;
                        Ok((action, duration.as_nanos() as f64))
                    }
                    Runner::Fresh(..) | Runner::Handshake(_) => {
                        floor_run(fresh_for(case.runner)?, &case.frame, repeat)
                    }
                },
            )?);
        }
    }
    let (floor_pass, floor_drop) = (Spread::of(&floor_pass), Spread::of(&floor_drop));
    eprintln!(
        "bench: floor: XDP_PASS {}, XDP_DROP {} ns",
        floor_pass.cell(),
        floor_drop.cell()
    );
    let mut out: Vec<PathRow> = rows
        .iter()
        .zip(&port25)
        .map(|(case, samples)| {
            let port25 = Spread::of(samples);
            eprintln!("bench: {}: port25 {} ns", case.path, port25.cell());
            PathRow {
                path: case.path,
                expected: case.expected,
                port25_ns: port25.median,
                port25,
                xdp_filter: Err(match case.runner {
                    Runner::Port25(Policy::Synproxy)
                    | Runner::Fresh(_, Some(Policy::Synproxy))
                    | Runner::Handshake(_) => "no SYN cookies in xdp-filter",
                    Runner::Fresh(_, None) => "the bench's own program",
                    Runner::Port25(Policy::DropShadowed | Policy::RatelimitShadowed) => {
                        "no shadow policy in xdp-filter"
                    }
                    _ => "no rate limiting in xdp-filter",
                }
                .to_string()),
            }
        })
        .collect();
    // One xdp-filter at a time: libxdp pins by interface index, which is the same in every
    // fresh namespace, so two loads side by side would clobber each other.
    let file = |i: usize| work.join(format!("frame-{i}.bin"));
    for (i, case) in rows.iter().enumerate() {
        fs::write(file(i), &case.frame)?;
    }
    let mut xf_floor = Vec::new();
    for (setup, policy, sources) in [
        (XfSetup::DenyList, "allow", &[DENIED4][..]),
        (XfSetup::AllowList, "deny", &[ALLOWED4, ALLOWED6][..]),
    ] {
        let mine: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].xdp_filter == Some(setup))
            .collect();
        let filter = match XdpFilter::load("xf", policy, sources) {
            Ok(filter) => filter,
            Err(e) => {
                for &i in &mine {
                    out[i].xdp_filter = Err(format!("xdp-filter: {e:#}"));
                }
                continue;
            }
        };
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); mine.len()];
        for _ in 0..settings.rounds {
            xf_floor.push(once(settings, XDP_DROP, "floor_drop", |r| {
                floor_run(drop_prog, &syn, r)
            })?);
            for (&i, samples) in mine.iter().zip(&mut samples) {
                let what = format!("xdp-filter {}", rows[i].path);
                samples.push(once(settings, rows[i].expected, &what, |r| {
                    filter.test_run(&file(i), r)
                })?);
            }
        }
        for (&i, samples) in mine.iter().zip(&samples) {
            let spread = Spread::of(samples);
            eprintln!("bench: {}: xdp-filter {} ns", rows[i].path, spread.cell());
            out[i].xdp_filter = Ok((spread, rows[i].expected));
        }
    }
    Ok(PerPacket {
        floor_pass_ns: floor_pass.median,
        floor_drop_ns: floor_drop.median,
        floor_pass,
        floor_drop,
        xdp_filter_floor: (!xf_floor.is_empty()).then(|| Spread::of(&xf_floor)),
        rows: out,
        repeat: settings.repeat,
        rounds: settings.rounds,
    })
}

// ---------------------------------------------------------------------------------------------
// Section 2: list scale
// ---------------------------------------------------------------------------------------------

pub(crate) struct ScaleRow {
    /// Prefixes per family (the run loads this many IPv4 and this many IPv6 prefixes).
    pub entries: usize,
    /// The medians of `spreads[1]` and `spreads[3]`.
    pub v4_dropped_ns: f64,
    pub v6_dropped_ns: f64,
    /// Wall time of writing both lists into the kernel (one policy generation).
    pub load_seconds: f64,
    /// Kernel memory of the list maps after the load (the kernel's own accounting).
    pub kernel_bytes: u64,
    /// Milliseconds of writing a delta of [`DELTA`] deny entries into the live generation in
    /// place (as a CrowdSec poll of ten decisions does), adding or removing, over the rounds.
    pub delta_ms: Spread,
    /// IPv4 allowed, IPv4 dropped, IPv6 allowed, IPv6 dropped, over the rounds.
    pub spreads: [Spread; 4],
}

/// `count` distinct prefixes per family, deterministic, never covering the rows' sources except
/// the allowlisted /24 and /48 of the frames (which are always in, so that the allowed rows pass).
pub(crate) fn prefixes(count: usize) -> CidrSet {
    let mut nets: Vec<IpNet> = vec![
        "198.18.1.0/24".parse().expect("valid"),
        "2001:db8:1::/48".parse().expect("valid"),
    ];
    // A xorshift generator: spread over the address space like a real feed, so the trie is deep.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut v4 = std::collections::HashSet::new();
    while v4.len() < count.saturating_sub(1) {
        let r = next();
        let len = 16 + (r % 17) as u8; // /16 to /32
        let addr = (r >> 32) as u32;
        // 198.18.0.0/15 holds the rows' sources: keep the list out of it (and out of 0/8).
        if addr >> 17 == (198 << 7) | (18 >> 1) || addr >> 24 == 0 {
            continue;
        }
        if let Ok(net) = Ipv4Net::new(addr.into(), len) {
            v4.insert(net.trunc());
        }
    }
    let mut v6 = std::collections::HashSet::new();
    while v6.len() < count.saturating_sub(1) {
        let r = next();
        // One in 64 shorter than /48, as a feed's provider blocks, anywhere in 2000::/3 but
        // 2001:db8::/32: those are what the IPv6 prefilter leaves to its trie of short entries.
        if r % 64 == 0 {
            let (first, second) = (0x2000 + (r >> 8) as u16 % 0x2000, (r >> 24) as u16);
            let addr = std::net::Ipv6Addr::new(first, second, (r >> 40) as u16, 0, 0, 0, 0, 0);
            if (first, second) != (0x2001, 0xdb8)
                && let Ok(net) = Ipv6Net::new(addr, 32 + (r >> 56) as u8 % 16)
            {
                v6.insert(net.trunc());
            }
            continue;
        }
        let len = 48 + (r % 17) as u8; // /48 to /64
        // 2001:db8:XXXX:YYYY::, with XXXX above 0xff so the rows' 2001:db8:1::/48 and
        // 2001:db8:3::/48 stay out.
        let third = 0x100 + (r >> 16) as u16 % 0xff00;
        let fourth = (r >> 32) as u16;
        let addr = std::net::Ipv6Addr::new(0x2001, 0xdb8, third, fourth, 0, 0, 0, 0);
        if let Ok(net) = Ipv6Net::new(addr, len) {
            v6.insert(net.trunc());
        }
    }
    nets.extend(v4.into_iter().map(IpNet::V4));
    nets.extend(v6.into_iter().map(IpNet::V6));
    CidrSet::new(nets)
}

/// Kernel memory of the list maps of this datapath, from `bpftool map show` (memlock: the map's
/// own accounting of what it allocated).
fn list_map_bytes(datapath: &mut Datapath) -> Result<u64> {
    let mut total = 0;
    for name in [
        maps::LISTS_V4,
        maps::LISTS_V6,
        maps::PREFILTER_V4,
        maps::BLOCKS_V4,
        maps::PREFILTER_V6,
        maps::LISTS_V6_32_TO_47,
        maps::LISTS_V6_UNDER_32,
    ] {
        let map = datapath
            .ebpf_mut()
            .map(name)
            .with_context(|| format!("no map {name}"))?;
        let id = match map {
            aya::maps::Map::LpmTrie(data)
            | aya::maps::Map::Array(data)
            | aya::maps::Map::HashMap(data) => data.info()?.id(),
            _ => bail!("{name} is not an LPM trie, an array or a hash"),
        };
        let out = sys::run(std::process::Command::new("bpftool").args([
            "map",
            "show",
            "id",
            &id.to_string(),
        ]))?;
        let bytes = out
            .split_whitespace()
            .skip_while(|w| *w != "memlock")
            .nth(1)
            .and_then(|v| v.trim_end_matches('B').parse::<u64>().ok())
            .with_context(|| format!("no memlock in `bpftool map show id {id}`: {out}"))?;
        total += bytes;
    }
    Ok(total)
}

/// Section 2. Every list size is loaded first; then, round by round, each size's four frames in
/// turn, so that a change in the machine's speed moves every size alike.
pub(crate) fn scale(settings: &Settings) -> Result<Vec<ScaleRow>> {
    let config = Config::parse(DROP_POLICY, Path::new("bench.toml"))?;
    let deny = CidrSet::default();
    let mut loaded = Vec::new();
    for &entries in &settings.scale_sizes {
        let allow = prefixes(entries);
        let mut datapath = Datapath::load_private(config.ratelimit.tracked_sources)?;
        counts_in_bucket(&mut datapath)?;
        let started = Instant::now();
        datapath.apply_policy(&config, allow, deny.clone())?;
        let load_seconds = started.elapsed().as_secs_f64();
        let kernel_bytes = list_map_bytes(&mut datapath)?;
        loaded.push((entries, datapath, load_seconds, kernel_bytes));
    }
    let probes = [
        (frames::tcp(ALLOWED4, 25).build(), XDP_PASS),
        (frames::tcp(OTHER4, 25).build(), XDP_DROP),
        (frames::tcp(ALLOWED6, 25).build(), XDP_PASS),
        (frames::tcp(OTHER6, 25).build(), XDP_DROP),
    ];
    let mut samples: Vec<[Vec<f64>; 4]> = loaded.iter().map(|_| Default::default()).collect();
    let mut deltas: Vec<Vec<f64>> = loaded.iter().map(|_| Vec::new()).collect();
    for _ in 0..settings.rounds {
        for (((_, datapath, ..), samples), deltas) in
            loaded.iter_mut().zip(&mut samples).zip(&mut deltas)
        {
            for ((frame, expected), samples) in probes.iter().zip(samples.iter_mut()) {
                samples.push(once(settings, *expected, "scale", |repeat| {
                    let (action, d) = datapath.test_run_timed(frame, repeat)?;
                    Ok((action, d.as_nanos() as f64))
                })?);
            }
            deltas.push(delta(datapath, true)?);
            deltas.push(delta(datapath, false)?);
        }
    }
    let mut out = Vec::new();
    for (((entries, _, load_seconds, kernel_bytes), samples), deltas) in
        loaded.into_iter().zip(&samples).zip(&deltas)
    {
        let spreads = [0, 1, 2, 3].map(|i| Spread::of(&samples[i]));
        let (v4_dropped_ns, v6_dropped_ns) = (spreads[1].median, spreads[3].median);
        let row = ScaleRow {
            entries,
            v4_dropped_ns,
            v6_dropped_ns,
            load_seconds,
            kernel_bytes,
            delta_ms: Spread::of(deltas),
            spreads,
        };
        eprintln!(
            "bench: {entries} prefixes per family: load {:.2} s, {} MiB, v4 pass {:.1} drop {:.1} \
             ns, v6 pass {:.1} drop {:.1} ns, a delta of {DELTA} deny entries in place {:.2} ms",
            row.load_seconds,
            row.kernel_bytes / (1 << 20),
            row.spreads[0].median,
            row.v4_dropped_ns,
            row.spreads[2].median,
            row.v6_dropped_ns,
            row.delta_ms.median
        );
        out.push(row);
    }
    Ok(out)
}

/// Entries of the section's delta: a CrowdSec poll of ten decisions.
pub(crate) const DELTA: u8 = 10;

/// Writes [`DELTA`] deny entries into the live generation in place (`add`), or removes them, as
/// the daemon applies a small CrowdSec poll; the milliseconds it took. They lie in the allowlisted
/// 198.18.1.0/24, where deny beats allow: each is checked to take effect, and to go.
fn delta(datapath: &mut Datapath, add: bool) -> Result<f64> {
    let nets: Vec<IpNet> = (0..DELTA)
        .map(|i| IpNet::from(std::net::IpAddr::from([198, 18, 1, 100 + i])))
        .collect();
    let started = Instant::now();
    for net in &nets {
        if add {
            datapath.insert_live(ListKind::Deny, *net)?;
        } else {
            datapath.remove_live(ListKind::Deny, *net)?;
        }
    }
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let (expected, now) = if add {
        (XDP_DROP, "denied")
    } else {
        (XDP_PASS, "allowed again")
    };
    for net in &nets {
        let frame = frames::tcp(&net.addr().to_string(), 25).build();
        let action = datapath.test_run(&frame)?;
        if action != expected {
            bail!("list scale: {net} is not {now} after the delta (XDP action {action})");
        }
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_distinct_and_keep_out_of_the_rows() {
        let set = prefixes(1000);
        assert_eq!(set.v4.len(), 1000);
        assert_eq!(set.v6.len(), 1000);
        let other4: std::net::Ipv4Addr = OTHER4.parse().unwrap();
        let other6: std::net::Ipv6Addr = OTHER6.parse().unwrap();
        assert!(!set.v4.iter().any(|n| n.contains(&other4)));
        assert!(!set.v6.iter().any(|n| n.contains(&other6)));
    }
}
