//! The frontend session: one per client connection.
//!
//! The read side decodes requests, routes each one and queues a reply slot
//! for it; the write side takes the slots in order and writes each reply as
//! soon as it is ready, coalescing ready replies into one write. So
//! pipelined requests to different nodes are served concurrently while
//! replies go back strictly in request order.
//!
//! Backpressure: at most `frontend.max_pipeline` replies may be pending per
//! client. When the queue is full the session stops reading from the
//! client, and TCP flow control does the rest.
//!
//! A malformed frame gets `-ERR Protocol error: ...` after the replies to
//! the requests before it, then the connection is closed. Nothing is shared
//! between sessions except the (immutable) tables and the backend queues, so
//! one client's bad input cannot affect another client.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::oneshot::error::TryRecvError;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use std::sync::atomic::Ordering;

use crate::backend::{ReplyResult, ReplyRx};
use crate::command::Commands;
use crate::error::ProxyError;
use crate::fanout::{self, Merge, Plan};
use crate::local::{self, ClientState, Ctx, ProxyInfo};
use crate::resp::{Limits, ProtocolError, Request, RequestDecoder};
use crate::retry::{Attempt, Retrier};
use crate::router::{Route, Router};
use crate::slot::SharedSlotTable;

/// Replies at least this large are written directly instead of being copied
/// into the output buffer.
const LARGE_REPLY: usize = 16 * 1024;
/// Output is flushed once this much is buffered.
const MAX_OUT: usize = 64 * 1024;

/// What every session shares.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The current slot table.
    pub table: SharedSlotTable,
    /// The current command table.
    pub commands: Commands,
    /// Request decoder limits.
    pub limits: Limits,
    /// Maximum pending replies per client.
    pub max_pipeline: usize,
    /// `frontend.allow_config_write`.
    pub allow_config_write: bool,
    /// Process-wide facts and counters.
    pub proxy: Arc<ProxyInfo>,
    /// Target resolution, redirects and retries.
    pub retrier: Arc<Retrier>,
}

impl std::fmt::Debug for Retrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retrier").finish_non_exhaustive()
    }
}

/// A reply slot, in request order.
enum Pending {
    /// Already known (local command or error).
    Ready(Bytes),
    /// Waiting for a backend.
    Routed(Routed),
    /// Waiting for several backends, then merged.
    FanOut(Box<FanOutPending>),
}

/// One forwarded request in flight.
struct Routed {
    attempt: Attempt,
    sent: Result<ReplyRx, ProxyError>,
}

/// The parts of a fanned-out request in flight.
struct FanOutPending {
    command: String,
    write: bool,
    merge: Merge,
    parts: Vec<Routed>,
}

impl FanOutPending {
    async fn finish(self, retrier: &Retrier) -> Bytes {
        // Parts retry independently and concurrently; merged in part order.
        let replies = futures_util::future::join_all(
            self.parts
                .into_iter()
                .map(|p| async move { retrier.complete(&p.attempt, p.sent).await }),
        )
        .await;
        fanout::merge(&self.command, self.write, &self.merge, &replies)
    }
}

/// Serves one client connection until it closes, QUITs, sends a malformed
/// frame, or `shutdown` is cancelled.
pub async fn serve(stream: TcpStream, id: u64, shared: Arc<Shared>, shutdown: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let Ok(local_addr) = stream.local_addr() else {
        return;
    };
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel(shared.max_pipeline);
    let reader = async {
        let mut session = Session {
            shared: &shared,
            client: ClientState::new(id, local_addr),
            keys: Vec::new(),
        };
        let mut frames = FramedRead::new(rd, RequestDecoder::new(shared.limits));
        loop {
            let item = tokio::select! {
                item = frames.next() => item,
                _ = shutdown.cancelled() => break,
            };
            let pending = match item {
                None => break,
                Some(Ok(req)) => session.dispatch(req).await,
                Some(Err(ProtocolError::Io(e))) => {
                    debug!(client = id, error = %e, "client read failed");
                    break;
                }
                Some(Err(e)) => {
                    debug!(client = id, error = %e, "protocol error; closing the connection");
                    let _ = tx.send(Pending::Ready(ProxyError::from(e).to_resp())).await;
                    break;
                }
            };
            if tx.send(pending).await.is_err() || session.client.closing {
                break;
            }
        }
        drop(tx);
    };
    tokio::join!(reader, write_replies(wr, rx, &shared.retrier));
}

struct Session<'a> {
    shared: &'a Shared,
    client: ClientState,
    keys: Vec<usize>,
}

