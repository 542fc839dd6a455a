//! Which replicas serve reads: the proxy's zone against each node's
//! availability zone, and each replica's lag against `max_replica_lag`.
//!
//! Zones come from each node's HELLO reply (`availability_zone`, Valkey
//! 8.1 and later; a node without one is in no zone and never matches).
//! Staleness comes from the replication sample (see
//! [`crate::cluster::replication`]). Both change rarely, so the answer is
//! folded into each [`crate::cluster::slot::Shard`]'s `readers` when the
//! slot table is built, and the refresher rebuilds the table when either
//! changes: a request only picks among the readers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cluster::replication::ReplicaLag;
use crate::cluster::slot::SlotTable;
use crate::config::{ClusterConfig, ReadFrom, Tunable};
use crate::resp::Value;

/// The read policy and what the refresher learnt for it.
#[derive(Debug)]
pub struct ReadPolicy {
    read_from: ReadFrom,
    /// The proxy's own zone (`cluster.zone` or `cluster.zone_env`).
    zone: Option<String>,
    /// `cluster.max_replica_lag` (0: no bound).
    max_lag: Tunable,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Each node's availability zone, by address; nodes without one are absent.
    zones: HashMap<String, Arc<str>>,
    /// Replicas behind their master by more than `max_lag`.
    stale: HashSet<String>,
}

impl ReadPolicy {
    /// The policy of a `[cluster]` section (its zone resolved: validation
    /// has checked it).
    pub fn new(cfg: &ClusterConfig) -> ReadPolicy {
        ReadPolicy {
            read_from: cfg.read_from,
            zone: cfg.resolved_zone().ok().flatten(),
            max_lag: Tunable::new(cfg.max_replica_lag),
            state: Mutex::new(State::default()),
        }
    }

    /// Applies a reloaded `max_replica_lag` (mode and zone need a restart);
    /// takes effect at the next replication sample.
    pub fn reconfigure(&self, cfg: &ClusterConfig) {
        self.max_lag.set(cfg.max_replica_lag);
    }

    /// Whether read-only commands may go to replicas at all.
    pub fn reads_replicas(&self) -> bool {
        self.read_from != ReadFrom::Master
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A snapshot of the rule "may the replica at this address serve
    /// reads", for building a slot table.
    pub fn eligible(&self) -> impl Fn(&str) -> bool + '_ {
        let st = self.lock();
        let wanted: Option<Arc<str>> = match self.read_from {
            ReadFrom::SameZone => Some(self.zone.as_deref().unwrap_or_default().into()),
            _ => None,
        };
        let (zones, stale) = (st.zones.clone(), st.stale.clone());
        let master_only = self.read_from == ReadFrom::Master;
        move |addr: &str| {
            !master_only
                && !stale.contains(addr)
                && wanted
                    .as_ref()
                    .is_none_or(|z| zones.get(addr).is_some_and(|n| n == z))
        }
    }

    /// The availability zone of the node at `addr`, if it reported one.
    pub fn zone_of(&self, addr: &str) -> Option<Arc<str>> {
        self.lock().zones.get(addr).cloned()
    }

    /// Takes the nodes' HELLO replies (`None`: no answer, the zone known
    /// before is kept); whether any zone changed.
    pub fn record_zones(&self, replies: &[(String, Option<bytes::Bytes>)]) -> bool {
        let mut st = self.lock();
        let mut changed = false;
        for (addr, reply) in replies {
            let Some(frame) = reply else { continue };
            let zone = hello_zone(frame);
            let known = st.zones.get(addr.as_str()).map(|z| &**z);
            if known != zone.as_deref() {
                changed = true;
                match zone {
                    Some(z) => st.zones.insert(addr.clone(), z.into()),
                    None => st.zones.remove(addr.as_str()),
                };
            }
        }
        st.zones
            .retain(|a, _| replies.iter().any(|(addr, _)| addr == a));
        changed
    }

