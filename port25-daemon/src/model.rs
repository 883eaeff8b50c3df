//! The domain's vocabulary, each defined once: the named choices with their one spelling (the
//! config's, the control socket's, the status JSON's, the metrics labels'), and a runtime list
//! entry. Config, datapath, control protocol, status and pins all use these, and turn them into
//! the kernel's numbers only at the datapath's edge.
#![allow(
    unreachable_pub,
    reason = "public to the tests and the bench through `testing`"
)]

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// An enum whose variants are spelled one way everywhere: serde, `as_str`, `Display`.
macro_rules! named {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+
    }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        $vis enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

named! {
    /// One of the two CIDR lists.
    pub enum ListKind {
        Allow => "allow",
        Deny => "deny",
    }
}

named! {
    /// What the egress guard does with outbound connects to its ports (config `[egress] mode`).
    #[derive(Default)]
    pub enum EgressMode {
        /// No guard: the hooks let everything through.
        #[default]
        Off => "off",
        /// Counted and reported, nothing refused: for the roll-out.
        Monitor => "monitor",
        /// Refused (EPERM) unless to a smart host or from an allowed user or cgroup.
        Enforce => "enforce",
    }
}

named! {
    /// How the XDP program is to be attached (config `xdp_mode`, `--xdp-mode`).
    #[derive(clap::ValueEnum)]
    pub enum XdpModeSetting {
        /// Native where the driver supports it, otherwise generic (skb).
        Auto => "auto",
        /// In the driver: fastest, fails on drivers without XDP support.
        Native => "native",
        /// Generic XDP: works on every interface, slower.
        Skb => "skb",
    }
}

named! {
    /// How the filter shares an interface with other XDP programs (config `xdp_coexist`).
    #[derive(Default)]
    pub enum XdpCoexist {
        /// port25's own bpf_link: no other XDP program on the interface.
        #[default]
        Exclusive => "exclusive",
        /// A component of libxdp's dispatcher, beside xdp-loader's and xdp-filter's programs.
        Libxdp => "libxdp",
    }
}

impl XdpModeSetting {
    /// aya's flag for this setting (`auto`: the kernel's default).
    pub fn aya(self) -> aya::programs::XdpMode {
        match self {
            XdpModeSetting::Auto => aya::programs::XdpMode::Default,
            XdpModeSetting::Native => XdpMode::Native.aya(),
            XdpModeSetting::Skb => XdpMode::Skb.aya(),
        }
    }
}

named! {
    /// How an XDP program is attached: what [`XdpModeSetting::Auto`] resolves to.
    pub enum XdpMode {
        Native => "native",
        Skb => "skb",
    }
}

impl XdpMode {
    pub const ALL: [XdpMode; 2] = [XdpMode::Native, XdpMode::Skb];

    /// The mode spelled `name` ("native", "skb"), as pins and the control socket spell it.
    pub fn named(name: &str) -> Option<XdpMode> {
        XdpMode::ALL.into_iter().find(|mode| mode.as_str() == name)
    }

    /// aya's flag for this mode.
    pub fn aya(self) -> aya::programs::XdpMode {
        match self {
            XdpMode::Native => aya::programs::XdpMode::Driver,
            XdpMode::Skb => aya::programs::XdpMode::Skb,
        }
    }

    /// The mode aya's flag names, if port25 attaches in it.
    pub fn from_aya(mode: aya::programs::XdpMode) -> Option<XdpMode> {
        XdpMode::ALL.into_iter().find(|ours| ours.aya() == mode)
    }

    /// Whether a link of this mode is what `setting` asks for.
    pub fn fits(self, setting: XdpModeSetting) -> bool {
        match setting {
            XdpModeSetting::Auto => true,
            XdpModeSetting::Native => self == XdpMode::Native,
            XdpModeSetting::Skb => self == XdpMode::Skb,
        }
    }
}

named! {
    /// Whether the datapath drops what the policy says, or only counts it.
    pub enum Mode {
        /// Drop what the policy says.
        Enforce => "enforce",
        /// Count what would be dropped, drop nothing.
        Monitor => "monitor",
    }
}

named! {
    /// What happens to a source in neither list.
    pub enum Policy {
        /// Closed port: every non-allowlisted source is dropped.
        Drop => "drop",
        /// Open MX: new connections from non-allowlisted sources are admitted by token buckets.
        Ratelimit => "ratelimit",
        /// Open MX under spoofed floods: new connections are answered with SYN cookies in XDP,
        /// and admitted once the client's ACK proves the cookie (netfilter's SYNPROXY hands them
        /// over to the MTA).
        Synproxy => "synproxy",
    }
}

named! {
    /// What `port25d run` leaves behind when it stops on SIGTERM or SIGINT.
    pub enum OnExit {
        /// Detach the filter and remove its pins: nothing is left.
        Detach => "detach",
        /// Leave the filter attached and enforcing; the next start takes it over without a gap,
        /// and `port25d detach` removes it.
        Keep => "keep",
    }
}

named! {
    /// A hook of port25's that someone else can take away (status `lost`, metric
    /// `port25_detached_total`).
    pub enum Hook {
        /// The XDP filter of an interface.
        Xdp => "xdp",
        /// The egress guard's cgroup connect hooks.
        EgressGuard => "egress_guard",
    }
}

/// An entry of a runtime list (`port25d allow|deny add`), as the state file keeps it and the
/// control socket lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeEntry {
    pub list: ListKind,
    pub cidr: IpNet,
    /// Unix seconds; `None`: until deleted.
    pub expires: Option<u64>,
    /// Unix seconds.
    pub added: u64,
    /// Who added it ("uid 0 (root) pid 4242 on the control socket"), as the policy's history says;
    /// entries kept by a port25d before 0.1 have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_by: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_in_serde_and_display() {
        for kind in [ListKind::Allow, ListKind::Deny] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<ListKind>(&json).unwrap(), kind);
        }
        for mode in XdpMode::ALL {
            assert_eq!(serde_json::to_string(&mode).unwrap(), format!("\"{mode}\""));
        }
        assert_eq!(Policy::Ratelimit.as_str(), "ratelimit");
        // The status JSON's `lost[].hook` and the metric's `hook` label, as before the enum.
        assert_eq!(
            serde_json::to_string(&Hook::EgressGuard).unwrap(),
            "\"egress_guard\""
        );
        assert_eq!(Hook::Xdp.as_str(), "xdp");
        assert_eq!(
            toml::from_str::<std::collections::BTreeMap<String, XdpModeSetting>>("m = \"skb\"")
                .unwrap()["m"],
            XdpModeSetting::Skb
        );
    }

    #[test]
    fn a_pinned_mode_fits_the_settings_that_accept_it() {
        assert!(XdpMode::Skb.fits(XdpModeSetting::Auto));
        assert!(XdpMode::Native.fits(XdpModeSetting::Native));
        assert!(!XdpMode::Native.fits(XdpModeSetting::Skb));
    }
}
