//! Blocking commands (BLPOP, XREAD BLOCK, ...): each runs alone on a
//! dedicated connection, after every earlier reply, and follows the
//! cluster through the retrier's follower. Client input that arrives
//! meanwhile is kept for later; if the client goes away, the connection is
//! closed, which unblocks the node. CLIENT UNBLOCK at the proxy is passed
//! to the node as CLIENT UNBLOCK of the connection's node-side id, so the
//! node answers (and nothing it popped is lost).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::Session;
use crate::backend::dedicated::{Dedicated, DedicatedPool};
use crate::backend::{Node, ReplyResult};
use crate::cluster::redirect::Kind;
use crate::cluster::retry::{Hop, Target};
use crate::error::ProxyError;
use crate::frontend::pending::reply_bytes;
use crate::ops::clients::{ClientEntry, Unblock};
use crate::resp::{encode, error_text, Request};

impl Session {
    /// A blocking command, after every earlier reply.
    pub(crate) async fn blocking(&mut self, target: Target, req: &Request) -> Bytes {
        if !self.barrier().await {
            return ProxyError::ShuttingDown.to_resp();
        }
        let shared = self.shared.clone();
        // A blocking command's outcome is unknown once it was written (it
        // may have popped): never re-sent after a lost connection.
        let mut follower = shared.retrier.follower(Kind::WRITE);
        let mut hop = Hop::Again;
        loop {
            let mut outcome = match self.dedicated_addr(&target, &hop) {
                Ok((addr, asking)) => match self.block_on(&addr, asking, req).await {
                    Some(outcome) => outcome,
                    // The client left: dropping the connection unblocked the node.
                    None => return ProxyError::ShuttingDown.to_resp(),
                },
                Err(e) => Err(e),
            };
            match follower.next(&mut outcome, req.frame()).await {
                Some(next) => hop = next,
                None => return reply_bytes(outcome),
            }
        }
    }

    /// One attempt on a dedicated connection to `addr` (ASKING first for an
    /// ASK): its reply, awaited while input from the client is kept for
    /// later and CLIENT UNBLOCK is listened for. `None` if the client
    /// disconnected meanwhile.
    async fn block_on(&mut self, addr: &str, asking: bool, req: &Request) -> Option<ReplyResult> {
        let shared = self.shared.clone();
        let mut conn = match shared.dedicated.get(addr, self.client.resp3).await {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        let ask_id = conn.wants_client_id();
        let mut frame = BytesMut::new();
        if ask_id {
            // Before ASKING, which applies to the next command only.
            frame.extend_from_slice(&encode::command(&["CLIENT", "ID"]));
        }
        if asking {
            frame.extend_from_slice(&encode::command(&["ASKING"]));
        }
        frame.extend_from_slice(req.frame());
        if let Err(e) = conn.write(&frame).await {
            return Some(Err(e));
        }
        if ask_id {
            match conn.read().await {
                Ok(id) => conn.set_client_id(&id),
                Err(e) => return Some(Err(e)),
            }
        }
        if asking {
            if let Err(e) = conn.read().await {
                return Some(Err(e));
            }
        }
        let _blocked = shared.proxy.blocked();
        let me = BlockedMark::new(self.client.entry.clone());
        let read = read_blocked(&mut conn, me.entry(), &shared.dedicated);
        let reply = match self.while_client_waits(read).await? {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Some(Err(e)),
            // The node could not be told: the connection is closed (which
            // unblocks it there), and the reply is made here.
            Err(how) => return Some(Ok(unblocked_reply(how, req.arg(0), self.client.resp3))),
        };
        shared.dedicated.put(conn);
        Some(Ok(reply))
    }

    /// Where a dedicated attempt goes: the node a redirect named (and
    /// whether to send ASKING), or the master of `target` now.
    pub(crate) fn dedicated_addr(
        &self,
        target: &Target,
        hop: &Hop,
    ) -> Result<(String, bool), ProxyError> {
        match hop {
            Hop::To { addr, asking } => Ok((addr.clone(), *asking)),
            Hop::Again | Hop::LoadScript(_) => {
                Ok((self.master_of(target)?.addr().to_string(), false))
            }
        }
    }

    /// The master of `target` now, for a dedicated connection.
    fn master_of(&self, target: &Target) -> Result<Arc<Node>, ProxyError> {
        self.shared.retrier.master_of(target, self.lane())
    }

    /// Awaits `work` (a blocked command's reply) while keeping an eye on the
    /// client: input that arrives meanwhile is kept for later (up to
    /// `max_pipeline` frames); `None` if the client disconnected.
    pub(crate) async fn while_client_waits<T>(
        &mut self,
        work: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(work);
        loop {
            let room = self.backlog.as_ref().map_or(0, |b| b.len()) < self.max_pipeline;
            tokio::select! {
                r = &mut work => return Some(r),
                input = self.frames.next(), if room => match input {
                    Some(input) => self.backlog.get_or_insert_default().push_back(input),
                    None => {
                        self.client.closing = true;
                        return None;
                    }
                },
            }
        }
    }
}

/// Marks a client as blocked (for CLIENT UNBLOCK) while it lives.
pub(super) struct BlockedMark(Arc<ClientEntry>);

impl BlockedMark {
    pub(super) fn new(entry: Arc<ClientEntry>) -> BlockedMark {
        entry.set_blocked(true);
        BlockedMark(entry)
    }

