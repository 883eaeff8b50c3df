//! Tcpdump captures: the independent count of what a client sent.

use super::*;

/// A `tcpdump` writing what an interface sends (egress only) to a pcap file.
pub struct Capture<'a> {
    /// Borrowed so that the namespace outlives the capture.
    _ns: &'a Netns,
    child: Option<Child>,
    file: PathBuf,
    log: PathBuf,
}

/// What a capture holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureSummary {
    pub packets: u64,
    /// Sum of the frames' lengths on the wire (Ethernet header included, no FCS).
    pub bytes: u64,
    /// TCP segments with SYN set and ACK clear: connection attempts.
    pub syns: u64,
}

impl<'a> Capture<'a> {
    /// Starts capturing the packets `iface` in `ns` sends that match the pcap `filter`; returns once
    /// tcpdump is capturing.
    pub fn start(ns: &'a Netns, iface: &str, filter: &str, work: &WorkDir) -> Self {
        let tag = format!("{}-{iface}", ns.name());
        // Immediate mode, as start_directed explains: a buffered capture can miss its last packets.
        Self::start_directed(ns, iface, "out", filter, work, &tag)
    }

    /// Like [`Capture::start`], for the packets `iface` receives (`direction` "in") or sends ("out"),
    /// writing `<tag>.pcap` in the work directory. On the interface XDP is attached to, "in" sees
    /// only what XDP passed: AF_PACKET taps run after the XDP program.
    ///
    /// In immediate mode: libpcap hands each packet over as it arrives, instead of a buffer block
    /// at a time (up to a second late). Without it, packets of the last moment before [`finish`]
    /// can still sit in the ring when tcpdump stops, uncounted and unreported as dropped. Headers
    /// only (snap length 128; lengths on the wire stay exact) and an 8 MiB kernel buffer, so that
    /// a flood of small packets fits while tcpdump waits for a busy CPU.
    ///
    /// [`finish`]: Capture::finish
    pub fn start_directed(
        ns: &'a Netns,
        iface: &str,
        direction: &str,
        filter: &str,
        work: &WorkDir,
        tag: &str,
    ) -> Self {
        Self::launch(
            ns,
            iface,
            &[
                "-Q",
                direction,
                "--immediate-mode",
                "-s",
                "128",
                "-B",
                "8192",
            ],
            filter,
            work,
            tag,
        )
    }

    fn launch(
        ns: &'a Netns,
        iface: &str,
        options: &[&str],
        filter: &str,
        work: &WorkDir,
        tag: &str,
    ) -> Self {
        let file = work.join(format!("{tag}.pcap"));
        let log = work.join(format!("tcpdump-{tag}.log"));
        let child = start_logged(
            ns.command(tool("tcpdump"))
                .args(["-i", iface, "-n", "-U"])
                .args(options)
                .args(["-Z", "root", "-w"])
                .arg(&file)
                .arg(filter),
            &format!("tcpdump on {iface} in {}", ns.name()),
            &log,
            Duration::from_secs(5),
            || read_lossy(&log).contains("listening on"),
        );
        Self {
            _ns: ns,
            child: Some(child),
            file,
            log,
        }
    }

    /// Stops tcpdump (SIGINT: it flushes its file) and counts what it captured. Panics if the kernel
    /// dropped packets before tcpdump saw them: the count would not be a count.
    pub fn finish(self) -> CaptureSummary {
        let (data, file) = self.stop_and_read();
        summarize_pcap(&data).unwrap_or_else(|err| panic!("cannot read {}: {err}", file.display()))
    }

    /// Like [`Capture::finish`], with the capture time of every SYN (SYN set, ACK clear) too, in
    /// the order captured (pcap timestamps: wall-clock time since the epoch).
    pub fn finish_with_syn_times(self) -> (CaptureSummary, Vec<Duration>) {
        let (data, file) = self.stop_and_read();
        let summary = summarize_pcap(&data)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", file.display()));
        let times = pcap_syn_times(&data)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", file.display()));
        (summary, times)
    }

