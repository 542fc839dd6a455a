//! INFO at the proxy: a `# Proxy` section of its own, plus the masters'
//! sections merged where merging makes sense.
//!
//! Merge rule for the summed sections (memory, cpu, stats, errorstats,
//! commandstats, keyspace): integer fields are summed across masters, and so
//! are integer sub-fields of `a=1,b=2` values (keyspace, commandstats);
//! averages, ratios and other non-integer values are kept only when every
//! master reports the same value. `# Server` comes from the first master
//! without its per-process fields. Per-node sections (replication,
//! persistence, modules, latencystats) are not reported: ask a node.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cluster::retry::RetryCounters;
use crate::cluster::slot::SlotTable;
use crate::command::CommandTable;
use crate::ops::stats::{ProxyInfo, VERSION};

/// Sections reported for `INFO` and `INFO default`, in Redis's order
/// after the proxy's own.
const DEFAULT: &[&str] = &[
    "proxy",
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "errorstats",
    "cluster",
    "keyspace",
];
/// Extra sections for `INFO all` / `INFO everything`.
const EXTRA: &[&str] = &["commandstats"];
/// Sections merged from the masters (summed where a sum means something).
const SUMMED: &[&str] = &[
    "memory",
    "persistence",
    "cpu",
    "stats",
    "errorstats",
    "commandstats",
    "keyspace",
];
/// Per-process fields left out of `# Server`.
const NODE_FIELDS: &[&str] = &[
    // Valkey 8.1: one master's zone says nothing of the proxy's.
    "availability_zone",
    "process_id",
    "process_supervised",
    "run_id",
    "tcp_port",
    "server_time_usec",
    "uptime_in_seconds",
    "uptime_in_days",
    "hz",
    "configured_hz",
    "lru_clock",
    "executable",
    "config_file",
    "io_threads_active",
];

/// Which sections a request wants, from INFO's arguments (lowercase).
pub fn wanted(args: &[String]) -> Vec<&'static str> {
    if args.is_empty() {
        return DEFAULT.to_vec();
    }
    let mut out = Vec::new();
    for a in args {
        match a.as_str() {
            "default" => out.extend_from_slice(DEFAULT),
            "all" | "everything" => {
                out.extend_from_slice(DEFAULT);
                out.extend_from_slice(EXTRA);
            }
            other => {
                if let Some(s) = DEFAULT.iter().chain(EXTRA).find(|s| **s == other) {
                    out.push(s);
                }
            }
        }
    }
    let mut seen = Vec::new();
    out.retain(|s| {
        let new = !seen.contains(s);
        seen.push(*s);
        new
    });
    out
}

/// Whether the wanted sections need the masters' INFO at all.
pub fn needs_backends(sections: &[&str]) -> bool {
    sections
        .iter()
        .any(|s| *s == "server" || SUMMED.contains(s))
}

/// Sections of one INFO text, in order: `(name, lines)`.
fn sections(text: &str) -> Vec<(String, Vec<&str>)> {
    let mut out: Vec<(String, Vec<&str>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(name) = line.strip_prefix("# ") {
            out.push((name.trim().to_ascii_lowercase(), Vec::new()));
        } else if !line.is_empty() {
            if let Some((_, lines)) = out.last_mut() {
                lines.push(line);
            }
        }
    }
    out
}

fn is_average(name: &str) -> bool {
    ["avg", "ratio", "per_call", "perc"]
        .iter()
        .any(|w| name.contains(w))
}

