//! `[allow]` and `[deny]`: inline CIDRs, list files and watched directories of list files
//! (docs/ARCHITECTURE.md, § Threat model, for what a list file may not do).

use std::io;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::{CidrSet, ConfigError, cidr};
use crate::model::ListKind;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawList {
    #[serde(default)]
    cidrs: Vec<Spanned<String>>,
    #[serde(default)]
    files: Vec<Spanned<String>>,
    #[serde(default)]
    dirs: Vec<Spanned<String>>,
}

impl Source<'_> {
    /// One of `[allow]` / `[deny]`: the inline CIDRs plus every list file.
    pub(super) fn list(&self, table: ListKind, raw: &RawList) -> Result<CidrSet, ConfigError> {
        let mut nets: Vec<IpNet> = Vec::new();
        for entry in &raw.cidrs {
            let net = cidr::parse_cidr(entry.get_ref()).map_err(|reason| {
                self.error_at(entry.span(), format!("{table}.cidrs: {reason}"))
            })?;
            nets.push(net);
        }
        for file in &raw.files {
            if file.get_ref().trim().is_empty() {
                return Err(self.error_at(file.span(), format!("{table}.files: empty path")));
            }
            let path = self.resolve(file.get_ref());
            let text = cidr::read_list_file(&path).map_err(|e| {
                self.error_at(
                    file.span(),
                    format!("{table}.files: list file {} {e}", path.display()),
                )
            })?;
            // An error inside a list file points into that file, where the fix is.
            let listed = cidr::parse_list(&text).map_err(|(line, reason)| {
                ConfigError::new(&path, Some(line), reason.to_string())
            })?;
            nets.extend(listed);
        }
        for dir in &raw.dirs {
            let path = self.resolve(dir.get_ref());
            let files = list_dir_files(&path).map_err(|e| {
                self.error_at(
                    dir.span(),
                    format!(
                        "{table}.dirs: cannot read directory {}: {e}",
                        path.display()
                    ),
                )
            })?;
            for file in files {
                // A bad file dropped into a watched directory is refused whole, named here.
                let text = cidr::read_list_file(&file)
                    .map_err(|e| ConfigError::new(&file, None, e.to_string()))?;
                let listed = cidr::parse_list(&text).map_err(|(line, reason)| {
                    ConfigError::new(&file, Some(line), reason.to_string())
                })?;
                nets.extend(listed);
            }
        }
        Ok(CidrSet::new(nets))
    }

    /// Where the entry `net` of `[table]` is written: each inline CIDR, list file line and
    /// watched file line that gives exactly it, as the files read now.
    fn origins(&self, table: ListKind, raw: &RawList, net: &IpNet) -> Vec<Origin> {
        let mut found = Vec::new();
        for entry in &raw.cidrs {
            if cidr::parse_cidr(entry.get_ref()).is_ok_and(|n| n == *net) {
                found.push(Origin {
                    file: self.origin.to_path_buf(),
                    line: self.line_of(entry.span().start),
                    key: format!("{table}.cidrs"),
                });
            }
        }
        let in_file = |path: &Path, key: String, found: &mut Vec<Origin>| {
            let Ok(text) = cidr::read_list_file(path) else {
                return;
            };
            for (line, _) in cidr::list_lines(&text)
                .filter_map(Result::ok)
                .filter(|(_, n)| n == net)
            {
                found.push(Origin {
                    file: path.to_path_buf(),
                    line,
                    key: key.clone(),
                });
            }
        };
        for file in &raw.files {
            in_file(
                &self.resolve(file.get_ref()),
                format!("{table}.files"),
                &mut found,
            );
        }
        for dir in &raw.dirs {
            for file in list_dir_files(&self.resolve(dir.get_ref())).unwrap_or_default() {
                in_file(&file, format!("{table}.dirs"), &mut found);
            }
        }
        found
    }

    pub(super) fn dirs(&self, raw: &[&RawList]) -> Vec<PathBuf> {
        raw.iter()
            .flat_map(|list| list.dirs.iter())
            .map(|dir| self.resolve(dir.get_ref()))
            .collect()
    }
}

/// Where a list entry is written: the file (the config, a list file, a file of a watched
/// directory), its line, and the config key that brings it (`deny.files`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
    pub key: String,
}

impl super::Config {
    /// Where the config's entry `net` of `list` comes from, read from the config file and its
    /// list files as they are now (an edit not reloaded yet shows, or hides, an origin). Empty
    /// for the built-in default, and when the file no longer parses.
    pub fn origins(&self, list: ListKind, net: &IpNet) -> Vec<Origin> {
        let origin = Path::new(&self.source);
        let Ok(text) = std::fs::read_to_string(origin) else {
            return Vec::new();
        };
        let Ok(raw) = toml::from_str::<super::raw::RawConfig>(&text) else {
            return Vec::new();
        };
        let src = Source {
            text: &text,
            origin,
        };
        let table = match list {
            ListKind::Allow => &raw.allow,
            ListKind::Deny => &raw.deny,
        };
        src.origins(list, table, net)
    }
}

/// The list files of a watched directory, in name order, leaving out subdirectories, hidden files
/// and editor or package-manager leftovers (`x~`, `x.dpkg-old`, `x.swp`...). Whatever else is
/// there is a list file: one that is not a regular file (a FIFO, a device, a link to one) is then
/// refused by [`cidr::read_list_file`], not silently left out.
pub fn list_dir_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let leftover = name.starts_with('.')
            || name.ends_with('~')
            || name.contains(".dpkg-")
            || name.ends_with(".swp")
            || name.ends_with(".tmp");
        if !leftover && !entry.file_type()?.is_dir() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}
