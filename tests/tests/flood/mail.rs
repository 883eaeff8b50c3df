//! Legitimate mail during the floods: batches from both clients, and what must hold of them.

use super::*;

/// One message a legitimate client sent during a flood.
pub(super) struct Sent {
    pub(super) client: &'static str,
    pub(super) n: usize,
    pub(super) start: Duration,
    pub(super) end: Duration,
    pub(super) delivery: Delivery,
}

/// Delivers `count` messages from `source` to `server:25`, `WORKERS` at a time. Times are since
/// `epoch`.
pub(super) fn deliver_batch(
    client: &'static str,
    ns: &Netns,
    source: &str,
    server: &str,
    count: usize,
    epoch: Instant,
) -> Vec<Sent> {
    let next = AtomicUsize::new(0);
    let mut sent: Vec<Sent> = thread::scope(|s| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed) + 1;
                        if n > count {
                            return mine;
                        }
                        let start = epoch.elapsed();
                        let delivery = send_mail(ns, ip(source), ip(server), 25);
                        mine.push(Sent {
                            client,
                            n,
                            start,
                            end: epoch.elapsed(),
                            delivery,
                        });
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a swaks worker"))
            .collect()
    });
    sent.sort_by_key(|s| s.n);
    sent
}

/// Both clients' batches at once.
pub(super) fn deliver_both(allowed: &Netns, other: &Netns, epoch: Instant) -> Vec<Sent> {
    thread::scope(|s| {
        let a = s.spawn(|| deliver_batch("allowed", allowed, ALLOWED_V4, GW_A_V4, BATCH, epoch));
        let b = s.spawn(|| deliver_batch("other", other, OTHER_V4, GW_B_V4, BATCH, epoch));
        let mut all = a.join().expect("allowed's batch");
        all.extend(b.join().expect("other's batch"));
        all
    })
}

pub(super) fn print_deliveries(phase: &str, sent: &[Sent]) {
    for s in sent {
        println!(
            "[{:7.3}s .. {:7.3}s] {phase}: {} #{} {}",
            secs(s.start),
            secs(s.end),
            s.client,
            s.n,
            if s.delivery.delivered {
                "delivered"
            } else {
                "FAILED"
            }
        );
    }
}

/// Every message of the batch was accepted (swaks exited 0).
pub(super) fn assert_all_delivered(phase: &str, sent: &[Sent], diagnostics: &dyn Fn() -> String) {
    let failed: Vec<&Sent> = sent.iter().filter(|s| !s.delivery.delivered).collect();
    if let Some(first) = failed.first() {
        panic!(
            "{phase}: {} of {} legitimate messages failed; the first, {} #{} ({:.3}s..{:.3}s), \
             swaks said:\n{}\n{}",
            failed.len(),
            sent.len(),
            first.client,
            first.n,
            secs(first.start),
            secs(first.end),
            first.delivery.transcript,
            diagnostics()
        );
    }
}

/// smtp-sink's dump holds (so far) exactly this many messages from each legitimate client.
pub(super) fn assert_sink_holds(sink: &SmtpSink<'_>, phase: &str, allowed: usize, other: usize) {
    let got = (
        sink.wait_for_messages(ip(ALLOWED_V4), allowed),
        sink.wait_for_messages(ip(OTHER_V4), other),
    );
    assert_eq!(
        got,
        (allowed, other),
        "{phase}: messages in smtp-sink's dump from {ALLOWED_V4} and {OTHER_V4}"
    );
}

/// The deliveries ran inside the flood's window.
pub(super) fn assert_overlap(
    phase: &str,
    sent: &[Sent],
    flood_active: Duration,
    flood_stopped: Duration,
) {
    let first = sent
        .iter()
        .map(|s| s.start)
        .min()
        .expect("messages were sent");
    let last = sent
        .iter()
        .map(|s| s.end)
        .max()
        .expect("messages were sent");
    println!(
        "{phase}: flood active from {:.3}s, stopped at {:.3}s; deliveries {:.3}s .. {:.3}s",
        secs(flood_active),
        secs(flood_stopped),
        secs(first),
        secs(last)
    );
    assert!(
        flood_active <= first && last <= flood_stopped,
        "{phase}: the deliveries ({first:?} .. {last:?}) were not all inside the flood \
         ({flood_active:?} .. {flood_stopped:?})"
    );
}
