//! The verifier (phase `verify`): once the copy is through, counts the
//! keys per type on both sides and compares every key (or
//! `migration.verify_sample` of them) by type: GET, HGETALL, LRANGE,
//! SMEMBERS, ZRANGE WITHSCORES, XRANGE (DUMP payloads may differ between
//! encodings of one value), and the TTL within a second. A key that
//! differs is looked at again after the stream has caught up (a write in
//! flight is not a difference); what still differs is reported, and
//! marked for a copy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::copier::parse_scan;
use super::status::VerifyReport;
use super::Migration;
use crate::backend::dedicated::{Dedicated, DedicatedPool};
use crate::cluster::slot::key_slot;
use crate::error::ProxyError;
use crate::resp::{encode, Value};

/// Keys per pipelined round trip.
const BATCH: usize = 200;
/// Differences listed in the report.
const EXAMPLES: usize = 20;

fn set_state(m: &Migration, state: &str) {
    m.stats.verifier.lock().expect("stats lock").state = state.to_string();
}

/// Runs one verification once the copy is through (until `stop`).
pub async fn run(m: Arc<Migration>, stop: CancellationToken) {
    set_state(&m, "waiting for the copy");
    loop {
        let done = m.stats.copier.lock().expect("stats lock").state == "done";
        if done {
            break;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    set_state(&m, "running");
    loop {
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = verify(&m) => r,
        };
        match result {
            Ok(report) => {
                info!(
                    compared = report.compared,
                    differing = report.differing,
                    equal = report.equal,
                    "migration: verification done"
                );
                let mut v = m.stats.verifier.lock().expect("stats lock");
                v.state = "done".into();
                v.last = Some(report);
                return;
            }
            Err(e) => {
                warn!(error = %e, "migration: verification failed; trying again");
                set_state(&m, &format!("failed ({e}); trying again"));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// A key's type, TTL and value, normalised for comparison.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    kind: String,
    pttl: i64,
    value: Value,
}

impl Snapshot {
    /// What differs, if anything (TTLs within a second match).
    fn differs(&self, other: &Snapshot) -> Option<String> {
        if self.kind != other.kind {
            return Some(format!("type {} vs {}", self.kind, other.kind));
        }
        if self.value != other.value {
            return Some("value".into());
        }
        let ttl_ok = match (self.pttl, other.pttl) {
            (a, b) if a < 0 || b < 0 => a == b,
            (a, b) => (a - b).abs() <= 1000,
        };
        (!ttl_ok).then(|| format!("TTL {} ms vs {} ms", self.pttl, other.pttl))
    }
}

/// Sends `frames` on `conn` and reads as many replies.
async fn pipeline(conn: &mut Dedicated, frames: &[Bytes]) -> Result<Vec<Bytes>, ProxyError> {
    let mut all = BytesMut::new();
    for f in frames {
        all.extend_from_slice(f);
    }
    conn.write(&all).await?;
    let mut out = Vec::with_capacity(frames.len());
    for _ in frames {
        out.push(conn.read().await?);
    }
    Ok(out)
}

/// The value command for a type.
fn read_command(kind: &str, key: &[u8]) -> Bytes {
    let args: Vec<&[u8]> = match kind {
        "string" => vec![b"GET", key],
        "hash" => vec![b"HGETALL", key],
        "list" => vec![b"LRANGE", key, b"0", b"-1"],
        "set" => vec![b"SMEMBERS", key],
        "zset" => vec![b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"],
        "stream" => vec![b"XRANGE", key, b"-", b"+"],
        _ => vec![b"DUMP", key],
    };
    encode::command(&args)
}

/// A value in a form where equal contents compare equal (hashes and sets
/// are unordered).
fn normalise(kind: &str, v: Value) -> Value {
    match (kind, v) {
        ("set", Value::Array(mut items)) => {
            items.sort_by(|a, b| a.as_bytes().cmp(&b.as_bytes()));
            Value::Array(items)
        }
        ("hash", Value::Array(items)) => {
            let mut pairs: Vec<Vec<Value>> = items.chunks(2).map(|c| c.to_vec()).collect();
            pairs.sort_by(|a, b| a[0].as_bytes().cmp(&b[0].as_bytes()));
            Value::Array(pairs.into_iter().flatten().collect())
        }
        (_, v) => v,
    }
}

/// Snapshots of `keys` on one connection (two pipelined round trips).
async fn snapshots(conn: &mut Dedicated, keys: &[Bytes]) -> Result<Vec<Snapshot>, ProxyError> {
    let mut first = Vec::with_capacity(keys.len() * 2);
    for k in keys {
        first.push(encode::command(&[&b"TYPE"[..], k]));
        first.push(encode::command(&[&b"PTTL"[..], k]));
    }
    let replies = pipeline(conn, &first).await?;
    let mut kinds = Vec::with_capacity(keys.len());
    for pair in replies.chunks(2) {
        let kind = Value::parse(&pair[0])
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "?".into());
        let pttl = Value::parse(&pair[1])
            .ok()
            .and_then(|v| v.as_int())
            .unwrap_or(-3);
        kinds.push((kind, pttl));
    }
    let reads: Vec<Bytes> = keys
        .iter()
        .zip(&kinds)
        .map(|(k, (kind, _))| read_command(kind, k))
        .collect();
    let values = pipeline(conn, &reads).await?;
    Ok(kinds
        .into_iter()
        .zip(values)
        .map(|((kind, pttl), v)| {
            let value = Value::parse(&v).unwrap_or(Value::Null);
            Snapshot {
                value: normalise(&kind, value),
                kind,
                pttl,
            }
        })
        .collect())
}

/// Keys per type of everything `addr` holds (SCAN, then TYPE pipelined);
/// up to `keep` keys are kept (`u64::MAX`: all).
async fn census(
    pool: &DedicatedPool,
    addr: &str,
    keep: u64,
    counts: &mut BTreeMap<String, u64>,
    kept: &mut Vec<Bytes>,
) -> Result<(), ProxyError> {
    let mut conn = pool.get(addr, false).await?;
    let mut cursor = 0u64;
    loop {
        let reply = conn
            .call(&encode::command(&[
                "SCAN",
                &cursor.to_string(),
                "COUNT",
                &BATCH.to_string(),
            ]))
            .await?;
        let (next, keys) = parse_scan(&reply)?;
        let types: Vec<Bytes> = keys
            .iter()
            .map(|k| encode::command(&[&b"TYPE"[..], k]))
            .collect();
        for (k, t) in keys.iter().zip(pipeline(&mut conn, &types).await?) {
            let kind = Value::parse(&t)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "?".into());
            if kind != "none" {
                *counts.entry(kind).or_default() += 1;
                if (kept.len() as u64) < keep {
                    kept.push(k.clone());
                }
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    pool.put(conn);
    Ok(())
}

/// Snapshots of `keys` in the cluster, each from its slot's master.
async fn cluster_snapshots(m: &Migration, keys: &[Bytes]) -> Result<Vec<Snapshot>, ProxyError> {
    let table = m.retrier.table();
    let mut by_node: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        let node = table
            .master(key_slot(k))
            .ok_or(ProxyError::ClusterDown("Hash slot not served"))?;
        by_node.entry(node.addr().to_string()).or_default().push(i);
    }
    drop(table);
    let mut out: Vec<Option<Snapshot>> = vec![None; keys.len()];
    for (addr, idx) in by_node {
        let mut conn = m.cluster_pool.get(&addr, false).await?;
        let ks: Vec<Bytes> = idx.iter().map(|&i| keys[i].clone()).collect();
        for (i, s) in idx.into_iter().zip(snapshots(&mut conn, &ks).await?) {
            out[i] = Some(s);
        }
        m.cluster_pool.put(conn);
    }
    Ok(out.into_iter().map(|s| s.expect("every key")).collect())
}

/// One verification.
async fn verify(m: &Arc<Migration>) -> Result<VerifyReport, ProxyError> {
    let started = Instant::now();
    let sample = match m.config().verify_sample {
        0 => u64::MAX,
        n => n,
    };
    let gone = || ProxyError::Internal("the migration left the verify phase".into());
    m.copy_stream()
        .ok_or_else(gone)?
        .fence()
        .await
        .map_err(|_| gone())?;
    let mut report = VerifyReport::default();
    let mut keys = Vec::new();
    census(
        &m.source_pool,
        m.source_addr(),
        sample,
        &mut report.source_counts,
        &mut keys,
    )
    .await?;
    let masters: Vec<String> = m
        .retrier
        .table()
        .shards()
        .iter()
        .map(|s| s.master.addr().to_string())
        .collect();
    for addr in masters {
        census(
            &m.cluster_pool,
            &addr,
            0,
            &mut report.cluster_counts,
            &mut Vec::new(),
        )
        .await?;
    }
    let mut suspects = Vec::new();
    for chunk in keys.chunks(BATCH) {
        let mut conn = m.source_pool.get(m.source_addr(), false).await?;
        let source = snapshots(&mut conn, chunk).await?;
        m.source_pool.put(conn);
        let cluster = cluster_snapshots(m, chunk).await?;
        for (i, (a, b)) in source.iter().zip(&cluster).enumerate() {
            if a.differs(b).is_some() {
                suspects.push(chunk[i].clone());
            }
        }
        report.compared += chunk.len() as u64;
    }
    // A second look once the writes in flight are mirrored.
    if !suspects.is_empty() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        m.copy_stream()
            .ok_or_else(gone)?
            .fence()
            .await
            .map_err(|_| gone())?;
    }
    let mut differing = Vec::new();
    for chunk in suspects.chunks(BATCH) {
        let mut conn = m.source_pool.get(m.source_addr(), false).await?;
        let source = snapshots(&mut conn, chunk).await?;
        m.source_pool.put(conn);
        let cluster = cluster_snapshots(m, chunk).await?;
        for (i, (a, b)) in source.iter().zip(&cluster).enumerate() {
            if let Some(what) = a.differs(b) {
                report.differing += 1;
                if report.examples.len() < EXAMPLES {
                    report
                        .examples
                        .push(format!("{}: {what}", String::from_utf8_lossy(&chunk[i])));
                }
                differing.push(chunk[i].clone());
            }
        }
    }
    if let Some(stream) = m.copy_stream() {
        stream.dirty.mark_all(differing);
    }
    report.took_secs = started.elapsed().as_secs_f64();
    report.equal = report.differing == 0 && report.source_counts == report.cluster_counts;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(kind: &str, pttl: i64, v: Value) -> Snapshot {
        Snapshot {
            kind: kind.into(),
            pttl,
            value: normalise(kind, v),
        }
    }

    #[test]
    fn comparison_is_by_type_and_ttl_within_a_second() {
        let b = |s: &'static str| Value::Bulk(Bytes::from_static(s.as_bytes()));
        let h1 = snap(
            "hash",
            -1,
            Value::Array(vec![b("f"), b("1"), b("g"), b("2")]),
        );
        let h2 = snap(
            "hash",
            -1,
            Value::Array(vec![b("g"), b("2"), b("f"), b("1")]),
        );
        assert_eq!(h1.differs(&h2), None);
        let s1 = snap("string", 5000, b("x"));
        assert_eq!(s1.differs(&snap("string", 4200, b("x"))), None);
        assert!(s1
            .differs(&snap("string", 3000, b("x")))
            .unwrap()
            .contains("TTL"));
        assert!(s1.differs(&snap("string", -1, b("x"))).is_some());
        assert_eq!(
            s1.differs(&snap("list", 5000, b("x"))).unwrap(),
            "type string vs list"
        );
    }
}
