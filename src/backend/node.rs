//! Backend connections: a few multiplexed, pipelined TCP connections per
//! cluster node.
//!
//! Each connection is a task that owns its socket. Requests from many
//! frontend sessions arrive on a bounded queue; the writer coalesces whatever
//! is queued into one batched write, and registers each request's reply slot
//! *before* writing it, so the reader can match replies first-in first-out.
//! Reply frames are passed back as raw bytes (no re-encoding).
//!
//! Invariants:
//! * A frontend session always uses the same connection ("lane") to a given
//!   node, so its pipelined commands to that node execute in order.
//! * A request that was never written is never failed for a connection
//!   problem it did not see: it waits in the queue for the next connection,
//!   or is failed with [`ProxyError::BackendUnavailable`] ("not executed")
//!   while the node cannot be reached.
//! * A request that was written when the connection broke or timed out is
//!   failed with an "unknown outcome" error and is never re-sent.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{oneshot, Notify};
use tokio_util::codec::FramedRead;
use tracing::{debug, warn};

use super::link::Link;
use super::roomy::RoomyDecoder;
use super::{read_failure, recv_reply, BatchRx, Lane, ReplyResult, ReplyRx};
use crate::backend::queue;
use crate::config::{BackendConfig, Tunable};
use crate::error::ProxyError;
use crate::ops::metrics::METRICS;
use crate::resp::is_error;
use crate::tls::{ReadHalf, Stream, WriteHalf};

/// Frames at least this large are written on their own instead of being
/// copied into the batch buffer.
const LARGE_FRAME: usize = 16 * 1024;
/// A batch is flushed once it holds this many bytes.
const MAX_BATCH: usize = 64 * 1024;

/// Settings shared by every backend connection.
#[derive(Debug)]
pub struct BackendSettings {
    /// Connections per node.
    pub connections_per_node: usize,
    /// TCP connect timeout.
    pub connect_timeout: Tunable,
    /// How long a written request may wait for its reply.
    pub request_timeout: Tunable,
    /// First reconnect delay.
    pub backoff_min: Tunable,
    /// Largest reconnect delay.
    pub backoff_max: Tunable,
    /// Queue depth per connection, in entries (a request or a batch).
    pub queue_depth: usize,
    /// Signalled when a node looks unhealthy or a redirect shows the slot
    /// table is stale; the topology refresher listens.
    pub refresh: Arc<Notify>,
    /// Send READONLY on every new connection (replica reads enabled).
    pub readonly: bool,
    /// How connections are opened: TLS and AUTH.
    pub link: Link,
}

impl BackendSettings {
    /// Applies the reloadable `[backend]` settings.
    pub fn reconfigure(&self, c: &BackendConfig) {
        self.connect_timeout.set(c.connect_timeout);
        self.request_timeout.set(c.request_timeout);
        self.backoff_min.set(c.reconnect_backoff_min);
        self.backoff_max.set(c.reconnect_backoff_max);
    }

    /// Settings from the `[backend]` config section.
    pub fn from_config(
        c: &BackendConfig,
        link: Link,
        refresh: Arc<Notify>,
        readonly: bool,
    ) -> Self {
        BackendSettings {
            connections_per_node: c.connections_per_node,
            connect_timeout: Tunable::new(c.connect_timeout),
            request_timeout: Tunable::new(c.request_timeout),
            backoff_min: Tunable::new(c.reconnect_backoff_min),
            backoff_max: Tunable::new(c.reconnect_backoff_max),
            queue_depth: c.queue_depth,
            refresh,
            readonly,
            link,
        }
    }
}

/// One request (or batch of requests) waiting for a connection.
struct Job {
    frames: Frames,
    /// Replies to discard before the one that answers (1 after ASKING).
    skip: u8,
    reply: ReplySlot,
}

/// A job's bytes: one frame, or a batch's frames, written back to back (a
/// batch is not copied into one buffer first: the writer copies each frame
/// once, into its write buffer, or writes a large one as it is).
enum Frames {
    One(Bytes),
    Many(Vec<Bytes>),
}

impl Frames {
    fn parts(&self) -> &[Bytes] {
        match self {
            Frames::One(frame) => std::slice::from_ref(frame),
            Frames::Many(frames) => frames,
        }
    }

