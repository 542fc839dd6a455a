//! The frontend layer: one session per client connection.
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

//!
//! * [`serve`] (here): a session's lifecycle: active phases (reader and
//!   writer polled in turn) and idle waits with nothing allocated.
//! * `decode`: input limits and the request decoder.
//! * `session`: the read side: dispatch, staging, and the stateful
//!   commands (transaction, blocking, WAIT, subscription hand-off).
//! * `pending`: the reply slots the read side hands the write side.
//! * `writer`: the write side.
//! * `tally`: per-session metric counts.
//! * [`pubsub`]: a subscribed client's pub/sub task.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::BytesMut;
use futures_util::task::AtomicWaker;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::backend::queue;
use crate::command::local::ClientState;
use crate::ops::clients::ClientEntry;
use crate::server::shared::Shared;
use crate::tls::Stream;

mod decode;
mod pending;
pub mod pubsub;
mod session;
mod tally;
mod writer;

use decode::{GuardedDecoder, READ_CHUNK};
use session::{End, Session, Wake};
use writer::Writer;

pub use decode::limits_of;

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
    // CLIENT KILL cancels this session's own token; shutdown cancels all.
    let shutdown = shutdown.child_token();
    let entry = Arc::new(ClientEntry::new(
        id,
        match (unix, &shared.proxy.unix_client) {
            (true, Some(name)) => name.clone(),
            _ => peer_addr.map(|a| a.to_string()).unwrap_or_default(),
        },
        match (unix, &shared.proxy.unix_client) {
            (true, Some(name)) => name.clone(),
            _ => local_addr.to_string(),
        },
        unix,
        shutdown.clone(),
    ));
    let registration = shared.proxy.clients.register(entry.clone());
    let (rd, wr) = stream.into_split();
    let settings = shared.frontend.load();
    // The reader and the writer run in one task, polled in turn (`in_turn`).
    let (tx, rx) = queue::in_turn(settings.max_pipeline);
    let outstanding = Arc::new(AtomicUsize::new(0));
    let mut session = Session {
        shared: shared.clone(),
        client: ClientState {
            peer_addr,
            ..ClientState::with_entry(local_addr, entry)
        },
        keys: Vec::new(),
        tx,
        // No read buffer until the client sends something.
        frames: FramedRead::with_capacity(
            rd,
            GuardedDecoder::new(&settings, shared.client_memory.clone()),
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
        let _ = (&guard, &registration);
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
/// Each half is polled only when a waker of its own fired (or the reader
/// just ran, for the writer): a client waiting for its reply is woken once
/// by the reply, and its reader's wait (socket, timer, shutdown) is not
/// polled again for it.
///
/// The futures come pinned by the caller: an `async fn` keeps its arguments
/// for its whole life, so pinning them again in here would hold both twice
/// in every active client (docs/benchmarks.md, "Figures behind the code").
async fn in_turn<R, W>(
    mut reader: std::pin::Pin<&mut R>,
    mut writer: std::pin::Pin<&mut W>,
) -> (R::Output, W::Output)
where
    R: Future,
    W: Future,
{
    let halves = Arc::new(Halves::default());
    let reader_waker = Waker::from(Arc::new(Half {
        halves: halves.clone(),
        reader: true,
    }));
    let writer_waker = Waker::from(Arc::new(Half {
        halves: halves.clone(),
        reader: false,
    }));
    let mut read = None;
    let mut written = None;
    std::future::poll_fn(|cx| {
        // Registered before the halves are polled: a wake-up during the
        // pass schedules the task again.
        halves.task.register(cx.waker());
        let mut wcx = Context::from_waker(&writer_waker);
        if written.is_none() && halves.writer.swap(false, Ordering::Acquire) {
            written = poll_ready(writer.as_mut(), &mut wcx);
        }
        if read.is_none() && halves.reader.swap(false, Ordering::Acquire) {
            read = poll_ready(reader.as_mut(), &mut Context::from_waker(&reader_waker));
            // What the reader just queued.
            if written.is_none() {
                halves.writer.store(false, Ordering::Relaxed);
                written = poll_ready(writer.as_mut(), &mut wcx);
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

/// The wake-up state of a session's two halves (see [`in_turn`]).
struct Halves {
    /// The session's task.
    task: AtomicWaker,
    /// Whether the reader's (writer's) waker fired since it was last polled.
    reader: AtomicBool,
    writer: AtomicBool,
}

impl Default for Halves {
    fn default() -> Self {
        // Both are polled on the first pass.
        Halves {
            task: AtomicWaker::new(),
            reader: AtomicBool::new(true),
            writer: AtomicBool::new(true),
        }
    }
}

/// The waker handed to one half: marks it, then wakes the task.
struct Half {
    halves: Arc<Halves>,
    reader: bool,
}

impl std::task::Wake for Half {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let flag = if self.reader {
            &self.halves.reader
        } else {
            &self.halves.writer
        };
        flag.store(true, Ordering::Release);
        self.halves.task.wake();
    }
}

/// Polls `f` once: its output if it is done.
fn poll_ready<F: Future>(f: std::pin::Pin<&mut F>, cx: &mut Context<'_>) -> Option<F::Output> {
    match f.poll(cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// An idle session's wait: for input (readable), shutdown, or
/// `frontend.idle_timeout`. Written as one small poll function: this wait is
/// part of every idle client's future, and a `select!` over the same three
/// futures is several times larger. `Input(None)` for a session that is not
/// plain TCP.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ReadHalf;

    #[test]
    fn idle_session_state_stays_small() {
        // What an idle plain-TCP client keeps besides its socket (see
        // `End::Idle`): most of what an idle client costs. Its task is
        // allocated in 128-byte steps, so a few bytes more can cost a whole
        // step per idle client. A tripwire at the size measured last
        // (docs/benchmarks.md, "Figures behind the code").
        let kept = std::mem::size_of::<Session>() + std::mem::size_of::<Writer>();
        assert!(kept <= 632, "idle session state grew to {kept} bytes");
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
