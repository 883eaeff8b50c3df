//! `port25d allow|deny add|del|list`: the running daemon's runtime lists.

use super::output::outln;
use super::{ListAction, Ttl};
use crate::{
    clock::expiry,
    control::{self, Probe, queue},
    model::ListKind,
    proto::Request,
    text::counted,
    users::is_root,
};

pub(super) fn list_action(list: ListKind, action: ListAction) -> anyhow::Result<()> {
    let (client, state, request) = match action {
        ListAction::Add {
            cidr,
            ttl,
            client,
            state,
        } => (
            client,
            state,
            Request::Add {
                list,
                cidr,
                ttl_secs: match ttl {
                    Some(Ttl::Seconds(secs)) => Some(secs),
                    Some(Ttl::Never) | None => None,
                },
            },
        ),
        ListAction::Del {
            cidr,
            client,
            state,
        } => (client, state, Request::Del { list, cidr }),
        ListAction::List { json, client } => {
            let reply = control::entries(&client.endpoint(), list)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&reply)?);
                return Ok(());
            }
            outln!(
                "{} list: {} ({} more from the config)",
                reply.list,
                counted(reply.runtime.len(), "runtime entry", "runtime entries"),
                reply.from_config
            );
            for entry in reply.runtime {
                let expiry = expiry(entry.expires, reply.now);
                outln!("{:<44} {expiry}", entry.cidr.to_string());
            }
            if !reply.crowdsec.is_empty() {
                outln!(
                    "{} from CrowdSec:",
                    counted(reply.crowdsec.len(), "decision", "decisions")
                );
                for held in reply.crowdsec {
                    outln!(
                        "{:<44} crowdsec {} (decision {}, {}) {}",
                        held.cidr.to_string(),
                        held.origin,
                        held.id,
                        held.scenario,
                        expiry(Some(held.expires), reply.now)
                    );
                }
            }
            return Ok(());
        }
    };
    let daemon = client.endpoint();
    if control::probe(&daemon.socket) == Probe::Absent {
        // A restart, a crash: the change must not be lost (fail2ban does not ask twice).
        if !is_root() {
            anyhow::bail!("port25d's state directory is root-only: run this as root");
        }
        let queued = queue::enqueue(&state.state_dir, &request)?;
        outln!(
            "port25d does not answer on {}: the change waits in {} and is carried out when \
             port25d starts",
            daemon.socket.display(),
            queued.display()
        );
        return Ok(());
    }
    outln!("{}", control::command(&daemon, &request)?);
    Ok(())
}
