//! The Rust side of the eBPF build: the toolchain's rust-src, and a bpf-linker built against
//! the toolchain's own LLVM.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

const BPF_LINKER_VERSION: &str = "0.13.0";
/// The LLVM major version of the stable toolchain, which bpf-linker must link against.
const LLVM_MAJOR: &str = "22";

pub(super) fn rust_src() -> Result<()> {
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
        eprintln!("rustup: rust-src is installed for stable");
        return Ok(());
    }
    eprintln!("rustup: missing rust-src (the eBPF build compiles core from it): installing it");
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
pub(super) fn bpf_linker(force: bool) -> Result<()> {
    let cargo_home = util::cargo_home()?;
    let cargo_bin = cargo_home.join("bin");
    match bpf_linker_version(&cargo_bin) {
        Some((exe, version)) if !force && reports_wanted_version(&version) => {
            eprintln!("bpf-linker: {version} is installed ({})", exe.display());
            if util::which("bpf-linker").is_none() {
                eprintln!(
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
    eprintln!("bpf-linker: linking against {}", real.display());

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
    eprintln!("bpf-linker: {} -> {}", link.display(), real.display());

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
        eprintln!("bpf-linker: `cargo install --locked` failed; retrying without --locked");
        if !install(false)?.success() {
            bail!("cargo install bpf-linker {BPF_LINKER_VERSION} failed (see the output above)");
        }
    }

    match bpf_linker_version(&cargo_bin) {
        Some((_, version)) if reports_wanted_version(&version) => {
            eprintln!("bpf-linker: installed: {version}");
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
