//! The lists the kernel holds: the config's, the runtime entries and, while the bouncer is on,
//! CrowdSec's bans; their expiry, and what follows a runtime change.

use tracing::{error, info};

use super::{Daemon, warn_too_many};
use crate::{
    config::{CidrSet, Config},
    crowdsec::decisions::CrowdsecList,
    history::{Actor, Change},
    model::ListKind,
    netfilter,
    runtime::RuntimeLists,
};

impl Daemon {
    /// Removes runtime entries whose time has come.
    pub(super) fn expire(&mut self) {
        let due = match self.runtime.expire(crate::clock::now_unix()) {
            Ok(due) => due,
            Err(err) => {
                error!("saving the runtime lists: {err:#}");
                return;
            }
        };
        if due.is_empty() {
            return;
        }
        let mut allow_changed = false;
        let mut expired = Vec::new();
        for entry in due {
            if !self.held_otherwise(entry.list, &entry.cidr)
                && let Err(err) = self.datapath.remove_live(entry.list, entry.cidr)
            {
                error!(
                    "removing expired {} entry {}: {err:#}",
                    entry.list.as_str(),
                    entry.cidr
                );
                continue;
            }
            expired.push(format!(
                "runtime {} entry {}",
                entry.list.as_str(),
                entry.cidr
            ));
            allow_changed |= entry.list == ListKind::Allow;
        }
        match &expired[..] {
            [] => {}
            [one] => {
                let summary = format!("{one} expired");
                let change = Change::new("expired", Actor::Expiry, summary, Vec::new());
                self.history.record(change);
            }
            _ => {
                let summary = format!("{} runtime entries expired", expired.len());
                let change = Change::new("expired", Actor::Expiry, summary, expired);
                self.history.record(change);
            }
        }
        self.list_changed(if allow_changed {
            ListKind::Allow
        } else {
            ListKind::Deny
        });
    }

    /// After a runtime change of `list`: the gauges show it, and for the allow list policy
    /// synproxy's table exempts what it holds now. A failure of the latter leaves the filter as
    /// it is, and those peers meet SYNPROXY.
    pub(super) fn list_changed(&mut self, list: ListKind) {
        self.sync_shadow();
        self.publish();
        if list != ListKind::Allow || !netfilter::needed(&self.config) {
            return;
        }
        let allow = effective_list(&self.config, list, &self.runtime, &self.crowdsec);
        match netfilter::refill(&self.config, &allow) {
            Ok(exempt) => {
                info!("policy synproxy: {}", exempt.describe());
                warn_too_many(&exempt);
            }
            Err(err) => error!(
                "policy synproxy: the nftables sets of allowlisted sources keep their earlier \
                 entries: {err}"
            ),
        }
    }

    pub(super) fn config_list(&self, list: ListKind) -> &CidrSet {
        config_list(&self.config, list)
    }

    /// Whether the config or CrowdSec holds this entry, so that it stays in the kernel when its
    /// runtime entry goes.
    pub(super) fn held_otherwise(&self, list: ListKind, net: &ipnet::IpNet) -> bool {
        self.config_list(list).contains_net(net)
            || (list == ListKind::Deny
                && self.config.crowdsec.is_some()
                && self.crowdsec.enforces(net))
    }

    /// The entry of `list` in force (config, runtime or CrowdSec) that covers `net`, and whose it
    /// is; `None` if no entry covers all of it.
    pub(super) fn covering(
        &self,
        list: ListKind,
        net: &ipnet::IpNet,
    ) -> Option<(ipnet::IpNet, &'static str)> {
        if let Some(entry) = self.config_list(list).covering(net) {
            return Some((entry, "the config's"));
        }
        if let Some(entry) = self.runtime.set(list).covering(net) {
            return Some((entry, "the runtime"));
        }
        let bouncing = list == ListKind::Deny && self.config.crowdsec.is_some();
        bouncing
            .then(|| self.crowdsec.prefixes().covering(net))
            .flatten()
            .map(|entry| (entry, "a CrowdSec decision's"))
    }

    /// How many entries a list has in the kernel: the config's, plus runtime entries and CrowdSec
    /// prefixes the config does not have. Counted, not built: the config's lists may hold a
    /// million entries.
    pub(super) fn effective_len(&self, list: ListKind) -> usize {
        let config = self.config_list(list);
        let extra = extra_entries(&self.config, list, &self.runtime, &self.crowdsec);
        config.len() + extra.iter().filter(|net| !config.contains_net(net)).count()
    }

    /// The lists to load for `config`, with the runtime entries and CrowdSec's bans.
    pub(super) fn effective_lists(&self, config: &Config) -> (CidrSet, CidrSet) {
        effective_lists(config, &self.runtime, &self.crowdsec)
    }
}

/// The lists a shadow policy `config` holds: the same as [`effective_lists`], but for what
/// CrowdSec's decisions enforce against the candidate's own allowlist.
pub(super) fn candidate_lists(
    config: &Config,
    runtime: &RuntimeLists,
    crowdsec: &CrowdsecList,
) -> (CidrSet, CidrSet) {
    let allow = effective_list(config, ListKind::Allow, runtime, crowdsec);
    let runtime_deny = runtime.set(ListKind::Deny);
    let deny = if config.crowdsec.is_some() {
        let banned = crowdsec.prefixes_under(&config.allow);
        CidrSet::new(
            config
                .deny
                .iter()
                .chain(runtime_deny.iter())
                .chain(banned.iter()),
        )
    } else if runtime_deny.is_empty() {
        config.deny.clone()
    } else {
        CidrSet::new(config.deny.iter().chain(runtime_deny.iter()))
    };
    (allow, deny)
}

/// The lists to load: the config's (files and watched directories included), the runtime ones,
/// and, while the bouncer is on, the prefixes CrowdSec bans.
pub(super) fn effective_lists(
    config: &Config,
    runtime: &RuntimeLists,
    crowdsec: &CrowdsecList,
) -> (CidrSet, CidrSet) {
    (
        effective_list(config, ListKind::Allow, runtime, crowdsec),
        effective_list(config, ListKind::Deny, runtime, crowdsec),
    )
}

/// One of [`effective_lists`].
fn effective_list(
    config: &Config,
    list: ListKind,
    runtime: &RuntimeLists,
    crowdsec: &CrowdsecList,
) -> CidrSet {
    let base = config_list(config, list);
    let extra = extra_entries(config, list, runtime, crowdsec);
    if extra.is_empty() {
        base.clone()
    } else {
        CidrSet::new(base.iter().chain(extra.iter()))
    }
}

pub(super) fn config_list(config: &Config, list: ListKind) -> &CidrSet {
    match list {
        ListKind::Allow => &config.allow,
        ListKind::Deny => &config.deny,
    }
}

/// What a list holds beyond the config's: its runtime entries and, for the deny list while the
/// bouncer is on, the prefixes CrowdSec bans.
fn extra_entries(
    config: &Config,
    list: ListKind,
    runtime: &RuntimeLists,
    crowdsec: &CrowdsecList,
) -> CidrSet {
    let extra = runtime.set(list);
    if list == ListKind::Deny && config.crowdsec.is_some() {
        CidrSet::new(extra.iter().chain(crowdsec.prefixes().iter()))
    } else {
        extra
    }
}
