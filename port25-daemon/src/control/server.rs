//! The daemon's side of the control socket: bind it root-only and forward each request, one JSON
//! line, to the run loop, then write its answer back.

use std::{os::unix::fs::PermissionsExt as _, os::unix::net::UnixStream, path::Path};

use anyhow::Context as _;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _},
    net::UnixListener,
    sync::{mpsc, oneshot},
};

use crate::proto::{Request, Response};

/// A request from a client, who sent it, and where to send the answer.
pub(crate) type Incoming = (Request, Peer, oneshot::Sender<Response>);

/// The process at the other end of a connection, as the kernel names it (SO_PEERCRED): who asked
/// for a change, in the policy's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Peer {
    pub uid: u32,
    pub pid: Option<i32>,
}

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
            // Unknown credentials count as nobody's: such a client may read, never change.
            let peer = stream.peer_cred().map_or(
                Peer {
                    uid: u32::MAX,
                    pid: None,
                },
                |cred| Peer {
                    uid: cred.uid(),
                    pid: cred.pid(),
                },
            );
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = tokio::io::BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let response = match serde_json::from_str::<Request>(&line) {
                        Ok(request) => {
                            let (reply, answer) = oneshot::channel();
                            if tx.send((request, peer, reply)).await.is_err() {
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
