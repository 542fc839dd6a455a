//! The read side of a session: decodes requests, dispatches each, stages
//! plain forwards and sends them grouped by node, and queues a reply slot
//! per request, in order, for the writer. The stateful commands live in
//! their own files, each an `impl Session` block.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::oneshot;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::decode::{GuardedDecoder, READ_CHUNK};
use super::pending::{Dispatched, Item, Member, Pending, Place, Routed, Slot, Timing, MAX_STAGED};
use super::pubsub;
use super::tally::Intake;
use crate::backend::{queue, Lane};
use crate::cluster::retry::Attempt;
use crate::command::local::ClientState;
use crate::error::ProxyError;
use crate::ops::metrics::{CommandMetrics, METRICS, UNKNOWN_COMMAND};
use crate::resp::{ProtocolError, Request};
use crate::server::shared::Shared;
use crate::tls::ReadHalf;

mod blocking;
mod dispatch;
mod migrate;
mod subscribe;
mod transaction;
mod wait;

use transaction::{Txn, Watch};

/// How a session's active phase ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Idle for [`IDLE_RELEASE`] with nothing in flight: wait for input
    /// without the phase's futures and buffers.
    Idle,
    /// The client is gone or is being closed.
    Closed,
}

/// How long a plain-TCP client must be idle, with nothing in flight, before
/// its session gives back everything but its state (`Session` and
/// `Writer`, under 1 KiB) and its task.
pub(crate) const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// One decoded client frame (or why it could not be decoded).
pub(crate) type Input = Result<Request, ProtocolError>;

/// What ended a session's wait for input.
pub(crate) enum Wake {
    /// A frame, an error, or the end of input.
    Input(Option<Input>),
    /// The socket turned readable (an idle client, waiting with no buffer).
    Readable,
    /// Shutdown began.
    Shutdown,
    /// The idle or frame timer fired.
    Timer,
}

pub(crate) struct Session {
    pub(crate) shared: Arc<Shared>,
    pub(crate) client: ClientState,
    pub(crate) keys: Vec<usize>,
    pub(crate) tx: queue::Sender<Item>,
    /// The command of the request being dispatched (for its metrics).
    pub(crate) command: Option<&'static CommandMetrics>,
    pub(crate) frames: FramedRead<ReadHalf, GuardedDecoder>,
    /// `frontend.idle_timeout` and `frontend.frame_timeout` at session start.
    pub(crate) idle_timeout: Duration,
    pub(crate) frame_timeout: Duration,
    /// Requests read whose replies are not written yet.
    pub(crate) outstanding: Arc<AtomicUsize>,
    /// Frames read while a blocking command was waiting.
    /// (Boxed: rare, and every idle client's state would carry its 32
    /// bytes; a box is 8.)
    #[allow(clippy::box_collection)]
    pub(crate) backlog: Option<Box<VecDeque<Input>>>,
    /// `frontend.max_pipeline` when the session started.
    pub(crate) max_pipeline: usize,
    /// Boxed, like `watch`: rare, and every idle client's state would
    /// otherwise carry their size.
    pub(crate) txn: Option<Box<Txn>>,
    pub(crate) watch: Option<Box<Watch>>,
    pub(crate) pubsub: Option<pubsub::Handle>,
    /// When the last request was read.
    pub(crate) last_request: Instant,
    /// Forwarded requests of the current read, not sent yet (see
    /// [`Session::flush_staged`]).
    pub(crate) staged: Vec<(Attempt, Timing)>,
    /// The number of the next batch (replies are matched to it).
    pub(crate) next_batch: u32,
}

impl Session {
    /// Whether the session may go idle (see [`End::Idle`]): a plain-TCP
    /// client with nothing buffered, in flight, subscribed or in a
    /// transaction.
    fn releasable(&self) -> bool {
        self.frames.get_ref().is_plain()
            && self.frames.read_buffer().is_empty()
            && self.backlog.is_none()
            && self.outstanding.load(Ordering::Relaxed) == 0
            && self.pubsub.as_ref().is_none_or(|p| p.active() == 0)
            && self.watch.is_none()
            && self.txn.is_none()
            && !self.client.monitoring
    }

    /// Reads and dispatches requests until the client goes idle or must be
    /// closed; tells the writer which, through the reply queue.
    pub(crate) async fn run(&mut self, shutdown: &CancellationToken) -> End {
        let end = self.read_loop(shutdown).await;
        // What the last read staged is sent and answered before the end.
        self.flush_staged().await;
        if end == End::Idle {
            // An idle client keeps no staging storage, nor the decoder's.
            self.staged = Vec::new();
            self.frames.decoder_mut().inner.release();
        }
        let marker = match end {
            End::Idle => Pending::Pause,
            End::Closed => Pending::Close,
        };
        // Fails only when the writer is gone already.
        let _ = self.tx.send((marker, None)).await;
        end
    }

