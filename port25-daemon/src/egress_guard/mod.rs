//! The egress guard's userspace half (docs/ARCHITECTURE.md, § Egress): naming each refused
//! connect the hooks report (`names.rs`) and keeping what was refused (`log.rs`). The hooks
//! themselves are in `datapath/egress.rs`, their config in `config/egress.rs`, and the run loop's
//! side (keeping them in step, reading the events) in `daemon/egress.rs`.

pub(crate) mod log;
pub(crate) mod names;

pub(crate) use self::log::SharedLog;
pub(crate) use self::names::Namer;