    /// Total length in bytes.
    fn len(&self) -> usize {
        self.parts().iter().map(Bytes::len).sum()
    }
}

/// Where the replies to a job go.
enum ReplySlot {
    /// A single request's reply.
    One(oneshot::Sender<ReplyResult>),
    /// `want` requests' replies, sent together once all are here.
    Batch {
        tx: oneshot::Sender<Vec<ReplyResult>>,
        want: usize,
        got: Vec<ReplyResult>,
    },
}

impl ReplySlot {
    /// Takes one reply. `Some` when the slot is complete: what to
    /// [`ReplySlot::deliver`] (the reply itself, for a single request).
    fn answer(&mut self, frame: Bytes) -> Option<Bytes> {
        match self {
            ReplySlot::One(_) => Some(frame),
            ReplySlot::Batch { want, got, .. } => {
                got.push(Ok(frame));
                (got.len() == *want).then(Bytes::new)
            }
        }
    }

    /// Delivers a complete slot (`last` is a single request's reply).
    fn deliver(self, last: Bytes) {
        match self {
            ReplySlot::One(tx) => {
                let _ = tx.send(Ok(last));
            }
            ReplySlot::Batch { tx, got, .. } => {
                let _ = tx.send(got);
            }
        }
    }

    /// Fails what has no reply yet (replies already here are kept).
    fn fail(self, err: &ProxyError) {
        match self {
            ReplySlot::One(tx) => {
                let _ = tx.send(Err(err.clone()));
            }
            ReplySlot::Batch { tx, want, mut got } => {
                got.resize_with(want, || Err(err.clone()));
                let _ = tx.send(got);
            }
        }
    }
}

/// One request (or batch) written and waiting for its replies.
struct InFlight {
    skip: u8,
    reply: ReplySlot,
    sent_at: Instant,
}

/// `ASKING`, sent before a request redirected by `-ASK`.
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
/// `READONLY`, sent on new connections when replica reads are enabled.
const READONLY: &[u8] = b"*1\r\n$8\r\nREADONLY\r\n";
/// `HELLO 3`, sent on new connections that carry RESP3 clients' requests.
const HELLO3: &[u8] = b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";

/// A cluster node: an address and its multiplexed connections.
///
/// Nodes are shared between successive slot tables; when the last table
/// (and request) referring to a node is gone, its connection tasks finish
/// the requests in flight and exit.
#[derive(Debug)]
pub struct Node {
    addr: String,
    lanes: Vec<queue::Sender<Job>>,
    health: Arc<AtomicBool>,
    /// Client requests queued on the lanes (the proxy's own probes not
    /// counted): `slotproxy_backend_requests_total`.
    requests: AtomicU64,
}

impl Node {
    /// Creates the node and spawns its connection tasks. Connections are
    /// opened lazily, on the first request.
    pub fn spawn(addr: &str, settings: &Arc<BackendSettings>) -> Arc<Node> {
        let health = Arc::new(AtomicBool::new(true));
        let n = settings.connections_per_node;
        // RESP2 lanes first, then as many RESP3 lanes.
        let lanes = (0..2 * n)
            .map(|i| {
                let (tx, rx) = queue::queue(settings.queue_depth);
                tokio::spawn(connection_task(
                    addr.to_string(),
                    rx,
                    settings.clone(),
                    health.clone(),
                    i >= n,
                ));
                tx
            })
            .collect();
        Arc::new(Node {
            addr: addr.to_string(),
            lanes,
            health,
            requests: AtomicU64::new(0),
        })
    }

    /// Whether the node answered on its last connection attempt (true until
    /// a connect fails, a connection breaks or a request times out).
    pub fn is_reachable(&self) -> bool {
        self.health.load(Ordering::Relaxed)
    }

    /// The node's `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Client requests sent to the node on its multiplexed lanes so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Sends `frame` on lane 0 and records whether the node answered in
    /// time with a non-error reply; returns the reply if it did.
    pub async fn probe(&self, frame: Bytes, timeout: Duration) -> Option<Bytes> {
        let reply = self.request(frame, timeout).await;
        self.health.store(reply.is_some(), Ordering::Relaxed);
        reply
    }

