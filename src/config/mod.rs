//! Configuration: a TOML file (every key documented in `config/slotproxy.toml`),
//! overridden by command-line flags, validated as a whole at load time.
//!
//! Unknown keys are rejected (`deny_unknown_fields`), and [`Config::validate`]
//! reports every semantic problem at once rather than stopping at the first.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod migration;
mod validate;

pub use migration::{check_transition, MigrationConfig, Phase};

pub use validate::{changed_keys, flatten, parse_host_port};

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Client-facing listener and per-client limits.
    pub frontend: FrontendConfig,
    /// The admin HTTP endpoint (metrics, health).
    pub admin: AdminConfig,
    /// How to find and track the Redis Cluster.
    pub cluster: ClusterConfig,
    /// Connections to the cluster nodes.
    pub backend: BackendConfig,
    /// Redirects and retries.
    pub retry: RetryConfig,
    /// Client authentication.
    pub auth: AuthConfig,
    /// Logging.
    pub log: LogConfig,
    /// Threads.
    pub runtime: RuntimeConfig,
    /// What `/metrics` exports beyond the defaults.
    pub metrics: MetricsConfig,
    /// Reload when the files change.
    pub reload: ReloadConfig,
    /// A live migration from a standalone Redis (absent: none).
    pub migration: Option<MigrationConfig>,
}

/// `[reload]`: reloading when the configuration or a file it names changes.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// How often the `--config` file and the certificate, key and password
    /// files it names are read to see whether they changed (0s: never; then
    /// only SIGHUP, `PROXY CONFIG RELOAD` and `POST /reload` reload).
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch_interval: Duration::from_secs(1),
        }
    }
}

/// `[runtime]`: how many threads serve clients.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Worker threads: 1 runs everything on one thread (no cross-thread
    /// wake-ups: the fastest where the proxy shares a few cores, as a
    /// sidecar does); 0 means one per CPU the process may use; N > 1 that
    /// many, with work stealing.
    pub threads: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { threads: 1 }
    }
}

/// `[metrics]`: optional series of `/metrics`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Commands that get a latency histogram of their own
    /// (`slotproxy_command_duration_seconds{command}`): names such as
    /// `get` or `config|get` (a container name selects its subcommands),
    /// or `*` for all. Each costs 18 series once the command is used.
    pub command_histograms: Vec<String>,
}

/// `[frontend]`: the listener clients connect to.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FrontendConfig {
    /// Address to listen on, `host:port`.
    pub listen: String,
    /// A Unix domain socket to accept clients on as well (plain RESP, even
    /// when `tls` is set). A stale socket file is replaced; the file is
    /// removed when the proxy stops.
    pub unix_socket: Option<std::path::PathBuf>,
    /// Permissions of the `unix_socket` file (TOML octal, e.g. `0o660`).
    pub unix_socket_mode: u32,
    /// Maximum number of concurrently connected clients.
    pub max_clients: usize,
    /// Maximum requests in flight per client before the proxy stops reading
    /// from that client (backpressure).
    pub max_pipeline: usize,
    /// Maximum length of one bulk string in a request (Redis `proto-max-bulk-len`).
    pub max_bulk_len: usize,
    /// Maximum number of arguments in one multibulk request.
    pub max_multibulk_len: usize,
    /// Maximum length of an inline (telnet-style) command line.
    pub max_inline_len: usize,
    /// Whether CONFIG SET, CONFIG RESETSTAT and CONFIG REWRITE are broadcast
    /// to every node (otherwise they are refused).
    pub allow_config_write: bool,
    /// On SIGTERM, how long to wait for sessions to finish the requests they
    /// read before closing them.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Requests slower than this (read to reply) go to the SLOWLOG.
    #[serde(with = "humantime_serde")]
    pub slowlog_threshold: Duration,
    /// Entries the SLOWLOG keeps (0 turns it off).
    pub slowlog_max_len: usize,
    /// Close clients that sent nothing for this long (0s: never).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A request that stops arriving halfway (no new byte for this long) is
    /// refused and the client closed; trickling is fine (0s: never).
    #[serde(with = "humantime_serde")]
    pub frame_timeout: Duration,
    /// Unparsed input one client may have buffered, in bytes.
    pub max_query_buffer: usize,
    /// Unparsed input all clients together may have buffered, in bytes
    /// (0: no cap).
    pub max_client_memory: usize,
    /// TLS for clients: when present, the listener speaks TLS only.
    pub tls: Option<FrontendTlsConfig>,
}

