//! The Prometheus text format 0.0.4, for scrapers that do not ask for OpenMetrics (promtool,
//! many agents): prometheus-client encodes OpenMetrics only, and the two differ in a few
//! places this rewrites. A counter family `x` is described as `x_total`, the name its samples
//! carry; an info family `x` becomes the gauge `x_info`; `unknown` is `untyped`; HELP texts do not
//! escape double quotes; `# UNIT` and `# EOF` do not exist. Samples are the same.

/// The exposition `openmetrics` (as prometheus-client writes it) in text format 0.0.4.
pub(super) fn from_openmetrics(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // A family's HELP comes before its TYPE, which decides the name both carry.
    let mut help: Option<(&str, String)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, unescape_quotes(text)));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (name, kind) = match kind {
                "counter" => (format!("{family}_total"), "counter"),
                "info" => (format!("{family}_info"), "gauge"),
                "unknown" => (family.to_owned(), "untyped"),
                other => (family.to_owned(), other),
            };
            if let Some((helped, text)) = help.take()
                && helped == family
            {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// OpenMetrics escapes `"` in HELP texts; 0.0.4 takes it as it is (and keeps `\\` and `\n`).
fn unescape_quotes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('"')) => {
                out.push('"');
                chars.next();
            }
            ('\\', Some(next)) => {
                out.push('\\');
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row: one family as prometheus-client writes it, and as text format 0.0.4 has it.
    #[test]
    fn families_are_named_as_their_samples_and_openmetrics_only_lines_go() {
        for (openmetrics, text) in [
            (
                "# HELP p Packets.\n# TYPE p counter\np_total{iface=\"gw0\"} 3\n",
                "# HELP p_total Packets.\n# TYPE p_total counter\np_total{iface=\"gw0\"} 3\n",
            ),
            (
                "# HELP b Build.\n# TYPE b info\nb_info{version=\"0.1.0\"} 1\n",
                "# HELP b_info Build.\n# TYPE b_info gauge\nb_info{version=\"0.1.0\"} 1\n",
            ),
            (
                "# HELP a Attached.\n# TYPE a gauge\n# UNIT a bytes\na 1\n",
                "# HELP a Attached.\n# TYPE a gauge\na 1\n",
            ),
            ("# TYPE o unknown\no 2\n# EOF\n", "# TYPE o untyped\no 2\n"),
            (
                "# HELP q By \\\"verdict\\\", a \\\\ and a \\n.\n# TYPE q gauge\n",
                "# HELP q By \"verdict\", a \\\\ and a \\n.\n# TYPE q gauge\n",
            ),
        ] {
            assert_eq!(from_openmetrics(openmetrics), text, "from:\n{openmetrics}");
        }
    }
}