    /// Sends `frame` on lane 0 and returns the reply if the node answered
    /// in time without an error; reachability is left as it was.
    pub async fn request(&self, frame: Bytes, timeout: Duration) -> Option<Bytes> {
        let lane = Lane {
            index: 0,
            resp3: false,
        };
        match self.enqueue(lane, frame, 0).await {
            Ok(mut rx) => match tokio::time::timeout(timeout, recv_reply(&mut rx)).await {
                Ok(Ok(r)) if !is_error(&r) => Some(r),
                _ => None,
            },
            Err(_) => None,
        }
    }

    /// Queues `frame` (one complete RESP request) on connection `lane`
    /// (taken modulo the number of connections) and returns the reply slot.
    /// Waits while that connection's queue is full.
    pub async fn send(&self, lane: Lane, frame: Bytes) -> Result<ReplyRx, ProxyError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.enqueue(lane, frame, 0).await
    }

    /// Like [`Node::send`], preceded by ASKING on the same connection (the
    /// answer to an `-ASK` redirect); the ASKING reply is discarded.
    pub async fn send_asking(&self, lane: Lane, frame: &[u8]) -> Result<ReplyRx, ProxyError> {
        let mut both = BytesMut::with_capacity(ASKING.len() + frame.len());
        both.extend_from_slice(ASKING);
        both.extend_from_slice(frame);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.enqueue(lane, both.freeze(), 1).await
    }

    /// Queues `frames` (one complete request each) on connection `lane` as
    /// one job: written together, and their replies come back together, in
    /// order (one wake-up instead of one per request).
    pub async fn send_batch(&self, lane: Lane, frames: Vec<Bytes>) -> Result<BatchRx, ProxyError> {
        self.requests
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let reply = ReplySlot::Batch {
            tx,
            want: frames.len(),
            got: Vec::with_capacity(frames.len()),
        };
        self.queue(lane, Frames::Many(frames), 0, reply).await?;
        Ok(rx)
    }

    async fn enqueue(&self, lane: Lane, frame: Bytes, skip: u8) -> Result<ReplyRx, ProxyError> {
        let (tx, rx) = oneshot::channel();
        self.queue(lane, Frames::One(frame), skip, ReplySlot::One(tx))
            .await?;
        Ok(rx)
    }

    async fn queue(
        &self,
        lane: Lane,
        frames: Frames,
        skip: u8,
        reply: ReplySlot,
    ) -> Result<(), ProxyError> {
        let n = self.lanes.len() / 2;
        let queue = &self.lanes[lane.index % n + if lane.resp3 { n } else { 0 }];
        let job = Job {
            frames,
            skip,
            reply,
        };
        // Waits only while the lane holds `queue_depth` requests.
        if queue.send(job).await.is_err() {
            return Err(ProxyError::BackendUnavailable(
                "connection task stopped".into(),
            ));
        }
        Ok(())
    }
}

/// Owns one backend connection: connects lazily, reconnects with
/// exponential backoff with jitter, and exits when the node is dropped.
async fn connection_task(
    addr: String,
    rx: queue::Receiver<Job>,
    s: Arc<BackendSettings>,
    health: Arc<AtomicBool>,
    resp3: bool,
) {
    let mut backoff = s.backoff_min.get();
    // Taken from the lane and not written yet: carried to the next
    // connection when one breaks.
    let mut unwritten: VecDeque<Job> = VecDeque::new();
    loop {
        if unwritten.is_empty() {
            match rx.recv().await {
                Some(job) => unwritten.push_back(job),
                None => return,
            }
        }
        match s.link.open(&addr, s.connect_timeout.get()).await {
            Ok(stream) => {
                backoff = s.backoff_min.get();
                health.store(true, Ordering::Relaxed);
                debug!(backend = %addr, "backend connection established");
                match session(stream, &mut unwritten, &rx, &s, resp3).await {
                    None => {
                        debug!(backend = %addr, "backend connection closed: node removed");
                        return;
                    }
                    Some(reason) => {
                        health.store(false, Ordering::Relaxed);
                        warn!(backend = %addr, %reason, "backend connection lost");
                        s.refresh.notify_one();
                    }
                }
            }
            Err(reason) => {
                health.store(false, Ordering::Relaxed);
                // Half fixed, half random ("equal jitter"): proxies that lost
                // a node together do not all reconnect at the same instant,
                // and none comes back sooner than half the backoff.
                let wait = backoff / 2 + (backoff / 2).mul_f64(rand::random::<f64>());
                warn!(backend = %addr, %reason, retry_in = ?wait, "backend connect failed");
                s.refresh.notify_one();
                let err = ProxyError::BackendUnavailable(reason);
                for job in unwritten.drain(..) {
                    job.reply.fail(&err);
                }
                // Until the next attempt, the node is unreachable: fail fast.
                let sleep = tokio::time::sleep(wait);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        job = rx.recv() => match job {
                            Some(job) => job.reply.fail(&err),
                            None => return,
                        },
                    }
                }
                backoff = (backoff * 2).min(s.backoff_max.get());
            }
        }
    }
}