    /// Takes a replication sample: `answered[i]` is whether shard `i`'s
    /// master answered. A replica its master reports further behind than
    /// `max_replica_lag`, or does not report at all (not replicating), is
    /// stale; one whose master did not answer keeps its state. Whether the
    /// set of stale replicas changed.
    pub fn record_lags(&self, table: &SlotTable, answered: &[bool], lags: &[ReplicaLag]) -> bool {
        // Reading masters only, no replica is ever stale.
        let max = match self.reads_replicas() {
            true => self.max_lag.get(),
            false => Duration::ZERO,
        };
        let mut stale = HashSet::new();
        let mut st = self.lock();
        if !max.is_zero() {
            for (shard, &up) in table.shards().iter().zip(answered) {
                for r in &shard.replicas {
                    let behind = if up {
                        lags.iter()
                            .find(|l| l.master == shard.master.addr() && l.replica == r.addr())
                            .is_none_or(|l| Duration::from_secs_f64(l.seconds.max(0.0)) > max)
                    } else {
                        st.stale.contains(r.addr())
                    };
                    if behind {
                        stale.insert(r.addr().to_string());
                    }
                }
            }
        }
        if stale == st.stale {
            return false;
        }
        st.stale = stale;
        true
    }

    /// Replicas currently skipped for lag, sorted (for logs).
    pub fn stale(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().stale.iter().cloned().collect();
        v.sort();
        v
    }
}

/// `availability_zone` of a HELLO reply; `None` when absent or empty.
pub fn hello_zone(frame: &bytes::Bytes) -> Option<String> {
    hello_field(frame, "availability_zone")
}

/// A text field of a HELLO reply (a map in RESP3, a flat list of names
/// and values in RESP2); `None` when absent or empty.
pub fn hello_field(frame: &bytes::Bytes, name: &str) -> Option<String> {
    let v = Value::parse(frame).ok()?;
    let fields = v.as_array()?;
    fields
        .chunks(2)
        .find(|kv| kv[0].as_str() == Some(name))
        .and_then(|kv| kv.get(1)?.as_str())
        .filter(|z| !z.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(read_from: ReadFrom, zone: Option<&str>) -> ReadPolicy {
        ReadPolicy::new(&ClusterConfig {
            read_from,
            zone: zone.map(str::to_string),
            ..ClusterConfig::default()
        })
    }

    fn hello(zone: Option<&str>) -> bytes::Bytes {
        let mut s = String::from("*");
        let mut items = vec!["server", "valkey", "version", "8.1.8", "mode", "cluster"];
        if let Some(z) = zone {
            items.extend(["availability_zone", z]);
        }
        s.push_str(&format!("{}\r\n", items.len()));
        for i in items {
            s.push_str(&format!("${}\r\n{i}\r\n", i.len()));
        }
        bytes::Bytes::from(s)
    }

    #[test]
    fn reads_the_zone_from_hello() {
        assert_eq!(hello_zone(&hello(Some("eu-1b"))).as_deref(), Some("eu-1b"));
        assert_eq!(hello_zone(&hello(Some(""))), None);
        assert_eq!(hello_zone(&hello(None)), None, "Redis: no zone");
        assert_eq!(
            hello_field(&hello(None), "version").as_deref(),
            Some("8.1.8")
        );
        assert_eq!(
            hello_zone(&bytes::Bytes::from_static(b"-ERR unknown command\r\n")),
            None
        );
    }

    #[test]
    fn same_zone_reads_only_replicas_of_the_proxys_zone() {
        let p = policy(ReadFrom::SameZone, Some("b"));
        let replies = vec![
            ("r1:1".to_string(), Some(hello(Some("a")))),
            ("r2:1".to_string(), Some(hello(Some("b")))),
            ("r3:1".to_string(), Some(hello(None))),
        ];
        assert!(p.record_zones(&replies));
        assert!(!p.record_zones(&replies), "unchanged");
        let ok = p.eligible();
        assert!(!ok("r1:1") && ok("r2:1") && !ok("r3:1") && !ok("other:1"));
        drop(ok);
        // A node that did not answer keeps its zone.
        assert!(!p.record_zones(&[
            ("r1:1".to_string(), None),
            ("r2:1".to_string(), Some(hello(Some("b")))),
            ("r3:1".to_string(), Some(hello(None))),
        ]));
        assert_eq!(p.zone_of("r1:1").as_deref(), Some("a"));
        // Other modes read every replica; master reads none.
        let any = policy(ReadFrom::PreferReplica, None);
        assert!(any.eligible()("r1:1"));
        assert!(!policy(ReadFrom::Master, None).eligible()("r1:1"));
    }
}
