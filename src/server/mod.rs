//! The server: binds the frontend listeners (TCP, and a Unix socket when
//! configured), starts the topology refresher, runs the accept loops and
//! stops everything on shutdown.

mod reload;
pub mod shared;
mod watch;

pub use reload::{load_config, LogLevelSetter, ReloadSource, Reloader};
pub use shared::{Reload, ReloadReport};

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::auth::Authenticator;
use crate::backend::dedicated::DedicatedPool;
use crate::backend::{BackendSettings, Link};
use crate::cluster::retry::Retrier;
use crate::cluster::slot::{SharedSlotTable, SlotTable};
use crate::cluster::topology::Topology;
use crate::command::Commands;
use crate::config::Tunable;
use crate::config::{Config, ReadFrom};
use crate::error::ProxyError;
use crate::frontend;
use crate::migration::Migration;
use crate::ops::admin::{self, AdminState};
use crate::ops::metrics::{self, METRICS};
use crate::ops::slowlog::SlowLog;
use crate::ops::stats::ProxyInfo;
use crate::tls::{Stream, TlsAcceptor};
use shared::Shared;

/// A running proxy.
pub struct Server {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    accept: JoinHandle<()>,
    unix_accept: Option<JoinHandle<()>>,
    refresher: JoinHandle<()>,
    sessions: TaskTracker,
    draining: Arc<AtomicBool>,
    drain_timeout: Arc<Tunable>,
    reloader: Arc<Reloader>,
    table: SharedSlotTable,
    topology: Arc<Topology>,
    migration: Option<Arc<Migration>>,
}

impl Server {
    /// Binds the listener, performs a first discovery of the cluster (a
    /// failure is logged and retried in the background), and starts serving.
    pub async fn start(config: &Config) -> std::io::Result<Server> {
        Server::start_with_reload(config, ReloadSource::default()).await
    }

