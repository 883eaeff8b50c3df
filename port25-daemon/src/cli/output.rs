//! What the commands print: a closed pipe (`port25d deny list | head -1`) ends the command
//! quietly, and any other failure to write (`> /dev/full`) is one error naming standard output,
//! never a panic as `println!` gives.

use std::io::Write as _;

/// Standard output went away (the reader of the pipe exited): nothing more to say.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub(crate) struct StdoutClosed;

/// Writes `text` (and a newline when `newline`) to standard output, flushed.
pub(crate) fn write(text: std::fmt::Arguments<'_>, newline: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(text)
        .and_then(|()| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush())
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::BrokenPipe => anyhow::Error::new(StdoutClosed),
            _ => anyhow::anyhow!("writing to standard output: {err}"),
        })
}

/// `println!` for the commands: an error (see [`write`]) returns from the calling function.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!($($arg)*), true)?
    };
}

/// `print!` for the commands.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!($($arg)*), false)?
    };
}

pub(crate) use {out, outln};
