//! The commands' side of the control socket: send one request and return the answer it expects,
//! typed; any other answer is an error that says so.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    model::ListKind,
    proto::{EgressEvent, ListReply, Request, Response, ShadowStatus, Status, WhyReport},
};

/// How long a command waits for the daemon by default (`--timeout`): a stopped daemon
/// (`kill -STOP`, a debugger) must not block fail2ban's action; a reload of a million entries
/// takes a few seconds.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a command reaches the daemon: its control socket, and how long it waits for an answer
/// (connecting, sending and reading, all told).
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub(crate) socket: PathBuf,
    pub(crate) timeout: Duration,
}

/// What is at a control socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// A daemon listens there.
    Listening,
    /// Nothing listens there (no file, or a stale one).
    Absent,
    /// The socket is there, and root-only.
    RootOnly,
}

/// What is at `path`, without asking anything.
pub(crate) fn probe(path: &Path) -> Probe {
    match UnixStream::connect(path) {
        Ok(_) => Probe::Listening,
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => Probe::RootOnly,
        Err(_) => Probe::Absent,
    }
}

/// The running daemon's status.
pub(crate) fn status(at: &Endpoint) -> anyhow::Result<Status> {
    match exchange(at, &Request::Status)? {
        Response::Status(status) => Ok(*status),
        other => Err(unexpected("its status", &other)),
    }
}

/// The runtime entries of a list.
pub(crate) fn entries(at: &Endpoint, list: ListKind) -> anyhow::Result<ListReply> {
    match exchange(at, &Request::List { list })? {
        Response::Entries(reply) => Ok(reply),
        other => Err(unexpected("the list's entries", &other)),
    }
}

/// The kept egress events numbered above `after`.
pub(crate) fn egress_events(at: &Endpoint, after: u64) -> anyhow::Result<Vec<EgressEvent>> {
    match exchange(at, &Request::EgressLog { after })? {
        Response::EgressLog { events } => Ok(events),
        other => Err(unexpected("its egress events", &other)),
    }
}

/// What the filter decides now for a SYN from `address` to `port`, and why.
pub(crate) fn why(at: &Endpoint, address: &str, port: u16) -> anyhow::Result<WhyReport> {
    let request = Request::Why {
        address: address.to_owned(),
        port,
    };
    match exchange(at, &request)? {
        Response::Why(report) => Ok(*report),
        other => Err(unexpected("its reasons", &other)),
    }
}

/// What the shadow policy would change.
pub(crate) fn shadow_status(at: &Endpoint) -> anyhow::Result<ShadowStatus> {
    match exchange(at, &Request::ShadowStatus)? {
        Response::Shadow(status) => Ok(*status),
        other => Err(unexpected("its shadow policy's status", &other)),
    }
}

/// A request that changes something (add, del, detach): the daemon's one-line answer.
pub(crate) fn command(at: &Endpoint, request: &Request) -> anyhow::Result<String> {
    match exchange(at, request)? {
        Response::Ok { message } => Ok(message),
        other => Err(unexpected("a confirmation", &other)),
    }
}

/// An error answer says why; any other answer that was not asked for is a daemon of another
/// version.
fn unexpected(wanted: &str, response: &Response) -> anyhow::Error {
    match response {
        Response::Error { message } => anyhow::anyhow!("{message}"),
        _ => anyhow::anyhow!(
            "port25d answered something else than {wanted}: is it another version of port25d?"
        ),
    }
}

/// Sends one request to the daemon at `at` and waits for its answer, at most `at.timeout`
/// (on a thread of its own: a connect to a stopped daemon's full backlog blocks too).
fn exchange(at: &Endpoint, request: &Request) -> anyhow::Result<Response> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (socket, sent) = (at.socket.clone(), request.clone());
    std::thread::spawn(move || {
        let _ = tx.send(exchange_now(&socket, &sent));
    });
    rx.recv_timeout(at.timeout).unwrap_or_else(|_| {
        Err(anyhow::anyhow!(
            "port25d did not answer on {} within {} s (stopped, or busy with a long reload); \
             it may still carry the request out when it resumes. `systemctl status port25d` \
             shows its state; --timeout SECONDS waits longer",
            at.socket.display(),
            at.timeout.as_secs_f64()
        ))
    })
}

fn exchange_now(path: &Path, request: &Request) -> anyhow::Result<Response> {
    let mut stream = UnixStream::connect(path).map_err(|err| not_running(path, err))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .with_context(|| format!("reading port25d's answer on {}", path.display()))?;
    serde_json::from_str(&answer).with_context(|| format!("port25d answered {answer:?}"))
}

fn not_running(path: &Path, err: std::io::Error) -> anyhow::Error {
    let hint = match err.kind() {
        std::io::ErrorKind::PermissionDenied => "the control socket is root-only: run this as root",
        _ => "is port25d running? (`systemctl status port25d`; or pass --control-socket)",
    };
    anyhow::anyhow!("cannot reach port25d at {}: {err}; {hint}", path.display())
}
