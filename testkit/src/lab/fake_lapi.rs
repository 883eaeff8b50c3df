//! A hostile CrowdSec Local API: an HTTP server in a namespace that answers each poll with what
//! the test sets (broken JSON, wrong types, garbage, an error status, an answer too large or one
//! that never comes). The real LAPI (`Lapi`) cannot misbehave on purpose; this one exists for
//! that alone, and the tests that use it use the real one too.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use super::*;

/// What the fake LAPI answers to the next requests.
#[derive(Clone, Debug)]
pub enum FakeAnswer {
    /// A status and a body, with its Content-Length.
    Body { status: u16, body: Vec<u8> },
    /// A 200 whose body is sent in chunks (no Content-Length) until `bytes` were sent.
    Chunked { bytes: usize },
    /// A 200 that declares `bytes` of body and sends none of it.
    Declares { bytes: u64 },
    /// Reads the request and never answers (until the connection is closed).
    Hang,
}

impl FakeAnswer {
    /// A 200 with a JSON body.
    pub fn json(body: &str) -> Self {
        FakeAnswer::Body {
            status: 200,
            body: body.as_bytes().to_vec(),
        }
    }
}

/// A running fake LAPI; dropping it stops its thread.
pub struct FakeLapi {
    port: u16,
    answer: Arc<Mutex<FakeAnswer>>,
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeLapi {
    /// Listens on 127.0.0.1 (an ephemeral port) in `ns`, answering `first` until told otherwise.
    pub fn start(ns: &Netns, first: FakeAnswer) -> Self {
        // A socket stays in the namespace it was made in: made in a thread inside `ns`, then
        // served from an ordinary thread.
        let listener = thread::scope(|scope| {
            ns.spawn_inside(scope, || TcpListener::bind("127.0.0.1:0"))
                .join()
                .expect("the listening thread")
        })
        .unwrap_or_else(|err| panic!("fake LAPI: cannot listen in {}: {err}", ns.name()));
        let port = listener.local_addr().expect("local address").port();
        listener.set_nonblocking(true).expect("non-blocking");
        let answer = Arc::new(Mutex::new(first));
        let requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (answer, requests, stop) = (answer.clone(), requests.clone(), stop.clone());
            thread::spawn(move || serve(&listener, &answer, &requests, &stop))
        };
        Self {
            port,
            answer,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, for `crowdsec.lapi_url` of a daemon in the same namespace.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Answers the next requests with `answer`.
    pub fn set(&self, answer: FakeAnswer) {
        *self.answer.lock().unwrap_or_else(|p| p.into_inner()) = answer;
    }

    /// How many requests it has read so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests than now have been read (a poll or more went by).
    pub fn wait_requests(&self, n: u64, limit: Duration) {
        let target = self.requests() + n;
        poll(limit, || (self.requests() >= target).then_some(()))
            .unwrap_or_else(|| panic!("fake LAPI: fewer than {n} requests within {limit:?}"));
    }
}

impl Drop for FakeLapi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Longest a connection is served (a hanging answer holds it until the client gives up).
const CONNECTION_LIMIT: Duration = Duration::from_secs(120);

fn serve(
    listener: &TcpListener,
    answer: &Mutex<FakeAnswer>,
    requests: &AtomicU64,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let answer = answer.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if read_request(&stream) {
                    requests.fetch_add(1, Ordering::SeqCst);
                    respond(stream, &answer, stop);
                }
            }
            Err(_) => thread::sleep(POLL_EVERY),
        }
    }
}

/// Reads one request's head (the stream requests have no body); false if the client went away.
fn read_request(mut stream: &TcpStream) -> bool {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 << 10 {
        match stream.read(&mut byte) {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&byte[..n]),
        }
    }
    true
}

fn respond(mut stream: TcpStream, answer: &FakeAnswer, stop: &AtomicBool) {
    let started = Instant::now();
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    match answer {
        FakeAnswer::Body { status, body } => {
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
        FakeAnswer::Declares { bytes } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {bytes}\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes());
            // Then nothing: the client must refuse on the header alone.
            hold(&stream, stop, started);
        }
        FakeAnswer::Chunked { bytes } => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            let _ = stream.write_all(head.as_bytes());
            // Valid JSON as far as it goes: an array of decisions that never closes.
            let chunk = format!(
                "{{\"id\":1,\"origin\":\"lists\",\"type\":\"ban\",\"scope\":\"ip\",\"value\":\"not-an-address-{}\",\"duration\":\"1h\"}},",
                "x".repeat(900)
            );
            let mut sent = 0;
            let mut first = b"{\"new\":[".to_vec();
            while sent < *bytes && started.elapsed() < CONNECTION_LIMIT {
                first.extend_from_slice(chunk.as_bytes());
                let frame = format!("{:x}\r\n", first.len());
                let ok = stream.write_all(frame.as_bytes()).is_ok()
                    && stream.write_all(&first).is_ok()
                    && stream.write_all(b"\r\n").is_ok();
                if !ok {
                    // The client stopped reading: what a bounded reader does.
                    return;
                }
                sent += first.len();
                first.clear();
            }
            let _ = stream.write_all(b"0\r\n\r\n");
        }
        FakeAnswer::Hang => hold(&stream, stop, started),
    }
}

/// Keeps the connection open, sending nothing, until the client closes it or the limit.
fn hold(mut stream: &TcpStream, stop: &AtomicBool, started: Instant) {
    let _ = stream.set_read_timeout(Some(POLL_EVERY));
    let mut byte = [0u8; 64];
    while !stop.load(Ordering::SeqCst) && started.elapsed() < CONNECTION_LIMIT {
        match stream.read(&mut byte) {
            Ok(0) => return,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            _ => return,
        }
    }
}
