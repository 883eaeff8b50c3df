//! The kernels the VM tests boot: Debian's cloud kernels, fetched with `apt-get download` into a
//! cache under target/ and unpacked with `dpkg-deb -x`, or an operator's own (vmlinuz + modules).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

/// A kernel to boot: its image and the modules directory of the same build.
pub(crate) struct Kernel {
    /// What the summary calls it: "6.1.0-57-cloud-amd64".
    pub(crate) name: String,
    pub(crate) vmlinuz: PathBuf,
    /// `lib/modules/<release>`, with modules.dep.
    pub(crate) modules: PathBuf,
}

/// The Debian package of each short name: its name's pattern for `apt-cache search`.
const DEBIAN: &[(&str, &str)] = &[
    ("6.1", r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64$"),
    ("6.12", r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64$"),
];

/// `6.1`, `6.12` (Debian's newest cloud kernel of that series), or a path to a vmlinuz, whose
/// modules are in `modules` (`--modules DIR`).
pub(crate) fn resolve(spec: &str, modules: Option<&Path>, cache: &Path) -> Result<Kernel> {
    if let Some((_, pattern)) = DEBIAN.iter().find(|(short, _)| *short == spec) {
        return debian(pattern, cache);
    }
    let vmlinuz = PathBuf::from(spec);
    if !vmlinuz.is_file() {
        bail!(
            "--kernel {spec}: neither {} nor a kernel image file; give --kernel PATH/TO/vmlinuz \
             with --modules PATH/TO/lib/modules/RELEASE",
            DEBIAN
                .iter()
                .map(|(s, _)| *s)
                .collect::<Vec<_>>()
                .join(" nor ")
        );
    }
    let Some(modules) = modules else {
        bail!("--kernel {spec}: an own kernel needs --modules DIR (its lib/modules/RELEASE)");
    };
    if !modules.join("modules.dep").is_file() {
        bail!("--modules {}: no modules.dep there", modules.display());
    }
    Ok(Kernel {
        name: modules
            .file_name()
            .map_or_else(|| spec.to_owned(), |n| n.to_string_lossy().into_owned()),
        vmlinuz,
        modules: modules.to_path_buf(),
    })
}

fn debian(pattern: &str, cache: &Path) -> Result<Kernel> {
    let found =
        util::output_if_ok(Command::new("apt-cache").args(["search", "--names-only", pattern]))
            .unwrap_or_default();
    let mut packages: Vec<&str> = found.lines().filter_map(|l| l.split(' ').next()).collect();
    // Numeric order of the ABI or patch number, the newest last.
    packages.sort_by_key(|p| {
        p.split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse::<u64>().ok())
            .collect::<Vec<_>>()
    });
    let Some(package) = packages.last().copied() else {
        bail!(
            "no Debian package matches {pattern}: run `apt-get update` (the kernels come from \
             Debian 12's archive)"
        );
    };
    let release = package.trim_start_matches("linux-image-");
    let root = cache.join(package);
    let vmlinuz = root.join(format!("boot/vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        let download = cache.join("downloads");
        fs::create_dir_all(&download)?;
        eprintln!("vm: fetching {package}");
        util::run(
            Command::new("apt-get")
                .args(["download", "-q", package])
                .current_dir(&download),
        )?;
        let deb = fs::read_dir(&download)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
            })
            .with_context(|| format!("apt-get download left no {package}_*.deb"))?;
        util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    }
    // The package leaves modules.dep to its postinst: depmod makes it.
    if !root
        .join(format!("lib/modules/{release}/modules.dep"))
        .is_file()
    {
        util::run(Command::new("depmod").arg("-b").arg(&root).arg(release))?;
    }
    Ok(Kernel {
        name: release.to_owned(),
        vmlinuz,
        modules: root.join(format!("lib/modules/{release}")),
    })
}

/// The module files to load for `wanted` (names as in modules.dep, without .ko), dependencies
/// first; each is decompressed into `dir` if the package ships it compressed. Returns the paths
/// inside `dir`, in load order.
pub(crate) fn modules(kernel: &Kernel, wanted: &[&str], dir: &Path) -> Result<Vec<PathBuf>> {
    let dep_file = kernel.modules.join("modules.dep");
    let deps =
        fs::read_to_string(&dep_file).with_context(|| format!("reading {}", dep_file.display()))?;
    let table: Vec<(String, Vec<String>)> = deps
        .lines()
        .filter_map(|line| {
            let (module, needs) = line.split_once(':')?;
            Some((
                module.to_owned(),
                needs.split_whitespace().map(str::to_owned).collect(),
            ))
        })
        .collect();
    let find = |name: &str| {
        table.iter().find(|(path, _)| {
            Path::new(path)
                .file_name()
                .and_then(|f| f.to_str())
                .and_then(|f| f.split(".ko").next())
                == Some(name)
        })
    };
    let mut order: Vec<String> = Vec::new();
    fn visit(path: &str, table: &[(String, Vec<String>)], order: &mut Vec<String>) {
        if order.iter().any(|p| p == path) {
            return;
        }
        if let Some((_, needs)) = table.iter().find(|(p, _)| p == path) {
            for need in needs {
                visit(need, table, order);
            }
        }
        order.push(path.to_owned());
    }
    for name in wanted {
        // Built in (=y) in this kernel: nothing to load.
        if let Some((path, _)) = find(name) {
            visit(path, &table, &mut order);
        }
    }
    fs::create_dir_all(dir)?;
    order
        .iter()
        .map(|relative| {
            let source = kernel.modules.join(relative);
            let file = Path::new(relative)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let plain = file.split(".ko").next().unwrap_or(&file).to_owned() + ".ko";
            let target = dir.join(&plain);
            if file.ends_with(".xz") {
                let out = Command::new("xz").arg("-dc").arg(&source).output()?;
                if !out.status.success() {
                    bail!(
                        "xz -dc {}: {}",
                        source.display(),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                fs::write(&target, out.stdout)?;
            } else if file.ends_with(".ko") {
                fs::copy(&source, &target)?;
            } else {
                bail!(
                    "{}: a module compressed in a way xtask does not know",
                    source.display()
                );
            }
            Ok(target)
        })
        .collect()
}
