//! Configuration: a TOML file (every key documented in `config/slotproxy.toml`),
//! overridden by command-line flags, validated as a whole at load time.
//!
//! Unknown keys are rejected (`deny_unknown_fields`), and [`Config::validate`]
//! reports every semantic problem at once rather than stopping at the first.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
/// on every reload (SIGHUP, `PROXY CONFIG RELOAD`), so renewed certificates
/// take effect for new connections without a restart.
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
    /// Where read-only commands go.
    pub read_from: ReadFrom,
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
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 5,
            budget: Duration::from_secs(3),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            master_wait: Duration::from_secs(15),
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            seeds: Vec::new(),
            refresh_interval: Duration::from_secs(10),
            discovery_timeout: Duration::from_secs(2),
            read_from: ReadFrom::Master,
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
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
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
    "log.format",
    "runtime.threads",
];

/// Every key of a configuration with its value, flattened (`a.b` = value).
pub fn flatten(config: &Config) -> std::collections::BTreeMap<String, String> {
    fn walk(
        prefix: &str,
        v: &serde_json::Value,
        out: &mut std::collections::BTreeMap<String, String>,
    ) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(
        "",
        &serde_json::to_value(config).expect("config serializes"),
        &mut out,
    );
    out
}

/// The keys whose values differ, split into (applied at run time, needing a restart).
pub fn changed_keys(old: &Config, new: &Config) -> (Vec<String>, Vec<String>) {
    let (a, b) = (flatten(old), flatten(new));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let changed = keys.into_iter().filter(|k| a.get(*k) != b.get(*k));
    changed
        .map(|k| k.to_string())
        .partition(|k| !RESTART_KEYS.contains(&k.as_str()))
}

