//! The ordered dual-write stream: every request of a migrating proxy that
//! the authoritative side serves goes through one connection to it (per
//! node, for the cluster), so the order the replies come back in is the
//! order the side executed them. One task takes the replies in that order,
//! hands each to its client, and applies the writes to the secondary side
//! in the same order on one connection (per node); a second task checks the
//! secondary's replies. Copies of keys (DUMP and PTTL on the authoritative
//! side, RESTORE or DEL on the secondary) travel in the same stream, so a
//! copy and a write to its key can never overtake each other.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::dirty::Dirty;
use super::status::Stats;
use crate::backend::{recv_batch, recv_reply, BatchRx, Lane, Node, ReplyResult, ReplyRx};
use crate::cluster::retry::{Attempt, Retrier, Target};
use crate::cluster::slot::key_slot;
use crate::error::ProxyError;
use crate::resp::{encode, is_error, Value};

/// One side of the migration.
#[derive(Clone)]
pub enum Side {
    /// The standalone source, on its one connection (per protocol).
    Source(Arc<Node>),
    /// The cluster: the master of each slot, on its first connection.
    Cluster(Arc<Retrier>),
}

/// Either reply slot a side hands back.
enum Sent {
    One(Result<ReplyRx, ProxyError>),
    Many(Result<BatchRx, ProxyError>, usize),
}

impl Sent {
    /// The last reply (a transaction's EXEC, a copy's PTTL) and all of them.
    async fn outcomes(self) -> Vec<ReplyResult> {
        match self {
            Sent::One(Ok(mut rx)) => vec![recv_reply(&mut rx).await],
            Sent::One(Err(e)) => vec![Err(e)],
            Sent::Many(Ok(mut rx), n) => recv_batch(&mut rx, n).await,
            Sent::Many(Err(e), n) => (0..n).map(|_| Err(e.clone())).collect(),
        }
    }
}

impl Side {
    /// Sends `frames` (one request each) as one job on the side's ordered
    /// connection: the source's, or that of the master of `slot` (any
    /// master when keyless).
    async fn send(&self, frames: Vec<Bytes>, slot: Option<u16>, resp3: bool) -> Sent {
        let lane = Lane { index: 0, resp3 };
        let node = match self {
            Side::Source(node) => node.clone(),
            Side::Cluster(retrier) => {
                let target = slot.map_or(Target::AnyMaster, Target::Slot);
                match retrier.master_of(&target, lane) {
                    Ok(node) => node,
                    Err(e) => {
                        return match frames.len() {
                            1 => Sent::One(Err(e)),
                            n => Sent::Many(Err(e), n),
                        }
                    }
                }
            }
        };
        match frames.len() {
            1 => Sent::One(
                node.send(lane, frames.into_iter().next().expect("one"))
                    .await,
            ),
            n => Sent::Many(node.send_batch(lane, frames).await, n),
        }
    }

    /// The side's name, for logs and status.
    pub fn name(&self) -> &'static str {
        match self {
            Side::Source(_) => "source",
            Side::Cluster(_) => "cluster",
        }
    }
}

/// What the secondary side gets of a request the authoritative side served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing: it reads (or there is no secondary, phase `source`).
    Read,
    /// The same request, once the authoritative side accepted it
    /// (deterministic writes to keys of one slot).
    Replay {
        /// The slot of its keys (none: keyless).
        slot: Option<u16>,
        /// Its keys, marked for re-copy if the replay fails.
        keys: Vec<Bytes>,
    },
    /// A copy of each key from the authoritative side, after it ran
    /// (non-deterministic writes, writes over several slots, scripts,
    /// transactions, anything not known to replay exactly).
    Recopy(Vec<Bytes>),
}

/// One unit of work in the stream.
enum Work {
    Client {
        frames: Vec<Bytes>,
        slot: Option<u16>,
        resp3: bool,
        effect: Effect,
        reply: oneshot::Sender<ReplyResult>,
    },
    Copy {
        key: Bytes,
    },
    Fence(oneshot::Sender<()>),
}

