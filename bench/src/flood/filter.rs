//! The receiver's filter in each scenario: set up (nothing, iptables + ipset, nftables,
//! xdp-filter, port25d), its own drop counter read, and removed.

use aya::{Ebpf, maps::PerCpuArray, programs::XdpMode};

use super::*;

/// What drops the flood in the receiver, and reads its own drop counter.
pub(super) enum Filter<'a> {
    Nothing,
    /// iptables (`nft` false) or nftables rules, whose DROP (and SYNPROXY) counters sum to
    /// what the filter dropped (or answered).
    Netfilter {
        ns: &'a Netns,
        nft: bool,
    },
    XdpFilter(XdpFilter),
    /// The bench's `floor_flood`, attached to gw0 while this object lives.
    Floor(Ebpf),
    /// The daemon, and the BPF filesystem it pins in (kept until the daemon is gone).
    Port25 {
        daemon: Daemon<'a>,
        _bpffs: BpfFs,
    },
}

impl<'a> Filter<'a> {
    pub(super) fn install(receiver: Receiver, lab: &'a Lab) -> Result<Self> {
        let gw = &lab.net.gw;
        Ok(match receiver {
            Receiver::Nothing => Filter::Nothing,
            Receiver::Iptables => {
                sys::run(gw.command("ipset").args(["create", "p25allow", "hash:net"]))?;
                for client in [CLIENT, MAIL_CLIENT] {
                    sys::run(gw.command("ipset").args(["add", "p25allow", client]))?;
                }
                iptables(
                    gw,
                    "-t raw -A PREROUTING -p tcp --dport 25 -m set ! --match-set p25allow src -j DROP",
                )?;
                Filter::Netfilter { ns: gw, nft: false }
            }
            Receiver::Hashlimit => {
                // port25's defaults: 20 SYN/s and a burst of 40 per /32, 65,536 tracked; then
                // 2,000/s and a burst of 4,000 for all. The clients pass first, as port25's
                // allowlist lets them by.
                iptables(gw, &clients_first())?;
                let syn = "-t raw -A PREROUTING -p tcp --dport 25 --syn -m hashlimit";
                iptables(
                    gw,
                    &format!(
                        "{syn} --hashlimit-above 20/sec --hashlimit-burst 40 --hashlimit-mode srcip \
                         --hashlimit-htable-size 65536 --hashlimit-htable-max 65536 \
                         --hashlimit-name p25src -j DROP"
                    ),
                )?;
                iptables(
                    gw,
                    &format!(
                        "{syn} --hashlimit-above 2000/sec --hashlimit-burst 4000 \
                         --hashlimit-name p25all -j DROP"
                    ),
                )?;
                Filter::Netfilter { ns: gw, nft: false }
            }
            Receiver::NftMeter => {
                let rules = lab.work.join("p25.nft");
                let syn = "tcp dport 25 tcp flags & (syn | ack) == syn";
                fs::write(
                    &rules,
                    format!(
                        "table inet p25 {{\n  set src4 {{ type ipv4_addr; size 65536; flags \
                         dynamic,timeout; timeout 60s; }}\n  chain pre {{ type filter hook \
                         prerouting priority raw; policy accept;\n    ip saddr {{ {CLIENT}, \
                         {MAIL_CLIENT} }} accept\n    {syn} add @src4 {{ ip saddr limit rate over \
                         20/second burst 40 packets }} counter drop\n    {syn} limit rate over \
                         2000/second burst 4000 packets counter drop\n  }}\n}}\n"
                    ),
                )?;
                sys::run(gw.command("nft").arg("-f").arg(&rules))?;
                Filter::Netfilter { ns: gw, nft: true }
            }
            Receiver::NetfilterSynproxy => {
                // The classic recipe: the SYN untracked, SYNPROXY answers it with a cookie and
                // opens the connection once the ACK brings it back; port25's MSS and options.
                iptables(
                    gw,
                    "-t raw -A PREROUTING -p tcp --dport 25 --syn -j CT --notrack",
                )?;
                iptables(
                    gw,
                    "-A INPUT -p tcp --dport 25 -m conntrack --ctstate INVALID,UNTRACKED -j SYNPROXY \
                     --sack-perm --timestamp --wscale 7 --mss 1460",
                )?;
                iptables(gw, "-A INPUT -m conntrack --ctstate INVALID -j DROP")?;
                // The conntrack rules above load conntrack, and with it this setting: an ACK of
                // no known connection is INVALID, for SYNPROXY to check, not picked up.
                sys::run(
                    gw.command("sysctl")
                        .args(["-qw", "net.netfilter.nf_conntrack_tcp_loose=0"]),
                )?;
                Filter::Netfilter { ns: gw, nft: false }
            }
            Receiver::Nftables => {
                let rules = lab.work.join("p25.nft");
                fs::write(
                    &rules,
                    format!(
                        "table inet p25 {{\n  set allow4 {{ type ipv4_addr; flags interval; \
                         elements = {{ {CLIENT}, {MAIL_CLIENT} }} }}\n  chain pre {{ type filter hook \
                         prerouting priority raw; policy accept;\n    tcp dport 25 ip saddr != \
                         @allow4 counter drop\n  }}\n}}\n"
                    ),
                )?;
                sys::run(gw.command("nft").arg("-f").arg(&rules))?;
                Filter::Netfilter { ns: gw, nft: true }
            }
            Receiver::XdpFilter => {
                // Policy deny + the client as the only allowed source: xdp-filter's closest
                // rule, and stricter than port25's (every port is closed, not only 25).
                Filter::XdpFilter(XdpFilter::attach_to(
                    gw,
                    "gw0",
                    "deny",
                    &[CLIENT, MAIL_CLIENT],
                )?)
            }
            Receiver::Floor => {
                // Attached from inside the lab's namespace, where gw0's name means gw0; the link
                // lasts as long as the object.
                let attached = thread::scope(|scope| {
                    gw.spawn_inside(scope, || -> Result<Ebpf> {
                        let mut object = programs::object()?;
                        programs::xdp(&mut object, "floor_flood")?
                            .attach("gw0", XdpMode::Driver)
                            .context("attaching floor_flood to gw0 (native)")?;
                        Ok(object)
                    })
                    .join()
                })
                .map_err(|_| anyhow::anyhow!("the attaching thread panicked"))?;
                Filter::Floor(attached?)
            }
            Receiver::Port25 => Filter::port25(lab, "drop", "")?,
            // The open MX's policies: every source may connect, the flood is random sources.
            Receiver::Ratelimit => Filter::port25(lab, "ratelimit", "")?,
            // A budget above any flood here, so that every SYN is answered: the cost measured
            // is the answer's, not the budget's drop.
            Receiver::Synproxy => Filter::port25(
                lab,
                "synproxy",
                "[synproxy]\nsynack_rate = 10000000\nsynack_burst = 10000000\n",
            )?,
        })
    }

