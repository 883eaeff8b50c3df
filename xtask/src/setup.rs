//! What port25's builds, tests, lab and bench need on this machine, installed when missing:
//! Debian packages, rust-src, bpf-linker, bpffs. `cargo xtask setup` does all of it ahead of time;
//! `cargo xtask build|run|test|bench|package` each ensure what they need themselves, saying what
//! they install. Every step is idempotent, and the set-up ends with a self-check that exercises
//! what the tests rely on and names the package when something does not work.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::packages::{Check, Package, packages};
use crate::util;

/// What a command needs beyond the build tools.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// `cargo xtask run`'s lab and the commands it prints.
    Lab,
    /// Tests, bench and packaging: every package of `packages.rs`.
    Everything,
}

/// `cargo xtask setup`: everything, ahead of time, then the self-check.
pub(crate) fn setup(force_bpf_linker: bool) -> Result<()> {
    if !util::is_root() {
        bail!(
            "cargo xtask setup needs root: it installs Debian packages with apt-get and mounts \
             bpffs; run it with sudo"
        );
    }
    ensure(Scope::Everything)?;
    if force_bpf_linker {
        bpf_linker(true)?;
    }
    eprintln!("setup: done");
    Ok(())
}

/// What `scope` needs, installed where missing and checked: Debian packages, the build tools,
/// bpffs (for tests). Needs root.
pub(crate) fn ensure(scope: Scope) -> Result<()> {
    debian_packages(scope)?;
    ensure_build_tools()?;
    if scope == Scope::Everything {
        util::ensure_bpffs()?;
    }
    self_check(scope)
}

/// What building port25d needs (rust-src for the stable toolchain, bpf-linker), installed where
/// missing; no root needed. Once per xtask run.
pub(crate) fn ensure_build_tools() -> Result<()> {
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.get().is_some() {
        return Ok(());
    }
    rust_src()?;
    bpf_linker(false)?;
    let _ = DONE.set(());
    Ok(())
}

fn deb_installed(package: &str) -> bool {
    // `${Status}` is "want flag status", e.g. "install ok installed" or "deinstall ok config-files".
    util::output_if_ok(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status.split_whitespace().nth(2) == Some("installed"))
}

fn debian_packages(scope: Scope) -> Result<()> {
    let wanted: Vec<&Package> = packages(scope).collect();
    let missing: Vec<&Package> = wanted
        .iter()
        .copied()
        .filter(|p| !deb_installed(p.name))
        .collect();
    if missing.is_empty() {
        eprintln!(
            "apt: the {} Debian packages needed are installed",
            wanted.len()
        );
        return Ok(());
    }
    for package in &missing {
        eprintln!(
            "apt: missing {} ({}): installing it",
            package.name, package.why
        );
    }
    if !util::is_root() {
        bail!(
            "installing Debian packages needs root: run `sudo cargo xtask setup`, or `apt-get \
             install {}` yourself",
            names(&missing)
        );
    }
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    if missing.iter().any(|p| p.name == "crowdsec") {
        crowdsec_offline()?;
    }
    let (plain, backports) = split_by_suite(&missing)?;
    util::run(&mut apt(&["update"]))?;
    // --no-remove: on a mail gateway, installing postfix must never replace the MTA it runs.
    let install = |suite: Option<&str>, packages: &[&Package]| {
        let mut install = apt(&["install", "-y", "--no-install-recommends", "--no-remove"]);
        if let Some(suite) = suite {
            // The target release for these packages and what they pull in, in this call only.
            install.args(["-t", suite]);
        }
        install.args(packages.iter().map(|p| p.name));
        util::run(&mut install).with_context(|| {
            format!(
                "apt-get could not install {} (if it would have to remove packages, such as \
                 another MTA in place of postfix, install them by hand on a machine for tests)",
                names(packages)
            )
        })
    };
    if !plain.is_empty() {
        install(None, &plain)?;
    }
    if let Some((suite, packages)) = &backports {
        install(Some(suite), packages)?;
    }
    let still_missing: Vec<&Package> = missing
        .into_iter()
        .filter(|p| !deb_installed(p.name))
        .collect();
    if !still_missing.is_empty() {
        bail!(
            "apt-get ran but these are still not installed: {}",
            names(&still_missing)
        );
    }
    Ok(())
}

