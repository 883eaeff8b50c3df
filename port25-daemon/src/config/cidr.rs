//! CIDR entries of the allow and deny lists: parsing with helpful errors, list files, and the
//! sorted set the daemon loads into the kernel's LPM tries.

use std::{net::IpAddr, sync::Arc};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A set of IPv4 and IPv6 networks, each sorted and deduplicated so that two sets built from the
/// same entries compare equal whatever the order they were written in. Shared when cloned (a
/// million entries are 11 MB: the config's lists and the live ones the datapath keeps are one
/// copy), copied on the first change of a shared one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CidrSet {
    pub v4: Arc<Vec<Ipv4Net>>,
    pub v6: Arc<Vec<Ipv6Net>>,
}

impl CidrSet {
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push(n),
                IpNet::V6(n) => v6.push(n),
            }
        }
        v4.sort_unstable();
        v4.dedup();
        v6.sort_unstable();
        v6.dedup();
        CidrSet {
            v4: Arc::new(v4),
            v6: Arc::new(v6),
        }
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

    /// Whether an entry covers all of `n` (it, or a shorter prefix it lies in).
    pub fn covers(&self, n: &IpNet) -> bool {
        self.covering(n).is_some()
    }

    /// The widest entry that covers all of `n`, if any.
    pub fn covering(&self, n: &IpNet) -> Option<IpNet> {
        (0..=n.prefix_len())
            .filter_map(|len| IpNet::new(n.addr(), len).ok().map(|c| c.trunc()))
            .find(|c| self.contains_net(c))
    }

    /// Whether an entry covers `n` or lies inside it: some address of `n` is in the set.
    pub fn overlaps(&self, n: &IpNet) -> bool {
        self.covers(n) || self.has_inside(n)
    }

    /// Whether an entry lies inside `n` or starts where it does (one that covers it from elsewhere
    /// is [`CidrSet::covers`]'s).
    pub fn has_inside(&self, n: &IpNet) -> bool {
        // Entries sort by address: one inside `n` is the first at or after its network address,
        // if that one is not past its last address.
        match n {
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
        }
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
            IpNet::V4(n) => put(Arc::make_mut(&mut self.v4), n),
            IpNet::V6(n) => put(Arc::make_mut(&mut self.v6), n),
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
            IpNet::V4(n) => take(Arc::make_mut(&mut self.v4), n),
            IpNet::V6(n) => take(Arc::make_mut(&mut self.v6), n),
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
        text: crate::text::cut(s, QUOTED),
        address: crate::text::cut(addr_text, QUOTED),
    })?;
    let Some(len_text) = len_text else {
        return Ok(unmapped(IpNet::from(addr)));
    };
    let (max, family) = if addr.is_ipv4() {
        (32, "IPv4")
    } else {
        (128, "IPv6")
    };
    let prefix_error = || CidrError::PrefixLength {
        text: crate::text::cut(s, QUOTED),
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
    Ok(unmapped(net))
}

/// An IPv4-mapped IPv6 prefix (`::ffff:198.18.0.2`, `::ffff:198.18.0.0/112`) would never match:
/// IPv4 packets are judged as IPv4. It is taken as the IPv4 prefix it names.
fn unmapped(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Ok(v4) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(v4);
    }
    net
}

/// What is wrong with a CIDR an operator wrote, and how to write it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("empty CIDR; {EXAMPLE}")]
    Empty,
    #[error(
        "invalid CIDR {text:?}: {address:?} is not an IPv4 or IPv6 address; {EXAMPLE}{}",
        if text.starts_with('<') { " (this looks like an HTML page: did a download fail?)" } else { "" }
    )]
    Address { text: String, address: String },
    #[error("invalid CIDR {text:?}: prefix length must be a number from 0 to {max} for {family}")]
    PrefixLength {
        text: String,
        max: u8,
        family: &'static str,
    },
    #[error("host bits set in {text}; did you mean {network}?")]
    HostBits { text: String, network: IpNet },
    #[error(
        "a line of {bytes} bytes (at most {MAX_LIST_LINE_BYTES}) starting {start:?}: a list file \
         holds one CIDR a line"
    )]
    LineTooLong { bytes: usize, start: String },
}

