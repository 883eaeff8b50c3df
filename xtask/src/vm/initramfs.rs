//! The guest's whole file system: a newc cpio archive (the `cpio` crate) that the kernel unpacks
//! into its initial root. Static busybox for the shell and the mounts, the init script, the
//! programs the tests run with every shared library `ldd` names, and the modules to load.

use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use cpio::NewcBuilder;

/// Files by their path in the guest; directories are made for them.
#[derive(Default)]
pub(crate) struct Initramfs {
    files: BTreeMap<String, (Vec<u8>, u32)>,
}

impl Initramfs {
    /// Adds `bytes` at `path` (absolute, in the guest) with `mode`.
    pub(crate) fn add(&mut self, path: &str, bytes: Vec<u8>, mode: u32) {
        self.files
            .insert(path.trim_start_matches('/').to_owned(), (bytes, mode));
    }

    /// Adds the host file `source` at `path`.
    pub(crate) fn add_file(&mut self, path: &str, source: &Path) -> Result<()> {
        let bytes = fs::read(source).with_context(|| format!("reading {}", source.display()))?;
        self.add(path, bytes, 0o755);
        Ok(())
    }

    /// Adds an executable at `path`, without its debug sections (test binaries are 10 times
    /// smaller so), and every shared library it loads at its host path.
    /// A script (swaks) goes as it is; its interpreter is a program of its own.
    pub(crate) fn add_program(&mut self, path: &str, source: &Path, scratch: &Path) -> Result<()> {
        let mut magic = [0u8; 4];
        let elf = fs::File::open(source)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok()
            && magic == *b"\x7fELF";
        if !elf {
            return self.add_file(path, source);
        }
        let stripped = scratch.join(path.trim_start_matches('/').replace('/', "_"));
        let status = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(source)
            .arg(&stripped)
            .status()
            .context("running objcopy (binutils)")?;
        if !status.success() {
            bail!("objcopy --strip-debug {} failed", source.display());
        }
        self.add_file(path, &stripped)?;
        for library in shared_libraries(source)? {
            let guest = library.display().to_string();
            if !self.files.contains_key(guest.trim_start_matches('/')) {
                self.add_file(&guest, &library)?;
            }
        }
        Ok(())
    }

    /// Adds a host file or a whole directory at the same path; shared objects in it (Perl's XS
    /// modules) bring their libraries.
    pub(crate) fn add_tree(&mut self, source: &Path, scratch: &Path) -> Result<()> {
        let meta = fs::metadata(source).with_context(|| format!("reading {}", source.display()))?;
        if meta.is_file() {
            let guest = source.display().to_string();
            return if guest.ends_with(".so") {
                self.add_program(&guest, source, scratch)
            } else {
                self.add_file(&guest, source)
            };
        }
        for entry in fs::read_dir(source)? {
            let path = entry?.path();
            // A link to a directory is reached through its target, which is copied anyway.
            if fs::symlink_metadata(&path)?.file_type().is_symlink() && path.is_dir() {
                continue;
            }
            self.add_tree(&path, scratch)?;
        }
        Ok(())
    }

    /// The archive: every directory first, then the files.
    pub(crate) fn write(&self, out: &Path) -> Result<()> {
        let mut dirs: Vec<String> = ["proc", "sys", "dev", "tmp", "run", "root", "etc"]
            .map(str::to_owned)
            .to_vec();
        for path in self.files.keys() {
            let mut parent = Path::new(path).parent();
            while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
                dirs.push(dir.display().to_string());
                parent = dir.parent();
            }
        }
        dirs.sort();
        dirs.dedup();
        let empty: &[u8] = &[];
        let entries = dirs
            .iter()
            .map(|dir| (NewcBuilder::new(dir).mode(0o040_755), Cursor::new(empty)))
            .chain(self.files.iter().map(|(path, (bytes, mode))| {
                let builder = NewcBuilder::new(path).mode(0o100_000 | mode);
                (builder, Cursor::new(bytes.as_slice()))
            }));
        let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        cpio::write_cpio(entries, std::io::BufWriter::new(file))
            .with_context(|| format!("writing {}", out.display()))?;
        Ok(())
    }
}

/// What `ldd` says `program` loads: library paths and the dynamic loader.
fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    Ok(text
        .lines()
        .filter_map(|line| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}
