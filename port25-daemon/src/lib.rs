//! port25d: the userspace half of port25. It owns the policy, keeps the XDP program's maps in step
//! with it, and exports what the kernel counted.

pub mod config;
pub mod daemon;
pub mod datapath;
pub mod metrics;
pub mod pins;
pub mod sources;
pub mod top;
