//! Subscriptions made on every master. A node publishes the keyspace
//! notifications of its own keys only: they do not cross the cluster bus
//! as PUBLISH does, so a client of the proxy that subscribes to them must
//! be subscribed on every master. Patterns are, too, so that PUBLISH counts
//! them on whichever master it lands. A published message, which reaches
//! every node, must still arrive once: from the other masters only
//! keyspace notifications are taken.

use std::collections::BTreeSet;
use std::time::Instant;

use bytes::Bytes;
use tracing::debug;

use super::{text_at, Key, Kind, Task};
use crate::resp::reply::split_aggregate;

/// The channel prefixes of keyspace notifications.
const PREFIXES: [&[u8]; 2] = [b"__keyspace@", b"__keyevent@"];

/// Whether `channel` carries keyspace notifications.
pub(super) fn is_event_channel(channel: &[u8]) -> bool {
    PREFIXES.iter().any(|p| channel.starts_with(p))
}

/// Whether a subscription is also made on every other master: every
/// PSUBSCRIBE pattern (so a PUBLISH counts it on whichever master it lands,
/// and keyspace notifications reach it from every master), and SUBSCRIBE
/// channels of keyspace notifications.
pub(super) fn everywhere(pattern: bool, name: &[u8]) -> bool {
    pattern || is_event_channel(name)
}

/// The channels (or patterns) of `names` that are subscribed on every
/// master.
fn event_names<'a>(names: impl IntoIterator<Item = &'a Bytes>, pattern: bool) -> Vec<Bytes> {
    names
        .into_iter()
        .filter(|n| everywhere(pattern, n))
        .cloned()
        .collect()
}

impl Task {
    /// Subscribes what of `names` can receive keyspace notifications on
    /// every master but the home connection's; what goes to the client
    /// waits for their confirmations.
    pub(super) async fn subscribe_events(&mut self, kind: Kind, names: &[Bytes]) {
        let wanted = event_names(names, kind == Kind::Pattern);
        if wanted.is_empty() {
            return;
        }
        for addr in self.other_masters() {
            self.subscribe_on(addr, kind, &wanted, true).await;
        }
    }

    /// Every master but the one the home connection is on.
    fn other_masters(&self) -> BTreeSet<String> {
        let home = self.conns.get(&Key::Global).map(|c| c.addr.as_str());
        let table = self.deps.table.load();
        table
            .shards()
            .iter()
            .map(|s| s.master.addr())
            .filter(|a| Some(*a) != home)
            .map(str::to_string)
            .collect()
    }

    /// Subscribes `names` on the events connection to `addr`; with `hold`,
    /// the client's replies wait for its confirmations.
    async fn subscribe_on(&mut self, addr: String, kind: Kind, names: &[Bytes], hold: bool) {
        let key = Key::Events(addr);
        match self.send_subscribe(&key, kind, names, false).await {
            Ok(()) if hold => {
                if let Some(c) = self.conns.get_mut(&key) {
                    c.awaiting += names.len();
                }
                self.held
                    .get_or_insert_with(|| (Instant::now(), Vec::new()));
            }
            Ok(()) => {}
            Err(e) => debug!(?key, error = %e, "keyspace subscription failed; the repair retries"),
        }
    }

    /// A frame from another master's events connection: its keyspace
    /// notifications go to the client, its confirmations release what
    /// waits for them, and anything else (a published message, which the
    /// home connection delivers too) is dropped.
    pub(super) async fn other_master_event(&mut self, key: &Key, frame: Bytes) {
        let parts = split_aggregate(&frame).unwrap_or_default();
        let verb = text_at(&parts, 0)
            .map(|v| v.to_ascii_lowercase())
            .unwrap_or_default();
        let channel = match (verb.as_slice(), parts.len()) {
            (b"message", 3) => text_at(&parts, 1),
            (b"pmessage", 4) => text_at(&parts, 2),
            (b"subscribe" | b"psubscribe", _) => {
                if let Some(c) = self.conns.get_mut(key) {
                    c.awaiting = c.awaiting.saturating_sub(1);
                }
                return self.release_held().await;
            }
            _ => None,
        };
        if channel.is_some_and(|c| is_event_channel(&c)) {
            self.emit(frame).await;
        }
    }

    /// Keeps an events connection on every other master while the client
    /// has keyspace subscriptions (masters added or promoted included),
    /// and none elsewhere.
    pub(super) async fn repair_events(&mut self) {
        // What the client holds once awaited confirmations come: a
        // subscription still on its way keeps its connections.
        let channels = event_names(&self.intended(Kind::Channel), false);
        let patterns = event_names(&self.intended(Kind::Pattern), true);
        let wanted = if (channels.is_empty() && patterns.is_empty())
            || !self.conns.contains_key(&Key::Global)
        {
            BTreeSet::new()
        } else {
            self.other_masters()
        };
        // A connection whose confirmations are awaited belongs to a
        // subscription still on its way.
        self.conns.retain(|k, c| match k {
            Key::Events(addr) => wanted.contains(addr) || c.awaiting > 0,
            _ => true,
        });
        for addr in wanted {
            if self.conns.contains_key(&Key::Events(addr.clone())) {
                continue;
            }
            if !channels.is_empty() {
                self.subscribe_on(addr.clone(), Kind::Channel, &channels, false)
                    .await;
            }
            if !patterns.is_empty() {
                self.subscribe_on(addr, Kind::Pattern, &patterns, false)
                    .await;
            }
        }
        self.release_held().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_channels() {
        assert!(is_event_channel(b"__keyspace@0__:foo"));
        assert!(is_event_channel(b"__keyevent@0__:set"));
        assert!(!is_event_channel(b"news"));
        assert!(everywhere(false, b"__keyevent@0__:expired"));
        assert!(!everywhere(false, b"__keyspace"));
        assert!(!everywhere(false, b"*"));
        // Every pattern: PUBLISH counts it wherever the channel lives.
        assert!(everywhere(true, b"news.*"));
        assert!(everywhere(true, b"__keyspace@0__:*"));
    }
}