/// `[frontend.tls]`: TLS towards clients. Files are PEM and are read again
/// on every reload (a change seen by the file watch, SIGHUP, `PROXY CONFIG
/// RELOAD`, `POST /reload`), so renewed certificates take effect for new
/// connections without a restart.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FrontendTlsConfig {
    /// The proxy's certificate chain.
    pub cert_file: std::path::PathBuf,
    /// The private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: std::path::PathBuf,
    /// CA certificates that client certificates are verified against; when
    /// set, a client certificate that is presented must verify.
    #[serde(default)]
    pub client_ca_file: Option<std::path::PathBuf>,
    /// Refuse clients that present no certificate (needs `client_ca_file`).
    #[serde(default)]
    pub require_client_cert: bool,
    /// How long a client may take to complete the TLS handshake.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `[backend.tls]`: TLS towards the cluster nodes (Redis `tls-port`,
/// `tls-cluster yes`). Files are read again on every reload.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackendTlsConfig {
    /// Connect to the nodes with TLS.
    pub enabled: bool,
    /// CA certificates that node certificates are verified against (the
    /// system's roots when unset).
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate chain for nodes that require one (Redis's default
    /// `tls-auth-clients yes`).
    pub cert_file: Option<std::path::PathBuf>,
    /// The private key of `cert_file`.
    pub key_file: Option<std::path::PathBuf>,
    /// The name node certificates must carry, instead of the address the
    /// node is reached at (useful when nodes announce IP addresses but
    /// their certificates name a host).
    pub server_name: Option<String>,
    /// Accept any node certificate. For tests only: it gives up protection
    /// against a man in the middle.
    pub insecure_skip_verify: bool,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        FrontendConfig {
            listen: "127.0.0.1:6379".to_string(),
            unix_socket: None,
            unix_socket_mode: 0o660,
            max_clients: 10_000,
            max_pipeline: 4096,
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: i32::MAX as usize,
            max_inline_len: 64 * 1024,
            allow_config_write: false,
            drain_timeout: Duration::from_secs(10),
            slowlog_threshold: Duration::from_millis(10),
            slowlog_max_len: 128,
            idle_timeout: Duration::ZERO,
            frame_timeout: Duration::from_secs(30),
            max_query_buffer: 1024 * 1024 * 1024,
            max_client_memory: 4 * 1024 * 1024 * 1024,
            tls: None,
        }
    }
}

/// `[admin]`: the admin HTTP endpoint.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address for the admin HTTP server, `host:port` (`/healthz`,
    /// `/readyz`, `/topology`). Not served when unset.
    pub listen: Option<String>,
    /// Whether `POST /reload` reloads the configuration (403 otherwise).
    pub allow_reload: bool,
}

/// `[cluster]`: discovery and topology tracking.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Seed nodes, `host:port`; tried in order until one answers CLUSTER SLOTS.
    pub seeds: Vec<String>,
    /// How often the slot table is refreshed from the cluster.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Timeout for one discovery round-trip (connect + CLUSTER SLOTS) to one node.
    #[serde(with = "humantime_serde")]
    pub discovery_timeout: Duration,
    /// How often every master's replication offsets are sampled for
    /// replica lag (0: only at each refresh).
    #[serde(with = "humantime_serde")]
    pub replication_poll_interval: Duration,
    /// Where read-only commands go.
    pub read_from: ReadFrom,
    /// The proxy's availability zone, for `read_from = "same_zone"`.
    pub zone: Option<String>,
    /// An environment variable holding the proxy's zone (the Kubernetes
    /// downward API); used when `zone` is not set.
    pub zone_env: Option<String>,
    /// Replicas further behind their master than this are not read from
    /// (0: no bound).
    #[serde(with = "humantime_serde")]
    pub max_replica_lag: Duration,
}

impl ClusterConfig {
    /// The proxy's zone: `zone`, else the variable `zone_env` names (unset
    /// or empty: none).
    pub fn resolved_zone(&self) -> Result<Option<String>, String> {
        match (&self.zone, &self.zone_env) {
            (Some(_), Some(_)) => Err("cluster.zone: set only one of zone and zone_env".into()),
            (Some(z), None) => Ok(Some(z.clone()).filter(|z| !z.is_empty())),
            (None, Some(var)) => match std::env::var(var) {
                Ok(z) if !z.trim().is_empty() => Ok(Some(z.trim().to_string())),
                _ => Err(format!(
                    "cluster.zone_env: environment variable {var} is not set or empty"
                )),
            },
            (None, None) => Ok(None),
        }
    }
}

