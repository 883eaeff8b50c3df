//! The addresses of the usual lab, [`Gateway::allowed_and_other`]: gw0 on 198.18.0.0/24 and
//! 2001:db8:25::/64 with the allowlisted client, gw1 on 198.18.1.0/24 and 2001:db8:26::/64 with a
//! client in no list. Each test's namespaces are its own, so tests running side by side can all use
//! them.

use super::*;

pub const GW_A_V4: &str = "198.18.0.1";
pub const GW_A_V6: &str = "2001:db8:25::1";
pub const ALLOWED_V4: &str = "198.18.0.10";
pub const ALLOWED_V6: &str = "2001:db8:25::10";
pub const GW_B_V4: &str = "198.18.1.1";
pub const GW_B_V6: &str = "2001:db8:26::1";
pub const OTHER_V4: &str = "198.18.1.20";
pub const OTHER_V6: &str = "2001:db8:26::20";
/// Where the daemon under test serves metrics, inside the gateway's namespace.
pub const METRICS: &str = "127.0.0.1:9725";

/// One of the constants above as an address.
pub fn ip(addr: &str) -> IpAddr {
    addr.parse().expect("a lab address")
}

impl Gateway {
    /// The usual lab: the allowlisted client (`clients[0]`) and one in no list (`clients[1]`),
    /// with `extra` clients after them.
    pub fn allowed_and_other(tag: &str, extra: &[Client]) -> Self {
        let mut clients = vec![Client::new("allowed", 0, 10), Client::new("other", 1, 20)];
        clients.extend_from_slice(extra);
        Self::new(tag, &clients)
    }
}
