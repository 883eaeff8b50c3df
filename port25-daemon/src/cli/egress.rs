//! `port25d egress log`: the outbound connects the egress guard refused (or, in monitor mode,
//! would have refused), as the running daemon keeps them; `--follow` prints new ones as they come.

use std::time::Duration;

use super::output::outln;
use crate::{
    control::{self, Endpoint},
    egress_guard::log::KEPT,
    proto::EgressEvent,
};

/// How often `--follow` asks the daemon for new events.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

pub(super) fn log(daemon: &Endpoint, json: bool, follow: bool) -> anyhow::Result<()> {
    let mut last = 0;
    loop {
        let events = control::egress_events(daemon, last)?;
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
            outln!("{}", line(event, json)?);
            last = event.seq;
        }
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
