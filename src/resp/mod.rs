//! The RESP codec.
//!
//! * [`decoder`]: the resumable client request decoder ([`RequestDecoder`]),
//!   accepting RESP multibulk and inline commands with Redis 7 semantics;
//!   [`request`]: the zero-copy [`Request`]s it yields.
//! * [`reply`]: the resumable reply boundary scanner ([`ReplyDecoder`]) for
//!   backend replies (RESP2 and RESP3). It never re-encodes: each complete
//!   reply is yielded as the exact bytes the backend sent.
//! * [`encode`]: helpers to build replies and commands.
//! * [`value`]: an owned parsed [`Value`] for the proxy's own control-plane
//!   replies (`CLUSTER SLOTS`, `COMMAND`, ...).
//!
//! Both decoders keep their scan progress between calls, so feeding a frame
//! in arbitrarily small chunks costs time linear in its size.

pub mod decoder;
pub mod encode;
mod inline;
pub mod reply;
pub mod request;
pub mod value;

pub use decoder::RequestDecoder;
pub use reply::ReplyDecoder;
pub use request::{Limits, Request};
pub use value::Value;

/// Whether a raw reply is an error: a simple error (`-...`), what every
/// error a node or the proxy sends looks like, or a RESP3 blob error
/// (`!<len>`).
pub fn is_error(reply: &[u8]) -> bool {
    matches!(reply.first(), Some(b'-' | b'!'))
}

/// The text of an error reply (`-ERR x\r\n` and `!5\r\nERR x\r\n` give
/// `ERR x`), or `None` for any other reply.
pub fn error_text(reply: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    let body = match reply.first()? {
        b'-' => &reply[1..],
        // The blob's payload follows its length line.
        b'!' => {
            let at = reply.iter().position(|&b| b == b'\n')?;
            &reply[at + 1..]
        }
        _ => return None,
    };
    let body = body.strip_suffix(b"\r\n").unwrap_or(body);
    Some(String::from_utf8_lossy(body))
}

/// Errors produced while decoding.
///
/// For the protocol variants the display text is the part that Redis prints
/// after `"Protocol error: "`.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The `*<n>` count of a multibulk request is not a valid integer or is too large.
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    /// A `$<len>` bulk length is not a valid integer, negative, or too large.
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// An element of a multibulk request does not start with `$`.
    #[error("expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// A `*` header line has no CRLF within 64 KiB.
    #[error("too big mbulk count string")]
    TooBigMbulkCountString,
    /// A `$` header line has no CRLF within 64 KiB.
    #[error("too big bulk count string")]
    TooBigBulkCountString,
    /// An inline request line is longer than the configured limit.
    #[error("too big inline request")]
    TooBigInlineRequest,
    /// An inline request has an unterminated quote, or a closing quote not
    /// followed by whitespace.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// The bytes following a bulk string payload are not CRLF.
    #[error("bulk string not terminated by CRLF")]
    BadBulkTerminator,
    /// A reply starts with a byte that is not a RESP2/RESP3 type byte.
    #[error("invalid RESP type byte 0x{0:02x}")]
    InvalidType(u8),
    /// A reply integer (`:`) is not a valid 64-bit integer.
    #[error("invalid integer")]
    InvalidInteger,
    /// A reply nests aggregates more than 512 levels deep.
    #[error("nesting too deep")]
    TooDeep,
    /// A client's unparsed input exceeds `frontend.max_query_buffer`.
    #[error("query buffer limit exceeded")]
    QueryBufferLimit,
    /// All clients' unparsed input together exceeds `frontend.max_client_memory`.
    #[error("total client memory limit reached")]
    ClientMemoryLimit,
    /// An I/O error from the underlying transport.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Maximum aggregate nesting depth accepted in replies.
pub(crate) const MAX_DEPTH: usize = 512;

/// Parses a decimal integer with the exact rules of Redis `string2ll`: an
/// optional `-`, no `+`, no spaces, no leading zeros, no `-0`, no overflow.
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        if v <= i64::MAX as u64 {
            Some(-(v as i64))
        } else if v == 1u64 << 63 {
            Some(i64::MIN)
        } else {
            None
        }
    } else {
        i64::try_from(v).ok()
    }
}

/// Finds the first `\r\n` in `buf` at or after `from`, returning the index
/// of the `\r`. A lone `\r` not followed by `\n` is skipped over.
pub(crate) fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        let cr = i + buf[i..].iter().position(|&b| b == b'\r')?;
        if buf.get(cr + 1) == Some(&b'\n') {
            return Some(cr);
        }
        i = cr + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_and_their_text() {
        assert!(is_error(b"-ERR x\r\n"));
        assert!(!is_error(b"+OK\r\n"));
        assert!(!is_error(b""));
        assert_eq!(
            error_text(b"-MOVED 1 a:1\r\n").as_deref(),
            Some("MOVED 1 a:1")
        );
        assert_eq!(error_text(b"-\r\n").as_deref(), Some(""));
        assert_eq!(error_text(b"-ERR").as_deref(), Some("ERR"));
        assert_eq!(error_text(b":1\r\n"), None);
        assert!(is_error(b"!5\r\nERR x\r\n"));
        assert_eq!(error_text(b"!5\r\nERR x\r\n").as_deref(), Some("ERR x"));
    }

    #[test]
    fn parse_i64_follows_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"123"), Some(123));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"007",
            b"+1",
            b" 1",
            b"1 ",
            b"1a",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999999",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn find_crlf_skips_lone_cr() {
        assert_eq!(find_crlf(b"ab\r\r\n", 0), Some(3));
        assert_eq!(find_crlf(b"ab\rx\r\n", 0), Some(4));
        assert_eq!(find_crlf(b"ab\r", 0), None);
        assert_eq!(find_crlf(b"\r\n", 1), None);
        assert_eq!(find_crlf(b"", 0), None);
    }

    #[test]
    fn io_error_display() {
        let e = ProtocolError::from(std::io::Error::other("boom"));
        assert_eq!(e.to_string(), "io: boom");
    }
}