/// Debian's crowdsec registers with CrowdSec's online API on installation unless
/// `/etc/crowdsec/online_api_credentials.yaml` already holds a comment line (its README.Debian):
/// the tests run a Local API of their own, offline, and this machine reaches no such service.
fn crowdsec_offline() -> Result<()> {
    let path = Path::new("/etc/crowdsec/online_api_credentials.yaml");
    if path.exists() {
        return Ok(());
    }
    eprintln!("apt: crowdsec installs offline: writing {}", path.display());
    std::fs::create_dir_all("/etc/crowdsec").context("creating /etc/crowdsec")?;
    std::fs::write(
        path,
        "# port25's tests run a CrowdSec Local API of their own, offline (README.Debian)\n",
    )
    .with_context(|| format!("writing {}", path.display()))
}

/// Packages that must come from the suite an installed sibling came from: Debian's images for
/// bookworm ship qemu-utils from bookworm-backports, whose version Breaks bookworm's own
/// qemu-system-common, so bookworm's qemu-system-x86 could only go in by removing qemu-utils.
const SAME_SUITE_AS: &[(&str, &str)] = &[("qemu-system-x86", "qemu-utils")];

/// Packages from the release's own suites, and those from its backports suite (named).
type BySuite<'a> = (Vec<&'a Package>, Option<(String, Vec<&'a Package>)>);

/// The missing packages apt takes from the release's own suites, and those that must come from
/// its backports suite (with that suite's name) because their sibling in `SAME_SUITE_AS` was
/// installed from there. The backports source is added if the machine has none; backports are
/// NotAutomatic, so nothing else comes from it unless asked for.
fn split_by_suite<'a>(missing: &[&'a Package]) -> Result<BySuite<'a>> {
    let mut plain = Vec::new();
    let mut backports: Option<(String, Vec<&Package>)> = None;
    for &package in missing {
        let sibling = SAME_SUITE_AS
            .iter()
            .find(|(name, _)| *name == package.name)
            .map(|(_, sibling)| *sibling);
        let from_backports = sibling.filter(|sibling| {
            util::output_if_ok(Command::new("dpkg-query").args(["-W", "-f=${Version}", sibling]))
                .is_some_and(|version| version.contains("~bpo"))
        });
        let Some(sibling) = from_backports else {
            plain.push(package);
            continue;
        };
        let (suite, packages) = match &mut backports {
            Some(found) => found,
            None => backports.insert((backports_source()?, Vec::new())),
        };
        eprintln!(
            "apt: {sibling} is installed from {suite}: {} comes from there too",
            package.name
        );
        packages.push(package);
    }
    Ok((plain, backports))
}

