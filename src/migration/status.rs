//! What the migration reports: counters the stream and the copier keep,
//! the verifier's last result, and their rendering for `/migration`,
//! `slotproxy migrate status` and the metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Counters of the migration (monotonic unless said otherwise).
#[derive(Debug, Default)]
pub struct Stats {
    /// Keys restored on the secondary by a copy.
    pub keys_copied: AtomicU64,
    /// Keys the copier found gone at the source (deleted on the secondary).
    pub keys_skipped: AtomicU64,
    /// Copies made again for keys marked dirty (re-copies and repairs).
    pub repairs: AtomicU64,
    /// Keys marked for re-copy by a write that is copied, not replayed.
    pub recopies: AtomicU64,
    /// Bytes of DUMP payloads restored.
    pub bytes: AtomicU64,
    /// Keys the copier's SCAN returned.
    pub keys_scanned: AtomicU64,
    /// Keys at the source when the copy started (DBSIZE), for the ETA.
    pub keys_total: AtomicU64,
    /// Writes replayed on the secondary and accepted.
    pub mirrored: AtomicU64,
    /// Replays the secondary refused or lost (their keys are re-copied).
    pub mirror_errors: AtomicU64,
    /// Copies that failed (the key stays marked and is copied again).
    pub copy_errors: AtomicU64,
    /// Writes whose outcome at the authoritative side is unknown (a lost
    /// connection): their keys are re-copied.
    pub unknown_outcomes: AtomicU64,
    /// Work items sent, and checked, by the stream (the difference is
    /// what is in flight).
    pub submitted: AtomicU64,
    /// See `submitted`.
    pub checked: AtomicU64,
    /// The last mirror's delay from the client's request to the
    /// secondary's reply, in microseconds.
    pub lag_micros: AtomicU64,
    /// Keys left unrepaired at the last change of direction.
    pub unrepaired_at_switch: AtomicU64,
    /// Times the copy started over because the source restarted.
    pub restarts: AtomicU64,
    /// The copier's state.
    pub copier: Mutex<CopierState>,
    /// The verifier's state and last result.
    pub verifier: Mutex<VerifierState>,
}

/// What the copier is doing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopierState {
    /// `idle`, `running`, `paused` (with the reason), `stopped` (the phase
    /// left copy and verify), `done`.
    pub state: String,
    /// Why it is paused.
    pub reason: Option<String>,
    /// The SCAN cursor reached.
    pub cursor: u64,
    /// When the copy started (seconds since the proxy started it).
    #[serde(skip)]
    pub started: Option<Instant>,
    /// When it finished, seconds after it started.
    pub took_secs: Option<f64>,
    /// The source's `run_id` the cursor belongs to.
    pub run_id: Option<String>,
}

/// The verifier's state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifierState {
    /// `idle`, `waiting for the copy`, `running`, `done`, `failed`.
    pub state: String,
    /// The last complete comparison.
    pub last: Option<VerifyReport>,
}

/// One comparison of the source and the cluster.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct VerifyReport {
    /// Keys per type at the source.
    pub source_counts: std::collections::BTreeMap<String, u64>,
    /// Keys per type in the cluster.
    pub cluster_counts: std::collections::BTreeMap<String, u64>,
    /// Keys compared by value.
    pub compared: u64,
    /// Keys that differ (after a second look).
    pub differing: u64,
    /// Some of them, with what differs.
    pub examples: Vec<String>,
    /// How long it took, in seconds.
    pub took_secs: f64,
    /// Whether the sides match (counts and every compared key).
    pub equal: bool,
}

