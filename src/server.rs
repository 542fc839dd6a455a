//! The server: binds the frontend listener, starts the topology refresher,
//! runs the accept loop and stops everything on shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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
use crate::topology::Topology;

/// A running proxy.
pub struct Server {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    accept: JoinHandle<()>,
    refresher: JoinHandle<()>,
    table: SharedSlotTable,
    topology: Arc<Topology>,
}

impl Server {
    /// Binds the listener, performs a first discovery of the cluster (a
    /// failure is logged and retried in the background), and starts serving.
    pub async fn start(config: &Config) -> std::io::Result<Server> {
        let listener = TcpListener::bind(&config.frontend.listen).await?;
        let local_addr = listener.local_addr()?;
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
            proxy: Arc::new(ProxyInfo::new(config.frontend.max_clients)),
            retrier,
            dedicated: Arc::new(DedicatedPool::new(
                config.backend.max_dedicated_connections,
                config.backend.connect_timeout,
            )),
        });
        let accept = tokio::spawn(accept_loop(
            listener,
            shared,
            config.frontend.max_clients,
            shutdown.clone(),
        ));
        info!(listen = %local_addr, "slotproxy accepting clients");
        Ok(Server {
            local_addr,
            shutdown,
            accept,
            refresher,
            table,
            topology,
        })
    }

    /// The address the frontend listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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

    /// Stops accepting, tells sessions to stop reading (pending replies are
    /// still written), and waits for the accept loop and refresher to end.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.accept.await;
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
        tokio::spawn(async move {
            frontend::serve(stream, id, shared.clone(), shutdown).await;
            shared
                .proxy
                .connected_clients
                .fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}
