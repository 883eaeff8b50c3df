//! The kernel's ring buffers, followed with tokio: the XDP program's aya-log records, forwarded
//! into the daemon's log, and (through [`spawn_reader`]) the egress guard's events.

use tracing::warn;

use crate::datapath::Datapath;

/// Forwards the XDP program's aya-log records into the daemon's log.
pub(super) fn spawn_log_forwarder(datapath: &mut Datapath) {
    match aya_log::EbpfLogger::init(datapath.ebpf_mut()) {
        Ok(logger) => spawn_reader("kernel-side logging", logger, |logger| logger.flush()),
        Err(err) => warn!("kernel-side logging unavailable: {err}"),
    }
}

/// Follows a kernel ring buffer (`source` owns its fd): `drain` runs each time it is readable, for
/// as long as the daemon runs. `what` names it in the warning if it cannot be followed.
pub(super) fn spawn_reader<T>(
    what: &'static str,
    source: T,
    mut drain: impl FnMut(&mut T) + Send + 'static,
) where
    T: std::os::fd::AsFd + std::os::fd::AsRawFd + Send + 'static,
{
    // SAFETY: `source` owns its fd (AsFd) and keeps it open for as long as it lives, which is as
    // long as the AsyncFd that owns it.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(source, tokio::io::Interest::READABLE)
    };
    let mut source = match registered {
        Ok(fd) => fd,
        Err(err) => {
            warn!("{what} unavailable: {}", err.into_parts().1);
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            match source.readable_mut().await {
                Ok(mut guard) => {
                    drain(guard.get_inner_mut());
                    guard.clear_ready();
                }
                Err(err) => {
                    warn!("{what} stopped: {err}");
                    return;
                }
            }
        }
    });
}

/// The most verbose level the daemon logs, in aya-log's numbering, so the kernel skips the rest.
pub(super) fn kernel_log_level() -> u8 {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => 1,
        LevelFilter::WARN => 2,
        LevelFilter::INFO => 3,
        LevelFilter::DEBUG => 4,
        _ => 5,
    }
}
