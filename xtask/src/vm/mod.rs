//! `cargo xtask vm`: the root-only integration tests on the kernels mail gateways run, each in a
//! QEMU guest booted straight into an initramfs that holds the test binaries, port25d and what
//! they run, with a result line a test binary on the serial console and a summary at the end.

mod initramfs;
mod kernel;
mod qemu;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use self::initramfs::Initramfs;
use self::kernel::Kernel;
pub(crate) use self::qemu::Accel;
use crate::packages::Scope;
use crate::setup;
use crate::util;

/// A test binary of port25-tests that runs in the guest: the programs it runs (copied from this
/// host with their libraries), whether it needs the SMTP labs' tools and the files they read, and
/// the modules it needs.
struct Suite {
    name: &'static str,
    tools: &'static [&'static str],
    /// Files and directories of the host the suite reads, copied to the same path in the guest.
    files: &'static [&'static str],
    smtp: bool,
    modules: &'static [&'static str],
}

/// The SMTP labs' programs: swaks is Perl (with IO::Socket::INET6), smtp-sink Postfix's.
const SMTP_TOOLS: &[&str] = &[
    "ip",
    "ss",
    "curl",
    "smtp-sink",
    "swaks",
    "perl",
    "tcpdump",
    "timeout",
];
/// What Perl and the lab tools read: the module trees, users, services.
const SMTP_FILES: &[&str] = &[
    "/usr/share/perl5",
    "/usr/lib/x86_64-linux-gnu/perl5",
    "/usr/lib/x86_64-linux-gnu/perl-base",
    "/usr/lib/x86_64-linux-gnu/perl",
    "/usr/share/perl",
    "/etc/perl",
    "/etc/postfix",
    "/etc/passwd",
    "/etc/group",
    "/etc/services",
    "/etc/protocols",
    "/etc/hosts",
];
const LAB_MODULES: &[&str] = &["veth", "bridge", "sch_ingress", "cls_bpf"];

/// The canary's suite (`tests/tests/canary.rs`): run when `--canary` is given.
const CANARY: Suite = Suite {
    name: "canary",
    tools: &[],
    files: &[],
    smtp: false,
    modules: &[],
};

/// The suites that can run in a guest; under TCG a guest is 10-15 times slower than the host.
const SUITES: &[Suite] = &[
    CANARY,
    Suite {
        name: "verdicts",
        tools: &[],
        files: &[],
        smtp: false,
        modules: &[],
    },
    Suite {
        name: "attach",
        tools: &["ip", "curl", "tc"],
        // libxdp's dispatcher, which the component test loads.
        files: &["/usr/lib/x86_64-linux-gnu/bpf/xdp-dispatcher.o"],
        smtp: false,
        modules: LAB_MODULES,
    },
    Suite {
        name: "coexist",
        tools: &[
            "ip",
            "curl",
            "bpftool",
            "xdp-filter",
            "xdp-loader",
            "unshare",
            "nsenter",
            "timeout",
            "mount",
        ],
        // libxdp's dispatcher and xdp-filter's programs, which xdp-loader and port25d load.
        files: &["/usr/lib/x86_64-linux-gnu/bpf"],
        smtp: false,
        modules: LAB_MODULES,
    },
    Suite {
        name: "operations",
        // The safety tests: a closed pipe's exit code (PIPESTATUS), a client run as nobody; the
        // shadow policy's: what the maps hold once it is dropped.
        tools: &["bash", "setpriv", "bpftool"],
        files: &[],
        smtp: true,
        modules: LAB_MODULES,
    },
    Suite {
        name: "egress",
        tools: &["bpftool", "unshare", "nsenter", "sysctl", "mount"],
        files: &[],
        smtp: true,
        modules: LAB_MODULES,
    },
];

/// What `--tests` runs when not given.
pub(crate) const DEFAULT_TESTS: &str = "verdicts,attach,coexist,operations,egress";

pub(crate) struct Options {
    pub(crate) kernels: Vec<String>,
    pub(crate) modules: Option<PathBuf>,
    pub(crate) tests: String,
    pub(crate) accel: Accel,
    /// Kernels (release prefixes) on which the canary test must fail: proves the matrix can.
    pub(crate) canary: Option<String>,
    /// Per-kernel limit.
    pub(crate) timeout: Duration,
}