    /// port25d on gw0 with `policy`, the clients allowlisted; `tables` goes at the end.
    fn port25(lab: &'a Lab, policy: &str, tables: &str) -> Result<Self> {
        let bpffs = BpfFs::mount("bench");
        let config = lab.work.join("port25.toml");
        fs::write(
            &config,
            format!(
                "interfaces = [\"gw0\"]\nxdp_mode = \"native\"\npolicy = \"{policy}\"\n\
                 ports = [25]\n[allow]\ncidrs = [\"{CLIENT}/32\", \"{MAIL_CLIENT}/32\"]\n\
                 [metrics]\nlisten = \"{METRICS}\"\n{tables}"
            ),
        )?;
        Ok(Filter::Port25 {
            daemon: Daemon::start_with_args(
                &lab.net.gw,
                &config,
                METRICS.parse()?,
                &lab.work.join("port25d.log"),
                &[OsStr::new("--pin-dir"), bpffs.pin_dir().as_os_str()],
            ),
            _bpffs: bpffs,
        })
    }

    /// Packets the filter counted as dropped (port25 under synproxy: or answered) so far (None:
    /// nothing filters).
    pub(super) fn dropped(&self) -> Result<Option<u64>> {
        Ok(match self {
            Filter::Nothing => None,
            Filter::Netfilter { ns, nft: false } => {
                let mut out = sys::run(ns.command(IPTABLES).args(["-t", "raw", "-nvxL"]))?;
                out += &sys::run(ns.command(IPTABLES).args(["-nvxL"]))?;
                // Header lines, then "pkts bytes target ..." per rule.
                let counts: Vec<u64> = out
                    .lines()
                    .filter_map(|l| {
                        let mut fields = l.split_whitespace();
                        let pkts = fields.next()?.parse().ok()?;
                        let target = fields.nth(1)?;
                        ["DROP", "SYNPROXY"].contains(&target).then_some(pkts)
                    })
                    .collect();
                if counts.is_empty() {
                    bail!("no DROP or SYNPROXY rule counter in:\n{out}");
                }
                Some(counts.iter().sum())
            }
            Filter::Netfilter { ns, nft: true } => {
                let out = sys::run(
                    ns.command("nft")
                        .args(["list", "chain", "inet", "p25", "pre"]),
                )?;
                let counts: Vec<u64> = out
                    .split("counter packets ")
                    .skip(1)
                    .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
                    .collect();
                if counts.is_empty() {
                    bail!("no counter in:\n{out}");
                }
                Some(counts.iter().sum())
            }
            Filter::XdpFilter(filter) => Some(filter.dropped()?),
            Filter::Floor(object) => {
                let map = object.map("FLOOR_DROPS").context("no map FLOOR_DROPS")?;
                let drops: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
                Some(drops.get(&0, 0)?.iter().sum())
            }
            Filter::Port25 { daemon, .. } => {
                let text = daemon.try_scrape().map_err(anyhow::Error::msg)?;
                let count = |verdict| {
                    metric_sum(&text, "port25_packets_total", &[("verdict", verdict)]) as u64
                };
                Some(count("drop") + count("answered"))
            }
        })
    }
}

