//! Section 5: the daemon's resident memory, idle and holding a million list entries, and how long
//! a scrape of /metrics takes.

use std::{
    ffi::OsStr,
    fmt::Write as _,
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use port25_testkit::lab::{BpfFs, Client, Daemon, Gateway, WorkDir, metric, poll};

use crate::{
    Settings, kernel,
    sys::{self, Spread},
};

const METRICS: &str = "127.0.0.1:9725";

pub(crate) struct DaemonRow {
    /// Entries in the allow list (IPv4 and IPv6 prefixes together).
    pub entries: usize,
    pub rss_kib: u64,
    /// From start until `port25_list_entries{list="allow"}` showed them all.
    pub ready_seconds: f64,
    pub scrape_ms_p50: f64,
    pub scrape_ms_p99: f64,
    pub scrape_bytes: usize,
    /// RSS (KiB) and ready time over the rounds; the fields above are the median round's.
    pub rss: Spread,
    pub ready: Spread,
    pub rounds: usize,
}

/// One plain HTTP/1.0 GET, timed without process start-up (curl's would dwarf it).
fn scrape(addr: SocketAddr) -> Result<(Duration, String)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    let elapsed = started.elapsed();
    if !body.starts_with("HTTP/1.") || !body.contains(" 200 ") {
        bail!("scrape failed: {}", body.lines().next().unwrap_or(""));
    }
    Ok((elapsed, body))
}

fn one(entries: usize, settings: &Settings) -> Result<DaemonRow> {
    let work = WorkDir::new("bench-daemon");
    let lab = Gateway::new("bdaemon", &[Client::new("cl", 0, 10)]);
    let gw = &lab.gw;
    let list = work.join("allow.txt");
    let mut text = String::new();
    if entries > 0 {
        // Half IPv4, half IPv6: the same generator as section 2.
        let set = kernel::prefixes(entries / 2);
        for net in set
            .v4
            .iter()
            .map(ToString::to_string)
            .chain(set.v6.iter().map(ToString::to_string))
        {
            writeln!(text, "{net}")?;
        }
    }
    fs::write(&list, &text)?;
    let config = work.join("port25.toml");
    fs::write(
        &config,
        format!(
            "interfaces = [\"gw0\"]\npolicy = \"drop\"\nports = [25]\n[allow]\nfiles = [\"{}\"]\n\
             [metrics]\nlisten = \"{METRICS}\"\n",
            list.display()
        ),
    )?;
    let bpffs = BpfFs::mount("bench-daemon");
    let pin_dir = bpffs.pin_dir();
    let started = Instant::now();
    let daemon = Daemon::start_with_args(
        gw,
        &config,
        METRICS.parse()?,
        &work.join("port25d.log"),
        &[OsStr::new("--pin-dir"), pin_dir.as_os_str()],
    );
    let loaded = text.lines().count() as f64;
    poll(Duration::from_secs(300), || {
        let text = daemon.try_scrape().ok()?;
        (metric(&text, "port25_list_entries", &[("list", "allow")]) == Some(loaded)).then_some(())
    })
    .with_context(|| format!("port25d did not report {loaded} allow entries in 300 s"))?;
    let ready_seconds = started.elapsed().as_secs_f64();
    // Let allocations from the load settle (freed buffers, the metrics registry's first fill).
    thread::sleep(Duration::from_secs(2));
    let rss_kib = port25_testkit::lab::rss_kib(daemon.pid()).map_err(anyhow::Error::msg)?;
    let addr: SocketAddr = METRICS.parse()?;
    let scrapes = thread::scope(|scope| {
        gw.spawn_inside(scope, || -> Result<Vec<(Duration, String)>> {
            (0..settings.scrapes).map(|_| scrape(addr)).collect()
        })
        .join()
    })
    .map_err(|_| anyhow::anyhow!("the scrape thread panicked"))??;
    let ms: Vec<f64> = scrapes
        .iter()
        .map(|(d, _)| d.as_secs_f64() * 1000.0)
        .collect();
    let scrape_bytes = scrapes.last().map_or(0, |(_, body)| body.len());
    let row = DaemonRow {
        entries: text.lines().count(),
        rss_kib,
        ready_seconds,
        scrape_ms_p50: sys::median(&ms),
        scrape_ms_p99: sys::percentile(&ms, 99.0),
        scrape_bytes,
        rss: Spread::default(),
        ready: Spread::default(),
        rounds: 1,
    };
    eprintln!(
        "bench: port25d with {} allow entries: RSS {} MiB, ready in {:.1} s, scrape {:.2} ms",
        row.entries,
        row.rss_kib / 1024,
        row.ready_seconds,
        row.scrape_ms_p50
    );
    daemon.stop();
    Ok(row)
}

/// Each list size, round by round; a size's row is its median round by RSS, with the spread of
/// RSS and ready time.
pub(crate) fn daemon(settings: &Settings) -> Result<Vec<DaemonRow>> {
    let sizes = [0, settings.daemon_entries];
    let mut rounds: Vec<Vec<DaemonRow>> = sizes.iter().map(|_| Vec::new()).collect();
    for _ in 0..settings.rounds.min(3) {
        for (&entries, rows) in sizes.iter().zip(&mut rounds) {
            rows.push(one(entries, settings)?);
        }
    }
    rounds
        .into_iter()
        .map(|mut rows| {
            let count = rows.len();
            let rss = Spread::of(&rows.iter().map(|r| r.rss_kib as f64).collect::<Vec<_>>());
            let ready = Spread::of(&rows.iter().map(|r| r.ready_seconds).collect::<Vec<_>>());
            rows.sort_by_key(|r| r.rss_kib);
            let middle = rows.len() / 2;
            let mut row = rows.into_iter().nth(middle).context("no rounds")?;
            row.rss = rss;
            row.ready = ready;
            row.rounds = count;
            Ok(row)
        })
        .collect()
}
