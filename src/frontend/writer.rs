//! The write side of a session: takes the reply slots in request order,
//! completes each (redirects and retries included, through the retrier),
//! and coalesces ready replies into one write.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::pending::{reply_bytes, Item, Member, Pending, Place};
use super::tally::Tally;
use crate::backend::{queue, recv_batch, recv_reply, try_batch, try_reply, ReplyResult};
use crate::cluster::retry::Retrier;
use crate::error::ProxyError;
use crate::ops::metrics::{error_kind, METRICS};
use crate::ops::slowlog::SlowLog;
use crate::resp::is_error;
use crate::tls::WriteHalf;

/// Replies at least this large are written directly instead of being copied
/// into the output buffer.
const LARGE_REPLY: usize = 16 * 1024;
/// Output is flushed once this much is buffered.
const MAX_OUT: usize = 64 * 1024;

/// The write side of a session: what outlives its active phases.
pub(crate) struct Writer {
    pub(crate) wr: WriteHalf,
    pub(crate) rx: queue::Receiver<Item>,
    /// Replies batched for one write (released while idle).
    pub(crate) out: BytesMut,
    /// Pub/sub messages, once the client has subscribed.
    pub(crate) pushes: Option<mpsc::Receiver<Bytes>>,
    pub(crate) peer: Option<SocketAddr>,
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
        return Err(ProxyError::Internal("batch reply missing".into()));
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
    pub(crate) async fn run(
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
                Pending::Final(mut rx) => {
                    let outcome = match try_reply(&mut rx) {
                        Some(outcome) => outcome,
                        None => {
                            tally.flush();
                            if !same_read && flush(&mut self.wr, &mut self.out).await.is_err() {
                                return false;
                            }
                            recv_reply(&mut rx).await
                        }
                    };
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
            let silent = timing.as_ref().is_some_and(|t| t.silent);
            if let Some(t) = timing {
                let took = tally.now().saturating_duration_since(t.started);
                let (peer, unix) = (self.peer, unix);
                let client = move || match unix {
                    Some(name) => name.to_string(),
                    None => peer.map(|a| a.to_string()).unwrap_or_default(),
                };
                let frame = t.frame.or(forwarded).unwrap_or_default();
                slowlog.record(took, &frame, client, t.name.as_ref());
                let error = is_error(&reply);
                if error {
                    METRICS
                        .errors
                        .with_label_values(&[error_kind(&reply)])
                        .inc();
                }
                tally.reply(t.command, took, error);
            }
            if silent {
                // CLIENT REPLY OFF or SKIP.
                continue;
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
