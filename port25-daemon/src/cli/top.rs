//! `port25d top`: the source prefixes the rate limiter drops most, read from the running daemon's
//! pinned source table, refreshed like top(1).

use super::output::{out, outln};
use std::{path::Path, time::Duration};

use anyhow::Context as _;

use crate::{
    datapath::{self, SourceTables, TrackedSource},
    pins,
};

pub(super) struct TopOptions<'a> {
    pub pin_dir: &'a Path,
    pub count: usize,
    /// List every tracked prefix, not only those with drops.
    pub all: bool,
    /// Print one table and exit (for scripts), instead of refreshing.
    pub once: bool,
    /// With `once`: JSON instead of the table.
    pub json: bool,
    pub interval: Duration,
}

pub(super) fn top(options: &TopOptions<'_>) -> anyhow::Result<()> {
    let pins = pins::PinDir::existing(options.pin_dir);
    let tables = SourceTables::open_pinned(&pins).with_context(|| {
        format!(
            "no source table in {}: is port25d running (with this --pin-dir)?",
            pins.maps().display()
        )
    })?;
    let mut previous: Option<Vec<TrackedSource>> = None;
    loop {
        let all = tables.read_all();
        let tracked = all.len();
        let rows = if options.all {
            let mut rows = all.clone();
            rows.sort_by(|a, b| b.dropped.cmp(&a.dropped).then(b.admitted.cmp(&a.admitted)));
            rows.truncate(options.count);
            rows
        } else {
            datapath::top(all.clone(), options.count)
        };
        if options.json {
            let report = serde_json::json!({
                "tracked": tracked,
                "rows": rows.iter().map(|row| serde_json::json!({
                    "source": row.source.to_string(),
                    "dropped": row.dropped,
                    "admitted": row.admitted,
                    "completed": row.completed,
                    "verified": row.verified,
                })).collect::<Vec<_>>(),
            });
            outln!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(());
        }
        if !options.once {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                // Clear the screen and home the cursor, as top(1) redraws.
                out!("\x1b[2J\x1b[H");
            } else if previous.is_some() {
                // Into a file or a pipe: one table after the other, no terminal escapes.
                outln!("");
            }
        }
        outln!(
            "port25d top: {tracked} tracked source prefixes, {} shown (most drops first)",
            rows.len()
        );
        outln!(
            "{:<44} {:>14} {:>14} {:>12} {:>9}",
            "SOURCE",
            "DROPPED",
            "ADMITTED",
            "DROPS/S",
            "VERIFIED"
        );
        for row in &rows {
            let rate = previous
                .as_ref()
                .and_then(|prev| prev.iter().find(|p| p.source == row.source))
                .map(|prev| {
                    (row.dropped.saturating_sub(prev.dropped)) as f64
                        / options.interval.as_secs_f64()
                });
            let rate = rate.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"));
            outln!(
                "{:<44} {:>14} {:>14} {:>12} {:>9}",
                row.source.to_string(),
                row.dropped,
                row.admitted,
                rate,
                if row.verified { "yes" } else { "no" }
            );
        }
        if options.once {
            return Ok(());
        }
        previous = Some(all);
        std::thread::sleep(options.interval);
    }
}
