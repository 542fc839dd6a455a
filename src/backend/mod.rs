//! The backend layer: connections to the cluster's nodes.
//!
//! * [`node`]: a node's multiplexed, pipelined connections ("lanes"),
//!   shared by every frontend session.
//! * [`queue`]: the bounded lane queue (and a session's reply queue).
//! * [`dedicated`]: the pool of dedicated connections for transactions,
//!   blocking commands and subscriptions.
//! * [`link`]: how any connection to a node is opened (TCP, TLS, AUTH).
//!
//! This module holds what all of them hand back: a request's reply slot and
//! what a dropped slot means. Nothing here knows slots or redirects: the
//! cluster layer above decides where a request goes and what a reply means.

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::ProxyError;
use crate::resp::ProtocolError;

pub mod dedicated;
pub mod link;
pub mod node;
pub mod queue;
mod roomy;

pub use link::Link;
pub use node::{BackendSettings, Node};

/// What a request's reply slot receives.
pub type ReplyResult = Result<Bytes, ProxyError>;
/// The receiving end of a request's reply slot.
pub type ReplyRx = oneshot::Receiver<ReplyResult>;
/// The receiving end of a batch's reply slot: one outcome per request, in
/// order.
pub type BatchRx = oneshot::Receiver<Vec<ReplyResult>>;

/// Which connection of a node a client uses: its index (taken modulo
/// `connections_per_node`) and the protocol the client speaks. RESP3 clients
/// get their own connections, switched to RESP3 with HELLO 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lane {
    /// Connection index.
    pub index: usize,
    /// Whether the client speaks RESP3.
    pub resp3: bool,
}

/// Awaits a reply slot, mapping a dropped slot to "connection lost". The
/// slot must not have delivered its reply already.
pub async fn recv_reply(rx: &mut ReplyRx) -> ReplyResult {
    rx.await.unwrap_or_else(|_| Err(slot_closed()))
}

/// The reply if it is already in its slot, without waiting; a dropped slot
/// is "connection lost" (and must not be awaited again).
pub fn try_reply(rx: &mut ReplyRx) -> Option<ReplyResult> {
    try_slot(rx, || Err(slot_closed()))
}

/// Awaits a batch's reply slot: `count` outcomes, in request order.
pub async fn recv_batch(rx: &mut BatchRx, count: usize) -> Vec<ReplyResult> {
    rx.await.unwrap_or_else(|_| batch_closed(count))
}

/// A batch's outcomes if they are already here, without waiting (see
/// [`try_reply`]).
pub fn try_batch(rx: &mut BatchRx, count: usize) -> Option<Vec<ReplyResult>> {
    try_slot(rx, || batch_closed(count))
}

/// A slot's content if it is here; `closed()` if its connection dropped it.
fn try_slot<T>(rx: &mut oneshot::Receiver<T>, closed: impl FnOnce() -> T) -> Option<T> {
    match rx.try_recv() {
        Ok(content) => Some(content),
        Err(oneshot::error::TryRecvError::Empty) => None,
        Err(oneshot::error::TryRecvError::Closed) => Some(closed()),
    }
}

/// What a reply slot dropped by its connection means.
fn slot_closed() -> ProxyError {
    ProxyError::BackendConnectionLost("connection closed".into())
}

/// A dropped batch slot: every one of its `count` requests lost.
fn batch_closed(count: usize) -> Vec<ReplyResult> {
    (0..count).map(|_| Err(slot_closed())).collect()
}

/// A failed read: a socket error loses the connection; anything else is
/// bytes that are not RESP.
pub(crate) fn read_failure(e: ProtocolError) -> ProxyError {
    match e {
        ProtocolError::Io(e) => ProxyError::BackendConnectionLost(e.to_string()),
        other => ProxyError::BackendProtocol(other.to_string()),
    }
}
