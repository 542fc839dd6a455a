//! Loading and validation: every problem is reported at once, and the
//! reload's view of which keys changed.

use std::path::Path;
use std::time::Duration;

use super::*;

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
    /// Parses TOML text (no validation). Unknown keys are all reported at
    /// once, each with the closest valid key.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: origin.to_string(),
            message,
        };
        let unknown = match toml::from_str::<toml::Table>(text) {
            Ok(table) => unknown_keys(&table),
            Err(e) => return Err(parse_error(e.to_string())),
        };
        if !unknown.is_empty() {
            return Err(parse_error(unknown.join("; ")));
        }
        toml::from_str(text).map_err(|e| parse_error(e.to_string()))
    }

    /// Reads the optional file and applies overrides, without validating
    /// the result: the server's `load_config` validates it whole,
    /// with the TLS files it names.
    pub fn read(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
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
        self.validate_with(Vec::new())
    }

    /// Like [`Config::validate`], reporting `found` (problems found by
    /// checks that live elsewhere, such as the TLS files) with the rest.
    pub fn validate_with(&self, found: Vec<String>) -> Result<(), Problems> {
        let mut p = found;
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
        match self.cluster.resolved_zone() {
            Err(e) => p.push(e),
            Ok(None) if self.cluster.read_from == ReadFrom::SameZone => p.push(
                "cluster.read_from: \"same_zone\" needs the proxy's zone (cluster.zone or cluster.zone_env)"
                    .to_string(),
            ),
            Ok(_) => {}
        }
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
        }
        if !b.tls.enabled && b.tls != BackendTlsConfig::default() {
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
        for code in &r.retryable_errors {
            if matches!(code.as_str(), "MOVED" | "ASK") {
                p.push(format!(
                    "retry.retryable_errors: {code} is always followed as a redirect; remove it"
                ));
            } else if code.is_empty() || !code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
            {
                p.push(format!(
                    "retry.retryable_errors: {code:?} is not an error code (the first word of a node error, in capitals, such as TRYAGAIN)"
                ));
            }
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
        check_command_names(&mut p, &self.metrics.command_histograms);
        if let Some(m) = &self.migration {
            p.extend(m.problems(&self.backend));
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(Problems(p))
        }
    }
}

/// `metrics.command_histograms`: `*`, or names shaped like Redis command
/// names (`get`, `config|get`); the command table comes from the cluster,
/// so a name it lacks is only never used.
fn check_command_names(p: &mut Vec<String>, names: &[String]) {
    let word = |w: &str| {
        !w.is_empty()
            && w.len() <= 64
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    };
    for n in names {
        let plausible = n == "*"
            || match n.split_once('|') {
                Some((cmd, sub)) => word(cmd) && word(sub),
                None => word(n),
            };
        if !plausible {
            p.push(format!(
                "metrics.command_histograms: {n:?} is not a command name \
                 (such as \"get\" or \"config|get\"), nor \"*\" for all"
            ));
        }
    }
}

/// Names other tools (and earlier drafts of this config) use for our keys:
/// a last segment here points to the key that does that job.
const ALIASES: &[(&str, &str)] = &[
    ("backoff_base_ms", "retry.backoff_min"),
    ("backoff_base", "retry.backoff_min"),
    ("base_backoff", "retry.backoff_min"),
    ("backoff_max_ms", "retry.backoff_max"),
    ("max_backoff", "retry.backoff_max"),
    ("backoff_strategy", "retry.backoff"),
    ("strategy", "retry.backoff"),
    ("max_attempts", "retry.max_retries"),
    ("max_redirects", "retry.max_retries"),
    ("retry_config", "retry"),
    ("log_redirects", "log.redirects"),
    ("retryable_errors", "retry.retryable_errors"),
    ("read_preference", "cluster.read_from"),
    ("availability_zone", "cluster.zone"),
    ("max_lag", "cluster.max_replica_lag"),
    ("metrics_listen", "admin.listen"),
];

/// Every key of `table` (nested tables walked, arrays not: serde checks
/// inside them) that no configuration has, each with a suggestion.
fn unknown_keys(table: &toml::Table) -> Vec<String> {
    let known = flatten(&Config::default());
    let mut paths = Vec::new();
    fn walk(prefix: &str, t: &toml::Table, out: &mut Vec<String>) {
        for (k, v) in t {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(inner) => walk(&path, inner, out),
                _ => out.push(path),
            }
        }
    }
    walk("", table, &mut paths);
    paths
        .into_iter()
        .filter(|path| {
            // Known, or under a known optional table (`frontend.tls`), whose
            // keys serde checks.
            let mut prefix = path.as_str();
            loop {
                if known.contains_key(prefix) {
                    return false;
                }
                match prefix.rfind('.') {
                    Some(i) => prefix = &prefix[..i],
                    None => return true,
                }
            }
        })
        .map(|path| match closest_key(&path, &known) {
            Some(s) => format!("unknown key `{path}`: did you mean `{s}`?"),
            None => format!("unknown key `{path}` (config/slotproxy.toml lists every key)"),
        })
        .collect()
}

