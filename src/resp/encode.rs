//! Helpers that encode RESP replies and commands.

use bytes::{BufMut, Bytes, BytesMut};

/// The `+OK` simple string reply.
pub const OK: &[u8] = b"+OK\r\n";
/// The `+PONG` simple string reply.
pub const PONG: &[u8] = b"+PONG\r\n";

/// Appends the decimal form of `n`.
pub(crate) fn push_u64(out: &mut BytesMut, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends the decimal form of `n`.
pub(crate) fn push_i64(out: &mut BytesMut, n: i64) {
    if n < 0 {
        out.put_u8(b'-');
    }
    push_u64(out, n.unsigned_abs());
}

/// Appends `prefix`, `line` with CR and LF replaced by spaces, and CRLF.
fn line(prefix: u8, line: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(line.len() + 3);
    out.put_u8(prefix);
    out.extend(
        line.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// Encodes a simple string reply, `+s\r\n`.
///
/// CR and LF in `s` are replaced by spaces so the reply stays well-formed.
pub fn simple(s: &str) -> Bytes {
    line(b'+', s)
}

/// Encodes an error reply, `-msg\r\n`; CR and LF in `msg` are replaced by spaces.
///
/// `msg` should start with the error code, e.g. `"ERR unknown command"`.
pub fn error(msg: &str) -> Bytes {
    line(b'-', msg)
}

/// Encodes an integer reply, `:n\r\n`.
pub fn integer(n: i64) -> Bytes {
    let mut out = BytesMut::with_capacity(24);
    out.put_u8(b':');
    push_i64(&mut out, n);
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// Encodes a bulk string reply, `$len\r\n...\r\n`.
pub fn bulk(b: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(b.len() + 25);
    bulk_into(b, &mut out);
    out.freeze()
}

/// The RESP2 null bulk string, `$-1\r\n`.
pub fn null_bulk() -> Bytes {
    Bytes::from_static(b"$-1\r\n")
}

/// A null in the client's protocol: RESP3's `_\r\n`, else RESP2's null
/// bulk string (a RESP3 parser may not take `$-1`).
pub fn null(resp3: bool) -> Bytes {
    if resp3 {
        Bytes::from_static(b"_\r\n")
    } else {
        null_bulk()
    }
}

/// The RESP2 null array, `*-1\r\n`.
pub fn null_array() -> Bytes {
    Bytes::from_static(b"*-1\r\n")
}

/// Appends an array header, `*n\r\n`.
pub fn array_header(n: usize, out: &mut BytesMut) {
    out.reserve(23);
    out.put_u8(b'*');
    push_u64(out, n as u64);
    out.extend_from_slice(b"\r\n");
}

/// Appends a bulk string, `$len\r\n...\r\n`.
pub fn bulk_into(b: &[u8], out: &mut BytesMut) {
    out.reserve(b.len() + 25);
    out.put_u8(b'$');
    push_u64(out, b.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// Encodes a command: a multibulk (array) of bulk strings.
pub fn command<A: AsRef<[u8]>>(args: &[A]) -> Bytes {
    let payload: usize = args.iter().map(|a| a.as_ref().len() + 25).sum();
    let mut out = BytesMut::with_capacity(payload + 23);
    array_header(args.len(), &mut out);
    for a in args {
        bulk_into(a.as_ref(), &mut out);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars() {
        assert_eq!(&simple("OK")[..], OK);
        assert_eq!(&simple("PONG")[..], PONG);
        assert_eq!(&simple("a\r\nb")[..], b"+a  b\r\n");
        assert_eq!(&error("ERR bad\r\nthing")[..], b"-ERR bad  thing\r\n");
        assert_eq!(&integer(0)[..], b":0\r\n");
        assert_eq!(&integer(-42)[..], b":-42\r\n");
        assert_eq!(&integer(i64::MIN)[..], b":-9223372036854775808\r\n");
        assert_eq!(&integer(i64::MAX)[..], b":9223372036854775807\r\n");
        assert_eq!(&bulk(b"")[..], b"$0\r\n\r\n");
        assert_eq!(&bulk(b"a\r\nb")[..], b"$4\r\na\r\nb\r\n");
        assert_eq!(&null_bulk()[..], b"$-1\r\n");
        assert_eq!(&null_array()[..], b"*-1\r\n");
    }

    #[test]
    fn aggregates() {
        let mut out = BytesMut::new();
        array_header(12, &mut out);
        bulk_into(b"x", &mut out);
        assert_eq!(&out[..], b"*12\r\n$1\r\nx\r\n");
        assert_eq!(
            &command(&["SET", "k", "v"])[..],
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
        );
        let empty: [&[u8]; 0] = [];
        assert_eq!(&command(&empty)[..], b"*0\r\n");
    }
}
