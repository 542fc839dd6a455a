//! Pub/sub for one client: a task that owns the client's subscription
//! connections, forwards their messages, and re-subscribes after failover
//! or resharding.
//!
//! * SUBSCRIBE goes to the master of the channel's slot, where PUBLISH is
//!   routed too, so PUBLISH's count is the channel's subscribers through
//!   every proxy (a cluster propagates the message itself to every node).
//!   PSUBSCRIBE goes to one master, the home connection, and to every other
//!   master, so a PUBLISH on any node counts it; its messages are taken
//!   from the home connection only (see `keyspace`).
//! * SSUBSCRIBE goes to the master of the channel's slot (one connection per
//!   node), and SPUBLISH is routed by the channel's slot like a key.
//! * When a subscription connection breaks (failover) or the node drops
//!   shard channels whose slot moved (its `sunsubscribe` the client did not
//!   ask for), the task re-subscribes on the current owner and swallows the
//!   duplicate confirmations: the client sees an unbroken subscription.
//! * Subscription counts in confirmations are the client's totals, as a
//!   single node would report them.
//! * Channels and patterns that can receive keyspace notifications (which
//!   each node publishes for its own keys only) are also subscribed on
//!   every other master, masters added or promoted later included. Only
//!   keyspace notifications are taken from those connections, so a
//!   published message, which reaches every node, still arrives once; and
//!   the client's confirmation waits until every master has confirmed, so
//!   no event after it is missed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::backend::dedicated::{DedicatedPool, DedicatedWriter};
use crate::backend::Lane;
use crate::backend::ReplyResult;
use crate::cluster::redirect::{self, Redirect};
use crate::cluster::retry::{Retrier, Target};
use crate::cluster::slot::{key_slot, SharedSlotTable};
use crate::error::ProxyError;
use crate::resp::{encode, reply::split_aggregate, Value};

/// Subscription kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// SUBSCRIBE channels.
    Channel,
    /// PSUBSCRIBE patterns.
    Pattern,
    /// SSUBSCRIBE shard channels.
    Shard,
}

impl Kind {
    fn subscribe(self) -> &'static str {
        match self {
            Kind::Channel => "SUBSCRIBE",
            Kind::Pattern => "PSUBSCRIBE",
            Kind::Shard => "SSUBSCRIBE",
        }
    }
    fn unsubscribe(self) -> &'static str {
        match self {
            Kind::Channel => "UNSUBSCRIBE",
            Kind::Pattern => "PUNSUBSCRIBE",
            Kind::Shard => "SUNSUBSCRIBE",
        }
    }
}

/// A request from the session.
#[derive(Debug)]
pub enum Command {
    /// (P|S)SUBSCRIBE names...
    Subscribe(Kind, Vec<Bytes>),
    /// (P|S)UNSUBSCRIBE [names...] (empty: all).
    Unsubscribe(Kind, Vec<Bytes>),
}

/// What the session keeps: a way to send commands, and whether the client
/// has any subscription (RESP2 clients are then restricted).
pub struct Handle {
    tx: mpsc::UnboundedSender<Command>,
    active: Arc<AtomicUsize>,
}

impl Handle {
    /// Sends a command to the task.
    pub fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).is_ok()
    }

    /// Number of subscriptions (channels + patterns + shard channels).
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

/// What the task needs.
pub struct Deps {
    /// The slot table.
    pub table: SharedSlotTable,
    /// Target resolution and topology (MOVED patches, refresh triggers).
    pub retrier: Arc<Retrier>,
    /// Where connections come from.
    pub pool: Arc<DedicatedPool>,
    /// The client's lane (protocol, and which master to use for channels).
    pub lane: Lane,
}

