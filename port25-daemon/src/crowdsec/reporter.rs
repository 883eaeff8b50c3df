//! Which source prefixes to report: those whose rate-limited SYNs within `report_window` reach
//! `report_after`, read from the kernel's per-prefix table (`SOURCES`, which counts every
//! prefix's drops since it was first seen). Never an allowlisted prefix nor a verified one (its
//! clients complete handshakes: real senders, not a spoofed flood); at most one alert per prefix
//! per window.

use std::collections::{HashMap, VecDeque};

use ipnet::IpNet;

use crate::config::Reporter as Settings;
use crate::sources::TrackedSource;

/// A prefix to report, with what its bucket dropped within the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Report {
    pub prefix: IpNet,
    pub dropped: u64,
}

/// The drops each prefix had when it was looked at, over the last window.
#[derive(Default)]
pub(crate) struct Reporter {
    /// (second, dropped so far), oldest first.
    samples: HashMap<IpNet, VecDeque<(u64, u64)>>,
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
        for source in sources {
            seen.insert(source.source);
            let samples = self.samples.entry(source.source).or_insert_with(|| {
                // Not there at the last look: every drop it has happened since then.
                let mut first = VecDeque::new();
                if let Some(last) = self.last_look {
                    first.push_back((last, 0));
                }
                first
            });
            if samples
                .back()
                .is_some_and(|&(_, dropped)| dropped > source.dropped)
            {
                // Evicted and tracked anew: its count started again.
                samples.clear();
                samples.push_back((self.last_look.unwrap_or(now), 0));
            }
            samples.push_back((now, source.dropped));
            // Keep one sample at or before the window's start: the baseline.
            while samples.len() > 1 && samples[1].0 + window <= now {
                samples.pop_front();
            }
            let Some(&(_, baseline)) = samples.front() else {
                continue;
            };
            let dropped = source.dropped - baseline.min(source.dropped);
            let recently_reported = self
                .reported
                .get(&source.source)
                .is_some_and(|&at| at + window > now);
            if dropped >= u64::from(settings.report_after)
                && !recently_reported
                && !source.verified
                && !allowed(&source.source)
            {
                self.reported.insert(source.source, now);
                reports.push(Report {
                    prefix: source.source,
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

    fn source(prefix: &str, dropped: u64, verified: bool) -> TrackedSource {
        TrackedSource {
            source: prefix.parse().unwrap(),
            admitted: 5,
            dropped,
            verified,
        }
    }

    /// What `reporter` reports when it sees `prefix` (not allowlisted, not verified) at `now`
    /// with `dropped` SYNs dropped so far.
    fn look(reporter: &mut Reporter, now: u64, prefix: &str, dropped: u64) -> Vec<Report> {
        let sources = [source(prefix, dropped, false)];
        reporter.observe(now, &sources, |_: &IpNet| false, &settings())
    }

    #[test]
    fn a_prefix_is_reported_once_its_drops_within_the_window_reach_the_threshold() {
        let mut reporter = Reporter::default();
        // Already there at the first look: what it dropped before is not counted.
        assert!(look(&mut reporter, 0, "198.18.0.66/32", 500).is_empty());
        assert!(look(&mut reporter, 2, "198.18.0.66/32", 550).is_empty());
        assert_eq!(
            look(&mut reporter, 4, "198.18.0.66/32", 600),
            vec![Report {
                prefix: "198.18.0.66/32".parse().unwrap(),
                dropped: 100
            }]
        );
        // Once per window.
        assert!(look(&mut reporter, 6, "198.18.0.66/32", 900).is_empty());
        assert_eq!(look(&mut reporter, 65, "198.18.0.66/32", 1200).len(), 1);
    }

    #[test]
    fn a_new_prefix_counts_from_zero_and_slow_drops_never_reach_it() {
        let mut reporter = Reporter::default();
        assert!(
            reporter
                .observe(0, &[], |_: &IpNet| false, &settings())
                .is_empty()
        );
        // Appeared since the last look with 150 drops: all within the window.
        assert_eq!(look(&mut reporter, 2, "198.18.7.0/24", 150).len(), 1);
        // 10 drops every 10 s: never 100 within 60 s.
        let mut reporter = Reporter::default();
        for step in 0..30 {
            let now = step * 10;
            assert!(
                look(&mut reporter, now, "198.18.8.8/32", step * 10).is_empty(),
                "at {now}"
            );
        }
    }

    #[test]
    fn allowlisted_and_verified_prefixes_are_never_reported() {
        let mut reporter = Reporter::default();
        let allowed = CidrSet::new(["198.18.0.0/16".parse().unwrap()]);
        let s = settings();
        reporter.observe(0, &[], |p: &IpNet| allowed.overlaps(p), &s);
        let sources = [
            source("198.18.0.66/32", 5000, false),
            source("2001:db8::/64", 5000, true),
            source("203.0.113.0/24", 5000, false),
        ];
        let reports = reporter.observe(2, &sources, |p: &IpNet| allowed.overlaps(p), &s);
        let prefixes: Vec<String> = reports.iter().map(|r| r.prefix.to_string()).collect();
        assert_eq!(prefixes, ["203.0.113.0/24"]);
    }
}
