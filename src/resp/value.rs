//! An owned, zero-copy parsed RESP value.
//!
//! Used for the replies the proxy itself inspects (`CLUSTER SLOTS`,
//! `COMMAND`, ...); the data path forwards raw frames instead.

use std::ops::Range;

use bytes::Bytes;

use super::{find_crlf, parse_i64, ProtocolError, MAX_DEPTH};

/// A parsed RESP2/RESP3 value. Byte payloads are zero-copy slices of the frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A simple string (`+`), without the type byte and CRLF.
    Simple(Bytes),
    /// An error (`-` or the RESP3 blob error `!`): the message.
    Error(Bytes),
    /// An integer (`:`).
    Integer(i64),
    /// A bulk string (`$`).
    Bulk(Bytes),
    /// A null: `$-1`, `*-1` or the RESP3 `_`.
    Null,
    /// An array (`*`).
    Array(Vec<Value>),
    /// A RESP3 map (`%`), in wire order.
    Map(Vec<(Value, Value)>),
    /// A RESP3 set (`~`).
    Set(Vec<Value>),
    /// A RESP3 push (`>`).
    Push(Vec<Value>),
    /// A RESP3 double (`,`), as its textual form.
    Double(Bytes),
    /// A RESP3 boolean (`#t` / `#f`).
    Boolean(bool),
    /// A RESP3 big number (`(`), as its textual form.
    BigNumber(Bytes),
    /// A RESP3 verbatim string (`=`): the text, without the `xxx:` format prefix.
    Verbatim(Bytes),
}

fn incomplete() -> ProtocolError {
    ProtocolError::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "incomplete RESP frame",
    ))
}

struct Parser<'a> {
    frame: &'a Bytes,
    pos: usize,
}

impl Parser<'_> {
    /// Reads a type byte and its line, returning the line's range.
    fn line(&mut self) -> Result<(u8, Range<usize>), ProtocolError> {
        let ty = *self.frame.get(self.pos).ok_or_else(incomplete)?;
        let cr = find_crlf(self.frame, self.pos + 1).ok_or_else(incomplete)?;
        let range = self.pos + 1..cr;
        self.pos = cr + 2;
        Ok((ty, range))
    }

    fn count(line: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let n = parse_i64(line).ok_or(ProtocolError::InvalidMultibulkLength)?;
        if n == -1 {
            return Ok(None);
        }
        usize::try_from(n)
            .map(Some)
            .map_err(|_| ProtocolError::InvalidMultibulkLength)
    }

    fn items(&mut self, n: usize, depth: usize) -> Result<Vec<Value>, ProtocolError> {
        let mut v = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            v.push(self.value(depth + 1)?);
        }
        Ok(v)
    }

    fn value(&mut self, depth: usize) -> Result<Value, ProtocolError> {
        loop {
            let (ty, r) = self.line()?;
            let frame = self.frame;
            let line = &frame[r.clone()];
            if matches!(ty, b'*' | b'%' | b'~' | b'>' | b'|') && depth >= MAX_DEPTH {
                return Err(ProtocolError::TooDeep);
            }
            return Ok(match ty {
                b'+' => Value::Simple(frame.slice(r)),
                b'-' => Value::Error(frame.slice(r)),
                b':' => Value::Integer(parse_i64(line).ok_or(ProtocolError::InvalidInteger)?),
                b'_' => Value::Null,
                b',' => Value::Double(frame.slice(r)),
                b'(' => Value::BigNumber(frame.slice(r)),
                b'#' => match line {
                    b"t" => Value::Boolean(true),
                    b"f" => Value::Boolean(false),
                    _ => return Err(ProtocolError::InvalidType(b'#')),
                },
                b'$' | b'!' | b'=' => {
                    let n = parse_i64(line).ok_or(ProtocolError::InvalidBulkLength)?;
                    if n == -1 && ty == b'$' {
                        Value::Null
                    } else {
                        let len =
                            usize::try_from(n).map_err(|_| ProtocolError::InvalidBulkLength)?;
                        let start = self.pos;
                        let end = start.checked_add(len).ok_or_else(incomplete)?;
                        if frame.len() < end.saturating_add(2) {
                            return Err(incomplete());
                        }
                        if &frame[end..end + 2] != b"\r\n" {
                            return Err(ProtocolError::BadBulkTerminator);
                        }
                        self.pos = end + 2;
                        let payload = frame.slice(start..end);
                        match ty {
                            b'$' => Value::Bulk(payload),
                            b'!' => Value::Error(payload),
                            _ if payload.len() >= 4 && payload[3] == b':' => {
                                Value::Verbatim(payload.slice(4..))
                            }
                            _ => Value::Verbatim(payload),
                        }
                    }
                }
                b'*' | b'~' | b'>' => match Self::count(line)? {
                    None if ty == b'*' => Value::Null,
                    None => return Err(ProtocolError::InvalidMultibulkLength),
                    Some(n) => {
                        let items = self.items(n, depth)?;
                        match ty {
                            b'*' => Value::Array(items),
                            b'~' => Value::Set(items),
                            _ => Value::Push(items),
                        }
                    }
                },
                b'%' => {
                    let n = Self::count(line)?.ok_or(ProtocolError::InvalidMultibulkLength)?;
                    let mut pairs = Vec::with_capacity(n.min(1024));
                    for _ in 0..n {
                        let k = self.value(depth + 1)?;
                        let v = self.value(depth + 1)?;
                        pairs.push((k, v));
                    }
                    Value::Map(pairs)
                }
                b'|' => {
                    // Attributes are parsed (to skip them) and dropped; the
                    // annotated element follows at the same depth.
                    let n = Self::count(line)?.ok_or(ProtocolError::InvalidMultibulkLength)?;
                    for _ in 0..n {
                        self.value(depth + 1)?;
                        self.value(depth + 1)?;
                    }
                    continue;
                }
                other => return Err(ProtocolError::InvalidType(other)),
            });
        }
    }
}

