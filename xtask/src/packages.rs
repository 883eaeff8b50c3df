//! Every Debian package the project's builds, tests, lab and bench use, named explicitly, with
//! what uses it and how the self-check tells that it works.

/// How the self-check tells that a package works.
pub(crate) enum Check {
    /// The program runs and exits 0 with these arguments.
    Runs(&'static [&'static str]),
    /// The program is installed (it has no harmless invocation that exits 0).
    Installed(&'static str),
}

/// A Debian package the project uses, named explicitly: `--no-install-recommends` brings no
/// Recommends, so what a tool only recommends (swaks' IPv6 module) is listed too.
pub(crate) struct Package {
    pub(crate) name: &'static str,
    /// Also used by `cargo xtask run`'s lab and the commands it prints.
    pub(crate) lab: bool,
    pub(crate) why: &'static str,
    pub(crate) check: Check,
}

pub(crate) const PACKAGES: &[Package] = &[
    Package {
        name: "iproute2",
        lab: true,
        why: "ip and ss: the labs' namespaces, veth pairs and sockets",
        check: Check::Runs(&["ip", "-V"]),
    },
    Package {
        name: "postfix",
        lab: true,
        why: "smtp-sink and smtp-source: the labs' SMTP server and load; a private Postfix \
              instance for the audit's mail-server checks",
        check: Check::Installed("smtp-sink"),
    },
    Package {
        name: "openssl",
        lab: false,
        why: "the private Postfix instance's self-signed certificate (STARTTLS, TLS on 465)",
        check: Check::Runs(&["openssl", "version"]),
    },
    Package {
        name: "swaks",
        lab: true,
        why: "the labs' SMTP client",
        check: Check::Runs(&["swaks", "--version"]),
    },
    Package {
        name: "libio-socket-inet6-perl",
        lab: true,
        why: "swaks over IPv6, only a Recommends of swaks",
        check: Check::Runs(&["perl", "-MIO::Socket::INET6", "-e", "1"]),
    },
    Package {
        name: "curl",
        lab: true,
        why: "scrapes the metrics endpoint",
        check: Check::Runs(&["curl", "--version"]),
    },
    Package {
        name: "procps",
        lab: false,
        why: "pgrep and pkill",
        check: Check::Runs(&["pgrep", "-V"]),
    },
    Package {
        name: "bpftool",
        lab: false,
        why: "inspects programs, links and maps in tests",
        check: Check::Runs(&["bpftool", "version"]),
    },
    Package {
        name: "tcpdump",
        lab: false,
        why: "captures in the flood lab",
        check: Check::Runs(&["tcpdump", "--version"]),
    },
    Package {
        name: "hping3",
        lab: false,
        why: "the one-address SYN flood",
        check: Check::Runs(&["hping3", "--version"]),
    },
    Package {
        name: "nftables",
        lab: false,
        why: "nft: policy synproxy's netfilter table, in the synproxy lab",
        check: Check::Runs(&["nft", "--version"]),
    },
    Package {
        name: "ethtool",
        lab: false,
        why: "the synproxy lab's veth offloads (checksums in software, NAPI for XDP_TX)",
        check: Check::Runs(&["ethtool", "--version"]),
    },
    Package {
        name: "iptables",
        lab: false,
        why: "ip6tables-legacy-restore: policy synproxy's IPv6 SYNPROXY, in the synproxy lab",
        check: Check::Runs(&["ip6tables-legacy-restore", "--version"]),
    },
    Package {
        name: "dpkg-dev",
        lab: false,
        why: "dpkg-shlibdeps for `cargo xtask package`",
        check: Check::Runs(&["dpkg-shlibdeps", "--version"]),
    },
    Package {
        name: "binutils",
        lab: false,
        why: "strip for `cargo xtask package`",
        check: Check::Runs(&["strip", "--version"]),
    },
    Package {
        name: "systemd",
        lab: false,
        why: "systemd-analyze verify and security on the unit",
        check: Check::Runs(&["systemd-analyze", "--version"]),
    },
    Package {
        name: "lintian",
        lab: false,
        why: "the Debian archive's checker, on the built .deb",
        check: Check::Runs(&["lintian", "--version"]),
    },
    Package {
        name: "man-db",
        lab: false,
        why: "man, which systemd-analyze verify uses for Documentation=",
        check: Check::Runs(&["man", "--version"]),
    },
    Package {
        name: "systemd-container",
        lab: false,
        why: "systemd-nspawn: the packaged unit under a real systemd",
        check: Check::Runs(&["systemd-nspawn", "--version"]),
    },
    Package {
        name: "prometheus",
        lab: false,
        why: "promtool checks and unit-tests the alert rules",
        check: Check::Runs(&["promtool", "--version"]),
    },
    Package {
        name: "fail2ban",
        lab: false,
        why: "fail2ban-server drives the packaged action",
        check: Check::Runs(&["fail2ban-server", "--version"]),
    },
    Package {
        name: "util-linux",
        lab: false,
        why: "setpriv: port25d with the unit's capabilities only",
        check: Check::Runs(&["setpriv", "--version"]),
    },
    Package {
        name: "strace",
        lab: false,
        why: "the system calls port25d makes, against the unit's filter",
        check: Check::Runs(&["strace", "-V"]),
    },
    Package {
        name: "python3",
        lab: false,
        why: "reads the dashboard's JSON",
        check: Check::Runs(&["python3", "--version"]),
    },
    Package {
        name: "xdp-tools",
        lab: false,
        why: "xdp-filter (the bench's rival, the coexistence tests' other program) and, through libxdp1, the dispatcher object the component test loads",
        check: Check::Installed("xdp-filter"),
    },
    Package {
        name: "iptables",
        lab: false,
        why: "iptables (legacy) with ipset, which the bench measures against",
        check: Check::Runs(&["iptables-legacy", "--version"]),
    },
    Package {
        name: "ipset",
        lab: false,
        why: "the bench's iptables set",
        check: Check::Runs(&["ipset", "--version"]),
    },
    Package {
        name: "nftables",
        lab: false,
        why: "nft, which the bench measures against",
        check: Check::Runs(&["nft", "--version"]),
    },
    Package {
        name: "ethtool",
        lab: false,
        why: "veth offloads in the bench",
        check: Check::Runs(&["ethtool", "--version"]),
    },
    Package {
        name: "qemu-system-x86",
        lab: false,
        why: "cargo xtask vm: the guests that run the tests on other kernels (from backports where qemu-utils is)",
        check: Check::Runs(&["qemu-system-x86_64", "--version"]),
    },
    Package {
        name: "busybox-static",
        lab: false,
        why: "cargo xtask vm: the guests' shell, mounts and insmod",
        check: Check::Runs(&["busybox", "true"]),
    },
    Package {
        name: "kmod",
        lab: false,
        why: "cargo xtask vm: depmod writes the unpacked kernels' modules.dep",
        check: Check::Runs(&["depmod", "--version"]),
    },
    Package {
        name: "xz-utils",
        lab: false,
        why: "cargo xtask vm: Debian 6.12 kernels ship their modules xz-compressed",
        check: Check::Runs(&["xz", "--version"]),
    },
    Package {
        name: "crowdsec",
        lab: false,
        why: "crowdsec and cscli: the Local API the bouncer and reporter tests talk to (installed offline, see setup::crowdsec_offline)",
        check: Check::Runs(&["cscli", "version"]),
    },
];

/// What a command needs beyond the build tools.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// `cargo xtask run`'s lab and the commands it prints.
    Lab,
    /// Tests, bench and packaging: every package of `packages.rs`.
    Everything,
}

pub(crate) fn packages(scope: Scope) -> impl Iterator<Item = &'static Package> {
    PACKAGES
        .iter()
        .filter(move |p| scope == Scope::Everything || p.lab)
}
