//! A child cgroup of the test's own under the cgroup2 mount, for the egress guard's hooks: never
//! the machine's root cgroup. Removed on drop (once the processes that joined it have exited).

use super::*;

pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    /// `<cgroup2 root>/p25t-<pid>-<tag>`.
    pub fn new(tag: &str) -> Self {
        let path = cgroup2_root().join(unique_name(tag));
        fs::create_dir(&path)
            .unwrap_or_else(|err| panic!("cannot create cgroup {}: {err}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A child cgroup below this one (removed before it).
    pub fn child(&self, name: &str) -> PathBuf {
        let path = self.path.join(name);
        fs::create_dir(&path)
            .unwrap_or_else(|err| panic!("cannot create cgroup {}: {err}", path.display()));
        path
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Children first: a cgroup with children cannot be removed.
        if let Ok(entries) = fs::read_dir(&self.path) {
            for entry in entries.flatten() {
                if entry.path().is_dir() {
                    let _ = fs::remove_dir(entry.path());
                }
            }
        }
        // Processes that joined may take a moment to be reaped.
        let gone = poll(Duration::from_secs(5), || fs::remove_dir(&self.path).ok());
        if gone.is_none() {
            eprintln!("lab: warning: cannot remove cgroup {}", self.path.display());
        }
    }
}

/// Where the cgroup2 hierarchy is mounted.
pub fn cgroup2_root() -> PathBuf {
    let mounts = fs::read_to_string("/proc/self/mounts").expect("/proc/self/mounts readable");
    mounts
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(fields[1]))
        })
        .expect("a cgroup2 file system is mounted (the egress tests need cgroup v2)")
}

/// The cgroup directory this process is in.
pub fn current_cgroup() -> PathBuf {
    let text = fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup readable");
    let relative = text
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .expect("a cgroup v2 line in /proc/self/cgroup");
    cgroup2_root().join(relative.trim_start_matches('/'))
}
