//! `port25d manpage`: the man pages, generated from the command line's own definition (clap), so
//! that they never say other than `--help`: port25d(8), and a page for each subcommand
//! (port25d-run(8), port25d-allow-add(8), …) that port25d(8) lists; and port25.toml(5), made
//! from the commented default config (packaging/port25.toml), which shows every key with its
//! default: one text for both.

use std::path::{Path, PathBuf};

use clap::CommandFactory as _;

use super::Cli;

/// Man pages for the commands are in section 8: port25d administers the system.
const SECTION: &str = "8";

/// port25d(8) on standard output.
pub(super) fn print_main() -> anyhow::Result<()> {
    clap_mangen::Man::new(Cli::command())
        .section(SECTION)
        .render(&mut std::io::stdout())?;
    Ok(())
}

/// Every page into `dir`; returns their paths.
pub(super) fn write_all(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn pages(command: clap::Command, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            pages(sub.clone(), dir, out)?;
        }
        out.push(
            clap_mangen::Man::new(command)
                .section(SECTION)
                .generate_to(dir)?,
        );
        Ok(())
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot make {}: {e}", dir.display()))?;
    // Built, so that each subcommand knows its full name (port25d-allow-add).
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let mut out = Vec::new();
    pages(command, dir, &mut out)
        .map_err(|e| anyhow::anyhow!("writing man pages into {}: {e}", dir.display()))?;
    let config = dir.join("port25.toml.5");
    std::fs::write(&config, config_page(crate::config::EMBEDDED_DEFAULT))
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", config.display()))?;
    out.push(config);
    Ok(out)
}

/// One stretch of the commented default config: its comment, then a table header or a key.
enum Entry<'a> {
    Table {
        name: &'a str,
        about: String,
    },
    Key {
        key: &'a str,
        default: &'a str,
        about: String,
    },
}

/// The file's entries, and the comment at its head (up to the first blank line).
fn entries(config: &str) -> (String, Vec<Entry<'_>>) {
    let mut head = String::new();
    let mut entries = Vec::new();
    let mut comment: Vec<&str> = Vec::new();
    let mut in_head = true;
    for line in config.lines().map(str::trim) {
        if let Some(text) = line.strip_prefix('#') {
            comment.push(text.strip_prefix(' ').unwrap_or(text));
            continue;
        }
        let about = comment.join("\n");
        comment.clear();
        if line.is_empty() {
            if in_head {
                head = about;
                in_head = false;
            }
            continue;
        }
        in_head = false;
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            entries.push(Entry::Table { name, about });
        } else if let Some((key, default)) = line.split_once('=') {
            entries.push(Entry::Key {
                key: key.trim(),
                default: default.trim(),
                about,
            });
        }
    }
    (head, entries)
}

/// A comment's lines as roff text: lines that start indented or with `-` or `"` (lists in the
/// comments) keep their own line.
fn paragraph(roff: &mut roff::Roff, about: &str) {
    for (i, line) in about.lines().enumerate() {
        if i > 0 && (line.starts_with(' ') || line.starts_with('"')) {
            roff.text([roff::line_break()]);
        }
        roff.text([roff::roman(format!("{} ", line.trim()))]);
    }
}

/// port25.toml(5).
fn config_page(config: &str) -> String {
    use roff::{Roff, bold, roman};
    let (head, entries) = entries(config);
    let mut roff = Roff::new();
    roff.control("TH", ["port25.toml", "5"])
        .control("SH", ["NAME"])
        .text([roman("port25.toml - the configuration of port25d")])
        .control("SH", ["SYNOPSIS"])
        .text([bold("/etc/port25/port25.toml")])
        .control("SH", ["DESCRIPTION"]);
    paragraph(&mut roff, &head);
    roff.control("PP", [])
        .text([roman(
            "TOML. Each key below is shown with its default; ranges are given where a value has \
             one. An unknown key, a value of the wrong type or out of range is an error naming \
             the file and line.",
        )])
        .control("SH", ["KEYS"]);
    for entry in &entries {
        match entry {
            Entry::Table { name, about } => {
                roff.control("SS", [format!("[{name}]").as_str()]);
                paragraph(&mut roff, about);
            }
            Entry::Key {
                key,
                default,
                about,
            } => {
                roff.control("TP", [])
                    .text([bold(*key), roman(format!(" = {default}"))]);
                paragraph(&mut roff, about);
            }
        }
    }
    roff.control("SH", ["SEE ALSO"]).text([
        bold("port25d"),
        roman("(8), "),
        bold("port25d-check-config"),
        roman("(8), "),
        bold("port25d-run"),
        roman("(8)"),
    ]);
    roff.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_page_has_every_key_of_the_default_config_with_its_default() {
        let page = config_page(crate::config::EMBEDDED_DEFAULT);
        let (_, entries) = entries(crate::config::EMBEDDED_DEFAULT);
        let keys: Vec<(&str, &str)> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Key { key, default, .. } => Some((*key, *default)),
                Entry::Table { .. } => None,
            })
            .collect();
        for key in [
            "interfaces",
            "xdp_coexist",
            "syn_rate",
            "lapi_url",
            "refresh",
        ] {
            assert!(keys.iter().any(|(k, _)| *k == key), "{key} in {keys:?}");
        }
        for (key, default) in &keys {
            let escaped = default.replace('-', "\\-");
            assert!(
                page.contains(&format!("\\fB{key}\\fR = {escaped}")),
                "{key} = {default} in the page"
            );
        }
        assert!(
            page.contains("(1\\-1000000)"),
            "ranges come with the comments"
        );
        // man renders in any locale only what ASCII holds (troff in the C locale has no glyph
        // for "…"): keep packaging/port25.toml ASCII.
        assert!(page.is_ascii(), "port25.toml(5) is not ASCII");
    }
}