    /// Like [`Server::start`], with where a reload (SIGHUP, `PROXY CONFIG
    /// RELOAD`, `POST /reload`) reads the configuration from. A file given
    /// there is watched, with the files it names (`reload.watch_interval`).
    pub async fn start_with_reload(
        config: &Config,
        source: ReloadSource,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(&config.frontend.listen).await?;
        let local_addr = listener.local_addr()?;
        let unix_listener = match &config.frontend.unix_socket {
            Some(path) => Some(bind_unix(path, config.frontend.unix_socket_mode)?),
            None => None,
        };
        let admin = match &config.admin.listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let admin_addr = match &admin {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let shutdown = CancellationToken::new();
        metrics::set_command_histograms(&config.metrics.command_histograms);
        let table: SharedSlotTable = Arc::new(ArcSwap::from_pointee(SlotTable::empty()));
        let commands = Commands::default();
        let link = Link::from_config(&config.backend).map_err(std::io::Error::other)?;
        let tls = match &config.frontend.tls {
            Some(t) => Some(Arc::new(
                TlsAcceptor::new(t).map_err(std::io::Error::other)?,
            )),
            None => None,
        };
        let settings = Arc::new(BackendSettings::from_config(
            &config.backend,
            link.clone(),
            Arc::new(Notify::new()),
            config.cluster.read_from != ReadFrom::Master,
        ));
        let topology = Topology::new(
            &config.cluster,
            table.clone(),
            commands.clone(),
            settings.clone(),
        );
        topology.redirects.set_enabled(config.log.redirects);
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
        let migration = match &config.migration {
            Some(m) => Some(
                Migration::start(
                    m,
                    &config.backend,
                    retrier.clone(),
                    link.clone(),
                    shutdown.clone(),
                )
                .map_err(std::io::Error::other)?,
            ),
            None => None,
        };
        let shared = Arc::new(Shared {
            table: table.clone(),
            commands,
            frontend: ArcSwap::from_pointee(config.frontend.clone()),
            proxy: Arc::new(ProxyInfo {
                listen: local_addr,
                unix_client: config
                    .frontend
                    .unix_socket
                    .as_ref()
                    .map(|p| format!("{}:0", p.display())),
                ..ProxyInfo::new(
                    config.frontend.max_clients,
                    SlowLog::new(
                        config.frontend.slowlog_threshold,
                        config.frontend.slowlog_max_len,
                    ),
                )
            }),
            retrier,
            dedicated: Arc::new(DedicatedPool::new(
                config.backend.max_dedicated_connections,
                config.backend.connect_timeout,
                link.clone(),
            )),
            reloader: std::sync::OnceLock::new(),
            migration: migration.clone(),
            auth: Arc::new(
                Authenticator::from_config(&config.auth).map_err(std::io::Error::other)?,
            ),
            client_memory: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        });
        let client_slots = Arc::new(Semaphore::new(config.frontend.max_clients));
        let drain_timeout = Arc::new(Tunable::new(config.frontend.drain_timeout));
        let allow_reload = Arc::new(AtomicBool::new(config.admin.allow_reload));
        let watch_interval = Arc::new(Tunable::new(config.reload.watch_interval));
        let reloader = Arc::new(Reloader {
            source,
            current: Mutex::new(config.clone()),
            passwords: reload::password_digests(config),
            allow_reload: allow_reload.clone(),
            watch_interval: watch_interval.clone(),
            shared: shared.clone(),
            topology: topology.clone(),
            settings,
            client_slots: client_slots.clone(),
            drain_timeout: drain_timeout.clone(),
            frontend_tls: tls.clone(),
            backend_tls: link.tls.clone(),
        });
        let reload: Arc<dyn shared::Reload> = reloader.clone();
        let _ = shared.reloader.set(Arc::downgrade(&reload));
        if let Some(path) = &reloader.source.path {
            let watcher = watch::Watcher::new(
                reload.clone(),
                path.clone(),
                reloader.source.overrides.clone(),
                config,
            );
            tokio::spawn(watch::run(watcher, watch_interval, shutdown.clone()));
        }
        let draining = Arc::new(AtomicBool::new(false));
        if let Some(l) = admin {
            let state = AdminState {
                table: table.clone(),
                draining: draining.clone(),
                topology: topology.clone(),
                retrier: shared.retrier.clone(),
                proxy: shared.proxy.clone(),
                allow_reload,
                migration: migration.clone(),
                reload: Arc::new(move || {
                    reload
                        .reload()
                        .map(|report| report.lines())
                        .map_err(|e| e.to_string())
                }),
            };
            tokio::spawn(admin::serve(l, state, shutdown.clone()));
        }
        let sessions = TaskTracker::new();
        let unix_accept = unix_listener.map(|l| {
            tokio::spawn(accept_loop(
                l,
                shared.clone(),
                client_slots.clone(),
                shutdown.clone(),
                sessions.clone(),
            ))
        });
        let accept = tokio::spawn(accept_loop(
            Listener::Tcp(listener, tls),
            shared,
            client_slots,
            shutdown.clone(),
            sessions.clone(),
        ));
        info!(
            listen = %local_addr,
            unix_socket = ?config.frontend.unix_socket,
            tls = config.frontend.tls.is_some(),
            backend_tls = config.backend.tls.enabled,
            admin = ?admin_addr,
            "slotproxy accepting clients"
        );
        Ok(Server {
            local_addr,
            admin_addr,
            shutdown,
            accept,
            unix_accept,
            refresher,
            sessions,
            draining,
            drain_timeout,
            reloader,
            table,
            topology,
            migration,
        })
    }

    /// The reloader (SIGHUP handler, `PROXY CONFIG RELOAD`).
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
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
        if let Some(unix) = self.unix_accept {
            let _ = unix.await;
        }
        self.sessions.close();
        let open = self.sessions.len();
        if open > 0 {
            info!(sessions = open, timeout = ?self.drain_timeout.get(), "draining client sessions");
        }
        if tokio::time::timeout(self.drain_timeout.get(), self.sessions.wait())
            .await
            .is_err()
        {
            warn!(
                sessions = self.sessions.len(),
                "drain timeout: closing the remaining sessions"
            );
        }
        if let Some(m) = &self.migration {
            m.stop().await;
        }
        let _ = self.refresher.await;
    }

    /// Runs until the shutdown token is cancelled (by a signal handler, say).
    pub async fn run_until_shutdown(self) {
        self.shutdown.cancelled().await;
        self.shutdown().await;
    }
}

/// A frontend listener.
enum Listener {
    /// TCP, speaking TLS when an acceptor is given.
    Tcp(TcpListener, Option<Arc<TlsAcceptor>>),
    /// `frontend.unix_socket` (plain RESP).
    Unix {
        listener: UnixListener,
        /// Held for its drop: the file goes with the listener.
        _file: SocketFile,
    },
}

/// A connection the accept loop took.
enum Accepted {
    /// Ready to serve.
    Plain(Stream),
    /// Needs the TLS handshake first.
    Tls(TcpStream, Arc<TlsAcceptor>),
}

