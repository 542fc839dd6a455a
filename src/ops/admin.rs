//! The admin HTTP server (hyper) at `admin.listen` / `--admin`: probes for
//! Kubernetes and the real topology.
//!
//! * `GET /healthz`: 200 while the process serves.
//! * `GET /readyz`: 200 only when the slot table covers all 16384 slots with
//!   reachable masters and the proxy is not draining; 503 with the reason
//!   otherwise.
//! * `GET /topology`: the slot table as JSON.
//! * `GET /metrics`: Prometheus metrics (see [`crate::ops::metrics`]).
//! * `POST /reload`: reloads the configuration, when `admin.allow_reload`
//!   is on (403 otherwise): 200 with one line per change, as `PROXY CONFIG
//!   RELOAD` answers, or 422 with every problem when the files do not load.
//!
//! Anything else gets 404 (unknown path) or 405 (wrong method), with a text
//! body.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::cluster::retry::Retrier;
use crate::cluster::slot::{SharedSlotTable, SlotTable, SLOTS};
use crate::cluster::topology::Topology;
use crate::migration::status::Status;
use crate::migration::Migration;
use crate::ops::metrics::{self, Lag, MigrationFigures, NodeRequests, Scrape};
use crate::ops::stats::ProxyInfo;

/// What the admin endpoints look at.
#[derive(Clone)]
pub struct AdminState {
    /// The current slot table.
    pub table: SharedSlotTable,
    /// Set when the proxy starts draining (SIGTERM): not ready any more.
    pub draining: Arc<AtomicBool>,
    /// The topology refresher (refresh count, replication lag).
    pub topology: Arc<Topology>,
    /// Redirect and retry counters.
    pub retrier: Arc<Retrier>,
    /// Client counters.
    pub proxy: Arc<ProxyInfo>,
    /// `admin.allow_reload` (a reload may change it).
    pub allow_reload: Arc<AtomicBool>,
    /// Runs a reload for `POST /reload`.
    pub reload: ReloadFn,
    /// The live migration (`/migration`), if `[migration]` is configured.
    pub migration: Option<Arc<Migration>>,
}

/// A reload as `POST /reload` runs it: the report's lines, or why nothing
/// changed.
pub type ReloadFn = Arc<dyn Fn() -> Result<Vec<String>, String> + Send + Sync>;

/// Serves admin requests until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move {
                    Ok::<_, Infallible>(if req.uri().path() == "/reload" {
                        reload(&state, req.method()).await
                    } else {
                        respond(&state, &req)
                    })
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %e, "admin connection ended");
            }
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The figures a scrape reports from the cluster state and the counters.
fn scrape(state: &AdminState) -> Scrape {
    let t = state.table.load();
    let r = &state.retrier.counters;
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let nodes = t
        .shards()
        .iter()
        .flat_map(|s| std::iter::once(&s.master).chain(s.replicas.iter()));
    let nodes_in_table = nodes.clone();
    let slots_ok = t.slots_ok();
    let (slots_migrating, slots_importing) = state.topology.slots_in_transfer();
    Scrape {
        connected_clients: state.proxy.connected_clients.load(Ordering::Relaxed) as u64,
        total_connections: get(&state.proxy.total_connections),
        redirects: vec![("moved", get(&r.moved)), ("ask", get(&r.ask))],
        retries: vec![
            ("transient", get(&r.transient)),
            ("unavailable", get(&r.unavailable)),
            ("read_resent", get(&r.reads_resent)),
            ("noscript", get(&r.scripts_loaded)),
            ("exhausted", get(&r.exhausted)),
        ],
        slot_table_version: t.version(),
        refreshes: state.topology.refresh_count(),
        slots_assigned: t.assigned_slots(),
        slots_ok,
        cluster_ok: slots_ok == SLOTS,
        nodes: nodes.clone().count(),
        nodes_ok: nodes.filter(|n| n.is_reachable()).count(),
        masters_without_replica: t.shards().iter().filter(|s| s.replicas.is_empty()).count(),
        replica_lag: state
            .topology
            .replica_lag()
            .into_iter()
            .map(|l| Lag {
                master: l.master,
                replica: l.replica,
                bytes: l.bytes,
                seconds: l.seconds,
            })
            .collect(),
        slots_migrating,
        slots_importing,
        backend_requests: nodes_in_table
            .map(|n| NodeRequests {
                node: n.addr().to_string(),
                zone: state.topology.zone_of(n.addr()).map(|z| z.to_string()),
                requests: n.requests(),
            })
            .collect(),
        migration: state
            .migration
            .as_ref()
            .map(|m| migration_figures(&m.status())),
    }
}

