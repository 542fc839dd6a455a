//! MONITOR: every request through this proxy, streamed to the clients that
//! asked for it, in Redis's format (`+<time> [0 <client>] "cmd" "arg"`).
//! A request costs one relaxed load while nobody watches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tokio::sync::broadcast;

/// Lines a slow watcher may lag behind before it misses some (as a Redis
/// monitor client would hit its output buffer limit).
const BACKLOG: usize = 4096;

/// The monitor feed.
#[derive(Debug)]
pub struct Monitor {
    tx: broadcast::Sender<Bytes>,
    watchers: AtomicUsize,
}

impl Default for Monitor {
    fn default() -> Monitor {
        Monitor {
            tx: broadcast::channel(BACKLOG).0,
            watchers: AtomicUsize::new(0),
        }
    }
}

/// A watcher's feed; it stops counting as a watcher when dropped.
pub struct Watcher {
    monitor: Arc<Monitor>,
    rx: broadcast::Receiver<Bytes>,
}

impl Watcher {
    /// The next line; `None` once the feed is gone. Lines a slow watcher
    /// missed are skipped.
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            match self.rx.recv().await {
                Ok(line) => return Some(line),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.monitor.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Monitor {
    /// Whether any client watches.
    pub fn active(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0
    }

    /// A new watcher of every request from now on.
    pub fn watch(self: &Arc<Self>) -> Watcher {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Watcher {
            monitor: self.clone(),
            rx: self.tx.subscribe(),
        }
    }

    /// Feeds one request (`args`) from `client` (its address as CLIENT LIST
    /// names it). Secrets are not shown: AUTH's and HELLO's arguments are
    /// `(redacted)`, as Redis shows them.
    pub fn record<'a>(&self, args: impl Iterator<Item = &'a [u8]>, client: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut line = BytesMut::with_capacity(64);
        line.extend_from_slice(
            format!("+{}.{:06} [0 {client}]", now.as_secs(), now.subsec_micros()).as_bytes(),
        );
        let mut redact = false;
        for (i, arg) in args.enumerate() {
            line.extend_from_slice(b" ");
            if i == 0 {
                redact = arg.eq_ignore_ascii_case(b"auth") || arg.eq_ignore_ascii_case(b"hello");
            }
            if redact && i > 0 {
                line.extend_from_slice(b"\"(redacted)\"");
            } else {
                quote(arg, &mut line);
            }
        }
        line.extend_from_slice(b"\r\n");
        let _ = self.tx.send(line.freeze());
    }
}

/// `arg` quoted as Redis quotes it (`sdscatrepr`).
fn quote(arg: &[u8], out: &mut BytesMut) {
    out.extend_from_slice(b"\"");
    for &b in arg {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            7 => out.extend_from_slice(b"\\a"),
            8 => out.extend_from_slice(b"\\b"),
            b if b.is_ascii_graphic() || b == b' ' => out.extend_from_slice(&[b]),
            b => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
    out.extend_from_slice(b"\"");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_in_redis_format() {
        let m = Arc::new(Monitor::default());
        assert!(!m.active());
        let args: [&[u8]; 3] = [b"SET", b"k\"1", b"a\r\n\x01"];
        m.record(args.iter().copied(), "127.0.0.1:5000");
        let mut w = m.watch();
        assert!(m.active());
        m.record(args.iter().copied(), "127.0.0.1:5000");
        let secret: [&[u8]; 3] = [b"AUTH", b"user", b"pw"];
        m.record(secret.iter().copied(), "127.0.0.1:5000");
        let line = w.next().await.unwrap();
        let text = String::from_utf8(line.to_vec()).unwrap();
        assert!(text.starts_with('+'), "{text}");
        assert!(
            text.ends_with(" [0 127.0.0.1:5000] \"SET\" \"k\\\"1\" \"a\\r\\n\\x01\"\r\n"),
            "{text}"
        );
        let line = w.next().await.unwrap();
        assert!(line.ends_with(b"\"AUTH\" \"(redacted)\" \"(redacted)\"\r\n"));
        drop(w);
        assert!(!m.active());
    }
}
