//! Parsers for the kernel's text tables that `audit` reads: `/proc/net/tcp` and `/proc/net/tcp6`
//! (`Documentation/networking/proc_net_tcp.rst`) and `/proc/PID/fd/*` links.
//!
//! Addresses in `/proc/net/tcp*` are the raw network-order bytes printed as 32-bit words in the
//! host's byte order (`%08X` per word: `0100007F` is 127.0.0.1 on a little-endian machine); ports
//! are printed as numbers (`0019` is 25).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A TCP state as the kernel numbers it (`include/net/tcp_states.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TcpState(pub u8);

impl TcpState {
    /// States only the tests build sockets in; the audit itself only asks for these below.
    #[cfg(test)]
    pub(crate) const ESTABLISHED: Self = Self(0x01);
    #[cfg(test)]
    pub(crate) const SYN_SENT: Self = Self(0x02);
    pub(crate) const TIME_WAIT: Self = Self(0x06);
    pub(crate) const LISTEN: Self = Self(0x0A);
    pub(crate) const NEW_SYN_RECV: Self = Self(0x0C);

    /// A socket no process holds any more: closed and lingering (TIME_WAIT), or a connection
    /// request the kernel answers on the listener's behalf (inode 0 in both cases).
    pub(crate) fn is_ownerless(self) -> bool {
        matches!(self, Self::TIME_WAIT | Self::NEW_SYN_RECV)
    }
}

/// One row of `/proc/net/tcp` or `/proc/net/tcp6`. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`,
/// an IPv6 socket talking IPv4) are turned into IPv4 ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Socket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: TcpState,
    /// The socket's owner as the kernel records it (the creator's effective uid).
    pub uid: u32,
    /// 0 for sockets no file descriptor refers to (TIME_WAIT, NEW_SYN_RECV).
    pub inode: u64,
}

/// Parses a whole `/proc/net/tcp` or `/proc/net/tcp6` text (the header line is skipped). `name` is
/// for error messages.
pub(crate) fn parse_tcp_table(name: &str, text: &str) -> Result<Vec<Socket>, TableError> {
    text.lines()
        .enumerate()
        .skip(1)
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            parse_tcp_line(line).map_err(|row| TableError {
                table: name.to_owned(),
                line: n + 1,
                row,
            })
        })
        .collect()
}

/// A line of a socket table the kernel wrote in a layout this code does not know.
#[derive(Debug, thiserror::Error)]
#[error("{table}:{line}: {row}")]
pub(crate) struct TableError {
    table: String,
    line: usize,
    #[source]
    row: RowError,
}

/// What in a row could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RowError {
    #[error("expected at least 10 fields in {0:?}")]
    Fields(String),
    #[error("bad {field} {value:?}")]
    Field { field: &'static str, value: String },
    #[error("bad endpoint {0:?}: no ':'")]
    Endpoint(String),
    #[error("bad port in {0:?}")]
    Port(String),
    #[error("bad address in {0:?}")]
    Address(String),
}

/// Parses one row: `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`.
pub(crate) fn parse_tcp_line(line: &str) -> Result<Socket, RowError> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [_, local, remote, state, _, _, _, uid, _, inode, ..] = fields.as_slice() else {
        return Err(RowError::Fields(line.to_owned()));
    };
    let bad = |field: &'static str, value: &str| RowError::Field {
        field,
        value: value.to_owned(),
    };
    let state = u8::from_str_radix(state, 16).map_err(|_| bad("state", state))?;
    Ok(Socket {
        local: parse_endpoint(local)?,
        remote: parse_endpoint(remote)?,
        state: TcpState(state),
        uid: uid.parse().map_err(|_| bad("uid", uid))?,
        inode: inode.parse().map_err(|_| bad("inode", inode))?,
    })
}

/// `0100007F:0019` -> 127.0.0.1:25 (on a little-endian host).
pub(crate) fn parse_endpoint(text: &str) -> Result<SocketAddr, RowError> {
    let (addr, port) = text
        .split_once(':')
        .ok_or_else(|| RowError::Endpoint(text.to_owned()))?;
    let port = u16::from_str_radix(port, 16).map_err(|_| RowError::Port(text.to_owned()))?;
    let ip = parse_address(addr).ok_or_else(|| RowError::Address(text.to_owned()))?;
    Ok(SocketAddr::new(canonical(ip), port))
}

