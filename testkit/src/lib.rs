//! One harness for the root-only integration tests (`tests/`) and the bench: prerequisites,
//! crafted frames and the independent reference parser, and network-namespace labs with the real
//! port25d, real SMTP servers and clients, captures and a Prometheus text parser.

pub mod frames;
pub mod lab;
pub mod reference;
pub mod rng;

/// Fails, showing `text`, unless it contains every one of `needles`.
#[track_caller]
pub fn assert_mentions(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

/// Fails the test (never skips it) when not root: these tests load XDP programs and build netns labs.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (it loads XDP programs and creates network namespaces): run `sudo cargo xtask test`"
    );
}
