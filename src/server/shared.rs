//! The server-wide state every session shares: the tables, the settings a
//! reload changes, the retrier, the dedicated pool, users, and the counters.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock, Weak};

use arc_swap::ArcSwap;

use crate::auth::Authenticator;
use crate::backend::dedicated::DedicatedPool;
use crate::cluster::retry::Retrier;
use crate::cluster::slot::SharedSlotTable;
use crate::command::Commands;
use crate::config::{ConfigError, FrontendConfig};
use crate::migration::Migration;
use crate::ops::stats::ProxyInfo;

/// What every session shares.
pub struct Shared {
    /// The current slot table.
    pub table: SharedSlotTable,
    /// The current command table.
    pub commands: Commands,
    /// The `[frontend]` settings (reloadable: sessions read the limits
    /// when they start, `allow_config_write` on every request).
    pub frontend: ArcSwap<FrontendConfig>,
    /// Process-wide facts and counters.
    pub proxy: Arc<ProxyInfo>,
    /// Target resolution, redirects and retries.
    pub retrier: Arc<Retrier>,
    /// Dedicated connections for transactions and blocking commands.
    pub dedicated: Arc<DedicatedPool>,
    /// Users and rules (`[auth]`).
    pub auth: Arc<Authenticator>,
    /// Unparsed input buffered by all clients (`frontend.max_client_memory`).
    pub client_memory: Arc<AtomicUsize>,
    /// The live migration from a standalone Redis (`[migration]`).
    pub migration: Option<Arc<Migration>>,
    /// Reloads the configuration (`PROXY CONFIG RELOAD`).
    pub reloader: OnceLock<Weak<dyn Reload>>,
}

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Keys applied at once.
    pub applied: Vec<String>,
    /// Keys that changed but take effect only after a restart.
    pub restart_needed: Vec<String>,
    /// The sides (`frontend`, `backend`) whose TLS certificates and keys
    /// were read again (always, when TLS is on: files change under the
    /// same name when certificates are renewed).
    pub certificates_reloaded: Vec<String>,
}

impl ReloadReport {
    /// One line per change, as `PROXY CONFIG RELOAD` and `POST /reload`
    /// answer: `applied: KEY`, `certificates reloaded: SIDE`, `restart
    /// needed: KEY`.
    pub fn lines(&self) -> Vec<String> {
        let applied = self.applied.iter().map(|k| format!("applied: {k}"));
        let certificates = self
            .certificates_reloaded
            .iter()
            .map(|k| format!("certificates reloaded: {k}"));
        let restart = self
            .restart_needed
            .iter()
            .map(|k| format!("restart needed: {k}"));
        applied.chain(certificates).chain(restart).collect()
    }
}

/// Reloads the configuration (`PROXY CONFIG RELOAD`, SIGHUP): what the
/// session asks of the server, without knowing the server.
pub trait Reload: Send + Sync {
    /// Reloads; an invalid configuration changes nothing.
    fn reload(&self) -> Result<ReloadReport, ConfigError>;
}
