//! Prometheus metrics (the `prometheus` crate), served at `GET /metrics` by
//! the admin server.
//!
//! Data-path metrics are counted where they happen (atomic increments of
//! pre-resolved handles); cluster-state metrics are computed at scrape time
//! by the admin server and handed in as a [`Scrape`]. This module imports
//! nothing of the data path: the layers report to it.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, OnceLock, RwLock};

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// A command's metric handles, created on the command's first use: a
/// command table entry costs no series until a client sends the command.
#[derive(Debug)]
pub struct CommandMetrics {
    name: Box<str>,
    handles: OnceLock<CommandHandles>,
}

/// The series of one command that has been used.
#[derive(Debug)]
pub struct CommandHandles {
    /// Replies that were not errors.
    pub ok: IntCounter,
    /// Error replies.
    pub error: IntCounter,
    /// Time from reading the request to writing its reply, when
    /// `metrics.command_histograms` selects the command.
    pub latency: Option<Histogram>,
}

impl CommandMetrics {
    /// The handles of `command` (a full name such as `get` or
    /// `object|encoding`); no series exists until [`CommandMetrics::handles`].
    ///
    /// Interned for the life of the process, like the series they feed
    /// (the registry keeps every label value it has seen): one per command
    /// name, however often the command table is rebuilt. A `'static`
    /// reference costs requests no reference counting.
    pub fn new(command: &str) -> &'static CommandMetrics {
        static INTERNED: LazyLock<Mutex<HashMap<String, &'static CommandMetrics>>> =
            LazyLock::new(Default::default);
        let mut interned = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
        interned.entry(command.to_string()).or_insert_with(|| {
            Box::leak(Box::new(CommandMetrics {
                name: command.into(),
                handles: OnceLock::new(),
            }))
        })
    }

    /// The command's series, created on the first call (one atomic load on
    /// every later one).
    pub fn handles(&self) -> &CommandHandles {
        self.handles.get_or_init(|| {
            let m = &*METRICS;
            let name = &*self.name;
            CommandHandles {
                ok: m.commands.with_label_values(&[name, "ok"]),
                error: m.commands.with_label_values(&[name, "error"]),
                latency: histogram_selected(name).then(|| m.latency.with_label_values(&[name])),
            }
        })
    }

    /// Whether the command's series exist yet.
    pub fn used(&self) -> bool {
        self.handles.get().is_some()
    }
}

/// The commands given a latency histogram of their own
/// (`metrics.command_histograms`): names, or `*` for all.
static HISTOGRAMS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Selects the commands whose latency histogram is exported
/// (`metrics.command_histograms`). A command's choice is made when it is
/// first used, so this applies to commands not used yet: set it at start.
pub fn set_command_histograms(names: &[String]) {
    *HISTOGRAMS.write().unwrap_or_else(|e| e.into_inner()) =
        names.iter().map(|n| n.to_ascii_lowercase()).collect();
}

/// Whether `command` gets a histogram: listed, `*` listed, or a
/// subcommand whose container is listed (`config` selects `config|get`).
fn histogram_selected(command: &str) -> bool {
    selects(
        &HISTOGRAMS.read().unwrap_or_else(|e| e.into_inner()),
        command,
    )
}

fn selects(list: &[String], command: &str) -> bool {
    let parent = command.split('|').next().unwrap_or(command);
    list.iter().any(|n| n == "*" || n == command || n == parent)
}

