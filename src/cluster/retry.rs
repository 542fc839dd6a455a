//! Redirects and retries: where a request goes, and what happens when the
//! cluster answers with a redirect or a transient error.
//!
//! Every request's outcome goes through one [`Follower`], whatever
//! connection carried it: forwards and fan-out parts on the multiplexed
//! lanes ([`Retrier::finish`]), blocking commands, WATCH and EXEC on
//! dedicated connections, and the pub/sub task's subscriptions. The
//! outcome is classified (the pure `classify` of the redirect module), and
//! the follower acts on the verdict:
//!
//! * `-MOVED slot addr`: the slot table is patched at once (a new table is
//!   swapped in), a full refresh is requested, and the request is re-sent to
//!   `addr`.
//! * `-ASK slot addr`: `ASKING` and the request go to `addr` on one
//!   connection; the table is left alone.
//! * A node error in `retry.retryable_errors` (by default `-TRYAGAIN`,
//!   `-CLUSTERDOWN`, `-LOADING`, `-MASTERDOWN`): re-sent after a back-off
//!   (`retry.backoff`: exponential with full jitter by default), within
//!   `retry.max_retries` and `retry.budget`.
//! * Never written (node unreachable, no master for the slot): re-resolved
//!   and re-sent once the slot has a reachable master, within
//!   `retry.master_wait`.
//! * Written, then the connection broke or timed out: the outcome is
//!   unknown, so the error goes to the client, unless the command is
//!   read-only, which is safe to re-send.
//!
//! Retries run out after `retry.max_retries`; a request whose last outcome
//! was still a redirect then fails with "too many redirects".
//!
//! Retries happen in the client's reply order (the frontend's write half
//! drives them), so a client's pipelined commands to one key keep their order
//! across a redirect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tracing::debug;

use crate::backend::{recv_reply, Lane, Node, ReplyResult, ReplyRx};
use crate::cluster::redirect::{classify, Kind, Verdict};
use crate::cluster::redirect_log::Redirected;
use crate::cluster::slot::{SharedSlotTable, SlotTable};
use crate::cluster::topology::Topology;
use crate::config::{Backoff, ReadFrom, RetryConfig};
use crate::error::ProxyError;
use crate::resp::{encode, error_text, is_error, Value};

/// Where a request goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// The master (or, for reads with replica reads on, a replica) of this slot.
    Slot(u16),
    /// Any master (keyless, node-independent commands).
    AnyMaster,
    /// This node, whatever the slot table says (cluster-wide parts).
    Node(Arc<Node>),
}

/// A node and the indices of the attempts that go to it
/// ([`Retrier::group_by_node`]).
pub type NodeGroup<'t> = (&'t Arc<Node>, Vec<usize>);

/// Counters of what the retry layer did, for INFO and metrics.
#[derive(Debug, Default)]
pub struct RetryCounters {
    /// MOVED redirects followed.
    pub moved: AtomicU64,
    /// ASK redirects followed.
    pub ask: AtomicU64,
    /// Requests re-sent after TRYAGAIN, CLUSTERDOWN, LOADING or MASTERDOWN.
    pub transient: AtomicU64,
    /// Requests re-sent because a node was unreachable or had no master.
    pub unavailable: AtomicU64,
    /// Read-only requests re-sent after their connection broke.
    pub reads_resent: AtomicU64,
    /// Requests whose retries ran out; the client got the last error.
    pub exhausted: AtomicU64,
    /// EVALSHA requests healed after NOSCRIPT by loading the script.
    pub scripts_loaded: AtomicU64,
}

/// Most scripts remembered for NOSCRIPT healing.
const MAX_SCRIPTS: usize = 10_000;

/// One request on its way: what to send, where, and how.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The RESP request.
    pub frame: Bytes,
    /// Where it goes.
    pub target: Target,
    /// Whether the command only reads (safe to re-send; may go to replicas).
    pub readonly: bool,
    /// The client's lane (connection index and protocol).
    pub lane: Lane,
}

