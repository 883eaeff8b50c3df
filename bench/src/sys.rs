//! Small system helpers: running commands, the machine's description, thread run time and
//! affinity, medians.

use std::{
    fs,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

/// Runs a command to completion and returns its stdout; fails with its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let described = format!("{cmd:?}");
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {described}"))?;
    if !output.status.success() {
        bail!(
            "{described} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `nsenter --net=/run/netns/NS PROGRAM`: in the namespace's network stack but with the host's
/// /sys (unlike `ip netns exec`, which mounts a fresh sysfs without the BPF filesystem, where
/// xdp-filter's libxdp keeps its pins).
pub(crate) fn nsenter(ns: &str, program: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}")).arg(program);
    cmd
}

/// Where the figures come from.
pub(crate) struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
    pub memory_gib: f64,
    pub date: String,
}

impl Machine {
    pub(crate) fn describe() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown CPU".to_string(), |(_, m)| m.trim().to_string());
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_string(), |k| k.trim().to_string());
        let memory_gib = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
        let date = run(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
            .map_or_else(|_| "unknown date".to_string(), |d| d.trim().to_string());
        Self {
            cores,
            cpu,
            kernel,
            memory_gib,
            date,
        }
    }
}

/// The median of some samples (mean of the middle two for an even count); 0 for none.
pub(crate) fn median(samples: &[f64]) -> f64 {
    percentile(samples, 50.0)
}

/// The p-th percentile (nearest rank, interpolated between neighbours); 0 for no samples.
pub(crate) fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// Total run time of a thread, ns (first field of /proc/PID/schedstat: the scheduler's own clock,
/// not tick samples).
pub(crate) fn runtime_ns(pid: u32) -> Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .with_context(|| format!("cannot read /proc/{pid}/schedstat"))?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unexpected /proc/{pid}/schedstat: {text}"))
}

/// Pins a thread (0: the calling one) to one CPU.
pub(crate) fn pin_to_cpu(pid: u32, cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it.
    let ret = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(
            libc::pid_t::try_from(pid)?,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        )
    };
    if ret != 0 {
        bail!(
            "cannot pin thread {pid} to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 100.0), 5.0);
        assert_eq!(median(&[]), 0.0);
    }
}

/// A figure over the rounds: the median is the one quoted, min and max its spread.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub(crate) fn of(samples: &[f64]) -> Self {
        Self {
            min: samples.iter().copied().fold(f64::INFINITY, f64::min),
            median: median(samples),
            max: samples.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }

    /// Whether the two ranges overlap: then their ratio is within this run's noise.
    pub(crate) fn overlaps(&self, other: &Spread) -> bool {
        self.min <= other.max && other.min <= self.max
    }

    /// "median (min-max)".
    pub(crate) fn cell(&self) -> String {
        format!("{:.1} ({:.0}-{:.0})", self.median, self.min, self.max)
    }
}
