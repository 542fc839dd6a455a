//! The copier: SCAN of the source, each key copied through the stream
//! (DUMP and PTTL there, RESTORE REPLACE or DEL on the cluster, in order
//! with the writes), at most `migration.copy_rate` keys a second. It
//! pauses while a side is unreachable and goes on where it stopped.
//!
//! The cursor is written to `migration.cursor_file` after each batch the
//! stream has finished. A proxy that stops cleanly (its stream drained)
//! marks the file `clean` and the next one resumes there; after a crash
//! the writes in flight may not have reached the cluster, so the copy
//! starts over from the beginning (RESTORE REPLACE makes that safe).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Migration;
use crate::backend::dedicated::Dedicated;
use crate::config::Phase;
use crate::error::ProxyError;
use crate::resp::{encode, is_error, Value};

/// A persisted cursor: where, whether the proxy that wrote it stopped
/// cleanly (or finished), and the source's run id (a cursor means nothing
/// to a restarted source: its hash seed changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The SCAN cursor.
    pub cursor: u64,
    /// `running`, `clean` or `done`.
    pub state: &'static str,
    /// The source's `run_id`.
    pub run_id: String,
}

/// Reads a cursor file (`CURSOR STATE RUN_ID`).
pub fn read_cursor(path: &std::path::Path) -> Option<Saved> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut words = text.split_whitespace();
    let cursor = words.next()?.parse().ok()?;
    let state = match words.next()? {
        "clean" => "clean",
        "done" => "done",
        "done-clean" => "done-clean",
        _ => "running",
    };
    let run_id = words.next().unwrap_or("").to_string();
    Some(Saved {
        cursor,
        state,
        run_id,
    })
}

/// Writes a cursor file atomically (a temporary file renamed).
pub fn write_cursor(path: &std::path::Path, saved: &Saved) {
    let tmp = path.with_extension("tmp");
    let text = format!("{} {} {}\n", saved.cursor, saved.state, saved.run_id);
    if let Err(e) = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, path)) {
        warn!(path = %path.display(), error = %e, "migration: cannot write the cursor file");
    }
}

/// Where a new copy starts: a clean stop's cursor (with the source's run
/// id then), or the beginning.
fn starting_cursor(m: &Migration) -> (u64, bool, Option<String>) {
    let Some(path) = m.config().cursor_file.clone() else {
        return (0, false, None);
    };
    match read_cursor(&path) {
        Some(s) if s.state == "done-clean" => (s.cursor, true, Some(s.run_id)),
        Some(s) if s.state == "clean" => {
            info!(
                cursor = s.cursor,
                "migration: copy resumes at the saved cursor"
            );
            (s.cursor, false, Some(s.run_id))
        }
        Some(s) => {
            warn!(
                cursor = s.cursor,
                "migration: the last proxy did not stop cleanly; the copy starts over"
            );
            (0, false, None)
        }
        None => (0, false, None),
    }
}

/// The source's `run_id` (INFO server).
async fn run_id(c: &mut Dedicated) -> Result<String, ProxyError> {
    let info = c.call(&encode::command(&["INFO", "server"])).await?;
    let text = String::from_utf8_lossy(&info);
    text.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(|id| id.trim().to_string())
        .ok_or_else(|| ProxyError::BackendProtocol("INFO server has no run_id".into()))
}

fn set_state(m: &Migration, state: &str, reason: Option<String>, cursor: u64) {
    let mut c = m.stats.copier.lock().expect("stats lock");
    c.state = state.to_string();
    c.reason = reason;
    c.cursor = cursor;
    if state == "done" && c.took_secs.is_none() {
        c.took_secs = c.started.map(|s| s.elapsed().as_secs_f64());
    }
}

