//! Sections 3 and 4: a SYN flood at the receiver, and mail during it.
//!
//! ```text
//!   gen:  cl0 198.18.0.10/24 ── gw0 198.18.0.1/24 :gw   (smtp-sink on 198.18.0.1:25)
//!   mail: cl0 198.18.1.10/24 ── gw1 198.18.1.1/24 :gw
//! ```
//!
//! The generator is the bench object's `flood_tx` program, run with BPF_F_TEST_XDP_LIVE_FRAMES
//! on cl0 (in the generator's namespace): every run sends the template SYN out of cl0 with
//! XDP_TX, from a random source in 198.19.0.0/16, with valid checksums. That is the fastest sender
//! here (no socket, no skb on the sending side); veth hands the frames to gw0's NAPI, on the CPU
//! that sent them. Some kernels refuse live frames (EPERM): then the same SYNs come from an
//! AF_PACKET socket on a veth pair of the generator's own, whose far end redirects them onto cl0
//! in XDP ([`Generator`]), and the report says which sender ran. The receiver (gw) drops the
//! flood with nothing, iptables + ipset, nftables, xdp-filter or port25 (or, as the floor, the
//! least XDP program that drops it); the allowlisted clients must still get mail through:
//! 198.18.0.10 over the flood's veth, sharing its ring, and 198.18.1.10 over a veth of its own,
//! as a NIC with several queues would give it.
//!
//! Both sides live on this one machine, so the receiver gets a core of its own: gw0's NAPI runs
//! threaded (`/sys/class/net/gw0/threaded`), in a kernel thread pinned to the last CPU, and the
//! generator is pinned to the first. That thread does the whole receive path (veth, XDP, GRO,
//! netfilter, TCP and its replies), so the receiver's CPU time is that thread's run time
//! (`/proc/PID/schedstat`, in ns, exact); and when the receiver is slower than the generator,
//! veth's ring overflows as a real NIC's would.

mod filter;
mod traffic;

use std::{
    ffi::OsStr,
    fs,
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions};
use port25_testkit::lab::{
    BpfFs, Client, Daemon, Gateway, Netns, PacketSocket, SmtpSink, WorkDir, ifindex, metric_sum,
};
use port25_testkit::{frames, rng::Rng};

use self::{filter::*, traffic::*};
use crate::{
    Settings, programs,
    sys::{self, Spread},
    xdpfilter::XdpFilter,
};

const CLIENT: &str = "198.18.0.10";
/// The client on a veth of its own (gw1), which the flood does not share.
const MAIL_CLIENT: &str = "198.18.1.10";
const GATEWAY: &str = "198.18.0.1";
/// The first address the generator's template carries; `flood_tx` randomises the low 16 bits.
const SPOOF_BASE: [u8; 4] = [198, 19, 0, 0];
/// iptables-legacy (x_tables), not Debian's default iptables-nft: with the nft backend, (b) would
/// be nftables again with an x_tables match inside.
const IPTABLES: &str = "iptables-legacy";
const METRICS: &str = "127.0.0.1:9725";
/// Frames a `sendmmsg` call of the packet-socket generator sends.
pub(crate) const SOCKET_BATCH: usize = 64;
/// The packet-socket generator's veth pair, in its namespace: the socket sends on SOCKET_OUT,
/// and `flood_relay` on RELAY_IN passes the frames on to cl0.
const SOCKET_OUT: &str = "sp0";
const RELAY_IN: &str = "sp1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Receiver {
    Nothing,
    Iptables,
    Nftables,
    XdpFilter,
    Port25,
    /// The bench's `floor_flood`: what the receive path costs an XDP filter that does nothing
    /// but drop the flood.
    Floor,
    /// port25d for an open MX: policy ratelimit (the flood beyond the global cap dropped, the
    /// rest passed to the stack, which answers it) and policy synproxy (every SYN answered from
    /// XDP with a cookie).
    Ratelimit,
    Synproxy,
    /// What an operator would run instead of (g) and (h), with port25's default limits:
    /// iptables hashlimit (per source, then global), an nftables dynamic set with a per-source
    /// limit and a global limit, and netfilter's SYNPROXY alone.
    Hashlimit,
    NftMeter,
    NetfilterSynproxy,
}