/// Latency buckets, from 100 µs (a pipelined GET) to 5 s (a blocking or
/// slow command).
const LATENCY_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Every metric slotproxy exports.
pub struct Metrics {
    registry: Registry,
    commands: IntCounterVec,
    latency: HistogramVec,
    /// Error replies sent to clients, by error code (ERR, CROSSSLOT, ...).
    pub errors: IntCounterVec,
    /// Bytes read from and written to clients.
    pub frontend_bytes: IntCounterVec,
    /// Bytes written to and read from cluster nodes.
    pub backend_bytes: IntCounterVec,
    /// Open backend connections (multiplexed ones).
    pub backend_connections: IntGauge,
    /// Client TLS handshakes that failed or timed out.
    pub tls_handshake_failures: IntCounter,
    /// Time from reading a request to writing its reply, every command.
    pub requests: Histogram,
    frontend_connections: IntGauge,
    frontend_connections_accepted: IntCounter,
    redirects: IntCounterVec,
    retries: IntCounterVec,
    slot_table_version: IntGauge,
    refreshes: IntCounter,
    cluster_state: IntGauge,
    slots_assigned: IntGauge,
    slots_ok: IntGauge,
    nodes_ok: IntGauge,
    nodes: IntGauge,
    masters_without_replica: IntGauge,
    slots_migrating: IntGauge,
    slots_importing: IntGauge,
    replica_lag_bytes: IntGaugeVec,
    replica_lag_seconds: GaugeVec,
    backend_requests: IntCounterVec,
    migration_phase: IntGaugeVec,
    migration_keys: IntGaugeVec,
    migration_dual_writes: IntGaugeVec,
    migration_bytes: IntGaugeVec,
    migration_lag: GaugeVec,
    /// Serializes scrapes (scrape-time counters are reset and re-added).
    scrape: Mutex<()>,
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Handles for requests rejected before a command was known.
pub static UNKNOWN_COMMAND: LazyLock<&'static CommandMetrics> =
    LazyLock::new(|| CommandMetrics::new("unknown"));

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
    r.register(Box::new(c.clone())).expect("register");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("metric");
    r.register(Box::new(g.clone())).expect("register");
    g
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric");
    r.register(Box::new(g.clone())).expect("register");
    g
}

