//! The control socket: a root-only Unix socket through which `port25d allow|deny|status|egress|detach`
//! talk to the running daemon. The server side forwards each request to the daemon's event loop;
//! the client side sends one and returns the answer it expects, typed. Wire types: `proto`.

mod client;
pub(crate) mod queue;
mod server;

pub(crate) use self::client::{
    DEFAULT_TIMEOUT, Endpoint, Probe, command, egress_events, entries, probe, shadow_status,
    status, why,
};
pub(crate) use self::server::{Peer, serve};

/// Default path of the control socket.
pub(crate) const DEFAULT_SOCKET: &str = "/run/port25/control.sock";
