//! The traffic of a scenario: the SYN generator (the bench object's `flood_tx` with live
//! frames, or a packet socket where the kernel refuses those) and the mail that must get through
//! during it.

use super::*;

/// Frames a live-frames run sends: short enough that `stop` is seen within ~10 ms.
const LIVE_CHUNK: u32 = 20_000;

/// Sends the flood out of cl0 with `generator` until `stop`, counting frames sent in `sent`. Runs
/// on a thread inside the generator's namespace, pinned to the first CPU.
pub(super) fn generate(
    generator: Generator,
    frame: &[u8],
    batch: u32,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> Result<()> {
    sys::pin_to_cpu(0, 0)?;
    match generator {
        Generator::LiveFrames => live_frames(frame, batch, |send| -> Result<()> {
            while !stop.load(Ordering::Relaxed) {
                send(LIVE_CHUNK).context("BPF_PROG_TEST_RUN with live frames")?;
                sent.fetch_add(u64::from(LIVE_CHUNK), Ordering::Relaxed);
            }
            Ok(())
        })?,
        Generator::PacketSocket => packet_socket(frame, stop, sent),
    }
}

/// Why the kernel will not run `flood_tx` with live frames (None: it does), asked with one frame
/// sent out of cl0 of the calling thread's namespace.
pub(super) fn live_frames_refused(frame: &[u8], batch: u32) -> Result<Option<String>> {
    live_frames(frame, batch, |send| {
        send(1)
            .err()
            .map(|err| format!("{:#}", anyhow::Error::from(err)))
    })
}

/// Loads `flood_tx` with `frame` as its template and hands `run` a function that sends that many
/// frames out of cl0 with XDP_TX, each from another source (the program's ingress ifindex is
/// looked up in the calling thread's namespace).
fn live_frames<T>(
    frame: &[u8],
    batch: u32,
    run: impl FnOnce(&dyn Fn(u32) -> Result<(), aya::programs::ProgramError>) -> T,
) -> Result<T> {
    let mut object = programs::object()?;
    programs::set_template(&mut object, frame)?;
    let program = programs::xdp(&mut object, "flood_tx")?;
    let cl0 = ifindex("cl0").context("no cl0 in the generator's namespace")?;
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let len = u32::try_from(frame.len())?;
    let ctx: Vec<u8> = [0, len, 0, cl0, 0, 0]
        .iter()
        .flat_map(|v: &u32| v.to_ne_bytes())
        .collect();
    let send = |repeat| {
        program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                repeat,
                attrs: TestRunAttrs::new().xdp_live_frames(batch),
                ..TestRunOptions::default()
            })
            .map(drop)
    };
    Ok(run(&send))
}

/// Sends the flood from an AF_PACKET socket on sp0, whose peer sp1 relays every frame to cl0
/// (`flood_relay`), so that the receiver gets XDP frames as from `flood_tx`. The frames: a pool of
/// `frame` from every source of 198.19.0.0/16 in random order (what `flood_tx` draws from),
/// checksums fixed once, sent round and round with `sendmmsg`. Offered counts what the socket got
/// out: a frame that sp1's full ring refuses (ENOBUFS, the relay behind) is sent again, and one
/// that overflows gw0's ring after the relay is offered, not received, as `flood_tx`'s are.
fn packet_socket(frame: &[u8], stop: &AtomicBool, sent: &AtomicU64) -> Result<()> {
    let mut object = programs::object()?;
    let cl0 = ifindex("cl0").context("no cl0 in the generator's namespace")?;
    aya::maps::DevMap::try_from(
        object
            .map_mut("RELAY_TO")
            .context("no map RELAY_TO in the bench object")?,
    )?
    .set(0, cl0, None, 0)
    .context("writing cl0 into RELAY_TO")?;
    programs::xdp(&mut object, "flood_relay")?
        .attach(RELAY_IN, aya::programs::XdpMode::Driver)
        .with_context(|| format!("attaching flood_relay to {RELAY_IN}"))?;
    let socket = PacketSocket::bind(SOCKET_OUT)
        .with_context(|| format!("an AF_PACKET socket on {SOCKET_OUT}"))?;
    let mut rng = Rng(0x5eed_f100d);
    // The source's low 16 bits, as flood_tx randomises them.
    let source_low = frames::IPV4_AT + 14;
    let mut hosts: Vec<u16> = (0..=u16::MAX).collect();
    for i in (1..hosts.len()).rev() {
        hosts.swap(i, rng.below(i + 1));
    }
    let mut pool = frame.repeat(hosts.len());
    for (spoofed, host) in pool.chunks_mut(frame.len()).zip(&hosts) {
        spoofed[source_low..source_low + 2].copy_from_slice(&host.to_be_bytes());
        frames::fix_tcp_checksums(spoofed);
    }
    let pool: Vec<&[u8]> = pool.chunks(frame.len()).collect();
    let mut next = 0;
    while !stop.load(Ordering::Relaxed) {
        let batch = &pool[next..(next + SOCKET_BATCH).min(pool.len())];
        let went = match socket.send_many(batch) {
            Ok(count) => count,
            Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => 0,
            Err(err) => return Err(err).with_context(|| format!("sendmmsg on {SOCKET_OUT}")),
        };
        sent.fetch_add(went as u64, Ordering::Relaxed);
        next = (next + went) % pool.len();
    }
    Ok(())
}

