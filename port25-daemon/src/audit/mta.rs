//! The mail server's own configuration, as far as the audit compares it with port25's policy:
//! Postfix's through `postconf`, Exim's through `exim -bP config` (the configuration as Exim
//! reads it, macros expanded where used). Other MTAs' (Sendmail, OpenSMTPD,
//! ...) are not read, and the report says so.

use std::{
    net::{IpAddr, SocketAddr, ToSocketAddrs as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde::Serialize;

/// Which MTA's configuration was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum MtaKind {
    Postfix,
    Exim,
}

impl MtaKind {
    /// The setting that names the smart host.
    pub(crate) fn relayhost_key(self) -> &'static str {
        match self {
            Self::Postfix => "relayhost",
            Self::Exim => "dc_smarthost",
        }
    }

    /// The setting that lists the networks allowed to relay.
    pub(crate) fn relay_networks_key(self) -> &'static str {
        match self {
            Self::Postfix => "mynetworks",
            Self::Exim => "relay_from_hosts",
        }
    }

    /// Where that setting is written.
    pub(crate) fn config_file(self, config_dir: &str) -> String {
        match self {
            Self::Postfix => format!("{config_dir}/main.cf"),
            Self::Exim => "/etc/exim4/update-exim4.conf.conf".to_owned(),
        }
    }
}

/// A smart host the MTA hands outbound mail to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Relayhost {
    /// As the MTA's configuration writes it: `[smtp.example.net]:587`.
    pub written: String,
    pub host: String,
    pub port: u16,
    /// Its addresses (an IP as written, or the name's A and AAAA records).
    pub addrs: Vec<IpAddr>,
    /// Why it has no addresses.
    pub unresolved: Option<String>,
}

/// The parts of the MTA's configuration the audit compares with port25's.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct MtaConfig {
    pub kind: MtaKind,
    /// The command that read it: `postconf -c /etc/postfix`.
    pub read_with: String,
    /// The directory of its main configuration file.
    pub config_dir: String,
    /// Empty: it delivers straight to each domain's MX hosts.
    pub relayhosts: Vec<Relayhost>,
    /// The networks it relays for without authentication, as written.
    pub relay_networks: Vec<String>,
    /// Content filters it hands mail to and takes it back from (Postfix's `content_filter`).
    pub mail_filters: Vec<IpAddr>,
    /// The user its delivery agents run as.
    pub user: Option<String>,
    /// What could not be read.
    pub notes: Vec<String>,
}

/// Postfix's configuration through `postconf` (of `config_dir`, else its default), else Exim's
/// through `exim4 -bP`/`exim -bP`; `None` when neither is installed.
pub(crate) fn read(postfix_config: Option<&Path>) -> Option<MtaConfig> {
    read_postfix(postfix_config).or_else(read_exim)
}

/// Postfix's parameters this audit compares.
const POSTFIX_PARAMETERS: [&str; 5] = [
    "config_directory",
    "relayhost",
    "mynetworks",
    "content_filter",
    "mail_owner",
];

fn read_postfix(config_dir: Option<&Path>) -> Option<MtaConfig> {
    let mut command = Command::new("postconf");
    let mut read_with = "postconf".to_owned();
    if let Some(dir) = config_dir {
        command.arg("-c").arg(dir);
        read_with = format!("postconf -c {}", dir.display());
    }
    command.arg("-x").args(POSTFIX_PARAMETERS);
    let out = match command.stdin(Stdio::null()).output() {
        Ok(out) => out,
        Err(_) if config_dir.is_none() => return None,
        Err(err) => {
            return Some(unreadable(MtaKind::Postfix, &read_with, config_dir, err));
        }
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Some(unreadable(MtaKind::Postfix, &read_with, config_dir, err));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |name: &str| parameter(&text, name).unwrap_or_default();
    let mut notes = Vec::new();
    Some(MtaConfig {
        kind: MtaKind::Postfix,
        read_with,
        config_dir: value("config_directory"),
        relayhosts: postfix_relayhosts(&value("relayhost")),
        relay_networks: postfix_networks(&value("mynetworks"), &mut notes),
        mail_filters: postfix_filter_hosts(&value("content_filter")),
        user: Some(value("mail_owner")).filter(|user| !user.is_empty()),
        notes,
    })
}

/// An MTA whose configuration its tool would not print.
fn unreadable(
    kind: MtaKind,
    read_with: &str,
    config_dir: Option<&Path>,
    err: impl std::fmt::Display,
) -> MtaConfig {
    MtaConfig {
        kind,
        read_with: read_with.to_owned(),
        config_dir: config_dir
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
        relayhosts: Vec::new(),
        relay_networks: Vec::new(),
        mail_filters: Vec::new(),
        user: None,
        notes: vec![format!("`{read_with}` failed: {err}")],
    }
}

/// `name = value` in postconf's or exim's output.
fn parameter(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        let key = key.trim();
        let key = key.rsplit(' ').next().unwrap_or(key);
        (key == name).then(|| value.trim().to_owned())
    })
}