    async fn read_loop(&mut self, shutdown: &CancellationToken) -> End {
        let id = self.client.id;
        // Counted per request, added to the shared metrics before every wait
        // (and when the loop ends).
        let mut intake = Intake {
            bytes: 0,
            requests: 0,
            bytes_in: METRICS.frontend_bytes.with_label_values(&["in"]),
            proxy: self.shared.proxy.clone(),
            outstanding: self.outstanding.clone(),
        };
        // The slot and command tables, kept for the phase: a request checks
        // each is still current with one load, where loading it through a
        // guard costs two read-modify-writes. (A swapped-out table stays
        // alive until this session's next request, or its phase's end.)
        let mut slot_table = arc_swap::Cache::new(self.shared.table.clone());
        let mut command_table = self.shared.commands.cache();
        // Registered once per active phase rather than once per wait (a
        // registration takes a lock and a list insert, and its drop another).
        let mut cancelled = Box::pin(shutdown.clone().cancelled_owned());
        // Armed for the earliest deadline asked for; a later deadline is
        // looked at when it fires (so a wait seldom touches the timer wheel).
        let mut timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        // Pipelined input already buffered is served without a wait; look
        // for shutdown every so many requests there (a lock each time).
        let mut unchecked = 0u8;
        loop {
            unchecked = unchecked.wrapping_add(1);
            if unchecked % 32 == 0 && shutdown.is_cancelled() {
                return End::Closed;
            }
            let kept = self.backlog.as_mut().and_then(|b| b.pop_front());
            if self.backlog.as_ref().is_some_and(|b| b.is_empty()) {
                self.backlog = None;
            }
            let item = match kept {
                Some(item) => Some(item),
                // Pipelined input already buffered: no timer needed.
                None => match self.frames.next().now_or_never() {
                    Some(item) => item,
                    None => {
                        // The buffered input is used up: send what this read
                        // staged before waiting for more.
                        intake.flush();
                        if !self.flush_staged().await {
                            return End::Closed;
                        }
                        let last_request = self.last_request;
                        let now = Instant::now();
                        let release_at = if last_request + IDLE_RELEASE > now {
                            last_request + IDLE_RELEASE
                        } else {
                            now + IDLE_RELEASE
                        };
                        // Only plain (TCP or Unix socket) sessions are
                        // released when idle.
                        let plain = self.frames.get_ref().is_plain();
                        let deadline = self.read_deadline(last_request);
                        let deadline = if plain {
                            Some(deadline.map_or(release_at, |d| d.min(release_at)))
                        } else {
                            deadline
                        };
                        if let Some(d) = deadline {
                            let d = tokio::time::Instant::from_std(d);
                            match timer.as_mut() {
                                Some(t) if !t.is_elapsed() && t.deadline() <= d => {}
                                Some(t) => t.as_mut().reset(d),
                                None => timer = Some(Box::pin(tokio::time::sleep_until(d))),
                            }
                        }
                        let fire = async {
                            match timer.as_mut() {
                                Some(t) => t.as_mut().await,
                                None => std::future::pending().await,
                            }
                        };
                        // An idle plain (TCP or Unix socket) client holds no
                        // read buffer: wait for the socket to turn readable,
                        // then read.
                        let idle = plain && self.frames.read_buffer().is_empty();
                        let woke = if idle {
                            *self.frames.read_buffer_mut() = BytesMut::new();
                            let socket = self.frames.get_ref();
                            tokio::select! {
                                biased;
                                // An error surfaces on the read that follows.
                                // (Readiness is accurate here: the last read
                                // cleared it. The spurious readiness of a new
                                // socket is `idle_wait`'s concern.)
                                _ = socket.readable() => Wake::Readable,
                                _ = cancelled.as_mut() => Wake::Shutdown,
                                _ = fire, if deadline.is_some() => Wake::Timer,
                            }
                        } else {
                            tokio::select! {
                                biased;
                                item = self.frames.next() => Wake::Input(item),
                                _ = cancelled.as_mut() => Wake::Shutdown,
                                _ = fire, if deadline.is_some() => Wake::Timer,
                            }
                        };
                        match woke {
                            Wake::Input(item) => item,
                            Wake::Readable => {
                                self.frames.read_buffer_mut().reserve(READ_CHUNK);
                                continue;
                            }
                            Wake::Shutdown => return End::Closed,
                            Wake::Timer => {
                                if Instant::now() >= release_at && self.releasable() {
                                    return End::Idle;
                                }
                                match self.timed_out(last_request) {
                                    Some(Some(reply)) => {
                                        let _ = self.tx.send((Pending::Ready(reply), None)).await;
                                        return End::Closed;
                                    }
                                    Some(None) => return End::Closed,
                                    None => continue,
                                }
                            }
                        }
                    }
                },
            };
            // When the read that completed this request returned: requests
            // pipelined in one read share it (one clock read per read).
            let started = self.frames.decoder().last_progress;
            self.last_request = started;
            let (dispatched, req, silent) = match item {
                None => return End::Closed,
                Some(Ok(req)) => {
                    intake.bytes += req.frame().len() as u64;
                    intake.requests += 1;
                    let (slots, commands) = (slot_table.load(), command_table.load());
                    let silent = self.client.reply.drops(&req);
                    (self.dispatch(&req, slots, commands).await, req, silent)
                }
                Some(Err(ProtocolError::Io(e))) => {
                    debug!(client = id, error = %e, "client read failed");
                    return End::Closed;
                }
                Some(Err(e)) => {
                    debug!(client = id, error = %e, "protocol error; closing the connection");
                    self.flush_staged().await;
                    let _ = self
                        .tx
                        .send((Pending::Ready(ProxyError::from(e).to_resp()), None))
                        .await;
                    return End::Closed;
                }
            };
            let mut timing = Timing {
                started,
                command: self.command.take().unwrap_or(*UNKNOWN_COMMAND),
                frame: None,
                name: self.client.name.clone(),
                silent,
            };
            let sent = match dispatched {
                Dispatched::Forward { target, readonly } => {
                    let attempt = Attempt {
                        frame: req.into_frame(),
                        target,
                        readonly,
                        lane: self.lane(),
                    };
                    self.staged.push((attempt, timing));
                    self.staged.len() < MAX_STAGED || self.flush_staged().await
                }
                Dispatched::Now(pending) => {
                    timing.frame = Some(req.into_frame());
                    self.flush_staged().await && self.tx.send((pending, Some(timing))).await.is_ok()
                }
            };
            if !sent || self.client.closing {
                return End::Closed;
            }
        }
    }

