//! `cargo xtask run`, as a newcomer meets it: the lab it makes is a lab. Every command it prints
//! works exactly as printed against the running lab (run in the printed order, as a person types
//! them), its deny hint really stops mail, and once it exits nothing of the lab is left (no
//! namespace, no /run/port25-lab) while nothing of a real port25d's (/run/port25,
//! /var/lib/port25) was touched. Needs root; `cargo xtask test` runs it.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const LAB_DIR: &str = "/run/port25-lab";
const LAB_NAMESPACES: [&str; 2] = ["p25-run-gw", "p25-run-client"];
/// A real port25d's control socket directory and state: the lab must not touch them.
const HOST_PLACES: [&str; 2] = ["/run/port25", "/var/lib/port25"];

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Every file below `path` with its contents; `None` when `path` does not exist.
fn snapshot(path: &Path) -> Option<BTreeMap<PathBuf, Vec<u8>>> {
    fn walk(path: &Path, into: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(meta) = fs::symlink_metadata(path) else {
            return;
        };
        if meta.is_dir() {
            for entry in fs::read_dir(path).into_iter().flatten().flatten() {
                walk(&entry.path(), into);
            }
        } else {
            into.insert(path.to_path_buf(), fs::read(path).unwrap_or_default());
        }
    }
    fs::symlink_metadata(path).ok()?;
    let mut files = BTreeMap::new();
    walk(path, &mut files);
    Some(files)
}

/// `cargo xtask run`, stopped (SIGTERM, as Ctrl-C from another terminal) when dropped.
struct Xtask(Option<Child>);

impl Xtask {
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.0.take()?;
        // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Xtask {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs one printed command through a shell, as pasted into a terminal, bounded in time; returns
/// whether it exited 0, and what it printed.
fn run_hint(command: &str, out: &Path) -> (bool, String) {
    let file = fs::File::create(out).unwrap();
    let status = Command::new("timeout")
        .args(["30", "sh", "-c", command])
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .status()
        .unwrap();
    (
        status.success(),
        fs::read_to_string(out).unwrap_or_default(),
    )
}

/// The commands of the block xtask prints: `label: command` lines and indented continuations,
/// from `metrics:` to `stop:` (which says Ctrl-C, not a command).
fn hints(lines: &[String]) -> Vec<String> {
    let start = lines
        .iter()
        .position(|l| l.starts_with("metrics:"))
        .unwrap();
    lines[start..]
        .iter()
        .take_while(|l| !l.starts_with("stop:"))
        .map(|line| match line.split_once(':') {
            Some((label, rest)) if !line.starts_with(' ') && !label.contains(' ') => {
                rest.trim().to_owned()
            }
            _ => line.trim().to_owned(),
        })
        .collect()
}

#[test]
fn every_printed_command_works_and_the_lab_leaves_nothing_behind() {
    assert!(
        is_root(),
        "this test needs root: `cargo xtask run` makes namespaces and attaches XDP (run `cargo \
         xtask test`)"
    );
    let before = HOST_PLACES.map(|p| snapshot(Path::new(p)));
    let work = std::env::temp_dir().join(format!("xtask-lab-test-{}", std::process::id()));
    fs::create_dir_all(&work).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["run", "--seconds", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(work.join("xtask.err")).unwrap())
        .spawn()
        .unwrap();
    let mut xtask = Xtask(Some(child));
    let stdout = xtask.0.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.starts_with("stop:")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!(
                "xtask run printed no `stop:` hint within 240 s; its stdout:\n{}\nstderr:\n{}",
                lines.join("\n"),
                fs::read_to_string(work.join("xtask.err")).unwrap_or_default()
            ),
        }
    }
    let hints = hints(&lines);
    assert!(hints.len() >= 7, "too few hints: {hints:?}");
    let swaks_v4 = hints
        .iter()
        .find(|h| h.contains("swaks --server 198.18."))
        .unwrap()
        .clone();

    // The daemon starts right after the hints: wait until the status hint answers.
    let status = hints.iter().find(|h| h.contains(" status ")).unwrap();
    let started = Instant::now();
    while !run_hint(status, &work.join("status.out")).0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the lab daemon never answered `{status}`; xtask's stderr:\n{}",
            fs::read_to_string(work.join("xtask.err")).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(250));
    }

    // Each hint in order, as printed. A person types them one after another; the server started
    // in the background gets up to 5 s before the next one counts as failed.
    for (i, hint) in hints.iter().enumerate() {
        let out = work.join(format!("hint-{i}.out"));
        let tried = Instant::now();
        let (ok, said) = loop {
            let (ok, said) = run_hint(hint, &out);
            if ok || tried.elapsed() > Duration::from_secs(5) {
                break (ok, said);
            }
            thread::sleep(Duration::from_millis(250));
        };
        assert!(ok, "printed hint failed: `{hint}`\n{said}");
        println!("ok: {hint}");
        if hint.contains(" status ") {
            assert!(
                said.contains("gw0"),
                "status names the lab's interface: {said}"
            );
        }
        if hint.contains("/metrics") {
            assert!(said.contains("port25_attached"), "{said}");
        }
    }
    // The deny hint came last, and says swaks is then refused: it is (the SYNs are dropped, so
    // swaks is told to give up after 5 s rather than its default 30).
    let (delivered, said) = run_hint(
        &format!("{swaks_v4} --timeout 5"),
        &work.join("after-deny.out"),
    );
    assert!(
        !delivered,
        "swaks still delivered after the deny hint:\n{said}"
    );

    let stopped = xtask.stop();
    assert!(
        stopped.is_some_and(|s| s.success()),
        "xtask run did not stop cleanly on SIGTERM ({stopped:?}); stderr:\n{}",
        fs::read_to_string(work.join("xtask.err")).unwrap_or_default()
    );
    for ns in LAB_NAMESPACES {
        assert!(
            !Path::new("/run/netns").join(ns).exists(),
            "namespace {ns} left behind"
        );
    }
    assert!(!Path::new(LAB_DIR).exists(), "{LAB_DIR} left behind");
    let after = HOST_PLACES.map(|p| snapshot(Path::new(p)));
    assert_eq!(
        before, after,
        "the lab touched a real port25d's socket directory or state ({HOST_PLACES:?})"
    );
    let _ = fs::remove_dir_all(&work);
}
