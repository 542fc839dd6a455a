//! Dedicated backend connections for stateful commands: transactions
//! (WATCH/MULTI/EXEC), blocking commands and their kin, which cannot share a
//! multiplexed connection.
//!
//! Connections come from a bounded pool (`backend.max_dedicated_connections`
//! in use at once); a few idle ones per node are kept for reuse. A
//! connection whose state is unknown (an error, a client that went away while
//! blocked) is closed, never returned to the pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::FramedRead;

use crate::backend::{read_failure, Link};
use crate::config::Tunable;
use crate::error::ProxyError;
use crate::resp::{encode, error_text, ReplyDecoder};
use crate::tls::{ReadHalf, WriteHalf};

/// Idle dedicated connections kept per node and protocol.
const IDLE_PER_NODE: usize = 4;

/// One dedicated connection to a node.
pub struct Dedicated {
    addr: String,
    resp3: bool,
    /// The node's CLIENT ID for this connection, once asked (see
    /// [`Dedicated::wants_client_id`]); `Some(None)` if the node refused.
    client_id: Option<Option<u64>>,
    reader: DedicatedReader,
    writer: DedicatedWriter,
}

impl Dedicated {
    /// The node's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the node's CLIENT ID for this connection is still to be
    /// asked: a blocking command pipelines `CLIENT ID` before itself, so
    /// CLIENT UNBLOCK at the proxy can unblock it on the node.
    pub fn wants_client_id(&self) -> bool {
        self.client_id.is_none()
    }

    /// Records the reply to `CLIENT ID`.
    pub fn set_client_id(&mut self, reply: &[u8]) {
        let id = reply
            .strip_prefix(b":")
            .and_then(|r| r.strip_suffix(b"\r\n"))
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse().ok());
        self.client_id = Some(id);
    }

    /// The node's CLIENT ID for this connection, if known.
    pub fn client_id(&self) -> Option<u64> {
        self.client_id.flatten()
    }

    /// Writes one or more complete requests.
    pub async fn write(&mut self, frames: &[u8]) -> Result<(), ProxyError> {
        self.writer.write(frames).await
    }

    /// Reads one reply (no timeout: blocking commands carry their own).
    pub async fn read(&mut self) -> Result<Bytes, ProxyError> {
        self.reader.read().await
    }

    /// Whether an idle connection is still open: nothing to read, no EOF.
    /// (Polls the reader once without waiting; for TLS this also consumes
    /// protocol records such as session tickets, which carry no data.)
    fn is_alive(&mut self) -> bool {
        self.reader.rd.read_buffer().is_empty() && self.reader.rd.next().now_or_never().is_none()
    }

    /// Splits the connection for a reader task and a writer (pub/sub).
    pub fn into_split(self) -> (DedicatedReader, DedicatedWriter) {
        (self.reader, self.writer)
    }

    /// Writes `frame` and reads its reply.
    pub async fn call(&mut self, frame: &[u8]) -> Result<Bytes, ProxyError> {
        self.write(frame).await?;
        self.read().await
    }
}

/// The read half of a split dedicated connection; holds the pool permit.
pub struct DedicatedReader {
    rd: FramedRead<ReadHalf, ReplyDecoder>,
    _permit: OwnedSemaphorePermit,
}

impl DedicatedReader {
    /// Reads one frame.
    pub async fn read(&mut self) -> Result<Bytes, ProxyError> {
        match self.rd.next().await {
            Some(Ok(frame)) => Ok(frame),
            Some(Err(e)) => Err(read_failure(e)),
            None => Err(ProxyError::BackendConnectionLost(
                "closed by the node".into(),
            )),
        }
    }
}

/// The write half of a split dedicated connection.
pub struct DedicatedWriter {
    wr: WriteHalf,
}

impl DedicatedWriter {
    /// Writes complete requests.
    pub async fn write(&mut self, frames: &[u8]) -> Result<(), ProxyError> {
        crate::tls::write_all(&mut self.wr, frames)
            .await
            .map_err(|e| ProxyError::BackendConnectionLost(e.to_string()))
    }
}

/// The bounded pool of dedicated connections.
pub struct DedicatedPool {
    idle: Mutex<HashMap<(String, bool), Vec<Dedicated>>>,
    permits: Arc<Semaphore>,
    /// Connect timeout (reloadable).
    pub connect_timeout: Tunable,
    link: Link,
}

impl std::fmt::Debug for DedicatedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedicatedPool").finish_non_exhaustive()
    }
}

impl DedicatedPool {
    /// A pool allowing `max` connections in use at once.
    pub fn new(max: usize, connect_timeout: Duration, link: Link) -> DedicatedPool {
        DedicatedPool {
            idle: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(max)),
            connect_timeout: Tunable::new(connect_timeout),
            link,
        }
    }

    /// An idle connection to `addr`, or a new one (HELLO 3 first for RESP3).
    /// Fails at once when the pool is exhausted.
    pub async fn get(&self, addr: &str, resp3: bool) -> Result<Dedicated, ProxyError> {
        loop {
            let idle = self
                .idle
                .lock()
                .expect("pool lock")
                .get_mut(&(addr.to_string(), resp3))
                .and_then(Vec::pop);
            match idle {
                // An idle connection the node closed meanwhile (restart,
                // failover, client timeout) is dropped, never handed out.
                Some(mut c) => {
                    if c.is_alive() {
                        return Ok(c);
                    }
                }
                None => break,
            }
        }
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            ProxyError::Syntax(
                "slotproxy: too many dedicated backend connections in use (backend.max_dedicated_connections)"
                    .into(),
            )
        })?;
        let stream = self
            .link
            .open(addr, self.connect_timeout.get())
            .await
            .map_err(ProxyError::BackendUnavailable)?;
        let (rd, wr) = stream.into_split();
        let mut c = Dedicated {
            addr: addr.to_string(),
            resp3,
            client_id: None,
            reader: DedicatedReader {
                rd: FramedRead::new(rd, ReplyDecoder::new()),
                _permit: permit,
            },
            writer: DedicatedWriter { wr },
        };
        if resp3 {
            let reply = c.call(&encode::command(&["HELLO", "3"])).await?;
            if let Some(why) = error_text(&reply) {
                return Err(ProxyError::BackendProtocol(format!("-{why}")));
            }
        }
        Ok(c)
    }

    /// Returns a connection in a clean state for reuse.
    pub fn put(&self, c: Dedicated) {
        let mut idle = self.idle.lock().expect("pool lock");
        let list = idle.entry((c.addr.clone(), c.resp3)).or_default();
        if list.len() < IDLE_PER_NODE {
            list.push(c);
        }
    }
}