impl Attempt {
    /// What the follower needs to know of this request.
    pub fn kind(&self) -> Kind {
        Kind {
            readonly: self.readonly,
            fixed_node: matches!(self.target, Target::Node(_)),
        }
    }
}

/// The re-sent request's outcome.
async fn outcome_of(sent: Result<ReplyRx, ProxyError>) -> ReplyResult {
    match sent {
        Ok(mut rx) => recv_reply(&mut rx).await,
        Err(e) => Err(e),
    }
}

/// Resolves targets and completes requests with retries.
pub struct Retrier {
    table: SharedSlotTable,
    topology: Arc<Topology>,
    policy: ArcSwap<RetryConfig>,
    read_from: ReadFrom,
    /// Script bodies by SHA1 (from EVAL and SCRIPT LOAD), to heal NOSCRIPT.
    scripts: Mutex<HashMap<String, Bytes>>,
    /// What the retry layer did.
    pub counters: RetryCounters,
}

impl std::fmt::Debug for Retrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retrier").finish_non_exhaustive()
    }
}

impl Retrier {
    /// A retrier over the shared slot table.
    pub fn new(
        table: SharedSlotTable,
        topology: Arc<Topology>,
        policy: RetryConfig,
        read_from: ReadFrom,
    ) -> Retrier {
        Retrier {
            table,
            topology,
            policy: ArcSwap::from_pointee(policy),
            read_from,
            scripts: Mutex::new(HashMap::new()),
            counters: RetryCounters::default(),
        }
    }

    /// Remembers a script body (from EVAL or SCRIPT LOAD) so a NOSCRIPT
    /// from a node that lacks it can be healed.
    pub fn remember_script(&self, body: &[u8]) {
        let sha = sha1_smol::Sha1::from(body).digest().to_string();
        let mut scripts = self.scripts.lock().expect("script cache lock");
        if scripts.len() >= MAX_SCRIPTS && !scripts.contains_key(&sha) {
            scripts.clear();
        }
        scripts.insert(sha, Bytes::copy_from_slice(body));
    }

    /// Forgets every remembered script (SCRIPT FLUSH through the proxy).
    pub fn forget_scripts(&self) {
        self.scripts.lock().expect("script cache lock").clear();
    }

    /// The body of an EVALSHA request's script, if known.
    fn script_for(&self, frame: &Bytes) -> Option<Bytes> {
        let v = Value::parse(frame).ok()?;
        let args = v.as_array()?;
        let name = args.first()?.as_str()?.to_ascii_lowercase();
        if name != "evalsha" && name != "evalsha_ro" {
            return None;
        }
        let sha = args.get(1)?.as_str()?.to_ascii_lowercase();
        self.scripts
            .lock()
            .expect("script cache lock")
            .get(&sha)
            .cloned()
    }