/// Work sent to the authoritative side, in its order.
struct InFlight {
    sent: Option<Sent>,
    work: Work,
    at: Instant,
}

/// What the checker awaits from the secondary side, in order.
enum Check {
    Replay {
        sent: Sent,
        keys: Vec<Bytes>,
        at: Instant,
    },
    Copy {
        sent: Sent,
        key: Bytes,
        bytes: usize,
        restored: bool,
        at: Instant,
    },
    Fence(oneshot::Sender<()>),
}

/// The stream is closed (the phase changed): go through the new one.
#[derive(Debug)]
pub struct Closed;

/// One direction of the migration's ordered traffic (see the module doc).
pub struct Stream {
    /// Where requests are served.
    pub authoritative: Side,
    /// Where writes are mirrored (none in phase `source`).
    pub secondary: Option<Side>,
    submit: Arc<Mutex<mpsc::UnboundedSender<InFlight>>>,
    closed: AtomicBool,
    /// Keys to copy again (a failed or unknown mirror, a re-copy).
    pub dirty: Arc<Dirty>,
    stats: Arc<Stats>,
    /// Stops the repair loop.
    pub stop: CancellationToken,
    /// Held by the repair loop while it copies, by a drain throughout.
    repairing: Mutex<()>,
    /// Requests served outside the stream (see [`Outside`]) still running.
    outside: AtomicUsize,
    outside_done: Notify,
    /// Drained: keys marked now are no longer copied.
    drained: AtomicBool,
}

/// A request served outside the stream (a blocking command, a fan-out or
/// a transaction on the cluster's own path) under this stream: a drain
/// waits for it, and its keys are copied by this stream.
pub struct Outside(Arc<Stream>);

impl Outside {
    /// The request is done and wrote `keys`: copy them to the other side.
    pub fn written(self, keys: Vec<Bytes>) {
        let s = &self.0;
        if keys.is_empty() || !s.mirrors() {
            return;
        }
        if s.drained.load(Ordering::Acquire) {
            // Still blocked when the direction changed (past the drain's
            // limit): reported, not copied.
            warn!(
                keys = keys.len(),
                "migration: a request outside the stream ended after the change of direction"
            );
            s.stats
                .unrepaired_at_switch
                .fetch_add(keys.len() as u64, Ordering::Relaxed);
            return;
        }
        s.stats
            .recopies
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        s.dirty.mark_all(keys);
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        if self.0.outside.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.outside_done.notify_waiters();
        }
    }
}

impl Stream {
    /// Starts a stream and its tasks. The caller holds the returned guard
    /// until the previous stream is drained: nothing is sent before.
    pub fn start(
        authoritative: Side,
        secondary: Option<Side>,
        stats: Arc<Stats>,
    ) -> (Arc<Stream>, Gate) {
        let (tx, rx) = mpsc::unbounded_channel();
        let submit = Arc::new(Mutex::new(tx));
        let guard = submit.clone().try_lock_owned().expect("new lock");
        let stream = Arc::new(Stream {
            authoritative,
            secondary,
            submit,
            closed: AtomicBool::new(false),
            dirty: Arc::new(Dirty::default()),
            stats,
            stop: CancellationToken::new(),
            repairing: Mutex::new(()),
            outside: AtomicUsize::new(0),
            outside_done: Notify::new(),
            drained: AtomicBool::new(false),
        });
        let (check_tx, check_rx) = mpsc::unbounded_channel();
        let sides = Sides {
            authoritative: stream.authoritative.clone(),
            secondary: stream.secondary.clone(),
            dirty: stream.dirty.clone(),
            stats: stream.stats.clone(),
        };
        tokio::spawn(apply(sides.clone(), rx, check_tx));
        tokio::spawn(check(sides, check_rx));
        tokio::spawn(repair(stream.clone(), stream.stop.clone()));
        (stream, Gate(guard))
    }

