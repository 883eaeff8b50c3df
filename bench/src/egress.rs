//! Section 6: what the egress guard costs a process that connects. The same loop of TCP
//! connects to 127.0.0.1:25 in the bench's own network namespace, where nothing listens (the SYN
//! goes out and the kernel's reset comes back: ECONNREFUSED, with no accept queue or listener
//! thread to blur the figure), runs from the bench process outside the guarded cgroup (no hook: the
//! baseline) and inside it (the connect4 hook allows the smart host); connects to 127.0.0.2:25 are
//! refused by the hook (EPERM, events rate limited). Rounds alternate which goes first; medians.
//! Only the bench process is ever in the cgroup, and only for its loops.

use std::{
    fs,
    io::ErrorKind,
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    thread,
    time::Instant,
};

use anyhow::{Context, Result, bail};
use port25_daemon::testing::{CidrSet, Config, Datapath};
use port25_testkit::lab::{Cgroup, Netns, current_cgroup};

use crate::{Settings, sys::Spread};

/// One measured path.
pub(crate) struct EgressRow {
    pub path: &'static str,
    /// The median of `spread`.
    pub per_second: f64,
    pub spread: Spread,
}

pub(crate) const ROW_OFF: &str = "connect() to a smart host, outside the guarded cgroup (no hook)";
pub(crate) const ROW_ALLOWED: &str = "connect() to a smart host, guard on (enforce)";
pub(crate) const ROW_REFUSED: &str = "connect() refused by the guard (EPERM)";

const SMART: &str = "127.0.0.1:25";
const REFUSED: &str = "127.0.0.2:25";

pub(crate) fn egress(settings: &Settings) -> Result<Vec<EgressRow>> {
    let ns = Netns::new("begress");
    ns.ip(&["link", "set", "lo", "up"]);
    let cgroup = Cgroup::new("bench-egress");
    let config = Config::parse(
        &format!(
            "interfaces = []\n[egress]\nmode = \"enforce\"\nsmart_hosts = [\"127.0.0.1\"]\n\
             cgroup = \"{}\"\n",
            cgroup.path().display()
        ),
        Path::new("bench-egress.toml"),
    )
    .context("bench egress policy")?;
    let mut datapath = Datapath::load_private(config.ratelimit.tracked_sources)
        .context("loading port25's programs")?;
    let empty = CidrSet::default();
    datapath
        .apply_policy(&config, empty.clone(), empty)
        .context("applying the egress policy")?;
    datapath
        .attach_connect_hooks(cgroup.path())
        .context("attaching the connect hooks to the bench's cgroup")?;
    let home = current_cgroup();
    let count = settings.connects;
    let rounds = settings.rounds;
    // One thread in the bench's namespace makes every connect.
    let ns_path = PathBuf::from("/run/netns").join(ns.name());
    let guarded = cgroup.path().to_path_buf();
    let samples = thread::scope(|scope| {
        scope
            .spawn(|| -> Result<[Vec<f64>; 3]> {
                enter(&ns_path)?;
                let mut samples: [Vec<f64>; 3] = Default::default();
                for round in 0..rounds {
                    let off_first = round % 2 == 0;
                    if off_first {
                        samples[0].push(connects(SMART, count, Outcome::Reset)?);
                    }
                    join(&guarded)?;
                    let on = connects(SMART, count, Outcome::Reset);
                    let refused = connects(REFUSED, count, Outcome::Refused);
                    join(&home)?;
                    samples[1].push(on?);
                    samples[2].push(refused?);
                    if !off_first {
                        samples[0].push(connects(SMART, count, Outcome::Reset)?);
                    }
                }
                Ok(samples)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the egress bench thread panicked"))?
    });
    // Back home whatever happened, so the cgroup can go.
    join(&home)?;
    let samples = samples?;
    Ok([ROW_OFF, ROW_ALLOWED, ROW_REFUSED]
        .into_iter()
        .zip(samples)
        .map(|(path, samples)| {
            let spread = Spread::of(&samples);
            EgressRow {
                path,
                per_second: spread.median,
                spread,
            }
        })
        .collect())
}

/// What each connect of a loop must end in.
#[derive(Clone, Copy)]
enum Outcome {
    /// Through the hook and out: nothing listens, so the kernel resets it (ECONNREFUSED).
    Reset,
    /// Refused by the hook (EPERM): no packet leaves.
    Refused,
}

/// `count` connects to `to`, each ending as `outcome` says (anything else fails the bench: it
/// would measure the wrong path); connects per second.
fn connects(to: &str, count: u32, outcome: Outcome) -> Result<f64> {
    let addr: SocketAddr = to.parse()?;
    let started = Instant::now();
    for _ in 0..count {
        match (TcpStream::connect(addr), outcome) {
            (Err(err), Outcome::Reset) if err.kind() == ErrorKind::ConnectionRefused => {}
            (Err(err), Outcome::Refused) if err.kind() == ErrorKind::PermissionDenied => {}
            (Ok(_), _) => bail!("a connect to {to} was answered: something listens there"),
            (Err(err), _) => bail!("connect to {to}: {err}: the bench measures the wrong path"),
        }
    }
    Ok(f64::from(count) / started.elapsed().as_secs_f64())
}

/// Moves this thread into the network namespace pinned at `path`.
fn enter(path: &Path) -> Result<()> {
    let ns = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: a valid namespace fd; only this thread changes namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Moves the whole bench process into the cgroup directory `dir`.
fn join(dir: &Path) -> Result<()> {
    fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
        .with_context(|| format!("moving the bench into cgroup {}", dir.display()))
}
