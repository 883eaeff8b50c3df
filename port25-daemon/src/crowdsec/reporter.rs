//! Which source prefixes to report, read from the kernel's per-prefix table (`SOURCES`, which
//! counts since a prefix was first seen the SYNs its bucket admitted and refused and the
//! handshakes its clients completed).
//!
//! Only evidence a spoofer cannot forge counts (docs/ARCHITECTURE.md, § CrowdSec, trust rules):
//! a prefix is reported when its clients completed `report_after` handshakes within
//! `report_window` while its own bucket refused more of its SYNs. A completed handshake proves
//! the client received the gateway's SYN-ACK, so it owns its address; spoofed SYNs naming a
//! prefix only spend that prefix's tokens, which lowers its completed handshakes, never raises
//! them. Rate-limited SYNs alone (any spoofed flood) are enforced here and never reported. Never
//! an allowlisted prefix; at most one alert per prefix per window.

use std::collections::{HashMap, VecDeque};

use ipnet::IpNet;

use crate::config::Reporter as Settings;
use crate::datapath::TrackedSource;

/// A prefix to report, with what it did within the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Report {
    pub prefix: IpNet,
    /// Handshakes its clients completed.
    pub completed: u64,
    /// New connections its bucket refused.
    pub dropped: u64,
}

/// One look at a prefix: (second, dropped so far, completed so far).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sample {
    at: u64,
    dropped: u64,
    completed: u64,
}

/// What each prefix had done when it was looked at, over the last window.
#[derive(Default)]
pub(crate) struct Reporter {
    /// Oldest first.
    samples: HashMap<IpNet, VecDeque<Sample>>,
    reported: HashMap<IpNet, u64>,
    /// When the table was last looked at (None: never).
    last_look: Option<u64>,
}

impl Reporter {
    /// Looks at the table at second `now`; returns the prefixes to report.
    pub(crate) fn observe(
        &mut self,
        now: u64,
        sources: &[TrackedSource],
        allowed: impl Fn(&IpNet) -> bool,
        settings: &Settings,
    ) -> Vec<Report> {
        let window = u64::from(settings.report_window);
        let mut reports = Vec::new();
        let mut seen = std::collections::HashSet::with_capacity(sources.len());
        // Not there at the last look: all it did happened since then.
        let start = Sample {
            at: self.last_look.unwrap_or(now),
            ..Sample::default()
        };
        for source in sources {
            seen.insert(source.source);
            let current = Sample {
                at: now,
                dropped: source.dropped,
                completed: source.completed,
            };
            let samples = self.samples.entry(source.source).or_insert_with(|| {
                let mut first = VecDeque::new();
                if self.last_look.is_some() {
                    first.push_back(start);
                }
                first
            });
            if samples.back().is_some_and(|last| {
                last.dropped > current.dropped || last.completed > current.completed
            }) {
                // Evicted and tracked anew: its counts started again.
                samples.clear();
                samples.push_back(start);
            }
            samples.push_back(current);
            // Keep one sample at or before the window's start: the baseline.
            while samples.len() > 1 && samples[1].at + window <= now {
                samples.pop_front();
            }
            let Some(baseline) = samples.front().copied() else {
                continue;
            };
            let completed = current.completed.saturating_sub(baseline.completed);
            let dropped = current.dropped.saturating_sub(baseline.dropped);
            let recently_reported = self
                .reported
                .get(&source.source)
                .is_some_and(|&at| at + window > now);
            if completed >= u64::from(settings.report_after)
                && dropped > 0
                && !recently_reported
                && !allowed(&source.source)
            {
                self.reported.insert(source.source, now);
                reports.push(Report {
                    prefix: source.source,
                    completed,
                    dropped,
                });
            }
        }
        // Prefixes the table forgot, and reports older than a window, are forgotten too.
        self.samples.retain(|prefix, _| seen.contains(prefix));
        self.reported.retain(|_, at| *at + window > now);
        self.last_look = Some(now);
        reports
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CidrSet, Secret};

    fn settings() -> Settings {
        Settings {
            machine_id: "gw-a".into(),
            password: Secret("x".into()),
            report_after: 100,
            report_window: 60,
            report_ban: "4h".into(),
        }
    }

    fn source(prefix: &str, completed: u64, dropped: u64) -> TrackedSource {
        TrackedSource {
            source: prefix.parse().unwrap(),
            admitted: completed,
            dropped,
            completed,
            verified: completed > 0,
        }
    }

