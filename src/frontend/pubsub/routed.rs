//! SUBSCRIBE channels, each held on the master of its slot: PUBLISH is
//! routed there too, so its count is the channel's subscribers through
//! every proxy, as one server counts them. (Keyspace notification channels
//! stay on the home connection: their events come from every master.)

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;

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
            let addr = self.resolve(Target::Slot(slot))?;
            by_node.entry(addr.clone()).or_default().push(n.clone());
            placed.push((n.clone(), slot, addr));
        }
        for (name, slot, addr) in placed {
            let holder = Some(Key::Node(addr));
            self.routed.insert(name, ShardSub { slot, holder });
        }
        for (addr, names) in by_node {
            let sent = self
                .send_subscribe(&Key::Node(addr), Kind::Channel, &names, false)
                .await;
            if let Err(e) = sent {
                for n in &names {
                    self.routed.remove(n);
                }
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
            let all: BTreeSet<Bytes> = self
                .channels
                .iter()
                .chain(self.routed.keys())
                .cloned()
                .collect();
            all.into_iter().collect()
        } else {
            names
        };
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
        if !local.is_empty() {
            self.confirm_locally(Kind::Channel, local).await;
        }
    }

    /// Re-subscribes the channels whose connection was lost, where their
    /// slot is now (the client saw their confirmation already).
    pub(super) async fn repair_routed(&mut self) {
        let orphans: Vec<(Bytes, u16)> = self
            .routed
            .iter()
            .filter(|(_, s)| {
                s.holder
                    .as_ref()
                    .is_none_or(|k| !self.conns.contains_key(k))
            })
            .map(|(n, s)| (n.clone(), s.slot))
            .collect();
        for (name, slot) in orphans {
            let Ok(addr) = self.resolve(Target::Slot(slot)) else {
                continue;
            };
            let key = Key::Node(addr);
            let sent = self
                .send_subscribe(&key, Kind::Channel, std::slice::from_ref(&name), true)
                .await;
            if sent.is_ok() {
                if let Some(s) = self.routed.get_mut(&name) {
                    s.holder = Some(key);
                }
            }
        }
    }
}
