//! The topology refresher: discovers the cluster with CLUSTER SLOTS, builds
//! a new immutable [`SlotTable`] and swaps it in.
//!
//! Refreshes run in one background task, so at most one is in flight. They
//! happen every `cluster.refresh_interval`, and early when the data path
//! signals trouble (a redirect, a broken or unreachable node). The cluster's
//! `COMMAND` reply is fetched on the first discovery and whenever the set of
//! nodes changes, and replaces the command table. Between refreshes a
//! second task samples the masters' replication offsets (see
//! [`crate::cluster::replication`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backend::{self, BackendSettings, Node};
use crate::cluster::readers::{hello_field, ReadPolicy};
use crate::cluster::redirect_log::RedirectLog;
pub use crate::cluster::replication::ReplicaLag;
use crate::cluster::replication::{self, Replication};
use crate::cluster::slot::{SharedSlotTable, SlotRange, SlotTable, SLOTS};
use crate::command::Commands;
use crate::config::Tunable;
use crate::config::{parse_host_port, ClusterConfig};
use crate::resp::{encode, Value};

/// While no slot table has been built, discovery is retried this often.
const RETRY_EMPTY: Duration = Duration::from_millis(250);
/// Least time between two refreshes triggered by the data path.
const MIN_GAP: Duration = Duration::from_millis(100);
/// How often a switched-off replication poll looks whether it was
/// switched on by a reload.
const POLL_OFF_CHECK: Duration = Duration::from_secs(1);

/// Discovers and tracks the cluster topology.
pub struct Topology {
    table: SharedSlotTable,
    commands: Commands,
    settings: Arc<BackendSettings>,
    seeds: Mutex<Vec<String>>,
    interval: Tunable,
    timeout: Tunable,
    /// `cluster.replication_poll_interval`.
    replication_poll: Tunable,
    state: Mutex<State>,
    refreshes: AtomicU64,
    replication: Replication,
    /// Which replicas serve reads (zones, lag).
    reads: ReadPolicy,
    /// `log.redirects`, and the redirects summed per refresh.
    pub redirects: RedirectLog,
}

#[derive(Default)]
struct State {
    nodes: HashMap<String, Arc<Node>>,
    ranges: Vec<SlotRange>,
    version: u64,
    commands_from: Vec<String>,
}

impl Topology {
    /// Creates the refresher; nothing runs until [`Topology::refresh`] or [`Topology::spawn`].
    pub fn new(
        cfg: &ClusterConfig,
        table: SharedSlotTable,
        commands: Commands,
        settings: Arc<BackendSettings>,
    ) -> Arc<Topology> {
        Arc::new(Topology {
            table,
            commands,
            settings,
            seeds: Mutex::new(cfg.seeds.clone()),
            interval: Tunable::new(cfg.refresh_interval),
            timeout: Tunable::new(cfg.discovery_timeout),
            replication_poll: Tunable::new(cfg.replication_poll_interval),
            state: Mutex::new(State::default()),
            refreshes: AtomicU64::new(0),
            replication: Replication::default(),
            reads: ReadPolicy::new(cfg),
            redirects: RedirectLog::default(),
        })
    }

    /// Applies a reloaded `[cluster]` section (seeds, intervals) and asks
    /// for a refresh.
    pub fn reconfigure(&self, cfg: &ClusterConfig) {
        *self.seeds.lock().expect("seeds lock") = cfg.seeds.clone();
        self.interval.set(cfg.refresh_interval);
        self.timeout.set(cfg.discovery_timeout);
        self.replication_poll.set(cfg.replication_poll_interval);
        self.reads.reconfigure(cfg);
        self.settings.refresh.notify_one();
    }

    /// The notifier the data path uses to ask for an early refresh.
    pub fn trigger(&self) -> &Arc<Notify> {
        &self.settings.refresh
    }

    /// Number of successful refreshes so far.
    pub fn refresh_count(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// Runs the refresh loop until `shutdown` is cancelled.
    pub fn spawn(self: &Arc<Self>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let poll = self.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                // Sampled this often (or at every refresh, if that is more
                // often): the resolution of replication lag. Off (0), only
                // refreshes sample, which a large fleet may prefer: every
                // proxy asks every master.
                let every = poll.replication_poll.get();
                let wait = if every.is_zero() {
                    POLL_OFF_CHECK
                } else {
                    every.min(poll.interval.get())
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                if !every.is_zero() {
                    poll.poll_replication().await;
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let wait = if me.table.load().assigned_slots() == 0 {
                    RETRY_EMPTY
                } else {
                    me.interval.get()
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                    _ = me.settings.refresh.notified() => {
                        debug!("slot table refresh requested by the data path");
                    }
                }
                if let Err(e) = me.refresh().await {
                    warn!(error = %e, "slot table refresh failed");
                }
                tokio::time::sleep(MIN_GAP).await;
            }
        })
    }

