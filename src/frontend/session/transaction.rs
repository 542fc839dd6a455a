//! MULTI, EXEC, DISCARD, WATCH and UNWATCH.
//!
//! The state machine is pure ([`Txn`]): what a command inside MULTI does to
//! the transaction, and the one write EXEC sends. The session part pins the
//! transaction to a dedicated connection to its slot's master (the one
//! WATCH used, if any) and asks the retrier's follower what a refusal
//! means: the slot table is patched on MOVED, and an attempt that was
//! never written goes again; a transaction the node refused while queueing
//! is reported as the node reported it (EXECABORT), never half-applied.

use bytes::{Bytes, BytesMut};

use super::Session;
use crate::backend::dedicated::Dedicated;
use crate::backend::ReplyResult;
use crate::cluster::redirect::Kind;
use crate::cluster::retry::{Hop, Target};
use crate::cluster::slot::key_slot;
use crate::command::router::Route;
use crate::error::ProxyError;
use crate::resp::{encode, error_text, is_error, Request};

/// A transaction being queued (between MULTI and EXEC).
#[derive(Debug, Default)]
pub(crate) struct Txn {
    /// The slot every queued command must hash to, once known.
    slot: Option<u16>,
    /// The queued requests.
    queued: Vec<Bytes>,
    /// A command failed to queue: EXEC will abort.
    dirty: bool,
    /// A queued command writes (a WRITE pause holds EXEC).
    writes: bool,
    /// The queued commands' keys (a migration copies them after EXEC).
    keys: Vec<Bytes>,
}

/// What a command inside MULTI does.
#[derive(Debug)]
pub(crate) enum InMulti {
    /// EXEC: run the transaction.
    Exec,
    /// DISCARD: drop it.
    Discard,
    /// Queued, or refused (the reply says which).
    Reply(Bytes),
}

impl Txn {
    /// MULTI; a transaction after WATCH starts pinned to the watched slot.
    pub(crate) fn begin(watched: Option<u16>) -> Txn {
        Txn {
            slot: watched,
            ..Txn::default()
        }
    }

    /// Takes one command routed `route` inside MULTI. A command that cannot
    /// run in this transaction (another slot, a fan-out, a command the
    /// proxy cannot queue) is refused and makes EXEC abort, as Redis does
    /// for a command that fails to queue.
    pub(crate) fn take(&mut self, route: &Route<'_>, req: &Request) -> InMulti {
        let target = match route {
            Route::Transaction(spec) => {
                return match spec.name.as_str() {
                    "exec" => InMulti::Exec,
                    "discard" => InMulti::Discard,
                    "multi" => InMulti::Reply(ProxyError::NestedMulti.to_resp()),
                    _ => InMulti::Reply(ProxyError::WatchInMulti.to_resp()),
                };
            }
            Route::Forward { target, .. } | Route::Dedicated(target) => target,
            Route::Local(_) => &Target::AnyMaster,
            Route::FanOut(_) => return self.refuse(ProxyError::CrossSlot),
            Route::Info(_) | Route::PubSub(_) | Route::Wait | Route::OwnConfig(_) => {
                let name = String::from_utf8_lossy(req.arg(0)).to_uppercase();
                return self.refuse(ProxyError::NotInMulti(name));
            }
            Route::Reject(e) => return self.refuse(e.clone()),
        };
        if let Target::Slot(s) = target {
            match self.slot {
                Some(prev) if prev != *s => return self.refuse(ProxyError::CrossSlot),
                _ => self.slot = Some(*s),
            }
        }
        self.queued.push(req.frame().clone());
        InMulti::Reply(encode::simple("QUEUED"))
    }

    fn refuse(&mut self, e: ProxyError) -> InMulti {
        self.dirty = true;
        InMulti::Reply(e.to_resp())
    }

    /// Notes that a queued command writes.
    pub(crate) fn mark_writes(&mut self) {
        self.writes = true;
    }

