//! A BPF filesystem of the test's own, shared by the programs it runs.

use super::*;

/// A mount namespace whose /sys/fs/bpf is a fresh BPF filesystem, kept alive by a sleeping
/// process: port25d, xdp-loader and xdp-filter run in it (with a lab namespace's network) share
/// their pins as on a host, the pins outlive each of them (a daemon restarted or killed finds
/// them), and all of it goes with the lab, never touching the machine's own bpffs.
pub struct SharedBpffs {
    holder: Child,
}

impl SharedBpffs {
    pub fn new() -> Self {
        let holder = Command::new(tool("unshare"))
            .args(["--mount", "--propagation", "private", "--"])
            .arg(tool("sh"))
            .args(["-c", "mount -t bpf bpf /sys/fs/bpf && exec sleep 900"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start unshare: {err}"));
        let bpffs = Self { holder };
        let mounted = poll(Duration::from_secs(10), || {
            let probe = Command::new(tool("nsenter"))
                .arg(bpffs.mount_ns())
                .arg("--")
                .arg(tool("sh"))
                .args(["-c", "grep -q ' /sys/fs/bpf bpf ' /proc/self/mounts"])
                .status()
                .ok()?;
            probe.success().then_some(())
        });
        assert!(mounted.is_some(), "no bpffs in the shared mount namespace");
        bpffs
    }

    fn mount_ns(&self) -> String {
        format!("--mount=/proc/{}/ns/mnt", self.holder.id())
    }

    /// `program` in this mount namespace and `ns`'s network namespace.
    pub fn command(&self, ns: &Netns, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(tool("nsenter"));
        command
            .arg(self.mount_ns())
            .arg(format!("--net=/run/netns/{}", ns.name()))
            .arg("--")
            .arg(program.as_ref());
        command
    }
}

impl Default for SharedBpffs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SharedBpffs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