/// Where read-only commands are sent. Writes always go to masters.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    /// Every command goes to the slot's master.
    #[default]
    Master,
    /// Read-only commands go to a replica of the slot (error when none is reachable).
    Replica,
    /// Read-only commands go to a reachable replica, else to the master.
    PreferReplica,
    /// Read-only commands go to a reachable replica in the proxy's own
    /// zone (`cluster.zone`), else to the master.
    SameZone,
}

/// `[retry]`: how redirects and transient cluster errors are absorbed.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Most retries of one request after MOVED, ASK, TRYAGAIN, CLUSTERDOWN,
    /// LOADING or MASTERDOWN.
    pub max_retries: u32,
    /// Total time one request may spend retrying those.
    #[serde(with = "humantime_serde")]
    pub budget: Duration,
    /// First delay between retries; doubles each time.
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    /// Largest delay between retries.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// How long a request that was never sent waits for its slot to have a
    /// reachable master again (node down, failover in progress).
    #[serde(with = "humantime_serde")]
    pub master_wait: Duration,
    /// How the wait between retries grows.
    pub backoff: Backoff,
    /// Node errors (their code, the first word) after which a request is
    /// re-sent. MOVED and ASK are always followed.
    pub retryable_errors: Vec<String>,
}

/// The node errors retried by default (`retry.retryable_errors`): the
/// cluster is changing, and the same request will succeed shortly.
pub const DEFAULT_RETRYABLE_ERRORS: [&str; 4] =
    ["TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN"];

/// How the wait between retries grows from `backoff_min` to `backoff_max`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// Doubles each time.
    Exponential,
    /// A random wait up to the exponential one ("full jitter"), so proxies
    /// that met the same error do not retry in lockstep.
    #[default]
    ExponentialJitter,
    /// Always `backoff_min`.
    Constant,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 5,
            budget: Duration::from_secs(3),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            master_wait: Duration::from_secs(15),
            backoff: Backoff::ExponentialJitter,
            retryable_errors: DEFAULT_RETRYABLE_ERRORS
                .iter()
                .map(|c| c.to_string())
                .collect(),
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            seeds: Vec::new(),
            refresh_interval: Duration::from_secs(10),
            discovery_timeout: Duration::from_secs(2),
            replication_poll_interval: Duration::from_secs(1),
            read_from: ReadFrom::Master,
            zone: None,
            zone_env: None,
            max_replica_lag: Duration::ZERO,
        }
    }
}

/// `[backend]`: the multiplexed connections to cluster nodes.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// Multiplexed connections per node.
    pub connections_per_node: usize,
    /// Timeout for establishing a TCP connection to a node.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time a request may wait for its reply once written; past it the
    /// connection is considered broken and closed.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// First delay before reconnecting after a failed connect.
    #[serde(with = "humantime_serde")]
    pub reconnect_backoff_min: Duration,
    /// Upper bound of the exponential reconnect delay.
    #[serde(with = "humantime_serde")]
    pub reconnect_backoff_max: Duration,
    /// Entries (a request, or a batch of one read's requests for the node)
    /// that may wait to be written on one backend connection.
    pub queue_depth: usize,
    /// Dedicated connections (transactions, blocking commands) open at once,
    /// over all nodes.
    pub max_dedicated_connections: usize,
    /// ACL user for the cluster nodes (`AUTH username password`); needs a password.
    pub username: Option<String>,
    /// Password for the cluster nodes, inline.
    pub password: Option<Secret>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (a Kubernetes secret mount); one trailing
    /// newline is ignored.
    pub password_file: Option<std::path::PathBuf>,
    /// TLS to the nodes.
    pub tls: BackendTlsConfig,
}

/// A secret from the configuration: never printed. Its serialized form (used
/// to tell whether a reload changed it) is a digest, not the secret.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!(
            "sha1:{}",
            sha1_smol::Sha1::from(self.0.as_bytes()).digest()
        ))
    }
}

/// A password given inline, by environment variable or by file (a
/// Kubernetes secret mount; one trailing newline is ignored). `key` names
/// the setting in errors.
pub fn resolve_secret(
    key: &str,
    inline: &Option<Secret>,
    env: &Option<String>,
    file: &Option<std::path::PathBuf>,
) -> Result<Option<Secret>, String> {
    match (inline, env, file) {
        (None, None, None) => Ok(None),
        (Some(p), None, None) => Ok(Some(p.clone())),
        (None, Some(var), None) => std::env::var(var)
            .map(|v| Some(Secret(v)))
            .map_err(|_| format!("{key}_env: environment variable {var} is not set")),
        (None, None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{key}_file: cannot read {}: {e}", path.display()))?;
            let t = text.strip_suffix('\n').unwrap_or(&text);
            Ok(Some(Secret(t.strip_suffix('\r').unwrap_or(t).to_string())))
        }
        _ => Err(format!(
            "{key}: set only one of password, password_env and password_file"
        )),
    }
}

