//! Where the daemon pins what other processes (`port25d top`) read, on the BPF filesystem.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Default pin directory.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/port25";
/// The rate limiter's source table, under the pin directory.
pub const SOURCES_PIN: &str = "sources";

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Makes sure `dir` exists on a BPF filesystem, mounting bpffs at /sys/fs/bpf when it is missing
/// (some distributions do not mount it).
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    let root = Path::new("/sys/fs/bpf");
    if dir.starts_with(root) && !is_bpffs(root) {
        mount_bpffs(root)?;
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating pin directory {}", dir.display()))?;
    if !is_bpffs(dir) {
        anyhow::bail!(
            "{} is not on a BPF filesystem; mount one (`mount -t bpf bpf /sys/fs/bpf`) or pass --pin-dir",
            dir.display()
        );
    }
    Ok(())
}

pub fn sources_path(dir: &Path) -> PathBuf {
    dir.join(SOURCES_PIN)
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct; the path is NUL-terminated.
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut stat) == 0 && stat.f_type as i64 == BPF_FS_MAGIC
    }
}

fn mount_bpffs(root: &Path) -> anyhow::Result<()> {
    let c_root = std::ffi::CString::new(root.as_os_str().as_encoded_bytes())?;
    // SAFETY: all pointers are valid NUL-terminated strings; data may be NULL.
    let ret = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c_root.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mounting bpffs at {}", root.display()));
    }
    tracing::info!("mounted bpffs at {}", root.display());
    Ok(())
}