fn float_gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("metric");
    r.register(Box::new(g.clone())).expect("register");
    g
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("metric");
    r.register(Box::new(c.clone())).expect("register");
    c
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "slotproxy_command_duration_seconds",
                "Time from reading a request to writing its reply, by command \
                 (commands selected by metrics.command_histograms).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["command"],
        )
        .expect("metric");
        r.register(Box::new(latency.clone())).expect("register");
        let requests = Histogram::with_opts(
            HistogramOpts::new(
                "slotproxy_request_duration_seconds",
                "Time from reading a request to writing its reply, every command.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("metric");
        r.register(Box::new(requests.clone())).expect("register");
        let build_info = gauge_vec(
            &r,
            "slotproxy_build_info",
            "Always 1; the labels say which build runs.",
            &["version", "arch", "os"],
        );
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                std::env::consts::ARCH,
                std::env::consts::OS,
            ])
            .set(1);
        // CPU, memory, file descriptors and threads of this process, under
        // the standard process_* names.
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("register");
        Metrics {
            requests,
            commands: counter_vec(
                &r,
                "slotproxy_commands_total",
                "Replies written to clients, by command and outcome (ok or error).",
                &["command", "outcome"],
            ),
            latency,
            errors: counter_vec(
                &r,
                "slotproxy_errors_total",
                "Error replies written to clients, by error code.",
                &["kind"],
            ),
            frontend_bytes: counter_vec(
                &r,
                "slotproxy_frontend_bytes_total",
                "Bytes read from (in) and written to (out) clients.",
                &["direction"],
            ),
            backend_bytes: counter_vec(
                &r,
                "slotproxy_backend_bytes_total",
                "Bytes written to (out) and read from (in) cluster nodes on multiplexed connections.",
                &["direction"],
            ),
            backend_connections: gauge(
                &r,
                "slotproxy_backend_connections",
                "Open multiplexed connections to cluster nodes.",
            ),
            tls_handshake_failures: counter(
                &r,
                "slotproxy_frontend_tls_handshake_failures_total",
                "Client TLS handshakes that failed or timed out.",
            ),
            frontend_connections: gauge(
                &r,
                "slotproxy_frontend_connections",
                "Connected clients.",
            ),
            frontend_connections_accepted: counter(
                &r,
                "slotproxy_frontend_connections_accepted_total",
                "Clients accepted since start.",
            ),
            redirects: counter_vec(
                &r,
                "slotproxy_redirects_total",
                "Redirects followed, by kind (moved, ask).",
                &["kind"],
            ),
            retries: counter_vec(
                &r,
                "slotproxy_retries_total",
                "Requests re-sent, by reason; exhausted counts requests whose retries ran out.",
                &["kind"],
            ),
            slot_table_version: gauge(
                &r,
                "slotproxy_slot_table_version",
                "Version of the slot table in use (bumped on every change).",
            ),
            refreshes: counter(
                &r,
                "slotproxy_slot_table_refreshes_total",
                "Successful topology refreshes.",
            ),
            cluster_state: gauge(
                &r,
                "slotproxy_cluster_state",
                "1 when every slot has a reachable master, else 0.",
            ),
            slots_assigned: gauge(
                &r,
                "slotproxy_cluster_slots_assigned",
                "Slots that have a master in the slot table.",
            ),
            slots_ok: gauge(
                &r,
                "slotproxy_cluster_slots_ok",
                "Slots whose master is reachable.",
            ),
            nodes_ok: gauge(
                &r,
                "slotproxy_cluster_nodes_ok",
                "Nodes (masters and replicas) that are reachable.",
            ),
            nodes: gauge(
                &r,
                "slotproxy_cluster_nodes",
                "Nodes (masters and replicas) in the slot table.",
            ),
            masters_without_replica: gauge(
                &r,
                "slotproxy_cluster_masters_without_replica",
                "Masters that have no replica.",
            ),
            migration_phase: gauge_vec(
                &r,
                "slotproxy_migration_phase",
                "1 for the live migration's phase (absent without [migration]).",
                &["phase"],
            ),
            migration_keys: gauge_vec(
                &r,
                "slotproxy_migration_keys",
                "Migration keys by kind: copied, skipped (gone at the source), rewritten (copied again), scanned, total (at the source when the copy started), dirty (waiting for a copy).",
                &["kind"],
            ),
            migration_dual_writes: gauge_vec(
                &r,
                "slotproxy_migration_dual_writes",
                "Writes mirrored to the secondary side, by outcome: mirrored, error (key re-copied), unknown (authoritative outcome unknown, key re-copied).",
                &["outcome"],
            ),
            migration_bytes: gauge_vec(
                &r,
                "slotproxy_migration_copied_bytes",
                "Bytes of DUMP payloads restored by the migration.",
                &["source"],
            ),
            migration_lag: float_gauge_vec(
                &r,
                "slotproxy_migration_lag_seconds",
                "The last mirrored write's delay from the request to the secondary's reply.",
                &["source"],
            ),
            slots_migrating: gauge(
                &r,
                "slotproxy_cluster_slots_migrating",
                "Slots a master is migrating to another (MIGRATING), summed over the masters.",
            ),
            slots_importing: gauge(
                &r,
                "slotproxy_cluster_slots_importing",
                "Slots a master is importing from another (IMPORTING), summed over the masters.",
            ),
            replica_lag_bytes: gauge_vec(
                &r,
                "slotproxy_replica_lag_bytes",
                "Replication offset difference between a master and its replica.",
                &["master", "replica"],
            ),
            replica_lag_seconds: float_gauge_vec(
                &r,
                "slotproxy_replica_lag_seconds",
                "How long the master has been past the offset the replica last acknowledged \
                 (0 when caught up), sampled about once a second.",
                &["master", "replica"],
            ),
            backend_requests: counter_vec(
                &r,
                "slotproxy_backend_requests_total",
                "Client requests sent to each node of the slot table on multiplexed connections, \
                 with the node's availability zone (unknown when it reports none).",
                &["node", "zone"],
            ),
            registry: r,
            scrape: Mutex::new(()),
        }
    }
}

/// Sets a scrape-time counter to `value` (reset, then add).
fn set_counter(c: &IntCounter, value: u64) {
    c.reset();
    c.inc_by(value);
}

/// Requests sent to one node, for `slotproxy_backend_requests_total`.
#[derive(Debug, Clone, Default)]
pub struct NodeRequests {
    /// The node's address.
    pub node: String,
    /// Its availability zone, if it reports one.
    pub zone: Option<String>,
    /// Client requests sent to it so far.
    pub requests: u64,
}