impl Value {
    /// Parses one complete frame (as yielded by
    /// [`ReplyDecoder`](super::ReplyDecoder)). `$-1`/`*-1`/`_` become
    /// [`Value::Null`]. Attributes are skipped.
    ///
    /// An incomplete frame is reported as an [`ProtocolError::Io`] error of
    /// kind `UnexpectedEof`; trailing bytes after the value as
    /// [`ProtocolError::InvalidType`] of the first trailing byte.
    pub fn parse(frame: &Bytes) -> Result<Value, ProtocolError> {
        let mut p = Parser { frame, pos: 0 };
        let v = p.value(0)?;
        match frame.get(p.pos) {
            None => Ok(v),
            Some(&b) => Err(ProtocolError::InvalidType(b)),
        }
    }

    /// The payload of a `Simple`, `Bulk`, `Verbatim`, `BigNumber` or `Double`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(b)
            | Value::Bulk(b)
            | Value::Verbatim(b)
            | Value::BigNumber(b)
            | Value::Double(b) => Some(b),
            _ => None,
        }
    }

    /// [`Value::as_bytes`] as UTF-8, if it is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()?).ok()
    }

    /// An `Integer`, or a `Bulk`/`Simple` that parses as an `i64`.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Integer(n) => Some(*n),
            Value::Bulk(b) | Value::Simple(b) => parse_i64(b),
            _ => None,
        }
    }

    /// The elements of an `Array`, `Set` or `Push`.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) | Value::Set(v) | Value::Push(v) => Some(v),
            _ => None,
        }
    }

    /// Whether this is an error reply (`-` or `!`).
    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::reply::tests::{tv_strategy, Tv};
    use proptest::prelude::*;

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    fn parse(s: &'static [u8]) -> Result<Value, ProtocolError> {
        Value::parse(&b(s))
    }

    /// What `Value::parse` should produce for a test value.
    fn expected(tv: &Tv) -> Value {
        let list = |v: &[Tv]| v.iter().map(expected).collect::<Vec<_>>();
        match tv {
            Tv::Simple(s) => Value::Simple(Bytes::from(s.clone())),
            Tv::Error(s) => Value::Error(Bytes::from(s.clone())),
            Tv::Int(n) => Value::Integer(*n),
            Tv::Bulk(v) => Value::Bulk(Bytes::from(v.clone())),
            Tv::NullBulk | Tv::NullArray | Tv::Null => Value::Null,
            Tv::Double(s) => Value::Double(Bytes::from(s.clone())),
            Tv::Bool(x) => Value::Boolean(*x),
            Tv::Big(s) => Value::BigNumber(Bytes::from(s.clone())),
            Tv::Verbatim(v) => Value::Verbatim(Bytes::from(v.clone())),
            Tv::BlobError(v) => Value::Error(Bytes::from(v.clone())),
            Tv::Array(v) => Value::Array(list(v)),
            Tv::Set(v) => Value::Set(list(v)),
            Tv::Push(v) => Value::Push(list(v)),
            Tv::Map(p) => Value::Map(p.iter().map(|(k, v)| (expected(k), expected(v))).collect()),
            Tv::Attr(_, inner) => expected(inner),
        }
    }

    #[test]
    fn scalars() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Value::Simple(b(b"OK")));
        assert_eq!(parse(b"-ERR x\r\n").unwrap(), Value::Error(b(b"ERR x")));
        assert!(parse(b"-ERR x\r\n").unwrap().is_error());
        assert!(parse(b"!3\r\nERR\r\n").unwrap().is_error());
        assert_eq!(parse(b":-7\r\n").unwrap().as_int(), Some(-7));
        assert_eq!(parse(b"$2\r\n12\r\n").unwrap().as_int(), Some(12));
        assert_eq!(parse(b"+12\r\n").unwrap().as_int(), Some(12));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Value::Null);
        assert_eq!(parse(b"*-1\r\n").unwrap(), Value::Null);
        assert_eq!(parse(b"_\r\n").unwrap(), Value::Null);
        assert_eq!(parse(b"#t\r\n").unwrap(), Value::Boolean(true));
        assert_eq!(parse(b"#f\r\n").unwrap(), Value::Boolean(false));
        assert_eq!(parse(b",1.5\r\n").unwrap().as_str(), Some("1.5"));
        assert_eq!(
            parse(b"(12345678901234567890\r\n").unwrap().as_str(),
            Some("12345678901234567890")
        );
        assert_eq!(
            parse(b"=8\r\ntxt:a\r\nb\r\n").unwrap().as_bytes(),
            Some(&b"a\r\nb"[..])
        );
        assert_eq!(parse(b"$3\r\n\xff\xfe\x00\r\n").unwrap().as_str(), None);
        assert_eq!(parse(b":1\r\n").unwrap().as_bytes(), None);
    }

    #[test]
    fn aggregates() {
        let v = parse(b"*3\r\n:1\r\n*1\r\n$1\r\na\r\n_\r\n").unwrap();
        let items = v.as_array().unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[1].as_array().unwrap()[0].as_str(), Some("a"));
        assert_eq!(
            parse(b"%1\r\n+k\r\n|1\r\n+a\r\n+b\r\n:1\r\n").unwrap(),
            Value::Map(vec![(Value::Simple(b(b"k")), Value::Integer(1))])
        );
        assert_eq!(
            parse(b"|1\r\n+a\r\n+b\r\n~1\r\n:1\r\n").unwrap(),
            Value::Set(vec![Value::Integer(1)])
        );
        assert_eq!(
            parse(b">1\r\n+m\r\n")
                .unwrap()
                .as_array()
                .map(<[Value]>::len),
            Some(1)
        );
    }

    #[test]
    fn zero_copy() {
        let f = b(b"*1\r\n$3\r\nabc\r\n");
        let v = Value::parse(&f).unwrap();
        let Value::Bulk(inner) = &v.as_array().unwrap()[0] else {
            panic!()
        };
        assert_eq!(inner.as_ptr(), f[8..].as_ptr());
    }

    #[test]
    fn errors() {
        let msg = |s: &'static [u8]| parse(s).unwrap_err().to_string();
        assert_eq!(msg(b"?\r\n"), "invalid RESP type byte 0x3f");
        assert_eq!(msg(b":1\r\n+x\r\n"), "invalid RESP type byte 0x2b");
        assert_eq!(msg(b":x\r\n"), "invalid integer");
        assert_eq!(msg(b"$-2\r\n"), "invalid bulk length");
        assert_eq!(msg(b"*-2\r\n"), "invalid multibulk length");
        assert_eq!(msg(b"$1\r\nab\r\n"), "bulk string not terminated by CRLF");
        assert!(matches!(parse(b"*2\r\n:1\r\n"), Err(ProtocolError::Io(_))));
        assert!(matches!(parse(b"$5\r\nab\r\n"), Err(ProtocolError::Io(_))));
        assert!(matches!(parse(b"+OK"), Err(ProtocolError::Io(_))));
        let mut deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
        deep.extend_from_slice(b":1\r\n");
        assert!(matches!(
            Value::parse(&Bytes::from(deep)),
            Err(ProtocolError::TooDeep)
        ));
        let mut ok = b"*1\r\n".repeat(MAX_DEPTH);
        ok.extend_from_slice(b":1\r\n");
        assert!(Value::parse(&Bytes::from(ok)).is_ok());
    }

    proptest! {
        #[test]
        fn parses_generated_values(tv in tv_strategy()) {
            let frame = Bytes::from(tv.to_bytes());
            prop_assert_eq!(Value::parse(&frame).unwrap(), expected(&tv));
        }

        #[test]
        fn garbage_never_panics(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Value::parse(&Bytes::from(input));
        }
    }
}
