//! Answers to what clients ask on the control socket: runtime list changes, lists, status; and
//! the list changes that waited in the state directory while no daemon answered.

use tracing::{error, info, warn};

use super::Daemon;
use crate::{
    clock::{expiry, now_unix},
    config::parse_cidr,
    control::{Peer, queue},
    datapath::{EgressCounters, EgressCounts, ifname},
    history::{Actor, Change},
    model::ListKind,
    proto::{
        EgressCount, EgressStatus, InterfaceStatus, ListReply, ListStatus, Request, Response,
        SmartHostStatus, Status, counter_rows,
    },
    users,
};

impl Daemon {
    /// Carries out the list changes asked while no daemon answered (`control::queue`).
    pub(super) fn apply_queued(&mut self) {
        for queue::Taken {
            name,
            owner,
            request,
        } in queue::take(&self.options.state_dir)
        {
            match request {
                Ok(Some(request)) => match self.handle(request, Actor::Queued { uid: owner }) {
                    Response::Ok { message } => info!("queued change {name}: {message}"),
                    Response::Error { message } => warn!("queued change {name} refused: {message}"),
                    _ => {}
                },
                Ok(None) => info!("queued change {name}: its TTL ran out while it waited"),
                Err(why) => warn!("queued change {name} dropped: {why}"),
            }
        }
    }

    /// A request from the control socket. Only root changes the policy (the socket is root's,
    /// 0600: this holds when a process with CAP_DAC_OVERRIDE, or a loosened mode, lets another
    /// uid in); reading is anyone's who can connect.
    pub(super) fn handle_from(&mut self, request: Request, peer: Peer) -> Response {
        let actor = Actor::Control {
            uid: peer.uid,
            pid: peer.pid,
            user: users::name_of(peer.uid),
        };
        if peer.uid != 0 && request.changes_policy() {
            warn!("refused on the control socket, {actor} is not root: {request}");
            return error(format!(
                "refused: {request} changes the policy, which needs root (uid 0); you are uid {}",
                peer.uid
            ));
        }
        self.handle(request, actor)
    }

    pub(super) fn handle(&mut self, request: Request, actor: Actor) -> Response {
        match request {
            Request::Add {
                list,
                cidr,
                ttl_secs,
            } => self.add(list, &cidr, ttl_secs, actor),
            Request::Del { list, cidr } => self.del(list, &cidr, actor),
            Request::List { list } => Response::Entries(ListReply {
                list,
                runtime: self.runtime.entries(list).cloned().collect(),
                from_config: self.config_list(list).len(),
                crowdsec: match list {
                    ListKind::Deny => self.crowdsec_entries(),
                    ListKind::Allow => Vec::new(),
                },
                now: now_unix(),
            }),
            Request::Status => Response::Status(Box::new(self.status())),
            Request::EgressLog { after } => Response::EgressLog {
                events: self.egress_log.lock().since(after),
            },
            Request::Why { address, port } => {
                match tokio::task::block_in_place(|| self.why(&address, port)) {
                    Ok(report) => Response::Why(Box::new(report)),
                    Err(message) => error(message),
                }
            }
            Request::ShadowLoad { config } => self.shadow_load(&config, actor),
            Request::ShadowStatus => Response::Shadow(Box::new(self.shadow_status())),
            Request::ShadowPromote => self.shadow_promote(actor),
            Request::ShadowDrop => self.shadow_drop(actor),
            Request::Detach => {
                let message = "detaching the filter and stopping port25d";
                let change = Change::new("detach", actor, message.to_owned(), Vec::new());
                self.history.record(change);
                Response::Ok {
                    message: message.into(),
                }
            }
        }
    }

