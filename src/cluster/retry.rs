//! Redirects and retries: where a request goes, and what happens when the
//! cluster answers with a redirect or a transient error.
//!
//! Every routed request (and every part of a fan-out) completes through
//! [`Retrier::complete`], which classifies the outcome:
//!
//! * `-MOVED slot addr`: the slot table is patched at once (a new table is
//!   swapped in), a full refresh is requested, and the request is re-sent to
//!   `addr`.
//! * `-ASK slot addr`: `ASKING` and the request go to `addr` on one
//!   connection; the table is left alone.
//! * `-TRYAGAIN`, `-CLUSTERDOWN`, `-LOADING`, `-MASTERDOWN`: re-sent after an
//!   exponential backoff, within `retry.max_retries` and `retry.budget`.
//! * Never written (node unreachable, no master for the slot): re-resolved
//!   and re-sent once the slot has a reachable master, within
//!   `retry.master_wait`.
//! * Written, then the connection broke or timed out: the outcome is
//!   unknown, so the error goes to the client, unless the command is
//!   read-only, which is safe to re-send.
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
use crate::cluster::redirect::Redirect;
use crate::cluster::slot::{SharedSlotTable, SlotTable};
use crate::cluster::topology::Topology;
use crate::config::{ReadFrom, RetryConfig};
use crate::error::ProxyError;
use crate::resp::{encode, Value};

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

/// What to do with an outcome.
enum Next {
    Done,
    Moved { slot: u16, addr: String },
    Ask { addr: String },
    Transient,
    WaitForMaster,
    NoScript { body: Bytes },
}

/// Sleeps `backoff`, then doubles it up to `max`.
async fn pause(backoff: &mut Duration, max: Duration) {
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(max);
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
            let up: Vec<&Arc<Node>> = shard.replicas.iter().filter(|r| r.is_reachable()).collect();
            if !up.is_empty() {
                return Ok(up[lane.index % up.len()]);
            }
            if self.read_from == ReadFrom::Replica {
                return Err(ProxyError::NoReplica);
            }
        }
        Ok(&shard.master)
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
        matches!(outcome, Ok(frame) if frame.first() != Some(&b'-'))
    }

    /// Follows redirects and retries from the first outcome of `a` until a
    /// final outcome.
    pub async fn finish(&self, a: &Attempt, first: ReplyResult) -> ReplyResult {
        let mut outcome = first;
        let started = Instant::now();
        let mut retries = 0u32;
        let policy = self.policy.load_full();
        let mut backoff = policy.backoff_min;
        loop {
            let next = self.classify(&outcome, a);
            let c = &self.counters;
            let rx = match next {
                Next::Done => return outcome,
                _ if retries >= policy.max_retries && !matches!(next, Next::WaitForMaster) => {
                    c.exhausted.fetch_add(1, Ordering::Relaxed);
                    return outcome;
                }
                Next::Moved { slot, addr } => {
                    c.moved.fetch_add(1, Ordering::Relaxed);
                    debug!(slot, to = %addr, "MOVED: slot table patched, request re-sent");
                    self.topology.apply_moved(slot, &addr);
                    retries += 1;
                    match &a.target {
                        // A fixed-node part is not re-routed.
                        Target::Node(_) => return outcome,
                        _ => {
                            self.topology
                                .node(&addr)
                                .send(a.lane, a.frame.clone())
                                .await
                        }
                    }
                }
                Next::Ask { addr } => {
                    c.ask.fetch_add(1, Ordering::Relaxed);
                    debug!(to = %addr, "ASK: request re-sent with ASKING");
                    retries += 1;
                    self.topology
                        .node(&addr)
                        .send_asking(a.lane, &a.frame)
                        .await
                }
                Next::Transient => {
                    if started.elapsed() + backoff > policy.budget {
                        c.exhausted.fetch_add(1, Ordering::Relaxed);
                        return outcome;
                    }
                    c.transient.fetch_add(1, Ordering::Relaxed);
                    debug!(?backoff, "transient cluster error: retrying");
                    retries += 1;
                    // CLUSTERDOWN and MASTERDOWN often mean the table is stale.
                    self.topology.trigger().notify_one();
                    pause(&mut backoff, policy.backoff_max).await;
                    self.send(a).await
                }
                Next::NoScript { body } => {
                    c.scripts_loaded.fetch_add(1, Ordering::Relaxed);
                    debug!("NOSCRIPT: loading the script on the node and re-sending");
                    retries += 1;
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
                Next::WaitForMaster => {
                    if started.elapsed() + backoff > policy.master_wait {
                        c.exhausted.fetch_add(1, Ordering::Relaxed);
                        return outcome;
                    }
                    if matches!(
                        outcome,
                        Err(ProxyError::BackendConnectionLost(_)) | Err(ProxyError::BackendTimeout)
                    ) {
                        c.reads_resent.fetch_add(1, Ordering::Relaxed);
                    } else {
                        c.unavailable.fetch_add(1, Ordering::Relaxed);
                    }
                    self.topology.trigger().notify_one();
                    pause(&mut backoff, policy.backoff_max).await;
                    self.send(a).await
                }
            };
            outcome = outcome_of(rx).await;
        }
    }

    fn classify(&self, outcome: &ReplyResult, a: &Attempt) -> Next {
        match outcome {
            Ok(frame) => {
                if frame.first() != Some(&b'-') {
                    return Next::Done;
                }
                if let Some(r) = Redirect::parse(frame) {
                    return match r {
                        Redirect::Moved { slot, addr } => Next::Moved { slot, addr },
                        Redirect::Ask { addr, .. } => Next::Ask { addr },
                    };
                }
                if frame.starts_with(b"-NOSCRIPT") {
                    return match self.script_for(&a.frame) {
                        Some(body) => Next::NoScript { body },
                        None => Next::Done,
                    };
                }
                let transient = [
                    &b"-TRYAGAIN"[..],
                    b"-CLUSTERDOWN",
                    b"-LOADING",
                    b"-MASTERDOWN",
                ];
                if transient.iter().any(|p| frame.starts_with(p)) {
                    Next::Transient
                } else {
                    Next::Done
                }
            }
            // Never written: safe to send again once there is a master.
            Err(ProxyError::BackendUnavailable(_))
            | Err(ProxyError::ClusterDown(_))
            | Err(ProxyError::Undiscovered(_))
                if !matches!(a.target, Target::Node(_)) =>
            {
                Next::WaitForMaster
            }
            // Written with an unknown outcome: only reads are re-sent.
            Err(ProxyError::BackendConnectionLost(_)) | Err(ProxyError::BackendTimeout)
                if a.readonly && !matches!(a.target, Target::Node(_)) =>
            {
                Next::WaitForMaster
            }
            Err(_) => Next::Done,
        }
    }
}
