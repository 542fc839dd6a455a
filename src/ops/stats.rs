//! Process-wide facts and counters: what INFO, CLIENT, the emulated
//! cluster face and the metrics read. The frontend and the server count
//! here; nothing here reaches back into them.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::ops::clients::Clients;
use crate::ops::monitor::Monitor;
use crate::ops::pause::Pause;
use crate::ops::slowlog::SlowLog;

/// The version slotproxy reports in HELLO and INFO.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Process-wide facts and counters of this proxy.
#[derive(Debug)]
pub struct ProxyInfo {
    /// The 40-hex node id the emulated one-node cluster announces.
    pub id: String,
    /// Start time.
    pub started: Instant,
    /// `frontend.max_clients`.
    pub max_clients: usize,
    /// Clients connected now.
    pub connected_clients: AtomicUsize,
    /// Clients accepted since start.
    pub total_connections: AtomicU64,
    /// Requests received since start.
    pub total_commands: AtomicU64,
    /// Clients waiting in a blocking command or WAIT now.
    pub blocked_clients: AtomicUsize,
    /// The next CLIENT ID (shared by the TCP and Unix socket listeners).
    pub next_client_id: AtomicU64,
    /// SLOWLOG.
    pub slowlog: SlowLog,
    /// MONITOR's feed.
    pub monitor: Arc<Monitor>,
    /// The connected clients.
    pub clients: Arc<Clients>,
    /// CLIENT PAUSE.
    pub pause: Pause,
    /// The frontend TCP listener's address (what CLUSTER SLOTS announces to
    /// clients of the Unix socket).
    pub listen: SocketAddr,
    /// How a client of `frontend.unix_socket` is named (`PATH:0`, as Redis
    /// names one) in CLIENT LIST and the slow log.
    pub unix_client: Option<String>,
}

impl ProxyInfo {
    /// Fresh counters, an empty slow log and a random node id.
    pub fn new(max_clients: usize, slowlog: SlowLog) -> ProxyInfo {
        let id: [u8; 20] = rand::random();
        ProxyInfo {
            id: id.iter().fold(String::with_capacity(40), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            }),
            started: Instant::now(),
            max_clients,
            connected_clients: AtomicUsize::new(0),
            total_connections: AtomicU64::new(0),
            total_commands: AtomicU64::new(0),
            blocked_clients: AtomicUsize::new(0),
            next_client_id: AtomicU64::new(1),
            slowlog,
            monitor: Arc::default(),
            clients: Arc::default(),
            pause: Pause::default(),
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            unix_client: None,
        }
    }
}

impl ProxyInfo {
    /// Counts a client as blocked (INFO's `blocked_clients`) until the
    /// guard is dropped.
    pub fn blocked(&self) -> Blocked<'_> {
        self.blocked_clients.fetch_add(1, Ordering::Relaxed);
        Blocked(&self.blocked_clients)
    }
}

/// A client counted as blocked while this lives.
pub struct Blocked<'a>(&'a AtomicUsize);

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