/// 8 hex digits (IPv4) or 32 (IPv6): network-order bytes, printed a 32-bit word at a time in the
/// host's byte order.
fn parse_address(hex: &str) -> Option<IpAddr> {
    if !hex.is_ascii() {
        return None;
    }
    let mut bytes = [0u8; 16];
    let words = match hex.len() {
        8 => 1,
        32 => 4,
        _ => return None,
    };
    for i in 0..words {
        let word = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    Some(if words == 1 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes))
    })
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is; every other address unchanged.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// The inode of a `/proc/PID/fd/N` link target `socket:[12345]`.
pub(crate) fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Rows as a little-endian kernel prints them (the crafted hex is byte-order specific).
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0019 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20482 1 0000000000000000 100 0 0 10 0
   1: 0100007F:01D1 00000000:0000 0A 00000000:00000000 00:00000000 00000000   108        0 20483 1 0000000000000000 100 0 0 10 0
   2: 010012C6:9C40 020012C6:0019 01 00000000:00000000 00:00000000 00000000  1000        0 31337 2 0000000000000000 20 4 30 10 -1
   3: 010012C6:0019 0A0012C6:D431 06 00000000:00000000 03:000016A8 00000000     0        0 0 3 0000000000000000
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0019 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 40001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:024B 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 40002 1 0000000000000000 100 0 0 10 0
   2: B80D0120000025000000000001000000:0019 B80D0120000025000000000010000000:C350 01 00000000:00000000 00:00000000 00000000     0        0 40003 1 0000000000000000 20 4 30 10 -1
   3: 0000000000000000FFFF0000010012C6:0019 0000000000000000FFFF00000A0012C6:A410 01 00000000:00000000 00:00000000 00000000   106        0 40004 1 0000000000000000 20 4 30 10 -1
";

    fn sock(text: &str) -> SocketAddr {
        text.parse().expect("a socket address")
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv4_rows() {
        let rows = parse_tcp_table("tcp", TCP).expect("valid rows");
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows[0],
            Socket {
                local: sock("0.0.0.0:25"),
                remote: sock("0.0.0.0:0"),
                state: TcpState::LISTEN,
                uid: 0,
                inode: 20482,
            }
        );
        assert_eq!(rows[1].local, sock("127.0.0.1:465"));
        assert_eq!(rows[1].uid, 108);
        assert_eq!(rows[2].local, sock("198.18.0.1:40000"));
        assert_eq!(rows[2].remote, sock("198.18.0.2:25"));
        assert_eq!(rows[2].state, TcpState::ESTABLISHED);
        assert_eq!((rows[2].uid, rows[2].inode), (1000, 31337));
        assert_eq!(rows[3].state, TcpState::TIME_WAIT);
        assert_eq!(rows[3].remote, sock("198.18.0.10:54321"));
        assert_eq!(rows[3].inode, 0);
        assert!(rows[3].state.is_ownerless());
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv6_rows_and_v4_mapped_addresses() {
        let rows = parse_tcp_table("tcp6", TCP6).expect("valid rows");
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].local, sock("[::]:25"));
        assert_eq!(rows[0].state, TcpState::LISTEN);
        assert_eq!(rows[1].local, sock("[::1]:587"));
        assert_eq!(rows[2].local, sock("[2001:db8:25::1]:25"));
        assert_eq!(rows[2].remote, sock("[2001:db8:25::10]:50000"));
        // ::ffff:198.18.0.1 is an IPv6 socket speaking IPv4: reported as IPv4.
        assert_eq!(rows[3].local, sock("198.18.0.1:25"));
        assert_eq!(rows[3].remote, sock("198.18.0.10:42000"));
        assert_eq!(rows[3].uid, 106);
    }

    #[test]
    fn bad_rows_name_the_line() {
        let err = parse_tcp_table("tcp", "header\n   0: 0100007F:0019 junk\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("tcp:2: expected at least 10 fields"),
            "{err}"
        );
        let err = parse_tcp_line(
            "0: 0100007F:XYZ0 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bad port"), "{err}");
        let err = parse_tcp_line(
            "0: 0100007:0019 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bad address"), "{err}");
        assert!(
            parse_tcp_table("tcp", "header only\n")
                .expect("valid")
                .is_empty()
        );
        assert!(parse_tcp_table("tcp", "").expect("valid").is_empty());
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[20482]"), Some(20482));
        assert_eq!(socket_inode("pipe:[20482]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[]"), None);
    }
}
