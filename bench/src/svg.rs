//! The report's two hand-written SVG bar charts.

use std::fmt::Write as _;

use crate::{
    flood::{Flood, Receiver},
    kernel::PerPacket,
};

/// A horizontal bar chart: one bar per (label, value, colour).
fn bar_chart(title: &str, unit: &str, bars: &[(String, f64, &str)]) -> String {
    let row_h = 22.0;
    let label_w = 330.0;
    let chart_w = 420.0;
    let top = 40.0;
    let height = top + row_h * bars.len() as f64 + 30.0;
    let width = label_w + chart_w + 90.0;
    let max = bars
        .iter()
        .map(|(_, v, _)| *v)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let esc = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{}</text>",
        esc(title)
    );
    for (i, (label, value, colour)) in bars.iter().enumerate() {
        let y = top + row_h * i as f64;
        let w = if value.is_finite() {
            value / max * chart_w
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            label_w - 6.0,
            y + 15.0,
            esc(label)
        );
        let _ = writeln!(
            s,
            "<rect x=\"{label_w}\" y=\"{}\" width=\"{w:.1}\" height=\"{}\" fill=\"{colour}\"/>",
            y + 3.0,
            row_h - 6.0
        );
        let shown = if value.is_finite() {
            format!("{value:.1} {unit}")
        } else {
            "n/a".into()
        };
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\">{shown}</text>",
            label_w + w + 4.0,
            y + 15.0
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

const PORT25: &str = "#2b6cb0";
const OTHER: &str = "#a0aec0";
const FLOOR: &str = "#48bb78";

pub(crate) fn per_packet_svg(pp: &PerPacket) -> String {
    let mut bars = vec![
        ("floor: bare XDP_PASS".to_string(), pp.floor_pass_ns, FLOOR),
        ("floor: bare XDP_DROP".to_string(), pp.floor_drop_ns, FLOOR),
    ];
    for row in &pp.rows {
        bars.push((format!("port25: {}", row.path), row.port25_ns, PORT25));
        if let Ok((xf, _)) = &row.xdp_filter {
            bars.push((format!("xdp-filter: {}", row.path), xf.median, OTHER));
        }
    }
    bar_chart(
        "Per-packet cost in the kernel (BPF_PROG_TEST_RUN, median)",
        "ns",
        &bars,
    )
}

pub(crate) fn flood_svg(flood: &Flood) -> String {
    let bars: Vec<_> = flood
        .rows
        .iter()
        .map(|row| {
            let colour = match row.receiver {
                Receiver::Port25 | Receiver::Ratelimit | Receiver::Synproxy => PORT25,
                Receiver::Floor => FLOOR,
                _ => OTHER,
            };
            (
                row.receiver.label().to_string(),
                row.cpu_ms_per_million,
                colour,
            )
        })
        .collect();
    bar_chart(
        "SYN flood: receiver CPU per million packets received (its NAPI thread)",
        "ms",
        &bars,
    )
}
