//! The server: binds the frontend listener, starts the topology refresher,
//! runs the accept loop and stops everything on shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::admin::{self, AdminState};
use crate::backend::BackendSettings;
use crate::command::Commands;
use crate::config::{Config, ReadFrom};
use crate::dedicated::DedicatedPool;
use crate::error::ProxyError;
use crate::frontend::{self, Shared};
use crate::local::ProxyInfo;
use crate::resp::Limits;
use crate::retry::Retrier;
use crate::slot::{SharedSlotTable, SlotTable};
use crate::slowlog::SlowLog;
use crate::topology::Topology;

/// A running proxy.
pub struct Server {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    accept: JoinHandle<()>,
    refresher: JoinHandle<()>,
    sessions: TaskTracker,
    draining: Arc<AtomicBool>,
    drain_timeout: Duration,
    table: SharedSlotTable,
    topology: Arc<Topology>,
}

impl Server {
    /// Binds the listener, performs a first discovery of the cluster (a
    /// failure is logged and retried in the background), and starts serving.
    pub async fn start(config: &Config) -> std::io::Result<Server> {
        let listener = TcpListener::bind(&config.frontend.listen).await?;
        let local_addr = listener.local_addr()?;
        let admin = match &config.admin.listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let admin_addr = match &admin {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let table: SharedSlotTable = Arc::new(ArcSwap::from_pointee(SlotTable::empty()));
        let commands = Commands::default();
        let settings = Arc::new(BackendSettings::from_config(
            &config.backend,
            Arc::new(Notify::new()),
            config.cluster.read_from != ReadFrom::Master,
        ));
        let topology = Topology::new(&config.cluster, table.clone(), commands.clone(), settings);
        if let Err(e) = topology.refresh().await {
            warn!(error = %e, "initial cluster discovery failed; retrying in the background");
        }
        let refresher = topology.spawn(shutdown.clone());
        let retrier = Arc::new(Retrier::new(
            table.clone(),
            topology.clone(),
            config.retry.clone(),
            config.cluster.read_from,
        ));
        let shared = Arc::new(Shared {
            table: table.clone(),
            commands,
            limits: Limits {
                max_bulk_len: config.frontend.max_bulk_len,
                max_multibulk_len: config.frontend.max_multibulk_len,
                max_inline_len: config.frontend.max_inline_len,
            },
            max_pipeline: config.frontend.max_pipeline,
            allow_config_write: config.frontend.allow_config_write,
            proxy: Arc::new(ProxyInfo::new(
                config.frontend.max_clients,
                SlowLog::new(
                    config.frontend.slowlog_threshold,
                    config.frontend.slowlog_max_len,
                ),
            )),
            retrier,
            dedicated: Arc::new(DedicatedPool::new(
                config.backend.max_dedicated_connections,
                config.backend.connect_timeout,
            )),
        });
        let draining = Arc::new(AtomicBool::new(false));
        if let Some(l) = admin {
            let state = AdminState {
                table: table.clone(),
                draining: draining.clone(),
                topology: topology.clone(),
                retrier: shared.retrier.clone(),
                proxy: shared.proxy.clone(),
            };
            tokio::spawn(admin::serve(l, state, shutdown.clone()));
        }
        let sessions = TaskTracker::new();
        let accept = tokio::spawn(accept_loop(
            listener,
            shared,
            config.frontend.max_clients,
            shutdown.clone(),
            sessions.clone(),
        ));
        info!(listen = %local_addr, admin = ?admin_addr, "slotproxy accepting clients");
        Ok(Server {
            local_addr,
            admin_addr,
            shutdown,
            accept,
            refresher,
            sessions,
            draining,
            drain_timeout: config.frontend.drain_timeout,
            table,
            topology,
        })
    }

    /// The address the frontend listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address the admin HTTP server is bound to, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The current slot table.
    pub fn slot_table(&self) -> Arc<SlotTable> {
        self.table.load_full()
    }

    /// The topology refresher.
    pub fn topology(&self) -> &Arc<Topology> {
        &self.topology
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Drains: readiness turns 503, the listener stops accepting, every
    /// session stops reading new requests, writes the replies of those it
    /// read, and closes; idle clients are closed at once. Waits up to
    /// `frontend.drain_timeout` for the sessions, then returns.
    pub async fn shutdown(self) {
        self.draining.store(true, Ordering::Relaxed);
        self.shutdown.cancel();
        let _ = self.accept.await;
        self.sessions.close();
        let open = self.sessions.len();
        if open > 0 {
            info!(sessions = open, timeout = ?self.drain_timeout, "draining client sessions");
        }
        if tokio::time::timeout(self.drain_timeout, self.sessions.wait())
            .await
            .is_err()
        {
            warn!(
                sessions = self.sessions.len(),
                "drain timeout: closing the remaining sessions"
            );
        }
        let _ = self.refresher.await;
    }

    /// Runs until the shutdown token is cancelled (by a signal handler, say).
    pub async fn run_until_shutdown(self) {
        self.shutdown.cancelled().await;
        self.shutdown().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    max_clients: usize,
    shutdown: CancellationToken,
    sessions: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(max_clients));
    let next_id = AtomicU64::new(1);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(%peer, max_clients, "refusing client: max_clients reached");
            tokio::spawn(async move {
                let _ = stream.write_all(&ProxyError::MaxClients.to_resp()).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        shared
            .proxy
            .total_connections
            .fetch_add(1, Ordering::Relaxed);
        shared
            .proxy
            .connected_clients
            .fetch_add(1, Ordering::Relaxed);
        sessions.spawn(async move {
            frontend::serve(stream, id, shared.clone(), shutdown).await;
            shared
                .proxy
                .connected_clients
                .fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}
