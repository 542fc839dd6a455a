//! `log.redirects`: each MOVED and ASK the proxy absorbs, logged at info
//! with its slot and nodes, at most [`PER_SECOND`] lines a second (a
//! reshard redirects thousands of requests; the rest are counted and
//! reported), and a summary line per slot-table refresh.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::info;

/// Most redirect lines logged in one second.
pub const PER_SECOND: u32 = 10;

/// The redirect log.
#[derive(Debug)]
pub struct RedirectLog {
    enabled: AtomicBool,
    window: Mutex<Window>,
    /// Redirects since the last refresh's summary: MOVED, ASK.
    moved: AtomicU64,
    ask: AtomicU64,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

impl Default for RedirectLog {
    fn default() -> Self {
        RedirectLog {
            enabled: AtomicBool::new(false),
            window: Mutex::new(Window {
                start: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
            moved: AtomicU64::new(0),
            ask: AtomicU64::new(0),
        }
    }
}

/// What a redirect was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirected {
    /// MOVED: the slot has a new owner.
    Moved,
    /// ASK: one request went to the importing node.
    Ask,
}

impl RedirectLog {
    /// `log.redirects` (reloadable).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Whether each redirect is logged (callers skip looking up `from`
    /// otherwise).
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Records a redirect of a request for `slot` from `from` (the node
    /// the table named, if known) to `to`. Whether a line is written: the
    /// caller's tests read it.
    pub fn record(&self, kind: Redirected, slot: u16, from: Option<&str>, to: &str) -> bool {
        match kind {
            Redirected::Moved => &self.moved,
            Redirected::Ask => &self.ask,
        }
        .fetch_add(1, Ordering::Relaxed);
        if !self.enabled.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        let mut w = self.window.lock().expect("redirect log lock");
        if now.duration_since(w.start) >= Duration::from_secs(1) {
            if w.suppressed > 0 {
                info!(
                    not_logged = w.suppressed,
                    "redirects over the log's limit of {PER_SECOND} a second"
                );
            }
            *w = Window {
                start: now,
                logged: 0,
                suppressed: 0,
            };
        }
        if w.logged >= PER_SECOND {
            w.suppressed += 1;
            return false;
        }
        w.logged += 1;
        drop(w);
        let from = from.unwrap_or("?");
        match kind {
            Redirected::Moved => info!(slot, from, to, "MOVED absorbed: slot has a new owner"),
            Redirected::Ask => info!(slot, from, to, "ASK absorbed: slot is migrating"),
        }
        true
    }

    /// After a refresh of the slot table: one line with the redirects
    /// absorbed since the last one, if any.
    pub fn summary(&self, version: u64) {
        let moved = self.moved.swap(0, Ordering::Relaxed);
        let ask = self.ask.swap(0, Ordering::Relaxed);
        if moved + ask > 0 {
            info!(
                version,
                moved, ask, "slot table refreshed; redirects absorbed since the last refresh"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_limited_per_second_and_counted_for_the_summary() {
        let log = RedirectLog::default();
        assert!(!log.record(Redirected::Moved, 1, Some("a:1"), "b:2"), "off");
        log.set_enabled(true);
        let written = (0..100)
            .filter(|_| log.record(Redirected::Ask, 1, None, "b:2"))
            .count();
        assert_eq!(written, PER_SECOND as usize);
        assert_eq!(log.moved.load(Ordering::Relaxed), 1);
        assert_eq!(log.ask.load(Ordering::Relaxed), 100);
        log.summary(3);
        assert_eq!(log.ask.load(Ordering::Relaxed), 0);
    }
}