/// `relayhost = [smtp.example.net]:587, backup.example.net`: each host, with its addresses. A
/// name not in brackets is an MX lookup for Postfix; the audit, with no MX lookup of its own,
/// takes its A and AAAA records.
pub(crate) fn postfix_relayhosts(value: &str) -> Vec<Relayhost> {
    value
        .split([',', ' ', '\t'])
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (host, port) = split_host_port(item);
            let host = host.strip_prefix("ipv6:").unwrap_or(host);
            relayhost(item, host, port)
        })
        .collect()
}

/// `[host]:port`, `host:port`, `[host]`, `host` -> (host, port); 25 when none is written.
fn split_host_port(item: &str) -> (&str, u16) {
    if let Some(rest) = item.strip_prefix('[') {
        let (host, after) = rest.split_once(']').unwrap_or((rest, ""));
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (host, port.unwrap_or(25));
    }
    match item.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().unwrap_or(25)),
        _ => (item, 25),
    }
}

fn relayhost(written: &str, host: &str, port: u16) -> Relayhost {
    let (addrs, unresolved) = match host.parse::<IpAddr>() {
        Ok(ip) => (vec![ip], None),
        Err(_) => match (host, port).to_socket_addrs() {
            Ok(addrs) => {
                let mut ips: Vec<IpAddr> = addrs.map(|a: SocketAddr| a.ip()).collect();
                ips.dedup();
                (ips, None)
            }
            Err(err) => (Vec::new(), Some(format!("{host} does not resolve: {err}"))),
        },
    };
    Relayhost {
        written: written.to_owned(),
        host: host.to_owned(),
        port,
        addrs,
        unresolved,
    }
}

/// `mynetworks = 127.0.0.0/8 [::1]/128, 198.18.0.0/15`: the entries, brackets removed; tables and
/// files are noted as not read.
pub(crate) fn postfix_networks(value: &str, notes: &mut Vec<String>) -> Vec<String> {
    let mut networks = Vec::new();
    for item in value.split([',', ' ', '\t']).filter(|i| !i.is_empty()) {
        let network = item.replace(['[', ']'], "");
        let is_address =
            network.parse::<IpAddr>().is_ok() || network.parse::<ipnet::IpNet>().is_ok();
        if !is_address && (item.contains(':') || item.starts_with('/')) {
            notes.push(format!(
                "mynetworks entry {item} is a table or a file: its networks are not read"
            ));
            continue;
        }
        networks.push(network);
    }
    networks
}

/// `content_filter = smtp-amavis:[198.18.0.7]:10024`: the filter's address, when written as one.
pub(crate) fn postfix_filter_hosts(value: &str) -> Vec<IpAddr> {
    let Some((_transport, nexthop)) = value.split_once(':') else {
        return Vec::new();
    };
    let (host, _port) = split_host_port(nexthop);
    let host = host.strip_prefix("ipv6:").unwrap_or(host);
    host.parse().into_iter().collect()
}

