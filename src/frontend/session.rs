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

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::backend::dedicated::Dedicated;
use crate::backend::queue;
use crate::backend::{recv_batch, try_batch, try_reply, BatchRx, Lane, Node, ReplyResult, ReplyRx};
use crate::cluster::redirect::Redirect;
use crate::cluster::retry::{Attempt, Retrier, Target};
use crate::cluster::slot::{key_slot, SlotTable};
use crate::command::fanout::{self, Merge, Plan};
use crate::command::local::{self, ClientState, Ctx};
use crate::command::router::{Route, Router};
use crate::command::CommandTable;
use crate::config::FrontendConfig;
use crate::error::ProxyError;
use crate::frontend::pubsub;
use crate::ops::metrics::{error_kind, CommandMetrics, METRICS, UNKNOWN_COMMAND};
use crate::ops::slowlog::SlowLog;
use crate::ops::stats::ProxyInfo;
use crate::resp::Value;
use crate::resp::{encode, Limits, ProtocolError, Request, RequestDecoder};
use crate::server::shared::Shared;
use crate::tls::{ReadHalf, Stream, WriteHalf};

/// Replies at least this large are written directly instead of being copied
/// into the output buffer.
const LARGE_REPLY: usize = 16 * 1024;
/// Output is flushed once this much is buffered.
const MAX_OUT: usize = 64 * 1024;

/// The request decoder with the per-client and global buffer limits, and
/// the time of the last new input byte (slow-loris protection).
pub struct GuardedDecoder {
    inner: RequestDecoder,
    max_buffer: usize,
    budget: Arc<AtomicUsize>,
    max_total: usize,
    /// Bytes of this client counted in `budget`.
    accounted: usize,
    last_len: usize,
    /// Whether the last read filled all the room it had (more was likely
    /// waiting): the next read gets a bigger buffer.
    filled: bool,
    /// When the buffer last grew.
    pub last_progress: Instant,
}

impl GuardedDecoder {
    /// Brings this client's share of the global budget to `len`; fails if
    /// that goes over the cap.
    fn account(&mut self, len: usize) -> Result<(), ProtocolError> {
        if len > self.accounted {
            let add = len - self.accounted;
            let total = self.budget.fetch_add(add, Ordering::Relaxed) + add;
            self.accounted = len;
            if self.max_total > 0 && total > self.max_total {
                return Err(ProtocolError::ClientMemoryLimit);
            }
        } else if len < self.accounted {
            self.budget
                .fetch_sub(self.accounted - len, Ordering::Relaxed);
            self.accounted = len;
        }
        Ok(())
    }
}

impl Drop for GuardedDecoder {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.accounted, Ordering::Relaxed);
    }
}

impl tokio_util::codec::Decoder for GuardedDecoder {
    type Item = Request;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        if src.len() > self.last_len {
            self.last_progress = Instant::now();
            self.filled = src.len() == src.capacity();
        }
        if src.len() > self.max_buffer {
            return Err(ProtocolError::QueryBufferLimit);
        }
        self.account(src.len())?;
        let out = self.inner.decode(src);
        self.last_len = src.len();
        // Growth was counted above, at once (the cap checks it); what the
        // decoded requests freed is given back when the buffered input is
        // used up: one atomic operation per read instead of per request.
        if !matches!(out, Ok(Some(_))) {
            self.account(src.len())?;
        }
        // The buffer starts empty and is given back while the client idles;
        // make room for a good-sized read whenever more input is needed, and
        // a bigger one after a read that filled its room (a deep pipeline of
        // large requests: a system call per 8 KiB otherwise).
        if matches!(out, Ok(None)) && src.capacity() - src.len() < MIN_READ {
            src.reserve(if self.filled {
                BIG_READ_CHUNK
            } else {
                READ_CHUNK
            });
        }
        out
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        let out = self.inner.decode_eof(src);
        self.last_len = src.len();
        self.account(src.len())?;
        out
    }
}

/// Reads are at least this large (spare room below it is grown).
const MIN_READ: usize = 1024;
/// How much room is made for a read.
const READ_CHUNK: usize = 8 * 1024;
/// How much room is made after a read that filled its room.
const BIG_READ_CHUNK: usize = 16 * 1024;

/// The request decoder limits of a `[frontend]` section.
pub fn limits_of(f: &FrontendConfig) -> Limits {
    Limits {
        max_bulk_len: f.max_bulk_len,
        max_multibulk_len: f.max_multibulk_len,
        max_inline_len: f.max_inline_len,
    }
}

/// When a request was read, and its command's metrics.
struct Timing {
    started: Instant,
    command: &'static CommandMetrics,
    /// The request, for the slow log, unless its reply slot holds it (a
    /// forward's attempt does: one reference count less per request).
    frame: Option<Bytes>,
    /// The client's name then, for the slow log.
    name: Option<Bytes>,
}

/// The writer's metrics of the replies it wrote since it last waited:
/// counted here and added to the shared ones before every wait and when it
/// stops, instead of several atomic operations per reply (a pipelined
/// request costs well under a microsecond in all). It also keeps the clock
/// for that run of replies, read once.
struct Tally<'a> {
    /// The time, read at the first reply since the writer last waited.
    now: Option<Instant>,
    /// The first few commands seen in this phase, in that order.
    commands: Vec<CommandTally>,
    /// Reply bytes.
    bytes_out: u64,
    /// Requests answered: taken off the session's count in flight.
    answered: usize,
    outstanding: &'a AtomicUsize,
    /// The frontend's "out" bytes counter, resolved once.
    bytes_out_counter: prometheus::IntCounter,
}

/// One command's share of a [`Tally`].
struct CommandTally {
    metrics: &'static CommandMetrics,
    latency: prometheus::local::LocalHistogram,
    ok: u64,
    error: u64,
}

impl<'a> Tally<'a> {
    /// Commands a tally counts locally; replies to others go to the shared
    /// metrics at once.
    const COMMANDS: usize = 4;

