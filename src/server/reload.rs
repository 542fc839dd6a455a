//! Configuration loading and reload (SIGHUP, `PROXY CONFIG RELOAD`,
//! `POST /reload`, a watched file that changed).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tracing::info;

use super::shared::{Reload, ReloadReport, Shared};
use crate::backend::BackendSettings;
use crate::cluster::topology::Topology;
use crate::config::{
    changed_keys, resolve_secret, Config, ConfigError, Overrides, Problems, Tunable,
};
use crate::tls::{TlsAcceptor, TlsConnector};

/// Reads the optional file, applies the overrides and validates the result
/// whole: the values, and the TLS files they name (certificates and keys are
/// loaded here, so a broken one fails the load), every problem at once.
pub fn load_config(
    path: Option<&std::path::Path>,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let config = Config::read(path, overrides)?;
    config
        .validate_with(crate::tls::check_files(&config))
        .map_err(ConfigError::Invalid)?;
    Ok(config)
}

/// Digests of the passwords read from files, by the key a change is
/// reported under: a renewed Secret changes a file's contents, not the
/// configuration, and the running credentials are kept until a restart.
pub(super) fn password_digests(config: &Config) -> BTreeMap<String, String> {
    let digest = |key: &str, file: &Option<std::path::PathBuf>| {
        // A file that does not resolve fails validation; nothing to compare.
        resolve_secret(key, &None, &None, file)
            .ok()
            .flatten()
            .map(|s| sha1_smol::Sha1::from(s.0.as_bytes()).digest().to_string())
    };
    let mut out = BTreeMap::new();
    if let Some(d) = digest("backend.password", &config.backend.password_file) {
        out.insert("backend.password_file".to_string(), d);
    }
    let users: Vec<String> = config
        .auth
        .users
        .iter()
        .filter_map(|u| digest("auth.users.password", &u.password_file))
        .collect();
    if !users.is_empty() {
        out.insert("auth.users".to_string(), users.join(","));
    }
    out
}

/// Applies a new `log.level` filter at run time.
pub type LogLevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Where a reload reads the configuration from: the file given at start
/// (if any) and the command-line overrides, applied again on top.
#[derive(Default)]
pub struct ReloadSource {
    /// The configuration file.
    pub path: Option<std::path::PathBuf>,
    /// The command-line overrides.
    pub overrides: Overrides,
    /// Applies a new `log.level` filter (set up by the binary).
    pub log_level: Option<LogLevelSetter>,
}

/// Re-reads the configuration and applies what can change safely: seeds,
/// refresh and discovery intervals, timeouts, retry policy, limits (new
/// sessions), `max_clients` (raising it admits more at once, lowering it
/// disconnects nobody), CONFIG write permission, slow log, drain timeout and
/// log level, `admin.allow_reload` and `reload.watch_interval`. TLS
/// certificates and keys are read again for new connections. Keys in
/// [`crate::config::RESTART_KEYS`] are reported as needing a restart
/// (turning TLS on or off is one of them), and so are password files whose
/// contents changed.
pub struct Reloader {
    pub(super) source: ReloadSource,
    /// Held for the whole reload, so two at once (a signal and the file
    /// watcher) cannot apply an older file after a newer one.
    pub(super) current: Mutex<Config>,
    /// [`password_digests`] of the credentials in use.
    pub(super) passwords: BTreeMap<String, String>,
    pub(super) allow_reload: Arc<AtomicBool>,
    pub(super) watch_interval: Arc<Tunable>,
    pub(super) shared: Arc<Shared>,
    pub(super) topology: Arc<Topology>,
    pub(super) settings: Arc<BackendSettings>,
    pub(super) client_slots: Arc<Semaphore>,
    pub(super) drain_timeout: Arc<Tunable>,
    pub(super) frontend_tls: Option<Arc<TlsAcceptor>>,
    pub(super) backend_tls: Option<Arc<TlsConnector>>,
}

