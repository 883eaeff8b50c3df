//! The `port25d` binary as an operator meets it: exit codes and the words it prints.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{path::PathBuf, process::Command};

use port25_testkit::assert_mentions;

fn port25d(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_port25d"))
        .args(args)
        .env("PORT25_LOG", "warn")
        .output()
        .expect("port25d runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config file in a fresh directory, removed at the end of the test.
struct TempConfig {
    dir: PathBuf,
    path: PathBuf,
}

impl TempConfig {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("port25-cli-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("port25.toml");
        std::fs::write(&path, text).unwrap();
        Self { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `port25d args`, asserts it exits 0 and prints each of `says` on stdout.
fn succeeds(args: &[&str], says: &[&str]) {
    let (code, stdout, stderr) = port25d(args);
    assert_eq!(code, 0, "port25d {args:?}: stderr: {stderr}");
    assert_mentions(&stdout, says);
}

/// Runs `port25d args`, asserts it exits 1, without a panic, and says each of `says` on stderr.
fn fails(args: &[&str], says: &[&str]) {
    let (code, stdout, stderr) = port25d(args);
    assert_eq!(code, 1, "port25d {args:?}: stdout: {stdout}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert_mentions(&stderr, says);
}

#[test]
fn check_config_prints_the_effective_policy() {
    let config = TempConfig::new(
        "good",
        "interfaces = [\"lo\"]\npolicy = \"drop\"\nports = [25, 2525]\n[allow]\ncidrs = [\"198.18.0.0/24\", \"2001:db8::/48\"]\n",
    );
    succeeds(
        &["check-config", "--config", config.path()],
        &[
            "198.18.0.0/24",
            "2001:db8::/48",
            "25, 2525",
            "drop",
            "configuration OK",
        ],
    );
}

#[test]
fn check_config_without_file_shows_the_embedded_default() {
    // Only meaningful where no /etc/port25/port25.toml exists (CI machines and labs).
    if std::path::Path::new("/etc/port25/port25.toml").exists() {
        panic!(
            "/etc/port25/port25.toml exists on this machine; this test checks the embedded default"
        );
    }
    succeeds(&["check-config"], &["<embedded default>", "ratelimit"]);
}

#[test]
fn check_config_names_file_line_and_reason() {
    let config = TempConfig::new(
        "bad-cidr",
        "policy = \"drop\"\n\n[allow]\ncidrs = [\n  \"198.18.0.0/24\",\n  \"198.18.0.1/24\",\n]\n",
    );
    let expected = format!(
        "{}:6: allow.cidrs: host bits set in 198.18.0.1/24; did you mean 198.18.0.0/24?",
        config.path()
    );
    fails(&["check-config", "--config", config.path()], &[&expected]);
}

#[test]
fn check_config_rejects_an_unknown_interface() {
    let config = TempConfig::new("iface", "interfaces = [\"p25nosuch0\"]\n");
    fails(
        &["check-config", "--config", config.path()],
        &["\"p25nosuch0\" does not exist", "ip link"],
    );
}

#[test]
fn check_config_reports_an_unreadable_file() {
    fails(
        &["check-config", "--config", "/nonexistent/port25.toml"],
        &["/nonexistent/port25.toml: cannot read config file"],
    );
}

#[test]
fn run_refuses_to_start_without_an_interface() {
    let config = TempConfig::new("noiface", "policy = \"drop\"\n");
    fails(
        &["run", "--config", config.path()],
        &["no interface to protect; pass --iface IF"],
    );
}

#[test]
fn run_refuses_a_bad_config_before_touching_the_kernel() {
    let config = TempConfig::new("badport", "ports = [0]\n");
    fails(
        &["run", "--config", config.path(), "--iface", "lo"],
        &[":1: ports: 0 is out of range; use a port from 1 to 65535"],
    );
}

/// The systemd unit leaves the pin directory behind, empty (its bind mount point inside the
/// service): `port25d detach` finds nothing to detach there, says so, and removes it.
#[test]
fn detach_takes_an_empty_pin_directory_for_nothing_to_detach() {
    let work = TempConfig::new("detach-empty", "");
    let pins = work.dir.join("pins");
    std::fs::create_dir(&pins).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_port25d"))
        .args(["detach", "--pin-dir", pins.to_str().unwrap()])
        // libxdp's pins: none, in a directory of the test's own.
        .env("LIBXDP_BPFFS", &work.dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_mentions(&stdout, &["nothing to detach: no pins in"]);
    assert!(!pins.exists(), "the empty directory goes");
}