impl Receiver {
    pub(crate) const ALL: [Receiver; 11] = [
        Receiver::Nothing,
        Receiver::Iptables,
        Receiver::Nftables,
        Receiver::XdpFilter,
        Receiver::Port25,
        Receiver::Floor,
        Receiver::Ratelimit,
        Receiver::Synproxy,
        Receiver::Hashlimit,
        Receiver::NftMeter,
        Receiver::NetfilterSynproxy,
    ];

    /// `--receivers fgh`: the receivers whose tags hold these letters.
    pub(crate) fn parse_letters(letters: &str) -> Result<Vec<Receiver>> {
        letters
            .chars()
            .map(|letter| {
                Receiver::ALL
                    .into_iter()
                    .find(|r| r.tag() == format!("({letter})"))
                    .with_context(|| {
                        format!("no receiver ({letter}): the receivers are (a) to (k)")
                    })
            })
            .collect()
    }

    /// "(f)": how the report's prose names the receiver.
    pub(crate) fn tag(self) -> &'static str {
        self.label().split(' ').next().unwrap_or_default()
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Receiver::Nothing => "(a) nothing",
            Receiver::Iptables => "(b) iptables raw + ipset",
            Receiver::Nftables => "(c) nftables set",
            Receiver::XdpFilter => "(d) xdp-filter",
            Receiver::Port25 => "(e) port25",
            Receiver::Floor => "(f) floor: bare XDP drop",
            Receiver::Ratelimit => "(g) port25, policy ratelimit",
            Receiver::Synproxy => "(h) port25, policy synproxy",
            Receiver::Hashlimit => "(i) iptables hashlimit",
            Receiver::NftMeter => "(j) nftables per-source limit",
            Receiver::NetfilterSynproxy => "(k) netfilter SYNPROXY",
        }
    }
}

/// What sends the flood out of cl0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Generator {
    /// The bench object's `flood_tx`, run with BPF_F_TEST_XDP_LIVE_FRAMES: XDP_TX, no socket and
    /// no skb on the sending side.
    LiveFrames,
    /// An AF_PACKET socket, the same SYNs prebuilt and sent with `sendmmsg`: for kernels that
    /// refuse live frames.
    PacketSocket,
}

/// Which client sends a mail batch.
#[derive(Clone, Copy)]
pub(super) enum MailPath {
    /// 198.18.0.10, over the flood's veth: its segments queue in the ring the flood overflows.
    Shared,
    /// 198.18.1.10, over a veth of its own.
    Own,
}

