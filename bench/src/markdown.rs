//! Markdown for the report: its numbered sections and its tables.

use std::fmt::{self, Write as _};

/// A markdown table: the header ("a | b"), its alignment row (`l` or `r` a column), the rows, a
/// blank line.
pub(crate) fn table(
    s: &mut String,
    header: &str,
    align: &str,
    rows: impl IntoIterator<Item = Vec<String>>,
) {
    let _ = writeln!(s, "| {header} |");
    let rule: Vec<&str> = align
        .chars()
        .map(|a| if a == 'r' { "---:" } else { "---" })
        .collect();
    let _ = writeln!(s, "|{}|", rule.join("|"));
    for row in rows {
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    s.push('\n');
}

/// The report's numbered sections: their headings, and the prose that points at one ("section 3")
/// says its number from here, never by hand.
#[derive(Clone, Copy)]
pub(crate) enum Section {
    PerPacket = 1,
    ListScale,
    Flood,
    Mail,
    Daemon,
    Egress,
}

impl Section {
    fn title(self) -> &'static str {
        match self {
            Section::PerPacket => "Per-packet cost in the kernel",
            Section::ListScale => "List scale",
            Section::Flood => "SYN flood at the receiver",
            Section::Mail => "Mail during the flood",
            Section::Daemon => "The daemon",
            Section::Egress => "The egress guard",
        }
    }

    pub(crate) fn heading(self, s: &mut String) {
        let _ = writeln!(s, "## {}. {}\n", self as u8, self.title());
    }
}

/// "section 3".
impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "section {}", *self as u8)
    }
}