    pub(super) fn entry(&self) -> &ClientEntry {
        &self.0
    }
}

impl Drop for BlockedMark {
    fn drop(&mut self) {
        self.0.set_blocked(false);
    }
}

/// Reads a blocked command's reply on `conn`. When CLIENT UNBLOCK asks
/// (through `me`), the node is sent `CLIENT UNBLOCK <id> TIMEOUT|ERROR`
/// for the connection and its answer is read as usual. `Err(how)` if the
/// node could not be told (its id unknown, or the command refused): the
/// connection must then be dropped.
pub(super) async fn read_blocked(
    conn: &mut Dedicated,
    me: &ClientEntry,
    pool: &DedicatedPool,
) -> Result<ReplyResult, Unblock> {
    let how = tokio::select! {
        reply = conn.read() => return Ok(reply),
        how = me.unblocked() => how,
    };
    let Some(id) = conn.client_id() else {
        return Err(how);
    };
    let mode = match how {
        Unblock::Timeout => "TIMEOUT",
        Unblock::Error => "ERROR",
    };
    let told = match pool.get(conn.addr(), false).await {
        Ok(mut other) => {
            let frame = encode::command(&["CLIENT", "UNBLOCK", &id.to_string(), mode]);
            match other.call(&frame).await {
                Ok(r) => {
                    pool.put(other);
                    error_text(&r).is_none()
                }
                Err(_) => false,
            }
        }
        Err(_) => false,
    };
    // Told (or already answering: `:0`), the node's reply follows.
    if told {
        Ok(conn.read().await)
    } else {
        Err(how)
    }
}

/// The reply to a command CLIENT UNBLOCK ended at the proxy: Redis's
/// UNBLOCKED error, or the command's reply on timeout.
pub(super) fn unblocked_reply(how: Unblock, command: &[u8], resp3: bool) -> Bytes {
    match how {
        Unblock::Error => Bytes::from_static(b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n"),
        Unblock::Timeout if command.eq_ignore_ascii_case(b"wait") => encode::integer(0),
        Unblock::Timeout if resp3 => encode::null(true),
        Unblock::Timeout
            if command.eq_ignore_ascii_case(b"blmove")
                || command.eq_ignore_ascii_case(b"brpoplpush") =>
        {
            encode::null(false)
        }
        Unblock::Timeout => encode::null_array(),
    }
}
