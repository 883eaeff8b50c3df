//! What port25's builds, tests, lab and bench need on this machine, installed when missing:
//! Debian packages, rust-src, bpf-linker, bpffs. `cargo xtask setup` does all of it ahead of time;
//! `cargo xtask build|run|test|bench|package` each ensure what they need themselves, saying what
//! they install. Every step is idempotent, and the set-up ends with a self-check that exercises
//! what the tests rely on and names the package when something does not work.

mod toolchain;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use self::toolchain::{bpf_linker, rust_src};
use crate::packages::Scope;
use crate::packages::{Check, Package, packages};
use crate::util;

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
