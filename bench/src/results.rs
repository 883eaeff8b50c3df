//! What one run of the bench measured, section by section: what the report and its targets read.

use crate::{
    daemon::DaemonRow,
    egress::EgressRow,
    flood::{Flood, FloodRow, Receiver},
    kernel::{PerPacket, ScaleRow},
    sys::Machine,
};

pub(crate) struct Results {
    pub machine: Machine,
    pub smoke: bool,
    pub wall_seconds: f64,
    pub per_packet: PerPacket,
    pub scale: Vec<ScaleRow>,
    pub flood: Flood,
    pub daemon: Vec<DaemonRow>,
    /// How many scrapes section 5 timed.
    pub scrapes: usize,
    pub egress: Vec<EgressRow>,
    /// Connects per round of section 6.
    pub connects: u32,
}

/// A receiver's CPU per million flood packets; NaN when it was not measured.
pub(crate) fn flood_cpu(flood: &Flood, receiver: Receiver) -> f64 {
    flood_row(flood, receiver).map_or(f64::NAN, |row| row.cpu_ms_per_million)
}

pub(crate) fn flood_row(flood: &Flood, receiver: Receiver) -> Option<&FloodRow> {
    flood.rows.iter().find(|r| r.receiver == receiver)
}
