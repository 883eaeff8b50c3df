//! `port25d check-config`: validate and print the effective policy, like `nginx -t`.

use std::path::PathBuf;

use crate::config::Config;

pub(super) fn check_config(path: Option<PathBuf>, quiet: bool) -> anyhow::Result<()> {
    let config = Config::load(path.as_deref())?;
    config.check_interfaces()?;
    if !quiet {
        println!("{config}");
        println!("configuration OK");
    }
    Ok(())
}
