//! The commands' side of the control socket: send one request and return the answer it expects,
//! typed; any other answer is an error that says so.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    model::ListKind,
    proto::{EgressEvent, ListReply, Request, Response, Status},
};

/// How long a client waits for the daemon (a reload of a million entries takes seconds).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The running daemon's status.
pub(crate) fn status(path: &Path) -> anyhow::Result<Status> {
    match exchange(path, &Request::Status)? {
        Response::Status(status) => Ok(*status),
        other => Err(unexpected("its status", &other)),
    }
}

/// The runtime entries of a list.
pub(crate) fn entries(path: &Path, list: ListKind) -> anyhow::Result<ListReply> {
    match exchange(path, &Request::List { list })? {
        Response::Entries(reply) => Ok(reply),
        other => Err(unexpected("the list's entries", &other)),
    }
}

/// The kept egress events numbered above `after`.
pub(crate) fn egress_events(path: &Path, after: u64) -> anyhow::Result<Vec<EgressEvent>> {
    match exchange(path, &Request::EgressLog { after })? {
        Response::EgressLog { events } => Ok(events),
        other => Err(unexpected("its egress events", &other)),
    }
}

/// A request that changes something (add, del, detach): the daemon's one-line answer.
pub(crate) fn command(path: &Path, request: &Request) -> anyhow::Result<String> {
    match exchange(path, request)? {
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

/// Sends one request to the daemon at `path` and waits for its answer.
fn exchange(path: &Path, request: &Request) -> anyhow::Result<Response> {
    let mut stream = UnixStream::connect(path).map_err(|err| not_running(path, err))?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .with_context(|| format!("reading port25d's answer on {}", path.display()))?;
    serde_json::from_str(&answer).with_context(|| format!("port25d answered {answer:?}"))
}

/// Whether a daemon answers at `path`.
pub(crate) fn is_running(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

fn not_running(path: &Path, err: std::io::Error) -> anyhow::Error {
    let hint = match err.kind() {
        std::io::ErrorKind::PermissionDenied => "the control socket is root-only: run this as root",
        _ => "is port25d running? (`systemctl status port25d`; or pass --control-socket)",
    };
    anyhow::anyhow!("cannot reach port25d at {}: {err}; {hint}", path.display())
}
