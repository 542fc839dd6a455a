//! Reload on change: the `--config` file and every file it names
//! (certificates, keys, CAs, password files) are read every
//! `reload.watch_interval`, and a change reloads once it has settled.
//!
//! Polling contents rather than inotify (`notify`): Kubernetes updates a
//! mounted ConfigMap or Secret by re-pointing the `..data` symlink, which a
//! watch on the file itself never sees; reading through the symlinks sees
//! that, an in-place rewrite and a rename alike.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::shared::{Reload, ReloadReport};
use crate::config::{Config, ConfigError, Overrides, Tunable};

/// The files a configuration reads besides itself: TLS certificates, keys
/// and CAs, and password files.
fn files_named(config: &Config) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(t) = &config.frontend.tls {
        out.push(t.cert_file.clone());
        out.push(t.key_file.clone());
        out.extend(t.client_ca_file.clone());
    }
    let b = &config.backend;
    if b.tls.enabled {
        out.extend(b.tls.ca_file.clone());
        out.extend(b.tls.cert_file.clone());
        out.extend(b.tls.key_file.clone());
    }
    out.extend(b.password_file.clone());
    for u in &config.auth.users {
        out.extend(u.password_file.clone());
    }
    out
}

/// What one file looked like at a poll: a digest of what reading it through
/// any symlinks gave, or why it could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Contents(u64),
    Unreadable(std::io::ErrorKind),
}

fn look(path: &Path) -> Seen {
    match std::fs::read(path) {
        Ok(bytes) => {
            let mut h = DefaultHasher::new();
            bytes.hash(&mut h);
            Seen::Contents(h.finish())
        }
        Err(e) => Seen::Unreadable(e.kind()),
    }
}

/// Every watched file as seen at one poll.
type Snapshot = Vec<(PathBuf, Seen)>;

fn snapshot(paths: &[PathBuf]) -> Snapshot {
    paths.iter().map(|p| (p.clone(), look(p))).collect()
}

/// Polls the files of one configuration and reloads it when they change.
pub(super) struct Watcher {
    reloader: Arc<dyn Reload>,
    /// The `--config` file.
    config: PathBuf,
    /// The command-line overrides, applied on top of it.
    overrides: Overrides,
    /// It and the files it names.
    paths: Vec<PathBuf>,
    /// The files as the last reload (or the start) read them.
    loaded: Snapshot,
    /// A change seen at the last poll: reloaded only if the next poll sees
    /// the same, so a file caught halfway through a write, or a certificate
    /// renewed before its key, is not loaded.
    settling: Option<Snapshot>,
}

impl Watcher {
    /// A watcher of `config` (the running configuration, read from `path`),
    /// taking the files as they are now for the ones loaded.
    pub(super) fn new(
        reloader: Arc<dyn Reload>,
        path: PathBuf,
        overrides: Overrides,
        config: &Config,
    ) -> Watcher {
        let paths = watched(&path, config);
        Watcher {
            reloader,
            loaded: snapshot(&paths),
            config: path,
            overrides,
            paths,
            settling: None,
        }
    }

    /// One poll: reloads when the files changed and have settled, and
    /// returns the outcome then. A reload that fails is not retried until
    /// the files change again.
    fn poll(&mut self) -> Option<Result<ReloadReport, ConfigError>> {
        let now = snapshot(&self.paths);
        if now == self.loaded {
            self.settling = None;
            return None;
        }
        if self.settling.as_ref() != Some(&now) {
            self.settling = Some(now);
            return None;
        }
        self.settling = None;
        let changed: Vec<String> = now
            .iter()
            .filter(|f| !self.loaded.contains(f))
            .map(|(p, _)| p.display().to_string())
            .collect();
        // The files the new configuration names are watched from now on;
        // one that does not validate still names them (its fix may be one).
        if let Ok(c) = Config::read(Some(&self.config), &self.overrides) {
            self.paths = watched(&self.config, &c);
        }
        // Taken before the reload reads the files: a change while it runs
        // is seen at the next poll.
        self.loaded = if self.paths.len() == now.len()
            && self.paths.iter().zip(&now).all(|(p, (q, _))| p == q)
        {
            now
        } else {
            snapshot(&self.paths)
        };
        info!(files = ?changed, "watched files changed: reloading the configuration");
        let outcome = self.reloader.reload();
        if let Err(e) = &outcome {
            error!(
                files = ?changed,
                error = %e,
                "configuration not reloaded: the running one stays (tried again when the files change)"
            );
        }
        Some(outcome)
    }
}

/// The `--config` file and the files it names, each once.
fn watched(path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut paths = vec![path.to_path_buf()];
    for f in files_named(config) {
        if !paths.contains(&f) {
            paths.push(f);
        }
    }
    paths
}