    /// Whether a queued command writes.
    pub(crate) fn writes(&self) -> bool {
        self.writes
    }

    /// Notes keys a queued command names (see [`Txn::keys`]).
    pub(crate) fn note_keys(&mut self, keys: Vec<Bytes>) {
        self.keys.extend(keys);
    }

    /// The keys the queued commands name.
    pub(crate) fn keys(&self) -> &[Bytes] {
        &self.keys
    }

    /// The queued requests.
    pub(crate) fn queued(&self) -> &[Bytes] {
        &self.queued
    }

    /// Whether a command failed to queue (EXEC aborts).
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Where the transaction runs: its slot's master, or any master.
    pub(crate) fn target(&self) -> Target {
        self.slot.map_or(Target::AnyMaster, Target::Slot)
    }

    /// MULTI, the queued commands and EXEC, as one write.
    pub(crate) fn frame(&self) -> BytesMut {
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&encode::command(&["MULTI"]));
        for q in &self.queued {
            frame.extend_from_slice(q);
        }
        frame.extend_from_slice(&encode::command(&["EXEC"]));
        frame
    }

    /// Replies the node sends for [`Txn::frame`]: MULTI's, one per queued
    /// command, and EXEC's (the last, the one the client gets).
    pub(crate) fn replies(&self) -> usize {
        self.queued.len() + 2
    }
}

/// The one slot of WATCH's keys, given the slot watched so far.
pub(crate) fn watch_slot(
    watched: Option<u16>,
    keys: impl IntoIterator<Item = u16>,
) -> Result<Option<u16>, ProxyError> {
    let mut slot = watched;
    for s in keys {
        match slot {
            Some(prev) if prev != s => return Err(ProxyError::CrossSlot),
            _ => slot = Some(s),
        }
    }
    Ok(slot)
}

/// WATCH: the dedicated connection the watched keys were sent on.
pub(crate) struct Watch {
    slot: u16,
    conn: Dedicated,
}

impl Session {
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH outside a transaction.
    pub(crate) async fn transaction(&mut self, name: &str, req: &Request) -> Bytes {
        match name {
            "multi" => {
                self.txn = Some(Box::new(Txn::begin(self.watch.as_ref().map(|w| w.slot))));
                Bytes::from_static(encode::OK)
            }
            "exec" => ProxyError::WithoutMulti("EXEC").to_resp(),
            "discard" => ProxyError::WithoutMulti("DISCARD").to_resp(),
            "unwatch" => {
                self.unwatch().await;
                Bytes::from_static(encode::OK)
            }
            "watch" => {
                let slot = match self.slot_of_keys(req) {
                    Ok(s) => s,
                    Err(e) => return e.to_resp(),
                };
                if !self.barrier().await {
                    return ProxyError::ShuttingDown.to_resp();
                }
                self.watch(slot, req).await
            }
            other => {
                ProxyError::Internal(format!("unexpected transaction command {other}")).to_resp()
            }
        }
    }

    /// A command inside MULTI: queued (with its slot checked) or, for EXEC,
    /// DISCARD and nested MULTI/WATCH, handled.
    pub(crate) async fn queue(&mut self, route: Route<'_>, req: &Request) -> Bytes {
        let Some(txn) = self.txn.as_mut() else {
            return ProxyError::Internal("queued outside MULTI".into()).to_resp();
        };
        match txn.take(&route, req) {
            InMulti::Reply(reply) => reply,
            InMulti::Exec => self.exec().await,
            InMulti::Discard => {
                self.txn = None;
                self.unwatch().await;
                Bytes::from_static(encode::OK)
            }
        }
    }

    /// The one slot of a keyed request's keys (WATCH).
    fn slot_of_keys(&mut self, req: &Request) -> Result<u16, ProxyError> {
        let commands = self.shared.commands.load();
        let spec = commands.lookup(req)?;
        self.keys.clear();
        spec.key_positions(req, true, &mut self.keys);
        let keys = self.keys.iter().map(|&i| key_slot(req.arg(i)));
        watch_slot(self.watch.as_ref().map(|w| w.slot), keys)?
            .ok_or_else(|| ProxyError::WrongArity(spec.name.clone()))
    }