impl Reload for Reloader {
    /// Reloads; an invalid configuration changes nothing.
    fn reload(&self) -> Result<ReloadReport, ConfigError> {
        let Some(path) = &self.source.path else {
            return Err(ConfigError::Invalid(Problems(vec![
                "slotproxy was started without --config: there is no file to reload".into(),
            ])));
        };
        let mut current = self.current.lock().expect("config lock");
        let new = load_config(Some(path), &self.source.overrides)?;
        let migration = match (&current.migration, &new.migration) {
            (Some(old), Some(m)) => {
                crate::config::check_transition(old.phase, m.phase)
                    .map_err(|e| ConfigError::Invalid(Problems(vec![e])))?;
                Some(m)
            }
            _ => None,
        };
        let (mut applied, mut restart_needed) = changed_keys(&current, &new);
        for (key, digest) in password_digests(&new) {
            if self.passwords.get(&key) != Some(&digest) {
                restart_needed.push(key);
            }
        }
        // Turning TLS on or off needs a restart; the keys inside it then
        // are not applied either.
        for (on_before, on_now, section) in [
            (
                current.frontend.tls.is_some(),
                new.frontend.tls.is_some(),
                "frontend.tls",
            ),
            (
                current.backend.tls.enabled,
                new.backend.tls.enabled,
                "backend.tls",
            ),
        ] {
            if on_before != on_now {
                let prefix = format!("{section}.");
                applied.retain(|k| {
                    let inside = k.starts_with(&prefix);
                    if inside {
                        restart_needed.push(k.clone());
                    }
                    !inside
                });
            }
        }
        if current.migration.is_some() != new.migration.is_some() {
            // Adding or removing [migration] needs a restart; nothing in
            // it is applied.
            applied.retain(|k| {
                let inside = k == "migration" || k.starts_with("migration.");
                if inside {
                    restart_needed.push("migration".into());
                }
                !inside
            });
        }
        restart_needed.sort();
        restart_needed.dedup();
        // Both sides' certificates load before either is swapped in, so a
        // file that breaks meanwhile changes nothing.
        let invalid = |e: String| ConfigError::Invalid(Problems(vec![e]));
        let frontend_tls = match (&self.frontend_tls, &new.frontend.tls) {
            (Some(acceptor), Some(t)) => {
                Some((acceptor, crate::tls::server_config(t).map_err(invalid)?, t))
            }
            _ => None,
        };
        let backend_tls = match (&self.backend_tls, new.backend.tls.enabled) {
            (Some(connector), true) => Some((
                connector,
                crate::tls::client_config(&new.backend.tls).map_err(invalid)?,
            )),
            _ => None,
        };
        let mut certificates_reloaded = Vec::new();
        if let Some((acceptor, config, t)) = frontend_tls {
            acceptor.install(config, t);
            certificates_reloaded.push("frontend".to_string());
        }
        if let Some((connector, config)) = backend_tls {
            connector.install(config, &new.backend.tls);
            certificates_reloaded.push("backend".to_string());
        }
        if applied.iter().any(|k| k == "log.level") {
            if let Some(set) = &self.source.log_level {
                set(&new.log.level).map_err(|e| ConfigError::Invalid(Problems(vec![e])))?;
            }
        }
        self.shared.frontend.store(Arc::new(new.frontend.clone()));
        self.shared
            .proxy
            .slowlog
            .configure(new.frontend.slowlog_threshold, new.frontend.slowlog_max_len);
        self.shared.retrier.reconfigure(&new.retry);
        self.settings.reconfigure(&new.backend);
        self.shared
            .dedicated
            .connect_timeout
            .set(new.backend.connect_timeout);
        self.topology.reconfigure(&new.cluster);
        self.topology.redirects.set_enabled(new.log.redirects);
        self.drain_timeout.set(new.frontend.drain_timeout);
        if let (Some(m), Some(c)) = (&self.shared.migration, migration) {
            m.reconfigure(c);
        }
        self.allow_reload
            .store(new.admin.allow_reload, Ordering::Relaxed);
        self.watch_interval.set(new.reload.watch_interval);
        let (old_max, new_max) = (current.frontend.max_clients, new.frontend.max_clients);
        if new_max > old_max {
            self.client_slots.add_permits(new_max - old_max);
        } else if new_max < old_max {
            self.client_slots.forget_permits(old_max - new_max);
        }
        // Restart-only keys keep their running values.
        let mut next = new;
        next.frontend.listen = current.frontend.listen.clone();
        next.frontend.unix_socket = current.frontend.unix_socket.clone();
        next.frontend.unix_socket_mode = current.frontend.unix_socket_mode;
        next.admin.listen = current.admin.listen.clone();
        next.backend.connections_per_node = current.backend.connections_per_node;
        next.backend.queue_depth = current.backend.queue_depth;
        next.backend.max_dedicated_connections = current.backend.max_dedicated_connections;
        next.cluster.read_from = current.cluster.read_from;
        next.cluster.zone = current.cluster.zone.clone();
        next.cluster.zone_env = current.cluster.zone_env.clone();
        next.log.format = current.log.format;
        if let (Some(next), Some(cur)) = (&mut next.migration, &current.migration) {
            next.source = cur.source.clone();
            next.username = cur.username.clone();
            next.password = cur.password.clone();
            next.password_env = cur.password_env.clone();
            next.password_file = cur.password_file.clone();
            next.tls = cur.tls.clone();
            next.cursor_file = cur.cursor_file.clone();
        } else {
            next.migration = current.migration.clone();
        }
        if next.frontend.tls.is_some() != current.frontend.tls.is_some() {
            next.frontend.tls = current.frontend.tls.clone();
        }
        if next.backend.tls.enabled != current.backend.tls.enabled {
            next.backend.tls = current.backend.tls.clone();
        }
        *current = next;
        info!(
            ?applied,
            ?restart_needed,
            ?certificates_reloaded,
            "configuration reloaded"
        );
        Ok(ReloadReport {
            applied,
            restart_needed,
            certificates_reloaded,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_files_are_compared_by_contents() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, user) = (dir.path().join("backend"), dir.path().join("user"));
        std::fs::write(&backend, "one\n").unwrap();
        std::fs::write(&user, "u1").unwrap();
        let text = format!(
            "[backend]\npassword_file = {backend:?}\n\
             [[auth.users]]\nname = \"app\"\npassword_file = {user:?}\nroles = [\"read\"]\n\
             [[auth.users]]\nname = \"inline\"\npassword = \"p\"\nroles = [\"read\"]\n"
        );
        let config = Config::from_toml(&text, "test").unwrap();
        let before = password_digests(&config);
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            ["auth.users", "backend.password_file"]
        );
        assert!(!before
            .values()
            .any(|d| d.contains("one") || d.contains("u1")));
        std::fs::write(&backend, "two\n").unwrap();
        let after = password_digests(&config);
        assert_ne!(
            after["backend.password_file"],
            before["backend.password_file"]
        );
        assert_eq!(after["auth.users"], before["auth.users"]);
    }
}
