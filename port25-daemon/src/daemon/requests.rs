//! Answers to what clients ask on the control socket: runtime list changes, lists, status.

use tracing::{error, info};

use super::Daemon;
use crate::{
    config::parse_cidr,
    datapath::ifname,
    model::ListKind,
    proto::{InterfaceStatus, ListReply, ListStatus, Request, Response, Status, counter_rows},
    runtime::now_unix,
};

impl Daemon {
    pub(super) fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Add {
                list,
                cidr,
                ttl_secs,
            } => self.add(list, &cidr, ttl_secs),
            Request::Del { list, cidr } => self.del(list, &cidr),
            Request::List { list } => Response::Entries(ListReply {
                list,
                runtime: self.runtime.entries(list).cloned().collect(),
                from_config: self.config_list(list).len(),
                now: now_unix(),
            }),
            Request::Status => Response::Status(Box::new(self.status())),
            Request::Detach => Response::Ok {
                message: "detaching the filter and stopping port25d".into(),
            },
        }
    }

    fn add(&mut self, list: ListKind, cidr: &str, ttl_secs: Option<u64>) -> Response {
        let net = match parse_cidr(cidr) {
            Ok(net) => net,
            Err(reason) => return error(reason.to_string()),
        };
        if let Err(err) = self.runtime.add(list, net, ttl_secs) {
            return error(format!("saving the runtime lists: {err:#}"));
        }
        // Straight into the live generation: one entry appears, atomically.
        if let Err(err) = self.datapath.insert_live(list, net) {
            let _ = self.runtime.remove(list, net);
            return error(format!("writing {net} into the kernel: {err:#}"));
        }
        let expiry = ttl_secs.map_or_else(
            || "no expiry".to_owned(),
            |ttl| {
                format!(
                    "expires in {}",
                    humantime::format_duration(std::time::Duration::from_secs(ttl))
                )
            },
        );
        info!("runtime {} add {net} ({expiry})", list.as_str());
        self.publish();
        Response::Ok {
            message: format!("added {net} to the {} list ({expiry})", list.as_str()),
        }
    }

    fn del(&mut self, list: ListKind, cidr: &str) -> Response {
        let net = match parse_cidr(cidr) {
            Ok(net) => net,
            Err(reason) => return error(reason.to_string()),
        };
        let in_config = self.config_list(list).contains_net(&net);
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
            return Response::Ok {
                message: format!(
                    "{net} is not in the runtime {} list: nothing to remove",
                    list.as_str()
                ),
            };
        }
        if in_config {
            info!(
                "runtime {} del {net}: it stays, the config lists it",
                list.as_str()
            );
            return Response::Ok {
                message: format!(
                    "removed the runtime entry {net}; it stays in force: the config's {} list has it",
                    list.as_str()
                ),
            };
        }
        if let Err(err) = self.datapath.remove_live(list, net) {
            error!("removing {net} from the kernel: {err:#}");
            return error(format!("removing {net} from the kernel: {err:#}"));
        }
        info!("runtime {} del {net}", list.as_str());
        self.publish();
        Response::Ok {
            message: format!("removed {net} from the {} list", list.as_str()),
        }
    }

    fn status(&self) -> Status {
        let lists = [ListKind::Allow, ListKind::Deny]
            .into_iter()
            .map(|list| ListStatus {
                list: list.as_str().to_owned(),
                from_config: self.config_list(list).len(),
                runtime: self.runtime.len(list),
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
                    egress_watched: a.watches_egress,
                    adopted: a.adopted,
                })
                .collect(),
            policy: self.config.policy,
            mode: self.config.mode,
            ports: self.config.ports.clone(),
            on_exit: self.config.on_exit,
            pin_dir: self.options.pin_dir.display().to_string(),
            pins_persistent: self.pins_persist,
            lists,
            generation: self.datapath.generation(),
            reloads_ok: self.reloads_ok,
            reloads_failed: self.reloads_failed,
            tracked_sources: self.datapath.source_tables().read_all().len(),
            counters,
        }
    }
}

fn error(message: impl Into<String>) -> Response {
    Response::Error {
        message: message.into(),
    }
}