/// Merges one field's values from every master.
fn merge_values(name: &str, values: &[&str]) -> Option<String> {
    let first = values.first()?;
    if values.iter().all(|v| v == first) && (is_average(name) || first.parse::<i64>().is_err()) {
        // Identical values: strings, and averages when every node agrees.
        if !first.contains('=') {
            return Some((*first).to_string());
        }
    }
    if !is_average(name) {
        if let Ok(sum) = values
            .iter()
            .map(|v| v.parse::<i64>())
            .sum::<Result<i64, _>>()
        {
            return Some(sum.to_string());
        }
        // Totals such as used_cpu_sys are decimals.
        if let Ok(sum) = values
            .iter()
            .map(|v| v.parse::<f64>())
            .sum::<Result<f64, _>>()
        {
            if !first.contains(['e', 'E', 'n', 'N']) {
                return Some(format!("{sum:.6}"));
            }
        }
    }
    if first.contains('=') {
        // a=1,b=2 sub-fields.
        let per_node: Vec<Vec<(&str, &str)>> = values
            .iter()
            .map(|v| v.split(',').filter_map(|kv| kv.split_once('=')).collect())
            .collect();
        let mut out = Vec::new();
        for (k, _) in &per_node[0] {
            let vals: Vec<&str> = per_node
                .iter()
                .filter_map(|f| f.iter().find(|(kk, _)| kk == k).map(|(_, v)| *v))
                .collect();
            if vals.len() != per_node.len() {
                continue;
            }
            if let Some(v) = merge_values(k, &vals) {
                out.push(format!("{k}={v}"));
            }
        }
        return (!out.is_empty()).then(|| out.join(","));
    }
    None
}

/// A persistence field over the masters: changes and saves add up; the
/// oldest save time is the one that tells what may be lost; flags (a save
/// or load in progress) and durations take the largest; a status is `err`
/// if any master's is.
fn merge_persistence(name: &str, values: &[&str]) -> Option<String> {
    let first = values.first()?;
    if values.iter().all(|v| v == first) && !name.contains("changes") && !name.ends_with("saves") {
        return Some((*first).to_string());
    }
    if name.ends_with("_status") {
        return Some(
            if values.contains(&"err") {
                "err"
            } else {
                first
            }
            .to_string(),
        );
    }
    let ints: Vec<i64> = values
        .iter()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    Some(if name.contains("last_save_time") {
        ints.iter().min()?.to_string()
    } else if name.contains("changes") || name.ends_with("saves") || name.contains("cow_size") {
        ints.iter().sum::<i64>().to_string()
    } else {
        ints.iter().max()?.to_string()
    })
}

/// The proxy's own sections (bodies without headers): what a client of
/// the proxy sees as one server's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Own {
    /// `# Proxy`.
    pub proxy: String,
    /// `# Clients`.
    pub clients: String,
    /// `# Replication`.
    pub replication: String,
}

/// Renders the INFO reply text from the proxy's own sections and the
/// masters' INFO texts (`nodes`).
pub fn render(wanted: &[&str], own: &Own, nodes: &[&str]) -> String {
    let parsed: Vec<Vec<(String, Vec<&str>)>> = nodes.iter().map(|t| sections(t)).collect();
    let mut out = String::new();
    for &section in wanted {
        let body = match section {
            "proxy" => own.proxy.clone(),
            "clients" => own.clients.clone(),
            "replication" => own.replication.clone(),
            // To its clients the proxy is one server: tools and client
            // fixtures that read this pick their standalone mode. The
            // one-node cluster face (CLUSTER SLOTS, ...) still answers a
            // cluster-aware client pointed at the proxy.
            "cluster" => "cluster_enabled:0\r\n".to_string(),
            "server" => parsed
                .first()
                .and_then(|p| p.iter().find(|(n, _)| n == "server"))
                .map(|(_, lines)| {
                    lines
                        .iter()
                        .filter(|l| {
                            let key = l.split(':').next().unwrap_or("");
                            !NODE_FIELDS.contains(&key)
                        })
                        .fold(String::new(), |mut acc, l| {
                            let _ = write!(acc, "{l}\r\n");
                            acc
                        })
                })
                .unwrap_or_default(),
            name => {
                // Field order of the first master that has the section.
                let per_node: Vec<Vec<(&str, &str)>> = parsed
                    .iter()
                    .map(|p| {
                        p.iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, lines)| {
                                lines.iter().filter_map(|l| l.split_once(':')).collect()
                            })
                            .unwrap_or_default()
                    })
                    .collect();
                let mut keys: Vec<&str> = Vec::new();
                for fields in &per_node {
                    for (k, _) in fields {
                        if !keys.contains(k) {
                            keys.push(k);
                        }
                    }
                }
                let mut body = String::new();
                for k in keys {
                    let vals: Vec<&str> = per_node
                        .iter()
                        .filter_map(|f| f.iter().find(|(kk, _)| *kk == k).map(|(_, v)| *v))
                        .collect();
                    // Keyspace and command stats: a node without the line has zero.
                    let complete = vals.len() == per_node.len()
                        || name == "keyspace"
                        || name == "commandstats"
                        || name == "errorstats";
                    if !complete {
                        continue;
                    }
                    let merged = if name == "persistence" {
                        merge_persistence(k, &vals)
                    } else {
                        merge_values(k, &vals)
                    };
                    if let Some(v) = merged {
                        let _ = write!(body, "{k}:{v}\r\n");
                    }
                }
                body
            }
        };
        let title = match section {
            "cpu" => "CPU".to_string(),
            "errorstats" => "Errorstats".to_string(),
            "commandstats" => "Commandstats".to_string(),
            s => {
                let mut c = s.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            }
        };
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let _ = write!(out, "# {title}\r\n{body}");
    }
    out
}