    /// Candidate nodes to ask: reachable masters first (rotated to spread
    /// the load), then replicas, then the seeds, then unreachable nodes.
    fn candidates(&self) -> Vec<String> {
        let table = self.table.load();
        let mut masters: Vec<&Arc<Node>> = table.shards().iter().map(|s| &s.master).collect();
        let n = masters.len();
        if n > 1 {
            masters.rotate_left((self.refreshes.load(Ordering::Relaxed) as usize) % n);
        }
        let replicas = table.shards().iter().flat_map(|s| s.replicas.iter());
        let (up, down): (Vec<&Arc<Node>>, Vec<&Arc<Node>>) = masters
            .into_iter()
            .chain(replicas)
            .partition(|n| n.is_reachable());
        let mut out: Vec<String> = up.iter().map(|n| n.addr().to_string()).collect();
        for s in self.seeds.lock().expect("seeds lock").iter() {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        for n in down {
            let a = n.addr().to_string();
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    /// The backend handle for `addr`, created if the proxy has none yet
    /// (a MOVED or ASK target the slot table does not know).
    pub fn node(&self, addr: &str) -> Arc<Node> {
        let mut st = self.state.lock().expect("topology state lock");
        st.nodes
            .entry(addr.to_string())
            .or_insert_with(|| Node::spawn(addr, &self.settings))
            .clone()
    }

    /// Applies a MOVED redirect: a new table with `slot` served by `addr` is
    /// swapped in at once, and a full refresh is requested.
    pub fn apply_moved(&self, slot: u16, addr: &str) {
        let ranges = {
            let st = self.state.lock().expect("topology state lock");
            if st.ranges.is_empty() {
                None
            } else {
                Some(reassign(&st.ranges, slot, addr))
            }
        };
        if let Some(ranges) = ranges {
            self.publish(ranges, "MOVED redirect");
        }
        self.settings.refresh.notify_one();
    }

    /// One discovery round: asks candidates in turn until one answers with a
    /// usable CLUSTER SLOTS reply, then publishes a new table if anything changed.
    pub async fn refresh(&self) -> Result<(), String> {
        let request = encode::command(&["CLUSTER", "SLOTS"]);
        let mut problems = Vec::new();
        // A node whose view has holes (it has not heard of a slot's new owner
        // yet) is only used when no node has a complete view.
        let mut partial: Option<(Vec<SlotRange>, String)> = None;
        for addr in self.candidates() {
            let reply = match backend::link::roundtrip(
                &addr,
                &self.settings.link,
                &request,
                self.timeout.get(),
            )
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            match parse_cluster_slots(&reply, &addr) {
                Ok(ranges) if covered(&ranges) == SLOTS => {
                    self.adopt(ranges, &addr).await;
                    return Ok(());
                }
                Ok(ranges) if !ranges.is_empty() => {
                    if partial
                        .as_ref()
                        .is_none_or(|(p, _)| covered(p) < covered(&ranges))
                    {
                        partial = Some((ranges, addr));
                    }
                }
                Ok(_) => problems.push(format!("{addr}: CLUSTER SLOTS is empty")),
                Err(e) => problems.push(format!("{addr}: {e}")),
            }
        }
        if let Some((ranges, addr)) = partial {
            self.adopt(ranges, &addr).await;
            return Ok(());
        }
        let error = format!("no node answered CLUSTER SLOTS: {}", problems.join("; "));
        let current = self.table.load();
        if current.version() == 0 {
            // Never discovered: clients are told why. The table is replaced,
            // never changed in place, and only if no discovery won meanwhile.
            let _ = self.table.compare_and_swap(
                &current,
                Arc::new(crate::cluster::slot::SlotTable::undiscovered(&error)),
            );
        }
        Err(error)
    }

    async fn adopt(&self, ranges: Vec<SlotRange>, from: &str) {
        self.publish(ranges, from);
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        self.redirects.summary(self.table.load().version());
        self.probe_masters().await;
        self.discover_zones().await;
        self.maybe_refresh_commands().await;
    }

    fn publish(&self, ranges: Vec<SlotRange>, from: &str) {
        let mut st = self.state.lock().expect("topology state lock");
        if st.ranges == ranges {
            debug!(
                source = from,
                version = st.version,
                "slot table refreshed: unchanged"
            );
            return;
        }
        self.swap_in(&mut st, ranges, from);
    }

    /// Builds the table anew from the same ranges: which replicas serve
    /// reads changed (a zone, a replica's lag).
    fn rebuild(&self, why: &str) {
        let mut st = self.state.lock().expect("topology state lock");
        if st.ranges.is_empty() {
            return;
        }
        let ranges = st.ranges.clone();
        self.swap_in(&mut st, ranges, why);
    }

    fn swap_in(&self, st: &mut State, ranges: Vec<SlotRange>, from: &str) {
        st.version += 1;
        let version = st.version;
        let settings = &self.settings;
        let mut fresh: HashMap<String, Arc<Node>> = HashMap::new();
        let table = {
            let old = &st.nodes;
            SlotTable::build(
                version,
                &ranges,
                |addr| {
                    fresh
                        .entry(addr.to_string())
                        .or_insert_with(|| {
                            old.get(addr)
                                .cloned()
                                .unwrap_or_else(|| Node::spawn(addr, settings))
                        })
                        .clone()
                },
                self.reads.eligible(),
            )
        };
        let readers: usize = table.shards().iter().map(|s| s.readers.len()).sum();
        let assigned = table.assigned_slots();
        let masters = table.shards().len();
        self.table.store(Arc::new(table));
        // Nodes no longer in the table are dropped here; their connections
        // finish what is in flight and close.
        st.nodes = fresh;
        st.ranges = ranges;
        info!(
            version,
            masters,
            slots = assigned,
            readers,
            source = from,
            "slot table updated"
        );
        if assigned < SLOTS {
            warn!(
                unassigned = SLOTS - assigned,
                "some hash slots have no master"
            );
        }
    }

    /// Asks every master for INFO replication through its pooled
    /// connection: reachability (reported by CLUSTER INFO, /readyz and the
    /// metrics) and a replication sample. Then for CLUSTER NODES, where
    /// each master marks the slots it is migrating or importing.
    async fn probe_masters(&self) {
        let table = self.table.load_full();
        let timeout = self.timeout.get();
        let frame = encode::command(&["INFO", "replication"]);
        let probes = table
            .shards()
            .iter()
            .map(|s| s.master.probe(frame.clone(), timeout));
        let replies = futures_util::future::join_all(probes).await;
        for (shard, reply) in table.shards().iter().zip(&replies) {
            if reply.is_none() {
                warn!(node = shard.master.addr(), "master did not answer");
            }
        }
        self.record_replication(&table, &replies);
        let frame = encode::command(&["CLUSTER", "NODES"]);
        let nodes = table
            .shards()
            .iter()
            .map(|s| s.master.request(frame.clone(), timeout));
        let (mut migrating, mut importing) = (0, 0);
        for reply in futures_util::future::join_all(nodes).await {
            if let Some(text) = reply.as_ref().and_then(reply_text) {
                let (m, i) = replication::migrations(&text);
                migrating += m;
                importing += i;
            }
        }
        self.replication.set_migrations(migrating, importing);
    }

    /// Samples every master's replication offsets between refreshes
    /// (reachability is left to the refresh).
    async fn poll_replication(&self) {
        let table = self.table.load_full();
        let frame = encode::command(&["INFO", "replication"]);
        let timeout = self.timeout.get();
        let requests = table
            .shards()
            .iter()
            .map(|s| s.master.request(frame.clone(), timeout));
        let replies = futures_util::future::join_all(requests).await;
        self.record_replication(&table, &replies);
    }

    fn record_replication(&self, table: &SlotTable, replies: &[Option<bytes::Bytes>]) {
        let texts: Vec<Option<String>> = replies
            .iter()
            .map(|r| r.as_ref().and_then(reply_text))
            .collect();
        let sample: Vec<(&str, Option<&str>)> = table
            .shards()
            .iter()
            .zip(&texts)
            .map(|(s, t)| (s.master.addr(), t.as_deref()))
            .collect();
        self.replication.record(Instant::now(), &sample);
        let answered: Vec<bool> = texts.iter().map(Option::is_some).collect();
        if self
            .reads
            .record_lags(table, &answered, &self.replication.lags())
        {
            let stale = self.reads.stale();
            info!(?stale, "replicas behind cluster.max_replica_lag changed");
            self.rebuild("replica lag");
        }
    }

    /// Asks nodes for HELLO (no protocol change): their
    /// `availability_zone`, for `read_from = "same_zone"` and the metrics.
    /// Replicas are asked only when they serve reads: otherwise the proxy
    /// opens no connection to them.
    async fn discover_zones(&self) {
        let table = self.table.load_full();
        let replicas = self.reads.reads_replicas();
        let nodes: Vec<&Arc<Node>> = table
            .shards()
            .iter()
            .flat_map(|s| std::iter::once(&s.master).chain(s.replicas.iter().filter(|_| replicas)))
            .collect();
        let frame = encode::command(&["HELLO"]);
        let timeout = self.timeout.get();
        let replies =
            futures_util::future::join_all(nodes.iter().map(|n| n.request(frame.clone(), timeout)))
                .await;
        let replies: Vec<(String, Option<bytes::Bytes>)> = nodes
            .iter()
            .map(|n| n.addr().to_string())
            .zip(replies)
            .collect();
        if self.reads.record_zones(&replies) {
            info!("node availability zones changed");
            self.rebuild("availability zones");
        }
    }

    /// The availability zone a node reported, if any.
    pub fn zone_of(&self, addr: &str) -> Option<Arc<str>> {
        self.reads.zone_of(addr)
    }

    /// Replication lag per replica, from the last sample.
    pub fn replica_lag(&self) -> Vec<ReplicaLag> {
        self.replication.lags()
    }

    /// Slots in MIGRATING and IMPORTING state, summed over the masters, as
    /// of the last refresh.
    pub fn slots_in_transfer(&self) -> (usize, usize) {
        self.replication.migrations()
    }

    /// Fetches COMMAND from a node when the node set changed since the last fetch.
    async fn maybe_refresh_commands(&self) {
        let addrs: Vec<String> = {
            let st = self.state.lock().expect("topology state lock");
            let mut a: Vec<String> = st.nodes.keys().cloned().collect();
            a.sort();
            if a == st.commands_from {
                return;
            }
            a
        };
        let table = self.table.load();
        let Some(addr) = table.shards().first().map(|s| s.master.addr().to_string()) else {
            return;
        };
        let request = encode::command(&["COMMAND"]);
        let timeout = self.timeout.get();
        let server = backend::link::roundtrip(
            &addr,
            &self.settings.link,
            &encode::command(&["HELLO"]),
            timeout,
        )
        .await
        .ok()
        .and_then(|r| Some((hello_field(&r, "server")?, hello_field(&r, "version")?)));
        match backend::link::roundtrip(&addr, &self.settings.link, &request, timeout).await {
            Ok(reply) => match self.commands.refresh_from_reply(&reply, &addr, server) {
                Ok(n) => {
                    info!(commands = n, source = %addr, "command table refreshed from the cluster");
                    self.state
                        .lock()
                        .expect("topology state lock")
                        .commands_from = addrs;
                }
                Err(e) => {
                    warn!(source = %addr, error = %e, "cannot use the cluster's COMMAND reply")
                }
            },
            Err(e) => warn!(error = %e, "cannot fetch COMMAND from the cluster"),
        }
    }
}

/// The text of a bulk or verbatim reply (INFO, CLUSTER NODES).
fn reply_text(frame: &bytes::Bytes) -> Option<String> {
    Value::parse(frame).ok()?.as_str().map(str::to_string)
}

/// Number of slots the ranges cover.
fn covered(ranges: &[SlotRange]) -> usize {
    ranges
        .iter()
        .map(|r| usize::from(r.end - r.start) + 1)
        .sum()
}

/// `ranges` with `slot` moved to the shard of master `addr` (a new shard if
/// `addr` is not a master yet).
fn reassign(ranges: &[SlotRange], slot: u16, addr: &str) -> Vec<SlotRange> {
    let replicas = ranges
        .iter()
        .find(|r| r.master == addr)
        .map(|r| r.replicas.clone())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(ranges.len() + 2);
    for r in ranges {
        if (r.start..=r.end).contains(&slot) {
            if r.start < slot {
                out.push(SlotRange {
                    end: slot - 1,
                    ..r.clone()
                });
            }
            if slot < r.end {
                out.push(SlotRange {
                    start: slot + 1,
                    ..r.clone()
                });
            }
        } else {
            out.push(r.clone());
        }
    }
    out.push(SlotRange {
        start: slot,
        end: slot,
        master: addr.to_string(),
        replicas,
    });
    out.sort_by_key(|r| r.start);
    out
}

/// Parses a CLUSTER SLOTS reply. `queried` supplies the host for nodes the
/// reply lists with an empty address (Redis does this for the node itself
/// when it does not know its own IP).
pub fn parse_cluster_slots(frame: &bytes::Bytes, queried: &str) -> Result<Vec<SlotRange>, String> {
    let value = Value::parse(frame).map_err(|e| e.to_string())?;
    if let Value::Error(e) = &value {
        return Err(format!(
            "CLUSTER SLOTS failed: {}",
            String::from_utf8_lossy(e)
        ));
    }
    let entries = value
        .as_array()
        .ok_or("CLUSTER SLOTS reply is not an array")?;
    let queried_host = parse_host_port(queried)
        .map(|(h, _)| h)
        .unwrap_or("127.0.0.1");
    let node_addr = |v: &Value| -> Option<String> {
        let f = v.as_array()?;
        let host = f.first()?.as_str()?;
        let port = f.get(1)?.as_int()?;
        if host == "?" || !(1..=65535).contains(&port) {
            return None;
        }
        let host = if host.is_empty() { queried_host } else { host };
        Some(if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        })
    };
    let mut ranges = Vec::with_capacity(entries.len());
    for e in entries {
        let f = e.as_array().ok_or("CLUSTER SLOTS entry is not an array")?;
        let start = f
            .first()
            .and_then(Value::as_int)
            .ok_or("bad slot range start")?;
        let end = f
            .get(1)
            .and_then(Value::as_int)
            .ok_or("bad slot range end")?;
        if !(0..SLOTS as i64).contains(&start) || !(start..SLOTS as i64).contains(&end) {
            return Err(format!("bad slot range {start}-{end}"));
        }
        let master = f
            .get(2)
            .and_then(node_addr)
            .ok_or_else(|| format!("slots {start}-{end} have no usable master address"))?;
        let replicas = f.iter().skip(3).filter_map(node_addr).collect();
        ranges.push(SlotRange {
            start: start as u16,
            end: end as u16,
            master,
            replicas,
        });
    }
    ranges.sort_by_key(|r| r.start);
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn parses_cluster_slots() {
        let reply = Bytes::from_static(
            b"*2\r\n\
              *4\r\n:5461\r\n:10922\r\n*3\r\n$9\r\n127.0.0.1\r\n:7001\r\n$2\r\nid\r\n*3\r\n$0\r\n\r\n:7004\r\n$2\r\nid\r\n\
              *3\r\n:0\r\n:5460\r\n*4\r\n$13\r\nredis-0.local\r\n:7000\r\n$2\r\nid\r\n*0\r\n",
        );
        let r = parse_cluster_slots(&reply, "10.0.0.9:7004").unwrap();
        assert_eq!(
            r,
            vec![
                SlotRange {
                    start: 0,
                    end: 5460,
                    master: "redis-0.local:7000".into(),
                    replicas: vec![]
                },
                SlotRange {
                    start: 5461,
                    end: 10922,
                    master: "127.0.0.1:7001".into(),
                    replicas: vec!["10.0.0.9:7004".into()]
                },
            ]
        );
    }

    #[test]
    fn moved_reassigns_one_slot() {
        let r = vec![
            SlotRange {
                start: 0,
                end: 10,
                master: "a:1".into(),
                replicas: vec!["ar:1".into()],
            },
            SlotRange {
                start: 11,
                end: 20,
                master: "b:1".into(),
                replicas: vec![],
            },
        ];
        let out = reassign(&r, 5, "b:1");
        let slots: Vec<(u16, u16, &str)> = out
            .iter()
            .map(|r| (r.start, r.end, r.master.as_str()))
            .collect();
        assert_eq!(
            slots,
            [
                (0, 4, "a:1"),
                (5, 5, "b:1"),
                (6, 10, "a:1"),
                (11, 20, "b:1")
            ]
        );
        let out = reassign(&r, 0, "c:1");
        assert_eq!(
            (out[0].start, out[0].end, out[0].master.as_str()),
            (0, 0, "c:1")
        );
        assert_eq!((out[1].start, out[1].end), (1, 10));
    }

    #[test]
    fn rejects_errors_and_garbage() {
        let err = parse_cluster_slots(
            &Bytes::from_static(b"-ERR This instance has cluster support disabled\r\n"),
            "a:1",
        )
        .unwrap_err();
        assert!(err.contains("cluster support disabled"), "{err}");
        assert!(
            parse_cluster_slots(&Bytes::from_static(b"*1\r\n*2\r\n:0\r\n:99999\r\n"), "a:1")
                .is_err()
        );
        assert_eq!(
            parse_cluster_slots(&Bytes::from_static(b"*0\r\n"), "a:1").unwrap(),
            vec![]
        );
    }
}