/// Starts the task; messages for the client arrive on the returned receiver.
pub fn start(deps: Deps) -> (Handle, mpsc::Receiver<Bytes>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (out_tx, out_rx) = mpsc::channel(1024);
    let active = Arc::new(AtomicUsize::new(0));
    let task = Task {
        deps,
        out: out_tx,
        active: active.clone(),
        conns: HashMap::new(),
        events_tx: None,
        channels: BTreeSet::new(),
        patterns: BTreeSet::new(),
        shard: BTreeMap::new(),
        routed: BTreeMap::new(),
        order: Default::default(),
        leaving: BTreeMap::new(),
        next_id: 0,
        held: None,
    };
    tokio::spawn(task.run(rx));
    (Handle { tx, active }, out_rx)
}

mod keyspace;
mod routed;

/// Which connection: the one for channels and patterns (the home
/// connection), one per node for shard channels, and one per other master
/// for the keyspace notifications of its keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Global,
    Node(String),
    Events(String),
}

struct Conn {
    id: u64,
    /// The node.
    addr: String,
    writer: DedicatedWriter,
    /// Subscribe confirmations still to swallow (after a re-subscribe).
    swallow: usize,
    /// Confirmations the client's held replies wait for (an events
    /// connection's, see [`Task::held`]).
    awaiting: usize,
}

/// How long the client's replies wait for the other masters' confirmations
/// before they go out anyway (a master that never answers).
const HOLD_LIMIT: Duration = Duration::from_secs(2);

enum Event {
    Frame(u64, Bytes),
    Closed(u64),
}

/// A shard channel's (or a routed channel's) subscription and the
/// connection that holds it (none while it waits to be re-subscribed).
struct ShardSub {
    slot: u16,
    holder: Option<Key>,
    /// The node confirmed it (subscription counts are the confirmed ones).
    confirmed: bool,
    /// The client wants it (false from its unsubscribe until the node's
    /// confirmation, when it is dropped unless subscribed again meanwhile).
    wanted: bool,
}

impl ShardSub {
    /// A subscription on its way to `holder`.
    fn new(slot: u16, holder: Key) -> ShardSub {
        ShardSub {
            slot,
            holder: Some(holder),
            confirmed: false,
            wanted: true,
        }
    }
}

struct Task {
    deps: Deps,
    out: mpsc::Sender<Bytes>,
    active: Arc<AtomicUsize>,
    conns: HashMap<Key, Conn>,
    events_tx: Option<mpsc::UnboundedSender<Event>>,
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
    shard: BTreeMap<Bytes, ShardSub>,
    /// Where each SUBSCRIBE channel is held (the master of its slot), but
    /// keyspace notification channels, which the home connection holds.
    routed: BTreeMap<Bytes, ShardSub>,
    /// Routed channels' confirmations in the order the client asked for
    /// them (see `routed`).
    order: std::collections::VecDeque<routed::Confirmation>,
    /// Shard channels the client asked to leave (their sunsubscribe is expected).
    leaving: BTreeMap<Bytes, usize>,
    next_id: u64,
    /// What goes to the client while the other masters have not confirmed
    /// a keyspace subscription yet (since when), in order.
    held: Option<(Instant, Vec<Bytes>)>,
}