    /// WATCH on the transaction's connection. A first WATCH follows the
    /// cluster to the slot's master; once keys are watched on a connection,
    /// a refusal means the watch set is unknown, and the client must start
    /// over.
    async fn watch(&mut self, slot: u16, req: &Request) -> Bytes {
        let shared = self.shared.clone();
        let mut follower = shared.retrier.follower(Kind::READ);
        let mut hop = Hop::Again;
        loop {
            let watching = self.watch.is_some();
            let (mut outcome, conn) = match self.pinned_conn(Target::Slot(slot), &hop).await {
                Ok(mut conn) => match conn.call(req.frame()).await {
                    Ok(reply) => (Ok(reply), Some(conn)),
                    Err(e) => (Err(e), None),
                },
                Err(e) => (Err(e), None),
            };
            if watching {
                // Keys are watched on this connection: no other will do.
                shared.retrier.observe(&outcome);
                return self.watched(slot, outcome, conn);
            }
            match follower.next(&mut outcome, req.frame()).await {
                Some(next) => hop = next,
                None => return self.watched(slot, outcome, conn),
            }
        }
    }

    /// WATCH on a connection to a node outside the cluster (a migration's
    /// source), opened by `open` unless keys are watched already; the
    /// cluster's rule (one slot) still holds.
    pub(crate) async fn watch_elsewhere(
        &mut self,
        req: &Request,
        open: impl std::future::Future<Output = Result<Dedicated, ProxyError>>,
    ) -> Bytes {
        let slot = match self.slot_of_keys(req) {
            Ok(s) => s,
            Err(e) => return e.to_resp(),
        };
        if !self.barrier().await {
            return ProxyError::ShuttingDown.to_resp();
        }
        let conn = match self.watch.take() {
            Some(w) => Ok(w.conn),
            None => open.await,
        };
        let (outcome, conn) = match conn {
            Ok(mut c) => match c.call(req.frame()).await {
                Ok(reply) => (Ok(reply), Some(c)),
                Err(e) => (Err(e), None),
            },
            Err(e) => (Err(e), None),
        };
        self.watched(slot, outcome, conn)
    }

    /// The address of the connection keys are watched on, if any.
    pub(crate) fn watch_addr(&self) -> Option<&str> {
        self.watch.as_ref().map(|w| w.conn.addr())
    }

    /// Forgets the watched keys and their connection (closed, not reused).
    pub(crate) fn drop_watch(&mut self) {
        self.watch = None;
    }

    /// WATCH's final outcome: the connection is kept for EXEC when the node
    /// took the keys.
    fn watched(&mut self, slot: u16, outcome: ReplyResult, conn: Option<Dedicated>) -> Bytes {
        match (outcome, conn) {
            (Ok(reply), Some(conn)) if !is_error(&reply) => {
                self.watch = Some(Box::new(Watch { slot, conn }));
                reply
            }
            (Ok(reply), _) => {
                // The watch set is unknown now: start over.
                let why = error_text(&reply).unwrap_or_default().into_owned();
                ProxyError::WatchFailed(why).to_resp()
            }
            (Err(e), _) => e.to_resp(),
        }
    }

    /// UNWATCH: the watch connection goes back to the pool if it is clean.
    pub(crate) async fn unwatch(&mut self) {
        if let Some(mut w) = self.watch.take() {
            if let Ok(reply) = w.conn.call(&encode::command(&["UNWATCH"])).await {
                if reply.first() == Some(&b'+') {
                    self.shared.dedicated.put(w.conn);
                }
            }
        }
    }

    /// The transaction's connection: the one WATCH used, else a dedicated
    /// connection to where `hop` says.
    async fn pinned_conn(&mut self, target: Target, hop: &Hop) -> Result<Dedicated, ProxyError> {
        if let Some(w) = self.watch.take() {
            return Ok(w.conn);
        }
        let (addr, _) = self.dedicated_addr(&target, hop)?;
        self.shared.dedicated.get(&addr, self.client.resp3).await
    }

