//! The labs' usual shape: one gateway namespace, and client namespaces each joined to it by a veth
//! pair.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;

/// A client of a [`Gateway`] lab: the tag of its namespace, the subnet of its link, and its host
/// number there.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    pub tag: &'static str,
    pub subnet: u8,
    pub host: u8,
}

impl Client {
    /// `Client::new("allowed", 0, 10)`: namespace tag, subnet, host number.
    pub const fn new(tag: &'static str, subnet: u8, host: u8) -> Self {
        Self { tag, subnet, host }
    }
}

/// A gateway namespace (`gw`) and client namespaces. The i-th client is joined to the gateway by a
/// veth pair whose gateway end is `gw{i}` at host 1 of the client's subnet and whose client end is
/// `cl0` at the client's host number (addresses: [`Gateway::v4`], [`Gateway::v6`]). Dropping it
/// deletes every namespace, and the veths with them.
pub struct Gateway {
    pub gw: Netns,
    pub clients: Vec<Netns>,
}

impl Gateway {
    /// `Gateway::new("lab", &[Client::new("allowed", 0, 10)])`: namespaces
    /// `…-lab-gw` and `…-lab-allowed`, gw0 198.18.0.1 2001:db8:25::1, cl0 198.18.0.10
    /// 2001:db8:25::10.
    pub fn new(tag: &str, clients: &[Client]) -> Self {
        let gw = Netns::new(&format!("{tag}-gw"));
        let mut namespaces = Vec::new();
        for (i, client) in clients.iter().enumerate() {
            let ns = Netns::new(&format!("{tag}-{}", client.tag));
            let end = |host: u8| {
                (
                    format!("{}/24", Self::v4(client.subnet, host)),
                    format!("{}/64", Self::v6(client.subnet, host)),
                )
            };
            let ((gw_v4, gw_v6), (cl_v4, cl_v6)) = (end(1), end(client.host));
            let gw_if = format!("gw{i}");
            veth(
                &VethEnd::new(&gw, &gw_if, &gw_v4, &gw_v6),
                &VethEnd::new(&ns, "cl0", &cl_v4, &cl_v6),
            );
            namespaces.push(ns);
        }
        Self {
            gw,
            clients: namespaces,
        }
    }

    /// 198.18.{subnet}.{host}.
    pub fn v4(subnet: u8, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, subnet, host)
    }

    /// 2001:db8:{25 + subnet}::{host}, the decimal digits written as they are, so that
    /// 198.18.0.10 goes with 2001:db8:25::10.
    pub fn v6(subnet: u8, host: u8) -> Ipv6Addr {
        format!("2001:db8:{}::{host}", 25 + u16::from(subnet))
            .parse()
            .unwrap_or_else(|err| panic!("subnet {subnet} host {host}: {err}"))
    }
}
