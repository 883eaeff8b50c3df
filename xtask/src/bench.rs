//! `cargo xtask bench`: builds port25d and the bench (port25-bench, in bench/) and runs it as root.
//! The full run writes bench/report.md and its plots (committed: the README quotes them); the
//! smoke run, which CI does, writes to a temporary directory and only checks that every row is
//! still filled.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Result, bail};

use crate::packages::Scope;
use crate::setup;
use crate::util;

pub(crate) fn bench(
    smoke: bool,
    out: Option<PathBuf>,
    generator: Option<&str>,
) -> Result<ExitCode> {
    if !util::is_root() {
        bail!(
            "cargo xtask bench needs root: it loads XDP programs, builds network namespaces and \
             floods a veth between them; run it with sudo"
        );
    }
    setup::ensure(Scope::Everything)?;
    let started = Instant::now();
    // Release builds for the figures (the list loads and scrapes are userspace work); the smoke
    // run reuses the debug build `cargo xtask test` made.
    let release = !smoke;
    let port25d = crate::daemon::build(release)?;
    let mut build = util::cargo();
    build.args(["build", "-p", "port25-bench"]);
    if release {
        build.arg("--release");
    }
    util::run(&mut build)?;
    let bench_bin = port25d.with_file_name("port25-bench");
    let out = match out {
        Some(dir) => dir,
        None if smoke => {
            std::env::temp_dir().join(format!("port25-bench-smoke-{}", std::process::id()))
        }
        None => util::workspace_root().join("bench"),
    };
    let mut cmd = Command::new(&bench_bin);
    cmd.env("PORT25D", &port25d).arg("--out").arg(&out);
    if smoke {
        cmd.arg("--smoke");
    }
    if let Some(generator) = generator {
        cmd.args(["--generator", generator]);
    }
    let status = util::status(&mut cmd)?;
    println!(
        "cargo xtask bench{}: {} s, report in {}",
        if smoke { " --smoke" } else { "" },
        started.elapsed().as_secs(),
        out.join("report.md").display()
    );
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        eprintln!("xtask: the bench failed ({status})");
        ExitCode::FAILURE
    })
}