    /// EXEC: MULTI, the queued commands and EXEC go in one write to the
    /// master of the transaction's slot (on the WATCH connection if any);
    /// only EXEC's reply goes back. A command the node refuses while queueing
    /// (a MOVED after a reshard, say) makes the node abort the whole
    /// transaction: it is never half-applied, and the client gets the
    /// node's EXECABORT (the follower has patched the slot table, so the
    /// client's retry goes to the new owner). Only an attempt that was never
    /// written goes again.
    async fn exec(&mut self) -> Bytes {
        let Some(txn) = self.txn.take() else {
            return ProxyError::WithoutMulti("EXEC").to_resp();
        };
        if txn.is_dirty() {
            self.unwatch().await;
            return ProxyError::ExecAbort.to_resp();
        }
        if !self.barrier().await {
            return ProxyError::ShuttingDown.to_resp();
        }
        let shared = self.shared.clone();
        let mut follower = shared.retrier.follower(Kind::WRITE);
        let frame = txn.frame().freeze();
        let mut hop = Hop::Again;
        loop {
            let mut conn = match self.pinned_conn(txn.target(), &hop).await {
                Ok(c) => c,
                Err(e) => {
                    // Never written: the follower may send it elsewhere.
                    let mut outcome = Err(e);
                    match follower.next(&mut outcome, &frame).await {
                        Some(next) => {
                            hop = next;
                            continue;
                        }
                        None => return crate::frontend::pending::reply_bytes(outcome),
                    }
                }
            };
            if let Err(e) = conn.write(&frame).await {
                return e.to_resp();
            }
            let mut exec_reply = None;
            for i in 0..txn.replies() {
                match conn.read().await {
                    Ok(reply) => {
                        if is_error(&reply) {
                            // What the refusal says of the cluster (a MOVED
                            // patches the slot table); not re-sent.
                            shared.retrier.observe(&Ok(reply.clone()));
                        }
                        if i == txn.replies() - 1 {
                            exec_reply = Some(reply);
                        }
                    }
                    Err(e) => return e.to_resp(),
                }
            }
            self.shared.dedicated.put(conn);
            return exec_reply
                .unwrap_or_else(|| ProxyError::Internal("no EXEC reply".into()).to_resp());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::slot::SlotTable;
    use crate::command::router::Router;
    use crate::command::CommandTable;

    /// Routes `args` as the session would, then hands it to `txn`.
    fn take(txn: &mut Txn, args: &[&str]) -> InMulti {
        let req = Request::from_args(args);
        let slots = SlotTable::empty();
        let slowlog = crate::ops::slowlog::SlowLog::new(Default::default(), 0);
        let router = Router {
            commands: CommandTable::builtin(),
            slots: &slots,
            allow_config_write: &|| false,
            slowlog: &slowlog,
        };
        let (route, _) = router.route(&req, &mut Vec::new());
        txn.take(&route, &req)
    }

    fn reply(r: InMulti) -> String {
        match r {
            InMulti::Reply(b) => String::from_utf8(b.to_vec()).unwrap(),
            other => panic!("not a reply: {other:?}"),
        }
    }

    #[test]
    fn commands_of_one_slot_are_queued_in_order() {
        let mut txn = Txn::begin(None);
        assert_eq!(reply(take(&mut txn, &["SET", "{t}a", "1"])), "+QUEUED\r\n");
        assert_eq!(reply(take(&mut txn, &["INCR", "{t}b"])), "+QUEUED\r\n");
        assert_eq!(reply(take(&mut txn, &["PING"])), "+QUEUED\r\n");
        assert!(!txn.is_dirty());
        assert!(matches!(txn.target(), Target::Slot(s) if s == key_slot(b"{t}")));
        assert_eq!(txn.replies(), 5);
        let frame = txn.frame().freeze();
        let expected = [
            encode::command(&["MULTI"]),
            encode::command(&["SET", "{t}a", "1"]),
            encode::command(&["INCR", "{t}b"]),
            encode::command(&["PING"]),
            encode::command(&["EXEC"]),
        ]
        .concat();
        assert_eq!(&frame[..], &expected[..]);
    }

    #[test]
    fn a_keyless_transaction_runs_on_any_master() {
        let mut txn = Txn::begin(None);
        assert_eq!(reply(take(&mut txn, &["TIME"])), "+QUEUED\r\n");
        assert!(matches!(txn.target(), Target::AnyMaster));
    }

    #[test]
    fn a_second_slot_aborts_the_transaction() {
        let mut txn = Txn::begin(None);
        assert_eq!(reply(take(&mut txn, &["SET", "a", "1"])), "+QUEUED\r\n");
        let r = reply(take(&mut txn, &["SET", "b", "2"]));
        assert!(r.starts_with("-CROSSSLOT"), "{r}");
        assert!(txn.is_dirty());
        // A cross-slot multi-key command is a fan-out, refused the same way.
        let mut txn = Txn::begin(None);
        let r = reply(take(&mut txn, &["MGET", "a", "b"]));
        assert!(r.starts_with("-CROSSSLOT"), "{r}");
        assert!(txn.is_dirty());
    }

    #[test]
    fn a_watched_slot_pins_the_transaction() {
        let slot = key_slot(b"{w}");
        let mut txn = Txn::begin(Some(slot));
        let r = reply(take(&mut txn, &["SET", "other", "1"]));
        assert!(r.starts_with("-CROSSSLOT"), "{r}");
        let mut txn = Txn::begin(Some(slot));
        assert_eq!(reply(take(&mut txn, &["SET", "{w}x", "1"])), "+QUEUED\r\n");
        assert!(!txn.is_dirty());
    }

    #[test]
    fn exec_discard_and_nesting() {
        let mut txn = Txn::begin(None);
        assert!(matches!(take(&mut txn, &["EXEC"]), InMulti::Exec));
        assert!(matches!(take(&mut txn, &["DISCARD"]), InMulti::Discard));
        assert_eq!(
            reply(take(&mut txn, &["MULTI"])),
            "-ERR MULTI calls can not be nested\r\n"
        );
        assert_eq!(
            reply(take(&mut txn, &["WATCH", "k"])),
            "-ERR WATCH inside MULTI is not allowed\r\n"
        );
        // Redis does not abort the transaction for these two.
        assert!(!txn.is_dirty());
    }

    #[test]
    fn what_cannot_be_queued_aborts_the_transaction() {
        for args in [&["WAIT", "1", "0"][..], &["SUBSCRIBE", "c"], &["INFO"]] {
            let mut txn = Txn::begin(None);
            let r = reply(take(&mut txn, args));
            assert!(r.contains("cannot run inside MULTI"), "{r}");
            assert!(txn.is_dirty());
        }
        let mut txn = Txn::begin(None);
        let r = reply(take(&mut txn, &["GET"]));
        assert!(r.starts_with("-ERR wrong number of arguments"), "{r}");
        assert!(txn.is_dirty());
        assert_eq!(txn.replies(), 2, "nothing was queued");
    }

    #[test]
    fn watch_keys_must_share_one_slot() {
        let a = key_slot(b"{a}");
        let b = key_slot(b"{b}");
        assert_eq!(watch_slot(None, [a, a]).unwrap(), Some(a));
        assert_eq!(watch_slot(Some(a), [a]).unwrap(), Some(a));
        assert!(matches!(
            watch_slot(Some(a), [b]),
            Err(ProxyError::CrossSlot)
        ));
        assert!(matches!(
            watch_slot(None, [a, b]),
            Err(ProxyError::CrossSlot)
        ));
        assert_eq!(watch_slot(None, []).unwrap(), None);
    }
}
