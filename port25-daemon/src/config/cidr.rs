//! CIDR entries of the allow and deny lists: parsing with helpful errors, list files, and the
//! sorted set the daemon loads into the kernel's LPM tries.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A set of IPv4 and IPv6 networks, each sorted and deduplicated so that two sets built from the
/// same entries compare equal whatever the order they were written in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CidrSet {
    pub v4: Vec<Ipv4Net>,
    pub v6: Vec<Ipv6Net>,
}

impl CidrSet {
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut set = CidrSet::default();
        for net in nets {
            match net {
                IpNet::V4(n) => set.v4.push(n),
                IpNet::V6(n) => set.v6.push(n),
            }
        }
        set.v4.sort_unstable();
        set.v4.dedup();
        set.v6.sort_unstable();
        set.v6.dedup();
        set
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether exactly this entry is in the set (not whether a wider entry covers it).
    pub fn contains_net(&self, n: &IpNet) -> bool {
        match n {
            IpNet::V4(n) => self.v4.binary_search(n).is_ok(),
            IpNet::V6(n) => self.v6.binary_search(n).is_ok(),
        }
    }

    /// Whether an entry covers `n` or lies inside it: some address of `n` is in the set.
    pub fn overlaps(&self, n: &IpNet) -> bool {
        let covered = (0..=n.prefix_len())
            .any(|len| IpNet::new(n.addr(), len).is_ok_and(|c| self.contains_net(&c.trunc())));
        // Entries sort by address: one inside `n` is the first at or after its network address,
        // if that one is not past its last address.
        let inside = match n {
            IpNet::V4(n) => {
                let at = self.v4.partition_point(|e| e.network() < n.network());
                self.v4
                    .get(at)
                    .is_some_and(|e| e.network() <= n.broadcast())
            }
            IpNet::V6(n) => {
                let at = self.v6.partition_point(|e| e.network() < n.network());
                self.v6
                    .get(at)
                    .is_some_and(|e| e.network() <= n.broadcast())
            }
        };
        covered || inside
    }

    /// Adds one entry, keeping the order; false if it was there already.
    pub fn insert(&mut self, n: IpNet) -> bool {
        fn put<T: Ord>(v: &mut Vec<T>, n: T) -> bool {
            match v.binary_search(&n) {
                Ok(_) => false,
                Err(at) => {
                    v.insert(at, n);
                    true
                }
            }
        }
        match n {
            IpNet::V4(n) => put(&mut self.v4, n),
            IpNet::V6(n) => put(&mut self.v6, n),
        }
    }

    /// Removes one entry; false if it was not there.
    pub fn remove(&mut self, n: &IpNet) -> bool {
        fn take<T: Ord>(v: &mut Vec<T>, n: &T) -> bool {
            match v.binary_search(n) {
                Ok(at) => {
                    v.remove(at);
                    true
                }
                Err(_) => false,
            }
        }
        match n {
            IpNet::V4(n) => take(&mut self.v4, n),
            IpNet::V6(n) => take(&mut self.v6, n),
        }
    }

    /// All entries, IPv4 first, each family in order.
    pub fn iter(&self) -> impl Iterator<Item = IpNet> + '_ {
        let v4 = self.v4.iter().map(|&n| IpNet::V4(n));
        let v6 = self.v6.iter().map(|&n| IpNet::V6(n));
        v4.chain(v6)
    }
}

/// Parses one entry: `ADDRESS/PREFIX`, or a bare address meaning that one host.
///
/// Written by hand rather than with `IpNet::from_str` because its only error is "invalid IP
/// address syntax", and an operator needs to know which part is wrong. Host bits set are an
/// error, not silently cleared: `198.18.0.1/24` is usually a typo for a host or for a network,
/// and guessing wrong would open (or close) the port for 255 other addresses.
pub fn parse_cidr(text: &str) -> Result<IpNet, CidrError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(CidrError::Empty);
    }
    let (addr_text, len_text) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr_text.parse().map_err(|_| CidrError::Address {
        text: s.to_owned(),
        address: addr_text.to_owned(),
    })?;
    let Some(len_text) = len_text else {
        return Ok(IpNet::from(addr));
    };
    let (max, family) = if addr.is_ipv4() {
        (32, "IPv4")
    } else {
        (128, "IPv6")
    };
    let prefix_error = || CidrError::PrefixLength {
        text: s.to_owned(),
        max,
        family,
    };
    let len: u8 = len_text
        .parse()
        .ok()
        .filter(|&l| l <= max)
        .ok_or_else(prefix_error)?;
    let net = IpNet::new(addr, len).map_err(|_| prefix_error())?;
    if net.trunc() != net {
        return Err(CidrError::HostBits {
            text: s.to_owned(),
            network: net.trunc(),
        });
    }
    Ok(net)
}

/// What is wrong with a CIDR an operator wrote, and how to write it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("empty CIDR; {EXAMPLE}")]
    Empty,
    #[error("invalid CIDR {text:?}: {address:?} is not an IPv4 or IPv6 address; {EXAMPLE}")]
    Address { text: String, address: String },
    #[error("invalid CIDR {text:?}: prefix length must be a number from 0 to {max} for {family}")]
    PrefixLength {
        text: String,
        max: u8,
        family: &'static str,
    },
    #[error("host bits set in {text}; did you mean {network}?")]
    HostBits { text: String, network: IpNet },
}

const EXAMPLE: &str = "write a network such as 198.18.0.0/24 or 2001:db8::/48, or a single address";

/// Parses a list file: one CIDR a line, `#` starts a comment (whole line or trailing), blank
/// lines ignored. An error comes with its 1-based line number.
pub(super) fn parse_list(text: &str) -> Result<Vec<IpNet>, (usize, CidrError)> {
    let mut nets = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let entry = line
            .split_once('#')
            .map_or(line, |(before, _)| before)
            .trim();
        if entry.is_empty() {
            continue;
        }
        nets.push(parse_cidr(entry).map_err(|reason| (index + 1, reason))?);
    }
    Ok(nets)
}