impl Config {
    /// Parses TOML text (no validation).
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })
    }

    /// Loads the optional file, applies overrides and validates the result.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                Config::from_toml(&text, &p.display().to_string())?
            }
            None => Config::default(),
        };
        config.apply(overrides);
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// Applies command-line overrides.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(l) = &o.listen {
            self.frontend.listen = l.clone();
        }
        if let Some(a) = &o.admin {
            self.admin.listen = Some(a.clone());
        }
        if !o.seeds.is_empty() {
            self.cluster.seeds = o.seeds.clone();
        }
        if let Some(l) = &o.log_level {
            self.log.level = l.clone();
        }
    }

    /// Checks every value and returns all problems found.
    pub fn validate(&self) -> Result<(), Problems> {
        let mut p = Vec::new();
        check_addr(&mut p, "frontend.listen", &self.frontend.listen);
        if let Some(path) = &self.frontend.unix_socket {
            // sun_path holds 108 bytes with its terminating NUL.
            let len = path.as_os_str().len();
            if len == 0 || len > 107 {
                p.push(format!(
                    "frontend.unix_socket: {path:?} must be 1 to 107 bytes long (it is {len})"
                ));
            }
        }
        if self.frontend.unix_socket_mode > 0o777 {
            p.push(format!(
                "frontend.unix_socket_mode: {:#o} is not a permission mode (at most 0o777)",
                self.frontend.unix_socket_mode
            ));
        }
        positive(&mut p, "frontend.max_clients", self.frontend.max_clients);
        positive(&mut p, "frontend.max_pipeline", self.frontend.max_pipeline);
        positive(&mut p, "frontend.max_bulk_len", self.frontend.max_bulk_len);
        positive(
            &mut p,
            "frontend.max_query_buffer",
            self.frontend.max_query_buffer,
        );
        if self.frontend.max_bulk_len > i32::MAX as usize * 2 {
            p.push(format!(
                "frontend.max_bulk_len: {} is larger than 4 GiB",
                self.frontend.max_bulk_len
            ));
        }
        positive(
            &mut p,
            "frontend.max_multibulk_len",
            self.frontend.max_multibulk_len,
        );
        if self.frontend.max_inline_len < 16 {
            p.push(format!(
                "frontend.max_inline_len: {} is too small (at least 16 bytes)",
                self.frontend.max_inline_len
            ));
        }
        if let Some(a) = &self.admin.listen {
            check_addr(&mut p, "admin.listen", a);
            // Port 0 (any free port) never clashes.
            if *a == self.frontend.listen && !a.ends_with(":0") {
                p.push(format!(
                    "admin.listen: {a} is the same address as frontend.listen"
                ));
            }
        }
        if self.cluster.seeds.is_empty() {
            p.push("cluster.seeds: at least one seed node is required (host:port)".to_string());
        }
        for (i, s) in self.cluster.seeds.iter().enumerate() {
            check_addr(&mut p, &format!("cluster.seeds[{i}]"), s);
        }
        nonzero(
            &mut p,
            "frontend.drain_timeout",
            self.frontend.drain_timeout,
        );
        nonzero(
            &mut p,
            "cluster.refresh_interval",
            self.cluster.refresh_interval,
        );
        nonzero(
            &mut p,
            "cluster.discovery_timeout",
            self.cluster.discovery_timeout,
        );
        let b = &self.backend;
        if !(1..=64).contains(&b.connections_per_node) {
            p.push(format!(
                "backend.connections_per_node: {} is out of range 1..=64",
                b.connections_per_node
            ));
        }
        nonzero(&mut p, "backend.connect_timeout", b.connect_timeout);
        nonzero(&mut p, "backend.request_timeout", b.request_timeout);
        nonzero(
            &mut p,
            "backend.reconnect_backoff_min",
            b.reconnect_backoff_min,
        );
        nonzero(
            &mut p,
            "backend.reconnect_backoff_max",
            b.reconnect_backoff_max,
        );
        if b.reconnect_backoff_min > b.reconnect_backoff_max {
            p.push(format!(
                "backend.reconnect_backoff_min ({:?}) is larger than backend.reconnect_backoff_max ({:?})",
                b.reconnect_backoff_min, b.reconnect_backoff_max
            ));
        }
        positive(&mut p, "backend.queue_depth", b.queue_depth);
        positive(
            &mut p,
            "backend.max_dedicated_connections",
            b.max_dedicated_connections,
        );
        if let Err(e) = b.credentials() {
            p.push(e);
        }
        if let Some(t) = &self.frontend.tls {
            if t.require_client_cert && t.client_ca_file.is_none() {
                p.push(
                    "frontend.tls.require_client_cert: needs frontend.tls.client_ca_file".into(),
                );
            }
            nonzero(
                &mut p,
                "frontend.tls.handshake_timeout",
                t.handshake_timeout,
            );
            if let Err(e) = crate::tls::server_config(t) {
                p.push(e);
            }
        }
        if b.tls.enabled {
            if let Err(e) = crate::tls::client_config(&b.tls) {
                p.push(e);
            }
        } else if b.tls != BackendTlsConfig::default() {
            p.push("backend.tls: settings are given but backend.tls.enabled is false".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, u) in self.auth.users.iter().enumerate() {
            let key = format!("auth.users[{i}]");
            if !names.insert(u.name.as_str()) {
                p.push(format!("{key}: user {:?} is defined twice", u.name));
            }
            match resolve_secret(
                &format!("{key}.password"),
                &u.password,
                &u.password_env,
                &u.password_file,
            ) {
                Ok(Some(_)) => {}
                Ok(None) => p.push(format!("{key}: user {:?} has no password", u.name)),
                Err(e) => p.push(e),
            }
            if u.roles.is_empty() {
                p.push(format!("{key}: user {:?} has no roles", u.name));
            }
        }
        let r = &self.retry;
        nonzero(&mut p, "retry.budget", r.budget);
        nonzero(&mut p, "retry.backoff_min", r.backoff_min);
        nonzero(&mut p, "retry.backoff_max", r.backoff_max);
        if r.backoff_min > r.backoff_max {
            p.push(format!(
                "retry.backoff_min ({:?}) is larger than retry.backoff_max ({:?})",
                r.backoff_min, r.backoff_max
            ));
        }
        if self.runtime.threads > 1024 {
            p.push(format!(
                "runtime.threads: {} is out of range 0..=1024",
                self.runtime.threads
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            p.push(format!(
                "log.level: {:?} is not a valid filter: {e}",
                self.log.level
            ));
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(Problems(p))
        }
    }
}

fn positive(p: &mut Vec<String>, key: &str, v: usize) {
    if v == 0 {
        p.push(format!("{key}: must be at least 1"));
    }
}

fn nonzero(p: &mut Vec<String>, key: &str, d: Duration) {
    if d.is_zero() {
        p.push(format!("{key}: must be longer than zero"));
    }
}

/// Checks `host:port` (host may be a name, an IPv4 address or a bracketed IPv6 address).
fn check_addr(p: &mut Vec<String>, key: &str, addr: &str) {
    if let Err(why) = parse_host_port(addr) {
        p.push(format!("{key}: {addr:?} is not host:port ({why})"));
    }
}

/// Splits `host:port`, accepting `[v6]:port`.
pub fn parse_host_port(addr: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = addr.rsplit_once(':').ok_or("missing port")?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err("missing host");
    }
    if host.contains(':') && !addr.starts_with('[') {
        return Err("IPv6 addresses must be bracketed");
    }
    let port: u16 = port.parse().map_err(|_| "invalid port")?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Config {
        let mut c = Config::default();
        c.cluster.seeds = vec!["127.0.0.1:7000".into()];
        c
    }

    #[test]
    fn defaults_need_only_seeds() {
        assert!(valid().validate().is_ok());
        let e = Config::default().validate().unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert!(e.0[0].starts_with("cluster.seeds"));
    }

    #[test]
    fn every_problem_is_reported() {
        let mut c = valid();
        c.frontend.listen = "nope".into();
        c.frontend.max_clients = 0;
        c.cluster.seeds.push("host:99999".into());
        c.backend.connections_per_node = 0;
        c.backend.reconnect_backoff_min = Duration::from_secs(10);
        c.log.level = "not a [level".into();
        let e = c.validate().unwrap_err();
        assert_eq!(e.0.len(), 6, "{e}");
        let text = e.to_string();
        assert!(text.starts_with("invalid configuration (6 problems):"));
        for key in [
            "frontend.listen",
            "frontend.max_clients",
            "cluster.seeds[1]",
            "backend.connections_per_node",
            "backend.reconnect_backoff_min",
            "log.level",
        ] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
    }

    #[test]
    fn unix_socket_is_read_and_checked() {
        let c = Config::from_toml(
            "[frontend]\nunix_socket = \"/run/sp/sp.sock\"\nunix_socket_mode = 0o600\n[cluster]\nseeds=[\"a:1\"]\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.frontend.unix_socket, Some("/run/sp/sp.sock".into()));
        assert_eq!(c.frontend.unix_socket_mode, 0o600);
        assert!(c.validate().is_ok());
        let mut c = valid();
        c.frontend.unix_socket = Some("/tmp/".repeat(30).into());
        c.frontend.unix_socket_mode = 0o1777;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("frontend.unix_socket:") && e.contains("1 to 107 bytes"),
            "{e}"
        );
        assert!(e.contains("frontend.unix_socket_mode: 0o1777"), "{e}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = Config::from_toml("[frontend]\nlisen = \"x\"\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
        let e = Config::from_toml("[nope]\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn parses_durations_and_overrides() {
        let mut c = Config::from_toml(
            "[cluster]\nseeds=[\"a:1\"]\nrefresh_interval=\"250ms\"\n[backend]\nrequest_timeout=\"2s\"\n[log]\nformat=\"json\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.cluster.refresh_interval, Duration::from_millis(250));
        assert_eq!(c.backend.request_timeout, Duration::from_secs(2));
        assert_eq!(c.log.format, LogFormat::Json);
        c.apply(&Overrides {
            listen: Some("0.0.0.0:7777".into()),
            admin: Some("127.0.0.1:9000".into()),
            seeds: vec!["b:2".into(), "c:3".into()],
            log_level: Some("debug".into()),
        });
        assert_eq!(c.frontend.listen, "0.0.0.0:7777");
        assert_eq!(c.admin.listen.as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(c.cluster.seeds, vec!["b:2", "c:3"]);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn changed_keys_split_by_reloadability() {
        let old = valid();
        let mut new = old.clone();
        new.frontend.max_pipeline = 7;
        new.cluster.seeds.push("b:2".into());
        new.frontend.listen = "127.0.0.1:7777".into();
        let (applied, restart) = changed_keys(&old, &new);
        assert_eq!(applied, ["cluster.seeds", "frontend.max_pipeline"]);
        assert_eq!(restart, ["frontend.listen"]);
        assert_eq!(changed_keys(&old, &old), (vec![], vec![]));
    }

    #[test]
    fn backend_credentials_from_every_source() {
        let mut c = valid();
        assert_eq!(c.backend.credentials(), Ok(None));
        c.backend.password = Some(Secret("s3cret".into()));
        assert_eq!(
            c.backend.credentials(),
            Ok(Some((None, Secret("s3cret".into()))))
        );
        assert!(!format!("{c:?}").contains("s3cret"), "never printed");
        assert!(!serde_json::to_string(&c).unwrap().contains("s3cret"));
        c.backend.password_env = Some("SLOTPROXY_TEST_NO_SUCH_VAR".into());
        assert!(c.backend.credentials().unwrap_err().contains("only one"));
        c.backend.password = None;
        assert!(c.backend.credentials().unwrap_err().contains("not set"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "fromfile\n").unwrap();
        c.backend.password_env = None;
        c.backend.password_file = Some(file);
        c.backend.username = Some("proxy".into());
        assert_eq!(
            c.backend.credentials(),
            Ok(Some((Some("proxy".into()), Secret("fromfile".into()))))
        );
        let mut u = valid();
        u.backend.username = Some("x".into());
        assert!(u.validate().unwrap_err().0[0].contains("needs a password"));
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(parse_host_port("a:1"), Ok(("a", 1)));
        assert_eq!(parse_host_port("[::1]:6379"), Ok(("::1", 6379)));
        assert_eq!(parse_host_port("127.0.0.1:0"), Ok(("127.0.0.1", 0)));
        assert!(parse_host_port("::1:6379").is_err());
        assert!(parse_host_port("a").is_err());
        assert!(parse_host_port(":1").is_err());
        assert!(parse_host_port("a:b").is_err());
    }

    #[test]
    fn shipped_example_config_is_valid() {
        for file in ["config/slotproxy.toml", "config/local.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            Config::load(Some(&path), &Overrides::default())
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
}
