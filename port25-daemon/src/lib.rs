//! port25d: the userspace half of port25. It owns the policy, keeps the kernel maps in step with
//! it, and exports what the kernel counted.

pub mod audit;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod metrics;
pub mod model;
pub mod pins;
pub mod proto;
pub mod runtime;
pub mod sources;
pub mod status;
pub mod top;
