//! What the read side hands the write side: one reply slot per request, in
//! request order, and the request's timing.

use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::backend::{try_reply, BatchRx, ReplyResult, ReplyRx};
use crate::cluster::retry::{Attempt, Target};
use crate::command::fanout::FanOut;
use crate::error::ProxyError;
use crate::ops::metrics::CommandMetrics;

/// When a request was read, and its command's metrics.
pub(crate) struct Timing {
    pub(crate) started: Instant,
    pub(crate) command: &'static CommandMetrics,
    /// The request, for the slow log, unless its reply slot holds it (a
    /// forward's attempt does: one reference count less per request).
    pub(crate) frame: Option<Bytes>,
    /// The client's name then, for the slow log.
    pub(crate) name: Option<Bytes>,
    /// CLIENT REPLY OFF or SKIP: the reply is not written.
    pub(crate) silent: bool,
}

/// What the read side hands the write side: a reply slot (in request
/// order) and, for requests, their timing.
pub(crate) type Item = (Pending, Option<Timing>);

/// A reply slot, in request order.
pub(crate) enum Pending {
    /// Already known (local command or error).
    Ready(Bytes),
    /// Waiting for a backend.
    Routed(Routed),
    /// Waiting for a backend, in a batch of this read's requests.
    Member(Member),
    /// Final whatever it holds (served by a migration's stream, which
    /// completed it already).
    Final(ReplyRx),
    /// Waiting for several backends, then merged.
    FanOut(Box<FanOut>),
    /// Fired once every earlier reply has been written.
    Barrier(oneshot::Sender<()>),
    /// From here on, also forward these pub/sub messages.
    Subscribed(mpsc::Receiver<Bytes>),
    /// No reply (pub/sub confirmations arrive as messages).
    Nothing,
    /// The client went idle: the writer's phase ends (nothing is pending).
    Pause,
    /// The client is being closed: write what is pending, then shut down.
    Close,
}

/// One forwarded request in flight.
pub(crate) struct Routed {
    pub(crate) attempt: Attempt,
    pub(crate) sent: Result<ReplyRx, ProxyError>,
}

impl Routed {
    /// The first outcome if it is already here, without waiting.
    pub(crate) fn try_take(&mut self) -> Option<ReplyResult> {
        match &mut self.sent {
            Ok(slot) => try_reply(slot),
            Err(e) => Some(Err(e.clone())),
        }
    }
}

/// What [`Session::dispatch`] made of a request.
pub(crate) enum Dispatched {
    /// Its reply slot, to queue now.
    Now(Pending),
    /// A plain forward: staged, and sent with the rest of its read.
    Forward { target: Target, readonly: bool },
}

/// At most this many forwarded requests of one read are staged before they
/// are sent (a bound on what is read ahead of the reply queue).
pub(crate) const MAX_STAGED: usize = 64;

/// How a staged request was sent.
pub(crate) enum Slot {
    /// Alone (or not at all).
    One(Result<ReplyRx, ProxyError>),
    /// In a batch to one node.
    Member(Place),
}

/// A request's place in a batch sent to one node.
pub(crate) struct Place {
    /// The session's number for the batch.
    pub(crate) batch: u32,
    /// Its place in the batch, and the batch's size.
    pub(crate) index: usize,
    pub(crate) count: usize,
    /// The batch's reply slot, carried by its first request: the writer
    /// meets that one first and keeps the other replies for the rest.
    pub(crate) rx: Option<BatchRx>,
}

/// A request sent in a batch with others of its read (to the same node).
pub(crate) struct Member {
    pub(crate) attempt: Attempt,
    pub(crate) place: Place,
}

/// The client-visible bytes of a backend outcome.
pub(crate) fn reply_bytes(r: ReplyResult) -> Bytes {
    r.unwrap_or_else(|e| e.to_resp())
}