/// Body of INFO's `# Proxy` section.
pub fn proxy_section(
    proxy: &ProxyInfo,
    slots: &SlotTable,
    commands: &CommandTable,
    retries: &RetryCounters,
) -> String {
    let nodes: usize = slots.shards().iter().map(|s| 1 + s.replicas.len()).sum();
    let readers: usize = slots.shards().iter().map(|s| s.readers.len()).sum();
    let (server, server_version) = commands.server();
    let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut out = format!(
        "proxy_name:slotproxy\r\nproxy_version:{VERSION}\r\nproxy_id:{}\r\nuptime_in_seconds:{}\r\n\
         total_commands_processed:{}\r\nslot_table_version:{}\r\nslots_assigned:{}\r\n\
         cluster_masters:{}\r\ncluster_nodes:{nodes}\r\ncluster_server:{server}\r\n\
         cluster_server_version:{server_version}\r\nreplicas_serving_reads:{readers}\r\n\
         command_table_source:{}\r\ncommand_table_size:{}\r\n",
        proxy.id,
        proxy.started.elapsed().as_secs(),
        proxy.total_commands.load(Ordering::Relaxed),
        slots.version(),
        slots.assigned_slots(),
        slots.shards().len(),
        commands.source(),
        commands.len(),
    );
    let _ = write!(
        out,
        "redirects_moved:{}\r\nredirects_ask:{}\r\nretries_transient:{}\r\n\
         retries_unavailable:{}\r\nretries_reads_resent:{}\r\nretries_exhausted:{}\r\n\
         scripts_loaded:{}\r\n",
        r(&retries.moved),
        r(&retries.ask),
        r(&retries.transient),
        r(&retries.unavailable),
        r(&retries.reads_resent),
        r(&retries.exhausted),
        r(&retries.scripts_loaded),
    );
    out
}

/// Body of INFO's `# Clients` section: the proxy's clients, those blocked
/// at the proxy (a blocking command or WAIT) included.
pub fn clients_section(proxy: &ProxyInfo) -> String {
    format!(
        "connected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\n\
         total_connections_received:{}\r\n",
        proxy.connected_clients.load(Ordering::Relaxed),
        proxy.max_clients,
        proxy.blocked_clients.load(Ordering::Relaxed),
        proxy.total_connections.load(Ordering::Relaxed),
    )
}

