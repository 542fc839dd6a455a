//! The backend reply boundary scanner.
//!
//! [`ReplyDecoder`] finds where each reply ends and yields its raw bytes; it
//! never re-encodes. All RESP2 and RESP3 types are understood. Progress (scan
//! offset, pending blob length and a stack of remaining element counts) is
//! kept between calls, and nesting is handled without recursion. Nesting
//! has no depth limit: a level costs one stack entry for at least four
//! bytes of reply, so a reply's memory bounds it, and Redis itself sends
//! replies nested as deep as its Lua stack allows.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::{find_crlf, parse_i64, ProtocolError};

/// Resumable scanner over one (possibly nested) RESP element.
#[derive(Debug, Default)]
struct Scanner {
    /// Offset of the next unparsed byte.
    pos: usize,
    /// Offset from which to resume searching for the current line's CRLF.
    scan: usize,
    /// Elements still expected by each open aggregate, innermost last.
    stack: Vec<usize>,
    /// Payload length of a blob whose header has been read.
    blob: Option<usize>,
}

impl Scanner {
    fn at(pos: usize) -> Self {
        Scanner {
            pos,
            scan: pos,
            ..Scanner::default()
        }
    }

    /// Records that an element ended at `self.pos`; returns whether the
    /// outermost element is now complete.
    fn element_done(&mut self) -> bool {
        while let Some(top) = self.stack.last_mut() {
            *top -= 1;
            if *top > 0 {
                return false;
            }
            self.stack.pop();
        }
        true
    }

    /// Continues scanning `buf` (which only ever grows between calls).
    /// Returns the end offset once the element is complete.
    fn advance(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        loop {
            if let Some(len) = self.blob {
                let end = self.pos.saturating_add(len);
                if buf.len() < end.saturating_add(2) {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(ProtocolError::BadBulkTerminator);
                }
                self.pos = end + 2;
                self.scan = self.pos;
                self.blob = None;
                if self.element_done() {
                    return Ok(Some(self.pos));
                }
                continue;
            }
            let Some(&ty) = buf.get(self.pos) else {
                return Ok(None);
            };
            if !matches!(
                ty,
                b'+' | b'-'
                    | b':'
                    | b'$'
                    | b'*'
                    | b'_'
                    | b','
                    | b'#'
                    | b'('
                    | b'!'
                    | b'='
                    | b'%'
                    | b'~'
                    | b'>'
                    | b'|'
            ) {
                return Err(ProtocolError::InvalidType(ty));
            }
            let from = self.scan.max(self.pos + 1);
            let Some(cr) = find_crlf(buf, from) else {
                // Resume at the last byte: it may be the '\r' of the CRLF.
                self.scan = buf.len().saturating_sub(1).max(self.pos + 1);
                return Ok(None);
            };
            let line = &buf[self.pos + 1..cr];
            self.pos = cr + 2;
            self.scan = self.pos;
            match ty {
                b':' => {
                    parse_i64(line).ok_or(ProtocolError::InvalidInteger)?;
                }
                b'$' | b'!' | b'=' => {
                    let n = parse_i64(line).ok_or(ProtocolError::InvalidBulkLength)?;
                    if !(n == -1 && ty == b'$') {
                        let len =
                            usize::try_from(n).map_err(|_| ProtocolError::InvalidBulkLength)?;
                        self.blob = Some(len);
                        continue;
                    }
                }
                b'*' | b'%' | b'~' | b'>' | b'|' => {
                    let n = parse_i64(line).ok_or(ProtocolError::InvalidMultibulkLength)?;
                    if !(n == -1 && ty == b'*') {
                        let n = usize::try_from(n)
                            .map_err(|_| ProtocolError::InvalidMultibulkLength)?;
                        // A map holds n key/value pairs; an attribute holds n
                        // pairs and is followed by the element it annotates.
                        let count = match ty {
                            b'%' => n.checked_mul(2),
                            b'|' => n.checked_mul(2).and_then(|c| c.checked_add(1)),
                            _ => Some(n),
                        }
                        .ok_or(ProtocolError::InvalidMultibulkLength)?;
                        if count > 0 {
                            self.stack.push(count);
                            continue;
                        }
                    }
                }
                // Simple lines: + - _ , # (
                _ => {}
            }
            if self.element_done() {
                return Ok(Some(self.pos));
            }
        }
    }
}

