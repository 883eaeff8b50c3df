//! Prometheus text.

/// A sample of the Prometheus/OpenMetrics text format: name, labels (unescaped), value.
type Sample<'a> = (&'a str, Vec<(String, String)>, f64);

/// Parses one line; `None` for comments, blank lines and what it cannot read.
pub(super) fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i + 1,
                ',' | ' ' => {}
                '=' => {
                    // The value: a quoted string with \" \\ \n escapes.
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        };
        rest = &inner[end..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

/// The value of the series `name` whose labels are exactly `labels` (in any order).
///
/// `metric(text, "port25_packets_total", &[("iface", "gw0"), ("verdict", "pass"), ("reason", "allowlisted")])`
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<(&str, &str)> = labels.to_vec();
    wanted.sort_unstable();
    text.lines()
        .filter_map(parse_sample)
        .find(|(sample, have, _)| {
            let mut have: Vec<(&str, &str)> =
                have.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            have.sort_unstable();
            *sample == name && have == wanted
        })
        .map(|(_, _, value)| value)
}

/// Every series `name`: its labels (unescaped) and value, in the order of the text.
pub fn metric_samples(text: &str, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
    text.lines()
        .filter_map(parse_sample)
        .filter(|(sample, _, _)| *sample == name)
        .map(|(_, labels, value)| (labels, value))
        .collect()
}

/// The sum of every series `name` whose labels include all of `labels` (0 if there is none).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(parse_sample)
        .filter(|(sample, have, _)| {
            *sample == name
                && labels
                    .iter()
                    .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
        })
        .map(|(_, _, value)| value)
        .sum()
}

/// A real Prometheus server inside a namespace, scraping `target` every second, its TSDB and log
/// in the work directory. Dropping it stops it.
pub struct PrometheusServer<'a> {
    ns: &'a super::Netns,
    child: Option<std::process::Child>,
    web: &'static str,
}

impl<'a> PrometheusServer<'a> {
    /// Starts it and returns once its query API answers (30 s at most).
    pub fn start(ns: &'a super::Netns, target: &str, work: &super::WorkDir) -> Self {
        use super::tool;
        let web = "127.0.0.1:9098";
        let config = work.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: port25\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap_or_else(|err| panic!("writing {}: {err}", config.display()));
        let mut command = ns.command(tool("prometheus"));
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                work.join("prometheus").display()
            ))
            .arg(format!("--web.listen-address={web}"));
        let mut server = Self {
            ns,
            child: None,
            web,
        };
        server.child = Some(super::start_logged(
            &mut command,
            "prometheus",
            &work.join("prometheus.log"),
            std::time::Duration::from_secs(30),
            || server.query("up").contains("\"status\":\"success\""),
        ));
        server
    }

    /// The JSON answer of an instant query of `expr` (empty if Prometheus does not answer).
    pub fn query(&self, expr: &str) -> String {
        let out = self
            .ns
            .command(super::tool("curl"))
            .args(["--silent", "--max-time", "3", "--noproxy", "*"])
            .arg(format!("http://{}/api/v1/query", self.web))
            .args(["--data-urlencode", &format!("query={expr}")])
            .output();
        out.map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for PrometheusServer<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = super::stop_child(&mut child, libc::SIGTERM);
        }
    }
}