    /// The node a request should go to now, per the current slot table and
    /// the `read_from` policy.
    pub fn resolve<'t>(
        &self,
        table: &'t SlotTable,
        a: &'t Attempt,
    ) -> Result<&'t Arc<Node>, ProxyError> {
        self.resolve_target(table, &a.target, a.readonly, a.lane)
    }

    /// The attempts grouped by the node each should go to now (nodes in
    /// order of first appearance, each group's indices in order), and those
    /// that cannot go anywhere: what is sent to one node as one batch.
    pub fn group_by_node<'t>(
        &self,
        table: &'t SlotTable,
        attempts: impl Iterator<Item = &'t Attempt>,
    ) -> (Vec<NodeGroup<'t>>, Vec<(usize, ProxyError)>) {
        let mut groups: Vec<NodeGroup<'t>> = Vec::new();
        let mut unroutable = Vec::new();
        for (i, attempt) in attempts.enumerate() {
            match self.resolve(table, attempt) {
                Ok(node) => match groups.iter_mut().find(|(n, _)| Arc::ptr_eq(n, node)) {
                    Some((_, members)) => members.push(i),
                    None => groups.push((node, vec![i])),
                },
                Err(e) => unroutable.push((i, e)),
            }
        }
        (groups, unroutable)
    }

    /// The master serving `target` now (dedicated connections: transactions,
    /// blocking commands, subscriptions).
    pub fn master_of(&self, target: &Target, lane: Lane) -> Result<Arc<Node>, ProxyError> {
        self.resolve_target(&self.table.load(), target, false, lane)
            .cloned()
    }

    fn resolve_target<'t>(
        &self,
        table: &'t SlotTable,
        target: &'t Target,
        readonly: bool,
        lane: Lane,
    ) -> Result<&'t Arc<Node>, ProxyError> {
        let shard = match target {
            Target::Node(n) => return Ok(n),
            Target::Slot(s) => table.shard(*s),
            Target::AnyMaster => match table.shards().len() {
                0 => None,
                n => table.shards().get(lane.index % n),
            },
        };
        let Some(shard) = shard else {
            return Err(if table.version() == 0 {
                table.undiscovered_error()
            } else {
                ProxyError::ClusterDown("Hash slot not served")
            });
        };
        if readonly && self.read_from != ReadFrom::Master {
            if let Some(r) = shard.reader(lane.index) {
                return Ok(r);
            }
            // Replicas too far behind (`max_replica_lag`) send reads to the
            // master; no reachable replica at all is an error in this mode.
            if self.read_from == ReadFrom::Replica
                && !shard.replicas.iter().any(|r| r.is_reachable())
            {
                return Err(ProxyError::NoReplica);
            }
        }
        Ok(&shard.master)
    }

    /// The current slot table.
    pub fn table(&self) -> arc_swap::Guard<Arc<SlotTable>> {
        self.table.load()
    }

    /// The topology refresher (for MOVED patches).
    pub fn topology(&self) -> &Arc<Topology> {
        &self.topology
    }

    /// `retry.max_retries`.
    pub fn max_retries(&self) -> u32 {
        self.policy.load().max_retries
    }

    /// Applies a reloaded `[retry]` section.
    pub fn reconfigure(&self, policy: &RetryConfig) {
        self.policy.store(Arc::new(policy.clone()));
    }

    /// Sends an attempt: resolves the target against the current slot table
    /// and queues the request.
    pub async fn send(&self, a: &Attempt) -> Result<ReplyRx, ProxyError> {
        let node = {
            let table = self.table.load();
            self.resolve(&table, a)?.clone()
        };
        node.send(a.lane, a.frame.clone()).await
    }

    /// Awaits the reply of a request sent for `a` and completes it.
    pub async fn complete(&self, a: &Attempt, sent: Result<ReplyRx, ProxyError>) -> ReplyResult {
        self.finish(a, outcome_of(sent).await).await
    }

    /// Whether `outcome` is final without any retry (the fast path: every
    /// reply that is not an error).
    pub fn is_final(outcome: &ReplyResult) -> bool {
        matches!(outcome, Ok(frame) if !is_error(frame))
    }

    /// What an outcome says of the cluster, for a caller that will not
    /// send the request again (a transaction the node aborted, a WATCH on a
    /// connection that holds other keys): a MOVED patches the slot table, a
    /// transient error asks for a refresh.
    pub fn observe(&self, outcome: &ReplyResult) {
        let kind = Kind {
            readonly: false,
            fixed_node: true,
        };
        match classify(outcome, kind, &self.policy.load().retryable_errors) {
            Verdict::Moved { slot, addr } => self.topology.apply_moved(slot, &addr),
            Verdict::Transient => self.topology.trigger().notify_one(),
            _ => {}
        }
    }

    /// Tells the redirect log (`log.redirects`) of a redirect of `slot` to
    /// `to`; the slot's owner in the table is looked up only when it logs.
    fn log_redirect(&self, kind: Redirected, slot: u16, to: &str) {
        let log = &self.topology.redirects;
        let from = log
            .enabled()
            .then(|| self.table.load().master(slot).map(|n| n.addr().to_string()))
            .flatten();
        log.record(kind, slot, from.as_deref(), to);
    }

    /// A follower for one request of this kind (see [`Follower`]).
    pub fn follower(&self, kind: Kind) -> Follower<'_> {
        let policy = self.policy.load_full();
        Follower {
            retrier: self,
            kind,
            started: Instant::now(),
            retries: 0,
            backoff: policy.backoff_min,
            policy,
        }
    }

    /// Follows redirects and retries from the first outcome of `a` until a
    /// final outcome, re-sending on the client's lane of the multiplexed
    /// connections.
    pub async fn finish(&self, a: &Attempt, first: ReplyResult) -> ReplyResult {
        let mut follower = self.follower(a.kind());
        let mut outcome = first;
        while let Some(hop) = follower.next(&mut outcome, &a.frame).await {
            let sent = match hop {
                Hop::To {
                    addr,
                    asking: false,
                } => {
                    self.topology
                        .node(&addr)
                        .send(a.lane, a.frame.clone())
                        .await
                }
                Hop::To { addr, asking: true } => {
                    self.topology
                        .node(&addr)
                        .send_asking(a.lane, &a.frame)
                        .await
                }
                Hop::Again => self.send(a).await,
                Hop::LoadScript(body) => {
                    let table = self.table.load();
                    match self.resolve(&table, a) {
                        Ok(node) => {
                            let load = encode::command(&[&b"SCRIPT"[..], b"LOAD", &body]);
                            // Same lane: the load runs before the re-sent EVALSHA.
                            let loaded = node.send(a.lane, load).await;
                            let sent = node.send(a.lane, a.frame.clone()).await;
                            let _ = outcome_of(loaded).await;
                            sent
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            outcome = outcome_of(sent).await;
        }
        outcome
    }
}

/// Where a request's next attempt goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop {
    /// The node a redirect named, after ASKING for an ASK.
    To {
        /// The node.
        addr: String,
        /// Send ASKING first, on the same connection.
        asking: bool,
    },
    /// Wherever the request's target resolves now.
    Again,
    /// Load this script on the target's node, then re-send there.
    LoadScript(Bytes),
}

/// The one redirect follower: turns each outcome of one request into its
/// next attempt, for every kind of request (lone and pipelined forwards,
/// fan-out parts, blocking commands, WATCH and EXEC, pub/sub
/// re-subscription). The caller sends the attempt on its own connection;
/// the follower decides, keeps the count and the back-off, patches the slot
/// table on MOVED, asks for a refresh when the table looks stale, and
/// counts what it did.
pub struct Follower<'r> {
    retrier: &'r Retrier,
    kind: Kind,
    policy: Arc<RetryConfig>,
    started: Instant,
    retries: u32,
    backoff: Duration,
}

impl Follower<'_> {
    /// The next attempt after `outcome` (of the request `frame`), with how
    /// long to wait before it; `None` when `outcome` is final. When the
    /// retries run out on a redirect, `outcome` becomes
    /// [`ProxyError::TooManyRedirects`]; otherwise the client gets the last
    /// outcome as it is.
    pub fn decide(&mut self, outcome: &mut ReplyResult, frame: &Bytes) -> Option<(Hop, Duration)> {
        let r = self.retrier;
        let c = &r.counters;
        let verdict = classify(outcome, self.kind, &self.policy.retryable_errors);
        // A NOSCRIPT whose script the proxy never saw is final.
        let script = match verdict {
            Verdict::NoScript => Some(r.script_for(frame)?),
            _ => None,
        };
        if verdict == Verdict::Final {
            return None;
        }
        if self.retries >= self.policy.max_retries && verdict != Verdict::WaitForMaster {
            c.exhausted.fetch_add(1, Ordering::Relaxed);
            if matches!(verdict, Verdict::Moved { .. } | Verdict::Ask { .. }) {
                let last = match outcome {
                    Ok(frame) => error_text(frame).unwrap_or_default().into_owned(),
                    Err(_) => String::new(),
                };
                *outcome = Err(ProxyError::TooManyRedirects(last));
            }
            return None;
        }
        let hop = match verdict {
            Verdict::Final => return None,
            Verdict::Moved { slot, addr } => {
                c.moved.fetch_add(1, Ordering::Relaxed);
                debug!(slot, to = %addr, "MOVED: slot table patched, request re-sent");
                r.log_redirect(Redirected::Moved, slot, &addr);
                r.topology.apply_moved(slot, &addr);
                self.retries += 1;
                // A fixed-node part is not re-routed.
                if self.kind.fixed_node {
                    return None;
                }
                Hop::To {
                    addr,
                    asking: false,
                }
            }
            Verdict::Ask { slot, addr } => {
                c.ask.fetch_add(1, Ordering::Relaxed);
                debug!(to = %addr, "ASK: request re-sent with ASKING");
                r.log_redirect(Redirected::Ask, slot, &addr);
                self.retries += 1;
                Hop::To { addr, asking: true }
            }
            Verdict::NoScript => {
                c.scripts_loaded.fetch_add(1, Ordering::Relaxed);
                debug!("NOSCRIPT: loading the script on the node and re-sending");
                self.retries += 1;
                Hop::LoadScript(script?)
            }
            Verdict::Transient => {
                if self.started.elapsed() + self.backoff > self.policy.budget {
                    c.exhausted.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                c.transient.fetch_add(1, Ordering::Relaxed);
                debug!(backoff = ?self.backoff, "transient cluster error: retrying");
                self.retries += 1;
                // CLUSTERDOWN and MASTERDOWN often mean the table is stale.
                r.topology.trigger().notify_one();
                return Some((Hop::Again, self.back_off()));
            }
            Verdict::WaitForMaster => {
                if self.started.elapsed() + self.backoff > self.policy.master_wait {
                    c.exhausted.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                if matches!(
                    outcome,
                    Err(ProxyError::BackendConnectionLost(_)) | Err(ProxyError::BackendTimeout)
                ) {
                    c.reads_resent.fetch_add(1, Ordering::Relaxed);
                } else {
                    c.unavailable.fetch_add(1, Ordering::Relaxed);
                }
                r.topology.trigger().notify_one();
                return Some((Hop::Again, self.back_off()));
            }
        };
        Some((hop, Duration::ZERO))
    }

    /// [`Follower::decide`], then the wait before the next attempt.
    pub async fn next(&mut self, outcome: &mut ReplyResult, frame: &Bytes) -> Option<Hop> {
        let (hop, wait) = self.decide(outcome, frame)?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Some(hop)
    }

    /// The wait before this attempt (`retry.backoff`): the exponential
    /// wait doubles up to `retry.backoff_max`; with jitter, a random part
    /// of it is waited.
    fn back_off(&mut self) -> Duration {
        let cap = self.backoff;
        if self.policy.backoff != Backoff::Constant {
            self.backoff = (self.backoff * 2).min(self.policy.backoff_max);
        }
        match self.policy.backoff {
            Backoff::Exponential | Backoff::Constant => cap,
            Backoff::ExponentialJitter => full_jitter(cap),
        }
    }
}

/// A uniformly random wait of at most `cap` ("full jitter").
pub fn full_jitter(cap: Duration) -> Duration {
    cap.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_spreads_waits_up_to_the_cap() {
        let cap = Duration::from_millis(400);
        let waits: Vec<Duration> = (0..1000).map(|_| full_jitter(cap)).collect();
        assert!(waits.iter().all(|w| *w <= cap));
        let early = waits.iter().filter(|w| **w < cap / 2).count();
        // Half below the middle, give or take what chance allows.
        assert!((350..650).contains(&early), "{early}");
    }
}