/// Exim's configuration: Debian's smart-host macro, the `relay_from_hosts` host list and the user
/// it runs as.
fn read_exim() -> Option<MtaConfig> {
    let binary = ["exim4", "exim"]
        .into_iter()
        .find(|name| which(name).is_some())?;
    let read_with = format!("{binary} -bP");
    let mut notes = vec![format!(
        "Exim: only Debian's smart host (dc_smarthost), relay_from_hosts and exim_user are \
         read; other routers are not"
    )];
    let mut ask = |args: &[&str]| -> Option<String> {
        let out = Command::new(binary)
            .arg("-bP")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        if out.status.success() {
            Some(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            notes.push(format!(
                "`{binary} -bP {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            None
        }
    };
    let config = ask(&["config"]).unwrap_or_default();
    let user = ask(&["exim_user"]).and_then(|text| parameter(&text, "exim_user"));
    let (relayhosts, relay_networks) = exim_config(&config, &mut notes);
    Some(MtaConfig {
        kind: MtaKind::Exim,
        read_with,
        config_dir: "/etc/exim4".to_owned(),
        relayhosts,
        relay_networks,
        mail_filters: Vec::new(),
        user,
        notes,
    })
}

/// Debian's smart host (the `DCsmarthost` macro) and the `relay_from_hosts` host list, from
/// `exim -bP config` (which prints the configuration with macros expanded where used). Items of
/// the list that are not addresses or networks (names, lookups, `+lists`) are noted, not read.
pub(crate) fn exim_config(config: &str, notes: &mut Vec<String>) -> (Vec<Relayhost>, Vec<String>) {
    let smarthosts = parameter(config, "DCsmarthost").unwrap_or_default();
    let mut networks = Vec::new();
    for item in exim_host_list(&parameter(config, "relay_from_hosts").unwrap_or_default()) {
        if item.parse::<IpAddr>().is_ok() || item.parse::<ipnet::IpNet>().is_ok() {
            networks.push(item);
        } else {
            notes.push(format!(
                "relay_from_hosts item {item} is not an address: not read"
            ));
        }
    }
    (exim_smarthosts(&smarthosts), networks)
}

/// `smtp.example.net::587 : backup.example.net` (Exim's list, `::` a colon in an item).
pub(crate) fn exim_smarthosts(value: &str) -> Vec<Relayhost> {
    exim_host_list(value)
        .iter()
        .map(|item| {
            let (host, port) = split_host_port(item);
            relayhost(item, host, port)
        })
        .collect()
}

/// An Exim list: `:`-separated, `::` for a literal colon, or `<; a; b` with another separator.
pub(crate) fn exim_host_list(value: &str) -> Vec<String> {
    let (separator, body) = match value.strip_prefix('<') {
        Some(rest) if !rest.is_empty() => {
            let separator = rest.chars().next().unwrap_or(':');
            (separator, &rest[separator.len_utf8()..])
        }
        _ => (':', value),
    };
    let doubled = format!("{separator}{separator}");
    body.replace(&doubled, "\u{0}")
        .split(separator)
        .map(|item| {
            item.replace('\u{0}', &separator.to_string())
                .trim()
                .to_owned()
        })
        .filter(|item| !item.is_empty())
        .collect()
}

/// Where `name` is on `PATH` (and the sbin directories, which root's PATH has).
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_relayhosts_as_written() {
        let hosts = postfix_relayhosts("[198.18.5.5]:587, [ipv6:2001:db8::5], 198.18.6.6:2525");
        let seen: Vec<(String, u16, Vec<IpAddr>)> = hosts
            .into_iter()
            .map(|h| (h.host, h.port, h.addrs))
            .collect();
        assert_eq!(
            seen,
            vec![
                (
                    "198.18.5.5".to_owned(),
                    587,
                    vec!["198.18.5.5".parse().unwrap()]
                ),
                (
                    "2001:db8::5".to_owned(),
                    25,
                    vec!["2001:db8::5".parse().unwrap()]
                ),
                (
                    "198.18.6.6".to_owned(),
                    2525,
                    vec!["198.18.6.6".parse().unwrap()]
                ),
            ]
        );
        assert!(postfix_relayhosts("").is_empty());
    }

    #[test]
    fn postfix_networks_and_filters() {
        let mut notes = Vec::new();
        let networks = postfix_networks(
            "127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128, hash:/etc/postfix/network_table /etc/postfix/nets",
            &mut notes,
        );
        assert_eq!(
            networks,
            vec!["127.0.0.0/8", "::ffff:127.0.0.0/104", "::1/128"]
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert_eq!(
            postfix_filter_hosts("smtp-amavis:[198.18.0.7]:10024"),
            vec!["198.18.0.7".parse::<IpAddr>().unwrap()]
        );
        assert!(postfix_filter_hosts("").is_empty());
        assert!(postfix_filter_hosts("amavis:localhost:10024").is_empty());
    }

    #[test]
    fn exim_lists() {
        assert_eq!(
            exim_host_list("127.0.0.1 : ::::1"),
            vec!["127.0.0.1", "::1"]
        );
        assert_eq!(
            exim_host_list("<; 127.0.0.1 ; 2001:db8::/32"),
            vec!["127.0.0.1", "2001:db8::/32"]
        );
        let hosts = exim_smarthosts("198.18.5.5::587");
        assert_eq!((hosts[0].host.as_str(), hosts[0].port), ("198.18.5.5", 587));
    }

    /// The first 20 lines `exim4 -C test.conf -bP config` printed, of Debian's
    /// exim4-daemon-light 4.96 (bookworm).
    const EXIM_CONFIG: &str = "# Exim Configuration (4.96)
# 1 \"/tmp/exim/test.conf\"
log_file_path = /tmp/exim/%slog
keep_environment =
domainlist local_domains = @
hostlist trusted = 198.18.9.0/24
hostlist relay_from_hosts = 127.0.0.1 : ::::1 : 198.18.0.0/15 : +trusted
DCsmarthost = 198.18.5.5::587
exim_user = mail

begin routers

  smarthost:
    driver = manualroute
    route_list = * 198.18.5.5::587 byname
    transport = remote_smtp

begin transports

  remote_smtp:
";

    #[test]
    fn exim_config_as_printed() {
        let mut notes = Vec::new();
        let (relayhosts, networks) = exim_config(EXIM_CONFIG, &mut notes);
        assert_eq!(networks, vec!["127.0.0.1", "::1", "198.18.0.0/15"]);
        assert_eq!(relayhosts.len(), 1);
        assert_eq!(
            (relayhosts[0].host.as_str(), relayhosts[0].port),
            ("198.18.5.5", 587)
        );
        assert_eq!(
            notes,
            vec!["relay_from_hosts item +trusted is not an address: not read"]
        );
        assert_eq!(parameter(EXIM_CONFIG, "exim_user").as_deref(), Some("mail"));
    }

    #[test]
    fn postconf_output() {
        let text = "relayhost = [198.18.5.5]:25\nmynetworks = 0.0.0.0/0\nmail_owner = postfix\n";
        assert_eq!(
            parameter(text, "relayhost").as_deref(),
            Some("[198.18.5.5]:25")
        );
        assert_eq!(parameter(text, "mynetworks").as_deref(), Some("0.0.0.0/0"));
        assert_eq!(parameter(text, "content_filter"), None);
    }
}
