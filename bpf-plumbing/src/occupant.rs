//! Which XDP program an interface runs, from the kernel (RTM_GETLINK, IFLA_XDP): to name the
//! program that holds an interface a caller cannot attach to, and to tell whether an interface
//! whose link was taken away is free again; and swapping it (RTM_SETLINK), as libxdp's
//! dispatchers are attached.

use std::os::fd::{AsRawFd as _, BorrowedFd};

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use aya::programs::XdpMode;

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
        self.name.as_deref() == Some(crate::libxdp::DISPATCHER_PROGRAM)
    }

    /// Its mode, when it is one a program can be attached in by itself (native or skb).
    pub fn xdp_mode(&self) -> Option<XdpMode> {
        match self.mode {
            "native" => Some(XdpMode::Driver),
            "skb" => Some(XdpMode::Skb),
            _ => None,
        }
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
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    let link = match route_request(RouteNetlinkMessage::GetLink(link), NLM_F_REQUEST)? {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => link,
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

const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1;
const XDP_FLAGS_SKB_MODE: u32 = 2;
const XDP_FLAGS_DRV_MODE: u32 = 4;
const XDP_FLAGS_HW_MODE: u32 = 8;
const XDP_FLAGS_REPLACE: u32 = 16;

/// Puts `program` on interface `ifindex` through netlink (RTM_SETLINK, IFLA_XDP), the way libxdp
/// attaches its dispatcher (a bpf_link would lock xdp-loader out): in place of `expected`
/// atomically (XDP_FLAGS_REPLACE; the kernel refuses with EEXIST if another program is there
/// now), or only if the interface runs none. `program` None detaches `expected`.
pub fn swap_xdp(
    ifindex: u32,
    mode: XdpMode,
    program: Option<BorrowedFd<'_>>,
    expected: Option<BorrowedFd<'_>>,
) -> std::io::Result<()> {
    let mut flags = match mode {
        XdpMode::Driver => XDP_FLAGS_DRV_MODE,
        XdpMode::Skb => XDP_FLAGS_SKB_MODE,
        XdpMode::Hardware => XDP_FLAGS_HW_MODE,
        XdpMode::Default => 0,
    };
    let mut xdp = vec![LinkXdp::Fd(program.map_or(-1, |fd| fd.as_raw_fd()))];
    match expected {
        Some(old) => {
            flags |= XDP_FLAGS_REPLACE;
            xdp.push(LinkXdp::ExpectedFd(
                u32::try_from(old.as_raw_fd()).unwrap_or(0),
            ));
        }
        None => flags |= XDP_FLAGS_UPDATE_IF_NOEXIST,
    }
    xdp.push(LinkXdp::Flags(flags));
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    link.attributes.push(LinkAttribute::Xdp(xdp));
    match route_request(
        RouteNetlinkMessage::SetLink(link),
        NLM_F_REQUEST | NLM_F_ACK,
    )? {
        NetlinkPayload::Error(err) if err.code.is_none() => Ok(()),
        other => Err(invalid(format!("RTM_SETLINK answered {other:?}"))),
    }
}

/// Sends one rtnetlink request and returns the kernel's answer (an error answer as `Err`).
fn route_request(
    message: RouteNetlinkMessage,
    flags: u16,
) -> std::io::Result<NetlinkPayload<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut request = NetlinkMessage::from(message);
    request.header.flags = flags;
    request.header.sequence_number = 1;
    request.finalize();
    let mut buffer = vec![0; request.header.length as usize];
    request.serialize(&mut buffer);
    socket.send(&buffer, 0)?;
    let (reply, _) = socket.recv_from_full()?;
    let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
        .map_err(|e| invalid(format!("rtnetlink answer: {e}")))?;
    match message.payload {
        NetlinkPayload::Error(err) if err.code.is_some() => Err(err.to_io()),
        payload => Ok(payload),
    }
}

fn invalid(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// The name of loaded program `id`.
fn program_name(id: u32) -> Option<String> {
    loaded_program(id).and_then(|info| info.name_as_str().map(str::to_owned))
}

/// What the kernel says of loaded program `id`, if it is still loaded.
pub fn loaded_program(id: u32) -> Option<aya::programs::ProgramInfo> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|info| info.id() == id)
}