/// Runs one connected session until it breaks (returns the reason) or the
/// node is dropped and everything in flight is answered (returns `None`).
/// Requests taken from the lane but not written stay in `unwritten`.
async fn session(
    stream: Stream,
    unwritten: &mut VecDeque<Job>,
    rx: &queue::Receiver<Job>,
    s: &BackendSettings,
    resp3: bool,
) -> Option<String> {
    let (rd, mut wr) = stream.into_split();
    // Written requests, registered before they are written (in the same
    // task: the reader finds them without a channel per request). The
    // reader is polled after the writer in every pass (the biased select
    // below), so a registration needs no wake-up: one would poll the task
    // again for nothing.
    let (inflight_tx, inflight_rx) = queue::in_turn(usize::MAX);
    let m = &*METRICS;
    m.backend_connections.inc();
    // Decremented however the session ends.
    struct Open;
    impl Drop for Open {
        fn drop(&mut self) {
            METRICS.backend_connections.dec();
        }
    }
    let _open = Open;
    // Connection setup goes first; its replies are read and dropped like
    // any other.
    let preamble = [(s.readonly, READONLY), (resp3, HELLO3)];
    for (_, frame) in preamble.iter().filter(|(on, _)| *on) {
        let (tx, _) = oneshot::channel();
        let _ = inflight_tx.push_all(&mut vec![InFlight {
            skip: 0,
            reply: ReplySlot::One(tx),
            sent_at: Instant::now(),
        }]);
        if let Err(e) = crate::tls::write_all(&mut wr, frame).await {
            return Some(format!("write failed: {e}"));
        }
    }
    // Biased, writer first: a batch it registers is then seen by the reader
    // in the same poll (no self-wake), and no random draw per poll.
    tokio::select! {
        biased;
        reason = write_loop(wr, unwritten, rx, inflight_tx) => reason,
        reason = read_loop(rd, inflight_rx, s) => reason,
    }
}

/// Takes requests from the lane a batch at a time, registers them with the
/// reader and writes them, one write per batch.
async fn write_loop(
    mut wr: WriteHalf,
    jobs: &mut VecDeque<Job>,
    rx: &queue::Receiver<Job>,
    inflight: queue::Sender<InFlight>,
) -> Option<String> {
    let mut buf = BytesMut::with_capacity(MAX_BATCH);
    // This batch's registrations, handed to the reader before each write.
    let mut batch: Vec<InFlight> = Vec::new();
    let bytes_out = METRICS.backend_bytes.with_label_values(&["out"]);
    loop {
        if jobs.is_empty() {
            match rx.recv().await {
                Some(job) => jobs.push_back(job),
                None => {
                    // Node dropped: let the reader answer what is in flight.
                    drop(inflight);
                    return std::future::pending().await;
                }
            }
        }
        let _ = rx.drain_into(jobs);
        // A small batch: let the sessions that are ready run first (one
        // yield), so their requests share this write (docs/benchmarks.md,
        // section 3).
        if jobs.iter().map(|j| j.frames.len()).sum::<usize>() < MAX_BATCH / 4 {
            tokio::task::yield_now().await;
            let _ = rx.drain_into(jobs);
        }
        // One clock read per batch: the reader's timeout is coarse anyway.
        let sent_at = Instant::now();
        while let Some(Job {
            frames,
            skip,
            reply,
        }) = jobs.pop_front()
        {
            // Registered (with the batch) before any of its bytes go out.
            batch.push(InFlight {
                skip,
                reply,
                sent_at,
            });
            for frame in frames.parts() {
                if frame.len() >= LARGE_FRAME {
                    if let Err(e) =
                        write_batch(&mut wr, &mut buf, &mut batch, &inflight, &bytes_out).await
                    {
                        return Some(e);
                    }
                    if let Err(e) = crate::tls::write_all(&mut wr, frame).await {
                        return Some(format!("write failed: {e}"));
                    }
                    bytes_out.inc_by(frame.len() as u64);
                } else {
                    buf.extend_from_slice(frame);
                    if buf.len() >= MAX_BATCH {
                        if let Err(e) =
                            write_batch(&mut wr, &mut buf, &mut batch, &inflight, &bytes_out).await
                        {
                            return Some(e);
                        }
                    }
                }
            }
        }
        if let Err(e) = write_batch(&mut wr, &mut buf, &mut batch, &inflight, &bytes_out).await {
            return Some(e);
        }
    }
}

