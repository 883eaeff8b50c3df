//! The control socket: a root-only Unix socket through which `port25d allow|deny|status|detach`
//! talk to the running daemon. The server side forwards each request to the daemon's event loop;
//! the client side sends one and returns the answer it expects, typed. Wire types: `proto`.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::Path,
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _},
    net::UnixListener,
    sync::{mpsc, oneshot},
};

use crate::{
    model::ListKind,
    proto::{ListReply, Request, Response, Status},
};

/// Default path of the control socket.
pub(crate) const DEFAULT_SOCKET: &str = "/run/port25/control.sock";

/// How long a client waits for the daemon (a reload of a million entries takes seconds).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// A request from a client, with where to send the answer.
pub(crate) type Incoming = (Request, oneshot::Sender<Response>);

/// Binds the socket (root-only: 0600, in a 0700 directory if it makes one) and forwards every
/// request to `tx` until the task is dropped.
pub(crate) fn serve(
    path: &Path,
    tx: mpsc::Sender<Incoming>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    if path.exists() {
        // Another daemon answering there would be a second port25d on the same pins.
        if UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another port25d is running (it answers on {}); stop it first",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = tokio::io::BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let response = match serde_json::from_str::<Request>(&line) {
                        Ok(request) => {
                            let (reply, answer) = oneshot::channel();
                            if tx.send((request, reply)).await.is_err() {
                                return;
                            }
                            answer.await.unwrap_or(Response::Error {
                                message: "port25d is shutting down".into(),
                            })
                        }
                        Err(err) => Response::Error {
                            message: format!("bad request: {err}"),
                        },
                    };
                    let Ok(mut text) = serde_json::to_string(&response) else {
                        return;
                    };
                    text.push('\n');
                    if write.write_all(text.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    }))
}

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
