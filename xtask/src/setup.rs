//! `cargo xtask setup`: installs what building and testing need on a fresh machine, idempotently.
//! Each step says what it found and skips what is already there.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

/// Debian packages for the tests and the lab: smtp-sink/smtp-source (postfix), swaks, bpftool, ip,
/// curl, tcpdump, hping3, and pgrep/pkill (procps). For the packaging and its tests: dpkg-deb and
/// dpkg-shlibdeps (dpkg-dev), strip (binutils), systemd-analyze (systemd) and man (man-db, which
/// verify uses for Documentation=), systemd-nspawn (systemd-container: the unit under a real
/// systemd), promtool (prometheus), fail2ban-server/-client (fail2ban), setpriv (util-linux) and
/// strace, which check that the unit's capabilities and system calls are what port25d uses, and
/// python3 to read the dashboard's JSON. For `cargo xtask bench`, the alternatives it measures:
/// xdp-filter (xdp-tools), iptables (its legacy backend) with ipset, nftables; and ethtool.
const DEB_PACKAGES: &[&str] = &[
    "postfix",
    "swaks",
    "bpftool",
    "iproute2",
    "curl",
    "tcpdump",
    "hping3",
    "procps",
    "dpkg-dev",
    "binutils",
    "systemd",
    "man-db",
    "systemd-container",
    "prometheus",
    "fail2ban",
    "util-linux",
    "strace",
    "python3",
    "xdp-tools",
    "iptables",
    "ipset",
    "nftables",
    "ethtool",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// The LLVM major version of the stable toolchain, which bpf-linker must link against.
const LLVM_MAJOR: &str = "22";

pub fn setup(force_bpf_linker: bool) -> Result<()> {
    if !util::is_root() {
        bail!(
            "cargo xtask setup needs root: it installs Debian packages with apt-get and mounts \
             bpffs; run it with sudo"
        );
    }
    debian_packages()?;
    rust_src()?;
    bpf_linker(force_bpf_linker)?;
    util::ensure_bpffs()?;
    println!("setup: done");
    Ok(())
}

fn deb_installed(package: &str) -> bool {
    // `${Status}` is "want flag status", e.g. "install ok installed" or "deinstall ok config-files".
    util::output_if_ok(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status.split_whitespace().nth(2) == Some("installed"))
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEB_PACKAGES
        .iter()
        .copied()
        .filter(|p| !deb_installed(p))
        .collect();
    if missing.is_empty() {
        println!("apt: already installed: {}", DEB_PACKAGES.join(" "));
        return Ok(());
    }
    println!("apt: installing {}", missing.join(" "));
    util::run(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let still_missing: Vec<&str> = missing.into_iter().filter(|p| !deb_installed(p)).collect();
    if !still_missing.is_empty() {
        bail!(
            "apt-get ran but these are still not installed: {}",
            still_missing.join(" ")
        );
    }
    Ok(())
}

fn rust_src() -> Result<()> {
    let installed = util::output_if_ok(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "stable",
    ]))
    .context(
        "`rustup component list --installed --toolchain stable` failed: rustup and the stable \
         toolchain are needed (the eBPF program is built with `rustup run stable cargo`)",
    )?;
    if installed.lines().any(|l| l.trim() == "rust-src") {
        println!("rustup: rust-src already installed for stable");
        return Ok(());
    }
    util::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "stable",
    ]))
}

/// The version bpf-linker reports, if one runs (on PATH, else in `$CARGO_HOME/bin`).
fn bpf_linker_version(cargo_bin: &Path) -> Option<(PathBuf, String)> {
    let exe = util::which("bpf-linker").or_else(|| {
        let p = cargo_bin.join("bpf-linker");
        util::is_executable(&p).then_some(p)
    })?;
    let out = util::output_if_ok(Command::new(&exe).arg("--version"))?;
    Some((exe, out.trim().to_owned()))
}

fn reports_wanted_version(version_line: &str) -> bool {
    // "bpf-linker 0.13.0"
    version_line.split_whitespace().nth(1) == Some(BPF_LINKER_VERSION)
}

