//! The audit's SMTP conversations with the local mail server, as a client would have them (with
//! lettre's client): what a listener offers before and after TLS, whether it takes AUTH in clear,
//! and, from the relay probe's namespace, whether it relays for a stranger. Never DATA.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use lettre::transport::smtp::{
    client::{CertificateStore, SmtpConnection, TlsParameters},
    commands::{Ehlo, Quit, Rset},
    extension::ClientId,
    response::Response,
};
use serde::Serialize;

/// How long a connect, and each reply, may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The envelope of the relay probe: a sender and a recipient in two domains reserved for
/// documentation (RFC 2606), which no mail server hosts, so that accepting the recipient means
/// relaying to an outside domain.
pub(crate) const PROBE_SENDER: &str = "port25-audit@example.com";
pub(crate) const PROBE_RECIPIENT: &str = "relay-probe@example.net";

/// The name the audit greets with.
fn hello() -> ClientId {
    ClientId::Domain("port25-audit.invalid".to_owned())
}

/// What a listener said to a client that connected, looked and left.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Offer {
    /// Why there was no SMTP conversation (no greeting, a refused connect, a TLS failure at
    /// connect on 465); `None` when there was one.
    pub silent: Option<String>,
    /// This host refused the audit's own connect (EPERM): a cgroup hook such as port25's egress
    /// guard judged it; the listener was not asked.
    pub refused_here: bool,
    /// TLS from the first byte (465).
    pub implicit_tls: bool,
    /// EHLO's STARTTLS keyword (before TLS).
    pub starttls: bool,
    /// Why STARTTLS, offered, did not give a TLS session.
    pub starttls_failed: Option<String>,
    /// AUTH mechanisms offered before any TLS.
    pub auth_in_clear: Vec<String>,
    /// AUTH mechanisms offered over TLS (after STARTTLS, or on 465).
    pub auth_over_tls: Vec<String>,
    /// The reply to `AUTH <mechanism>` sent in clear: 334 means the server would take a password
    /// in clear. `None` when not asked (TLS from the start).
    pub clear_auth_reply: Option<String>,
    /// Whether that reply invited the password (334).
    pub clear_auth_accepted: bool,
}

/// Connects to `target` (implicit TLS when `implicit_tls`), reads what it offers, asks for AUTH in
/// clear (cancelled at once with `*`, no credentials sent), tries STARTTLS when offered, and
/// quits.
pub(crate) fn look(target: SocketAddr, implicit_tls: bool) -> Offer {
    let mut offer = Offer {
        implicit_tls,
        ..Offer::default()
    };
    let tls = match tls_parameters(target.ip()) {
        Ok(tls) => tls,
        Err(err) => {
            offer.silent = Some(format!("cannot set up TLS: {err}"));
            return offer;
        }
    };
    let connected = SmtpConnection::connect(
        target,
        Some(TIMEOUT),
        &hello(),
        implicit_tls.then_some(&tls),
        None,
    );
    let mut conn = match connected {
        Ok(conn) => conn,
        Err(err) => {
            offer.refused_here = refused_here(&err);
            offer.silent = Some(err.to_string());
            return offer;
        }
    };
    let keywords = capabilities(&mut conn);
    if implicit_tls {
        offer.auth_over_tls = auth_mechanisms(&keywords);
        let _ = conn.command(Quit);
        return offer;
    }
    offer.starttls = keywords.iter().any(|k| k.eq_ignore_ascii_case("STARTTLS"));
    offer.auth_in_clear = auth_mechanisms(&keywords);
    let mechanism = offer
        .auth_in_clear
        .first()
        .cloned()
        .unwrap_or_else(|| "PLAIN".to_owned());
    match conn.command(format!("AUTH {mechanism}\r\n")) {
        Ok(reply) => {
            offer.clear_auth_reply = Some(reply_text(&reply));
            offer.clear_auth_accepted = reply.has_code(334);
            // RFC 4954: "*" cancels the exchange; the server answers 501.
            let _ = conn.command("*\r\n");
        }
        Err(err) => offer.clear_auth_reply = Some(err.to_string()),
    }
    if offer.starttls {
        match conn.starttls(&tls, &hello()) {
            Ok(()) => offer.auth_over_tls = auth_mechanisms(&capabilities(&mut conn)),
            Err(err) => offer.starttls_failed = Some(err.to_string()),
        }
    }
    let _ = conn.command(Quit);
    offer
}

