//! port25d in a CrowdSec fleet (docs/ARCHITECTURE.md, § CrowdSec). The bouncer task polls the
//! Local API and hands each answer to the daemon's loop, which owns the CrowdSec list
//! ([`decisions`]) and writes the kernel's lists; the reporter ([`reporter`]) picks the prefixes
//! that flood with connections they completed (never on spoofable evidence), and the same task
//! pushes them as alerts. The task shares where
//! it stands ([`Standing`]) with `status` and the metrics.

pub(crate) mod decisions;
pub(crate) mod lapi;
pub(crate) mod reporter;
pub(crate) mod standing;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use self::lapi::{Alert, Lapi, Stream};
use self::reporter::Report;
pub(crate) use self::standing::{SharedStanding, Standing};
use crate::clock::now_unix;
use crate::config::Crowdsec;

/// A full resync (`startup=true`) this often corrects any drift between the LAPI and the deltas
/// (such as the longer of two decisions on an address deleted: the LAPI streams nothing, and the
/// one held stays until its own expiry).
const RESYNC_EVERY: Duration = Duration::from_secs(10 * 60);
/// The longest wait between polls while the LAPI does not answer.
const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);

/// One poll's answer, for the daemon's loop.
pub(crate) struct Poll {
    pub stream: Stream,
    /// A `startup=true` answer: every active decision, replacing what is held.
    pub full: bool,
}

/// The running bouncer: its task, the polls it hands over, and where reports go.
pub(crate) struct Bouncer {
    pub settings: Crowdsec,
    pub polls: mpsc::Receiver<Poll>,
    reports: mpsc::Sender<Report>,
    task: tokio::task::JoinHandle<()>,
}

impl Bouncer {
    /// Starts polling `settings.lapi_url` now.
    pub(crate) fn spawn(settings: Crowdsec, status: SharedStanding) -> anyhow::Result<Self> {
        let lapi = Lapi::new(&settings)?;
        {
            let mut s = status.lock();
            *s = Standing {
                lapi_url: settings.lapi_url.clone(),
                reporter: settings.reporter.as_ref().map(|r| r.machine_id.clone()),
                ..std::mem::take(&mut *s)
            };
        }
        let (polls_tx, polls) = mpsc::channel(4);
        let (reports, reports_rx) = mpsc::channel(256);
        let task = tokio::spawn(run(settings.clone(), lapi, status, polls_tx, reports_rx));
        Ok(Self {
            settings,
            polls,
            reports,
            task,
        })
    }

    /// Queues alerts for the task; when it is far behind, the surplus waits for the next window.
    pub(crate) fn report(&self, reports: Vec<Report>, status: &SharedStanding) {
        for report in reports {
            if self.reports.try_send(report).is_err() {
                status.lock().alerts_failed += 1;
            }
        }
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits for the next poll of `bouncer`, or forever when there is none.
pub(crate) async fn next_poll(bouncer: &mut Option<Bouncer>) -> Option<Poll> {
    match bouncer {
        Some(bouncer) => bouncer.polls.recv().await,
        None => std::future::pending().await,
    }
}

async fn run(
    settings: Crowdsec,
    mut lapi: Lapi,
    status: SharedStanding,
    polls: mpsc::Sender<Poll>,
    mut reports: mpsc::Receiver<Report>,
) {
    let every = Duration::from_secs(u64::from(settings.update_frequency));
    let mut next = Instant::now();
    // Every start, and every recovery from a failure (an answer may have been lost), is a full
    // pull; then deltas.
    let mut full = true;
    let mut last_full = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {
                let startup = full || last_full.elapsed() >= RESYNC_EVERY;
                let result = lapi.stream(startup).await;
                let now = now_unix();
                match result {
                    Ok(stream) => {
                        let failed = {
                            let mut s = status.lock();
                            let failed = s.failures_in_a_row;
                            s.last_poll = Some(now);
                            s.last_success = Some(now);
                            s.last_error = None;
                            s.last_answer_refused = false;
                            s.failures_in_a_row = 0;
                            s.polls_ok += 1;
                            failed
                        };
                        if failed > 0 {
                            info!("CrowdSec LAPI {} answers again after {failed} failed polls", settings.lapi_url);
                        }
                        if polls.send(Poll { stream, full: startup }).await.is_err() {
                            return;
                        }
                        if startup {
                            last_full = Instant::now();
                        }
                        full = false;
                        next = Instant::now() + every;
                    }
                    Err(err) => {
                        let failures = {
                            let mut s = status.lock();
                            s.last_poll = Some(now);
                            s.last_error = Some(err.to_string());
                            s.last_answer_refused = err.is_refused_answer();
                            s.failures_in_a_row += 1;
                            s.polls_failed += 1;
                            s.failures_in_a_row
                        };
                        let wait = backoff(every, failures);
                        if failures == 1 || failures.is_power_of_two() {
                            warn!(
                                "CrowdSec LAPI {} {} ({failures} polls in a row): {err}; the bans held stay enforced, next try in {} s",
                                settings.lapi_url,
                                if err.is_refused_answer() { "answer refused" } else { "unreachable" },
                                wait.as_secs()
                            );
                        }
                        full = true;
                        next = Instant::now() + wait;
                    }
                }
            }
            Some(report) = reports.recv() => push(&mut lapi, &settings, &status, report).await,
        }
    }
}

/// The wait after `failures` failed polls in a row: doubling from the poll interval, capped.
fn backoff(every: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(8);
    every.saturating_mul(factor).min(MAX_BACKOFF.max(every))
}

async fn push(lapi: &mut Lapi, settings: &Crowdsec, status: &SharedStanding, report: Report) {
    let Some(reporter) = &settings.reporter else {
        return;
    };
    let alert = Alert::connection_flood(
        &reporter.machine_id,
        &report,
        reporter.report_window,
        reporter.report_after,
        &reporter.report_ban,
    );
    match lapi.push_alert(&alert).await {
        Ok(()) => {
            status.lock().alerts_ok += 1;
            info!(
                "reported {} to CrowdSec ({} completed handshakes and {} more SYNs rate-limited within {} s): a {} ban for the fleet",
                report.prefix,
                report.completed,
                report.dropped,
                reporter.report_window,
                reporter.report_ban
            );
        }
        Err(err) => {
            status.lock().alerts_failed += 1;
            warn!("reporting {} to CrowdSec failed: {err}", report.prefix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_interval_up_to_five_minutes() {
        let every = Duration::from_secs(10);
        let waits: Vec<u64> = (1..=7).map(|n| backoff(every, n).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
        // An interval longer than the cap is kept.
        assert_eq!(backoff(Duration::from_secs(600), 3).as_secs(), 600);
    }
}