pub(crate) fn vm(options: &Options) -> Result<ExitCode> {
    if !util::is_root() {
        bail!("cargo xtask vm needs root: apt-get download and the test binaries' own checks");
    }
    setup::ensure(Scope::Everything)?;
    let mut suites: Vec<&Suite> = options
        .tests
        .split(',')
        .map(|name| {
            SUITES
                .iter()
                .find(|s| s.name == name.trim())
                .with_context(|| {
                    let known: Vec<&str> = SUITES.iter().map(|s| s.name).collect();
                    format!(
                        "--tests {name}: no such suite here; these run in a VM: {}",
                        known.join(", ")
                    )
                })
        })
        .collect::<Result<_>>()?;
    if options.canary.is_some() && !suites.iter().any(|s| s.name == CANARY.name) {
        suites.push(&CANARY);
    }
    let cache = util::workspace_root().join("target/vm");
    let kernels: Vec<Kernel> = options
        .kernels
        .iter()
        .map(|spec| kernel::resolve(spec, options.modules.as_deref(), &cache.join("kernels")))
        .collect::<Result<_>>()?;
    let port25d = crate::daemon::build(false)?;
    let Built { binaries, helpers } = build_tests(&suites)?;
    let accel = options.accel.resolve();
    eprintln!("vm: accelerator {accel:?}");

    let mut summary = Vec::new();
    for kernel in &kernels {
        let dir = cache.join("runs").join(&kernel.name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let initrd = dir.join("initramfs.cpio");
        let modules: Vec<&str> = suites
            .iter()
            .flat_map(|s| s.modules.iter().copied())
            .collect();
        let loaded = kernel::modules(kernel, &modules, &dir.join("modules"))?;
        let mut image = Initramfs::default();
        let scratch = dir.join("stripped");
        fs::create_dir_all(&scratch)?;
        image.add_file("/bin/busybox", Path::new("/bin/busybox"))?;
        image.add_program("/usr/sbin/port25d", &port25d, &scratch)?;
        for suite in &suites {
            let (smtp_tools, smtp_files) = if suite.smtp {
                (SMTP_TOOLS, SMTP_FILES)
            } else {
                (&[][..], &[][..])
            };
            for tool in suite.tools.iter().chain(smtp_tools) {
                let host = util::which(tool).with_context(|| format!("{tool} is not installed"))?;
                image.add_program(&host.display().to_string(), &host, &scratch)?;
            }
            for path in smtp_files {
                image.add_tree(Path::new(path), &scratch)?;
            }
            for path in suite.files {
                image.add_tree(Path::new(path), &scratch)?;
            }
        }
        for (name, binary) in &binaries {
            image.add_program(&format!("/tests/{name}"), binary, &scratch)?;
        }
        // Helpers the tests find where cargo built them (env!("CARGO_BIN_EXE_…")).
        for helper in &helpers {
            image.add_program(&helper.display().to_string(), helper, &scratch)?;
        }
        let mut order = String::new();
        for module in &loaded {
            let file = module
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            image.add_file(&format!("/lib/modules/{file}"), module)?;
            let _ = writeln!(order, "{file}");
        }
        image.add("/lib/modules/order", order.into_bytes(), 0o644);
        let names: Vec<&str> = binaries.iter().map(|(n, _)| n.as_str()).collect();
        image.add(
            "/init",
            init_script(&names, options.canary.as_deref()).into_bytes(),
            0o755,
        );
        image.write(&initrd)?;

        eprintln!(
            "vm: booting {} ({} test binaries)",
            kernel.name,
            names.len()
        );
        let log = dir.join("console.log");
        let run = qemu::boot(&kernel.vmlinuz, &initrd, accel, options.timeout, &log)?;
        eprintln!("vm: {}: console in {}", kernel.name, log.display());
        summary.push((kernel.name.clone(), names.len(), run));
    }
    let (table, failed) = report(&summary);
    print!("{table}");
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What `cargo test --no-run` built for the guests.
struct Built {
    /// (suite, test executable).
    binaries: Vec<(String, PathBuf)>,
    /// The package's own programs that the tests run (its `src/bin`).
    helpers: Vec<PathBuf>,
}

/// Builds the suites' test binaries (`cargo test --no-run`): (suite, executable), and the
/// package's own programs that they run (its `src/bin`).
fn build_tests(suites: &[&Suite]) -> Result<Built> {
    let mut cmd = util::cargo();
    cmd.args([
        "test",
        "-p",
        "port25-tests",
        "--no-run",
        "--message-format=json",
    ]);
    for suite in suites {
        cmd.args(["--test", suite.name]);
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut found = Vec::new();
    let mut helpers = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(name), Some(executable)) = (
            message.pointer("/target/name").and_then(|n| n.as_str()),
            message.get("executable").and_then(|e| e.as_str()),
        ) else {
            continue;
        };
        let is_bin = message
            .pointer("/target/kind")
            .and_then(|k| k.as_array())
            .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
        if is_bin {
            helpers.push(PathBuf::from(executable));
        } else if suites.iter().any(|s| s.name == name) {
            found.push((name.to_owned(), PathBuf::from(executable)));
        }
    }
    if found.len() != suites.len() {
        bail!(
            "cargo test --no-run built {} of {} test binaries",
            found.len(),
            suites.len()
        );
    }
    Ok(Built {
        binaries: found,
        helpers,
    })
}

/// The guest's init: mounts, modules, one result line a test binary, power off. /tmp stays the
/// initramfs's own (already a writable tmpfs): a tmpfs mounted there would hide programs the tests
/// run from where cargo built them, as in a clone under /tmp.
fn init_script(binaries: &[&str], canary: Option<&str>) -> String {
    let canary = canary
        .map(|c| format!("export PORT25_VM_CANARY={c}\n"))
        .unwrap_or_default();
    let mut script = format!(
        r#"#!/bin/busybox sh
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s /bin
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t bpf bpf /sys/fs/bpf
mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup
while read -r module; do insmod "/lib/modules/$module" || echo "P25VM-MODULE $module failed"; done < /lib/modules/order
ip link set lo up
export PORT25D=/usr/sbin/port25d
{canary}echo "P25VM-KERNEL $(uname -r)"
"#
    );
    for name in binaries {
        let _ = writeln!(
            script,
            "echo \"{}{name}\"\n/tests/{name} --test-threads=1\necho \"{}{name} $?\"",
            qemu::START,
            qemu::RESULT
        );
    }
    let _ = writeln!(script, "echo {}\npoweroff -f", qemu::DONE);
    script
}

/// The summary table, and whether any kernel failed.
fn report(runs: &[(String, usize, qemu::Run)]) -> (String, bool) {
    let mut out = String::from(
        "\n| kernel | test binaries | passed | failed | time | notes |\n|---|---:|---:|---:|---:|---|\n",
    );
    let mut any_failed = false;
    for (kernel, expected, run) in runs {
        let passed = run.results.iter().filter(|(_, code)| *code == 0).count();
        let failed: Vec<String> = run
            .results
            .iter()
            .filter(|(_, code)| *code != 0)
            .map(|(binary, _)| {
                let tests: Vec<&str> = run
                    .failed_tests
                    .iter()
                    .filter(|(b, _)| b == binary)
                    .map(|(_, test)| test.as_str())
                    .collect();
                format!("{binary} ({})", tests.join(", "))
            })
            .collect();
        let mut notes = Vec::new();
        if !failed.is_empty() {
            notes.push(format!("failed: {}", failed.join(", ")));
        }
        if let Some(name) = &run.unfinished {
            notes.push(format!("{name} never finished"));
        }
        if !run.finished {
            notes.push("the guest did not reach the end (timeout or crash)".to_owned());
        }
        if let Some(alarm) = run.alarms.first() {
            notes.push(format!("kernel: {alarm}"));
        }
        let bad = !notes.is_empty() || passed != *expected;
        any_failed |= bad;
        let _ = writeln!(
            out,
            "| {kernel} | {expected} | {passed} | {} | {:.0} s | {} |",
            failed.len(),
            run.elapsed.as_secs_f64(),
            if notes.is_empty() {
                "ok".to_owned()
            } else {
                notes.join("; ")
            }
        );
    }
    (out, any_failed)
}