/// The metrics' view of a migration's status.
fn migration_figures(s: &Status) -> MigrationFigures {
    let phase = ["source", "copy", "verify", "target", "done"]
        .into_iter()
        .find(|p| *p == s.phase)
        .unwrap_or("done");
    MigrationFigures {
        source: s.source.clone(),
        phase,
        keys: vec![
            ("copied", s.keys_copied),
            ("skipped", s.keys_skipped),
            ("rewritten", s.keys_rewritten),
            ("scanned", s.keys_scanned),
            ("total", s.keys_total),
            ("dirty", s.dirty_keys),
        ],
        dual_writes: vec![
            ("mirrored", s.mirrored),
            ("error", s.mirror_errors),
            ("unknown", s.unknown_outcomes),
        ],
        bytes: s.bytes,
        lag_seconds: s.lag_ms / 1000.0,
    }
}

/// `POST /reload`.
async fn reload(state: &AdminState, method: &Method) -> Response<Full<Bytes>> {
    if method != Method::POST {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "/reload takes POST only\n".into(),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    if !state.allow_reload.load(Ordering::Relaxed) {
        return text(
            StatusCode::FORBIDDEN,
            "POST /reload is off: set admin.allow_reload = true to allow it\n".into(),
        );
    }
    // The reload reads files and parses certificates: off the runtime.
    let run = state.reload.clone();
    match tokio::task::spawn_blocking(move || run()).await {
        Ok(Ok(lines)) => text(
            StatusCode::OK,
            lines.iter().map(|l| format!("{l}\n")).collect(),
        ),
        Ok(Err(e)) => text(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("configuration not reloaded: {e}\n"),
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload failed: {e}\n"),
        ),
    }
}

fn respond(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is supported\n".into(),
        );
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/metrics" => {
            let body = metrics::render(&scrape(state));
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/readyz" => match readiness(&state.table.load(), state.draining.load(Ordering::Relaxed)) {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        "/topology" => {
            let mut r = Response::new(Full::new(Bytes::from(
                topology_json(&state.table.load(), |a| state.topology.zone_of(a)).to_string(),
            )));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        "/migration" => match &state.migration {
            Some(m) => {
                let body = serde_json::to_string(&m.status()).unwrap_or_default();
                let mut r = Response::new(Full::new(Bytes::from(body)));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                r
            }
            None => text(
                StatusCode::NOT_FOUND,
                "no migration: [migration] is not configured\n".into(),
            ),
        },
        other => text(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {other}\n"),
        ),
    }
}

/// Ready when every slot has a reachable master and the proxy is not draining.
pub fn readiness(table: &SlotTable, draining: bool) -> Result<(), String> {
    if draining {
        return Err("draining (shutting down)".into());
    }
    if table.version() == 0 {
        return Err("the cluster has not been discovered yet".into());
    }
    let assigned = table.assigned_slots();
    if assigned < SLOTS {
        return Err(format!(
            "{} of {SLOTS} slots have no master",
            SLOTS - assigned
        ));
    }
    let down: Vec<(&str, usize)> = table
        .shards()
        .iter()
        .zip(table.slot_counts())
        .filter(|(s, _)| !s.master.is_reachable())
        .map(|(s, n)| (s.master.addr(), n))
        .collect();
    if down.is_empty() {
        return Ok(());
    }
    let slots: usize = down.iter().map(|d| d.1).sum();
    let nodes: Vec<&str> = down.iter().map(|d| d.0).collect();
    Err(format!(
        "{slots} of {SLOTS} slots have an unreachable master ({})",
        nodes.join(", ")
    ))
}

/// The slot table as JSON: version, and per master its address,
/// reachability, slot ranges and replicas.
/// `zone` gives a node's availability zone, if it reported one.
pub fn topology_json(
    table: &SlotTable,
    zone: impl Fn(&str) -> Option<std::sync::Arc<str>>,
) -> serde_json::Value {
    let shards: Vec<serde_json::Value> = table
        .shards()
        .iter()
        .zip(table.ranges())
        .map(|(s, ranges)| {
            serde_json::json!({
                "master": s.master.addr(),
                "reachable": s.master.is_reachable(),
                "zone": zone(s.master.addr()).as_deref(),
                "slots": ranges.iter().map(|(a, b)| [a, b]).collect::<Vec<_>>(),
                "replicas": s.replicas.iter().map(|r| serde_json::json!({
                    "addr": r.addr(),
                    "reachable": r.is_reachable(),
                    "zone": zone(r.addr()).as_deref(),
                    // Chosen for reads (read_from, zone, max_replica_lag).
                    "serves_reads": s.readers.iter().any(|x| std::sync::Arc::ptr_eq(x, r)),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "version": table.version(),
        "slots_assigned": table.assigned_slots(),
        "shards": shards,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_without_a_table_or_while_draining() {
        let t = SlotTable::empty();
        assert!(readiness(&t, false)
            .unwrap_err()
            .contains("not been discovered"));
        assert!(readiness(&t, true).unwrap_err().contains("draining"));
        assert_eq!(
            topology_json(&t, |_| None),
            serde_json::json!({"version": 0, "slots_assigned": 0, "shards": []})
        );
    }
}
