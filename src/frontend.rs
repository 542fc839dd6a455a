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
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use std::sync::atomic::Ordering;

use crate::backend::{self, ReplyResult, ReplyRx};
use crate::command::Commands;
use crate::error::ProxyError;
use crate::fanout::{self, Merge, Plan, Target};
use crate::local::{self, ClientState, Ctx, ProxyInfo};
use crate::resp::{Limits, ProtocolError, Request, RequestDecoder};
use crate::router::{Route, Router};
use crate::slot::{SharedSlotTable, SlotTable};

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
}

/// A reply slot, in request order.
enum Pending {
    /// Already known (local command or error).
    Ready(Bytes),
    /// Waiting for a backend.
    Backend(ReplyRx),
    /// Waiting for several backends, then merged.
    FanOut(Box<FanOutPending>),
}

/// The parts of a fanned-out request in flight.
struct FanOutPending {
    command: String,
    write: bool,
    merge: Merge,
    parts: Vec<Result<ReplyRx, ProxyError>>,
}

impl FanOutPending {
    async fn finish(self) -> Bytes {
        let mut replies = Vec::with_capacity(self.parts.len());
        for p in self.parts {
            replies.push(match p {
                Ok(rx) => backend::recv_reply(rx).await,
                Err(e) => Err(e),
            });
        }
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
    tokio::join!(reader, write_replies(wr, rx));
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
        let slot = match router.route(&req, &mut self.keys) {
            Route::Local(spec) => {
                let mut ctx = Ctx {
                    commands: &commands,
                    slots: &slots,
                    client: &mut self.client,
                    proxy: &self.shared.proxy,
                };
                return Pending::Ready(local::execute(spec, &req, &mut ctx));
            }
            Route::Reject(e) => return Pending::Ready(e.to_resp()),
            Route::FanOut(plan) => return self.fan_out(&slots, plan).await,
            Route::Info(sections) => {
                let plan = fanout::info(
                    &slots,
                    sections,
                    self.shared.proxy.proxy_section(&slots, &commands),
                    self.shared.proxy.clients_section(),
                );
                return self.fan_out(&slots, plan).await;
            }
            Route::Slot(s) => Some(s),
            Route::AnyMaster => None,
        };
        drop(commands);
        let shard = match slot {
            Some(s) => slots.shard(s),
            None => match slots.shards().len() {
                0 => None,
                n => slots.shards().get(self.client.id as usize % n),
            },
        };
        let Some(shard) = shard else {
            return Pending::Ready(cluster_down(&slots).to_resp());
        };
        let node = shard.master.clone();
        drop(slots);
        match node.send(self.client.id as usize, req.into_frame()).await {
            Ok(rx) => Pending::Backend(rx),
            Err(e) => Pending::Ready(e.to_resp()),
        }
    }

    /// Sends every part on this client's lane and returns the pending merge.
    async fn fan_out(&self, slots: &SlotTable, plan: Plan) -> Pending {
        let mut parts = Vec::with_capacity(plan.parts.len());
        for part in plan.parts {
            let node = match part.target {
                Target::Node(n) => Some(n),
                Target::Slot(s) => slots.master(s).cloned(),
            };
            parts.push(match node {
                Some(n) => n.send(self.client.id as usize, part.frame).await,
                None => Err(cluster_down(slots)),
            });
        }
        Pending::FanOut(Box::new(FanOutPending {
            command: plan.command,
            write: plan.write,
            merge: plan.merge,
            parts,
        }))
    }
}

fn cluster_down(slots: &SlotTable) -> ProxyError {
    ProxyError::ClusterDown(if slots.version() == 0 {
        "slotproxy has not discovered the cluster yet"
    } else {
        "Hash slot not served"
    })
}

/// The client-visible bytes of a backend outcome.
fn reply_bytes(r: ReplyResult) -> Bytes {
    r.unwrap_or_else(|e| e.to_resp())
}

/// Writes replies in request order, batching those already available.
async fn write_replies(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Pending>) {
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
            Pending::Backend(mut slot) => match slot.try_recv() {
                Ok(r) => reply_bytes(r),
                Err(_) => {
                    if flush(&mut wr, &mut out).await.is_err() {
                        return;
                    }
                    reply_bytes(backend::recv_reply(slot).await)
                }
            },
            Pending::FanOut(f) => {
                if flush(&mut wr, &mut out).await.is_err() {
                    return;
                }
                f.finish().await
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