const EXAMPLE: &str = "write a network such as 198.18.0.0/24 or 2001:db8::/48, or a single address";

/// The largest list file read: a feed of a few million prefixes with comments is well under it
/// (5,000,000 lines of 40 bytes are 200 MB).
pub const MAX_LIST_FILE_BYTES: u64 = 256 << 20;
/// The longest line of a list file: a CIDR and a comment.
pub const MAX_LIST_LINE_BYTES: usize = 4096;
/// Characters of untrusted text an error quotes.
const QUOTED: usize = 64;

/// Why a list file cannot be read as one (the caller names the file).
#[derive(Debug, thiserror::Error)]
pub enum ListFileError {
    #[error("cannot be read: {0}; check the path and that root may read it")]
    Io(#[from] std::io::Error),
    #[error(
        "is {0}, not a regular file; a list file holds one CIDR a line (point files and dirs at \
         regular files only)"
    )]
    NotRegular(&'static str),
    #[error(
        "is larger than {} MiB; split it into files of a watched directory",
        MAX_LIST_FILE_BYTES >> 20
    )]
    TooLarge,
    #[error(
        "is not text (byte {0} is not UTF-8): a list file holds one CIDR a line; was a download \
         saved instead of its content?"
    )]
    NotText(usize),
}

/// Reads a list file whole, refusing what is not one before reading much of it: a device, a FIFO
/// (opened without blocking, so a FIFO without writer cannot stall a reload), a file past
/// [`MAX_LIST_FILE_BYTES`], binary data.
pub fn read_list_file(path: &std::path::Path) -> Result<String, ListFileError> {
    use std::io::Read as _;
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(ListFileError::NotRegular(if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "something else"
        }));
    }
    let mut bytes = Vec::new();
    file.take(MAX_LIST_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_LIST_FILE_BYTES {
        return Err(ListFileError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|err| ListFileError::NotText(err.utf8_error().valid_up_to()))
}

/// Parses a list file in the forms blocklists are published in: one CIDR a line, `#` or `;`
/// starts a comment (whole line or trailing: Spamhaus DROP's `198.18.16.0/20 ; SBL256894`), text
/// after a blank is a note (`198.18.0.0/24 spam source`), blank lines are ignored. A prefix
/// length split off by a blank (`198.18.0.0 /24`) is an error, never a /32. An error comes with
/// its 1-based line number.
pub(super) fn parse_list(text: &str) -> Result<Vec<IpNet>, (usize, CidrError)> {
    let mut nets = Vec::new();
    for entry in list_lines(text) {
        nets.push(entry?.1);
    }
    Ok(nets)
}

/// The entries of a list file with their 1-based line numbers, as [`parse_list`] reads them.
pub(super) fn list_lines(
    text: &str,
) -> impl Iterator<Item = Result<(usize, IpNet), (usize, CidrError)>> + '_ {
    text.lines().enumerate().filter_map(|(index, line)| {
        if line.len() > MAX_LIST_LINE_BYTES {
            return Some(Err((
                index + 1,
                CidrError::LineTooLong {
                    bytes: line.len(),
                    start: crate::text::cut(line, QUOTED),
                },
            )));
        }
        let entry = line
            .split_once(['#', ';'])
            .map_or(line, |(before, _)| before)
            .trim();
        if entry.is_empty() {
            return None;
        }
        let cidr = match entry.split_once(char::is_whitespace) {
            Some((cidr, note)) if !note.trim_start().starts_with('/') => cidr,
            _ => entry,
        };
        Some(
            parse_cidr(cidr)
                .map(|net| (index + 1, net))
                .map_err(|reason| (index + 1, reason)),
        )
    })
}
