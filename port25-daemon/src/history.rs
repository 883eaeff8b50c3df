//! Every change of the effective policy, with when, what and who: the daemon appends one JSON line
//! per change to `history.jsonl` in its state directory (and logs the same line), and `port25d
//! history` reads that file, whether a daemon runs or not. docs/ARCHITECTURE.md, § History.

use std::{
    collections::VecDeque,
    fmt,
    io::{BufRead as _, Write as _},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::state_file;

/// The file in the state directory.
pub(crate) const FILE: &str = "history.jsonl";

/// Changes kept: the oldest go first once there are more. A change is at most about
/// [`MAX_DETAILS`] × [`MAX_TEXT`] bytes, so the file stays under a few tens of MiB.
pub(crate) const KEPT: usize = 10_000;

/// Lines of detail a change keeps (a reload's diff, a sample of a CrowdSec delta), and the length
/// each is cut to.
const MAX_DETAILS: usize = 20;
const MAX_TEXT: usize = 400;

/// Who or what made a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Actor {
    /// The daemon starting, with the config and lists it loaded.
    Start,
    /// A request on the control socket, from the peer the kernel names (SO_PEERCRED).
    Control {
        uid: u32,
        pid: Option<i32>,
        /// The uid's name, when /etc/passwd has it.
        user: Option<String>,
    },
    /// A request that waited in the state directory while no daemon answered; the uid that owns
    /// its file.
    Queued { uid: Option<u32> },
    /// A signal: SIGHUP (`systemctl reload`, logrotate, an operator).
    Signal { signal: String },
    /// A file appeared, went or changed in a watched list directory.
    WatchedDir,
    /// A poll of the CrowdSec LAPI, or its decisions' expiry.
    Crowdsec { lapi: String },
    /// A runtime entry's TTL ran out.
    Expiry,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Start => write!(f, "port25d starting"),
            Actor::Control { uid, pid, user } => {
                write!(f, "uid {uid}")?;
                if let Some(user) = user {
                    write!(f, " ({user})")?;
                }
                if let Some(pid) = pid {
                    write!(f, " pid {pid}")?;
                }
                write!(f, " on the control socket")
            }
            Actor::Queued { uid: Some(uid) } => {
                write!(f, "a queued request (its file is uid {uid}'s)")
            }
            Actor::Queued { uid: None } => write!(f, "a queued request"),
            Actor::Signal { signal } => write!(f, "{signal}"),
            Actor::WatchedDir => write!(f, "a watched list directory"),
            Actor::Crowdsec { lapi } => write!(f, "CrowdSec ({lapi})"),
            Actor::Expiry => write!(f, "TTL"),
        }
    }
}

/// One change of the effective policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Change {
    /// Unix seconds.
    pub time: u64,
    /// What kind of change: `start`, `reload`, `allow add`, `deny del`, `expired`, `crowdsec`.
    pub change: String,
    pub by: Actor,
    /// One line: what changed.
    pub summary: String,
    /// The reload's diff key by key, the entries of a CrowdSec delta (a sample), …
    #[serde(default)]
    pub details: Vec<String>,
}

impl Change {
    pub(crate) fn new(change: &str, by: Actor, summary: String, details: Vec<String>) -> Self {
        let mut details: Vec<String> = details.into_iter().map(cut).collect();
        if details.len() > MAX_DETAILS {
            let more = details.len() - (MAX_DETAILS - 1);
            details.truncate(MAX_DETAILS - 1);
            details.push(format!("and {more} more"));
        }
        Self {
            time: crate::clock::now_unix(),
            change: change.to_owned(),
            by,
            summary: cut(summary),
            details,
        }
    }

    /// The line `history` prints and the journal shows: "reload by SIGHUP: policy ratelimit ->
    /// synproxy (details)".
    pub(crate) fn line(&self) -> String {
        let mut line = format!("{} by {}: {}", self.change, self.by, self.summary);
        if !self.details.is_empty() {
            line.push_str(&format!(" ({})", self.details.join("; ")));
        }
        line
    }
}

