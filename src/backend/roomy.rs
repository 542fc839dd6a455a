//! The reply decoder of the multiplexed backend connections.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::resp::{ProtocolError, ReplyDecoder};

/// The reply decoder of a shared connection: when it needs more input, it
/// makes room for a good-sized read first. Left to `FramedRead`, the buffer
/// is replaced by one just big enough for what is left plus its first
/// 8 KiB, so with 4 KiB replies every read returned about one reply (a
/// system call each). Dedicated connections (one per blocked or subscribed
/// client) keep the plain decoder and its smaller buffer.
#[derive(Default)]
pub(super) struct RoomyDecoder(ReplyDecoder);

/// A shared connection's read has at least this much room...
const MIN_READ: usize = 4 * 1024;
/// ...and when it has less, it gets a buffer of this size (or what is left
/// plus `MIN_READ`, if that is more): jemalloc's largest small size class,
/// whose freed buffers it reuses at once. A larger "large" allocation's
/// freed pages are kept for the allocator's decay time, which showed as a
/// higher peak RSS under pipelined load (docs/benchmarks.md, section 7).
const READ_BUFFER: usize = 14 * 1024;

impl Decoder for RoomyDecoder {
    type Item = Bytes;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, ProtocolError> {
        let out = self.0.decode(src)?;
        if out.is_none() && src.capacity() - src.len() < MIN_READ {
            src.reserve(READ_BUFFER.saturating_sub(src.len()).max(MIN_READ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_connection_reads_in_good_sized_chunks() {
        let mut decoder = RoomyDecoder::default();
        let mut buf = BytesMut::with_capacity(8 * 1024);
        // A 4 KiB reply and most of another: FramedRead's own growth would
        // leave room for about one more reply.
        let reply = format!("$4096\r\n{}\r\n", "x".repeat(4096));
        buf.extend_from_slice(reply.as_bytes());
        buf.extend_from_slice(&reply.as_bytes()[..3000]);
        let first = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(first, reply.as_bytes());
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        // Room for two more replies, in a buffer of a small size class.
        assert!(buf.capacity() - buf.len() > 2 * reply.len());
        assert!(buf.capacity() <= READ_BUFFER);
        buf.extend_from_slice(&reply.as_bytes()[3000..]);
        assert_eq!(decoder.decode(&mut buf).unwrap().unwrap(), reply.as_bytes());
    }
}
