//! `port25d allow|deny add|del|list`: the running daemon's runtime lists.

use std::time::Duration;

use super::{ListAction, Ttl};
use crate::{control, model::ListKind, proto::Request};

pub(super) fn list_action(list: ListKind, action: ListAction) -> anyhow::Result<()> {
    let (socket, request) = match action {
        ListAction::Add { cidr, ttl, socket } => (
            socket,
            Request::Add {
                list,
                cidr,
                ttl_secs: match ttl {
                    Some(Ttl::Seconds(secs)) => Some(secs),
                    Some(Ttl::Never) | None => None,
                },
            },
        ),
        ListAction::Del { cidr, socket } => (socket, Request::Del { list, cidr }),
        ListAction::List { socket } => {
            let reply = control::entries(&socket.control_socket, list)?;
            println!(
                "{} list: {} runtime entries ({} more from the config)",
                reply.list,
                reply.runtime.len(),
                reply.from_config
            );
            for entry in reply.runtime {
                let expiry = entry.expires.map_or_else(
                    || "no expiry".to_owned(),
                    |at| {
                        let left = Duration::from_secs(at.saturating_sub(reply.now));
                        format!("expires in {}", humantime::format_duration(left))
                    },
                );
                println!("{:<44} {expiry}", entry.cidr.to_string());
            }
            if !reply.crowdsec.is_empty() {
                println!("{} decisions from CrowdSec:", reply.crowdsec.len());
                for held in reply.crowdsec {
                    let left = Duration::from_secs(held.expires.saturating_sub(reply.now));
                    println!(
                        "{:<44} crowdsec {} (decision {}, {}) expires in {}",
                        held.cidr.to_string(),
                        held.origin,
                        held.id,
                        held.scenario,
                        humantime::format_duration(left)
                    );
                }
            }
            return Ok(());
        }
    };
    println!("{}", control::command(&socket.control_socket, &request)?);
    Ok(())
}