    /// Serves a client's request (`frames`: one request, or a transaction's
    /// MULTI ... EXEC) on the authoritative side; its reply (EXEC's for a
    /// transaction) arrives in the returned slot.
    pub async fn call(
        &self,
        frames: Vec<Bytes>,
        slot: Option<u16>,
        resp3: bool,
        effect: Effect,
    ) -> Result<ReplyRx, Closed> {
        let (reply, rx) = oneshot::channel();
        let work = Work::Client {
            frames,
            slot,
            resp3,
            effect,
            reply,
        };
        self.submit(work, false).await?;
        Ok(rx)
    }

    /// Copies `key` from the authoritative side to the secondary, in order
    /// with the writes.
    pub async fn copy(&self, key: Bytes) -> Result<(), Closed> {
        self.submit(Work::Copy { key }, true).await
    }

    /// Resolves once everything sent before it has been served and
    /// mirrored (or marked for re-copy).
    pub async fn fence(&self) -> Result<(), Closed> {
        let (tx, rx) = oneshot::channel();
        self.submit(Work::Fence(tx), true).await?;
        rx.await.map_err(|_| Closed)
    }

    /// Registers a request served outside the stream (see [`Outside`]).
    pub fn outside(self: &Arc<Self>) -> Outside {
        self.outside.fetch_add(1, Ordering::AcqRel);
        Outside(self.clone())
    }

    /// Whether the secondary side is mirrored at all.
    pub fn mirrors(&self) -> bool {
        self.secondary.is_some()
    }

    async fn submit(&self, work: Work, internal: bool) -> Result<(), Closed> {
        let tx = self.submit.lock().await;
        if self.closed.load(Ordering::Acquire) && !internal {
            return Err(Closed);
        }
        let at = Instant::now();
        let sent = match &work {
            Work::Client {
                frames,
                slot,
                resp3,
                ..
            } => Some(self.authoritative.send(frames.clone(), *slot, *resp3).await),
            Work::Copy { key } => {
                let frames = vec![
                    encode::command(&[&b"DUMP"[..], key]),
                    encode::command(&[&b"PTTL"[..], key]),
                ];
                Some(
                    self.authoritative
                        .send(frames, Some(key_slot(key)), false)
                        .await,
                )
            }
            Work::Fence(_) => None,
        };
        if sent.is_some() {
            self.stats.submitted.fetch_add(1, Ordering::Relaxed);
        }
        tx.send(InFlight { sent, work, at }).map_err(|_| Closed)
    }

    /// Closes the stream to clients, then waits until everything sent has
    /// been mirrored and the keys marked for re-copy are copied (for at
    /// most `limit`). Returns the keys left unrepaired.
    pub async fn drain(&self, limit: Duration) -> usize {
        let started = Instant::now();
        {
            let _tx = self.submit.lock().await;
            self.closed.store(true, Ordering::Release);
        }
        self.stop.cancel();
        let _repairing = self.repairing.lock().await;
        // Requests outside the stream that started under it end first.
        while self.outside.load(Ordering::Acquire) > 0 {
            let done = self.outside_done.notified();
            if self.outside.load(Ordering::Acquire) == 0 {
                break;
            }
            let left = limit.saturating_sub(started.elapsed());
            if left.is_zero() || tokio::time::timeout(left, done).await.is_err() {
                break;
            }
        }
        let left = self.drain_stream(started, limit).await;
        self.drained.store(true, Ordering::Release);
        left
    }

    async fn drain_stream(&self, started: Instant, limit: Duration) -> usize {
        loop {
            let fenced =
                tokio::time::timeout(limit.saturating_sub(started.elapsed()), self.fence()).await;
            let keys = self.dirty.take(usize::MAX);
            if keys.is_empty() && fenced.is_ok() {
                return 0;
            }
            if started.elapsed() >= limit {
                let left = keys.len();
                for k in keys {
                    self.dirty.mark(k);
                }
                return left;
            }
            if !keys.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for k in keys {
                let _ = self.copy(k).await;
            }
        }
    }
}

