//! `cargo xtask test`: every test of the workspace, the root-only kernel and netns tests included.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::util;

/// Programs the tests run; `cargo xtask setup` installs them.
const TOOLS: &[(&str, &str)] = &[
    (
        "bpf-linker",
        "links the eBPF program (cargo install, see cargo xtask setup)",
    ),
    (
        "smtp-sink",
        "the SMTP server in the netns tests (Debian package postfix, in /usr/sbin)",
    ),
    (
        "swaks",
        "the SMTP client in the netns tests (Debian package swaks)",
    ),
    (
        "ip",
        "creates the test namespaces and veth pairs (Debian package iproute2)",
    ),
    ("curl", "scrapes the metrics endpoint (Debian package curl)"),
];

pub fn test(cargo_test_args: &[String]) -> Result<ExitCode> {
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
    let missing: Vec<String> = TOOLS
        .iter()
        .filter(|(tool, _)| util::which(tool).is_none())
        .map(|(tool, why)| format!("  {tool}: {why}"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the tests need programs that are not on PATH:\n{}\nrun `cargo xtask setup` (as root) \
             to install them, and make sure ~/.cargo/bin and /usr/sbin are on PATH",
            missing.join("\n")
        );
    }
    util::ensure_bpffs()?;
    // The netns labs run the real daemon binary: build it first and tell the tests where it is.
    let port25d = crate::daemon::build(false)?;

    let mut cmd = util::cargo();
    cmd.env("PORT25D", &port25d);
    // port25-ebpf only builds for the BPF target (port25-daemon's build.rs builds it).
    cmd.args(["test", "--workspace", "--exclude", "port25-ebpf"])
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
