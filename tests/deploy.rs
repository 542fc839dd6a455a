//! The files in deploy/: the Grafana dashboard queries only metrics and
//! labels that src/ops/metrics.rs exports, in valid PromQL (promtool), and the
//! configurations shipped in the container image and the Kubernetes
//! ConfigMaps load. (`make deploy-lint` checks the Dockerfile and the
//! manifests themselves.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use slotproxy::config::Overrides;

mod common;

const DASHBOARD: &str = "deploy/grafana/slotproxy.json";

/// Labels Prometheus attaches to every scraped series (target labels of
/// plain scrape configs, Kubernetes service discovery and the Prometheus
/// Operator).
const TARGET_LABELS: &[&str] = &[
    "job",
    "instance",
    "namespace",
    "pod",
    "container",
    "endpoint",
    "service",
];

/// A metric exported by slotproxy: whether it is a histogram, and its labels.
#[derive(Debug)]
struct Exported {
    histogram: bool,
    labels: Vec<String>,
}

/// Every `"slotproxy_..."` name in src/ops/metrics.rs, with the labels of the
/// `&[...]` list that follows it (before the next name).
fn exported_metrics() -> BTreeMap<String, Exported> {
    let src = std::fs::read_to_string("src/ops/metrics.rs").unwrap();
    let starts: Vec<usize> = src.match_indices("\"slotproxy_").map(|(i, _)| i).collect();
    assert!(
        starts.len() >= 20,
        "metric names not found in src/ops/metrics.rs"
    );
    let mut out = BTreeMap::new();
    for (n, &start) in starts.iter().enumerate() {
        let name_end = start + 1 + src[start + 1..].find('"').unwrap();
        let name = src[start + 1..name_end].to_string();
        let segment = &src[name_end..starts.get(n + 1).copied().unwrap_or(src.len())];
        let labels = segment
            .find("&[")
            .map(|i| {
                let list = &segment[i + 2..i + 2 + segment[i + 2..].find(']').unwrap()];
                list.split(',')
                    .map(|l| l.trim().trim_matches('"').to_string())
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let histogram = src[..start].trim_end().ends_with("HistogramOpts::new(");
        out.insert(name, Exported { histogram, labels });
    }
    out
}

/// Every PromQL query of the dashboard (panel targets and template variables).
fn dashboard_queries() -> Vec<(String, String)> {
    fn walk(v: &serde_json::Value, legend: &str, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                let legend = m
                    .get("legendFormat")
                    .and_then(|l| l.as_str())
                    .unwrap_or(legend);
                for (k, v) in m {
                    match (k.as_str(), v.as_str()) {
                        ("expr" | "definition", Some(q)) => {
                            out.push((q.to_string(), legend.into()))
                        }
                        ("query", Some(q)) if q.contains("slotproxy_") => {
                            out.push((q.to_string(), String::new()))
                        }
                        _ => walk(v, legend, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, legend, out)),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(DASHBOARD).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut out = Vec::new();
    walk(&json, "", &mut out);
    out
}

/// What a query refers to: metric names, label names in selectors (per
/// metric), and label names in `by (...)` / `without (...)`.
#[derive(Debug, Default)]
struct Refs {
    metrics: Vec<String>,
    selector_labels: Vec<(String, String)>,
    grouping_labels: Vec<String>,
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A small PromQL scanner: enough for names, selectors and groupings.
fn scan(q: &str) -> Refs {
    let mut refs = Refs::default();
    let b: Vec<char> = q.chars().collect();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_whitespace() {
            i += 1;
        }
        i
    };
    while i < b.len() {
        if b[i] == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if !(b[i].is_ascii_alphabetic() || b[i] == '_' || b[i] == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        let word: String = b[start..i].iter().collect();
        let j = skip_ws(i);
        if (word == "by" || word == "without") && j < b.len() && b[j] == '(' {
            let end = j + b[j..].iter().position(|&c| c == ')').unwrap();
            let list: String = b[j + 1..end].iter().collect();
            refs.grouping_labels
                .extend(list.split(',').map(|l| l.trim().to_string()));
            i = end + 1;
        } else if word.starts_with("slotproxy_") {
            if j < b.len() && b[j] == '{' {
                let mut k = j + 1;
                // label op "value", ...
                loop {
                    k = skip_ws(k);
                    if k >= b.len() || b[k] == '}' {
                        break;
                    }
                    let ls = k;
                    while k < b.len() && is_ident(b[k]) {
                        k += 1;
                    }
                    let label: String = b[ls..k].iter().collect();
                    refs.selector_labels.push((word.clone(), label));
                    k += b[k..].iter().position(|&c| c == '"').unwrap() + 1;
                    while b[k] != '"' {
                        k += if b[k] == '\\' { 2 } else { 1 };
                    }
                    k = skip_ws(k + 1);
                    if b[k] == ',' {
                        k += 1;
                    }
                }
                i = k + 1;
            }
            refs.metrics.push(word);
        }
    }
    refs
}

/// The exported metric a series name belongs to, and its labels
/// (histogram series have `le` on `_bucket`).
fn resolve<'a>(
    exported: &'a BTreeMap<String, Exported>,
    series: &str,
) -> Result<Vec<&'a str>, String> {
    if let Some(m) = exported.get(series) {
        if m.histogram {
            return Err(format!(
                "{series} is a histogram: query {series}_bucket, _sum or _count"
            ));
        }
        return Ok(m.labels.iter().map(String::as_str).collect());
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(m) = series
            .strip_suffix(suffix)
            .and_then(|base| exported.get(base))
            .filter(|m| m.histogram)
        {
            let mut labels: Vec<&str> = m.labels.iter().map(String::as_str).collect();
            if suffix == "_bucket" {
                labels.push("le");
            }
            return Ok(labels);
        }
    }
    Err(format!("{series} is not exported by src/ops/metrics.rs"))
}

/// Checks one PromQL query against what slotproxy exports: every metric
/// exists, every selector and grouping label is one of its labels (or a
/// target label). Adds what is wrong to `problems` and the metrics used to
/// `used`; returns the labels the query's result may carry.
fn check_query<'e>(
    q: &str,
    exported: &'e BTreeMap<String, Exported>,
    problems: &mut Vec<String>,
    used: &mut BTreeSet<String>,
) -> BTreeSet<&'e str> {
    let refs = scan(q);
    if refs.metrics.is_empty() {
        problems.push(format!("no slotproxy metric in {q}"));
    }
    let mut known: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
    for m in &refs.metrics {
        match resolve(exported, m) {
            Ok(labels) => {
                used.insert(m.clone());
                known.extend(labels);
            }
            Err(e) => problems.push(e),
        }
    }
    for (m, label) in &refs.selector_labels {
        if let Ok(labels) = resolve(exported, m) {
            if !labels.contains(&label.as_str()) && !TARGET_LABELS.contains(&label.as_str()) {
                problems.push(format!("{m} has no label {label:?} (in {q})"));
            }
        }
    }
    for label in &refs.grouping_labels {
        if !known.contains(label.as_str()) {
            problems.push(format!("grouping by unknown label {label:?} in {q}"));
        }
    }
    known
}

#[test]
fn dashboard_queries_only_exported_metrics_and_labels() {
    let exported = exported_metrics();
    assert!(
        exported
            .get("slotproxy_command_duration_seconds")
            .is_some_and(|m| m.histogram && m.labels == ["command"]),
        "{exported:?}"
    );
    assert_eq!(
        exported["slotproxy_commands_total"].labels,
        ["command", "outcome"]
    );
    let queries = dashboard_queries();
    assert!(queries.len() > 20, "{} queries", queries.len());
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (q, legend) in &queries {
        let known = check_query(q, &exported, &mut problems, &mut used);
        for part in legend.split("{{").skip(1) {
            let label = part.split("}}").next().unwrap().trim();
            if !known.contains(label) {
                problems.push(format!("legend {{{{{label}}}}} is no label of {q}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard problems:\n{}",
        problems.join("\n")
    );
    // Every exported metric is on the dashboard somewhere.
    let shown: BTreeSet<&str> = used
        .iter()
        .map(|s| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|x| s.strip_suffix(x).filter(|b| exported.contains_key(*b)))
                .unwrap_or(s)
        })
        .collect();
    let missing: Vec<&String> = exported
        .keys()
        .filter(|k| !shown.contains(k.as_str()))
        .collect();
    assert!(missing.is_empty(), "not on the dashboard: {missing:?}");
}

#[test]
fn dashboard_selects_by_namespace_and_pod() {
    let text = std::fs::read_to_string(DASHBOARD).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = json["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(names, ["datasource", "namespace", "pod", "job", "instance"]);
    // Every panel's selector of a slotproxy metric narrows to the chosen
    // proxies (the variables cascade: namespace, pod, job, instance).
    for (q, _) in dashboard_queries() {
        if q.starts_with("label_values(") {
            continue;
        }
        let selectors = q.matches("slotproxy_").count();
        let narrowed = q
            .matches(
                "{namespace=~\"$namespace\", pod=~\"$pod\", job=~\"$job\", instance=~\"$instance\"",
            )
            .count();
        assert_eq!(narrowed, selectors, "{q}");
    }
    let titles: Vec<&str> = json["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for title in [
        "Latency (every request)",
        "Replication lag (ms)",
        "Slots in transfer",
    ] {
        assert!(titles.contains(&title), "no panel {title:?}: {titles:?}");
    }
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // promtool parses rule expressions: one recording rule per query, with
    // Grafana's variables replaced by values.
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("dashboard.rules.yml");
    let mut text = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, (q, _)) in dashboard_queries().iter().enumerate() {
        let q = q
            .replace("$__rate_interval", "1m")
            .replace("$namespace", ".*")
            .replace("$pod", ".*")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        // label_values(...) is Grafana's, not PromQL: check its selector.
        let q = match q.strip_prefix("label_values(") {
            Some(rest) => rest.rsplit_once(',').unwrap().0.to_string(),
            None => q,
        };
        text.push_str(&format!(
            "      - record: dashboard:query{n}\n        expr: {}\n",
            serde_json::to_string(&q).unwrap()
        ));
    }
    std::fs::write(&rules, text).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (Debian package prometheus; deploy/local/ensure-test-deps.sh)");
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The TOML under `slotproxy.toml: |` in a Kubernetes manifest.
fn configmap_toml(manifest: &str) -> String {
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut lines = text.lines();
    let key = lines
        .by_ref()
        .find(|l| l.trim() == "slotproxy.toml: |")
        .unwrap_or_else(|| panic!("no slotproxy.toml in {manifest}"));
    let indent = key.len() - key.trim_start().len();
    let block: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .collect();
    let strip = block
        .iter()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .unwrap();
    block
        .iter()
        .map(|l| l.get(strip..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn load(path: &Path) {
    if let Err(e) = slotproxy::server::load_config(Some(path), &Overrides::default()) {
        panic!("{} does not load: {e}", path.display());
    }
}

#[test]
fn shipped_configurations_load() {
    load(Path::new("deploy/docker/slotproxy.toml"));
    for manifest in [
        "deploy/kubernetes/sidecar.yaml",
        "deploy/kubernetes/standalone.yaml",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let secrets = format!("{}/", dir.path().display());
        // Secret mounts become files in a temporary directory: real PEM
        // certificates and keys in the [*.tls] tables (they are loaded at
        // validation), a password elsewhere.
        let toml = configmap_toml(manifest).replace("/run/secrets/", &secrets);
        let pem = common::make_tls(dir.path(), "deploy");
        let mut in_tls = false;
        for line in toml.lines() {
            if line.starts_with('[') {
                in_tls = line.ends_with(".tls]");
            }
            if let Some((key, value)) = line.split_once(" = ") {
                let key = key.trim();
                if key.ends_with("_file") {
                    let file = Path::new(value.trim().trim_matches('"'));
                    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                    if in_tls {
                        let pem_file = match key {
                            "key_file" => &pem.key,
                            "cert_file" => &pem.cert,
                            _ => &pem.ca,
                        };
                        std::fs::copy(pem_file, file).unwrap();
                    } else {
                        std::fs::write(file, "not-a-real-password\n").unwrap();
                    }
                }
            }
        }
        let path = dir.path().join("slotproxy.toml");
        std::fs::write(&path, &toml).unwrap();
        load(&path);
        assert!(toml.contains("[admin]"), "{manifest}: no admin server");
    }
}

/// The `expr:` of every rule in deploy/prometheus/slotproxy-rules.yaml
/// (one line, or a folded block under `expr: >-`).
fn alert_expressions() -> Vec<String> {
    let text = std::fs::read_to_string("deploy/prometheus/slotproxy-rules.yaml").unwrap();
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, rest)) = line.split_once("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest != ">-" {
            out.push(rest.to_string());
            continue;
        }
        let mut expr = Vec::new();
        while let Some(next) = lines.peek() {
            if next.len() - next.trim_start().len() <= indent.len() {
                break;
            }
            expr.push(next.trim());
            lines.next();
        }
        out.push(expr.join(" "));
    }
    out
}

#[test]
fn alert_rules_query_only_exported_metrics_and_labels() {
    let exported = exported_metrics();
    let exprs = alert_expressions();
    assert_eq!(exprs.len(), 5, "{exprs:?}");
    let mut problems = Vec::new();
    for q in &exprs {
        check_query(q, &exported, &mut problems, &mut BTreeSet::new());
    }
    assert!(
        problems.is_empty(),
        "rule problems:\n{}",
        problems.join("\n")
    );
}
