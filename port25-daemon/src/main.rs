//! `port25d`: the command line is `port25_daemon::cli`.

fn main() -> std::process::ExitCode {
    port25_daemon::cli::main()
}
