//! CLIENT PAUSE at the proxy: holds this proxy's clients (all their
//! commands, or those that write) until the pause ends, as Redis holds its
//! own. The nodes are not paused: other proxies and direct clients go on.
//!
//! A request pays one relaxed load of [`Pause::active`] while no pause is
//! on; the lock is taken only during a pause.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// What a pause holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PauseMode {
    /// Commands that write or may replicate (EVAL, PUBLISH, PFCOUNT, ...).
    Write,
    /// Every command.
    All,
}

/// The proxy-wide pause.
#[derive(Debug, Default)]
pub struct Pause {
    /// Set while a pause may be on (cleared lazily once it has ended).
    active: AtomicBool,
    state: Mutex<Option<(Instant, PauseMode)>>,
    /// Woken when a pause is lifted or changed.
    changed: Notify,
}

impl Pause {
    /// CLIENT PAUSE: as in Redis, a pause never gets shorter or weaker
    /// while it lasts (the later end and the stronger mode win).
    pub fn pause(&self, duration: Duration, mode: PauseMode) {
        let end = Instant::now() + duration;
        let mut state = self.state.lock().expect("pause lock");
        *state = Some(match *state {
            Some((until, was)) if until > Instant::now() => (until.max(end), was.max(mode)),
            _ => (end, mode),
        });
        self.active.store(true, Ordering::Release);
        drop(state);
        self.changed.notify_waiters();
    }

    /// CLIENT UNPAUSE: every held client goes on.
    pub fn unpause(&self) {
        *self.state.lock().expect("pause lock") = None;
        self.active.store(false, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Whether a pause may be on (the cheap check before [`Pause::hold`]).
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Until when a command is held now (`writes`: it writes or may
    /// replicate), if it is.
    pub fn holds(&self, writes: bool) -> Option<Instant> {
        let mut state = self.state.lock().expect("pause lock");
        match *state {
            Some((until, _)) if until <= Instant::now() => {
                *state = None;
                self.active.store(false, Ordering::Release);
                None
            }
            Some((until, PauseMode::All)) => Some(until),
            Some((until, PauseMode::Write)) if writes => Some(until),
            _ => None,
        }
    }

    /// Waits until a command is no longer held: the pause ended, was lifted,
    /// or was changed to one that lets it through.
    pub async fn hold(&self, writes: bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a change in between wakes it.
            changed.as_mut().enable();
            let Some(until) = self.holds(writes) else {
                return;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = changed => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_keeps_its_later_end_and_stronger_mode() {
        let p = Pause::default();
        assert!(!p.active());
        assert_eq!(p.holds(true), None);
        p.pause(Duration::from_secs(60), PauseMode::All);
        p.pause(Duration::from_millis(1), PauseMode::Write);
        let until = p.holds(false).expect("still ALL");
        assert!(until > Instant::now() + Duration::from_secs(50));
        p.unpause();
        assert!(!p.active());
        p.pause(Duration::from_secs(60), PauseMode::Write);
        assert!(p.holds(true).is_some());
        assert_eq!(p.holds(false), None, "reads go on during a WRITE pause");
    }

    #[test]
    fn an_ended_pause_clears_itself() {
        let p = Pause::default();
        p.pause(Duration::ZERO, PauseMode::All);
        assert!(p.active());
        assert_eq!(p.holds(true), None);
        assert!(!p.active());
    }

    #[tokio::test]
    async fn unpause_releases_a_held_command() {
        let p = std::sync::Arc::new(Pause::default());
        p.pause(Duration::from_secs(60), PauseMode::All);
        let held = tokio::spawn({
            let p = p.clone();
            async move { p.hold(false).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!held.is_finished());
        p.unpause();
        tokio::time::timeout(Duration::from_secs(5), held)
            .await
            .expect("released")
            .expect("task");
    }
}
