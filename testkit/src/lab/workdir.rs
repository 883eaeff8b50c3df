//! Work directory.

use super::*;

/// A per-test directory for configs, logs, captures and mail dumps. Removed on drop, unless the test
/// is failing: then it is kept and its path printed, for the post-mortem.
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    pub fn new(tag: &str) -> Self {
        let path = env::temp_dir().join(unique_name(tag));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", path.display()));
        // smtp-sink drops to `nobody` before it writes its dumps: it must be able to reach them.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|err| panic!("cannot chmod {}: {err}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "lab: keeping {} (logs, configs, captures) for diagnostics",
                self.path.display()
            );
        } else if let Err(err) = fs::remove_dir_all(&self.path) {
            eprintln!("lab: warning: cannot remove {}: {err}", self.path.display());
        }
    }
}