    /// Sends the forwarded requests this read staged, then queues their
    /// reply slots (in request order). The requests bound for one node go
    /// as one batch: one lane entry, one reply slot and one wake-up for all
    /// of them, where each alone would cost a channel of its own. False if
    /// the writer is gone.
    pub(crate) async fn flush_staged(&mut self) -> bool {
        if self.staged.is_empty() {
            return true;
        }
        if self.staged.len() == 1 {
            // One request (every unpipelined one): sent alone, without the
            // grouping's bookkeeping.
            let (attempt, timing) = self.staged.pop().expect("one staged request");
            let sent = self.shared.retrier.send(&attempt).await;
            let item = (Pending::Routed(Routed { attempt, sent }), Some(timing));
            return self.tx.send(item).await.is_ok();
        }
        // Taken, then put back empty: its storage serves the next read.
        let mut staged = std::mem::take(&mut self.staged);
        let lane = self.lane();
        // How each request was sent, by its index in `staged`.
        let mut sent: Vec<Option<Slot>> = (0..staged.len()).map(|_| None).collect();
        {
            let table = self.shared.table.load();
            let (by_node, unroutable) = self
                .shared
                .retrier
                .group_by_node(&table, staged.iter().map(|(a, _)| a));
            for (i, e) in unroutable {
                sent[i] = Some(Slot::One(Err(e)));
            }
            for (node, members) in by_node {
                if let [one] = members.as_slice() {
                    let frame = staged[*one].0.frame.clone();
                    sent[*one] = Some(Slot::One(node.send(lane, frame).await));
                    continue;
                }
                let frames = members.iter().map(|&i| staged[i].0.frame.clone()).collect();
                let count = members.len();
                let batch = self.next_batch;
                self.next_batch = self.next_batch.wrapping_add(1);
                match node.send_batch(lane, frames).await {
                    Ok(rx) => {
                        let mut rx = Some(rx);
                        for (index, &i) in members.iter().enumerate() {
                            sent[i] = Some(Slot::Member(Place {
                                batch,
                                index,
                                count,
                                // The batch's first request (in reply order)
                                // carries the slot.
                                rx: rx.take(),
                            }));
                        }
                    }
                    Err(e) => {
                        for &i in &members {
                            sent[i] = Some(Slot::One(Err(e.clone())));
                        }
                    }
                }
            }
        }
        // Queued under one lock while the queue has room. If the writer is
        // gone, what is left is dropped.
        let items = staged.drain(..).zip(sent).map(|((attempt, timing), slot)| {
            let pending = match slot {
                Some(Slot::One(sent)) => Pending::Routed(Routed { attempt, sent }),
                Some(Slot::Member(place)) => Pending::Member(Member { attempt, place }),
                None => Pending::Ready(ProxyError::Internal("request not sent".into()).to_resp()),
            };
            (pending, Some(timing))
        });
        let open = self.tx.send_all(items).await;
        self.staged = staged;
        open
    }