/// bpf-linker built against the stable Rust toolchain's own libLLVM (there is no system LLVM 22):
/// see shared/notes/bpf-toolchain.md.
fn bpf_linker(force: bool) -> Result<()> {
    let cargo_home = util::cargo_home()?;
    let cargo_bin = cargo_home.join("bin");
    match bpf_linker_version(&cargo_bin) {
        Some((exe, version)) if !force && reports_wanted_version(&version) => {
            println!(
                "bpf-linker: {version} already installed ({})",
                exe.display()
            );
            if util::which("bpf-linker").is_none() {
                println!(
                    "bpf-linker: warning: {} is not on PATH; add it (the eBPF build needs it)",
                    cargo_bin.display()
                );
            }
            return Ok(());
        }
        Some((exe, version)) => println!(
            "bpf-linker: {} reports {version:?}; installing {BPF_LINKER_VERSION}{}",
            exe.display(),
            if force { " (--force)" } else { "" }
        ),
        None => println!("bpf-linker: not found or not working; installing {BPF_LINKER_VERSION}"),
    }

    let sysroot = util::output_if_ok(Command::new("rustc").args(["+stable", "--print", "sysroot"]))
        .context("`rustc +stable --print sysroot` failed")?;
    let toolchain_lib = PathBuf::from(sysroot.trim()).join("lib");
    let real = find_rust_libllvm(&toolchain_lib)?;
    println!("bpf-linker: linking against {}", real.display());

    let prefix = cargo_home.join("port25-llvm");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("cannot create {}", prefix_lib.display()))?;
    let link = prefix_lib.join("libLLVM.so");
    if link.symlink_metadata().is_ok() {
        fs::remove_file(&link).with_context(|| format!("cannot remove {}", link.display()))?;
    }
    symlink(&real, &link)
        .with_context(|| format!("cannot link {} -> {}", link.display(), real.display()))?;
    println!("bpf-linker: {} -> {}", link.display(), real.display());

    let install = |locked: bool| {
        let mut cmd = util::cargo();
        cmd.args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--force",
        ])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{LLVM_MAJOR}"))
        .env("LLVM_PREFIX", &prefix)
        .env(
            "RUSTFLAGS",
            format!("-C link-arg=-Wl,-rpath,{}", toolchain_lib.display()),
        );
        if locked {
            cmd.arg("--locked");
        }
        util::status(&mut cmd)
    };
    if !install(true)?.success() {
        println!("bpf-linker: `cargo install --locked` failed; retrying without --locked");
        if !install(false)?.success() {
            bail!("cargo install bpf-linker {BPF_LINKER_VERSION} failed (see the output above)");
        }
    }

    match bpf_linker_version(&cargo_bin) {
        Some((_, version)) if reports_wanted_version(&version) => {
            println!("bpf-linker: installed: {version}");
            Ok(())
        }
        Some((exe, version)) => bail!(
            "bpf-linker was installed but {} reports {version:?} (another bpf-linker earlier on \
             PATH?)",
            exe.display()
        ),
        None => bail!("bpf-linker was installed but `bpf-linker --version` does not run"),
    }
}

/// The real libLLVM shared object of a Rust toolchain (`libLLVM.so.<ver>-rust-<ver>`, not the
/// `libLLVM-<major>-rust-*.so` linker script beside it), checked to be LLVM `LLVM_MAJOR`.
fn find_rust_libllvm(toolchain_lib: &Path) -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = fs::read_dir(toolchain_lib)
        .with_context(|| format!("cannot read {}", toolchain_lib.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .collect();
    candidates.sort();
    let Some(real) = candidates.into_iter().next() else {
        bail!(
            "no libLLVM.so.*-rust-* in {}: the stable toolchain ships no libLLVM to link \
             bpf-linker against",
            toolchain_lib.display()
        );
    };
    let name = real
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let major = name
        .trim_start_matches("libLLVM.so.")
        .split(['.', '-'])
        .next()
        .unwrap_or_default();
    if major != LLVM_MAJOR {
        bail!(
            "the stable toolchain ships LLVM {major} ({name}) but this setup builds bpf-linker \
             {BPF_LINKER_VERSION} with feature llvm-{LLVM_MAJOR}: update xtask/src/setup.rs for \
             the new toolchain"
        );
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_line() {
        assert!(reports_wanted_version("bpf-linker 0.13.0"));
        assert!(!reports_wanted_version("bpf-linker 0.12.3"));
        assert!(!reports_wanted_version(""));
    }

    #[test]
    fn finds_the_real_libllvm_not_the_linker_script() {
        let dir = std::env::temp_dir().join(format!("xtask-libllvm-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("libLLVM-22-rust-1.95.0-stable.so"), "INPUT(...)").unwrap();
        fs::write(dir.join("libLLVM.so.22.1-rust-1.95.0-stable"), "").unwrap();
        let found = find_rust_libllvm(&dir);
        let wrong = dir.join("other");
        fs::create_dir_all(&wrong).unwrap();
        fs::write(wrong.join("libLLVM.so.23.1-rust-1.99.0-stable"), "").unwrap();
        let mismatch = find_rust_libllvm(&wrong);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            found.unwrap(),
            dir.join("libLLVM.so.22.1-rust-1.95.0-stable")
        );
        assert!(mismatch.unwrap_err().to_string().contains("LLVM 23"));
    }
}