/// The valid key closest to an unknown one: a known alias of its last
/// segment, else the most similar key (same last segment in another
/// table, or a near spelling).
fn closest_key(path: &str, known: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let last = path.rsplit('.').next().unwrap_or(path);
    if let Some((_, to)) = ALIASES.iter().find(|(a, _)| *a == last) {
        return Some(to.to_string());
    }
    known
        .keys()
        .map(|k| {
            let k_last = k.rsplit('.').next().unwrap_or(k);
            let score = strsim::jaro_winkler(path, k).max(strsim::jaro_winkler(last, k_last));
            (score, k)
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.clone())
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
    fn unknown_keys_are_all_named_with_the_closest_valid_one() {
        let text = r#"
            [cluster]
            seeds = ["127.0.0.1:7000"]
            refresh_intervall = "5s"
            [retry]
            backoff_base_ms = 100
            [log]
            log_redirects = true
            [frontend.tls]
            cert_file = "c.pem"
            [nonsense]
            zzz = 1
        "#;
        let e = Config::from_toml(text, "t.toml").unwrap_err().to_string();
        assert!(
            e.contains("`cluster.refresh_intervall`: did you mean `cluster.refresh_interval`?"),
            "{e}"
        );
        assert!(
            e.contains("`retry.backoff_base_ms`: did you mean `retry.backoff_min`?"),
            "{e}"
        );
        assert!(
            e.contains("`log.log_redirects`: did you mean `log.redirects`?"),
            "{e}"
        );
        assert!(
            e.contains("unknown key `nonsense.zzz` (config/slotproxy.toml"),
            "{e}"
        );
        assert!(
            !e.contains("frontend.tls"),
            "keys of an optional table are serde's: {e}"
        );
        // A misplaced key points to its table.
        let e = Config::from_toml("[cluster]\nmax_retries = 3\n", "t").unwrap_err();
        assert!(
            e.to_string().contains("did you mean `retry.max_retries`?"),
            "{e}"
        );
    }

    #[test]
    fn retryable_errors_are_error_codes_and_not_redirects() {
        let mut c = valid();
        c.retry.retryable_errors = vec!["BUSY".into(), "MOVED".into(), "try again".into()];
        let e = c.validate().unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert!(e.0[0].contains("MOVED is always followed"));
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
    fn command_histogram_names_are_checked() {
        let c = Config::from_toml(
            "[cluster]\nseeds = [\"a:1\"]\n[metrics]\n\
             command_histograms = [\"get\", \"CONFIG|GET\", \"*\", \"\", \"get x\", \"a|b|c\"]\n",
            "test",
        )
        .unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("invalid configuration (3 problems)"), "{e}");
        for bad in ["\"\"", "\"get x\"", "\"a|b|c\""] {
            assert!(
                e.contains(&format!("metrics.command_histograms: {bad}")),
                "{e}"
            );
        }
        let mut before = c.clone();
        before.metrics = MetricsConfig::default();
        let (applied, restart) = changed_keys(&before, &c);
        assert!(applied.is_empty() && restart == ["metrics.command_histograms"]);
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
    fn same_zone_needs_the_proxys_zone() {
        let mut c = valid();
        c.cluster.read_from = ReadFrom::SameZone;
        assert!(c.validate().unwrap_err().0[0].contains("needs the proxy's zone"));
        c.cluster.zone = Some("eu-west-1b".into());
        assert!(c.validate().is_ok());
        c.cluster.zone_env = Some("PATH".into());
        assert!(c.validate().unwrap_err().0[0].contains("only one"));
        c.cluster.zone = None;
        assert_eq!(c.cluster.resolved_zone(), Ok(std::env::var("PATH").ok()));
        c.cluster.zone_env = Some("SLOTPROXY_TEST_NO_SUCH_VAR".into());
        assert!(c.validate().unwrap_err().0[0].contains("is not set"));
        let parsed: Config = toml::from_str(
            "[cluster]\nseeds = [\"a:1\"]\nread_from = \"same_zone\"\nzone = \"b\"\nmax_replica_lag = \"3s\"\n",
        )
        .unwrap();
        assert_eq!(parsed.cluster.max_replica_lag, Duration::from_secs(3));
        assert!(parsed.validate().is_ok());
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
            let c = Config::read(Some(&path), &Overrides::default())
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            c.validate().unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
}
