//! Prometheus rules (promtool check and unit tests) and the Grafana dashboard (every query valid and on port25 metrics).

use super::*;

/// Every `port25_*` metric name in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("port25_") {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded_by_ident {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn prometheus_rules_pass_promtool_check_and_unit_tests() {
    let promtool = tool("promtool", "prometheus");
    let dir = packaging().join("prometheus");
    let check = run(Command::new(&promtool)
        .args(["check", "rules", "port25.rules.yml"])
        .current_dir(&dir));
    println!("{}", stdout(&check));
    let test = run(Command::new(&promtool)
        .args(["test", "rules", "port25.rules.test.yml"])
        .current_dir(&dir));
    println!("{}", stdout(&test));
    assert!(stdout(&test).contains("SUCCESS"));

    let rules = fs::read_to_string(dir.join("port25.rules.yml")).unwrap();
    let used = metric_names(&rules);
    for name in &used {
        assert!(
            METRICS.contains(&name.as_str()),
            "the rules use {name}, which port25d does not export"
        );
    }
    // Each alert is unit-tested.
    let tests = fs::read_to_string(dir.join("port25.rules.test.yml")).unwrap();
    for line in rules.lines() {
        if let Some(alert) = line.trim().strip_prefix("- alert:") {
            let alert = alert.trim();
            assert!(
                tests.contains(&format!(
                    "alertname: {alert}\n        exp_alerts:\n          - exp_labels"
                )),
                "{alert} has no test in which it fires"
            );
        }
    }
}

#[test]
fn grafana_dashboard_queries_are_valid_and_use_port25_metrics() {
    let python = tool("python3", "python3");
    let promtool = tool("promtool", "prometheus");
    let path = packaging().join("grafana/port25.json");
    // python3's json module is the parser: panels (rows' nested panels too) and their queries,
    // one per line, tab-separated, newlines in expressions escaped.
    let script = r#"
import json, sys
d = json.load(open(sys.argv[1]))
def walk(panels):
    for p in panels:
        yield p
        yield from walk(p.get("panels", []))
for v in d["templating"]["list"]:
    print("VAR", v["name"], v["type"], json.dumps(v.get("datasource")), sep="\t")
for p in walk(d["panels"]):
    print("PANEL", p["type"], p["title"], json.dumps(p.get("datasource")), sep="\t")
    for t in p.get("targets", []):
        print("EXPR", p["title"], json.dumps(t.get("datasource")), t["expr"].replace("\n", " "), sep="\t")
"#;
    let out = stdout(&run(Command::new(&python).args(["-c", script]).arg(&path)));
    let ds = r#"{"type": "prometheus", "uid": "${DS_PROMETHEUS}"}"#;
    let mut titles = Vec::new();
    let mut exprs = Vec::new();
    let mut vars = Vec::new();
    for line in out.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        match cols[0] {
            "VAR" => vars.push((cols[1].to_owned(), cols[2].to_owned(), cols[3].to_owned())),
            "PANEL" if cols[1] != "row" => {
                assert_eq!(
                    cols[3], ds,
                    "panel {:?} must use the ${{DS_PROMETHEUS}} data source",
                    cols[2]
                );
                titles.push(cols[2].to_owned());
            }
            "EXPR" => {
                assert_eq!(cols[2], ds, "query of {:?}", cols[1]);
                exprs.push((cols[1].to_owned(), cols[3].to_owned()));
            }
            _ => {}
        }
    }
    assert!(
        vars.iter()
            .any(|(n, t, _)| n == "DS_PROMETHEUS" && t == "datasource"),
        "no DS_PROMETHEUS data source variable: {vars:?}"
    );
    for (name, _, var_ds) in &vars {
        if name != "DS_PROMETHEUS" {
            assert_eq!(var_ds, ds, "variable {name}");
        }
    }
    // The panels the operator needs.
    for wanted in [
        "Packets/s by verdict and reason",
        "Bytes/s",
        "Drops/s by reason",
        "Would drop",
        "Top rate-limited sources",
        "Attached interfaces",
        "List entries",
        "reloads",
    ] {
        assert!(
            titles
                .iter()
                .any(|t| t.to_lowercase().contains(&wanted.to_lowercase())),
            "no panel {wanted:?} in {titles:?}"
        );
    }
    // Only metrics port25d exports, and each of them shown somewhere.
    let mut used = BTreeSet::new();
    for (title, expr) in &exprs {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "panel {title:?}: {expr} uses no port25 metric"
        );
        for name in names {
            assert!(
                METRICS.contains(&name.as_str()),
                "panel {title:?} uses {name}, which port25d does not export"
            );
            used.insert(name);
        }
    }
    for metric in METRICS {
        assert!(used.contains(*metric), "no panel shows {metric}");
    }
    // Valid PromQL: promtool checks them as recording rules, Grafana's variables filled in.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$__range", "1h")
            .replace("$instance", ".*")
            .replace("$iface", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: |\n          {expr}\n"
        ));
    }
    let dir = scratch("dashboard");
    fs::write(dir.join("queries.yml"), &rules).unwrap();
    run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(dir.join("queries.yml")));
}

/// The metric names in the first column of a Markdown table's rows (`| \`port25_x\`, ... |`).
fn table_metrics(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|line| line.strip_prefix("| `port25_"))
        .flat_map(|row| {
            let first = format!("`port25_{}", row.split('|').next().unwrap_or_default());
            first
                .split('`')
                .filter(|part| part.starts_with("port25_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_readmes_list_every_metric_and_every_alert() {
    let readme = fs::read_to_string(workspace().join("README.md")).unwrap();
    let listed = table_metrics(&readme);
    let exported: BTreeSet<String> = METRICS.iter().map(|m| (*m).to_owned()).collect();
    assert_eq!(
        listed, exported,
        "README's metrics table and the metrics port25d exports differ"
    );
    let rules = fs::read_to_string(packaging().join("prometheus/port25.rules.yml")).unwrap();
    let alerts: BTreeSet<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    let guide = fs::read_to_string(packaging().join("README.md")).unwrap();
    let table: BTreeSet<String> = guide
        .lines()
        .filter_map(|line| line.strip_prefix("| `Port25"))
        .filter_map(|row| row.split('`').next())
        .map(|name| format!("Port25{name}"))
        .collect();
    let alerts: BTreeSet<String> = alerts.iter().map(|a| (*a).to_owned()).collect();
    assert_eq!(
        table, alerts,
        "packaging/README.md's alert table and the rules file differ"
    );
}
