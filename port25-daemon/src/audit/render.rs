//! The audit report as text: what was looked at, the filter, the findings grouped by kind, a
//! summary.

use std::fmt::Write as _;

use super::model::*;

/// The report as text: what was looked at, the filter, the findings grouped by kind, a summary.
pub(super) fn render(report: &Report) -> String {
    let mut out = String::new();
    let interfaces = list_or(&report.interfaces, "none besides loopback");
    let _ = writeln!(
        out,
        "port25d audit of SMTP ports {}; network interfaces up: {interfaces}",
        join(&report.smtp_ports)
    );
    let _ = writeln!(out, "filter: {}", describe_filter(&report.filter));
    for note in &report.filter.notes {
        let _ = writeln!(out, "  note: {note}");
    }
    let sections = [
        (Kind::Listener, "Listening"),
        (Kind::NoListener, "Listening"),
        (Kind::Outbound, "Outbound SMTP (this host as a client)"),
        (Kind::Inbound, "Inbound SMTP sessions"),
        (Kind::Filter, "Filter"),
    ];
    let mut last_title = "";
    for (kind, title) in sections {
        let findings: Vec<&Finding> = report.findings.iter().filter(|f| f.kind == kind).collect();
        if findings.is_empty() {
            continue;
        }
        if title != last_title {
            let _ = writeln!(out, "\n{title}:");
            last_title = title;
        }
        for finding in findings {
            let _ = writeln!(out, "  {}", finding.what);
            if finding.kind == Kind::Listener && !finding.reachable_on.is_empty() {
                let filtered = list_or(&finding.filtered_on, "none");
                let _ = writeln!(
                    out,
                    "    reachable on {}; filtered on {filtered}",
                    finding.reachable_on.join(", ")
                );
            }
            let _ = writeln!(out, "    {}", finding.verdict);
        }
    }
    let _ = writeln!(out, "\n{}", report.summary.line());
    out
}

fn describe_filter(filter: &FilterView) -> String {
    let attached: Vec<String> = filter
        .attached
        .iter()
        .map(|a| format!("{} ({} XDP)", a.iface, a.xdp_mode))
        .collect();
    let ports = join(&filter.ports);
    let mode = if filter.monitor { "monitor" } else { "enforce" };
    match filter.source {
        ViewSource::Daemon => format!(
            "port25d (pid {}) answers on {}: attached to {}; protects port {ports}; mode {mode}",
            filter.daemon_pid.unwrap_or_default(),
            filter.control_socket,
            if attached.is_empty() {
                "nothing".to_owned()
            } else {
                attached.join(", ")
            }
        ),
        ViewSource::Pins => format!(
            "no port25d answers on {}, but the filter is pinned in {}: attached to {}, enforcing its last policy; protects port {ports}{}; mode {mode}",
            filter.control_socket,
            filter.pin_dir,
            attached.join(", "),
            if filter.ports_from == ViewSource::Pins {
                ""
            } else {
                " (assumed: the pinned policy could not be read)"
            }
        ),
        ViewSource::Nothing => format!(
            "not attached anywhere (no port25d answers on {}, nothing pinned in {}); port25d protects port {ports} by default",
            filter.control_socket, filter.pin_dir
        ),
    }
}

fn join(ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    ports.join(", ")
}

// ---------------------------------------------------------------------------------------------
// Reading the host
// ---------------------------------------------------------------------------------------------

/// "a, b, c", or `none` when there is nothing to list.
fn list_or(items: &[String], none: &str) -> String {
    if items.is_empty() {
        none.to_owned()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use crate::audit::procnet::{self, Socket};

    #[test]
    fn rendering_groups_findings_and_ends_with_the_summary() {
        let host = Host {
            sockets: vec![
                Socket {
                    local: "0.0.0.0:25".parse().expect("an address"),
                    remote: "0.0.0.0:0".parse().expect("an address"),
                    state: procnet::TcpState::LISTEN,
                    uid: 0,
                    inode: 7,
                },
                Socket {
                    local: "198.18.0.1:40000".parse().expect("an address"),
                    remote: "198.18.9.9:25".parse().expect("an address"),
                    state: procnet::TcpState::ESTABLISHED,
                    uid: 0,
                    inode: 8,
                },
            ],
            owners: HashMap::from([
                (
                    7,
                    vec![Process {
                        pid: 42,
                        comm: "smtp-sink".to_owned(),
                        exe: Some("/usr/sbin/smtp-sink".to_owned()),
                    }],
                ),
                (
                    8,
                    vec![Process {
                        pid: 77,
                        comm: "perl".to_owned(),
                        exe: None,
                    }],
                ),
            ]),
            users: HashMap::from([(0, "root".to_owned())]),
            interfaces: vec![Interface {
                name: "gw0".to_owned(),
                up: true,
                loopback: false,
                addrs: vec!["198.18.0.1".parse().expect("an address")],
            }],
            unknown_owner_hint: String::new(),
        };
        let filter = FilterView::nothing("/run/port25/control.sock", "/sys/fs/bpf/port25");
        let text = render(&super::super::judge(&host, &filter));
        let expected = "\
port25d audit of SMTP ports 25, 465, 587; network interfaces up: gw0
filter: not attached anywhere (no port25d answers on /run/port25/control.sock, nothing pinned in /sys/fs/bpf/port25); port25d protects port 25 by default

Listening:
  listening on 0.0.0.0:25: smtp-sink (pid 42, /usr/sbin/smtp-sink, user root)
    reachable on gw0; filtered on none
    NOT PROTECTED: no port25 filter is attached: run port25d on gw0 (interfaces = [\"gw0\"]) or bind the MTA to a filtered address

Outbound SMTP (this host as a client):
  to port 25: perl (pid 77, user root), 1 connection: 198.18.9.9:25
    CHECK: outbound SMTP from perl (pid 77): spam bot or a script? allow outbound 25 only to the smart host

2 findings need action (1 NOT PROTECTED, 1 CHECK); 0 ok, 0 info
";
        assert_eq!(text, expected);
    }
}
