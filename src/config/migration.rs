//! `[migration]`: the standalone Redis being moved into the cluster, and
//! the phase of the move (see the README, "Moving from a single Redis to
//! Redis Cluster").

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{BackendConfig, BackendTlsConfig, Secret};

/// Where the migration stands; a reload moves it one step at a time (see
/// [`check_transition`]).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Every command goes to the standalone source.
    #[default]
    Source,
    /// The source is authoritative; writes are mirrored to the cluster and
    /// the copier moves the existing keys.
    Copy,
    /// Like `copy`, plus the verifier.
    Verify,
    /// The cluster is authoritative; writes are mirrored to the source for
    /// `migration.target_mirror`.
    Target,
    /// The cluster only.
    Done,
}

impl Phase {
    /// The phase's name, as in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Source => "source",
            Phase::Copy => "copy",
            Phase::Verify => "verify",
            Phase::Target => "target",
            Phase::Done => "done",
        }
    }

    /// Its number in the order of the migration (the metric's value).
    pub fn number(self) -> u8 {
        self as u8
    }

    /// Whether the source is the authoritative side.
    pub fn source_authoritative(self) -> bool {
        self <= Phase::Verify
    }
}

/// `[migration]`: one standalone Redis (the source) and the phase.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MigrationConfig {
    /// The standalone Redis, `host:port`.
    pub source: String,
    /// The phase (reloadable, one step at a time).
    #[serde(default)]
    pub phase: Phase,
    /// ACL user for the source; needs a password.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for the source, inline.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Environment variable holding the source's password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the source's password.
    #[serde(default)]
    pub password_file: Option<std::path::PathBuf>,
    /// TLS to the source (same keys as `[backend.tls]`).
    #[serde(default)]
    pub tls: BackendTlsConfig,
    /// Keys copied per second at most (0: no limit).
    #[serde(default = "default_copy_rate")]
    pub copy_rate: u64,
    /// Keys asked of SCAN and copied per round trip.
    #[serde(default = "default_copy_batch")]
    pub copy_batch: usize,
    /// Keys the verifier compares (0: every key).
    #[serde(default)]
    pub verify_sample: u64,
    /// How long `target` keeps writing to the source (the rollback window);
    /// after it the proxy behaves as in `done`.
    #[serde(default = "default_target_mirror", with = "humantime_serde")]
    pub target_mirror: Duration,
    /// Where the copier keeps its SCAN cursor, to resume after a restart.
    #[serde(default)]
    pub cursor_file: Option<std::path::PathBuf>,
}

fn default_copy_rate() -> u64 {
    20_000
}

fn default_copy_batch() -> usize {
    100
}

fn default_target_mirror() -> Duration {
    Duration::from_secs(3600)
}

impl MigrationConfig {
    /// The connection settings of the source, in the shape the backend's
    /// link reads (credentials and TLS).
    pub fn as_backend(&self, backend: &BackendConfig) -> BackendConfig {
        BackendConfig {
            connections_per_node: 1,
            username: self.username.clone(),
            password: self.password.clone(),
            password_env: self.password_env.clone(),
            password_file: self.password_file.clone(),
            tls: self.tls.clone(),
            ..backend.clone()
        }
    }

    /// Every problem of the section, keys named in full.
    pub fn problems(&self, backend: &BackendConfig) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(e) = super::parse_host_port(&self.source) {
            p.push(format!("migration.source: {:?} {e}", self.source));
        }
        if let Err(e) = self.as_backend(backend).credentials() {
            p.push(e.replace("backend.", "migration."));
        }
        if self.copy_batch == 0 || self.copy_batch > 10_000 {
            p.push(format!(
                "migration.copy_batch: {} is out of range 1..=10000",
                self.copy_batch
            ));
        }
        if !self.tls.enabled && self.tls != BackendTlsConfig::default() {
            p.push("migration.tls: settings are given but migration.tls.enabled is false".into());
        }
        p
    }
}

/// Whether a reload may move the migration from `old` to `new`: one step
/// forward, or one step back (rollback: `target` to `verify`, `verify` to
/// `copy`, `copy` to `source`). `done` is final while the proxy runs (the
/// source no longer receives writes). Adding or removing `[migration]`
/// needs a restart and is checked by the reload.
pub fn check_transition(old: Phase, new: Phase) -> Result<(), String> {
    let (a, b) = (old.number(), new.number());
    if a == b || b == a + 1 || (b + 1 == a && old != Phase::Done) {
        return Ok(());
    }
    Err(format!(
        "migration.phase: cannot go from {} to {} (one step at a time: source, copy, verify, target, done; back one step to roll back, never out of done)",
        old.name(),
        new.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_go_one_step_at_a_time() {
        use Phase::*;
        for (a, b) in [
            (Source, Copy),
            (Copy, Verify),
            (Verify, Target),
            (Target, Done),
        ] {
            assert!(check_transition(a, b).is_ok());
            if a != Source || b != Copy {
                assert!(check_transition(b, a).is_ok() || b == Done);
            }
        }
        assert!(check_transition(Copy, Source).is_ok());
        assert!(check_transition(Target, Verify).is_ok());
        let e = check_transition(Source, Done).unwrap_err();
        assert!(e.contains("from source to done"), "{e}");
        assert!(check_transition(Done, Target).is_err());
        assert!(check_transition(Copy, Target).is_err());
    }

    #[test]
    fn section_is_checked_whole() {
        let text = "source = \"nohost\"\ncopy_batch = 0\nusername = \"u\"\n";
        let c: MigrationConfig = toml::from_str(text).unwrap();
        let p = c.problems(&BackendConfig::default());
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p.iter().any(|e| e.starts_with("migration.username")));
    }
}