/// Body of INFO's `# Replication` section: the proxy is a master to its
/// clients, and the replicas a WAIT can count on are those of the master
/// with the fewest (WAIT answers the smallest count over the masters).
pub fn replication_section(proxy: &ProxyInfo, slots: &SlotTable) -> String {
    let replicas = slots
        .shards()
        .iter()
        .map(|s| s.replicas.len())
        .min()
        .unwrap_or(0);
    format!(
        "role:master\r\nconnected_slaves:{replicas}\r\nmaster_failover_state:no-failover\r\n\
         master_replid:{}\r\nmaster_replid2:{}\r\nmaster_repl_offset:0\r\n\
         second_repl_offset:-1\r\nrepl_backlog_active:0\r\n",
        proxy.id,
        "0".repeat(40),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "# Server\r\nredis_version:7.0.15\r\nprocess_id:11\r\ntcp_port:7000\r\n\r\n# Memory\r\nused_memory:100\r\nmem_fragmentation_ratio:1.5\r\nused_memory_human:100B\r\n\r\n# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=10\r\n";
    const B: &str = "# Server\r\nredis_version:7.0.15\r\nprocess_id:12\r\ntcp_port:7001\r\n\r\n# Memory\r\nused_memory:50\r\nmem_fragmentation_ratio:1.2\r\nused_memory_human:50B\r\n\r\n# Keyspace\r\ndb0:keys=4,expires=0,avg_ttl=0\r\n";

    #[test]
    fn sums_what_makes_sense() {
        let own = Own {
            proxy: "proxy_version:1\r\n".into(),
            clients: "connected_clients:2\r\n".into(),
            replication: "role:master\r\n".into(),
        };
        let text = render(&wanted(&[]), &own, &[A, B]);
        assert!(text.starts_with("# Proxy\r\nproxy_version:1\r\n\r\n# Server\r\nredis_version:7.0.15\r\n\r\n# Clients\r\n"), "{text}");
        assert!(!text.contains("process_id"));
        assert!(text.contains("used_memory:150\r\n"));
        assert!(!text.contains("mem_fragmentation_ratio"));
        assert!(!text.contains("used_memory_human"));
        assert!(text.contains("db0:keys=7,expires=1\r\n"), "{text}");
        assert!(text.contains("# Cluster\r\ncluster_enabled:0\r\n"));
    }

    #[test]
    fn section_selection() {
        assert_eq!(wanted(&["keyspace".into()]), ["keyspace"]);
        assert_eq!(
            wanted(&["KEYSPACE".to_lowercase(), "keyspace".into()]),
            ["keyspace"]
        );
        assert!(wanted(&["all".into()]).contains(&"commandstats"));
        assert_eq!(
            wanted(&["cpu".into(), "replication".into()]),
            ["cpu", "replication"]
        );
        assert_eq!(wanted(&["nonsense".into()]), Vec::<&str>::new());
        assert!(wanted(&["all".into()]).contains(&"persistence"));
        assert!(!needs_backends(&["proxy", "clients"]));
        assert!(needs_backends(&["keyspace"]));
    }

    #[test]
    fn persistence_adds_up_what_adds_up() {
        let a = "# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:3\r\nrdb_bgsave_in_progress:0\r\nrdb_last_save_time:1700000100\r\nrdb_last_bgsave_status:ok\r\nrdb_saves:1\r\n";
        let b = "# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:4\r\nrdb_bgsave_in_progress:1\r\nrdb_last_save_time:1700000000\r\nrdb_last_bgsave_status:err\r\nrdb_saves:1\r\n";
        let text = render(&["persistence"], &Own::default(), &[a, b]);
        assert_eq!(
            text,
            "# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:7\r\n\
             rdb_bgsave_in_progress:1\r\nrdb_last_save_time:1700000000\r\n\
             rdb_last_bgsave_status:err\r\nrdb_saves:2\r\n"
        );
        let own = Own {
            replication: "role:master\r\nconnected_slaves:1\r\n".into(),
            ..Own::default()
        };
        assert_eq!(
            render(&["replication"], &own, &[a, b]),
            "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n"
        );
    }
}