    fn add(&mut self, list: ListKind, cidr: &str, ttl_secs: Option<u64>, actor: Actor) -> Response {
        let net = match parse_cidr(cidr) {
            Ok(net) => net,
            Err(reason) => return error(reason.to_string()),
        };
        let replaced = match self
            .runtime
            .add(list, net, ttl_secs, Some(actor.to_string()))
        {
            Ok(replaced) => replaced,
            Err(err) => return error(format!("saving the runtime lists: {err:#}")),
        };
        // Straight into the live generation: one entry appears, atomically.
        if let Err(err) = self.datapath.insert_live(list, net) {
            let _ = self.runtime.remove(list, net);
            return error(format!("writing {net} into the kernel: {err:#}"));
        }
        let now = now_unix();
        let expiry = expiry(ttl_secs.map(|ttl| now.saturating_add(ttl)), now);
        let mut message = match &replaced {
            Some(old) => format!(
                "replaced {net} in the {} list: {expiry} (it was: {})",
                list.as_str(),
                self::expiry(old.expires, now)
            ),
            None => format!("added {net} to the {} list ({expiry})", list.as_str()),
        };
        if list == ListKind::Allow
            && let Some((entry, whose)) = self.covering(ListKind::Deny, &net)
        {
            // The kernel looks at the deny list first.
            message.push_str(&format!(
                "; but {whose} deny entry {entry} covers it, and deny beats allow: {net} stays \
                 dropped while that entry stands"
            ));
        }
        self.history.record(Change::new(
            &format!("{} add", list.as_str()),
            actor,
            message.clone(),
            Vec::new(),
        ));
        self.list_changed(list);
        Response::Ok { message }
    }

    fn del(&mut self, list: ListKind, cidr: &str, actor: Actor) -> Response {
        let net = match parse_cidr(cidr) {
            Ok(net) => net,
            Err(reason) => return error(reason.to_string()),
        };
        let in_config = self.config_list(list).contains_net(&net);
        let held_otherwise = self.held_otherwise(list, &net);
        let was_runtime = match self.runtime.remove(list, net) {
            Ok(was) => was,
            Err(err) => return error(format!("saving the runtime lists: {err:#}")),
        };
        if !was_runtime {
            if in_config {
                return error(format!(
                    "{net} is in the {} list of the config ({}), not a runtime entry: remove it there and reload",
                    list.as_str(),
                    self.config.source
                ));
            }
            // Not an error: fail2ban unbans what may have expired already, and the outcome asked
            // for (the entry is gone) holds.
            let wider = match self.runtime.set(list).covering(&net) {
                Some(entry) => format!(
                    "; the runtime entry {entry} covers it (`port25d {} del {entry}` removes that)",
                    list.as_str()
                ),
                None => String::new(),
            };
            return Response::Ok {
                message: format!(
                    "{net} is not an entry of the runtime {} list: nothing to remove{wider}",
                    list.as_str()
                ),
            };
        }
        if held_otherwise {
            let by = if in_config {
                format!("the config's {} list has it", list.as_str())
            } else {
                "a CrowdSec decision bans it".to_owned()
            };
            let message = format!("removed the runtime entry {net}; it stays in force: {by}");
            self.history.record(Change::new(
                &format!("{} del", list.as_str()),
                actor,
                message.clone(),
                Vec::new(),
            ));
            return Response::Ok { message };
        }
        if let Err(err) = self.datapath.remove_live(list, net) {
            error!("removing {net} from the kernel: {err:#}");
            return error(format!("removing {net} from the kernel: {err:#}"));
        }
        let message = format!("removed {net} from the {} list", list.as_str());
        self.history.record(Change::new(
            &format!("{} del", list.as_str()),
            actor,
            message.clone(),
            Vec::new(),
        ));
        self.list_changed(list);
        Response::Ok { message }
    }

