//! `slotproxy check HOST:PORT`: a one-shot validation of a cluster, like
//! `redis-cli --cluster check`, for deploy pipelines and init containers.
//!
//! It verifies that all 16384 slots are covered by masters, that every
//! master has at least `--min-replicas` replicas, that no slot is migrating
//! or importing, that no node is failing, and that every node agrees on the
//! slot map.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::backend::link::{roundtrip, Link};
use crate::cluster::slot::SLOTS;
use crate::resp::{encode, Value};

/// One node line of CLUSTER NODES.
#[derive(Debug, Clone)]
struct NodeLine {
    id: String,
    addr: String,
    master: bool,
    failing: bool,
    master_id: String,
    slots: Vec<(u16, u16)>,
    transfers: Vec<String>,
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let flags = f[2];
            let mut slots = Vec::new();
            let mut transfers = Vec::new();
            for s in &f[8..] {
                if s.starts_with('[') {
                    transfers.push((*s).to_string());
                } else if let Some((a, b)) = s.split_once('-') {
                    if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                        slots.push((a, b));
                    }
                } else if let Ok(a) = s.parse() {
                    slots.push((a, a));
                }
            }
            Some(NodeLine {
                id: f[0].to_string(),
                addr: f[1].split('@').next().unwrap_or(f[1]).to_string(),
                master: flags.contains("master"),
                failing: flags.contains("fail"),
                master_id: f[3].to_string(),
                slots,
                transfers,
            })
        })
        .collect()
}

async fn cluster_nodes(
    addr: &str,
    link: &Link,
    timeout: Duration,
) -> Result<Vec<NodeLine>, String> {
    let reply = roundtrip(addr, link, &encode::command(&["CLUSTER", "NODES"]), timeout).await?;
    match Value::parse(&reply).map_err(|e| e.to_string())? {
        Value::Error(e) => Err(format!("{addr}: {}", String::from_utf8_lossy(&e))),
        v => v
            .as_str()
            .map(parse_nodes)
            .ok_or_else(|| format!("{addr}: CLUSTER NODES is not text")),
    }
}

/// The outcome of a check: report lines, and the problems found.
#[derive(Debug, Default)]
pub struct Report {
    /// Human-readable lines, `[OK]` and `[ERR]`.
    pub lines: Vec<String>,
    /// Problems; empty when the cluster passed.
    pub problems: Vec<String>,
}

impl Report {
    fn ok(&mut self, line: String) {
        self.lines.push(format!("[OK] {line}"));
    }
    fn err(&mut self, line: String) {
        self.lines.push(format!("[ERR] {line}"));
        self.problems.push(line);
    }
}

/// Checks the cluster that `seed` belongs to; `link` says how to connect
/// (TLS, AUTH).
pub async fn check(seed: &str, link: &Link, min_replicas: usize, timeout: Duration) -> Report {
    let mut r = Report::default();
    let nodes = match cluster_nodes(seed, link, timeout).await {
        Ok(n) => n,
        Err(e) => {
            r.err(format!("cannot read CLUSTER NODES: {e}"));
            return r;
        }
    };
    let masters: Vec<&NodeLine> = nodes.iter().filter(|n| n.master && !n.failing).collect();
    let mut covered = vec![false; SLOTS];
    for m in &masters {
        for &(a, b) in &m.slots {
            for s in a..=b.min(SLOTS as u16 - 1) {
                covered[s as usize] = true;
            }
        }
    }
    let missing = covered.iter().filter(|c| !**c).count();
    if missing == 0 {
        r.ok(format!(
            "All {SLOTS} slots covered by {} masters.",
            masters.len()
        ));
    } else {
        r.err(format!(
            "{missing} of {SLOTS} slots are not covered by a master."
        ));
    }
    for m in masters.iter().filter(|m| !m.slots.is_empty()) {
        let replicas = nodes
            .iter()
            .filter(|n| !n.master && !n.failing && n.master_id == m.id)
            .count();
        if replicas >= min_replicas {
            r.ok(format!("Master {} has {replicas} replica(s).", m.addr));
        } else {
            r.err(format!(
                "Master {} has {replicas} replica(s), fewer than {min_replicas}.",
                m.addr
            ));
        }
    }
    for n in &nodes {
        if n.failing {
            r.err(format!("Node {} is failing.", n.addr));
        }
        for t in &n.transfers {
            let what = if t.contains("->-") {
                "migrating"
            } else {
                "importing"
            };
            r.err(format!("Node {} has slot {what}: {t}.", n.addr));
        }
    }
    // Every reachable node must see the same slot map.
    let map_of = |nodes: &[NodeLine]| -> BTreeMap<String, BTreeSet<(u16, u16)>> {
        nodes
            .iter()
            .filter(|n| n.master && !n.slots.is_empty())
            .map(|n| (n.id.clone(), n.slots.iter().copied().collect()))
            .collect()
    };
    let reference = map_of(&nodes);
    let mut disagree = Vec::new();
    for n in nodes.iter().filter(|n| !n.failing) {
        match cluster_nodes(&n.addr, link, timeout).await {
            Ok(view) if map_of(&view) == reference => {}
            Ok(_) => disagree.push(n.addr.clone()),
            Err(e) => r.err(format!("Node {} did not answer: {e}", n.addr)),
        }
    }
    if disagree.is_empty() {
        r.ok("All nodes agree about the slot configuration.".into());
    } else {
        r.err(format!(
            "Nodes do not agree about the slot configuration: {}.",
            disagree.join(", ")
        ));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes_lines() {
        let text = "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [5461->-b2]\n\
                    b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922 16000\n\
                    c3 127.0.0.1:7003@17003 slave a1 0 0 1 connected\n\
                    d4 127.0.0.1:7004@17004 slave,fail b2 0 0 2 disconnected\n";
        let n = parse_nodes(text);
        assert_eq!(n.len(), 4);
        assert_eq!(n[0].slots, [(0, 5460)]);
        assert_eq!(n[0].transfers, ["[5461->-b2]"]);
        assert_eq!(n[1].slots, [(5461, 10922), (16000, 16000)]);
        assert_eq!(n[0].addr, "127.0.0.1:7000");
        assert!(!n[2].master && n[2].master_id == "a1");
        assert!(n[3].failing);
    }
}