impl Listener {
    /// The next connection, and who it is from (for logs).
    async fn accept(&self, proxy: &ProxyInfo) -> std::io::Result<(Accepted, String)> {
        match self {
            Listener::Tcp(l, tls) => {
                let (stream, peer) = l.accept().await?;
                let accepted = match tls {
                    Some(acceptor) => Accepted::Tls(stream, acceptor.clone()),
                    None => Accepted::Plain(Stream::Tcp(stream)),
                };
                Ok((accepted, peer.to_string()))
            }
            Listener::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                let from = proxy.unix_client.clone().unwrap_or_default();
                Ok((Accepted::Plain(Stream::Unix(stream)), from))
            }
        }
    }
}

/// A Unix socket file this proxy created: removed when dropped, unless
/// another file has taken its place since.
struct SocketFile {
    path: PathBuf,
    /// Device and inode, to tell the file from a later one.
    id: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds `frontend.unix_socket` with permissions `mode`. A socket file left
/// by a proxy that is gone is replaced; one that still accepts connections,
/// or a path that is not a socket, is an error (nothing is removed).
fn bind_unix(path: &Path, mode: u32) -> std::io::Result<Listener> {
    use std::io::{Error, ErrorKind};
    // Every error names the key and the path.
    let error = |kind: ErrorKind, what: &dyn std::fmt::Display| {
        Error::new(
            kind,
            format!("frontend.unix_socket {}: {what}", path.display()),
        )
    };
    let named = |e: Error| error(e.kind(), &e);
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(error(
                ErrorKind::AlreadyExists,
                &"exists and is not a socket (not replacing it)",
            ));
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(error(
                    ErrorKind::AddrInUse,
                    &"another process accepts connections on it",
                ));
            }
            std::fs::remove_file(path).map_err(named)?;
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(named(e)),
    }
    let listener = UnixListener::bind(path).map_err(named)?;
    let meta = std::fs::symlink_metadata(path).map_err(named)?;
    let file = SocketFile {
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(named)?;
    Ok(Listener::Unix {
        listener,
        _file: file,
    })
}

async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
) {
    let next_id = &shared.proxy.next_client_id;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept(&shared.proxy) => a,
        };
        let (accepted, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(%peer, "refusing client: max_clients reached");
            // A TLS client could not read a plain-text error: it is closed.
            if let Accepted::Plain(mut stream) = accepted {
                tokio::spawn(async move {
                    let _ = stream.write_all(&ProxyError::MaxClients.to_resp()).await;
                    let _ = stream.shutdown().await;
                });
            }
            continue;
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        shared
            .proxy
            .total_connections
            .fetch_add(1, Ordering::Relaxed);
        shared
            .proxy
            .connected_clients
            .fetch_add(1, Ordering::Relaxed);
        // Counts the client out and frees its `max_clients` slot however
        // its task ends.
        let guard = ClientSlot {
            shared: shared.clone(),
            _permit: permit,
        };
        let shutdown = shutdown.clone();
        match accepted {
            // Plain: the session future is built here, so the task holds it
            // and the guard, nothing twice (see `frontend::serve`).
            Accepted::Plain(stream) => {
                let session = frontend::serve(stream, id, shared.clone(), shutdown, guard);
                sessions.spawn(session);
            }
            Accepted::Tls(stream, acceptor) => {
                let shared = shared.clone();
                sessions.spawn(async move {
                    // The handshake runs in the session's task, so a slow
                    // client never holds up the accept loop.
                    let stream = tokio::select! {
                        _ = shutdown.cancelled() => None,
                        // Boxed: the handshake's state would otherwise sit in
                        // every session's future for its whole life.
                        s = Box::pin(acceptor.accept(stream)) => match s {
                            Ok(s) => Some(s),
                            Err(e) => {
                                debug!(%peer, error = %e, "TLS handshake failed");
                                METRICS.tls_handshake_failures.inc();
                                None
                            }
                        },
                    };
                    if let Some(stream) = stream {
                        frontend::serve(stream, id, shared, shutdown, guard).await;
                    }
                });
            }
        }
    }
}

/// A connected client's share of the proxy: counted in `connected_clients`
/// and holding one `max_clients` permit until dropped.
struct ClientSlot {
    shared: Arc<Shared>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.shared
            .proxy
            .connected_clients
            .fetch_sub(1, Ordering::Relaxed);
    }
}
