//! Blocking commands (BLPOP, XREAD BLOCK, ...): each runs alone on a
//! dedicated connection, after every earlier reply, and follows the
//! cluster through the retrier's follower. Client input that arrives
//! meanwhile is kept for later; if the client goes away, the connection is
//! closed, which unblocks the node.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::Session;
use crate::backend::{Node, ReplyResult};
use crate::cluster::redirect::Kind;
use crate::cluster::retry::{Hop, Target};
use crate::error::ProxyError;
use crate::frontend::pending::reply_bytes;
use crate::resp::{encode, Request};

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
    /// later. `None` if the client disconnected meanwhile.
    async fn block_on(&mut self, addr: &str, asking: bool, req: &Request) -> Option<ReplyResult> {
        let mut conn = match self.shared.dedicated.get(addr, self.client.resp3).await {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        let mut frame = BytesMut::new();
        if asking {
            frame.extend_from_slice(&encode::command(&["ASKING"]));
        }
        frame.extend_from_slice(req.frame());
        if let Err(e) = conn.write(&frame).await {
            return Some(Err(e));
        }
        if asking {
            if let Err(e) = conn.read().await {
                return Some(Err(e));
            }
        }
        let proxy = self.shared.proxy.clone();
        let _blocked = proxy.blocked();
        let reply = match self.while_client_waits(conn.read()).await? {
            Ok(reply) => reply,
            Err(e) => return Some(Err(e)),
        };
        self.shared.dedicated.put(conn);
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
