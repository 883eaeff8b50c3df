//! The traffic of a scenario: the SYN generator (the bench object's `flood_tx` with live
//! frames) and the mail that must get through during it.

use super::*;

/// Runs `flood_tx` on cl0 with live frames until `stop`, counting frames sent in `sent`. Runs on
/// a thread inside the generator's namespace (the program's ingress ifindex is looked up in the
/// caller's namespace).
pub(super) fn generate(
    frame: &[u8],
    batch: u32,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> Result<()> {
    sys::pin_to_cpu(0, 0)?;
    let mut object = programs::object()?;
    let template: [u8; 54] = frame
        .try_into()
        .context("the generator's frame is not 54 bytes")?;
    aya::maps::Array::<_, [u8; 54]>::try_from(
        object
            .map_mut("FLOOD_TEMPLATE")
            .context("no map FLOOD_TEMPLATE in the bench object")?,
    )?
    .set(0, template, 0)
    .context("writing the generator's frame into FLOOD_TEMPLATE")?;
    let program = programs::xdp(&mut object, "flood_tx")?;
    let name = std::ffi::CString::new("cl0")?;
    // SAFETY: a valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        bail!("no cl0 in the generator's namespace");
    }
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let len = u32::try_from(frame.len())?;
    let ctx: Vec<u8> = [0, len, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|v: &u32| v.to_ne_bytes())
        .collect();
    // Each call sends `chunk` frames: short enough that `stop` is seen within ~10 ms.
    let chunk = 20_000;
    while !stop.load(Ordering::Relaxed) {
        program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                repeat: chunk,
                attrs: TestRunAttrs::new().xdp_live_frames(batch),
                ..TestRunOptions::default()
            })
            .context("BPF_PROG_TEST_RUN with live frames")?;
        sent.fetch_add(u64::from(chunk), Ordering::Relaxed);
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
