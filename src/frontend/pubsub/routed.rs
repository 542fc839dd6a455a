//! SUBSCRIBE channels, each held on the master of its slot: PUBLISH is
//! routed there too, so its count is the channel's subscribers through
//! every proxy, as one server counts them. (Keyspace notification channels
//! stay on the home connection: their events come from every master.)

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use tracing::debug;

use super::{keyspace, Key, Kind, ShardSub, Task};
use crate::cluster::retry::Target;
use crate::cluster::slot::key_slot;
use crate::error::ProxyError;
use crate::resp::encode;

impl Task {
    /// Subscribes `names` on the masters of their slots. Nothing is
    /// subscribed if a slot has no master, or a write fails.
    pub(super) async fn subscribe_routed(&mut self, names: &[Bytes]) -> Result<(), ProxyError> {
        let mut by_node: BTreeMap<String, Vec<Bytes>> = BTreeMap::new();
        let mut placed = Vec::with_capacity(names.len());
        for n in names {
            let slot = key_slot(n);
            let addr = match self.resolve(Target::Slot(slot)) {
                Ok(addr) => addr,
                Err(e) => {
                    self.unexpect(Kind::Channel, names).await;
                    return Err(e);
                }
            };
            by_node.entry(addr.clone()).or_default().push(n.clone());
            placed.push((n.clone(), slot, addr));
        }
        for (name, slot, addr) in placed {
            self.routed
                .insert(name, ShardSub::new(slot, Key::Node(addr)));
        }

        for (addr, names) in by_node {
            let sent = self
                .send_subscribe(&Key::Node(addr), Kind::Channel, &names, false)
                .await;
            if let Err(e) = sent {
                for n in &names {
                    self.routed.remove(n);
                }
                self.unexpect(Kind::Channel, &names).await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// UNSUBSCRIBE of `names`, or of every channel when empty: each
    /// holding connection confirms its own channels, the rest are
    /// confirmed here, as Redis would.
    pub(super) async fn unsubscribe_channels(&mut self, names: Vec<Bytes>) {
        let names: Vec<Bytes> = if names.is_empty() {
            self.intended(Kind::Channel)
        } else {
            names
        };
        self.expect(Kind::Channel, false, &names);
        let mut by_holder: HashMap<Key, Vec<Bytes>> = HashMap::new();
        let mut local = Vec::new();
        for n in names {
            let holder = if keyspace::is_event_channel(&n) {
                Some(Key::Global)
            } else {
                self.routed.remove(&n).and_then(|s| s.holder)
            };
            match holder {
                Some(k) if self.conns.contains_key(&k) => by_holder.entry(k).or_default().push(n),
                _ => local.push(n),
            }
        }
        for (key, names) in by_holder {
            let mut args: Vec<&[u8]> = vec![b"UNSUBSCRIBE"];
            args.extend(names.iter().map(|n| &n[..]));
            let frame = encode::command(&args);
            if key == Key::Global {
                // The other masters' confirmations are swallowed.
                for (k, conn) in self.conns.iter_mut() {
                    if matches!(k, Key::Events(_)) {
                        let _ = conn.writer.write(&frame).await;
                    }
                }
            }
            let written = match self.conns.get_mut(&key) {
                Some(conn) => conn.writer.write(&frame).await.is_ok(),
                None => false,
            };
            if !written {
                local.extend(names);
            }
        }
        // The proxy confirms what no node holds, in its turn.
        for n in local {
            self.arrived(Kind::Channel, false, &n).await;
        }
    }
}

/// A channel's or pattern's (un)subscribe confirmation the client waits
/// for: held on different nodes, they confirm in any order, and Redis
/// replies in the order asked.
#[derive(Debug)]
pub(super) struct Confirmation {
    kind: Kind,
    subscribe: bool,
    name: Bytes,
    /// The node (or the proxy, for a channel no node holds) confirmed it.
    arrived: bool,
}

impl Task {
    /// Waits for `names`' confirmations, in this order.
    pub(super) fn expect(&mut self, kind: Kind, subscribe: bool, names: &[Bytes]) {
        self.order.extend(names.iter().map(|n| Confirmation {
            kind,
            subscribe,
            name: n.clone(),
            arrived: false,
        }));
    }

    /// The channels (or patterns) the client holds once every awaited
    /// confirmation has come: what an UNSUBSCRIBE without names leaves.
    pub(super) fn intended(&self, kind: Kind) -> Vec<Bytes> {
        let mut set = match kind {
            Kind::Pattern => self.patterns.clone(),
            _ => self.channels.clone(),
        };
        for c in self.order.iter().filter(|c| c.kind == kind) {
            if c.subscribe {
                set.insert(c.name.clone());
            } else {
                set.remove(&c.name);
            }
        }
        set.into_iter().collect()
    }

    /// No confirmation comes for subscribing `names` (the client gets an
    /// error instead).
    pub(super) async fn unexpect(&mut self, kind: Kind, names: &[Bytes]) {
        self.order
            .retain(|c| !(c.kind == kind && c.subscribe && names.contains(&c.name)));
        self.send_due().await;
    }

    /// A node confirmed `name`: true if it was awaited; what is due then
    /// goes to the client, in the order asked.
    pub(super) async fn arrived(&mut self, kind: Kind, subscribe: bool, name: &Bytes) -> bool {
        let Some(c) = self
            .order
            .iter_mut()
            .find(|c| !c.arrived && c.kind == kind && c.subscribe == subscribe && c.name == *name)
        else {
            return false;
        };
        c.arrived = true;
        self.send_due().await;
        true
    }

    /// The confirmations a lost connection owed count as given.
    pub(super) async fn confirmed_by_loss(&mut self, key: &Key) {
        for c in self.order.iter_mut().filter(|c| !c.arrived) {
            let held_there = match c.kind {
                Kind::Channel if !keyspace::is_event_channel(&c.name) => self
                    .routed
                    .get(&c.name)
                    .is_some_and(|s| s.holder.as_ref() == Some(key)),
                _ => *key == Key::Global,
            };
            c.arrived |= held_there;
        }
        self.send_due().await;
    }

    /// Sends the confirmations that arrived, up to the first still awaited.
    async fn send_due(&mut self) {
        while self.order.front().is_some_and(|c| c.arrived) {
            let Some(c) = self.order.pop_front() else {
                break;
            };
            let set = match c.kind {
                Kind::Pattern => &mut self.patterns,
                _ => &mut self.channels,
            };
            let verb = if c.subscribe {
                set.insert(c.name.clone());
                c.kind.subscribe()
            } else {
                set.remove(&c.name);
                c.kind.unsubscribe()
            };
            let count = self.count(c.kind);
            let verb = verb.to_ascii_lowercase();
            self.emit(self.message(&verb, Some(&c.name), count)).await;
        }
    }
}

impl Task {
    /// Where the shard channels (`Kind::Shard`) or routed channels are held.
    fn placements(&mut self, kind: Kind) -> &mut BTreeMap<Bytes, ShardSub> {
        match kind {
            Kind::Shard => &mut self.shard,
            _ => &mut self.routed,
        }
    }

    /// Re-subscribes the shard channels (`Kind::Shard`) or routed channels
    /// (`Kind::Channel`) whose connection was lost, where their slot is now
    /// (the client saw their confirmation already).
    pub(super) async fn resubscribe_orphans(&mut self, kind: Kind) {
        let conns = &self.conns;
        let orphans: Vec<(Bytes, u16)> = match kind {
            Kind::Shard => &self.shard,
            _ => &self.routed,
        }
        .iter()
        .filter(|(_, s)| s.holder.as_ref().is_none_or(|k| !conns.contains_key(k)))
        .map(|(n, s)| (n.clone(), s.slot))
        .collect();
        for (name, slot) in orphans {
            let Ok(addr) = self.resolve(Target::Slot(slot)) else {
                continue;
            };
            let key = Key::Node(addr);
            let sent = self
                .send_subscribe(&key, kind, std::slice::from_ref(&name), true)
                .await;
            if sent.is_ok() {
                if let Some(s) = self.placements(kind).get_mut(&name) {
                    s.holder = Some(key);
                }
                debug!(channel = ?name, ?kind, "re-subscribed where its slot is");
            }
        }
    }
}
