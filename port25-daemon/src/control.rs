//! The control socket: a root-only Unix socket through which `port25d allow|deny|status|detach`
//! talk to the running daemon. One JSON request per line, one JSON response per line.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::Path,
    time::Duration,
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _},
    net::UnixListener,
    sync::{mpsc, oneshot},
};

use crate::{model::ListKind, runtime::Entry};

/// Default path of the control socket.
pub const DEFAULT_SOCKET: &str = "/run/port25/control.sock";

/// How long a client waits for the daemon (a reload of a million entries takes seconds).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Add {
        list: ListKind,
        cidr: String,
        ttl_secs: Option<u64>,
    },
    Del {
        list: ListKind,
        cidr: String,
    },
    List {
        list: ListKind,
    },
    Status,
    /// Detach the filter, remove its pins, and exit.
    Detach,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok { message: String },
    Entries(ListReply),
    Status(Box<crate::status::Status>),
    Error { message: String },
}

/// `port25d allow|deny list`: the runtime entries, and how many the config brings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListReply {
    pub list: ListKind,
    pub runtime: Vec<Entry>,
    pub from_config: usize,
    pub now: u64,
}

/// A request from a client, with where to send the answer.
pub type Incoming = (Request, oneshot::Sender<Response>);

/// Binds the socket (root-only: 0600, in a 0700 directory if it makes one) and forwards every
/// request to `tx` until the task is dropped.
pub fn serve(
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

/// Sends one request to the daemon at `path` and waits for its answer.
pub fn request(path: &Path, request: &Request) -> anyhow::Result<Response> {
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
pub fn is_running(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

fn not_running(path: &Path, err: std::io::Error) -> anyhow::Error {
    let hint = match err.kind() {
        std::io::ErrorKind::PermissionDenied => "the control socket is root-only: run this as root",
        _ => "is port25d running? (`systemctl status port25d`; or pass --control-socket)",
    };
    anyhow::anyhow!("cannot reach port25d at {}: {err}; {hint}", path.display())
}