    fn new(outstanding: &'a AtomicUsize) -> Tally<'a> {
        Tally {
            now: None,
            commands: Vec::new(),
            bytes_out: 0,
            answered: 0,
            outstanding,
            bytes_out_counter: METRICS.frontend_bytes.with_label_values(&["out"]),
        }
    }

    /// A request answered after `took`, with an error reply or not.
    fn reply(&mut self, command: &'static CommandMetrics, took: Duration, error: bool) {
        self.answered += 1;
        let i = match self
            .commands
            .iter()
            .position(|c| std::ptr::eq(c.metrics, command))
        {
            Some(i) => i,
            None if self.commands.len() == Self::COMMANDS => {
                // A client cycling through many commands: no local
                // histogram per reply.
                command.latency.observe(took.as_secs_f64());
                if error {
                    command.error.inc();
                } else {
                    command.ok.inc();
                }
                return;
            }
            None => {
                // One more at a time: most clients use one or two commands
                // (this is per active client).
                self.commands.reserve_exact(1);
                self.commands.push(CommandTally {
                    metrics: command,
                    latency: command.latency.local(),
                    ok: 0,
                    error: 0,
                });
                self.commands.len() - 1
            }
        };
        let c = &mut self.commands[i];
        c.latency.observe(took.as_secs_f64());
        if error {
            c.error += 1;
        } else {
            c.ok += 1;
        }
    }

    /// The time for this run of replies (read at its first).
    fn now(&mut self) -> Instant {
        *self.now.get_or_insert_with(Instant::now)
    }

    /// Adds what was counted to the shared metrics and forgets the clock
    /// reading: call before every wait.
    fn flush(&mut self) {
        self.now = None;
        for c in &mut self.commands {
            c.flush();
        }
        if self.bytes_out > 0 {
            self.bytes_out_counter.inc_by(self.bytes_out);
            self.bytes_out = 0;
        }
        if self.answered > 0 {
            self.outstanding.fetch_sub(self.answered, Ordering::Relaxed);
            self.answered = 0;
        }
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

impl CommandTally {
    fn flush(&mut self) {
        self.latency.flush();
        if self.ok > 0 {
            self.metrics.ok.inc_by(self.ok);
            self.ok = 0;
        }
        if self.error > 0 {
            self.metrics.error.inc_by(self.error);
            self.error = 0;
        }
    }
}

/// The reader's counts since it last waited (see [`Tally`]).
struct Intake {
    /// Request bytes.
    bytes: u64,
    /// Requests (INFO's `total_commands_processed`, and requests in
    /// flight).
    requests: u64,
    bytes_in: prometheus::IntCounter,
    proxy: Arc<ProxyInfo>,
    /// The session's requests in flight. Raised here, once per read; the
    /// writer lowers it. Between the two it may read low (wrapping below
    /// zero), but only the reader looks at it, and only after a flush.
    outstanding: Arc<AtomicUsize>,
}

impl Intake {
    fn flush(&mut self) {
        if self.requests > 0 {
            self.bytes_in.inc_by(self.bytes);
            self.proxy
                .total_commands
                .fetch_add(self.requests, Ordering::Relaxed);
            self.outstanding
                .fetch_add(self.requests as usize, Ordering::Relaxed);
            self.bytes = 0;
            self.requests = 0;
        }
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        self.flush();
    }
}

/// What the read side hands the write side: a reply slot (in request
/// order) and, for requests, their timing.
type Item = (Pending, Option<Timing>);

/// A reply slot, in request order.
enum Pending {
    /// Already known (local command or error).
    Ready(Bytes),
    /// Waiting for a backend.
    Routed(Routed),
    /// Waiting for a backend, in a batch of this read's requests.
    Member(Member),
    /// Waiting for several backends, then merged.
    FanOut(Box<FanOutPending>),
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
struct Routed {
    attempt: Attempt,
    sent: Result<ReplyRx, ProxyError>,
}

impl Routed {
    /// The first outcome if it is already here, without waiting.
    fn try_take(&mut self) -> Option<ReplyResult> {
        match &mut self.sent {
            Ok(slot) => try_reply(slot),
            Err(e) => Some(Err(e.clone())),
        }
    }
}

/// What [`Session::dispatch`] made of a request.
enum Dispatched {
    /// Its reply slot, to queue now.
    Now(Pending),
    /// A plain forward: staged, and sent with the rest of its read.
    Forward { target: Target, readonly: bool },
}

/// At most this many forwarded requests of one read are staged before they
/// are sent (a bound on what is read ahead of the reply queue).
const MAX_STAGED: usize = 64;

/// How a staged request was sent.
enum Slot {
    /// Alone (or not at all).
    One(Result<ReplyRx, ProxyError>),
    /// In a batch to one node.
    Member(Place),
}

/// A request's place in a batch sent to one node.
struct Place {
    /// The session's number for the batch.
    batch: u32,
    /// Its place in the batch, and the batch's size.
    index: usize,
    count: usize,
    /// The batch's reply slot, carried by its first request: the writer
    /// meets that one first and keeps the other replies for the rest.
    rx: Option<BatchRx>,
}

/// A request sent in a batch with others of its read (to the same node).
struct Member {
    attempt: Attempt,
    place: Place,
}

/// The parts of a fanned-out request in flight.
struct FanOutPending {
    command: String,
    write: bool,
    merge: Merge,
    /// One per part, in part order (what a part's retry re-sends).
    attempts: Vec<Attempt>,
    /// The parts, grouped by the node they went to.
    groups: Vec<Group>,
}

/// The parts of a fan-out sent to one node, as one batch.
struct Group {
    /// The parts' indices, in the order they were written.
    members: Vec<usize>,
    sent: Result<BatchRx, ProxyError>,
}

impl Group {
    /// Puts each of `got` (the members' outcomes, in order) in its part's
    /// place.
    fn place(&self, got: Vec<ReplyResult>, into: &mut [Option<ReplyResult>]) {
        for (&i, outcome) in self.members.iter().zip(got) {
            into[i] = Some(outcome);
        }
    }
}

impl FanOutPending {
    /// The first outcome of every part, where it is already here (a
    /// group's parts all are, or none is).
    fn try_take(&mut self) -> Vec<Option<ReplyResult>> {
        let mut firsts: Vec<Option<ReplyResult>> = (0..self.attempts.len()).map(|_| None).collect();
        for g in &mut self.groups {
            let got = match &mut g.sent {
                Ok(rx) => try_batch(rx, g.members.len()),
                Err(e) => Some(g.members.iter().map(|_| Err(e.clone())).collect()),
            };
            if let Some(got) = got {
                g.place(got, &mut firsts);
            }
        }
        firsts
    }

    /// Completes every part and merges the replies in part order. `firsts`
    /// are the outcomes [`FanOutPending::try_take`] found.
    async fn finish(mut self, retrier: &Retrier, mut firsts: Vec<Option<ReplyResult>>) -> Bytes {
        // The groups still out, one wake-up each (they are all in flight).
        for g in &mut self.groups {
            if firsts[g.members[0]].is_some() {
                continue;
            }
            if let Ok(rx) = &mut g.sent {
                let got = recv_batch(rx, g.members.len()).await;
                g.place(got, &mut firsts);
            }
        }
        let outcomes: Vec<ReplyResult> = firsts
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Err(ProxyError::BackendProtocol(
                        "fan-out part without a reply".into(),
                    ))
                })
            })
            .collect();
        if outcomes.iter().all(Retrier::is_final) {
            return fanout::merge(&self.command, self.write, &self.merge, &outcomes);
        }
        // Redirects and retries (rare) run concurrently, each part on its
        // own; merged in part order.
        let outcomes = futures_util::future::join_all(self.attempts.iter().zip(outcomes).map(
            |(a, outcome)| async move {
                if Retrier::is_final(&outcome) {
                    outcome
                } else {
                    retrier.finish(a, outcome).await
                }
            },
        ))
        .await;
        fanout::merge(&self.command, self.write, &self.merge, &outcomes)
    }
}

