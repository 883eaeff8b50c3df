//! Which XDP program an interface runs, from the kernel (RTM_GETLINK, IFLA_XDP): to name the
//! program that holds an interface port25 cannot attach to, and to tell whether an interface
//! whose port25 link was taken away is free again. docs/ARCHITECTURE.md, § Beside other XDP
//! programs.

use netlink_packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// The program libxdp's dispatcher is called: the root of xdp-loader's and xdp-filter's programs.
const LIBXDP_DISPATCHER: &str = "xdp_dispatcher";

/// An XDP program attached to an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Occupant {
    pub program_id: u32,
    /// "native", "skb", "offload" or "several".
    pub mode: &'static str,
    /// Its name, when the kernel still has it.
    pub name: Option<String>,
}

impl Occupant {
    /// Whether it is libxdp's multi-program dispatcher (xdp-loader, xdp-filter, …).
    pub fn is_libxdp_dispatcher(&self) -> bool {
        self.name.as_deref() == Some(LIBXDP_DISPATCHER)
    }
}

impl std::fmt::Display for Occupant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "program {}", self.program_id)?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        write!(f, " in {} mode", self.mode)?;
        if self.is_libxdp_dispatcher() {
            f.write_str(" (a libxdp dispatcher: programs loaded by xdp-loader or xdp-filter)")?;
        }
        Ok(())
    }
}

/// The XDP program on interface `ifindex` in this network namespace, if any.
pub fn xdp_occupant(ifindex: u32) -> std::io::Result<Option<Occupant>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetLink(link));
    request.header.flags = NLM_F_REQUEST;
    request.header.sequence_number = 1;
    request.finalize();
    let mut buffer = vec![0; request.header.length as usize];
    request.serialize(&mut buffer);
    socket.send(&buffer, 0)?;
    let (reply, _) = socket.recv_from_full()?;
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
        .map_err(|e| invalid(format!("RTM_GETLINK answer: {e}")))?;
    let link = match message.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => link,
        NetlinkPayload::Error(err) => return Err(err.to_io()),
        other => return Err(invalid(format!("RTM_GETLINK answered {other:?}"))),
    };
    let mut program_id = 0;
    let mut mode = "none";
    for attribute in &link.attributes {
        let LinkAttribute::Xdp(xdp) = attribute else {
            continue;
        };
        for entry in xdp {
            match entry {
                LinkXdp::ProgId(id) => program_id = *id,
                LinkXdp::Attached(how) => {
                    mode = match how {
                        XdpAttached::Driver => "native",
                        XdpAttached::SocketBuffer => "skb",
                        XdpAttached::Hardware => "offload",
                        XdpAttached::Multiple => "several",
                        _ => "none",
                    }
                }
                _ => {}
            }
        }
    }
    if program_id == 0 {
        return Ok(None);
    }
    Ok(Some(Occupant {
        program_id,
        mode,
        name: program_name(program_id),
    }))
}

/// The name of loaded program `id`.
fn program_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|info| info.id() == id)
        .and_then(|info| info.name_as_str().map(str::to_owned))
}
