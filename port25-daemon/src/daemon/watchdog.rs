//! Every few seconds, whether port25's hooks are still attached: another tool may take a link
//! away from under the daemon (`bpftool link detach`, newer `xdp-loader unload --all`, an
//! interface deleted and re-created), and then port 25 is open with nothing saying so. Each loss is
//! logged as an ERROR, counted (`port25_detached_total`), shown in `status` and in
//! `port25_attached` (0), and with `reattach = true` the hook is attached again as soon as nothing
//! else holds the interface. docs/ARCHITECTURE.md, § Beside other XDP programs.

use tracing::{error, info, warn};

use super::{Daemon, egress::sync_hooks};
use crate::{
    clock::now_unix,
    datapath::{Error as DatapathError, LostHook},
    metrics::DetachedLabels,
    model::{Hook, XdpMode},
    proto::LostStatus,
};

/// A hook found detached, not attached again yet.
pub(super) struct Lost {
    pub status: LostStatus,
    /// The XDP mode the interface had.
    pub mode: Option<XdpMode>,
}

impl Daemon {
    pub(super) fn check_hooks(&mut self) {
        // Counted once `publish` has shown the loss (port25_attached 0): a scrape that sees the
        // count sees the rest too.
        let mut losses: Vec<(Hook, String)> = Vec::new();
        for hook in self.datapath.lost_hooks() {
            match hook {
                LostHook::Xdp { iface, occupant } => {
                    let mode = self
                        .datapath
                        .attachments()
                        .iter()
                        .find(|a| a.iface == iface)
                        .map(|a| a.mode);
                    let held_by = occupant.map(|o| o.to_string());
                    error!(
                        "{iface}: port25's XDP filter was detached by someone else (`bpftool link \
                         detach`, `xdp-loader unload`, the interface re-created): SMTP on {iface} \
                         is NOT filtered{}",
                        held_by
                            .as_ref()
                            .map_or_else(String::new, |h| format!("; {iface} now runs {h}"))
                    );
                    losses.push((Hook::Xdp, iface.clone()));
                    // The link is defunct: its pin goes, so that a new one can take the name.
                    self.datapath.detach(&iface);
                    self.lost.push(Lost {
                        status: LostStatus {
                            hook: Hook::Xdp,
                            iface: Some(iface),
                            since: now_unix(),
                            held_by,
                        },
                        mode,
                    });
                }
                LostHook::EgressGuard => {
                    error!(
                        "the egress guard's cgroup hooks were detached by someone else: outbound \
                         SMTP is NOT guarded"
                    );
                    losses.push((Hook::EgressGuard, String::new()));
                    self.datapath.detach_connect_hooks();
                    self.lost.push(Lost {
                        status: LostStatus {
                            hook: Hook::EgressGuard,
                            iface: None,
                            since: now_unix(),
                            held_by: None,
                        },
                        mode: None,
                    });
                }
            }
        }
        if self.config.reattach && !self.lost.is_empty() {
            self.reattach();
        }
        self.publish();
        for (hook, iface) in losses {
            self.count_detached(hook, &iface);
        }
    }

    /// Exports every hook's loss counter from the start, so that an alert sees a zero, not a gap.
    pub(super) fn count_no_loss_yet(&self) {
        let detached = &self.metrics.detached;
        for attachment in self.datapath.attachments() {
            let _ = detached.get_or_create(&DetachedLabels {
                hook: Hook::Xdp.as_str(),
                iface: attachment.iface.clone(),
            });
        }
        if self.datapath.hooks().is_some() {
            let _ = detached.get_or_create(&DetachedLabels {
                hook: Hook::EgressGuard.as_str(),
                iface: String::new(),
            });
        }
    }

    fn count_detached(&self, hook: Hook, iface: &str) {
        self.metrics
            .detached
            .get_or_create(&DetachedLabels {
                hook: hook.as_str(),
                iface: iface.to_owned(),
            })
            .inc();
    }

    /// After a reload: losses of what the config no longer asks for are no longer losses.
    pub(super) fn forget_unconfigured_losses(&mut self) {
        let config = &self.config;
        self.lost.retain(|lost| match &lost.status.iface {
            Some(iface) => {
                config.interfaces.contains(iface)
                    || config.egress.forward_interfaces.contains(iface)
            }
            None => config.egress.mode != crate::model::EgressMode::Off,
        });
    }

    /// Attaches again what was lost, where nothing else holds it now.
    fn reattach(&mut self) {
        let lost = std::mem::take(&mut self.lost);
        for mut entry in lost {
            // Only what the config asks for is here: a reload forgets the rest
            // (`forget_unconfigured_losses`).
            let result = match entry.status.iface.clone() {
                Some(iface) => match self.datapath.attach(
                    &iface,
                    self.config.xdp_mode,
                    self.config.xdp_coexist,
                ) {
                    Ok(attachment) => {
                        info!(
                            "{iface}: XDP filter attached again in {} mode after it was taken away",
                            attachment.mode
                        );
                        Ok(())
                    }
                    Err(DatapathError::Occupied { occupant, .. }) => {
                        let held = occupant.to_string();
                        if entry.status.held_by.as_ref() != Some(&held) {
                            warn!(
                                "{iface}: {held} holds the interface now; port25 attaches \
                                     again once it is gone"
                            );
                            entry.status.held_by = Some(held);
                        }
                        Err(entry)
                    }
                    Err(err) => {
                        warn!("{iface}: attaching again failed ({err:#}); trying again");
                        Err(entry)
                    }
                },
                None => match sync_hooks(&mut self.datapath, &self.config.egress) {
                    Ok(()) => {
                        info!("egress guard attached again after it was taken away");
                        Ok(())
                    }
                    Err(err) => {
                        warn!("the egress guard cannot attach again ({err:#}); trying again");
                        Err(entry)
                    }
                },
            };
            if let Err(entry) = result {
                self.lost.push(entry);
            }
        }
    }
}