    fn status(&self) -> Status {
        let lists = [ListKind::Allow, ListKind::Deny]
            .into_iter()
            .map(|list| ListStatus {
                list: list.as_str().to_owned(),
                from_config: self.config_list(list).len(),
                runtime: self.runtime.len(list),
                crowdsec: match list {
                    ListKind::Deny if self.config.crowdsec.is_some() => {
                        self.crowdsec.prefixes().len()
                    }
                    _ => 0,
                },
                total: self.effective_len(list),
            })
            .collect();
        let counters = self
            .datapath
            .totals()
            .map(|totals| {
                counter_rows(&totals, |ifindex| {
                    ifname(ifindex).unwrap_or_else(|| format!("ifindex {ifindex}"))
                })
            })
            .unwrap_or_default();
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            config: self.config.source.clone(),
            interfaces: self
                .datapath
                .attachments()
                .iter()
                .map(|a| InterfaceStatus {
                    iface: a.iface.clone(),
                    ifindex: a.ifindex,
                    xdp_mode: a.mode,
                    synacks_watched: a.watches_synacks,
                    synack_watcher_pinned: a.synack_watcher_pinned,
                    adopted: a.adopted,
                    in_dispatcher: a.in_dispatcher,
                })
                .collect(),
            policy: self.config.policy,
            mode: self.config.mode,
            monitor_from_command_line: self.options.overrides.monitor,
            ports: self.config.ports.clone(),
            on_exit: self.config.on_exit,
            pin_dir: self.options.pin_dir.display().to_string(),
            pins_persistent: self.pins_persist,
            lists,
            generation: self.datapath.generation(),
            reloads_ok: self.reloads_ok,
            reloads_failed: self.reloads_failed,
            last_reload_error: self.last_reload_error.clone(),
            tracked_sources: self.datapath.source_tables().read_all().len(),
            counters,
            egress: self.egress_status(),
            crowdsec: self
                .config
                .crowdsec
                .is_some()
                .then(|| self.crowdsec_status.lock().to_status()),
            lost: self.lost.iter().map(|lost| lost.status.clone()).collect(),
            reattach: self.config.reattach,
            shadow: self
                .shadow
                .as_ref()
                .map(|c| (c.path.display().to_string(), c.since)),
        }
    }

    fn egress_status(&self) -> EgressStatus {
        let egress = &self.config.egress;
        let hooks = self.datapath.hooks();
        let names = std::fs::read_to_string("/etc/passwd")
            .map(|text| users::names_by_uid(&text))
            .unwrap_or_default();
        let counts = |read: fn(&EgressCounters) -> Result<EgressCounts, _>| {
            let counts = read(&self.egress_counters).unwrap_or_else(|err| {
                error!("reading the egress counters: {err:#}");
                Vec::new()
            });
            counts
                .into_iter()
                .filter(|(_, _, n)| *n > 0)
                .map(|(verdict, reason, count)| EgressCount {
                    verdict: verdict.label().to_owned(),
                    reason: reason.label().to_owned(),
                    count,
                })
                .collect()
        };
        EgressStatus {
            mode: egress.mode,
            cgroup: hooks.map(|hooks| crate::config::cgroup_display(&hooks.cgroup)),
            adopted: hooks.is_some_and(|hooks| hooks.adopted),
            ports: egress.ports.clone(),
            smart_hosts: egress
                .smart_hosts
                .iter()
                .map(|net| net.to_string())
                .collect(),
            smart_host_names: egress
                .smart_host_names
                .iter()
                .map(|host| SmartHostStatus {
                    name: host.name.clone(),
                    addrs: host.addrs.clone(),
                })
                .collect(),
            allow_users: egress
                .allow_users
                .iter()
                .map(|uid| match names.get(uid) {
                    Some(name) => format!("{name} ({uid})"),
                    None => uid.to_string(),
                })
                .collect(),
            allow_cgroups: egress
                .allow_cgroups
                .iter()
                .map(|c| c.path.clone())
                .collect(),
            forward_interfaces: egress.forward_interfaces.clone(),
            connects: counts(EgressCounters::connects),
            forwarded: counts(EgressCounters::forwarded),
            events_lost: self.egress_counters.lost().unwrap_or(0),
            events_kept: self.egress_log.lock().len(),
        }
    }
}

pub(super) fn error(message: impl Into<String>) -> Response {
    Response::Error {
        message: message.into(),
    }
}