impl Task {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Command>) {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        self.events_tx = Some(events_tx);
        let mut repair = tokio::time::interval(Duration::from_millis(250));
        repair.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    // The client is gone: dropping the connections ends the subscriptions.
                    None => return,
                },
                Some(ev) = events.recv() => self.event(ev).await,
                _ = repair.tick() => self.repair().await,
            }
            self.active.store(
                self.channels.len() + self.patterns.len() + self.shard.len(),
                Ordering::Relaxed,
            );
        }
    }

    async fn emit(&mut self, frame: Bytes) {
        match self.held.as_mut() {
            Some((_, held)) => held.push(frame),
            None => {
                let _ = self.out.send(frame).await;
            }
        }
    }

    /// Sends what was held once no events connection awaits a confirmation
    /// (or after [`HOLD_LIMIT`]).
    async fn release_held(&mut self) {
        let awaiting: usize = self.conns.values().map(|c| c.awaiting).sum();
        let expired = self
            .held
            .as_ref()
            .is_some_and(|(since, _)| since.elapsed() >= HOLD_LIMIT);
        if awaiting > 0 && !expired {
            return;
        }
        if expired && awaiting > 0 {
            warn!(
                awaiting,
                "a master did not confirm a keyspace subscription in time"
            );
            for c in self.conns.values_mut() {
                c.awaiting = 0;
            }
        }
        if let Some((_, held)) = self.held.take() {
            for frame in held {
                let _ = self.out.send(frame).await;
            }
        }
    }

    fn resolve(&self, target: Target) -> Result<String, ProxyError> {
        Ok(self
            .deps
            .retrier
            .master_of(&target, self.deps.lane)?
            .addr()
            .to_string())
    }

    /// A reachable master for channels and patterns (any node receives
    /// every PUBLISH), starting from the client's lane.
    fn any_reachable_master(&self) -> Result<String, ProxyError> {
        let table = self.deps.table.load();
        let shards = table.shards();
        (0..shards.len())
            .map(|i| &shards[(self.deps.lane.index + i) % shards.len()].master)
            .find(|m| m.is_reachable())
            .map(|m| m.addr().to_string())
            .map_or_else(|| self.resolve(Target::AnyMaster), Ok)
    }

    /// The connection for `key`, opened (with its reader task) if needed.
    async fn conn(&mut self, key: &Key) -> Result<&mut Conn, ProxyError> {
        if !self.conns.contains_key(key) {
            let addr = match key {
                Key::Node(a) | Key::Events(a) => a.clone(),
                Key::Global => self.any_reachable_master()?,
            };
            let conn = self.deps.pool.get(&addr, self.deps.lane.resp3).await?;
            let (mut reader, writer) = conn.into_split();
            self.next_id += 1;
            let id = self.next_id;
            let events = self.events_tx.clone().expect("events channel");
            tokio::spawn(async move {
                loop {
                    match reader.read().await {
                        Ok(frame) => {
                            if events.send(Event::Frame(id, frame)).is_err() {
                                return;
                            }
                        }
                        Err(_) => {
                            let _ = events.send(Event::Closed(id));
                            return;
                        }
                    }
                }
            });
            self.conns.insert(
                key.clone(),
                Conn {
                    id,
                    addr,
                    writer,
                    swallow: 0,
                    awaiting: 0,
                },
            );
        }
        Ok(self.conns.get_mut(key).expect("just inserted"))
    }

    /// Writes a (P|S)SUBSCRIBE on the connection for `key`; `swallow` for re-subscriptions.
    async fn send_subscribe(
        &mut self,
        key: &Key,
        kind: Kind,
        names: &[Bytes],
        swallow: bool,
    ) -> Result<(), ProxyError> {
        let mut args: Vec<&[u8]> = vec![kind.subscribe().as_bytes()];
        args.extend(names.iter().map(|n| &n[..]));
        let frame = encode::command(&args);
        let conn = self.conn(key).await?;
        if swallow {
            conn.swallow += names.len();
        }
        let r = conn.writer.write(&frame).await;
        if r.is_err() {
            self.conns.remove(key);
        }
        r
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Subscribe(kind, names) => {
                let result = match kind {
                    Kind::Channel | Kind::Pattern => {
                        // Confirmed in this order, wherever each is held.
                        self.expect(kind, true, &names);
                        let (home, routed): (Vec<Bytes>, Vec<Bytes>) = names
                            .into_iter()
                            .partition(|n| kind == Kind::Pattern || keyspace::is_event_channel(n));
                        let mut result = Ok(());
                        if !home.is_empty() {
                            result = self.send_subscribe(&Key::Global, kind, &home, false).await;
                            if result.is_ok() {
                                self.subscribe_events(kind, &home).await;
                            } else {
                                self.unexpect(kind, &home).await;
                            }
                        }
                        if !routed.is_empty() {
                            result = result.and(self.subscribe_routed(&routed).await);
                        }
                        result
                    }
                    Kind::Shard => {
                        let slot = key_slot(&names[0]);
                        if names.iter().any(|n| key_slot(n) != slot) {
                            Err(ProxyError::CrossSlot)
                        } else {
                            match self.resolve(Target::Slot(slot)) {
                                Ok(addr) => {
                                    let key = Key::Node(addr);
                                    for n in &names {
                                        let s = self
                                            .shard
                                            .entry(n.clone())
                                            .or_insert_with(|| ShardSub::new(slot, key.clone()));
                                        s.holder = Some(key.clone());
                                        s.wanted = true;
                                    }
                                    self.send_subscribe(&key, kind, &names, false).await
                                }
                                Err(e) => Err(e),
                            }
                        }
                    }
                };
                if let Err(e) = result {
                    self.emit(e.to_resp()).await;
                }
            }
            Command::Unsubscribe(kind, names) => self.unsubscribe(kind, names).await,
        }
    }

    async fn unsubscribe(&mut self, kind: Kind, names: Vec<Bytes>) {
        match kind {
            Kind::Channel if !names.is_empty() || !self.intended(Kind::Channel).is_empty() => {
                self.unsubscribe_channels(names).await
            }
            Kind::Channel | Kind::Pattern => {
                let names: Vec<Bytes> = if names.is_empty() {
                    self.intended(kind)
                } else {
                    names
                };
                if names.is_empty() {
                    return self.confirm_locally(kind, names).await;
                }
                self.expect(kind, false, &names);
                let mut args: Vec<&[u8]> = vec![kind.unsubscribe().as_bytes()];
                args.extend(names.iter().map(|n| &n[..]));
                let frame = encode::command(&args);
                // The other masters' confirmations are swallowed.
                for (key, conn) in self.conns.iter_mut() {
                    if matches!(key, Key::Events(_)) {
                        let _ = conn.writer.write(&frame).await;
                    }
                }
                let written = match self.conns.get_mut(&Key::Global) {
                    Some(conn) => conn.writer.write(&frame).await.is_ok(),
                    None => false,
                };
                if !written {
                    // No connection: confirmed here, as Redis would.
                    for n in &names {
                        self.arrived(kind, false, n).await;
                    }
                }
            }
            Kind::Shard => {
                let targets: Vec<Bytes> = if names.is_empty() {
                    self.shard.keys().cloned().collect()
                } else {
                    names
                };
                if targets.is_empty() {
                    self.confirm_locally(kind, Vec::new()).await;
                    return;
                }
                // Each holding node confirms its own channels.
                let mut by_node: HashMap<Key, Vec<Bytes>> = HashMap::new();
                let mut local = Vec::new();
                for n in targets {
                    match self.shard.get(&n).and_then(|s| s.holder.clone()) {
                        Some(k) if self.conns.contains_key(&k) => {
                            *self.leaving.entry(n.clone()).or_default() += 1;
                            if let Some(s) = self.shard.get_mut(&n) {
                                s.wanted = false;
                            }
                            by_node.entry(k).or_default().push(n)
                        }
                        _ => local.push(n),
                    }
                }
                for (key, names) in by_node {
                    let mut args: Vec<&[u8]> = vec![b"SUNSUBSCRIBE"];
                    args.extend(names.iter().map(|n| &n[..]));
                    let frame = encode::command(&args);
                    let ok = match self.conns.get_mut(&key) {
                        Some(conn) => conn.writer.write(&frame).await.is_ok(),
                        None => false,
                    };
                    if !ok {
                        local.extend(names);
                    }
                }
                if !local.is_empty() {
                    self.confirm_locally(kind, local).await;
                }
            }
        }
    }

    /// Unsubscribe confirmations the proxy produces itself.
    async fn confirm_locally(&mut self, kind: Kind, names: Vec<Bytes>) {
        let verb = kind.unsubscribe().to_ascii_lowercase();
        if names.is_empty() {
            let count = self.count(kind);
            self.emit(self.message(&verb, None, count)).await;
            return;
        }
        for n in names {
            match kind {
                Kind::Channel => {
                    self.channels.remove(&n);
                }
                Kind::Pattern => {
                    self.patterns.remove(&n);
                }
                Kind::Shard => {
                    self.shard.remove(&n);
                    self.leaving.remove(&n);
                }
            }
            let count = self.count(kind);
            self.emit(self.message(&verb, Some(&n), count)).await;
        }
    }

    fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Channel | Kind::Pattern => self.channels.len() + self.patterns.len(),
            Kind::Shard => self.shard.values().filter(|s| s.confirmed).count(),
        }
    }

    /// A subscription confirmation in the client's protocol.
    fn message(&self, verb: &str, name: Option<&[u8]>, count: usize) -> Bytes {
        let mut out = BytesMut::new();
        if self.deps.lane.resp3 {
            out.extend_from_slice(b">3\r\n");
        } else {
            encode::array_header(3, &mut out);
        }
        encode::bulk_into(verb.as_bytes(), &mut out);
        match name {
            Some(n) => encode::bulk_into(n, &mut out),
            None if self.deps.lane.resp3 => out.extend_from_slice(b"_\r\n"),
            None => out.extend_from_slice(b"$-1\r\n"),
        }
        out.extend_from_slice(&encode::integer(count as i64));
        out.freeze()
    }

    /// Re-subscribes what lost its connection: channels and patterns on a
    /// new global connection, shard channels where their slot is now.
    async fn repair(&mut self) {
        let home_channels = self.channels.iter().any(|c| keyspace::is_event_channel(c));
        if !self.conns.contains_key(&Key::Global) && (home_channels || !self.patterns.is_empty()) {
            let channels: Vec<Bytes> = self
                .channels
                .iter()
                .filter(|c| keyspace::is_event_channel(c))
                .cloned()
                .collect();
            let patterns: Vec<Bytes> = self.patterns.iter().cloned().collect();
            let mut ok = true;
            if !channels.is_empty() {
                ok &= self
                    .send_subscribe(&Key::Global, Kind::Channel, &channels, true)
                    .await
                    .is_ok();
            }
            if ok && !patterns.is_empty() {
                ok &= self
                    .send_subscribe(&Key::Global, Kind::Pattern, &patterns, true)
                    .await
                    .is_ok();
            }
            if ok {
                debug!(
                    channels = channels.len(),
                    patterns = patterns.len(),
                    "re-subscribed"
                );
            }
        }
        self.resubscribe_orphans(Kind::Shard).await;
        self.resubscribe_orphans(Kind::Channel).await;
        self.repair_events().await;
    }

    async fn event(&mut self, ev: Event) {
        let (id, frame) = match ev {
            Event::Closed(id) => {
                if let Some(key) = self.key_of(id) {
                    warn!(?key, "subscription connection lost; re-subscribing");
                    self.conns.remove(&key);
                    // Its confirmations will not come: the repair subscribes
                    // again, unseen.
                    self.confirmed_by_loss(&key).await;
                    for s in self.shard.values_mut().chain(self.routed.values_mut()) {
                        if s.holder.as_ref() == Some(&key) {
                            s.holder = None;
                        }
                    }
                    self.follow(Err(ProxyError::BackendConnectionLost(
                        "subscription connection closed".into(),
                    )));
                    // Nothing waits for that connection's confirmations now.
                    self.release_held().await;
                }
                return;
            }
            Event::Frame(id, frame) => (id, frame),
        };
        let Some(key) = self.key_of(id) else {
            return;
        };
        if let Key::Events(_) = key {
            return self.other_master_event(&key, frame).await;
        }
        if let Some(Redirect::Moved { slot, .. }) = Redirect::parse(&frame) {
            // SSUBSCRIBE reached a node that no longer owns the slot: the
            // follower patches the slot table, and the repair re-subscribes
            // where the slot is now.
            self.follow(Ok(frame));
            for s in self.shard.values_mut() {
                if s.slot == slot {
                    s.holder = None;
                }
            }
            return;
        }
        let parts = split_aggregate(&frame).unwrap_or_default();
        let text = |i: usize| text_at(&parts, i);
        let verb = text(0)
            .map(|v| String::from_utf8_lossy(&v).to_ascii_lowercase())
            .unwrap_or_default();
        let kind = match verb.as_str() {
            "subscribe" | "unsubscribe" if parts.len() == 3 => Kind::Channel,
            "psubscribe" | "punsubscribe" if parts.len() == 3 => Kind::Pattern,
            "ssubscribe" | "sunsubscribe" if parts.len() == 3 => Kind::Shard,
            // A message, a pong or an error: forwarded as is.
            _ => return self.emit(frame).await,
        };
        let name = text(1);
        let subscribing = !verb.contains("unsub");
        if let (Kind::Channel | Kind::Pattern, Some(n)) = (kind, &name) {
            // A re-subscription's confirmation, or one the client awaits in
            // order (a routed channel's).
            let swallowed = subscribing
                && self.conns.get_mut(&key).is_some_and(|c| {
                    let owed = c.swallow > 0;
                    c.swallow = c.swallow.saturating_sub(1);
                    owed
                });
            if swallowed || self.arrived(kind, subscribing, n).await {
                return;
            }
        }
        if let Some(n) = &name {
            match (kind, subscribing) {
                (Kind::Channel, true) => {
                    self.channels.insert(n.clone());
                }
                (Kind::Channel, false) => {
                    self.channels.remove(n);
                }
                (Kind::Pattern, true) => {
                    self.patterns.insert(n.clone());
                }
                (Kind::Pattern, false) => {
                    self.patterns.remove(n);
                }
                (Kind::Shard, true) => {
                    if let Some(s) = self.shard.get_mut(n) {
                        s.confirmed = true;
                    }
                }
                (Kind::Shard, false) => {
                    let asked = match self.leaving.get_mut(n) {
                        Some(left) => {
                            *left -= 1;
                            if *left == 0 {
                                self.leaving.remove(n);
                            }
                            true
                        }
                        None => false,
                    };
                    if !asked {
                        // The node dropped it (its slot moved): follow the slot.
                        debug!(channel = ?n, "shard channel's slot moved; re-subscribing");
                        if let Some(s) = self.shard.get_mut(n) {
                            s.holder = None;
                        }
                        self.deps.retrier.topology().trigger().notify_one();
                        return;
                    }
                    // Dropped unless the client subscribed again meanwhile.
                    if let Some(s) = self.shard.get_mut(n) {
                        s.confirmed = false;
                        if !s.wanted {
                            self.shard.remove(n);
                        }
                    }
                }
            }
        }
        if subscribing {
            if let Some(conn) = self.conns.get_mut(&key) {
                if conn.swallow > 0 {
                    conn.swallow -= 1;
                    return;
                }
            }
        }
        let count = self.count(kind);
        self.emit(self.message(&verb, name.as_deref(), count)).await;
    }

    /// What a subscription's outcome means, decided by the retrier's
    /// follower like any request's (subscribing again is always safe, like
    /// a read): a MOVED patches the slot table, a lost connection asks for
    /// a refresh. The re-subscription itself is [`Task::repair`]'s, on its
    /// own tick, so the task never sleeps in a back-off.
    fn follow(&self, mut outcome: ReplyResult) {
        let _ = self
            .deps
            .retrier
            .follower(redirect::Kind::READ)
            .decide(&mut outcome, &Bytes::new());
    }

    fn key_of(&self, id: u64) -> Option<Key> {
        self.conns
            .iter()
            .find(|(_, c)| c.id == id)
            .map(|(k, _)| k.clone())
    }
}

/// The text of element `i` of a split push or array reply.
fn text_at(parts: &[Bytes], i: usize) -> Option<Bytes> {
    let v = Value::parse(parts.get(i)?).ok()?;
    v.as_bytes().map(Bytes::copy_from_slice)
}
