//! Small helpers shared by the subcommands: where the workspace is, which cargo to run, running
//! commands visibly, finding programs on PATH, root checks and bpffs.

use std::env;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use anyhow::{Context, Result, bail};

/// The workspace root: xtask lives in `<root>/xtask`.
pub(crate) fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// A `cargo` command run from the workspace root: the cargo that runs xtask (`$CARGO`), else the one
/// on PATH.
pub(crate) fn cargo() -> Command {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// `$CARGO_HOME`, else `~/.cargo`.
pub(crate) fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    let home = env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

/// Puts where the tools xtask installs or runs live on PATH, if missing: `$CARGO_HOME/bin`
/// (bpf-linker) and the sbin directories (smtp-sink is in /usr/sbin), for xtask and everything
/// it starts, whatever the caller's PATH.
pub(crate) fn complete_path() {
    let current = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&current).collect();
    let mut wanted: Vec<PathBuf> = cargo_home().map(|h| h.join("bin")).into_iter().collect();
    wanted.extend(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    let before = dirs.len();
    for dir in wanted {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    if dirs.len() == before {
        return;
    }
    if let Ok(path) = env::join_paths(dirs) {
        // SAFETY: called first thing in main, before xtask starts any thread.
        unsafe { env::set_var("PATH", path) };
    }
}

/// The command line as a shell user would type it (for logs), with the environment it sets.
pub(crate) fn display(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())))
        .collect();
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` with inherited stdio, echoing it first (on stderr, so that stdout stays for results
/// such as the path `cargo xtask build` prints); returns its exit status.
pub(crate) fn status(cmd: &mut Command) -> Result<ExitStatus> {
    eprintln!("+ {}", display(cmd));
    cmd.status()
        .with_context(|| format!("cannot start `{}`", display(cmd)))
}

/// Runs `cmd` with inherited stdio, echoing it first; fails unless it exits 0.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let st = status(cmd)?;
    if !st.success() {
        bail!("`{}` failed ({st})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout if it exits 0, `None` if it fails or cannot start.
pub(crate) fn output_if_ok(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(std::process::Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first executable file called `name` in PATH.
pub(crate) fn which(name: impl AsRef<OsStr>) -> Option<PathBuf> {
    let name = name.as_ref();
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub(crate) const BPFFS: &str = "/sys/fs/bpf";

/// Whether a bpf filesystem is mounted at /sys/fs/bpf.
pub(crate) fn bpffs_mounted() -> Result<bool> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("cannot read /proc/mounts")?;
    Ok(mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let _source = fields.next();
        fields.next() == Some(BPFFS) && fields.next() == Some("bpf")
    }))
}

/// Mounts bpffs at /sys/fs/bpf unless it is there (needs root).
pub(crate) fn ensure_bpffs() -> Result<()> {
    if bpffs_mounted()? {
        eprintln!("bpffs: already mounted at {BPFFS}");
        return Ok(());
    }
    std::fs::create_dir_all(BPFFS).with_context(|| format!("cannot create {BPFFS}"))?;
    run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))
        .with_context(|| format!("cannot mount bpffs at {BPFFS}"))?;
    eprintln!("bpffs: mounted at {BPFFS}");
    Ok(())
}
