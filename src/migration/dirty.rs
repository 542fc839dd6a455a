//! Keys to copy again: the secondary's mirror of a write failed or its
//! outcome is unknown, or the write is one that is copied rather than
//! replayed. A key is never dropped from here silently: it leaves only to
//! be copied, and a failed copy marks it again.

use std::collections::HashSet;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// The set of keys to copy again.
#[derive(Debug, Default)]
pub struct Dirty {
    keys: Mutex<HashSet<Bytes>>,
    wake: Notify,
}

impl Dirty {
    /// Marks one key.
    pub fn mark(&self, key: Bytes) {
        self.keys.lock().expect("dirty lock").insert(key);
        self.wake.notify_one();
    }

    /// Marks every key of `keys`.
    pub fn mark_all(&self, keys: Vec<Bytes>) {
        if keys.is_empty() {
            return;
        }
        self.keys.lock().expect("dirty lock").extend(keys);
        self.wake.notify_one();
    }

    /// Takes up to `n` keys out, to be copied.
    pub fn take(&self, n: usize) -> Vec<Bytes> {
        let mut keys = self.keys.lock().expect("dirty lock");
        if keys.len() <= n {
            return keys.drain().collect();
        }
        let out: Vec<Bytes> = keys.iter().take(n).cloned().collect();
        for k in &out {
            keys.remove(k);
        }
        out
    }

    /// Keys marked now.
    pub fn len(&self) -> usize {
        self.keys.lock().expect("dirty lock").len()
    }

    /// Whether no key is marked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves when a key is marked (registered before looking, so a mark
    /// in between is not missed).
    pub fn notified(&self) -> Notified<'_> {
        self.wake.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_leave_only_when_taken() {
        let d = Dirty::default();
        d.mark(Bytes::from_static(b"a"));
        d.mark_all(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        assert_eq!(d.len(), 2);
        assert_eq!(d.take(1).len(), 1);
        assert_eq!(d.take(10).len(), 1);
        assert!(d.is_empty());
    }
}