    /// Stops tcpdump, checks it lost nothing, and returns the pcap file's bytes.
    fn stop_and_read(mut self) -> (Vec<u8>, PathBuf) {
        let mut child = self.child.take().expect("a capture is finished once");
        stop_child(&mut child, libc::SIGINT);
        let log = read_lossy(&self.log);
        let dropped = log
            .lines()
            .find_map(|line| line.strip_suffix(" packets dropped by kernel"))
            .and_then(|n| n.trim().parse::<u64>().ok());
        assert_eq!(
            dropped,
            Some(0),
            "tcpdump lost packets (or did not report): {log}"
        );
        let data = fs::read(&self.file)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", self.file.display()));
        (data, self.file.clone())
    }
}

impl Drop for Capture<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, libc::SIGINT);
        }
    }
}

/// Counts the frames of a classic pcap file (Ethernet link type, any byte order or time resolution).
pub fn summarize_pcap(data: &[u8]) -> Result<CaptureSummary, String> {
    let mut summary = CaptureSummary::default();
    for record in pcap_records(data)? {
        summary.packets += 1;
        summary.bytes += u64::from(record.on_wire);
        if is_syn(record.frame) {
            summary.syns += 1;
        }
    }
    Ok(summary)
}

/// The capture time of every SYN (SYN set, ACK clear) of a classic pcap file, in file order.
pub fn pcap_syn_times(data: &[u8]) -> Result<Vec<Duration>, String> {
    Ok(pcap_records(data)?
        .into_iter()
        .filter(|record| is_syn(record.frame))
        .map(|record| record.time)
        .collect())
}

/// A TCP segment with SYN set and ACK clear: a connection attempt.
pub(super) fn is_syn(frame: &[u8]) -> bool {
    matches!(
        etherparse::SlicedPacket::from_ethernet(frame),
        Ok(etherparse::SlicedPacket {
            transport: Some(etherparse::TransportSlice::Tcp(tcp)),
            ..
        }) if tcp.syn() && !tcp.ack()
    )
}

/// One frame of a pcap file.
pub(super) struct PcapRecord<'a> {
    /// Capture time since the epoch.
    time: Duration,
    /// Length on the wire (the frame may have been cut to the snap length).
    on_wire: u32,
    frame: &'a [u8],
}

/// The records of a classic pcap file (Ethernet link type, any byte order or time resolution).
pub(super) fn pcap_records(data: &[u8]) -> Result<Vec<PcapRecord<'_>>, String> {
    let header = data.get(..24).ok_or("shorter than a pcap header")?;
    let magic: [u8; 4] = header[..4].try_into().map_err(|_| "no magic")?;
    let (little, nanos) = match u32::from_le_bytes(magic) {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        _ => match u32::from_be_bytes(magic) {
            0xa1b2_c3d4 => (false, false),
            0xa1b2_3c4d => (false, true),
            other => return Err(format!("not a pcap file (magic {other:#x})")),
        },
    };
    let word = |bytes: &[u8]| -> u32 {
        let bytes: [u8; 4] = bytes.try_into().unwrap_or_default();
        if little {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        }
    };
    let link_type = word(&header[20..24]);
    if link_type != 1 {
        return Err(format!("link type {link_type}, expected Ethernet (1)"));
    }
    let mut records = Vec::new();
    let mut rest = &data[24..];
    while !rest.is_empty() {
        let record = rest.get(..16).ok_or("truncated record header")?;
        let seconds = u64::from(word(&record[..4]));
        let fraction = u64::from(word(&record[4..8]));
        let captured = usize::try_from(word(&record[8..12])).map_err(|e| e.to_string())?;
        let on_wire = word(&record[12..16]);
        let frame = rest
            .get(16..16 + captured)
            .ok_or("truncated record (tcpdump stopped mid-write?)")?;
        let time = Duration::from_secs(seconds)
            + if nanos {
                Duration::from_nanos(fraction)
            } else {
                Duration::from_micros(fraction)
            };
        records.push(PcapRecord {
            time,
            on_wire,
            frame,
        });
        rest = &rest[16 + captured..];
    }
    Ok(records)
}