    /// What `reporter` reports when it sees `prefix` (not allowlisted) at `now` with `completed`
    /// handshakes and `dropped` SYNs so far.
    fn look(
        reporter: &mut Reporter,
        now: u64,
        prefix: &str,
        completed: u64,
        dropped: u64,
    ) -> Vec<Report> {
        let sources = [source(prefix, completed, dropped)];
        reporter.observe(now, &sources, |_: &IpNet| false, &settings())
    }

    #[test]
    fn a_real_flood_is_reported_once_its_handshakes_within_the_window_reach_the_threshold() {
        let mut reporter = Reporter::default();
        // Already there at the first look: what it did before is not counted.
        assert!(look(&mut reporter, 0, "198.18.0.66/32", 500, 500).is_empty());
        assert!(look(&mut reporter, 2, "198.18.0.66/32", 550, 900).is_empty());
        assert_eq!(
            look(&mut reporter, 4, "198.18.0.66/32", 600, 1300),
            vec![Report {
                prefix: "198.18.0.66/32".parse().unwrap(),
                completed: 100,
                dropped: 800,
            }]
        );
        // Once per window.
        assert!(look(&mut reporter, 6, "198.18.0.66/32", 700, 1700).is_empty());
        assert_eq!(
            look(&mut reporter, 65, "198.18.0.66/32", 1300, 5000).len(),
            1
        );
    }

    #[test]
    fn spoofed_syns_alone_are_never_reported_whatever_their_number() {
        let mut reporter = Reporter::default();
        reporter.observe(0, &[], |_: &IpNet| false, &settings());
        // A million SYNs refused, no handshake: a spoofer naming the prefix.
        for step in 1..30 {
            let now = step * 2;
            assert!(
                look(&mut reporter, now, "198.18.0.77/32", 0, step * 1_000_000).is_empty(),
                "at {now}"
            );
        }
        // A real sender within its bucket (its handshakes, nothing refused) whom a spoofer
        // floods afterwards: spoofed SYNs spend its tokens, its completions do not grow.
        let mut reporter = Reporter::default();
        reporter.observe(0, &[], |_: &IpNet| false, &settings());
        assert!(look(&mut reporter, 2, "198.18.0.88/32", 60, 0).is_empty());
        assert!(look(&mut reporter, 4, "198.18.0.88/32", 61, 500_000).is_empty());
        assert!(look(&mut reporter, 6, "198.18.0.88/32", 61, 900_000).is_empty());
    }

    #[test]
    fn handshakes_within_the_bucket_are_not_a_flood() {
        // Many completed handshakes, nothing refused: a busy sender, not reported.
        let mut reporter = Reporter::default();
        reporter.observe(0, &[], |_: &IpNet| false, &settings());
        assert!(look(&mut reporter, 2, "198.18.0.99/32", 5000, 0).is_empty());
        // Slow handshakes: never 100 within 60 s.
        let mut reporter = Reporter::default();
        for step in 0..30 {
            let now = step * 10;
            assert!(
                look(&mut reporter, now, "198.18.8.8/32", step * 10, step * 100).is_empty(),
                "at {now}"
            );
        }
    }

    #[test]
    fn allowlisted_prefixes_are_never_reported_and_evicted_ones_start_again() {
        let mut reporter = Reporter::default();
        let allowed = CidrSet::new(["198.18.0.0/16".parse().unwrap()]);
        let s = settings();
        reporter.observe(0, &[], |p: &IpNet| allowed.overlaps(p), &s);
        let sources = [
            source("198.18.0.66/32", 5000, 5000),
            source("203.0.113.0/24", 5000, 5000),
        ];
        let reports = reporter.observe(2, &sources, |p: &IpNet| allowed.overlaps(p), &s);
        let prefixes: Vec<String> = reports.iter().map(|r| r.prefix.to_string()).collect();
        assert_eq!(prefixes, ["203.0.113.0/24"]);

        // Evicted and tracked anew with lower counts: counted from zero, not negative.
        let mut reporter = Reporter::default();
        assert!(look(&mut reporter, 0, "198.18.9.9/32", 900, 900).is_empty());
        assert!(look(&mut reporter, 2, "198.18.9.9/32", 50, 10).is_empty());
        assert_eq!(look(&mut reporter, 4, "198.18.9.9/32", 150, 20).len(), 1);
    }
}