/// One SMTP transaction to the gateway from the client's address: (delivered, latency).
pub(super) fn send_one(timeout: Duration, n: usize) -> (bool, Duration) {
    let started = Instant::now();
    let attempt = || -> std::io::Result<()> {
        let server: SocketAddr = format!("{GATEWAY}:25")
            .parse()
            .map_err(std::io::Error::other)?;
        let stream = TcpStream::connect_timeout(&server, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        let mut expect = |code: &str| -> std::io::Result<()> {
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 {
                    return Err(std::io::Error::other("connection closed"));
                }
                if !line.starts_with(code) {
                    return Err(std::io::Error::other(format!(
                        "expected {code}, got {line}"
                    )));
                }
                // Multi-line replies: "250-..." continues, "250 ..." ends.
                if line.as_bytes().get(3) != Some(&b'-') {
                    return Ok(());
                }
            }
        };
        expect("220")?;
        for (command, code) in [
            ("EHLO client.example.org\r\n".to_string(), "250"),
            ("MAIL FROM:<a@example.org>\r\n".to_string(), "250"),
            ("RCPT TO:<b@example.net>\r\n".to_string(), "250"),
            ("DATA\r\n".to_string(), "354"),
            (
                format!(
                    "From: a@example.org\r\nTo: b@example.net\r\nSubject: bench {n}\r\n\r\n\
                     port25 bench message {n}\r\n.\r\n"
                ),
                "250",
            ),
        ] {
            writer.write_all(command.as_bytes())?;
            expect(code)?;
        }
        writer.write_all(b"QUIT\r\n")?;
        Ok(())
    };
    let ok = attempt().is_ok();
    (ok, started.elapsed())
}

/// Sends `count` messages one after another from the client's namespace.
pub(super) fn mail_batch(
    lab: &Lab,
    sink: &SmtpSink<'_>,
    path: MailPath,
    count: usize,
    timeout: Duration,
) -> Result<Mail> {
    let (ns, address) = match path {
        MailPath::Shared => (&lab.net.clients[0], CLIENT),
        MailPath::Own => (&lab.net.clients[1], MAIL_CLIENT),
    };
    let client: std::net::IpAddr = address.parse()?;
    let before = sink.messages_from(client);
    let results = thread::scope(|scope| {
        ns.spawn_inside(scope, || {
            (0..count).map(|n| send_one(timeout, n)).collect::<Vec<_>>()
        })
        .join()
    })
    .map_err(|_| anyhow::anyhow!("the mail thread panicked"))?;
    let ok = results.iter().filter(|(ok, _)| *ok).count();
    // Delivered means in smtp-sink's dump, not only "250" seen by the client.
    let delivered = sink.wait_for_messages(client, before + ok) - before;
    let latencies: Vec<f64> = results
        .iter()
        .filter(|(ok, _)| *ok)
        .map(|(_, d)| d.as_secs_f64() * 1000.0)
        .collect();
    Ok(Mail {
        sent: count,
        delivered,
        p50_ms: sys::median(&latencies),
        p99_ms: sys::percentile(&latencies, 99.0),
    })
}
