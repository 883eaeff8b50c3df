//! Phase 2: SYN frames from spoofed sources, sent on a packet socket.

use super::*;

/// What the spoofing sender did.
pub(super) struct SpoofReport {
    pub(super) sent: u64,
    pub(super) send_errors: u64,
    pub(super) first_error: Option<String>,
    /// Distinct spoofed source addresses among the frames sent.
    pub(super) sources: usize,
    /// Since the test's epoch.
    pub(super) first_send: Duration,
    pub(super) last_send: Duration,
    /// The sender ran into its frame bound before it was told to stop.
    pub(super) hit_bound: bool,
}

/// Sends SYN frames from random sources in 198.19.0.0/16 out of `ifname` (of the calling thread's
/// namespace) at `SPOOF_PER_SEC`, until `stop` is set or `SPOOF_MAX_FRAMES` are out.
pub(super) fn spoof_flood(
    ifname: &str,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    seed: u64,
    epoch: Instant,
    sent_so_far: &AtomicU64,
    stop: &AtomicBool,
) -> SpoofReport {
    let socket = PacketSocket::bind(ifname)
        .unwrap_or_else(|err| panic!("cannot open an AF_PACKET socket on {ifname}: {err}"));
    let mut rng = Rng(seed);
    let mut frame = frames::tcp("198.19.0.1", 25).to(GW_C).build();
    let mut sources = HashSet::new();
    let mut report = SpoofReport {
        sent: 0,
        send_errors: 0,
        first_error: None,
        sources: 0,
        first_send: Duration::ZERO,
        last_send: Duration::ZERO,
        hit_bound: false,
    };
    let started = Instant::now();
    let mut attempts = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if attempts >= SPOOF_MAX_FRAMES {
            report.hit_bound = true;
            break;
        }
        // Pace against the clock: send what is due, then nap.
        let due = ((secs(started.elapsed()) * SPOOF_PER_SEC) as u64).min(SPOOF_MAX_FRAMES);
        while attempts < due {
            let host = (rng.next_u64() & 0xffff) as u16;
            let [hi, lo] = host.to_be_bytes();
            let src = Ipv4Addr::new(198, 19, hi, lo);
            frames::respoof_syn(&mut frame, (dst_mac, src_mac), src, &mut rng);
            attempts += 1;
            let now = epoch.elapsed();
            match socket.send(&frame) {
                Ok(()) => {
                    if report.sent == 0 {
                        report.first_send = now;
                    }
                    report.last_send = now;
                    report.sent += 1;
                    sources.insert(host);
                    sent_so_far.store(report.sent, Ordering::Relaxed);
                }
                Err(err) => {
                    report.send_errors += 1;
                    report.first_error.get_or_insert_with(|| err.to_string());
                }
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
    report.sources = sources.len();
    report
}
