//! `port25d audit`: what on this host listens on, or is connected to, the SMTP ports (25, 465,
//! 587), which process holds each socket, and whether the filter covers them.

pub mod findings;
pub mod procnet;