/// Cuts a text to [`MAX_TEXT`] bytes, at a character boundary.
fn cut(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// The daemon's history: the changes kept, and the file they are appended to (`None`: memory only,
/// for tests).
pub(crate) struct History {
    path: Option<PathBuf>,
    changes: VecDeque<Change>,
    /// Lines in the file, which grows past [`KEPT`] by a tenth before it is rewritten.
    lines: usize,
}

impl History {
    /// The history kept in `state_dir`. Lines that are not a change (a crash mid-line, a hand
    /// edit) are skipped, and said once.
    pub(crate) fn load(state_dir: Option<&Path>) -> Self {
        let path = state_dir.map(|dir| dir.join(FILE));
        let (changes, lines) = match &path {
            Some(path) => match read(path) {
                Ok((changes, skipped)) => {
                    if skipped > 0 {
                        tracing::warn!(
                            "{}: {skipped} lines that are not a change were skipped",
                            path.display()
                        );
                    }
                    let lines = changes.len() + skipped;
                    (changes, lines)
                }
                Err(err) => {
                    tracing::warn!("the policy history starts afresh: {err:#}");
                    (VecDeque::new(), 0)
                }
            },
            None => (VecDeque::new(), 0),
        };
        Self {
            path,
            changes,
            lines,
        }
    }

    /// Records a change: logged, kept, appended to the file. A file that cannot be written is
    /// logged; the change stays in memory.
    pub(crate) fn record(&mut self, change: Change) {
        tracing::info!(target: "port25d::history", "{}", change.line());
        if let Err(err) = self.append(&change) {
            tracing::error!("writing the policy history: {err:#}");
        }
        self.changes.push_back(change);
        while self.changes.len() > KEPT {
            self.changes.pop_front();
        }
    }

    fn append(&mut self, change: &Change) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if self.lines >= KEPT + KEPT / 10 {
            // The oldest go: the file is rewritten whole with the last KEPT - 1 and this one.
            let mut text = Vec::new();
            let keep = self.changes.len().saturating_sub(KEPT - 1);
            for kept in self.changes.iter().skip(keep).chain([change]) {
                serde_json::to_writer(&mut text, kept)?;
                text.push(b'\n');
            }
            state_file::write_atomically(path, &text)?;
            self.lines = self.changes.len() - keep + 1;
            return Ok(());
        }
        let mut line = serde_json::to_vec(change)?;
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.write_all(&line)
            .with_context(|| format!("appending to {}", path.display()))?;
        self.lines += 1;
        Ok(())
    }

    #[cfg(test)]
    fn changes(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter()
    }
}

/// The changes in a history file, oldest first, and how many lines were not one. A missing file is
/// an empty history.
pub(crate) fn read(path: &Path) -> anyhow::Result<(VecDeque<Change>, usize)> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok((VecDeque::new(), 0));
        }
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let mut changes = VecDeque::new();
    let mut skipped = 0;
    for line in std::io::BufReader::new(file).split(b'\n') {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        match serde_json::from_slice::<Change>(&line) {
            Ok(change) => changes.push_back(change),
            Err(_) if line.iter().all(u8::is_ascii_whitespace) => {}
            Err(_) => skipped += 1,
        }
    }
    while changes.len() > KEPT {
        changes.pop_front();
    }
    Ok((changes, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(n: usize) -> Change {
        Change::new(
            "allow add",
            Actor::Expiry,
            format!("change {n}"),
            Vec::new(),
        )
    }

    #[test]
    fn kept_across_a_restart_and_bounded_oldest_first() {
        let dir = port25_testkit::lab::WorkDir::new("history");
        let mut history = History::load(Some(dir.path()));
        let total = KEPT + KEPT / 10 + 5;
        for n in 0..total {
            history.record(change(n));
        }
        assert_eq!(history.changes().count(), KEPT);
        let (read, skipped) = read(&dir.path().join(FILE)).unwrap();
        assert_eq!(skipped, 0);
        assert_eq!(read.len(), KEPT);
        assert_eq!(
            read.front().unwrap().summary,
            format!("change {}", total - KEPT)
        );
        assert_eq!(
            read.back().unwrap().summary,
            format!("change {}", total - 1)
        );
        // The file was rewritten once it passed the bound, not at every change.
        let lines = std::fs::read_to_string(dir.path().join(FILE))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= KEPT + KEPT / 10, "{lines} lines");
        let reloaded = History::load(Some(dir.path()));
        assert_eq!(
            reloaded.changes().last().unwrap().summary,
            format!("change {}", total - 1)
        );
    }

    #[test]
    fn a_broken_line_is_skipped_not_fatal() {
        let dir = port25_testkit::lab::WorkDir::new("history");
        let path = dir.path().join(FILE);
        let good = serde_json::to_string(&change(1)).unwrap();
        std::fs::write(
            &path,
            format!("{good}\n{{\"time\": 1, \"cha\n\u{0}\u{1}\n{good}\n"),
        )
        .unwrap();
        let (changes, skipped) = read(&path).unwrap();
        assert_eq!((changes.len(), skipped), (2, 2));
        let mut history = History::load(Some(dir.path()));
        history.record(change(2));
        assert_eq!(read(&path).unwrap().0.len(), 3);
    }

    #[test]
    fn details_and_texts_are_bounded() {
        let long = "x".repeat(10 * MAX_TEXT);
        let c = Change::new(
            "reload",
            Actor::WatchedDir,
            long.clone(),
            vec![long; 3 * MAX_DETAILS],
        );
        assert_eq!(c.details.len(), MAX_DETAILS);
        assert!(c.details.last().unwrap().starts_with("and "));
        assert!(c.summary.len() <= MAX_TEXT + '…'.len_utf8());
    }
}