/// Polls every `interval` (0s: watching is off until a reload turns it on)
/// until `shutdown`.
pub(super) async fn run(mut watcher: Watcher, interval: Arc<Tunable>, shutdown: CancellationToken) {
    loop {
        let every = interval.get();
        let pause = if every.is_zero() {
            Duration::from_secs(1)
        } else {
            every
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        if every.is_zero() {
            continue;
        }
        // File reads, and a reload's TLS parsing, stay off the runtime's
        // threads that serve clients.
        let polled = tokio::task::spawn_blocking(move || {
            watcher.poll();
            watcher
        });
        watcher = match polled.await {
            Ok(w) => w,
            Err(_) => return,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `*_file` key of a configuration that sets them all, found by
    /// walking its serialized form: a new file key fails this until
    /// [`files_named`] watches it.
    #[test]
    fn every_file_key_is_watched() {
        let text = r#"
            [frontend.tls]
            cert_file = "/f/cert"
            key_file = "/f/key"
            client_ca_file = "/f/ca"
            [backend]
            password_file = "/b/password"
            [backend.tls]
            enabled = true
            ca_file = "/b/ca"
            cert_file = "/b/cert"
            key_file = "/b/key"
            [[auth.users]]
            name = "app"
            password_file = "/u/app"
            roles = ["read"]
        "#;
        let config = Config::from_toml(text, "test").unwrap();
        fn walk(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| walk(v, k, out)),
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, key, out)),
                serde_json::Value::String(s) if key.ends_with("_file") => out.push(s.clone()),
                _ => {}
            }
        }
        let mut keys = Vec::new();
        walk(&serde_json::to_value(&config).unwrap(), "", &mut keys);
        let mut named: Vec<String> = files_named(&config)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        keys.sort();
        named.sort();
        assert_eq!(keys.len(), 8);
        assert_eq!(named, keys);
    }

    /// Counts reloads; fails them while `broken` is set.
    #[derive(Default)]
    struct Fake {
        reloads: std::sync::atomic::AtomicUsize,
        broken: std::sync::atomic::AtomicBool,
    }

    impl Reload for Fake {
        fn reload(&self) -> Result<ReloadReport, ConfigError> {
            use std::sync::atomic::Ordering::Relaxed;
            self.reloads.fetch_add(1, Relaxed);
            if self.broken.load(Relaxed) {
                return Err(ConfigError::Invalid(crate::config::Problems(vec![
                    "broken".into(),
                ])));
            }
            Ok(ReloadReport::default())
        }
    }

    #[test]
    fn a_change_reloads_once_settled_and_a_failure_waits_for_the_next() {
        use std::sync::atomic::Ordering::Relaxed;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slotproxy.toml");
        let cert = dir.path().join("cert.pem");
        let toml = |extra: &str| {
            format!("[cluster]\nseeds = [\"a:1\"]\n[backend]\npassword_file = {cert:?}\n{extra}")
        };
        std::fs::write(&path, toml("")).unwrap();
        std::fs::write(&cert, "secret").unwrap();
        let fake = Arc::new(Fake::default());
        let config = Config::read(Some(&path), &Overrides::default()).unwrap();
        let mut w = Watcher::new(fake.clone(), path.clone(), Overrides::default(), &config);
        assert_eq!(w.paths, [path.clone(), cert.clone()]);
        assert!(w.poll().is_none(), "nothing changed");
        // A named file changes: seen, then reloaded once it stays the same.
        std::fs::write(&cert, "renewed").unwrap();
        assert!(w.poll().is_none(), "settling");
        assert!(w.poll().unwrap().is_ok());
        assert!(w.poll().is_none());
        assert_eq!(fake.reloads.load(Relaxed), 1);
        // A write still going on at the next poll waits for it to end.
        std::fs::write(&path, toml("#")).unwrap();
        assert!(w.poll().is_none());
        std::fs::write(&path, toml("# done")).unwrap();
        assert!(w.poll().is_none());
        // A broken file is tried once, and again only after a change.
        fake.broken.store(true, Relaxed);
        assert!(w.poll().unwrap().is_err());
        assert!(w.poll().is_none());
        assert!(w.poll().is_none());
        assert_eq!(fake.reloads.load(Relaxed), 2);
        fake.broken.store(false, Relaxed);
        // The new configuration's files are watched from the reload on.
        let other = dir.path().join("other.pem");
        std::fs::write(&other, "x").unwrap();
        std::fs::write(&path, toml("").replace("cert.pem", "other.pem")).unwrap();
        assert!(w.poll().is_none());
        assert!(w.poll().unwrap().is_ok());
        assert_eq!(w.paths, [path, other.clone()]);
        std::fs::write(&other, "y").unwrap();
        assert!(w.poll().is_none());
        assert!(w.poll().unwrap().is_ok());
        assert_eq!(fake.reloads.load(Relaxed), 4);
    }

    #[test]
    fn contents_are_read_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "one").unwrap();
        std::fs::write(&b, "two").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let before = look(&link);
        assert_eq!(before, look(&a));
        // Re-pointed the way Kubernetes swaps `..data`: a new link renamed
        // over the old one.
        let tmp = dir.path().join("link.tmp");
        std::os::unix::fs::symlink(&b, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        assert_ne!(look(&link), before);
        std::fs::remove_file(&b).unwrap();
        assert_eq!(look(&link), Seen::Unreadable(std::io::ErrorKind::NotFound));
    }
}
