//! port25d: the userspace half of port25. It owns the policy, keeps the kernel maps in step with
//! it, and exports what the kernel counted. What it offers other crates is its command line
//! ([`cli::main`]); the integration tests and the bench reach the datapath through [`testing`].

mod audit;
pub mod cli;
mod clock;
// config, datapath, model, pins and sources are what `testing` hands to the tests and the bench
// (the datapath's signatures use the rest): their items stay `pub`, reachable only there, and each
// says so with an inner `allow(unreachable_pub)`.
mod config;
mod control;
mod crowdsec;
mod daemon;
mod datapath;
mod egress_guard;
mod history;
mod metrics;
mod model;
mod netfilter;
mod pins;
mod proto;
mod runtime;
mod shared;
mod state_file;
mod text;
mod users;

/// What the integration tests and the bench drive directly: the datapath loaded from this build's
/// embedded object, and the config that says what to write into it. Behind the `testing`
/// feature, so that nothing else of the daemon is public.
#[cfg(feature = "testing")]
pub mod testing {
    pub use crate::config::{CidrSet, Config};
    pub use crate::datapath::SourceTables;
    pub use crate::datapath::{Datapath, DispatcherConfig, SlotConfig};
    pub use crate::model::{ListKind, Mode, OnExit, Policy, XdpCoexist, XdpMode, XdpModeSetting};
    pub use crate::pins::PinDir;
}