/// The backports suite of this Debian release, with an apt source for it (added if missing).
fn backports_source() -> Result<String> {
    let os_release = fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    let codename = os_release
        .lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
        .map(|value| value.trim_matches('"').to_owned())
        .filter(|codename| !codename.is_empty())
        .context("/etc/os-release names no VERSION_CODENAME: add this release's backports to apt's sources by hand")?;
    let suite = format!("{codename}-backports");
    let policy = util::output_if_ok(Command::new("apt-cache").arg("policy")).unwrap_or_default();
    if policy.contains(&format!("{suite}/")) || policy.contains(&format!("a={suite},")) {
        return Ok(suite);
    }
    let path = "/etc/apt/sources.list.d/port25-backports.sources";
    eprintln!("apt: no source for {suite}: adding {path}");
    fs::write(
        path,
        format!(
            "# Added by port25's `cargo xtask setup`: QEMU to match the installed qemu-utils.\n\
             Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {suite}\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        ),
    )
    .with_context(|| format!("writing {path}"))?;
    Ok(suite)
}

fn names(packages: &[&Package]) -> String {
    packages
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Exercises each package the way the tests use it, and swaks and smtp-sink together over IPv4
/// and IPv6; fails naming the package of everything that does not work.
fn self_check(scope: Scope) -> Result<()> {
    let mut broken = Vec::new();
    let mut checked = 0;
    for package in packages(scope) {
        checked += 1;
        let works = match package.check {
            Check::Runs(argv) => {
                util::output_if_ok(Command::new(argv[0]).args(&argv[1..])).is_some()
            }
            Check::Installed(program) => util::which(program).is_some(),
        };
        if !works {
            let what = match package.check {
                Check::Runs(argv) => format!("`{}` fails", argv.join(" ")),
                Check::Installed(program) => format!("{program} is not on PATH"),
            };
            broken.push(format!(
                "  {}: {what} ({}); `apt-get install --reinstall {}`",
                package.name, package.why, package.name
            ));
        }
    }
    match smtp_round_trip() {
        Ok(()) => {}
        Err(err) => broken.push(format!("  {err:#}")),
    }
    if !broken.is_empty() {
        bail!(
            "self-check: what the tests and the lab use does not work:\n{}",
            broken.join("\n")
        );
    }
    eprintln!(
        "self-check: {checked} packages work; swaks delivered to smtp-sink over IPv4 and IPv6"
    );
    Ok(())
}

/// A namespace of the self-check's own, deleted with whatever still runs in it.
struct CheckNs {
    name: String,
    sinks: Vec<Child>,
}

impl Drop for CheckNs {
    fn drop(&mut self) {
        for sink in &mut self.sinks {
            let _ = sink.kill();
            let _ = sink.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// One message from swaks to smtp-sink over IPv4 and one over IPv6, on the loopback of a namespace
/// made for it, as the netns labs deliver mail.
fn smtp_round_trip() -> Result<()> {
    let name = format!("p25-selfcheck-{}", std::process::id());
    util::output_if_ok(Command::new("ip").args(["netns", "add", &name]))
        .with_context(|| format!("iproute2: `ip netns add {name}` fails (are you root?)"))?;
    let mut ns = CheckNs {
        name: name.clone(),
        sinks: Vec::new(),
    };
    util::output_if_ok(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]))
        .context("iproute2: cannot bring up lo in the self-check namespace")?;
    let in_ns = |program: &str| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &name, program]);
        cmd
    };
    for (listen, server, package) in [
        (
            "127.0.0.1:2525",
            "127.0.0.1",
            "swaks or postfix (smtp-sink)",
        ),
        (
            "[::1]:2525",
            "::1",
            "libio-socket-inet6-perl (swaks over IPv6)",
        ),
    ] {
        let sink = in_ns("smtp-sink")
            .args(["-u", "nobody", listen, "10"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("postfix: cannot start smtp-sink")?;
        ns.sinks.push(sink);
        // smtp-sink listens within milliseconds; give it up to 5 s on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(5);
        let delivered = loop {
            let out = in_ns("swaks")
                .args(["--server", server, "--port", "2525", "--timeout", "5"])
                .args(["--from", "a@example.org", "--to", "b@example.net"])
                .stdin(Stdio::null())
                .output()
                .context("swaks: cannot start swaks")?;
            if out.status.success() {
                break Ok(());
            }
            if Instant::now() >= deadline {
                let said = String::from_utf8_lossy(&out.stdout);
                let last = said.lines().last().unwrap_or_default().to_owned();
                break Err(last);
            }
            thread::sleep(Duration::from_millis(200));
        };
        if let Err(last) = delivered {
            bail!("{package}: swaks could not deliver to smtp-sink on {listen}: {last}");
        }
    }
    Ok(())
}

const BPF_LINKER_VERSION: &str = "0.13.0";
/// The LLVM major version of the stable toolchain, which bpf-linker must link against.
const LLVM_MAJOR: &str = "22";

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
fn bpf_linker(force: bool) -> Result<()> {
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