impl Session<'_> {
    async fn dispatch(&mut self, req: Request) -> Pending {
        self.shared
            .proxy
            .total_commands
            .fetch_add(1, Ordering::Relaxed);
        let commands = self.shared.commands.load();
        let slots = self.shared.table.load_full();
        if req.arg(0).eq_ignore_ascii_case(b"proxy") {
            return Pending::Ready(local::proxy_command(&req, &slots));
        }
        let router = Router {
            commands: &commands,
            slots: &slots,
            allow_config_write: self.shared.allow_config_write,
        };
        let (target, readonly) = match router.route(&req, &mut self.keys) {
            Route::Local(spec) => {
                let mut ctx = Ctx {
                    commands: &commands,
                    slots: &slots,
                    client: &mut self.client,
                    proxy: &self.shared.proxy,
                    retries: &self.shared.retrier.counters,
                };
                return Pending::Ready(local::execute(spec, &req, &mut ctx));
            }
            Route::Reject(e) => return Pending::Ready(e.to_resp()),
            Route::FanOut(plan) => return self.fan_out(plan).await,
            Route::Info(sections) => {
                let plan = fanout::info(
                    &slots,
                    sections,
                    self.shared.proxy.proxy_section(
                        &slots,
                        &commands,
                        &self.shared.retrier.counters,
                    ),
                    self.shared.proxy.clients_section(),
                );
                return self.fan_out(plan).await;
            }
            Route::Forward { target, readonly } => (target, readonly),
        };
        drop(commands);
        drop(slots);
        let attempt = Attempt {
            frame: req.into_frame(),
            target,
            readonly,
            lane: self.client.id as usize,
        };
        let sent = self.shared.retrier.send(&attempt).await;
        Pending::Routed(Routed { attempt, sent })
    }

    /// Sends every part on this client's lane and returns the pending merge.
    async fn fan_out(&self, plan: Plan) -> Pending {
        let mut parts = Vec::with_capacity(plan.parts.len());
        for part in plan.parts {
            let attempt = Attempt {
                frame: part.frame,
                target: part.target,
                readonly: !plan.write,
                lane: self.client.id as usize,
            };
            let sent = self.shared.retrier.send(&attempt).await;
            parts.push(Routed { attempt, sent });
        }
        Pending::FanOut(Box::new(FanOutPending {
            command: plan.command,
            write: plan.write,
            merge: plan.merge,
            parts,
        }))
    }
}

/// The client-visible bytes of a backend outcome.
fn reply_bytes(r: ReplyResult) -> Bytes {
    r.unwrap_or_else(|e| e.to_resp())
}

/// Writes replies in request order, batching those already available.
async fn write_replies(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Pending>, retrier: &Retrier) {
    let mut out = BytesMut::new();
    loop {
        let item = match rx.try_recv() {
            Ok(item) => item,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                if flush(&mut wr, &mut out).await.is_err() {
                    return;
                }
                match rx.recv().await {
                    Some(item) => item,
                    None => break,
                }
            }
        };
        let reply = match item {
            Pending::Ready(b) => b,
            Pending::Routed(Routed { attempt, sent }) => {
                // Fast path: a reply that is already here and final.
                let ready = match sent {
                    Ok(mut slot) => match slot.try_recv() {
                        Ok(outcome) => Ok(outcome),
                        Err(TryRecvError::Empty) => Err(Ok(slot)),
                        // A closed slot must not be awaited again.
                        Err(TryRecvError::Closed) => Ok(Err(ProxyError::BackendConnectionLost(
                            "connection closed".into(),
                        ))),
                    },
                    Err(e) => Ok(Err(e)),
                };
                let outcome = match ready {
                    Ok(outcome) if Retrier::is_final(&outcome) => outcome,
                    Ok(outcome) => {
                        if flush(&mut wr, &mut out).await.is_err() {
                            return;
                        }
                        retrier.finish(&attempt, outcome).await
                    }
                    Err(sent) => {
                        if flush(&mut wr, &mut out).await.is_err() {
                            return;
                        }
                        retrier.complete(&attempt, sent).await
                    }
                };
                reply_bytes(outcome)
            }
            Pending::FanOut(f) => {
                if flush(&mut wr, &mut out).await.is_err() {
                    return;
                }
                f.finish(retrier).await
            }
        };
        if reply.len() >= LARGE_REPLY {
            if flush(&mut wr, &mut out).await.is_err() || wr.write_all(&reply).await.is_err() {
                return;
            }
        } else {
            out.extend_from_slice(&reply);
            if out.len() >= MAX_OUT && flush(&mut wr, &mut out).await.is_err() {
                return;
            }
        }
    }
    if flush(&mut wr, &mut out).await.is_ok() {
        let _ = wr.shutdown().await;
    }
}

async fn flush(wr: &mut OwnedWriteHalf, out: &mut BytesMut) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    wr.write_all(out).await?;
    out.clear();
    if out.capacity() > 4 * MAX_OUT {
        *out = BytesMut::new();
    }
    Ok(())
}