/// Resumable boundary scanner for backend replies: yields each complete reply
/// frame as raw `Bytes` (zero copy), never re-encoding.
#[derive(Debug, Default)]
pub struct ReplyDecoder {
    scanner: Scanner,
}

impl ReplyDecoder {
    /// Creates a decoder positioned at the start of a reply.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Decoder for ReplyDecoder {
    type Item = Bytes;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, ProtocolError> {
        match self.scanner.advance(src)? {
            Some(end) => {
                self.scanner = Scanner::default();
                Ok(Some(src.split_to(end).freeze()))
            }
            None => Ok(None),
        }
    }
}

/// Returns the end of the complete element starting at `pos`, if any.
fn element_end(buf: &[u8], pos: usize) -> Option<usize> {
    Scanner::at(pos).advance(buf).ok().flatten()
}

/// The top-level elements of a complete aggregate frame (`*`, `%`, `~`,
/// `>`), as byte ranges of the frame, in order (for a map: keys and values
/// alternately), without copying or counting references.
///
/// Attributes preceding the aggregate are skipped; attributes preceding an
/// element stay part of that element's frame. [`Elements::new`] returns
/// `None` for anything but an aggregate (a null array included); the
/// iterator ends early, and [`Elements::finished`] is then false, if an
/// element is incomplete or bytes trail the last one.
pub struct Elements<'a> {
    buf: &'a [u8],
    /// Where the next element starts.
    pos: usize,
    /// Elements not yet returned.
    left: usize,
}

impl<'a> Elements<'a> {
    /// Reads the aggregate's header; `None` if `frame` is not an aggregate.
    pub fn new(frame: &'a [u8]) -> Option<Elements<'a>> {
        let mut pos = 0;
        loop {
            let ty = *frame.get(pos)?;
            let cr = find_crlf(frame, pos + 1)?;
            let n = usize::try_from(parse_i64(&frame[pos + 1..cr])?).ok()?;
            pos = cr + 2;
            match ty {
                b'|' => {
                    for _ in 0..n.checked_mul(2)? {
                        pos = element_end(frame, pos)?;
                    }
                }
                b'*' | b'~' | b'>' => {
                    return Some(Elements {
                        buf: frame,
                        pos,
                        left: n,
                    })
                }
                b'%' => {
                    return Some(Elements {
                        buf: frame,
                        pos,
                        left: n.checked_mul(2)?,
                    })
                }
                _ => return None,
            }
        }
    }

    /// The number of elements the header announced and not yet returned.
    pub fn remaining(&self) -> usize {
        self.left
    }

    /// Whether every announced element was returned and ended the frame
    /// exactly.
    pub fn finished(&self) -> bool {
        self.left == 0 && self.pos == self.buf.len()
    }
}

impl Iterator for Elements<'_> {
    type Item = std::ops::Range<usize>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let start = self.pos;
        let end = element_end(self.buf, start)?;
        self.pos = end;
        self.left -= 1;
        Some(start..end)
    }
}

