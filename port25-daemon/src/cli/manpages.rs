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

/// What every page's footer says: the program and its version (clap_mangen would name the
/// subcommand: "add 0.1.0").
fn source() -> String {
    format!("port25d {}", env!("CARGO_PKG_VERSION"))
}

fn man(command: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(command)
        .section(SECTION)
        .source(source())
        .manual("System Administration")
}

/// port25d(8) on standard output.
pub(super) fn print_main() -> anyhow::Result<()> {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    std::io::Write::write_all(&mut std::io::stdout(), &main_page(command)?)?;
    Ok(())
}

/// port25d(8): clap's sections, then what a daemon's page has (exit status, signals, files).
fn main_page(command: clap::Command) -> std::io::Result<Vec<u8>> {
    let page = man(command);
    let mut out = Vec::new();
    page.render_title(&mut out)?;
    page.render_name_section(&mut out)?;
    page.render_synopsis_section(&mut out)?;
    page.render_description_section(&mut out)?;
    page.render_options_section(&mut out)?;
    page.render_subcommands_section(&mut out)?;
    out.extend_from_slice(daemon_sections().as_bytes());
    page.render_version_section(&mut out)?;
    Ok(out)
}

/// EXIT STATUS, SIGNALS, FILES and SEE ALSO of port25d(8).
fn daemon_sections() -> String {
    use roff::{Roff, bold, roman};
    let mut roff = Roff::new();
    let item = |roff: &mut Roff, term: &str, text: &str| {
        roff.control("TP", [])
            .text([bold(term)])
            .text([roman(text)]);
    };
    roff.control("SH", ["EXIT STATUS"]);
    for (code, text) in [
        ("0", "Success. For audit: nothing needs action."),
        (
            "1",
            "An error: a bad config or argument value, a daemon that cannot be reached or does \
             not answer within --timeout, a refused start, output that cannot be written. The \
             message names the input and the fix.",
        ),
        (
            "2",
            "A command line clap refuses (an unknown option, a value it cannot parse); for \
             audit: a finding says OPEN RELAY, NOT PROTECTED or CHECK.",
        ),
        (
            "3",
            "status: no daemon answers (what the pins show is printed: a killed daemon's \
             filter still enforces).",
        ),
    ] {
        item(&mut roff, code, text);
    }
    roff.control("SH", ["SIGNALS"]);
    for (signal, text) in [
        (
            "SIGHUP",
            "run reloads the config and the list files; an invalid one is rejected, logged and \
             counted, and the running policy stays.",
        ),
        (
            "SIGTERM, SIGINT",
            "run stops; on_exit says whether the filter goes with it (detach) or stays \
             enforcing (keep).",
        ),
        (
            "SIGKILL",
            "run dies; the pinned filter keeps enforcing its last policy, and the next start \
             takes it over.",
        ),
    ] {
        item(&mut roff, signal, text);
    }
    roff.control("SH", ["FILES"]);
    for (file, text) in [
        ("/etc/port25/port25.toml", "The config, port25.toml(5)."),
        (
            "/run/port25/control.sock",
            "The control socket (root-only) of allow, deny, status, egress, why, shadow and \
             detach (--control-socket).",
        ),
        (
            "/var/lib/port25",
            "Runtime list entries, CrowdSec's held decisions, list changes that wait for the \
             daemon, and history.jsonl, every change of the policy (the last 10,000) that \
             history reads (--state-dir).",
        ),
        (
            "/sys/fs/bpf/port25",
            "The pinned maps and links, which outlive the daemon; one daemon owns it \
             (--pin-dir).",
        ),
    ] {
        item(&mut roff, file, text);
    }
    roff.control("SH", ["SEE ALSO"]).text([
        bold("port25.toml"),
        roman("(5), "),
        bold("port25d-run"),
        roman("(8), "),
        bold("port25d-check-config"),
        roman("(8), "),
        bold("fail2ban"),
        roman("(1), "),
        bold("systemctl"),
        roman("(1), /usr/share/doc/port25/README.md"),
    ]);
    roff.render()
}

/// Every page into `dir`; returns their paths.
pub(super) fn write_all(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn pages(command: clap::Command, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            pages(sub.clone(), dir, out)?;
        }
        if command.get_name() == "port25d" {
            let path = dir.join("port25d.8");
            std::fs::write(&path, main_page(command)?)?;
            out.push(path);
        } else {
            out.push(man(command).generate_to(dir)?);
        }
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

/// A comment's lines as roff text: a list item of the comments (a line that starts with `-` or
/// `"`, indented or not) starts a line of its own; any other line, a list item's indented
/// continuation too, goes on the sentence it continues.
fn paragraph(roff: &mut roff::Roff, about: &str) {
    for (i, line) in about.lines().enumerate() {
        let text = line.trim();
        if i > 0 && (text.starts_with('-') || text.starts_with('"')) {
            roff.text([roff::line_break()]);
        }
        roff.text([roff::roman(format!("{text} "))]);
    }
}

/// port25.toml(5).
fn config_page(config: &str) -> String {
    use roff::{Roff, bold, roman};
    let (head, entries) = entries(config);
    let mut roff = Roff::new();
    let source = source();
    roff.control(
        "TH",
        [
            "port25.toml",
            "5",
            "",
            source.as_str(),
            "File Formats Manual",
        ],
    )
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
    fn every_page_names_port25d_in_its_footer_and_the_main_page_has_a_daemon_s_sections() {
        let dir = std::env::temp_dir().join(format!("port25-man-{}", std::process::id()));
        let pages = write_all(&dir).unwrap();
        assert!(pages.len() > 10, "{pages:?}");
        for page in &pages {
            let text = std::fs::read_to_string(page).unwrap();
            let title = text
                .lines()
                .find(|l| l.starts_with(".TH"))
                .unwrap_or_default();
            assert!(
                title.contains("\"port25d 0.1.0\""),
                "{}: {title}",
                page.display()
            );
            assert!(
                !text.contains("packaging/"),
                "{}: a repository path",
                page.display()
            );
            // Text lines (not requests): roff keeps runs of blanks, so a string continued
            // without its `\` shows as a gap (the config page aligns its lists with fewer).
            let gap = text
                .lines()
                .find(|l| !l.starts_with('.') && l.trim_start().contains("        "));
            assert_eq!(gap, None, "{}: a run of blanks", page.display());
        }
        let main = std::fs::read_to_string(dir.join("port25d.8")).unwrap();
        for section in ["EXIT STATUS", "SIGNALS", "FILES", "SEE ALSO"] {
            assert!(
                main.contains(&format!(".SH \"{section}\""))
                    || main.contains(&format!(".SH {section}")),
                "{section}"
            );
        }
        assert!(main.contains("port25.toml"), "SEE ALSO port25.toml(5)");
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
