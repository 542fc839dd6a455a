//! One client request: the bytes to forward and its argument offsets into
//! them (zero-copy), and the decoder's limits.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use super::encode;

/// Decoder limits; defaults as in Redis.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest accepted bulk argument (Redis `proto-max-bulk-len`, 512 MiB).
    pub max_bulk_len: usize,
    /// Most arguments accepted in one multibulk request (`i32::MAX`, as Redis).
    pub max_multibulk_len: usize,
    /// Longest accepted inline request line (64 KiB).
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: i32::MAX as usize,
            max_inline_len: 64 * 1024,
        }
    }
}

/// Argument offsets of a request: up to [`INLINE_ARGS`] without a heap
/// allocation (GET, SET, HSET, ... are that short).
pub(super) type Args = SmallVec<[Range<usize>; INLINE_ARGS]>;

/// Arguments a request holds without a heap allocation.
pub(super) const INLINE_ARGS: usize = 4;

/// One client request: the RESP multibulk bytes to forward plus argument
/// offsets into them (zero-copy).
#[derive(Debug, Clone)]
pub struct Request {
    pub(super) frame: Bytes,
    pub(super) args: Args,
    pub(super) inline: bool,
}

impl Request {
    /// The RESP encoding of the request: the client's original bytes for RESP
    /// input, a re-encoded `*N\r\n$..\r\n` multibulk for inline input.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// Consumes the request, returning its RESP encoding (see [`Request::frame`]).
    pub fn into_frame(self) -> Bytes {
        self.frame
    }

    /// The number of arguments, including the command name.
    pub fn argc(&self) -> usize {
        self.args.len()
    }

    /// Argument `i` (0 is the command name).
    ///
    /// # Panics
    ///
    /// Panics if `i >= self.argc()`.
    pub fn arg(&self, i: usize) -> &[u8] {
        &self.frame[self.args[i].clone()]
    }

    /// Argument `i` as a zero-copy slice of the frame.
    ///
    /// # Panics
    ///
    /// Panics if `i >= self.argc()`.
    pub fn arg_bytes(&self, i: usize) -> Bytes {
        self.frame.slice(self.args[i].clone())
    }

    /// The RESP encoding (`$<len>\r\n<data>\r\n` each) of the `count`
    /// arguments from `first`, as they sit in the frame: what a sub-request
    /// carrying the same arguments copies.
    ///
    /// # Panics
    ///
    /// Panics if `count` is 0 or `first + count > self.argc()`.
    pub fn encoded_args(&self, first: usize, count: usize) -> &[u8] {
        // Each argument's encoding starts where the previous one's (or the
        // `*<n>\r\n` header's) ends; every payload is followed by CRLF.
        let start = match first {
            0 => {
                let nl = self.frame.iter().position(|&b| b == b'\n');
                nl.map_or(0, |i| i + 1)
            }
            _ => self.args[first - 1].end + 2,
        };
        &self.frame[start..self.args[first + count - 1].end + 2]
    }

    /// Iterates over all arguments.
    pub fn args(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.args.iter().map(move |r| &self.frame[r.clone()])
    }

    /// Whether the client sent this request as an inline command.
    pub fn is_inline(&self) -> bool {
        self.inline
    }

    /// Builds a request by encoding `args` as a new multibulk.
    pub fn from_args<A: AsRef<[u8]>>(args: &[A]) -> Request {
        Self::encoded(args, false)
    }

    pub(super) fn encoded<A: AsRef<[u8]>>(args: &[A], inline: bool) -> Request {
        let payload: usize = args.iter().map(|a| a.as_ref().len() + 25).sum();
        let mut out = BytesMut::with_capacity(payload + 23);
        encode::array_header(args.len(), &mut out);
        let mut ranges = Args::with_capacity(args.len());
        for a in args {
            let a = a.as_ref();
            encode::bulk_into(a, &mut out);
            let end = out.len() - 2;
            ranges.push(end - a.len()..end);
        }
        Request {
            frame: out.freeze(),
            args: ranges,
            inline,
        }
    }
}
