//! Shared pieces of the root-only integration tests: prerequisites, crafted frames, and network
//! namespace labs with real SMTP servers.

pub mod frames;
pub mod lab;
pub mod reference;
pub mod rng;

/// Fails the test (never skips it) when not root: these tests load XDP programs and build netns labs.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (it loads XDP programs and creates network namespaces): run `sudo cargo xtask test`"
    );
}