/// A replica's replication lag, as its master reports it.
#[derive(Debug, Clone, Default)]
pub struct Lag {
    /// The master's address.
    pub master: String,
    /// The replica's address.
    pub replica: String,
    /// Replication offset difference.
    pub bytes: i64,
    /// How far behind the replica is, in seconds (see
    /// `cluster::replication`).
    pub seconds: f64,
}

/// What a scrape reports besides the data-path counters: figures read from
/// the cluster state and the counters of the layers above at scrape time,
/// handed in by the admin server (metrics reaches into none of them).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Clients connected now.
    pub connected_clients: u64,
    /// Clients accepted since start.
    pub total_connections: u64,
    /// Redirects followed, by kind (`moved`, `ask`).
    pub redirects: Vec<(&'static str, u64)>,
    /// Requests re-sent, by reason.
    pub retries: Vec<(&'static str, u64)>,
    /// The slot table's version.
    pub slot_table_version: u64,
    /// Successful topology refreshes.
    pub refreshes: u64,
    /// Slots that have a master.
    pub slots_assigned: usize,
    /// Slots whose master is reachable.
    pub slots_ok: usize,
    /// Whether every slot has a reachable master.
    pub cluster_ok: bool,
    /// Nodes (masters and replicas).
    pub nodes: usize,
    /// Reachable nodes.
    pub nodes_ok: usize,
    /// Masters without a replica.
    pub masters_without_replica: usize,
    /// Replication lag per replica.
    pub replica_lag: Vec<Lag>,
    /// Slots in MIGRATING state, summed over the masters.
    pub slots_migrating: usize,
    /// Slots in IMPORTING state, summed over the masters.
    pub slots_importing: usize,
    /// Requests per node of the slot table.
    pub backend_requests: Vec<NodeRequests>,
    /// The live migration's figures, if one is configured.
    pub migration: Option<MigrationFigures>,
}

/// What a scrape reports of a live migration.
#[derive(Debug, Clone, Default)]
pub struct MigrationFigures {
    /// The source's address.
    pub source: String,
    /// The phase's name.
    pub phase: &'static str,
    /// Keys by kind (`copied`, `skipped`, ...).
    pub keys: Vec<(&'static str, u64)>,
    /// Dual writes by outcome.
    pub dual_writes: Vec<(&'static str, u64)>,
    /// Bytes restored.
    pub bytes: u64,
    /// The last mirror's delay, in seconds.
    pub lag_seconds: f64,
}

/// Renders every metric in the Prometheus text format.
pub fn render(s: &Scrape) -> String {
    let m = &*METRICS;
    let _serial = m.scrape.lock().expect("scrape lock");
    m.frontend_connections.set(s.connected_clients as i64);
    set_counter(&m.frontend_connections_accepted, s.total_connections);
    for (kind, v) in &s.redirects {
        set_counter(&m.redirects.with_label_values(&[kind]), *v);
    }
    for (kind, v) in &s.retries {
        set_counter(&m.retries.with_label_values(&[kind]), *v);
    }
    m.slot_table_version.set(s.slot_table_version as i64);
    set_counter(&m.refreshes, s.refreshes);
    m.slots_assigned.set(s.slots_assigned as i64);
    m.slots_ok.set(s.slots_ok as i64);
    m.cluster_state.set(i64::from(s.cluster_ok));
    m.nodes.set(s.nodes as i64);
    m.nodes_ok.set(s.nodes_ok as i64);
    m.masters_without_replica
        .set(s.masters_without_replica as i64);
    m.slots_migrating.set(s.slots_migrating as i64);
    m.slots_importing.set(s.slots_importing as i64);
    m.migration_phase.reset();
    if let Some(g) = &s.migration {
        for phase in ["source", "copy", "verify", "target", "done"] {
            m.migration_phase
                .with_label_values(&[phase])
                .set(i64::from(phase == g.phase));
        }
        for (kind, v) in &g.keys {
            m.migration_keys.with_label_values(&[kind]).set(*v as i64);
        }
        for (outcome, v) in &g.dual_writes {
            m.migration_dual_writes
                .with_label_values(&[outcome])
                .set(*v as i64);
        }
        m.migration_bytes
            .with_label_values(&[g.source.as_str()])
            .set(g.bytes as i64);
        m.migration_lag
            .with_label_values(&[g.source.as_str()])
            .set(g.lag_seconds);
    }
    m.replica_lag_bytes.reset();
    m.replica_lag_seconds.reset();
    for lag in &s.replica_lag {
        let labels = [lag.master.as_str(), lag.replica.as_str()];
        m.replica_lag_bytes
            .with_label_values(&labels)
            .set(lag.bytes);
        m.replica_lag_seconds
            .with_label_values(&labels)
            .set(lag.seconds);
    }
    // Nodes that left the table leave the metric: the series stay bounded
    // by the node count.
    m.backend_requests.reset();
    for n in &s.backend_requests {
        let zone = n.zone.as_deref().unwrap_or("unknown");
        set_counter(
            &m.backend_requests.with_label_values(&[&n.node, zone]),
            n.requests,
        );
    }
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&m.registry.gather(), &mut out)
        .expect("text encoding");
    String::from_utf8(out).expect("text format is UTF-8")
}

/// The error code of an error reply (`-CROSSSLOT Keys ...` gives `CROSSSLOT`).
pub fn error_kind(reply: &[u8]) -> &str {
    let line = &reply[1..reply.len().min(33)];
    let end = line
        .iter()
        .position(|&b| b == b' ' || b == b'\r')
        .unwrap_or(line.len());
    match std::str::from_utf8(&line[..end]) {
        Ok(code) if !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase()) => code,
        _ => "ERR",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_selection() {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!selects(&[], "get"));
        assert!(selects(&list(&["*"]), "object|encoding"));
        assert!(selects(&list(&["get", "set"]), "set"));
        assert!(!selects(&list(&["get"]), "getex"));
        assert!(selects(&list(&["config"]), "config|get"));
        assert!(selects(&list(&["config|get"]), "config|get"));
        assert!(!selects(&list(&["config|get"]), "config|set"));
    }

    #[test]
    fn command_series_appear_on_first_use() {
        let m = CommandMetrics::new("lazy-probe");
        assert!(
            std::ptr::eq(m, CommandMetrics::new("lazy-probe")),
            "interned"
        );
        let before = render(&Scrape::default());
        assert!(!before.contains("command=\"lazy-probe\""), "{before}");
        m.handles().ok.inc();
        let after = render(&Scrape::default());
        assert!(
            after.contains("{command=\"lazy-probe\",outcome=\"ok\"} 1"),
            "{after}"
        );
        assert!(after.contains("{command=\"lazy-probe\",outcome=\"error\"} 0"));
    }

    #[test]
    fn no_gauge_and_counter_share_a_name() {
        use prometheus::proto::MetricType;
        let _ = render(&Scrape::default());
        let families = METRICS.registry.gather();
        let mut seen = std::collections::HashMap::new();
        for f in &families {
            let name = f.name();
            let base = match f.get_field_type() {
                MetricType::COUNTER => name.strip_suffix("_total").unwrap_or(name),
                _ => name,
            };
            if let Some(other) = seen.insert(base.to_string(), name.to_string()) {
                panic!("{name} and {other} share the name {base}");
            }
        }
        assert!(seen.len() > 20, "{seen:?}");
        #[cfg(target_os = "linux")]
        assert!(
            seen.contains_key("process_resident_memory_bytes"),
            "{seen:?}"
        );
    }

    #[test]
    fn error_kinds() {
        assert_eq!(error_kind(b"-CROSSSLOT Keys in request\r\n"), "CROSSSLOT");
        assert_eq!(error_kind(b"-ERR unknown\r\n"), "ERR");
        assert_eq!(error_kind(b"-weird\r\n"), "ERR");
        assert_eq!(error_kind(b"-EXECABORT\r\n"), "EXECABORT");
    }
}
