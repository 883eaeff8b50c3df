//! `cargo xtask test`: every test of the workspace, the root-only kernel and netns tests included.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::packages::Scope;
use crate::setup;
use crate::util;

pub(crate) fn test(cargo_test_args: &[String]) -> Result<ExitCode> {
    let started = Instant::now();
    let result = run_tests(cargo_test_args);
    println!("cargo xtask test: {} s", started.elapsed().as_secs());
    result
}

fn run_tests(cargo_test_args: &[String]) -> Result<ExitCode> {
    if !util::is_root() {
        bail!(
            "cargo xtask test needs root: the kernel tests load XDP programs and create network \
             namespaces; run it with sudo"
        );
    }
    // What the tests use is installed first, and checked: a missing package is named here,
    // not as a test failure halfway through.
    setup::ensure(Scope::Everything)?;
    // The netns labs run the real daemon binary: build it first and tell the tests where it is.
    let port25d = crate::daemon::build(false)?;

    let mut cmd = util::cargo();
    cmd.env("PORT25D", &port25d);
    // The eBPF crates only build for the BPF target (port25-daemon's and port25-bench's build.rs do).
    cmd.args(["test", "--workspace"])
        .args(["--exclude", "port25-ebpf", "--exclude", "port25-bench-ebpf"])
        .args(cargo_test_args);
    let status = util::status(&mut cmd)?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => {
            eprintln!("xtask: cargo test failed ({status})");
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        None => {
            eprintln!("xtask: cargo test was killed ({status})");
            ExitCode::FAILURE
        }
    })
}