/// Holds a new stream shut until it is dropped (see [`Stream::start`]).
pub struct Gate(#[allow(dead_code)] tokio::sync::OwnedMutexGuard<mpsc::UnboundedSender<InFlight>>);

/// What the stream's tasks share (not the stream: its sender must close
/// when the stream is dropped, which ends them).
#[derive(Clone)]
struct Sides {
    authoritative: Side,
    secondary: Option<Side>,
    dirty: Arc<Dirty>,
    stats: Arc<Stats>,
}

/// Takes the authoritative side's replies in order: answers the client,
/// mirrors the write.
async fn apply(
    stream: Sides,
    mut rx: mpsc::UnboundedReceiver<InFlight>,
    check_tx: mpsc::UnboundedSender<Check>,
) {
    let stats = stream.stats.clone();
    while let Some(InFlight { sent, work, at }) = rx.recv().await {
        let outcomes = match sent {
            Some(sent) => sent.outcomes().await,
            None => Vec::new(),
        };
        match work {
            Work::Fence(done) => {
                let _ = check_tx.send(Check::Fence(done));
                continue;
            }
            Work::Client {
                frames,
                slot,
                resp3,
                effect,
                reply,
            } => {
                let mut outcome = outcomes.into_iter().last().unwrap_or_else(|| {
                    Err(ProxyError::Internal("no reply from the stream".into()))
                });
                if let (Side::Cluster(retrier), 1) = (&stream.authoritative, frames.len()) {
                    if !Retrier::is_final(&outcome) {
                        let attempt = Attempt {
                            frame: frames[0].clone(),
                            target: slot.map_or(Target::AnyMaster, Target::Slot),
                            readonly: effect == Effect::Read,
                            lane: Lane { index: 0, resp3 },
                        };
                        outcome = retrier.finish(&attempt, outcome).await;
                    }
                }
                let accepted = matches!(&outcome, Ok(r) if !is_error(r));
                let unknown = outcome.is_err();
                let _ = reply.send(outcome);
                let Some(secondary) = &stream.secondary else {
                    stats.checked.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                match effect {
                    Effect::Read => {
                        stats.checked.fetch_add(1, Ordering::Relaxed);
                    }
                    Effect::Replay { keys, .. } | Effect::Recopy(keys) if unknown => {
                        stats.checked.fetch_add(1, Ordering::Relaxed);
                        // Served or not, nobody knows: copy the key's state.
                        stats.unknown_outcomes.fetch_add(1, Ordering::Relaxed);
                        stream.dirty.mark_all(keys);
                    }
                    Effect::Replay { slot, keys } if accepted => {
                        let sent = secondary.send(frames, slot, false).await;
                        let _ = check_tx.send(Check::Replay { sent, keys, at });
                    }
                    Effect::Replay { .. } => {
                        stats.checked.fetch_add(1, Ordering::Relaxed);
                    }
                    Effect::Recopy(keys) => {
                        stats.checked.fetch_add(1, Ordering::Relaxed);
                        // Also after an error reply: a transaction or a
                        // script may have written before failing.
                        stats
                            .recopies
                            .fetch_add(keys.len() as u64, Ordering::Relaxed);
                        stream.dirty.mark_all(keys);
                    }
                }
            }
            Work::Copy { key } => {
                let Some(secondary) = &stream.secondary else {
                    stats.checked.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let mut it = outcomes.into_iter();
                let (dump, pttl) = (it.next(), it.next());
                let (Some(Ok(dump)), Some(Ok(pttl))) = (dump, pttl) else {
                    stats.checked.fetch_add(1, Ordering::Relaxed);
                    stats.copy_errors.fetch_add(1, Ordering::Relaxed);
                    stream.dirty.mark(key);
                    continue;
                };
                let ttl = Value::parse(&pttl).ok().and_then(|v| v.as_int());
                let payload = Value::parse(&dump).ok().and_then(|v| match v {
                    Value::Bulk(b) => Some(b),
                    _ => None,
                });
                if is_error(&dump) || ttl.is_none() {
                    stats.checked.fetch_add(1, Ordering::Relaxed);
                    stats.copy_errors.fetch_add(1, Ordering::Relaxed);
                    stream.dirty.mark(key);
                    continue;
                }
                let ttl = ttl.unwrap_or(-2);
                let slot = Some(key_slot(&key));
                let (frame, bytes, restored) = match payload {
                    Some(p) if ttl != -2 => {
                        let ttl = ttl.max(0).to_string();
                        let f = encode::command(&[
                            &b"RESTORE"[..],
                            &key,
                            ttl.as_bytes(),
                            &p,
                            b"REPLACE",
                        ]);
                        (f, p.len(), true)
                    }
                    // Gone at the source: gone on the secondary too (a
                    // mirrored write may have created part of it).
                    _ => (encode::command(&[&b"DEL"[..], &key]), 0, false),
                };
                let sent = secondary.send(vec![frame], slot, false).await;
                let _ = check_tx.send(Check::Copy {
                    sent,
                    key,
                    bytes,
                    restored,
                    at,
                });
            }
        }
    }
}

/// Checks the secondary side's replies, in order.
async fn check(stream: Sides, mut rx: mpsc::UnboundedReceiver<Check>) {
    let stats = stream.stats.clone();
    while let Some(c) = rx.recv().await {
        match c {
            Check::Fence(done) => {
                let _ = done.send(());
                continue;
            }
            Check::Replay { sent, keys, at } => {
                let ok = sent.outcomes().await.iter().all(accepted);
                stats.note_lag(at.elapsed());
                if ok {
                    stats.mirrored.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.mirror_errors.fetch_add(1, Ordering::Relaxed);
                    stream.dirty.mark_all(keys);
                }
            }
            Check::Copy {
                sent,
                key,
                bytes,
                restored,
                at,
            } => {
                let outcomes = sent.outcomes().await;
                stats.note_lag(at.elapsed());
                if outcomes.iter().all(accepted) {
                    stats.copied(bytes, restored);
                } else {
                    if let Some(Ok(r)) = outcomes.first() {
                        warn!(reply = %String::from_utf8_lossy(r).trim_end(), "copy refused");
                    }
                    stats.copy_errors.fetch_add(1, Ordering::Relaxed);
                    stream.dirty.mark(key);
                }
            }
        }
        stats.checked.fetch_add(1, Ordering::Relaxed);
    }
}

fn accepted(o: &ReplyResult) -> bool {
    matches!(o, Ok(r) if !is_error(r))
}

/// Copies the keys marked dirty, soon after they are marked; backs off
/// while copies keep failing (a side is down).
async fn repair(s: Arc<Stream>, stop: CancellationToken) {
    let mut pause = Duration::from_millis(20);
    loop {
        let notified = s.dirty.notified();
        let repairing = s.repairing.lock().await;
        if stop.is_cancelled() {
            return;
        }
        let keys = s.dirty.take(1000);
        if keys.is_empty() {
            drop(repairing);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            continue;
        }
        let errors = s.stats.copy_errors.load(Ordering::Relaxed);
        for k in keys {
            s.stats.repairs.fetch_add(1, Ordering::Relaxed);
            if s.copy(k).await.is_err() {
                return;
            }
        }
        let _ = s.fence().await;
        drop(repairing);
        pause = if s.stats.copy_errors.load(Ordering::Relaxed) > errors {
            (pause * 2).min(Duration::from_secs(1))
        } else {
            Duration::from_millis(20)
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