impl BackendConfig {
    /// The `AUTH` credentials for cluster nodes, resolved from the inline
    /// password, the environment or a file: `(username, password)`.
    pub fn credentials(&self) -> Result<Option<(Option<String>, Secret)>, String> {
        let password = resolve_secret(
            "backend.password",
            &self.password,
            &self.password_env,
            &self.password_file,
        )?;
        match password {
            Some(p) => Ok(Some((self.username.clone(), p))),
            None if self.username.is_some() => Err("backend.username needs a password".into()),
            None => Ok(None),
        }
    }
}

/// `[auth]`: client authentication at the proxy. With no users, clients
/// need no AUTH and may run every command.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The users.
    pub users: Vec<UserConfig>,
    /// Whether commands of Redis's `@dangerous` category (KEYS, SORT,
    /// MIGRATE, ...) may run; they are refused otherwise.
    pub allow_dangerous: bool,
}

/// One `[[auth.users]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The name (`default` is the user of `AUTH password`).
    pub name: String,
    /// Password, inline.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password.
    #[serde(default)]
    pub password_file: Option<std::path::PathBuf>,
    /// `read`, `write`, `admin`.
    pub roles: Vec<Role>,
}

/// What a user may do.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-only commands.
    Read,
    /// Commands that write.
    Write,
    /// FLUSHALL/FLUSHDB, CONFIG, SCRIPT/FUNCTION FLUSH and DELETE, PROXY.
    Admin,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            connections_per_node: 2,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(2),
            queue_depth: 16_384,
            max_dedicated_connections: 1024,
            username: None,
            password: None,
            password_env: None,
            password_file: None,
            tls: BackendTlsConfig::default(),
        }
    }
}

/// `[log]`: logging through `tracing`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `slotproxy=debug,info`.
    /// The `RUST_LOG` environment variable, when set, takes precedence.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
    /// Log each MOVED and ASK the proxy absorbs, at info (rate-limited).
    pub redirects: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
            redirects: false,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Command-line overrides applied on top of the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<String>,
    /// `--admin`
    pub admin: Option<String>,
    /// `--seed`, repeatable; replaces the file's seeds when given.
    pub seeds: Vec<String>,
    /// `--log-level`
    pub log_level: Option<String>,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("cannot parse config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// The values are inconsistent; every problem is listed.
    #[error("{0}")]
    Invalid(Problems),
}

/// Every validation problem found, one per line.
#[derive(Debug, Clone, PartialEq)]
pub struct Problems(pub Vec<String>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({} problem", self.0.len())?;
        if self.0.len() != 1 {
            write!(f, "s")?;
        }
        write!(f, "):")?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Keys whose change needs a restart (they shape sockets, pools or the
/// subscriber set up at start).
pub const RESTART_KEYS: &[&str] = &[
    "auth.users",
    "auth.allow_dangerous",
    "backend.username",
    "backend.password",
    "backend.password_env",
    "backend.password_file",
    "frontend.listen",
    "frontend.unix_socket",
    "frontend.unix_socket_mode",
    "admin.listen",
    "backend.connections_per_node",
    "backend.queue_depth",
    "backend.max_dedicated_connections",
    "backend.tls.enabled",
    "frontend.tls",
    "cluster.read_from",
    "cluster.zone",
    "cluster.zone_env",
    "log.format",
    "runtime.threads",
    "metrics.command_histograms",
    "migration",
    "migration.source",
    "migration.username",
    "migration.password",
    "migration.password_env",
    "migration.password_file",
    "migration.tls.enabled",
    "migration.cursor_file",
];

/// A duration that can change at run time (configuration reload).
#[derive(Debug, Default)]
pub struct Tunable(AtomicU64);

impl Tunable {
    /// A tunable holding `d`.
    pub fn new(d: Duration) -> Tunable {
        Tunable(AtomicU64::new(d.as_nanos() as u64))
    }
    /// The current value.
    pub fn get(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
    /// Replaces the value.
    pub fn set(&self, d: Duration) {
        self.0.store(d.as_nanos() as u64, Ordering::Relaxed);
    }
}
