//! The subscription hand-off: the session starts the client's pub/sub
//! task on its first subscription and passes it (P|S)(UN)SUBSCRIBE; RESET
//! ends it. MONITOR hands the writer a stream the same way.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::Session;
use crate::error::ProxyError;
use crate::frontend::pending::Pending;
use crate::frontend::pubsub;
use crate::resp::{encode, Request};

impl Session {
    /// RESET: leave MULTI, drop WATCH, end subscriptions, back to RESP2
    /// (the name is cleared by the local command).
    pub(crate) async fn reset(&mut self) {
        self.txn = None;
        self.unwatch().await;
        self.pubsub = None;
        self.client.resp3 = false;
    }

    /// (P|S)SUBSCRIBE and (P|S)UNSUBSCRIBE: handed to the client's pub/sub
    /// task, started on the first subscription; confirmations and messages
    /// come back through the writer.
    pub(crate) async fn subscription(&mut self, name: &str, req: &Request) -> Pending {
        let (kind, subscribe) = match name {
            "subscribe" => (pubsub::Kind::Channel, true),
            "psubscribe" => (pubsub::Kind::Pattern, true),
            "ssubscribe" => (pubsub::Kind::Shard, true),
            "unsubscribe" => (pubsub::Kind::Channel, false),
            "punsubscribe" => (pubsub::Kind::Pattern, false),
            _ => (pubsub::Kind::Shard, false),
        };
        if self.client.monitoring {
            // Both would use the writer's one push stream.
            return Pending::Ready(
                ProxyError::Syntax("slotproxy: a MONITOR connection cannot subscribe".into())
                    .to_resp(),
            );
        }
        let names: Vec<Bytes> = (1..req.argc()).map(|i| req.arg_bytes(i)).collect();
        let mut first = None;
        if self.pubsub.is_none() {
            if !self.barrier().await {
                return Pending::Ready(ProxyError::ShuttingDown.to_resp());
            }
            let (handle, messages) = pubsub::start(pubsub::Deps {
                table: self.shared.table.clone(),
                retrier: self.shared.retrier.clone(),
                pool: self.shared.dedicated.clone(),
                lane: self.lane(),
            });
            self.pubsub = Some(handle);
            first = Some(messages);
        }
        let cmd = if subscribe {
            pubsub::Command::Subscribe(kind, names)
        } else {
            pubsub::Command::Unsubscribe(kind, names)
        };
        if let Some(p) = &self.pubsub {
            p.send(cmd);
        }
        match first {
            Some(messages) => Pending::Subscribed(messages),
            None => Pending::Nothing,
        }
    }

    /// MONITOR: after every earlier reply, OK, then every request through
    /// the proxy, as pushes the writer forwards. A client that reads too
    /// slowly misses lines; it never holds anyone up.
    pub(crate) async fn monitor(&mut self) -> Pending {
        if self.client.monitoring {
            // Already a monitor: Redis ignores it.
            return Pending::Nothing;
        }
        if self.pubsub.as_ref().is_some_and(|p| p.active() > 0) {
            return Pending::Ready(
                ProxyError::Syntax("slotproxy: MONITOR is not allowed while subscribed".into())
                    .to_resp(),
            );
        }
        if !self.barrier().await {
            return Pending::Ready(ProxyError::ShuttingDown.to_resp());
        }
        let mut watcher = self.shared.proxy.monitor.watch();
        let (tx, rx) = mpsc::channel(1024);
        let _ = tx.try_send(Bytes::from_static(encode::OK));
        tokio::spawn(async move {
            while let Some(line) = watcher.next().await {
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(line) {
                    return;
                }
            }
        });
        self.client.monitoring = true;
        Pending::Subscribed(rx)
    }
}
