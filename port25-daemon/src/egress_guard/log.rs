//! What the daemon keeps of the egress guard's events: the last [`KEPT`] (for `port25d egress
//! log`) and a tally of refused connects per process name and cgroup (for the top-denied gauge),
//! both bounded whatever a runaway process does. docs/ARCHITECTURE.md, § Egress.

use std::collections::{HashMap, VecDeque};

use crate::proto::EgressEvent;

/// Events kept for `egress log`.
pub(crate) const KEPT: usize = 1000;
/// (comm, cgroup) pairs tallied; past that, the smallest tally makes room.
const TALLIED: usize = 1024;

#[derive(Default)]
pub(crate) struct EgressLog {
    last_seq: u64,
    kept: VecDeque<EgressEvent>,
    refused: HashMap<(String, String), u64>,
}

/// The log shared by the event reader, the control socket and the metrics.
pub(crate) type SharedLog = crate::shared::Shared<EgressLog>;

impl EgressLog {
    /// Numbers and keeps `event`; it counts for its process as 1 plus what the kernel suppressed.
    pub(crate) fn push(&mut self, mut event: EgressEvent) -> &EgressEvent {
        self.last_seq += 1;
        event.seq = self.last_seq;
        let key = (event.comm.clone(), event.cgroup.clone());
        if !self.refused.contains_key(&key) && self.refused.len() >= TALLIED {
            let smallest = self
                .refused
                .iter()
                .min_by_key(|(_, n)| **n)
                .map(|(k, _)| k.clone());
            if let Some(smallest) = smallest {
                self.refused.remove(&smallest);
            }
        }
        *self.refused.entry(key).or_default() += 1 + u64::from(event.suppressed);
        if self.kept.len() == KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back(event);
        &self.kept[self.kept.len() - 1]
    }

    /// The kept events numbered above `after`, oldest first.
    pub(crate) fn since(&self, after: u64) -> Vec<EgressEvent> {
        self.kept
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.kept.len()
    }

    /// The `k` (comm, cgroup) pairs with the most refused connects, most first.
    pub(crate) fn top_refused(&self, k: usize) -> Vec<(String, String, u64)> {
        let mut all: Vec<_> = self
            .refused
            .iter()
            .map(|((comm, cgroup), n)| (comm.clone(), cgroup.clone(), *n))
            .collect();
        all.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1))));
        all.truncate(k);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(comm: &str, suppressed: u32) -> EgressEvent {
        EgressEvent {
            seq: 0,
            time: String::new(),
            pid: 1,
            uid: 0,
            user: None,
            comm: comm.to_owned(),
            exe: None,
            cmdline: None,
            cgroup: "/test".to_owned(),
            dest: std::net::IpAddr::from([198, 18, 0, 3]),
            port: 25,
            verdict: "deny".to_owned(),
            suppressed,
        }
    }

    #[test]
    fn keeps_the_last_thousand_numbered_in_order() {
        let mut log = EgressLog::default();
        for _ in 0..KEPT + 5 {
            log.push(event("a", 0));
        }
        assert_eq!(log.len(), KEPT);
        let all = log.since(0);
        assert_eq!(all[0].seq, 6);
        assert_eq!(all[KEPT - 1].seq, (KEPT + 5) as u64);
        assert_eq!(log.since((KEPT + 3) as u64).len(), 2);
    }

    #[test]
    fn the_tally_adds_what_the_kernel_suppressed_and_stays_bounded() {
        let mut log = EgressLog::default();
        log.push(event("spam", 9));
        log.push(event("spam", 0));
        log.push(event("curl", 0));
        assert_eq!(
            log.top_refused(10),
            vec![
                ("spam".to_owned(), "/test".to_owned(), 11),
                ("curl".to_owned(), "/test".to_owned(), 1)
            ]
        );
        for i in 0..TALLIED * 2 {
            log.push(event(&format!("p{i}"), 0));
        }
        assert!(log.refused.len() <= TALLIED);
        assert_eq!(log.top_refused(1)[0].2, 11, "the biggest stays");
    }
}