#[derive(Default)]
pub(crate) struct Mail {
    pub sent: usize,
    pub delivered: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub(crate) struct FloodRow {
    pub receiver: Receiver,
    /// Rounds measured; the figures are the median round's, `cpu` their spread.
    pub rounds: usize,
    pub seconds: f64,
    /// Frames the generator sent per second.
    pub offered_pps: f64,
    /// Frames gw0 took off its queue per second (the rest overflowed veth's ring).
    pub received_pps: f64,
    /// Packets the filter itself counted as dropped, per second (None: no filter).
    pub dropped_pps: Option<f64>,
    /// Receiver CPU (its NAPI thread) per million packets received, in ms.
    pub cpu_ms_per_million: f64,
    /// The receiver thread's share of its core over the window (1.0: saturated).
    pub receiver_cores: f64,
    /// `cpu_ms_per_million` over the rounds.
    pub cpu: Spread,
    /// Mail over the flood's veth and over the mail client's own, every round's together.
    pub mail: Mail,
    pub mail_own: Mail,
}

pub(crate) struct Flood {
    pub rows: Vec<FloodRow>,
    /// Mail latency without a flood (nothing on the receiver): the reference for section 4, on
    /// each path.
    pub idle_mail: Mail,
    pub idle_mail_own: Mail,
    pub sender: Sender,
}

/// What sent the flood, for the report.
pub(crate) struct Sender {
    pub generator: Generator,
    /// Why the kernel refused live frames, when the bench fell back to the packet socket.
    pub live_frames_refused: Option<String>,
    /// Frames per XDP_TX flush, with live frames.
    pub live_batch: u32,
}

/// The lab of one scenario: deleted (namespaces, with their rules and sets) on drop.
struct Lab {
    work: WorkDir,
    net: Gateway,
}

impl Lab {
    fn new(generator: Generator) -> Result<Self> {
        let work = WorkDir::new("bench-flood");
        let net = Gateway::new(
            "bflood",
            &[Client::new("gen", 0, 10), Client::new("mail", 1, 10)],
        );
        let (gen_ns, gw) = (&net.clients[0], &net.gw);
        // The mail client reaches smtp-sink on 198.18.0.1 through gw1, never through gw0.
        net.clients[1].ip(&["route", "add", "198.18.0.0/24", "via", "198.18.1.1"]);
        // Static neighbours: xdp-filter's allowlist (policy deny) would drop ARP, and the flood
        // must not wait on neighbour resolution in any scenario.
        let (cl_mac, gw_mac) = (mac_text(gen_ns.mac("cl0")), mac_text(gw.mac("gw0")));
        gen_ns.ip(&[
            "neigh",
            "replace",
            GATEWAY,
            "lladdr",
            &gw_mac,
            "dev",
            "cl0",
            "nud",
            "permanent",
        ]);
        gw.ip(&[
            "neigh",
            "replace",
            CLIENT,
            "lladdr",
            &cl_mac,
            "dev",
            "gw0",
            "nud",
            "permanent",
        ]);
        // veth takes XDP_TX frames from its peer only into a NAPI queue, which it has when an XDP
        // program is attached or GRO is on: GRO on in every scenario, so (a)-(c) receive too.
        sys::run(gw.command("ethtool").args(["-K", "gw0", "gro", "on"]))?;
        sys::run(
            gw.command("sh")
                .args(["-c", "echo 1 > /sys/class/net/gw0/threaded"]),
        )?;
        if generator == Generator::PacketSocket {
            gen_ns.ip(&[
                "link", "add", SOCKET_OUT, "type", "veth", "peer", "name", RELAY_IN,
            ]);
            for link in [SOCKET_OUT, RELAY_IN] {
                gen_ns.ip(&["link", "set", link, "up"]);
            }
        }
        Ok(Self { work, net })
    }
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The generator's SYN: Ethernet to gw0, IPv4 from SPOOF_BASE, TCP to port 25, checksums valid.
fn template(dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(54);
    frame.extend_from_slice(&dst_mac);
    frame.extend_from_slice(&src_mac);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    let dst: Ipv4Addr = GATEWAY.parse().expect("a valid address");
    frame.extend_from_slice(&[0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
    frame.extend_from_slice(&SPOOF_BASE);
    frame.extend_from_slice(&dst.octets());
    frame.extend_from_slice(&40000u16.to_be_bytes());
    frame.extend_from_slice(&25u16.to_be_bytes());
    frame.extend_from_slice(&0x0102_0304u32.to_be_bytes());
    frame.extend_from_slice(&0u32.to_be_bytes());
    frame.extend_from_slice(&[0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0]);
    frames::fix_tcp_checksums(&mut frame);
    frame
}

/// `ethtool -S IFACE` counter.
fn ethtool_stat(ns: &Netns, iface: &str, name: &str) -> Result<u64> {
    let out = sys::run(ns.command("ethtool").args(["-S", iface]))?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no {name} in ethtool -S {iface}"))
}

/// The kernel threads of gw0's threaded NAPI (`napi/gw0-ID`): only one lab exists at a time.
fn napi_threads() -> Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if fs::read_to_string(entry.path().join("comm")).is_ok_and(|c| c.starts_with("napi/gw0-")) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

fn scenario(
    receiver: Receiver,
    generator: Generator,
    settings: &Settings,
    idle: Option<&mut Option<(Mail, Mail)>>,
) -> Result<FloodRow> {
    let lab = Lab::new(generator)?;
    let sink = SmtpSink::start(&lab.net.gw, format!("{GATEWAY}:25").parse()?, &lab.work);
    let filter = Filter::install(receiver, &lab)?;
    let threads = napi_threads()?;
    if threads.is_empty() {
        bail!("gw0 has no NAPI thread: threaded NAPI did not take");
    }
    let last_cpu = std::thread::available_parallelism().map_or(1, usize::from) - 1;
    for &pid in &threads {
        sys::pin_to_cpu(pid, last_cpu)?;
    }
    let mail_timeout = Duration::from_secs(10);
    let mail_of = |path| mail_batch(&lab, &sink, path, settings.messages, mail_timeout);
    if let Some(idle) = idle {
        *idle = Some((mail_of(MailPath::Shared)?, mail_of(MailPath::Own)?));
    }
    let frame = template(lab.net.gw.mac("gw0"), lab.net.clients[0].mac("cl0"));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let batch = settings.live_batch;
    let (first, second, (mail, mail_own)) = thread::scope(|scope| -> Result<_> {
        let generator = lab.net.clients[0].spawn_inside(scope, {
            let (stop, sent, frame) = (Arc::clone(&stop), Arc::clone(&sent), frame.clone());
            move || generate(generator, &frame, batch, &stop, &sent)
        });
        let measured = (|| -> Result<_> {
            // Let the flood reach its steady rate before the window opens.
            thread::sleep(Duration::from_millis(500));
            let first = snapshot(&lab, &filter, &sent)?;
            thread::sleep(settings.flood);
            let second = snapshot(&lab, &filter, &sent)?;
            // Phase 2: mail while the flood goes on (outside the CPU window: the client's and
            // server's own CPU would blur the receiver's).
            let mail = (mail_of(MailPath::Shared)?, mail_of(MailPath::Own)?);
            Ok((first, second, mail))
        })();
        stop.store(true, Ordering::Relaxed);
        let generated = generator
            .join()
            .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?;
        generated?;
        measured
    })?;
    let seconds = second.at.duration_since(first.at).as_secs_f64();
    let received = second.received - first.received;
    let row = FloodRow {
        receiver,
        rounds: 1,
        seconds,
        offered_pps: (second.sent - first.sent) as f64 / seconds,
        received_pps: received as f64 / seconds,
        dropped_pps: match (first.dropped, second.dropped) {
            (Some((t0, a)), Some((t1, b))) => {
                Some((b - a) as f64 / t1.duration_since(t0).as_secs_f64())
            }
            _ => None,
        },
        cpu_ms_per_million: if received == 0 {
            f64::NAN
        } else {
            (second.receiver_ns - first.receiver_ns) as f64 / 1e6 / (received as f64 / 1e6)
        },
        receiver_cores: (second.receiver_ns - first.receiver_ns) as f64 / 1e9 / seconds,
        cpu: Spread::default(),
        mail,
        mail_own,
    };
    eprintln!(
        "bench: flood {}: offered {:.0} pps, received {:.0} pps, dropped {}, receiver CPU {:.1} ms per million, mail {}/{} p50 {:.1} ms",
        receiver.label(),
        row.offered_pps,
        row.received_pps,
        row.dropped_pps
            .map_or("-".to_string(), |d| format!("{d:.0} pps")),
        row.cpu_ms_per_million,
        row.mail.delivered,
        row.mail.sent,
        row.mail.p50_ms
    );
    drop(filter);
    drop(sink);
    Ok(row)
}

/// Every receiver, round by round (so that a change in the machine's speed moves them alike);
/// each receiver's row is its median round, with the spread of its CPU figure and the mail of all
/// its rounds. `generator` None: live frames, or the packet socket if the kernel refuses them.
pub(crate) fn flood(
    settings: &Settings,
    generator: Option<Generator>,
    receivers: &[Receiver],
) -> Result<Flood> {
    let (generator, live_frames_refused) = match generator {
        Some(generator) => (generator, None),
        None => match probe_live_frames(settings.live_batch)? {
            None => (Generator::LiveFrames, None),
            Some(why) => {
                eprintln!(
                    "bench: this kernel refuses live frames ({why}): the flood comes from a packet socket"
                );
                (Generator::PacketSocket, Some(why))
            }
        },
    };
    let mut rounds: Vec<Vec<FloodRow>> = receivers.iter().map(|_| Vec::new()).collect();
    let mut idle = None;
    for round in 0..settings.flood_rounds {
        for (&receiver, rows) in receivers.iter().zip(&mut rounds) {
            let want_idle = (round == 0 && receiver == Receiver::Nothing).then_some(&mut idle);
            rows.push(scenario(receiver, generator, settings, want_idle)?);
        }
    }
    // The reference batch rides on receiver (a); a run without it (`--receivers`) has none.
    let (idle_mail, idle_mail_own) = match idle {
        Some(idle) => idle,
        None if !receivers.contains(&Receiver::Nothing) => Default::default(),
        None => bail!("no idle mail batch"),
    };
    Ok(Flood {
        rows: rounds
            .into_iter()
            .map(median_round)
            .collect::<Result<_>>()?,
        idle_mail,
        idle_mail_own,
        sender: Sender {
            generator,
            live_frames_refused,
            live_batch: settings.live_batch,
        },
    })
}

/// Why the kernel refuses `flood_tx` with live frames (None: it runs them), asked with one SYN
/// in a lab of its own.
fn probe_live_frames(batch: u32) -> Result<Option<String>> {
    let lab = Lab::new(Generator::LiveFrames)?;
    let frame = template(lab.net.gw.mac("gw0"), lab.net.clients[0].mac("cl0"));
    thread::scope(|scope| {
        lab.net.clients[0]
            .spawn_inside(scope, || live_frames_refused(&frame, batch))
            .join()
    })
    .map_err(|_| anyhow::anyhow!("the live-frames probe panicked"))?
}

/// One receiver's rounds as one row: the median round by CPU per million, the spread of that
/// figure, and the mail of every round (sent and delivered summed, the worst round's p99).
fn median_round(mut rows: Vec<FloodRow>) -> Result<FloodRow> {
    let cpu = Spread::of(
        &rows
            .iter()
            .map(|r| r.cpu_ms_per_million)
            .collect::<Vec<_>>(),
    );
    let merge = |mails: Vec<&Mail>| Mail {
        sent: mails.iter().map(|m| m.sent).sum(),
        delivered: mails.iter().map(|m| m.delivered).sum(),
        p50_ms: sys::median(&mails.iter().map(|m| m.p50_ms).collect::<Vec<_>>()),
        p99_ms: mails.iter().map(|m| m.p99_ms).fold(0.0, f64::max),
    };
    let mail = merge(rows.iter().map(|r| &r.mail).collect());
    let mail_own = merge(rows.iter().map(|r| &r.mail_own).collect());
    let count = rows.len();
    rows.sort_by(|a, b| a.cpu_ms_per_million.total_cmp(&b.cpu_ms_per_million));
    let mut row = rows.into_iter().nth(count / 2).context("no rounds")?;
    row.rounds = count;
    row.cpu = cpu;
    row.mail = mail;
    row.mail_own = mail_own;
    Ok(row)
}

/// `iptables-legacy` must exist; (b) is meaningless without it.
pub(crate) fn check_tools() -> Result<()> {
    for tool in [
        IPTABLES,
        "ipset",
        "nft",
        "xdp-filter",
        "ethtool",
        "bpftool",
        "nsenter",
    ] {
        if sys::run(Command::new("sh").args(["-c", &format!("command -v {tool}")])).is_err() {
            bail!("{tool} is not installed: run `cargo xtask setup`");
        }
    }
    Ok(())
}
