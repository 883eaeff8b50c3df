//! `port25d egress log`: the outbound connects the egress guard refused (or, in monitor mode,
//! would have refused), as the running daemon keeps them; `--follow` prints new ones as they come.

use std::{io::Write as _, path::Path, time::Duration};

use crate::{control, egress_log::KEPT, proto::EgressEvent};

/// How often `--follow` asks the daemon for new events.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

pub(super) fn log(socket: &Path, json: bool, follow: bool) -> anyhow::Result<()> {
    let mut last = 0;
    let mut out = std::io::stdout().lock();
    loop {
        let events = control::egress_events(socket, last)?;
        if let Some(first) = events.first()
            && last > 0
            && first.seq > last + 1
        {
            // More came between two looks than the daemon keeps.
            eprintln!(
                "port25d: {} events came and went faster than --follow reads (the daemon keeps {KEPT})",
                first.seq - last - 1
            );
        }
        for event in &events {
            writeln!(out, "{}", line(event, json)?)?;
            last = event.seq;
        }
        out.flush()?;
        if !follow {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_EVERY);
    }
}

fn line(event: &EgressEvent, json: bool) -> anyhow::Result<String> {
    Ok(if json {
        serde_json::to_string(event)?
    } else {
        format!("{} {}", event.time, event.describe())
    })
}
