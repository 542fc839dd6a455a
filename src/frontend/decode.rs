//! Client input: the request decoder with the per-client and proxy-wide
//! buffer limits, and the time of the last input byte (slow-loris
//! protection).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use crate::config::FrontendConfig;
use crate::resp::{Limits, ProtocolError, Request, RequestDecoder};

/// The request decoder with the per-client and global buffer limits, and
/// the time of the last new input byte (slow-loris protection).
pub struct GuardedDecoder {
    pub(crate) inner: RequestDecoder,
    pub(crate) max_buffer: usize,
    pub(crate) budget: Arc<AtomicUsize>,
    pub(crate) max_total: usize,
    /// Bytes of this client counted in `budget`.
    pub(crate) accounted: usize,
    pub(crate) last_len: usize,
    /// Whether the last read filled all the room it had (more was likely
    /// waiting): the next read gets a bigger buffer.
    pub(crate) filled: bool,
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
pub(crate) const MIN_READ: usize = 1024;
/// How much room is made for a read.
pub(crate) const READ_CHUNK: usize = 8 * 1024;
/// How much room is made after a read that filled its room.
pub(crate) const BIG_READ_CHUNK: usize = 16 * 1024;

/// The request decoder limits of a `[frontend]` section.
pub fn limits_of(f: &FrontendConfig) -> Limits {
    Limits {
        max_bulk_len: f.max_bulk_len,
        max_multibulk_len: f.max_multibulk_len,
        max_inline_len: f.max_inline_len,
    }
}

impl GuardedDecoder {
    /// A decoder with the limits of `f`, accounting its buffered input in
    /// the proxy-wide `budget`.
    pub(crate) fn new(f: &FrontendConfig, budget: Arc<AtomicUsize>) -> GuardedDecoder {
        GuardedDecoder {
            inner: RequestDecoder::new(limits_of(f)),
            max_buffer: f.max_query_buffer,
            budget,
            max_total: f.max_client_memory,
            accounted: 0,
            last_len: 0,
            filled: false,
            last_progress: Instant::now(),
        }
    }
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
}