impl Stats {
    /// A copy's success.
    pub fn copied(&self, bytes: usize, restored: bool) {
        if restored {
            self.keys_copied.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        } else {
            self.keys_skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a mirror's delay.
    pub fn note_lag(&self, d: Duration) {
        self.lag_micros.store(
            d.as_micros().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }
}

/// The status as `/migration` answers it (JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The phase.
    pub phase: String,
    /// The source's address.
    pub source: String,
    /// Which side serves requests.
    pub authoritative: String,
    /// Whether writes are mirrored to the other side now.
    pub mirroring: bool,
    /// Seconds left of the `target` rollback window.
    pub mirror_left_secs: Option<u64>,
    /// Keys restored by copies.
    pub keys_copied: u64,
    /// Keys found gone when copied.
    pub keys_skipped: u64,
    /// Keys copied again (re-copies, repairs).
    pub keys_rewritten: u64,
    /// Keys the copier's SCAN returned.
    pub keys_scanned: u64,
    /// DBSIZE of the source at the start of the copy.
    pub keys_total: u64,
    /// Bytes restored.
    pub bytes: u64,
    /// Keys per second since the copy started.
    pub rate_keys_per_sec: f64,
    /// Bytes per second since the copy started.
    pub rate_bytes_per_sec: f64,
    /// Seconds until the copier's SCAN is through, at this rate.
    pub eta_secs: Option<f64>,
    /// Fraction of the keys scanned (0 to 1).
    pub progress: f64,
    /// Writes mirrored.
    pub mirrored: u64,
    /// Mirrors refused or lost (keys re-copied).
    pub mirror_errors: u64,
    /// Copies that failed (keys kept for another copy).
    pub copy_errors: u64,
    /// Writes with an unknown outcome at the authoritative side.
    pub unknown_outcomes: u64,
    /// Keys waiting to be copied again.
    pub dirty_keys: u64,
    /// Requests and copies in flight in the stream.
    pub in_flight: u64,
    /// The last mirror's delay, in milliseconds.
    pub lag_ms: f64,
    /// Keys left unrepaired at the last change of direction.
    pub unrepaired_at_switch: u64,
    /// Times the copy started over because the source restarted.
    pub copy_restarts: u64,
    /// The copier.
    pub copier: CopierState,
    /// The verifier.
    pub verifier: VerifierState,
}

impl Stats {
    /// The status, given what the controller knows.
    pub fn status(
        &self,
        phase: &str,
        source: &str,
        authoritative: &str,
        mirroring: bool,
        mirror_left: Option<Duration>,
        dirty: usize,
    ) -> Status {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let copier = self.copier.lock().expect("stats lock").clone();
        let verifier = self.verifier.lock().expect("stats lock").clone();
        let secs = match (copier.took_secs, copier.started) {
            (Some(t), _) => t,
            (None, Some(s)) => s.elapsed().as_secs_f64(),
            _ => 0.0,
        };
        let (scanned, total) = (get(&self.keys_scanned), get(&self.keys_total));
        let keys = get(&self.keys_copied) + get(&self.keys_skipped);
        let rate = if secs > 0.0 { keys as f64 / secs } else { 0.0 };
        let progress = match (copier.state.as_str(), total) {
            ("done", _) => 1.0,
            (_, 0) => 0.0,
            _ => (scanned as f64 / total as f64).min(1.0),
        };
        let eta = (copier.state == "running" && rate > 0.0 && total > 0)
            .then(|| total.saturating_sub(scanned) as f64 / rate);
        Status {
            phase: phase.to_string(),
            source: source.to_string(),
            authoritative: authoritative.to_string(),
            mirroring,
            mirror_left_secs: mirror_left.map(|d| d.as_secs()),
            keys_copied: get(&self.keys_copied),
            keys_skipped: get(&self.keys_skipped),
            keys_rewritten: get(&self.repairs),
            keys_scanned: scanned,
            keys_total: total,
            bytes: get(&self.bytes),
            rate_keys_per_sec: rate,
            rate_bytes_per_sec: if secs > 0.0 {
                get(&self.bytes) as f64 / secs
            } else {
                0.0
            },
            eta_secs: eta,
            progress,
            mirrored: get(&self.mirrored),
            mirror_errors: get(&self.mirror_errors),
            copy_errors: get(&self.copy_errors),
            unknown_outcomes: get(&self.unknown_outcomes),
            dirty_keys: dirty as u64,
            in_flight: get(&self.submitted).saturating_sub(get(&self.checked)),
            lag_ms: get(&self.lag_micros) as f64 / 1000.0,
            unrepaired_at_switch: get(&self.unrepaired_at_switch),
            copy_restarts: get(&self.restarts),
            copier,
            verifier,
        }
    }
}

/// A terminal rendering of a `/migration` JSON document; `bar`: draw the
/// progress bar (a terminal).
pub fn render(s: &serde_json::Value, bar: bool) -> String {
    let f = |k: &str| s.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0);
    let t = |k: &str| s.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
    let mut out = String::new();
    out.push_str(&format!(
        "phase: {}   authoritative: {}   source: {}\n",
        t("phase"),
        t("authoritative"),
        t("source")
    ));
    let copier = s.get("copier").cloned().unwrap_or_default();
    let state = copier
        .get("state")
        .and_then(|v| v.as_str())
        .unwrap_or("idle");
    let progress = f("progress");
    if bar {
        let width = 40;
        let full = ((progress * width as f64).round() as usize).min(width);
        out.push_str(&format!(
            "copy: [{}{}] {:5.1}%  {}\n",
            "#".repeat(full),
            "-".repeat(width - full),
            progress * 100.0,
            state
        ));
    } else {
        out.push_str(&format!("copy: {:.1}% {}\n", progress * 100.0, state));
    }
    if let Some(reason) = copier.get("reason").and_then(|v| v.as_str()) {
        out.push_str(&format!("  paused: {reason}\n"));
    }
    let eta = match s.get("eta_secs").and_then(|v| v.as_f64()) {
        Some(e) => format!(
            "{}",
            humantime::format_duration(Duration::from_secs(e as u64))
        ),
        None => "-".into(),
    };
    out.push_str(&format!(
        "keys: {} copied, {} skipped, {} rewritten, {}/{} scanned   bytes: {}\n",
        f("keys_copied"),
        f("keys_skipped"),
        f("keys_rewritten"),
        f("keys_scanned"),
        f("keys_total"),
        f("bytes")
    ));
    out.push_str(&format!(
        "rate: {:.0} keys/s, {:.2} MB/s   ETA: {eta}\n",
        f("rate_keys_per_sec"),
        f("rate_bytes_per_sec") / 1e6
    ));
    out.push_str(&format!(
        "dual write: {} mirrored, {} errors, {} unknown outcomes, {} keys to re-copy, {} in flight, lag {:.1} ms\n",
        f("mirrored"),
        f("mirror_errors"),
        f("unknown_outcomes"),
        f("dirty_keys"),
        f("in_flight"),
        f("lag_ms")
    ));
    let verifier = s.get("verifier").cloned().unwrap_or_default();
    let vstate = verifier
        .get("state")
        .and_then(|v| v.as_str())
        .unwrap_or("idle");
    match verifier.get("last").filter(|v| !v.is_null()) {
        Some(last) => out.push_str(&format!(
            "verifier: {vstate}; last: {} compared, {} differing, equal: {}\n  source {}\n  cluster {}\n",
            last.get("compared").unwrap_or(&serde_json::Value::Null),
            last.get("differing").unwrap_or(&serde_json::Value::Null),
            last.get("equal").unwrap_or(&serde_json::Value::Null),
            last.get("source_counts").unwrap_or(&serde_json::Value::Null),
            last.get("cluster_counts").unwrap_or(&serde_json::Value::Null),
        )),
        None => out.push_str(&format!("verifier: {vstate}\n")),
    }
    if let Some(ex) = verifier
        .get("last")
        .and_then(|l| l.get("examples"))
        .and_then(|e| e.as_array())
    {
        for e in ex {
            out.push_str(&format!("  differs: {}\n", e.as_str().unwrap_or("?")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_renders_with_a_bar_and_an_eta() {
        let stats = Stats::default();
        stats.keys_total.store(100, Ordering::Relaxed);
        stats.keys_scanned.store(50, Ordering::Relaxed);
        stats.copied(10, true);
        {
            let mut c = stats.copier.lock().unwrap();
            c.state = "running".into();
            c.started = Some(Instant::now() - Duration::from_secs(1));
        }
        let s = stats.status("copy", "h:1", "source", true, None, 0);
        assert!((s.progress - 0.5).abs() < 1e-9);
        assert!(s.eta_secs.is_some());
        let text = render(&serde_json::to_value(&s).unwrap(), true);
        assert!(text.contains("phase: copy"), "{text}");
        assert!(text.contains("#####"), "{text}");
        assert!(text.contains("1 copied"), "{text}");
    }
}