    /// When the session must look at the clock: a partial request stalls
    /// (frame timeout) or the client stays idle (idle timeout).
    fn read_deadline(&self, last_request: Instant) -> Option<Instant> {
        let partial = !self.frames.read_buffer().is_empty();
        // Input may arrive (incomplete) while the session waits: look again
        // within a frame timeout even when nothing is buffered yet.
        let frame = (!self.frame_timeout.is_zero()).then(|| {
            if partial {
                self.frames.decoder().last_progress + self.frame_timeout
            } else {
                Instant::now() + self.frame_timeout
            }
        });
        let idle =
            (!self.idle_timeout.is_zero() && !partial).then(|| last_request + self.idle_timeout);
        match (frame, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `None`: not yet; `Some(None)`: close silently (idle); `Some(Some(e))`:
    /// reply `e` and close (a stalled partial request). A client that has
    /// been quiet for `idle_timeout` but is busy (requests in flight,
    /// subscribed, in WATCH or MULTI) is not idle: its idle clock restarts,
    /// so the next deadline is not in the past (which made the session spin
    /// on a timer that had fired).
    fn timed_out(&mut self, last_request: Instant) -> Option<Option<Bytes>> {
        let now = Instant::now();
        if !self.frames.read_buffer().is_empty() {
            let stalled = !self.frame_timeout.is_zero()
                && now >= self.frames.decoder().last_progress + self.frame_timeout;
            return stalled.then(|| {
                debug!(client = self.client.id, "incomplete request timed out");
                Some(ProxyError::Syntax("slotproxy: incomplete request timed out".into()).to_resp())
            });
        }
        let busy = self.outstanding.load(Ordering::Relaxed) > 0
            || self.pubsub.as_ref().is_some_and(|p| p.active() > 0)
            || self.watch.is_some()
            || self.txn.is_some()
            || self.client.monitoring;
        let idle = !self.idle_timeout.is_zero() && now >= last_request + self.idle_timeout;
        if idle && busy {
            self.last_request = now;
        }
        (idle && !busy).then(|| {
            debug!(client = self.client.id, "idle client closed");
            None
        })
    }

    /// EVAL and SCRIPT LOAD bodies are remembered for NOSCRIPT healing.
    /// SCRIPT FLUSH forgets them: a client that flushed the scripts must
    /// get NOSCRIPT, as from one server, not a script healed back.
    fn remember_script(&self, req: &Request) {
        let name = req.arg(0);
        if (name.eq_ignore_ascii_case(b"eval") || name.eq_ignore_ascii_case(b"eval_ro"))
            && req.argc() > 2
        {
            self.shared.retrier.remember_script(req.arg(1));
        } else if name.eq_ignore_ascii_case(b"script") && req.argc() >= 2 {
            let sub = req.arg(1);
            if sub.eq_ignore_ascii_case(b"load") && req.argc() == 3 {
                self.shared.retrier.remember_script(req.arg(2));
            } else if sub.eq_ignore_ascii_case(b"flush") {
                self.shared.retrier.forget_scripts();
            }
        }
    }

    /// The client's address as CLIENT LIST and MONITOR show it.
    pub(crate) fn client_addr(&self) -> String {
        match (self.client.unix, &self.shared.proxy.unix_client) {
            (true, Some(name)) => name.clone(),
            _ => self
                .client
                .peer_addr
                .map(|a| a.to_string())
                .unwrap_or_default(),
        }
    }

    pub(crate) fn lane(&self) -> Lane {
        Lane {
            index: self.client.id as usize,
            resp3: self.client.resp3,
        }
    }

    /// Waits until every earlier reply has been written, so a command about
    /// to run on another connection cannot overtake them.
    pub(crate) async fn barrier(&self) -> bool {
        let (done, wait) = oneshot::channel();
        self.tx.send((Pending::Barrier(done), None)).await.is_ok() && wait.await.is_ok()
    }
}
