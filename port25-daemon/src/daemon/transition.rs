//! The one ordering of the steps that take the kernel from the running state (none at start-up)
//! to a new config: start-up and reload both go through it (docs/ARCHITECTURE.md, § A reload).
//! Each step records what it acquired, so that a failed transition can be told apart from a
//! half-done one and undone.

use anyhow::Context as _;
use tracing::{error, info};

use super::egress::{forward_changes, sync_hooks, xdp_interfaces};
use super::sync_netfilter;
use crate::{
    config::{CidrSet, Config},
    datapath::Datapath,
    model::EgressMode,
    netfilter,
};

/// What a transition did to the kernel, in the order it did it.
#[derive(Debug, Default)]
pub(super) struct Acquired {
    /// Forward-only interfaces the new config no longer lists, detached.
    pub detached: Vec<String>,
    /// The egress guard's hooks attached (or moved) for the new config.
    pub hooks: bool,
    /// Policy synproxy's netfilter table installed (or replaced).
    pub netfilter: bool,
    /// The new policy generation is live.
    pub policy: bool,
    /// XDP interfaces attached.
    pub attached: Vec<String>,
}

/// Undoes a start that failed during or after its transition: what it attached and pinned goes,
/// and SYNPROXY's table if it installed it; a previous daemon's filter it was taking over stays
/// (`Datapath::abandon`).
pub(super) fn abandon_start(datapath: Datapath, acquired: &Acquired) {
    error!("the start failed: undoing it");
    if acquired.netfilter
        && !datapath.adopted()
        && let Err(err) = netfilter::remove()
    {
        error!("removing policy synproxy's netfilter rules: {err}");
    }
    datapath.abandon();
}

/// Takes the kernel from `from` (`None`: nothing yet, start-up) to `to`, whose lists are `allow`
/// and `deny`. On error, what was done is in `acquired`; the running policy stays live unless
/// `acquired.policy`.
pub(super) fn transition(
    datapath: &mut Datapath,
    from: Option<&Config>,
    to: &Config,
    (allow, deny): (CidrSet, CidrSet),
    acquired: &mut Acquired,
) -> anyhow::Result<()> {
    let (gone, added) = match from {
        Some(from) => forward_changes(from, to),
        None => (Vec::new(), xdp_interfaces(to).cloned().collect()),
    };
    // 1. Forward-only interfaces go before the policy that no longer lists them, or the ingress
    // filter would judge them under it.
    for iface in gone {
        datapath.detach(&iface);
        acquired.detached.push(iface);
    }
    // 2. The egress guard's hooks come before the policy that uses them: until their settings
    // arrive (step 4) they let everything through.
    if to.egress.mode != EgressMode::Off {
        sync_hooks(datapath, &to.egress)?;
        acquired.hooks = true;
    }
    // 3. SYNPROXY's table comes before a policy that answers SYNs with cookies: the ACK that
    // brings a valid cookie back must find it.
    if netfilter::needed(to) {
        sync_netfilter(to, &allow).context("policy synproxy: installing its netfilter rules")?;
        acquired.netfilter = true;
    }
    // 4. The policy itself: one generation swap.
    datapath
        .apply_policy(to, allow, deny)
        .context("writing the policy into the kernel maps")?;
    acquired.policy = true;
    // 5. What the new policy no longer needs goes after it: SYNPROXY's table (one a killed daemon
    // left, at start-up), and the egress guard's hooks.
    if !netfilter::needed(to)
        && let Err(err) = netfilter::remove()
    {
        error!("policy synproxy no longer applies, but removing its netfilter rules failed: {err}");
    }
    if to.egress.mode == EgressMode::Off {
        sync_hooks(datapath, &to.egress)?;
    }
    // 6. New XDP interfaces last: their first packet meets the new policy.
    for iface in added {
        let attachment = datapath.attach(&iface, to.xdp_mode, to.xdp_coexist)?;
        info!(
            "attached to {} (ifindex {}) in {} XDP mode{}",
            attachment.iface,
            attachment.ifindex,
            attachment.mode,
            if to.interfaces.contains(&iface) {
                ""
            } else {
                " for the forwarded-SMTP guard"
            }
        );
        acquired.attached.push(iface);
    }
    Ok(())
}