/// Registers `batch` with the reader, then writes `buf` (emptying both).
async fn write_batch(
    wr: &mut WriteHalf,
    buf: &mut BytesMut,
    batch: &mut Vec<InFlight>,
    inflight: &queue::Sender<InFlight>,
    bytes_out: &prometheus::IntCounter,
) -> Result<(), String> {
    // Register before writing so the reader always finds the slot. The
    // reader outlives the writer, so this cannot fail.
    let _ = inflight.push_all(batch);
    if buf.is_empty() {
        return Ok(());
    }
    crate::tls::write_all(wr, buf)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    bytes_out.inc_by(buf.len() as u64);
    buf.clear();
    Ok(())
}

async fn read_loop(
    rd: ReadHalf,
    inflight: queue::Receiver<InFlight>,
    s: &BackendSettings,
) -> Option<String> {
    let mut framed = FramedRead::new(rd, RoomyDecoder::default());
    // The reader's own copy, in write order: the shared queue is looked at
    // only when this runs out (one lock per batch written).
    let mut queue: VecDeque<InFlight> = VecDeque::new();
    let bytes_in = METRICS.backend_bytes.with_label_values(&["in"]);
    // Reply bytes not yet added to `bytes_in` (added before each wait).
    let mut received = 0u64;
    // One coarse timer per connection instead of one per request.
    let tick =
        (s.request_timeout.get() / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let failure = loop {
        if queue.is_empty() && inflight.drain_into(&mut queue).is_err() {
            report(&bytes_in, &mut received);
            tokio::select! {
                biased;
                f = std::future::poll_fn(|_| inflight.poll_in_turn()) => match f {
                    Some(f) => queue.push_back(f),
                    None => return None,
                },
                frame = framed.next() => break match frame {
                    None => ProxyError::BackendConnectionLost("closed by the node".into()),
                    Some(Err(e)) => read_failure(e),
                    Some(Ok(_)) => ProxyError::BackendProtocol("reply without a request".into()),
                },
            }
            continue;
        }
        // Replies already buffered are taken without the timer; it is
        // polled only when the reader must wait (a request can time out only
        // while no reply comes).
        let frame = match framed.next().now_or_never() {
            Some(frame) => frame,
            None => {
                report(&bytes_in, &mut received);
                tokio::select! {
                    biased;
                    frame = framed.next() => frame,
                    _ = ticker.tick() => {
                        if queue.front().is_some_and(|f| f.sent_at.elapsed() >= s.request_timeout.get()) {
                            break ProxyError::BackendTimeout;
                        }
                        continue;
                    }
                }
            }
        };
        match frame {
            Some(Ok(frame)) => {
                if let Some(front) = queue.front_mut().filter(|f| f.skip > 0) {
                    // The ASKING reply before the real one.
                    front.skip -= 1;
                    continue;
                }
                let Some(front) = queue.front_mut() else {
                    break ProxyError::BackendProtocol("reply without a request".into());
                };
                received += frame.len() as u64;
                if let Some(last) = front.reply.answer(frame) {
                    if let Some(f) = queue.pop_front() {
                        f.reply.deliver(last);
                    }
                }
            }
            None => break ProxyError::BackendConnectionLost("closed by the node".into()),
            Some(Err(e)) => break read_failure(e),
        }
    };
    report(&bytes_in, &mut received);
    let reason = failure.to_string();
    let _ = inflight.drain_into(&mut queue);
    for f in queue {
        f.reply.fail(&failure);
    }
    Some(reason)
}

/// Adds the reply bytes counted since the last wait to `counter`.
fn report(counter: &prometheus::IntCounter, received: &mut u64) {
    if *received > 0 {
        counter.inc_by(std::mem::take(received));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::try_batch;

    /// A batch slot for `want` replies, and its receiving end.
    fn batch_slot(want: usize) -> (ReplySlot, BatchRx) {
        let (tx, rx) = oneshot::channel();
        let slot = ReplySlot::Batch {
            tx,
            want,
            got: Vec::new(),
        };
        (slot, rx)
    }

    #[test]
    fn a_batch_is_delivered_whole_and_in_order() {
        let (mut slot, mut rx) = batch_slot(3);
        assert!(slot.answer(Bytes::from_static(b"+a\r\n")).is_none());
        assert!(slot.answer(Bytes::from_static(b"+b\r\n")).is_none());
        assert!(try_batch(&mut rx, 3).is_none());
        let last = slot.answer(Bytes::from_static(b"+c\r\n")).unwrap();
        slot.deliver(last);
        let got = try_batch(&mut rx, 3).unwrap();
        let got: Vec<Bytes> = got.into_iter().map(Result::unwrap).collect();
        assert_eq!(got, ["+a\r\n", "+b\r\n", "+c\r\n"]);
    }

    #[test]
    fn a_failed_batch_keeps_the_replies_it_had() {
        let (mut slot, mut rx) = batch_slot(3);
        assert!(slot.answer(Bytes::from_static(b"+OK\r\n")).is_none());
        slot.fail(&ProxyError::BackendTimeout);
        let got = try_batch(&mut rx, 3).unwrap();
        assert_eq!(got.len(), 3);
        assert!(got[0].is_ok());
        assert!(matches!(got[1], Err(ProxyError::BackendTimeout)));
        assert!(matches!(got[2], Err(ProxyError::BackendTimeout)));
        // A slot dropped unanswered reads as a lost connection, per request.
        let (tx, mut rx) = oneshot::channel::<Vec<ReplyResult>>();
        drop(tx);
        let got = try_batch(&mut rx, 2).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got
            .iter()
            .all(|r| matches!(r, Err(ProxyError::BackendConnectionLost(_)))));
    }

    const LANE0: Lane = Lane {
        index: 0,
        resp3: false,
    };

    fn settings(timeout: Duration) -> Arc<BackendSettings> {
        Arc::new(BackendSettings {
            connections_per_node: 1,
            connect_timeout: Tunable::new(Duration::from_millis(500)),
            request_timeout: Tunable::new(timeout),
            backoff_min: Tunable::new(Duration::from_millis(10)),
            backoff_max: Tunable::new(Duration::from_millis(100)),
            queue_depth: 16,
            refresh: Arc::new(Notify::new()),
            readonly: false,
            link: Link::default(),
        })
    }

    #[tokio::test]
    async fn unreachable_node_fails_fast_as_not_executed() {
        // Bind then drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let node = Node::spawn(
            &format!("127.0.0.1:{port}"),
            &settings(Duration::from_secs(1)),
        );
        let mut rx = node
            .send(LANE0, Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"))
            .await
            .unwrap();
        let err = recv_reply(&mut rx).await.unwrap_err();
        assert!(matches!(err, ProxyError::BackendUnavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn silent_node_times_out_with_unknown_outcome() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // Accept and never answer.
        let hold = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(sock);
        });
        let node = Node::spawn(&addr, &settings(Duration::from_millis(200)));
        let started = Instant::now();
        let mut rx = node
            .send(LANE0, Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"))
            .await
            .unwrap();
        let err = recv_reply(&mut rx).await.unwrap_err();
        assert!(matches!(err, ProxyError::BackendTimeout), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        hold.abort();
    }
}