/// The raw-table rule that lets the clients' port-25 traffic by, before any limit.
fn clients_first() -> String {
    format!("-t raw -A PREROUTING -p tcp --dport 25 -s {CLIENT},{MAIL_CLIENT} -j ACCEPT")
}

/// One iptables-legacy command in the lab's gateway, its arguments split on blanks.
fn iptables(gw: &Netns, args: &str) -> Result<()> {
    sys::run(gw.command(IPTABLES).args(args.split_whitespace()))?;
    Ok(())
}

/// Snapshot of the counters a window is measured by.
#[derive(Clone, Copy)]
pub(super) struct Counters {
    pub(super) at: Instant,
    pub(super) sent: u64,
    pub(super) received: u64,
    /// The filter's counter and when it was read: reading it takes a while (a scrape, a
    /// command), so its rate is over its own interval.
    pub(super) dropped: Option<(Instant, u64)>,
    /// Run time of the receiver's NAPI thread(s), ns.
    pub(super) receiver_ns: u64,
}

pub(super) fn snapshot(lab: &Lab, filter: &Filter<'_>, sent: &AtomicU64) -> Result<Counters> {
    Ok(Counters {
        at: Instant::now(),
        sent: sent.load(Ordering::Relaxed),
        received: ethtool_stat(&lab.net.gw, "gw0", "rx_queue_0_xdp_packets")?,
        dropped: filter.dropped()?.map(|d| (Instant::now(), d)),
        receiver_ns: napi_threads()?
            .iter()
            .map(|&pid| sys::runtime_ns(pid))
            .sum::<Result<u64>>()?,
    })
}