/// Splits a complete aggregate frame (`*`, `%`, `~`, `>`) into the raw frames
/// of its top-level elements (for a map: keys and values alternately).
///
/// Attributes are treated as by [`Elements`]. Returns `None` if `frame` is
/// not a complete aggregate (or has trailing bytes) or is a null array.
pub fn split_aggregate(frame: &Bytes) -> Option<Vec<Bytes>> {
    let mut elements = Elements::new(frame)?;
    let mut out = Vec::with_capacity(elements.remaining().min(1024));
    out.extend(elements.by_ref().map(|r| frame.slice(r)));
    elements.finished().then_some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Instant;

    /// A test-side RESP value with its own encoder.
    #[derive(Debug, Clone)]
    pub(crate) enum Tv {
        Simple(String),
        Error(String),
        Int(i64),
        Bulk(Vec<u8>),
        NullBulk,
        NullArray,
        Null,
        Double(String),
        Bool(bool),
        Big(String),
        Verbatim(Vec<u8>),
        BlobError(Vec<u8>),
        Array(Vec<Tv>),
        Map(Vec<(Tv, Tv)>),
        Set(Vec<Tv>),
        Push(Vec<Tv>),
        Attr(Vec<(Tv, Tv)>, Box<Tv>),
    }

    impl Tv {
        pub(crate) fn encode(&self, out: &mut Vec<u8>) {
            fn line(out: &mut Vec<u8>, t: u8, s: &[u8]) {
                out.push(t);
                out.extend_from_slice(s);
                out.extend_from_slice(b"\r\n");
            }
            fn blob(out: &mut Vec<u8>, t: u8, b: &[u8]) {
                line(out, t, b.len().to_string().as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            fn agg(out: &mut Vec<u8>, t: u8, items: &[Tv]) {
                line(out, t, items.len().to_string().as_bytes());
                for i in items {
                    i.encode(out);
                }
            }
            fn pairs(out: &mut Vec<u8>, t: u8, items: &[(Tv, Tv)]) {
                line(out, t, items.len().to_string().as_bytes());
                for (k, v) in items {
                    k.encode(out);
                    v.encode(out);
                }
            }
            match self {
                Tv::Simple(s) => line(out, b'+', s.as_bytes()),
                Tv::Error(s) => line(out, b'-', s.as_bytes()),
                Tv::Int(n) => line(out, b':', n.to_string().as_bytes()),
                Tv::Bulk(b) => blob(out, b'$', b),
                Tv::NullBulk => out.extend_from_slice(b"$-1\r\n"),
                Tv::NullArray => out.extend_from_slice(b"*-1\r\n"),
                Tv::Null => out.extend_from_slice(b"_\r\n"),
                Tv::Double(s) => line(out, b',', s.as_bytes()),
                Tv::Bool(b) => line(out, b'#', if *b { b"t" } else { b"f" }),
                Tv::Big(s) => line(out, b'(', s.as_bytes()),
                Tv::Verbatim(b) => {
                    let mut v = b"txt:".to_vec();
                    v.extend_from_slice(b);
                    blob(out, b'=', &v);
                }
                Tv::BlobError(b) => blob(out, b'!', b),
                Tv::Array(items) => agg(out, b'*', items),
                Tv::Set(items) => agg(out, b'~', items),
                Tv::Push(items) => agg(out, b'>', items),
                Tv::Map(items) => pairs(out, b'%', items),
                Tv::Attr(items, inner) => {
                    pairs(out, b'|', items);
                    inner.encode(out);
                }
            }
        }

        pub(crate) fn to_bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            self.encode(&mut out);
            out
        }
    }

    pub(crate) fn tv_strategy() -> impl Strategy<Value = Tv> {
        let bin = || proptest::collection::vec(any::<u8>(), 0..10);
        let leaf = prop_oneof![
            "[a-zA-Z0-9 \r]{0,8}".prop_map(Tv::Simple),
            "ERR [a-z ]{0,8}".prop_map(Tv::Error),
            any::<i64>().prop_map(Tv::Int),
            bin().prop_map(Tv::Bulk),
            Just(Tv::NullBulk),
            Just(Tv::NullArray),
            Just(Tv::Null),
            prop_oneof![
                Just("inf".to_string()),
                Just("-inf".to_string()),
                Just("nan".to_string()),
                any::<f64>().prop_map(|f| f.to_string()),
            ]
            .prop_map(Tv::Double),
            any::<bool>().prop_map(Tv::Bool),
            "-?[1-9][0-9]{0,30}".prop_map(Tv::Big),
            bin().prop_map(Tv::Verbatim),
            bin().prop_map(Tv::BlobError),
        ];
        leaf.prop_recursive(4, 48, 5, |inner| {
            let items = proptest::collection::vec(inner.clone(), 0..5);
            let pairs = proptest::collection::vec((inner.clone(), inner.clone()), 0..3);
            prop_oneof![
                items.clone().prop_map(Tv::Array),
                items.clone().prop_map(Tv::Set),
                items.prop_map(Tv::Push),
                pairs.clone().prop_map(Tv::Map),
                (pairs, inner).prop_map(|(p, i)| Tv::Attr(p, Box::new(i))),
            ]
        })
    }

    /// Feeds `input` in chunks of the given sizes (cycled).
    fn decode_chunked(input: &[u8], sizes: &[usize]) -> (Vec<Bytes>, Option<String>) {
        let mut d = ReplyDecoder::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut at = 0;
        let mut k = 0;
        while at < input.len() {
            let size = sizes[k % sizes.len()].max(1);
            k += 1;
            let end = (at + size).min(input.len());
            buf.extend_from_slice(&input[at..end]);
            at = end;
            loop {
                match d.decode(&mut buf) {
                    Ok(Some(f)) => out.push(f),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e.to_string())),
                }
            }
        }
        (out, None)
    }

    fn err(input: &[u8]) -> String {
        match decode_chunked(input, &[input.len().max(1)]) {
            (_, Some(e)) => e,
            (v, None) => panic!("expected error, got {v:?}"),
        }
    }

    fn frames(input: &[u8]) -> Vec<Bytes> {
        let (v, e) = decode_chunked(input, &[input.len().max(1)]);
        assert!(e.is_none(), "{e:?}");
        v
    }

    #[test]
    fn resp2_frames() {
        let input = b"+OK\r\n-ERR x\r\n:42\r\n$3\r\nfoo\r\n$-1\r\n*-1\r\n*2\r\n$1\r\na\r\n*1\r\n:1\r\n*0\r\n$0\r\n\r\n";
        let f = frames(input);
        let expect: Vec<&[u8]> = vec![
            b"+OK\r\n",
            b"-ERR x\r\n",
            b":42\r\n",
            b"$3\r\nfoo\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
            b"*0\r\n",
            b"$0\r\n\r\n",
        ];
        assert_eq!(f.iter().map(|b| &b[..]).collect::<Vec<_>>(), expect);
    }

    #[test]
    fn resp3_frames() {
        let input: &[u8] = b"_\r\n,1.5\r\n#t\r\n(123\r\n!3\r\nERR\r\n=7\r\ntxt:abc\r\n%1\r\n+k\r\n:1\r\n~1\r\n+a\r\n>2\r\n+message\r\n+x\r\n|1\r\n+key\r\n+val\r\n:5\r\n";
        let f = frames(input);
        assert_eq!(f.len(), 10);
        assert_eq!(&f[6][..], b"%1\r\n+k\r\n:1\r\n");
        assert_eq!(&f[9][..], b"|1\r\n+key\r\n+val\r\n:5\r\n");
        // An attribute inside an aggregate does not count as an element.
        let f = frames(b"*2\r\n|1\r\n+a\r\n+b\r\n:1\r\n:2\r\n+next\r\n");
        assert_eq!(f.len(), 2);
        assert_eq!(&f[1][..], b"+next\r\n");
    }

    #[test]
    fn lone_cr_in_simple_string() {
        let f = frames(b"+a\rb\r\r\n:1\r\n");
        assert_eq!(&f[0][..], b"+a\rb\r\r\n");
        let (v, e) = decode_chunked(b"+a\rb\r\r\n:1\r\n", &[1]);
        assert!(e.is_none());
        assert_eq!(v, f);
    }

    #[test]
    fn reply_errors() {
        assert_eq!(err(b"?x\r\n"), "invalid RESP type byte 0x3f");
        assert_eq!(err(b"*1\r\n\x00"), "invalid RESP type byte 0x00");
        assert_eq!(err(b":abc\r\n"), "invalid integer");
        assert_eq!(err(b":\r\n"), "invalid integer");
        assert_eq!(err(b"$-2\r\n"), "invalid bulk length");
        assert_eq!(err(b"=-1\r\n"), "invalid bulk length");
        assert_eq!(err(b"$x\r\n"), "invalid bulk length");
        assert_eq!(err(b"*-2\r\n"), "invalid multibulk length");
        assert_eq!(err(b"%-1\r\n"), "invalid multibulk length");
        assert_eq!(err(b"$3\r\nfooXY"), "bulk string not terminated by CRLF");
    }

    #[test]
    fn deep_nesting_passes_through() {
        // A Lua script returning a self-referencing table: Redis nests
        // arrays as deep as its Lua stack goes, far past the depth Value
        // parses.
        let mut v = b"*1\r\n".repeat(100_000);
        v.extend_from_slice(b":1\r\n");
        assert_eq!(frames(&v), vec![v.clone()]);
        // Fed in pieces, the scan resumes where it stopped.
        let mut d = ReplyDecoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in v.chunks(4096) {
            buf.extend_from_slice(chunk);
            got.extend(d.decode(&mut buf).unwrap());
        }
        assert_eq!(got, vec![v]);
    }

    #[test]
    fn split_aggregate_cases() {
        let f = Bytes::from_static(b"*3\r\n:1\r\n*1\r\n+a\r\n$-1\r\n");
        let parts = split_aggregate(&f).unwrap();
        let parts: Vec<&[u8]> = parts.iter().map(|b| &b[..]).collect();
        assert_eq!(parts, vec![&b":1\r\n"[..], b"*1\r\n+a\r\n", b"$-1\r\n"]);
        let m = Bytes::from_static(b"|1\r\n+a\r\n+b\r\n%1\r\n+k\r\n|0\r\n:1\r\n");
        let parts = split_aggregate(&m).unwrap();
        assert_eq!(&parts[0][..], b"+k\r\n");
        assert_eq!(&parts[1][..], b"|0\r\n:1\r\n");
        assert_eq!(
            split_aggregate(&Bytes::from_static(b"*0\r\n")),
            Some(vec![])
        );
        for bad in [
            &b"*-1\r\n"[..],
            b"+OK\r\n",
            b"*2\r\n:1\r\n",
            b"*1\r\n:1\r\n:2\r\n",
            b"",
            b"$1\r\na\r\n",
        ] {
            assert_eq!(split_aggregate(&Bytes::copy_from_slice(bad)), None);
        }
        // Zero copy: parts point into the frame.
        let p = split_aggregate(&f).unwrap();
        assert_eq!(p[1].as_ptr(), f[8..].as_ptr());
    }

    #[test]
    fn elements_are_ranges_of_the_frame() {
        let f = b"*2\r\n$1\r\na\r\n:7\r\n";
        let mut e = Elements::new(f).unwrap();
        assert_eq!(e.remaining(), 2);
        assert_eq!(e.next(), Some(4..11));
        assert!(!e.finished());
        assert_eq!(e.next(), Some(11..15));
        assert_eq!(e.next(), None);
        assert!(e.finished());
        // A map counts keys and values.
        assert_eq!(Elements::new(b"%1\r\n+k\r\n:1\r\n").unwrap().remaining(), 2);
        // Not aggregates.
        assert!(Elements::new(b"*-1\r\n").is_none());
        assert!(Elements::new(b"+OK\r\n").is_none());
        // Trailing bytes, or an element short: never finished.
        let mut e = Elements::new(b"*1\r\n:1\r\n:2\r\n").unwrap();
        assert_eq!(e.by_ref().count(), 1);
        assert!(!e.finished());
        let mut e = Elements::new(b"*2\r\n:1\r\n$3\r\nab").unwrap();
        assert_eq!(e.by_ref().count(), 1);
        assert!(!e.finished());
    }

    #[test]
    fn eof_with_partial_reply_errors() {
        let mut d = ReplyDecoder::new();
        let mut buf = BytesMut::from(&b"$3\r\nfo"[..]);
        assert!(d.decode_eof(&mut buf).is_err());
        let mut buf = BytesMut::new();
        assert!(d.decode_eof(&mut buf).unwrap().is_none());
    }

    #[test]
    fn big_blob_fed_byte_by_byte_is_linear() {
        let payload = vec![b'x'; 10 * 1024 * 1024];
        let input = Tv::Array(vec![Tv::Bulk(payload), Tv::Int(1)]).to_bytes();
        let mut d = ReplyDecoder::new();
        let mut buf = BytesMut::with_capacity(input.len());
        let started = Instant::now();
        let mut got = None;
        for &b in &input {
            buf.extend_from_slice(&[b]);
            if let Some(f) = d.decode(&mut buf).unwrap() {
                got = Some(f);
            }
        }
        let elapsed = started.elapsed();
        assert_eq!(got.unwrap().len(), input.len());
        assert!(elapsed.as_secs_f64() < 5.0, "took {elapsed:?}");
    }

    #[test]
    fn long_simple_line_fed_byte_by_byte_is_linear() {
        let mut input = b"+".to_vec();
        input.extend_from_slice(&vec![b'a'; 1024 * 1024]);
        input.extend_from_slice(b"\r\n");
        let started = Instant::now();
        let (v, e) = decode_chunked(&input, &[1]);
        assert!(e.is_none());
        assert_eq!(v.len(), 1);
        assert!(started.elapsed().as_secs_f64() < 2.0);
    }

    fn garbage_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            any::<u8>(),
            proptest::sample::select(vec![
                b'\r', b'\n', b'*', b'$', b'%', b'|', b'=', b'-', b'0', b'1', b'2',
            ]),
        ]
    }

    proptest! {
        #[test]
        fn any_chunking_yields_same_replies(
            values in proptest::collection::vec(tv_strategy(), 1..6),
            sizes in proptest::collection::vec(1usize..24, 1..10),
        ) {
            let encoded: Vec<Vec<u8>> = values.iter().map(Tv::to_bytes).collect();
            let input = encoded.concat();
            let (whole, e1) = decode_chunked(&input, &[input.len()]);
            let (chunked, e2) = decode_chunked(&input, &sizes);
            prop_assert!(e1.is_none());
            prop_assert!(e2.is_none());
            let whole: Vec<Vec<u8>> = whole.iter().map(|b| b.to_vec()).collect();
            let chunked: Vec<Vec<u8>> = chunked.iter().map(|b| b.to_vec()).collect();
            prop_assert_eq!(&whole, &encoded);
            prop_assert_eq!(&chunked, &encoded);
            for (v, f) in values.iter().zip(&encoded) {
                let f = Bytes::copy_from_slice(f);
                let parts = split_aggregate(&f);
                match v {
                    Tv::Array(items) | Tv::Set(items) | Tv::Push(items) => {
                        let parts = parts.unwrap();
                        let want: Vec<Vec<u8>> = items.iter().map(Tv::to_bytes).collect();
                        let got: Vec<Vec<u8>> = parts.iter().map(|b| b.to_vec()).collect();
                        prop_assert_eq!(got, want);
                    }
                    Tv::Map(pairs) => {
                        prop_assert_eq!(parts.unwrap().len(), pairs.len() * 2);
                    }
                    Tv::Attr(..) => {}
                    _ => prop_assert!(parts.is_none()),
                }
            }
        }

        #[test]
        fn garbage_never_panics_and_is_chunking_independent(
            input in proptest::collection::vec(garbage_byte(), 0..300),
            sizes in proptest::collection::vec(1usize..16, 1..6),
        ) {
            let whole = decode_chunked(&input, &[input.len().max(1)]);
            let chunked = decode_chunked(&input, &sizes);
            prop_assert_eq!(whole, chunked);
            let _ = split_aggregate(&Bytes::from(input.clone()));
            let mut d = ReplyDecoder::new();
            let _ = d.decode_eof(&mut BytesMut::from(&input[..]));
        }
    }
}
