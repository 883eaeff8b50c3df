//! `port25d why ADDRESS`: what the running filter decides now for a SYN from an address, and
//! why, as the daemon works it out (`daemon/why.rs`).

use super::output::outln;
use crate::{
    control::{self, Endpoint},
    proto::WhyReport,
};

pub(super) fn why(daemon: &Endpoint, address: &str, port: u16, json: bool) -> anyhow::Result<()> {
    let report = control::why(daemon, address, port)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print(&report)
}

fn print(report: &WhyReport) -> anyhow::Result<()> {
    let decided = match &report.reason {
        Some(reason) => format!("{} ({reason})", report.verdict.to_uppercase()),
        None => "NOT JUDGED".to_owned(),
    };
    outln!(
        "{} -> port {}: {decided}; policy {}, mode {}",
        report.address,
        report.port,
        report.policy,
        report.mode
    );
    for (n, step) in report.steps.iter().enumerate() {
        outln!("  {}. {step}", n + 1);
    }
    if !report.entries.is_empty() {
        outln!("entries covering it:");
        for entry in &report.entries {
            outln!(
                "  {:<5} {:<20} {}{}",
                entry.list.as_str(),
                entry.cidr.to_string(),
                entry.from,
                if entry.in_force {
                    ""
                } else {
                    " [not enforced]"
                }
            );
        }
    }
    if let Some(shadow) = &report.shadow {
        let decided = match &shadow.reason {
            Some(reason) => format!("{} ({reason})", shadow.verdict.to_uppercase()),
            None => "NOT JUDGED".to_owned(),
        };
        outln!("the shadow policy {} would: {decided}", shadow.config);
        for (n, step) in shadow.steps.iter().enumerate() {
            outln!("  {}. {step}", n + 1);
        }
    }
    outln!("outbound to {}: {}", report.address, report.egress.verdict);
    Ok(())
}