/// Serves one client connection until it closes, QUITs, sends a malformed
/// frame, or `shutdown` is cancelled. `guard` is dropped when the session
/// ends (the server's count of the client and its `max_clients` permit).
///
/// The session is built here, before the returned future: the future then
/// holds each piece of state once, in place. (An `async fn` keeps its
/// arguments' storage for its whole life, and every idle client pays for
/// the future's size.)
pub fn serve<G: Send + 'static>(
    stream: Stream,
    id: u64,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    guard: G,
) -> impl Future<Output = ()> + Send {
    if let Stream::Tcp(s) = &stream {
        let _ = s.set_nodelay(true);
    }
    // A client of the Unix socket has no address; CLUSTER SLOTS announces
    // the TCP listener's to it.
    let unix = matches!(stream, Stream::Unix(_));
    let local_addr = if unix {
        Ok(shared.proxy.listen)
    } else {
        stream.local_addr()
    };
    let usable = local_addr.is_ok();
    let local_addr = local_addr.unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let peer_addr = stream.peer_addr().ok();
    let (rd, wr) = stream.into_split();
    let settings = shared.frontend.load();
    // The reader and the writer run in one task, polled in turn (`in_turn`).
    let (tx, rx) = queue::in_turn(settings.max_pipeline);
    let outstanding = Arc::new(AtomicUsize::new(0));
    let mut session = Session {
        shared: shared.clone(),
        client: ClientState {
            peer_addr,
            unix,
            ..ClientState::new(id, local_addr)
        },
        keys: Vec::new(),
        tx,
        // No read buffer until the client sends something.
        frames: FramedRead::with_capacity(
            rd,
            GuardedDecoder {
                inner: RequestDecoder::new(limits_of(&settings)),
                max_buffer: settings.max_query_buffer,
                budget: shared.client_memory.clone(),
                max_total: settings.max_client_memory,
                accounted: 0,
                last_len: 0,
                filled: false,
                last_progress: Instant::now(),
            },
            0,
        ),
        idle_timeout: settings.idle_timeout,
        frame_timeout: settings.frame_timeout,
        outstanding: outstanding.clone(),
        max_pipeline: settings.max_pipeline,
        backlog: None,
        txn: None,
        watch: None,
        pubsub: None,
        command: None,
        last_request: Instant::now(),
        staged: Vec::new(),
        next_batch: 0,
    };
    drop(settings);
    let mut writer = Writer {
        wr,
        rx,
        out: BytesMut::new(),
        pushes: None,
        peer: peer_addr,
    };
    async move {
        // Held (not moved) by this future, so dropped when it ends.
        let _ = &guard;
        if !usable {
            return;
        }
        // A plain (TCP or Unix socket) client starts idle: nothing but its
        // state is allocated until it sends something (clients speak first
        // in RESP).
        let mut idle = session.frames.get_ref().is_plain();
        loop {
            if !idle {
                // The reader and writer futures exist only while the client
                // is active (boxed: an idle client keeps just the state above).
                let phase = Box::pin(async {
                    // Pinned here, so the phase holds each future once.
                    let unix = session
                        .client
                        .unix
                        .then(|| shared.proxy.unix_client.as_deref())
                        .flatten();
                    let reader = std::pin::pin!(session.run(&shutdown));
                    let writer = std::pin::pin!(writer.run(
                        &shared.retrier,
                        &shared.proxy.slowlog,
                        &outstanding,
                        unix
                    ));
                    in_turn(reader, writer).await
                });
                match phase.await {
                    (End::Idle, true) => {}
                    _ => break,
                }
            }
            idle = false;
            // Idle (plain TCP only): wait for input with nothing allocated.
            match idle_wait(&mut session, &shutdown).await {
                Wake::Readable => session.frames.read_buffer_mut().reserve(READ_CHUNK),
                Wake::Timer => {
                    debug!(client = id, "idle client closed");
                    break;
                }
                Wake::Shutdown | Wake::Input(_) => break,
            }
        }
    }
}

/// Runs the reader and the writer of a session's active phase to their
/// ends. Every wake-up polls the writer, then the reader, then the writer
/// again: what the reader queues, the writer takes in the same pass, so the
/// reply queue never needs to wake the task (see [`queue::in_turn`]). The
/// writer also goes first, so a reader that uses tokio's cooperative budget
/// up cannot starve it: the writer's next pass starts with a fresh one.
/// (`tokio::join!` rotates which future goes first, and needs the wake.)
///
/// The futures come pinned by the caller: an `async fn` keeps its arguments
/// for its whole life, so pinning them again in here would hold both
/// twice, 4.7 KB more per active client.
async fn in_turn<R, W>(
    mut reader: std::pin::Pin<&mut R>,
    mut writer: std::pin::Pin<&mut W>,
) -> (R::Output, W::Output)
where
    R: Future,
    W: Future,
{
    let mut read = None;
    let mut written = None;
    std::future::poll_fn(|cx| {
        if written.is_none() {
            written = poll_ready(writer.as_mut(), cx);
        }
        if read.is_none() {
            read = poll_ready(reader.as_mut(), cx);
            // What the reader just queued.
            if written.is_none() {
                written = poll_ready(writer.as_mut(), cx);
            }
        }
        match (read.take(), written.take()) {
            (Some(r), Some(w)) => Poll::Ready((r, w)),
            (r, w) => {
                read = r;
                written = w;
                Poll::Pending
            }
        }
    })
    .await
}

/// Polls `f` once: its output if it is done.
fn poll_ready<F: Future>(
    f: std::pin::Pin<&mut F>,
    cx: &mut std::task::Context<'_>,
) -> Option<F::Output> {
    match f.poll(cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// An idle session's wait: for input (readable), shutdown, or
/// `frontend.idle_timeout`. Written as one small poll function: this wait is
/// part of every idle client's future, where a `select!` over the same three
/// futures took 432 bytes. `Input(None)` for a session that is not plain TCP.
async fn idle_wait(session: &mut Session, shutdown: &CancellationToken) -> Wake {
    let mut timer = (!session.idle_timeout.is_zero()).then(|| {
        Box::pin(tokio::time::sleep_until(
            (session.last_request + session.idle_timeout).into(),
        ))
    });
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let socket = session.frames.get_mut();
    if !socket.is_plain() {
        return Wake::Input(None);
    }
    std::future::poll_fn(|cx| {
        if cancelled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Wake::Shutdown);
        }
        if let Some(t) = timer.as_mut() {
            if t.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Wake::Timer);
            }
        }
        // An error surfaces on the read that follows.
        socket.poll_input(cx).map(|()| Wake::Readable)
    })
    .await
}

/// How a session's active phase ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Idle for [`IDLE_RELEASE`] with nothing in flight: wait for input
    /// without the phase's futures and buffers.
    Idle,
    /// The client is gone or is being closed.
    Closed,
}

/// How long a plain-TCP client must be idle, with nothing in flight, before
/// its session gives back everything but its state (`Session` and
/// `Writer`, under 1 KiB) and its task.
const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// One decoded client frame (or why it could not be decoded).
type Input = Result<Request, ProtocolError>;

/// What ended a session's wait for input.
enum Wake {
    /// A frame, an error, or the end of input.
    Input(Option<Input>),
    /// The socket turned readable (an idle client, waiting with no buffer).
    Readable,
    /// Shutdown began.
    Shutdown,
    /// The idle or frame timer fired.
    Timer,
}

/// A transaction being queued (between MULTI and EXEC).
struct Txn {
    /// The slot every queued command must hash to, once known.
    slot: Option<u16>,
    /// The queued requests.
    queued: Vec<Bytes>,
    /// A command failed to queue: EXEC will abort.
    dirty: bool,
}

/// WATCH: the dedicated connection the watched keys were sent on.
struct Watch {
    slot: u16,
    conn: Dedicated,
}