/// Runs the copy until it is through or `stop`. `new_stream`: the copy's
/// stream was just started (after a restart or from another phase), so
/// the cursor of an earlier stream is not trusted.
pub async fn run(m: Arc<Migration>, stop: CancellationToken, new_stream: bool) {
    let mut cursor = {
        let c = m.stats.copier.lock().expect("stats lock");
        match c.state.as_str() {
            "done" if !new_stream => return,
            "running" | "paused" | "stopped" if !new_stream => c.cursor,
            _ => u64::MAX,
        }
    };
    let mut source_id = m.stats.copier.lock().expect("stats lock").run_id.clone();
    if cursor == u64::MAX {
        let done;
        (cursor, done, source_id) = starting_cursor(&m);
        if done {
            set_state(&m, "done", None, cursor);
            return;
        }
        let mut c = m.stats.copier.lock().expect("stats lock");
        c.started = Some(Instant::now());
        c.took_secs = None;
        m.stats.keys_scanned.store(0, Ordering::Relaxed);
    }
    set_state(&m, "running", None, cursor);
    let mut conn: Option<Dedicated> = None;
    let mut pause = Duration::from_millis(100);
    let mut counted = false;
    let window_start = Instant::now();
    let mut sent_in_window: u64 = 0;
    loop {
        if stop.is_cancelled() || m.shutdown.is_cancelled() {
            return;
        }
        let Some(stream) = m.copy_stream() else {
            return;
        };
        let config = m.config();
        let scanned = async {
            let mut c = match conn.take() {
                Some(c) => c,
                None => {
                    let mut c = m.source_pool.get(m.source_addr(), false).await?;
                    let id = run_id(&mut c).await?;
                    if source_id.as_ref().is_some_and(|prev| *prev != id) {
                        // A cursor means nothing to a restarted source
                        // (its hash seed changed): start over; the copies
                        // already made are made again (RESTORE REPLACE).
                        warn!("migration: the source restarted; the copy starts over");
                        cursor = 0;
                        m.stats.keys_scanned.store(0, Ordering::Relaxed);
                        m.stats.restarts.fetch_add(1, Ordering::Relaxed);
                    }
                    m.stats.copier.lock().expect("stats lock").run_id = Some(id.clone());
                    source_id = Some(id);
                    c
                }
            };
            if !counted {
                let n = c.call(&encode::command(&["DBSIZE"])).await?;
                if let Some(n) = Value::parse(&n).ok().and_then(|v| v.as_int()) {
                    m.stats.keys_total.store(n.max(0) as u64, Ordering::Relaxed);
                    counted = true;
                }
            }
            let batch = config.copy_batch.to_string();
            let reply = c
                .call(&encode::command(&[
                    "SCAN",
                    &cursor.to_string(),
                    "COUNT",
                    &batch,
                ]))
                .await?;
            conn = Some(c);
            parse_scan(&reply)
        };
        let scanned = tokio::select! {
            _ = stop.cancelled() => return,
            r = scanned => r,
        };
        let (next, keys) = match scanned {
            Ok(r) => r,
            Err(e) => {
                conn = None;
                set_state(&m, "paused", Some(format!("source: {e}")), cursor);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let errors = m.stats.copy_errors.load(Ordering::Relaxed);
        let n = keys.len() as u64;
        for key in keys {
            if stream.copy(key).await.is_err() {
                return;
            }
        }
        if stream.fence().await.is_err() {
            return;
        }
        m.stats.keys_scanned.fetch_add(n, Ordering::Relaxed);
        if m.stats.copy_errors.load(Ordering::Relaxed) > errors {
            // A side failed mid-batch: its keys are marked and repaired;
            // wait until copies go through again before going on.
            set_state(
                &m,
                "paused",
                Some("copies are failing (a side is unreachable)".into()),
                next,
            );
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(2));
                let e = m.stats.copy_errors.load(Ordering::Relaxed);
                let _ = stream.fence().await;
                if stream.dirty.is_empty() && m.stats.copy_errors.load(Ordering::Relaxed) == e {
                    break;
                }
            }
        }
        pause = Duration::from_millis(100);
        cursor = next;
        let done = cursor == 0;
        if let Some(path) = &config.cursor_file {
            let state = if done { "done" } else { "running" };
            let run_id = source_id.clone().unwrap_or_default();
            write_cursor(
                path,
                &Saved {
                    cursor,
                    state,
                    run_id,
                },
            );
        }
        if done {
            set_state(&m, "done", None, cursor);
            info!("migration: copy done");
            return;
        }
        set_state(&m, "running", None, cursor);
        // The rate limit, over the copy so far.
        sent_in_window += n;
        if config.copy_rate > 0 {
            let due = Duration::from_secs_f64(sent_in_window as f64 / config.copy_rate as f64);
            let ahead = due.saturating_sub(window_start.elapsed());
            if !ahead.is_zero() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(ahead) => {}
                }
            }
        }
    }
}

/// Marks the cursor file clean after the stream drained (a graceful stop):
/// `clean` (resume at the cursor) or `done-clean` (the copy is through).
/// Written as the copy goes, it says `running` or `done`: after a crash
/// the mirrors in flight may be lost, and the next copy starts over.
pub fn mark_clean(m: &Migration) {
    let Some(path) = m.config().cursor_file.clone() else {
        return;
    };
    if !matches!(m.state().phase, Phase::Copy | Phase::Verify) {
        return;
    }
    let c = m.stats.copier.lock().expect("stats lock");
    let state = match c.state.as_str() {
        "running" | "paused" => "clean",
        "done" => "done-clean",
        _ => return,
    };
    write_cursor(
        &path,
        &Saved {
            cursor: c.cursor,
            state,
            run_id: c.run_id.clone().unwrap_or_default(),
        },
    );
}

/// SCAN's reply: the next cursor and the keys.
pub fn parse_scan(reply: &Bytes) -> Result<(u64, Vec<Bytes>), ProxyError> {
    if is_error(reply) {
        return Err(ProxyError::BackendProtocol(
            String::from_utf8_lossy(reply).trim_end().to_string(),
        ));
    }
    let bad = || ProxyError::BackendProtocol("unexpected SCAN reply".into());
    let v = Value::parse(reply).map_err(|_| bad())?;
    let parts = v.as_array().ok_or_else(bad)?;
    let cursor = parts
        .first()
        .and_then(|c| c.as_str())
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let keys = parts
        .get(1)
        .and_then(|k| k.as_array())
        .ok_or_else(bad)?
        .iter()
        .filter_map(|k| match k {
            Value::Bulk(b) => Some(b.clone()),
            _ => None,
        })
        .collect();
    Ok((cursor, keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_replies_and_cursor_files() {
        let reply = Bytes::from_static(b"*2\r\n$2\r\n17\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n");
        let (c, keys) = parse_scan(&reply).unwrap();
        assert_eq!(c, 17);
        assert_eq!(
            keys,
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
        );
        assert!(parse_scan(&Bytes::from_static(b"-ERR x\r\n")).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        assert_eq!(read_cursor(&path), None);
        let saved = Saved {
            cursor: 42,
            state: "clean",
            run_id: "abc".into(),
        };
        write_cursor(&path, &saved);
        assert_eq!(read_cursor(&path), Some(saved));
    }
}