/// What a mail server answered an outsider who asked it to relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "answer", content = "reply", rename_all = "snake_case")]
pub(crate) enum RelayAnswer {
    /// RCPT TO an outside domain accepted: an open relay.
    Accepted(String),
    /// RCPT refused (5xx), or deferred (4xx): it does not relay for this client.
    Refused(String),
    /// The conversation ended before RCPT could be asked (a refused connect, a 5xx greeting or
    /// MAIL FROM): it cannot be told.
    Unknown(String),
    /// This host refused the probe's connect (EPERM), as [`Offer::refused_here`].
    RefusedHere(String),
}

/// From `source`, asks the server at `target` to take mail from [`PROBE_SENDER`] to
/// [`PROBE_RECIPIENT`], then RSET and QUIT: DATA is never sent, so nothing is queued.
pub(crate) fn ask_to_relay(target: SocketAddr, source: IpAddr) -> RelayAnswer {
    let mut conn =
        match SmtpConnection::connect(target, Some(TIMEOUT), &hello(), None, Some(source)) {
            Ok(conn) => conn,
            Err(err) if refused_here(&err) => return RelayAnswer::RefusedHere(err.to_string()),
            Err(err) => return RelayAnswer::Unknown(err.to_string()),
        };
    let answer = match conn.command(format!("MAIL FROM:<{PROBE_SENDER}>\r\n")) {
        Err(err) => RelayAnswer::Unknown(format!("MAIL FROM refused: {err}")),
        Ok(_) => match conn.command(format!("RCPT TO:<{PROBE_RECIPIENT}>\r\n")) {
            Ok(reply) => RelayAnswer::Accepted(reply_text(&reply)),
            Err(err) => RelayAnswer::Refused(err.to_string()),
        },
    };
    let _ = conn.command(Rset);
    let _ = conn.command(Quit);
    answer
}

/// Whether `err` is this host refusing the connect (EPERM): port25's egress guard, or another
/// cgroup hook, judges the audit as it judges any process.
fn refused_here(err: &lettre::transport::smtp::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(error) = cause {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EPERM))
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// TLS that takes any certificate: the audit asks whether TLS is offered, not whom to trust.
fn tls_parameters(ip: IpAddr) -> Result<TlsParameters, lettre::transport::smtp::Error> {
    TlsParameters::builder(ip.to_string())
        .certificate_store(CertificateStore::None)
        .dangerous_accept_invalid_certs(true)
        .dangerous_accept_invalid_hostnames(true)
        .build_rustls()
}

/// The EHLO keywords, one per line after the greeting line ("STARTTLS", "AUTH PLAIN LOGIN").
/// lettre's own reading keeps only the mechanisms it can use; an audit wants them all.
fn capabilities(conn: &mut SmtpConnection) -> Vec<String> {
    conn.command(Ehlo::new(hello()))
        .map(|reply| reply.message().skip(1).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The mechanisms of an `AUTH ...` keyword line (also the old `AUTH=...` form).
fn auth_mechanisms(keywords: &[String]) -> Vec<String> {
    let mut mechanisms: Vec<String> = Vec::new();
    for line in keywords {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        let rest: Vec<&str> = match first.get(..5) {
            _ if first.eq_ignore_ascii_case("AUTH") => words.collect(),
            Some(prefix) if prefix.eq_ignore_ascii_case("AUTH=") => {
                std::iter::once(&first[5..]).chain(words).collect()
            }
            _ => continue,
        };
        for mechanism in rest {
            let mechanism = mechanism.to_ascii_uppercase();
            if !mechanism.is_empty() && !mechanisms.contains(&mechanism) {
                mechanisms.push(mechanism);
            }
        }
    }
    mechanisms
}

/// "250 2.1.5 Ok".
fn reply_text(reply: &Response) -> String {
    let lines: Vec<&str> = reply.message().collect();
    format!("{} {}", reply.code(), lines.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_keywords() {
        let keywords = |lines: &[&str]| lines.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            auth_mechanisms(&keywords(&[
                "PIPELINING",
                "AUTH PLAIN LOGIN",
                "AUTH=LOGIN PLAIN"
            ])),
            vec!["PLAIN", "LOGIN"]
        );
        assert_eq!(
            auth_mechanisms(&keywords(&["auth cram-md5", "STARTTLS"])),
            vec!["CRAM-MD5"]
        );
        assert!(auth_mechanisms(&keywords(&["AUTHX FOO", "8BITMIME"])).is_empty());
    }
}