struct Session {
    shared: Arc<Shared>,
    client: ClientState,
    keys: Vec<usize>,
    tx: queue::Sender<Item>,
    /// The command of the request being dispatched (for its metrics).
    command: Option<&'static CommandMetrics>,
    frames: FramedRead<ReadHalf, GuardedDecoder>,
    /// `frontend.idle_timeout` and `frontend.frame_timeout` at session start.
    idle_timeout: Duration,
    frame_timeout: Duration,
    /// Requests read whose replies are not written yet.
    outstanding: Arc<AtomicUsize>,
    /// Frames read while a blocking command was waiting.
    /// (Boxed: rare, and every idle client's state would carry its 32
    /// bytes; a box is 8.)
    #[allow(clippy::box_collection)]
    backlog: Option<Box<VecDeque<Input>>>,
    /// `frontend.max_pipeline` when the session started.
    max_pipeline: usize,
    /// Boxed, like `watch`: rare, and every idle client's state would
    /// otherwise carry their size.
    txn: Option<Box<Txn>>,
    watch: Option<Box<Watch>>,
    pubsub: Option<pubsub::Handle>,
    /// When the last request was read.
    last_request: Instant,
    /// Forwarded requests of the current read, not sent yet (see
    /// [`Session::flush_staged`]).
    staged: Vec<(Attempt, Timing)>,
    /// The number of the next batch (replies are matched to it).
    next_batch: u32,
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
    }

    /// Reads and dispatches requests until the client goes idle or must be
    /// closed; tells the writer which, through the reply queue.
    async fn run(&mut self, shutdown: &CancellationToken) -> End {
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
            let (dispatched, req) = match item {
                None => return End::Closed,
                Some(Ok(req)) => {
                    intake.bytes += req.frame().len() as u64;
                    intake.requests += 1;
                    let (slots, commands) = (slot_table.load(), command_table.load());
                    (self.dispatch(&req, slots, commands).await, req)
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
    async fn flush_staged(&mut self) -> bool {
        if self.staged.is_empty() {
            return true;
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
                None => {
                    Pending::Ready(ProxyError::BackendProtocol("request not sent".into()).to_resp())
                }
            };
            (pending, Some(timing))
        });
        let open = self.tx.send_all(items).await;
        self.staged = staged;
        open
    }

    /// PROXY CONFIG RELOAD: one line per changed key.
    fn reload(&self) -> Bytes {
        let Some(reloader) = self.shared.reloader.get().and_then(|w| w.upgrade()) else {
            return ProxyError::ShuttingDown.to_resp();
        };
        match reloader.reload() {
            Ok(report) => {
                let lines: Vec<String> = report
                    .applied
                    .iter()
                    .map(|k| format!("applied: {k}"))
                    .chain(
                        report
                            .certificates_reloaded
                            .iter()
                            .map(|k| format!("certificates reloaded: {k}")),
                    )
                    .chain(
                        report
                            .restart_needed
                            .iter()
                            .map(|k| format!("restart needed: {k}")),
                    )
                    .collect();
                let mut out = BytesMut::new();
                encode::array_header(lines.len(), &mut out);
                for l in lines {
                    encode::bulk_into(l.as_bytes(), &mut out);
                }
                out.freeze()
            }
            Err(e) => ProxyError::Syntax(format!(
                "configuration not reloaded: {}",
                e.to_string().replace('\n', ";")
            ))
            .to_resp(),
        }
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
            || self.txn.is_some();
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
    fn remember_script(&self, req: &Request) {
        let name = req.arg(0);
        if (name.eq_ignore_ascii_case(b"eval") || name.eq_ignore_ascii_case(b"eval_ro"))
            && req.argc() > 2
        {
            self.shared.retrier.remember_script(req.arg(1));
        } else if name.eq_ignore_ascii_case(b"script")
            && req.argc() == 3
            && req.arg(1).eq_ignore_ascii_case(b"load")
        {
            self.shared.retrier.remember_script(req.arg(2));
        }
    }

    fn lane(&self) -> Lane {
        Lane {
            index: self.client.id as usize,
            resp3: self.client.resp3,
        }
    }

    /// Waits until every earlier reply has been written, so a command about
    /// to run on another connection cannot overtake them.
    async fn barrier(&self) -> bool {
        let (done, wait) = oneshot::channel();
        self.tx.send((Pending::Barrier(done), None)).await.is_ok() && wait.await.is_ok()
    }

    /// Routes and runs one request against the tables given (the read
    /// loop's, see [`Session::read_loop`]). A plain forward's target is
    /// handed back for the request to be staged (see
    /// [`Session::flush_staged`]); everything else has its reply slot
    /// already.
    async fn dispatch(
        &mut self,
        req: &Request,
        slots: &SlotTable,
        commands: &CommandTable,
    ) -> Dispatched {
        let auth = &self.shared.auth;
        if auth.enabled() && self.client.user.is_none() {
            let name = req.arg(0);
            if !(name.eq_ignore_ascii_case(b"auth")
                || name.eq_ignore_ascii_case(b"hello")
                || name.eq_ignore_ascii_case(b"quit"))
            {
                return Dispatched::Now(Pending::Ready(ProxyError::NoAuth.to_resp()));
            }
        }
        if req.arg(0).eq_ignore_ascii_case(b"proxy") {
            if let Err(e) = auth.permit_proxy(self.client.user.as_deref()) {
                return Dispatched::Now(Pending::Ready(e.to_resp()));
            }
            if req.argc() == 3
                && req.arg(1).eq_ignore_ascii_case(b"config")
                && req.arg(2).eq_ignore_ascii_case(b"reload")
            {
                return Dispatched::Now(Pending::Ready(self.reload()));
            }
            return Dispatched::Now(Pending::Ready(local::proxy_command(req, slots)));
        }
        let frontend = &self.shared.frontend;
        let router = Router {
            commands,
            slots,
            allow_config_write: &|| frontend.load().allow_config_write,
        };
        let (route, spec) = router.route(req, &mut self.keys);
        self.command = spec.map(|s| s.metrics);
        if let Some(spec) = spec {
            if let Err(e) = auth.permit(self.client.user.as_deref(), spec) {
                return Dispatched::Now(Pending::Ready(e.to_resp()));
            }
        }
        self.remember_script(req);
        if !matches!(route, Route::Forward { .. }) && !self.staged.is_empty() {
            // What is not a plain forward may wait for earlier replies (a
            // barrier) or send on its own: this read's staged requests go
            // first, so nothing overtakes them. Boxed: the flush's state
            // would otherwise sit in every dispatch's future, so in every
            // active client's (1.2 KB).
            Box::pin(self.flush_staged()).await;
        }
        if self.txn.is_some() {
            return Dispatched::Now(Pending::Ready(Box::pin(self.queue(route, req)).await));
        }
        let subscribed = self.pubsub.as_ref().is_some_and(|p| p.active() > 0);
        if subscribed && !self.client.resp3 {
            // RESP2 clients in subscribed mode, as in Redis.
            let name = String::from_utf8_lossy(req.arg(0)).to_ascii_lowercase();
            match name.as_str() {
                "subscribe" | "psubscribe" | "ssubscribe" | "unsubscribe" | "punsubscribe"
                | "sunsubscribe" | "quit" | "reset" => {}
                "ping" => {
                    let mut out = BytesMut::new();
                    encode::array_header(2, &mut out);
                    encode::bulk_into(b"pong", &mut out);
                    encode::bulk_into(if req.argc() > 1 { req.arg(1) } else { b"" }, &mut out);
                    return Dispatched::Now(Pending::Ready(out.freeze()));
                }
                _ => {
                    return Dispatched::Now(Pending::Ready(
                        ProxyError::Syntax(format!(
                            "Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                        ))
                        .to_resp(),
                    ))
                }
            }
        }
        match route {
            Route::Local(spec) => {
                if matches!(spec.name.as_str(), "hello" | "reset") && !self.barrier().await {
                    return Dispatched::Now(Pending::Ready(ProxyError::ShuttingDown.to_resp()));
                }
                if spec.name == "reset" {
                    Box::pin(self.reset()).await;
                }
                let mut ctx = Ctx {
                    commands,
                    slots,
                    client: &mut self.client,
                    proxy: &self.shared.proxy,
                    retries: &self.shared.retrier.counters,
                    auth: &self.shared.auth,
                };
                Dispatched::Now(Pending::Ready(local::execute(spec, req, &mut ctx)))
            }
            Route::Reject(e) => Dispatched::Now(Pending::Ready(e.to_resp())),
            Route::FanOut(plan) => Dispatched::Now(Box::pin(self.fan_out(plan)).await),
            Route::Info(sections) => {
                let plan = fanout::info(
                    slots,
                    sections,
                    &self.shared.proxy,
                    commands,
                    &self.shared.retrier.counters,
                );
                Dispatched::Now(Box::pin(self.fan_out(plan)).await)
            }
            Route::Transaction(spec) => Dispatched::Now(Pending::Ready(
                Box::pin(self.transaction(&spec.name, req)).await,
            )),
            Route::PubSub(spec) => {
                Dispatched::Now(Box::pin(self.subscription(&spec.name, req)).await)
            }
            Route::Wait => Dispatched::Now(Pending::Ready(Box::pin(self.wait(slots, req)).await)),
            Route::Dedicated(target) => {
                Dispatched::Now(Pending::Ready(Box::pin(self.blocking(target, req)).await))
            }
            Route::Forward { target, readonly } => Dispatched::Forward { target, readonly },
        }
    }

    /// Sends every part on this client's lane and returns the pending merge.
    /// The parts bound for one node go as one batch: one write, one queue
    /// entry and one wake-up for all of them (their replies come back
    /// together).
    async fn fan_out(&self, plan: Plan) -> Pending {
        // One slot table for all the parts (redirects are followed per part).
        let table = self.shared.table.load_full();
        let lane = self.lane();
        let attempts: Vec<Attempt> = plan
            .parts
            .into_iter()
            .map(|part| Attempt {
                frame: part.frame,
                target: part.target,
                readonly: !plan.write,
                lane,
            })
            .collect();
        let (by_node, unroutable) = self.shared.retrier.group_by_node(&table, attempts.iter());
        let mut groups: Vec<Group> = unroutable
            .into_iter()
            .map(|(i, e)| Group {
                members: vec![i],
                sent: Err(e),
            })
            .collect();
        for (node, members) in by_node {
            let frames = members.iter().map(|&i| attempts[i].frame.clone()).collect();
            let sent = node.send_batch(lane, frames).await;
            groups.push(Group { members, sent });
        }
        Pending::FanOut(Box::new(FanOutPending {
            command: plan.command,
            write: plan.write,
            merge: plan.merge,
            attempts,
            groups,
        }))
    }

    /// The master of `target` now, for a dedicated connection.
    fn master_of(&self, target: &Target) -> Result<Arc<Node>, ProxyError> {
        self.shared.retrier.master_of(target, self.lane())
    }

    /// The transaction's connection: the one WATCH used, else a dedicated
    /// connection to the master of `target`.
    async fn pinned_conn(&mut self, target: Target) -> Result<Dedicated, ProxyError> {
        if let Some(w) = self.watch.take() {
            return Ok(w.conn);
        }
        let addr = self.master_of(&target)?.addr().to_string();
        self.shared.dedicated.get(&addr, self.client.resp3).await
    }

    /// A blocking command: runs alone on a dedicated connection, after every
    /// earlier reply, following redirects. Client input that arrives
    /// meanwhile is kept for later; if the client goes away, the connection
    /// is closed, which unblocks the node.
    async fn blocking(&mut self, target: Target, req: &Request) -> Bytes {
        if !self.barrier().await {
            return ProxyError::ShuttingDown.to_resp();
        }
        let mut addr = match self.master_of(&target) {
            Ok(n) => n.addr().to_string(),
            Err(e) => return e.to_resp(),
        };
        let mut asking = false;
        let max = self.shared.retrier.max_retries();
        for _ in 0..=max {
            let mut conn = match self.shared.dedicated.get(&addr, self.client.resp3).await {
                Ok(c) => c,
                Err(e) => return e.to_resp(),
            };
            let mut frame = BytesMut::new();
            if asking {
                frame.extend_from_slice(&encode::command(&["ASKING"]));
            }
            frame.extend_from_slice(req.frame());
            if let Err(e) = conn.write(&frame).await {
                return e.to_resp();
            }
            if asking {
                if let Err(e) = conn.read().await {
                    return e.to_resp();
                }
            }
            let reply = match self.while_client_waits(conn.read()).await {
                Some(Ok(r)) => r,
                Some(Err(e)) => return e.to_resp(),
                // The client left: dropping the connection unblocks the node.
                None => return ProxyError::ShuttingDown.to_resp(),
            };
            match Redirect::parse(&reply) {
                Some(Redirect::Moved { slot, addr: to }) => {
                    self.shared.retrier.topology().apply_moved(slot, &to);
                    self.shared.dedicated.put(conn);
                    addr = to;
                    asking = false;
                }
                Some(Redirect::Ask { addr: to, .. }) => {
                    self.shared.dedicated.put(conn);
                    addr = to;
                    asking = true;
                }
                None => {
                    self.shared.dedicated.put(conn);
                    return reply;
                }
            }
        }
        ProxyError::Syntax("slotproxy: too many redirects".into()).to_resp()
    }

    /// Awaits `work` (a blocked command's reply) while keeping an eye on the
    /// client: input that arrives meanwhile is kept for later (up to
    /// `max_pipeline` frames); `None` if the client disconnected.
    async fn while_client_waits<T>(
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

    /// WAIT numreplicas timeout. A client's writes travel on connections
    /// shared with other clients, so WAIT cannot simply be forwarded. It is
    /// emulated on every master, after every earlier reply: on a dedicated
    /// connection, a marker write (a proxy-owned key in that master's slots,
    /// expiring after a second) followed by the client's WAIT. The marker is
    /// later in the replication stream than all of the client's writes, so
    /// the replicas acknowledging it have them too. The reply is the
    /// smallest count over the masters: never more durability than there is.
    async fn wait(&mut self, slots: &SlotTable, req: &Request) -> Bytes {
        if !self.barrier().await {
            return ProxyError::ShuttingDown.to_resp();
        }
        let shared = self.shared.clone();
        let pool = &shared.dedicated;
        let masters: Vec<(String, u16)> = slots
            .first_slots()
            .into_iter()
            .map(|(slot, i)| (slots.shards()[i].master.addr().to_string(), slot))
            .collect();
        if masters.is_empty() {
            return slots.undiscovered_error().to_resp();
        }
        let frame = req.frame().clone();
        let each = masters.into_iter().map(|(addr, slot)| {
            let frame = frame.clone();
            async move {
                let mut conn = pool.get(&addr, false).await?;
                let marker = format!("__slotproxy:wait:{{{}}}", tag_for_slot(slot));
                let mut both = BytesMut::new();
                both.extend_from_slice(&encode::command(&["SET", &marker, "1", "PX", "1000"]));
                both.extend_from_slice(&frame);
                conn.write(&both).await?;
                let set = conn.read().await?;
                let waited = conn.read().await?;
                if set.first() == Some(&b'-') || waited.first() == Some(&b'-') {
                    let e = if set.first() == Some(&b'-') {
                        set
                    } else {
                        waited
                    };
                    return Err(ProxyError::Node(
                        String::from_utf8_lossy(&e[1..e.len() - 2]).into_owned(),
                    ));
                }
                pool.put(conn);
                Value::parse(&waited)
                    .ok()
                    .and_then(|v| v.as_int())
                    .ok_or_else(|| {
                        ProxyError::BackendProtocol("WAIT reply is not an integer".into())
                    })
            }
        });
        let all = futures_util::future::join_all(each);
        match self.while_client_waits(all).await {
            None => ProxyError::ShuttingDown.to_resp(),
            Some(results) => match results.into_iter().collect::<Result<Vec<i64>, _>>() {
                Ok(counts) => encode::integer(counts.into_iter().min().unwrap_or(0)),
                Err(e) => e.to_resp(),
            },
        }
    }

    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH.
    async fn transaction(&mut self, name: &str, req: &Request) -> Bytes {
        match name {
            "multi" => {
                self.txn = Some(Box::new(Txn {
                    slot: self.watch.as_ref().map(|w| w.slot),
                    queued: Vec::new(),
                    dirty: false,
                }));
                Bytes::from_static(encode::OK)
            }
            "exec" => ProxyError::Syntax("EXEC without MULTI".into()).to_resp(),
            "discard" => ProxyError::Syntax("DISCARD without MULTI".into()).to_resp(),
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
                let mut conn = match self.pinned_conn(Target::Slot(slot)).await {
                    Ok(c) => c,
                    Err(e) => return e.to_resp(),
                };
                match conn.call(req.frame()).await {
                    Ok(reply) if reply.first() == Some(&b'-') => {
                        if let Some(Redirect::Moved { slot, addr }) = Redirect::parse(&reply) {
                            self.shared.retrier.topology().apply_moved(slot, &addr);
                        }
                        // The watch set is unknown now: start over.
                        ProxyError::Syntax(format!(
                            "slotproxy: WATCH failed, retry the transaction: {}",
                            String::from_utf8_lossy(&reply[1..reply.len() - 2])
                        ))
                        .to_resp()
                    }
                    Ok(reply) => {
                        self.watch = Some(Box::new(Watch { slot, conn }));
                        reply
                    }
                    Err(e) => e.to_resp(),
                }
            }
            other => {
                ProxyError::Syntax(format!("unexpected transaction command {other}")).to_resp()
            }
        }
    }

    /// The one slot of a keyed request's keys (WATCH).
    fn slot_of_keys(&mut self, req: &Request) -> Result<u16, ProxyError> {
        let commands = self.shared.commands.load();
        let spec = commands.lookup(req)?;
        self.keys.clear();
        spec.key_positions(req, true, &mut self.keys);
        let mut slot = self.watch.as_ref().map(|w| w.slot);
        for &i in &self.keys {
            let s = key_slot(req.arg(i));
            match slot {
                Some(prev) if prev != s => return Err(ProxyError::CrossSlot),
                _ => slot = Some(s),
            }
        }
        slot.ok_or_else(|| ProxyError::WrongArity(spec.name.clone()))
    }

    async fn unwatch(&mut self) {
        if let Some(mut w) = self.watch.take() {
            if let Ok(reply) = w.conn.call(&encode::command(&["UNWATCH"])).await {
                if reply.first() == Some(&b'+') {
                    self.shared.dedicated.put(w.conn);
                }
            }
        }
    }

    /// RESET: leave MULTI, drop WATCH, end subscriptions, back to RESP2
    /// (the name is cleared by the local command).
    async fn reset(&mut self) {
        self.txn = None;
        self.unwatch().await;
        self.pubsub = None;
        self.client.resp3 = false;
    }

    /// (P|S)SUBSCRIBE and (P|S)UNSUBSCRIBE: handed to the client's pub/sub
    /// task, started on the first subscription; confirmations and messages
    /// come back through the writer.
    async fn subscription(&mut self, name: &str, req: &Request) -> Pending {
        let (kind, subscribe) = match name {
            "subscribe" => (pubsub::Kind::Channel, true),
            "psubscribe" => (pubsub::Kind::Pattern, true),
            "ssubscribe" => (pubsub::Kind::Shard, true),
            "unsubscribe" => (pubsub::Kind::Channel, false),
            "punsubscribe" => (pubsub::Kind::Pattern, false),
            _ => (pubsub::Kind::Shard, false),
        };
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

    /// A command inside MULTI: queued (with its slot checked) or, for EXEC,
    /// DISCARD and nested MULTI/WATCH, handled.
    async fn queue(&mut self, route: Route<'_>, req: &Request) -> Bytes {
        let Some(txn) = self.txn.as_mut() else {
            return ProxyError::Syntax("EXEC without MULTI".into()).to_resp();
        };
        let target = match route {
            Route::Transaction(spec) => {
                return match spec.name.as_str() {
                    "exec" => self.exec().await,
                    "discard" => {
                        self.txn = None;
                        self.unwatch().await;
                        Bytes::from_static(encode::OK)
                    }
                    "multi" => ProxyError::Syntax("MULTI calls can not be nested".into()).to_resp(),
                    _ => ProxyError::Syntax("WATCH inside MULTI is not allowed".into()).to_resp(),
                };
            }
            Route::Forward { target, .. } | Route::Dedicated(target) => target,
            Route::Local(_) => Target::AnyMaster,
            Route::FanOut(_) => {
                txn.dirty = true;
                return ProxyError::CrossSlot.to_resp();
            }
            Route::Info(_) | Route::PubSub(_) | Route::Wait => {
                txn.dirty = true;
                return ProxyError::Syntax(format!(
                    "slotproxy: {} cannot run inside MULTI",
                    String::from_utf8_lossy(req.arg(0)).to_uppercase()
                ))
                .to_resp();
            }
            Route::Reject(e) => {
                txn.dirty = true;
                return e.to_resp();
            }
        };
        match target {
            Target::Slot(s) => match txn.slot {
                Some(prev) if prev != s => {
                    txn.dirty = true;
                    return ProxyError::CrossSlot.to_resp();
                }
                _ => txn.slot = Some(s),
            },
            Target::AnyMaster | Target::Node(_) => {}
        }
        txn.queued.push(req.frame().clone());
        encode::simple("QUEUED")
    }

    /// EXEC: MULTI, the queued commands and EXEC go in one write to the
    /// master of the transaction's slot (on the WATCH connection if any);
    /// only EXEC's reply goes back. A command the node refuses while queueing
    /// (a MOVED after a reshard, say) makes the node abort the whole
    /// transaction: it is never half-applied.
    async fn exec(&mut self) -> Bytes {
        let Some(txn) = self.txn.take() else {
            return ProxyError::Syntax("EXEC without MULTI".into()).to_resp();
        };
        if txn.dirty {
            self.unwatch().await;
            return ProxyError::ExecAbort.to_resp();
        }
        if !self.barrier().await {
            return ProxyError::ShuttingDown.to_resp();
        }
        let target = txn.slot.map_or(Target::AnyMaster, Target::Slot);
        let mut conn = match self.pinned_conn(target).await {
            Ok(c) => c,
            Err(e) => return e.to_resp(),
        };
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&encode::command(&["MULTI"]));
        for q in &txn.queued {
            frame.extend_from_slice(q);
        }
        frame.extend_from_slice(&encode::command(&["EXEC"]));
        if let Err(e) = conn.write(&frame).await {
            return e.to_resp();
        }
        let mut exec_reply = None;
        for i in 0..txn.queued.len() + 2 {
            match conn.read().await {
                Ok(reply) => {
                    if let Some(Redirect::Moved { slot, addr }) = Redirect::parse(&reply) {
                        self.shared.retrier.topology().apply_moved(slot, &addr);
                    }
                    if i == txn.queued.len() + 1 {
                        exec_reply = Some(reply);
                    }
                }
                Err(e) => return e.to_resp(),
            }
        }
        self.shared.dedicated.put(conn);
        exec_reply.unwrap_or_else(|| ProxyError::BackendProtocol("no EXEC reply".into()).to_resp())
    }
}

/// A short hash tag whose keys fall in `slot`.
fn tag_for_slot(slot: u16) -> String {
    (0u32..)
        .map(|i| i.to_string())
        .find(|t| key_slot(t.as_bytes()) == slot)
        .expect("every slot has a short tag")
}

/// The client-visible bytes of a backend outcome.
fn reply_bytes(r: ReplyResult) -> Bytes {
    r.unwrap_or_else(|e| e.to_resp())
}

/// The write side of a session: what outlives its active phases.
struct Writer {
    wr: WriteHalf,
    rx: queue::Receiver<Item>,
    /// Replies batched for one write (released while idle).
    out: BytesMut,
    /// Pub/sub messages, once the client has subscribed.
    pushes: Option<mpsc::Receiver<Bytes>>,
    peer: Option<SocketAddr>,
}

/// A batch's replies, kept for its requests still to be written.
struct Replies {
    batch: u32,
    outcomes: Vec<ReplyResult>,
    left: usize,
}

/// Takes the reply of request `index` of `batch` (its first request stored
/// the batch's replies in `batches`).
fn take_member(batches: &mut Vec<Replies>, batch: u32, index: usize) -> ReplyResult {
    let Some(at) = batches.iter().position(|r| r.batch == batch) else {
        return Err(ProxyError::BackendProtocol("batch reply missing".into()));
    };
    let r = &mut batches[at];
    let outcome = std::mem::replace(&mut r.outcomes[index], Ok(Bytes::new()));
    r.left -= 1;
    if r.left == 0 {
        batches.swap_remove(at);
    }
    outcome
}

impl Writer {
    /// Writes replies in request order, batching those already available,
    /// until the reader pauses (true) or the connection is done (false).
    /// `unix`: for a client of the Unix socket, its name in the slow log
    /// (`ProxyInfo::unix_client`).
    async fn run(
        &mut self,
        retrier: &Retrier,
        slowlog: &SlowLog,
        outstanding: &AtomicUsize,
        unix: Option<&str>,
    ) -> bool {
        let open = self
            .write_replies(retrier, slowlog, outstanding, unix)
            .await;
        if !open {
            // The reader learns it on its next send.
            self.rx.close();
        }
        open
    }

    async fn write_replies(
        &mut self,
        retrier: &Retrier,
        slowlog: &SlowLog,
        outstanding: &AtomicUsize,
        unix: Option<&str>,
    ) -> bool {
        // Counted per reply here, added to the shared metrics before every
        // wait (and when the writer stops), with the clock read once per run
        // of replies written without waiting.
        let mut tally = Tally::new(outstanding);
        // The read whose requests the last reply in `out` answered (its
        // time): replies to the requests of one read are written together,
        // as Redis writes them, instead of one write per node that answers.
        let mut out_batch: Option<Instant> = None;
        // Batches whose replies are here and not all written yet (the
        // phase's, gone with it).
        let mut batches: Vec<Replies> = Vec::new();
        loop {
            if let Some(p) = self.pushes.as_mut() {
                while let Ok(msg) = p.try_recv() {
                    self.out.extend_from_slice(&msg);
                }
            }
            let item = match self.rx.try_recv() {
                Ok(item) => item,
                Err(queue::TryRecvError::Disconnected) => break,
                Err(queue::TryRecvError::Empty) => {
                    tally.flush();
                    if flush(&mut self.wr, &mut self.out).await.is_err() {
                        return false;
                    }
                    let next = match self.pushes.as_mut() {
                        Some(p) => tokio::select! {
                            item = std::future::poll_fn(|_| self.rx.poll_in_turn()) => item,
                            msg = p.recv() => {
                                match msg {
                                    Some(msg) => self.out.extend_from_slice(&msg),
                                    None => self.pushes = None,
                                }
                                continue;
                            }
                        },
                        None => std::future::poll_fn(|_| self.rx.poll_in_turn()).await,
                    };
                    match next {
                        Some(item) => item,
                        None => break,
                    }
                }
            };
            let (item, timing) = item;
            // Waiting for this reply need not flush `out` first when `out`
            // holds replies to the same read (pipelined requests).
            let same_read = !self.out.is_empty()
                && timing
                    .as_ref()
                    .map(|t| t.started)
                    .is_some_and(|t| out_batch == Some(t));
            // A forward's request, from its attempt (for the slow log).
            let mut forwarded = None;
            let reply = match item {
                Pending::Ready(b) => b,
                Pending::Subscribed(p) => {
                    self.pushes = Some(p);
                    // Its confirmation arrives as a message.
                    if timing.is_some() {
                        outstanding.fetch_sub(1, Ordering::Relaxed);
                    }
                    continue;
                }
                Pending::Routed(mut routed) => {
                    // Fast path: a reply that is already here and final.
                    let outcome = match routed.try_take() {
                        Some(outcome) if Retrier::is_final(&outcome) => outcome,
                        Some(outcome) => {
                            tally.flush();
                            if flush(&mut self.wr, &mut self.out).await.is_err() {
                                return false;
                            }
                            Box::pin(retrier.finish(&routed.attempt, outcome)).await
                        }
                        None => {
                            tally.flush();
                            if !same_read && flush(&mut self.wr, &mut self.out).await.is_err() {
                                return false;
                            }
                            // Not boxed: this is the common path at P=1, and
                            // the phase future it sits in is itself boxed.
                            retrier.complete(&routed.attempt, routed.sent).await
                        }
                    };
                    forwarded = Some(routed.attempt.frame);
                    reply_bytes(outcome)
                }
                Pending::Member(m) => {
                    let Member {
                        attempt,
                        place:
                            Place {
                                batch,
                                index,
                                count,
                                rx,
                            },
                    } = m;
                    if let Some(mut rx) = rx {
                        let outcomes = match try_batch(&mut rx, count) {
                            Some(outcomes) => outcomes,
                            None => {
                                tally.flush();
                                if !same_read && flush(&mut self.wr, &mut self.out).await.is_err() {
                                    return false;
                                }
                                recv_batch(&mut rx, count).await
                            }
                        };
                        batches.push(Replies {
                            batch,
                            outcomes,
                            left: count,
                        });
                    }
                    let outcome = take_member(&mut batches, batch, index);
                    let outcome = if Retrier::is_final(&outcome) {
                        outcome
                    } else {
                        tally.flush();
                        if flush(&mut self.wr, &mut self.out).await.is_err() {
                            return false;
                        }
                        Box::pin(retrier.finish(&attempt, outcome)).await
                    };
                    forwarded = Some(attempt.frame);
                    reply_bytes(outcome)
                }
                Pending::FanOut(mut f) => {
                    // Write what is ready first unless every part's reply is
                    // here and final (then the merge needs no wait).
                    let firsts = f.try_take();
                    let ready = firsts
                        .iter()
                        .all(|o| o.as_ref().is_some_and(Retrier::is_final));
                    if !ready {
                        tally.flush();
                        if !same_read && flush(&mut self.wr, &mut self.out).await.is_err() {
                            return false;
                        }
                    }
                    Box::pin(f.finish(retrier, firsts)).await
                }
                Pending::Barrier(done) => {
                    tally.flush();
                    if flush(&mut self.wr, &mut self.out).await.is_err() {
                        return false;
                    }
                    let _ = done.send(());
                    continue;
                }
                Pending::Pause => {
                    // The phase ends: keep no queue storage or write buffer
                    // while idle (both are kept between requests before).
                    self.rx.release();
                    let flushed = flush(&mut self.wr, &mut self.out).await.is_ok();
                    self.out = BytesMut::new();
                    return flushed;
                }
                Pending::Close => break,
                Pending::Nothing => {
                    if timing.is_some() {
                        outstanding.fetch_sub(1, Ordering::Relaxed);
                    }
                    continue;
                }
            };
            out_batch = timing.as_ref().map(|t| t.started);
            if let Some(t) = timing {
                let took = tally.now().saturating_duration_since(t.started);
                let (peer, unix) = (self.peer, unix);
                let client = move || match unix {
                    Some(name) => name.to_string(),
                    None => peer.map(|a| a.to_string()).unwrap_or_default(),
                };
                let frame = t.frame.or(forwarded).unwrap_or_default();
                slowlog.record(took, &frame, client, t.name.as_ref());
                let error = reply.first() == Some(&b'-');
                if error {
                    METRICS
                        .errors
                        .with_label_values(&[error_kind(&reply)])
                        .inc();
                }
                tally.reply(t.command, took, error);
            }
            tally.bytes_out += reply.len() as u64;
            if reply.len() >= LARGE_REPLY {
                tally.flush();
                if flush(&mut self.wr, &mut self.out).await.is_err()
                    || crate::tls::write_all(&mut self.wr, &reply).await.is_err()
                {
                    return false;
                }
            } else {
                self.out.extend_from_slice(&reply);
                if self.out.len() >= MAX_OUT {
                    tally.flush();
                    if flush(&mut self.wr, &mut self.out).await.is_err() {
                        return false;
                    }
                }
            }
        }
        if flush(&mut self.wr, &mut self.out).await.is_ok() {
            let _ = self.wr.shutdown().await;
        }
        false
    }
}

async fn flush(wr: &mut WriteHalf, out: &mut BytesMut) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    crate::tls::write_all(wr, out).await?;
    out.clear();
    if out.capacity() > 4 * MAX_OUT {
        *out = BytesMut::new();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_fills_its_room_gets_a_bigger_one() {
        use tokio_util::codec::Decoder;
        let mut decoder = GuardedDecoder {
            inner: RequestDecoder::new(Limits::default()),
            max_buffer: 1 << 20,
            budget: Arc::new(AtomicUsize::new(0)),
            max_total: 0,
            accounted: 0,
            last_len: 0,
            filled: false,
            last_progress: Instant::now(),
        };
        let set = |n: usize| {
            format!(
                "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${n}\r\n{}\r\n",
                "v".repeat(n)
            )
        };
        // A read that left room: the next gets the usual room.
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        buf.extend_from_slice(set(7500).as_bytes());
        assert!(decoder.decode(&mut buf).unwrap().is_some());
        assert!(decoder.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() - buf.len() >= READ_CHUNK);
        assert!(buf.capacity() - buf.len() < BIG_READ_CHUNK);
        // A read that filled all of it: more was waiting, so the next read
        // gets a bigger buffer.
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let two = set(5000).repeat(2);
        buf.extend_from_slice(&two.as_bytes()[..READ_CHUNK]);
        assert_eq!(buf.len(), buf.capacity());
        let first = decoder.decode(&mut buf).unwrap().unwrap();
        assert!(decoder.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() - buf.len() >= BIG_READ_CHUNK);
        buf.extend_from_slice(&two.as_bytes()[READ_CHUNK..]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap().unwrap().frame(),
            first.frame()
        );
    }

    #[test]
    fn a_tally_adds_up_to_what_it_counted() {
        let names = ["tally-a", "tally-b", "tally-c", "tally-d", "tally-e"];
        let metrics: Vec<&'static CommandMetrics> =
            names.iter().map(|n| CommandMetrics::new(n)).collect();
        let outstanding = AtomicUsize::new(100);
        let took = Duration::from_micros(300);
        {
            let mut tally = Tally::new(&outstanding);
            // Five commands: the fifth is counted directly, not locally.
            for round in 0..3 {
                for (i, m) in metrics.iter().enumerate() {
                    tally.reply(m, took, i == 1 && round == 0);
                }
            }
            assert_eq!(metrics[0].ok.get(), 0, "held until the flush");
            assert_eq!(metrics[4].ok.get(), 3, "a fifth command goes through");
            tally.flush();
            assert_eq!(outstanding.load(Ordering::Relaxed), 85);
            assert_eq!(metrics[0].ok.get(), 3);
            assert_eq!((metrics[1].ok.get(), metrics[1].error.get()), (2, 1));
            assert_eq!(metrics[2].latency.get_sample_count(), 3);
            tally.reply(metrics[3], took, false);
        }
        // Dropped: flushed.
        assert_eq!(outstanding.load(Ordering::Relaxed), 84);
        assert_eq!(metrics[3].ok.get(), 4);
        assert_eq!(metrics[3].latency.get_sample_count(), 4);
        assert!((metrics[3].latency.get_sample_sum() - 0.0012).abs() < 1e-9);
    }

    #[test]
    fn idle_session_state_stays_small() {
        // What an idle plain-TCP client keeps besides its socket (see
        // `End::Idle`); docs/benchmarks.md has the measured RSS per client.
        // 688 bytes. The whole idle future (this plus the idle wait, about
        // 1.1 KB) is most of the 1.6 KB an idle client costs, and its task
        // is allocated in 128-byte steps: at 720 bytes it took the next step
        // and cost 230 more bytes of RSS per idle client (at 672 and at 688,
        // `idle_clients.py` measured the same 1,557 B). A tripwire, then.
        let kept = std::mem::size_of::<Session>() + std::mem::size_of::<Writer>();
        assert!(kept <= 688, "idle session state grew to {kept} bytes");
    }

    /// The peek under `ReadHalf::poll_input`: a fresh socket is not
    /// taken for one with input, and the input stays for the read.
    async fn check_poll_input(mut rd: ReadHalf, client: &mut (impl tokio::io::AsyncWrite + Unpin)) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::time::{timeout, Duration};
        // tokio 1.54 calls a fresh socket readable at once; the peek waits
        // for real input...
        let waited = timeout(
            Duration::from_millis(100),
            std::future::poll_fn(|cx| rd.poll_input(cx)),
        )
        .await;
        assert!(waited.is_err());
        client.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
        timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| rd.poll_input(cx)),
        )
        .await
        .unwrap();
        // ...and leaves it for the read that follows.
        let mut buf = [0u8; 64];
        let n = timeout(Duration::from_secs(5), rd.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"*1\r\n$4\r\nPING\r\n");
    }

    #[tokio::test]
    async fn a_new_client_is_not_taken_for_one_with_input() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        let (rd, _wr) = socket.into_split();
        check_poll_input(ReadHalf::Tcp(rd), &mut client).await;
    }

    #[tokio::test]
    async fn a_new_unix_client_is_not_taken_for_one_with_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let mut client = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        let (rd, _wr) = socket.into_split();
        check_poll_input(ReadHalf::Unix(rd), &mut client).await;
    }
}
