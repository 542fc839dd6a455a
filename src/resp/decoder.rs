//! The client request decoder.
//!
//! Accepts RESP multibulk requests and inline commands with the semantics of
//! Redis 7 `processMultibulkBuffer` / `processInlineBuffer`. The decoder is
//! resumable: between calls it remembers how far it has scanned, how many
//! arguments it has parsed and the pending bulk length, so bytes are never
//! scanned twice.

use std::ops::Range;

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

use super::inline::split_args;
use super::request::{Args, Limits, Request};
use super::{parse_i64, ProtocolError};

/// Longest `*<n>` / `$<len>` header line accepted (Redis `PROTO_INLINE_MAX_SIZE`).
const MAX_HEADER_LEN: usize = 64 * 1024;
/// Cap on argument slots preallocated from a declared multibulk count.
const MAX_PREALLOC_ARGS: usize = 1024;

/// The decoder keeps the storage of up to this many argument offsets
/// between requests (1 KiB); a longer request's is given back.
const KEPT_ARGS: usize = 64;

/// Where the decoder is within the current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between requests.
    Idle,
    /// Waiting for the end of the `*<n>` line.
    Count,
    /// Reading the `$<len>` elements.
    Args,
    /// Waiting for the newline ending an inline command.
    Inline,
}

/// Resumable decoder of client requests (RESP multibulk and inline).
#[derive(Debug)]
pub struct RequestDecoder {
    limits: Limits,
    state: State,
    /// Offset of the next unparsed byte of the current request.
    pos: usize,
    /// Offset up to which the current line has been searched for its terminator.
    scan: usize,
    /// Arguments still to read.
    remaining: usize,
    /// Length of the bulk whose header has been read but whose payload has not.
    bulk: Option<usize>,
    /// Ranges of the arguments parsed so far.
    args: Vec<Range<usize>>,
}

impl RequestDecoder {
    /// Creates a decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        RequestDecoder {
            limits,
            state: State::Idle,
            pos: 0,
            scan: 0,
            remaining: 0,
            bulk: None,
            args: Vec::new(),
        }
    }

    /// Finds the `\r` ending the header line starting at `self.pos`, resuming
    /// the search where the previous call stopped. The `\r` must be followed
    /// by `\n` (else `bad`); the line may not exceed 64 KiB (else `too_big`).
    fn header_line(
        &mut self,
        src: &[u8],
        too_big: ProtocolError,
        bad: ProtocolError,
    ) -> Result<Option<usize>, ProtocolError> {
        let start = self.pos;
        let from = self.scan.max(start);
        match src[from..].iter().position(|&b| b == b'\r') {
            Some(off) => {
                let cr = from + off;
                if cr - start > MAX_HEADER_LEN {
                    return Err(too_big);
                }
                match src.get(cr + 1) {
                    None => {
                        self.scan = cr;
                        Ok(None)
                    }
                    Some(b'\n') => Ok(Some(cr)),
                    Some(_) => Err(bad),
                }
            }
            None => {
                self.scan = src.len();
                if src.len() - start > MAX_HEADER_LEN {
                    return Err(too_big);
                }
                Ok(None)
            }
        }
    }

    fn decode_count(&mut self, src: &mut BytesMut) -> Result<Option<()>, ProtocolError> {
        let Some(cr) = self.header_line(
            src,
            ProtocolError::TooBigMbulkCountString,
            ProtocolError::InvalidMultibulkLength,
        )?
        else {
            return Ok(None);
        };
        let n = parse_i64(&src[1..cr]).ok_or(ProtocolError::InvalidMultibulkLength)?;
        if n > 0 && n as u64 > self.limits.max_multibulk_len as u64 {
            return Err(ProtocolError::InvalidMultibulkLength);
        }
        if n <= 0 {
            // Empty request: consumed silently.
            src.advance(cr + 2);
            self.state = State::Idle;
        } else {
            let n = n as usize;
            self.remaining = n;
            // Kept between requests (cleared), so short requests allocate
            // nothing here; see `decode_args` for what is given back.
            self.args.reserve(n.min(MAX_PREALLOC_ARGS));
            self.pos = cr + 2;
            self.scan = self.pos;
            self.bulk = None;
            self.state = State::Args;
        }
        Ok(Some(()))
    }

    /// Gives back the storage kept between requests (for a client gone
    /// idle). Call only between requests.
    pub fn release(&mut self) {
        self.args = Vec::new();
    }

    fn decode_args(&mut self, src: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        while self.remaining > 0 {
            match self.bulk {
                None => {
                    let Some(&first) = src.get(self.pos) else {
                        return Ok(None);
                    };
                    if first != b'$' {
                        return Err(ProtocolError::ExpectedBulk(char::from(first)));
                    }
                    let Some(cr) = self.header_line(
                        src,
                        ProtocolError::TooBigBulkCountString,
                        ProtocolError::InvalidBulkLength,
                    )?
                    else {
                        return Ok(None);
                    };
                    let len = parse_i64(&src[self.pos + 1..cr])
                        .and_then(|n| usize::try_from(n).ok())
                        .filter(|&n| n <= self.limits.max_bulk_len)
                        .ok_or(ProtocolError::InvalidBulkLength)?;
                    self.bulk = Some(len);
                    self.pos = cr + 2;
                }
                Some(len) => {
                    let end = self.pos.saturating_add(len);
                    if src.len() < end.saturating_add(2) {
                        return Ok(None);
                    }
                    if &src[end..end + 2] != b"\r\n" {
                        return Err(ProtocolError::BadBulkTerminator);
                    }
                    self.args.push(self.pos..end);
                    self.pos = end + 2;
                    self.scan = self.pos;
                    self.bulk = None;
                    self.remaining -= 1;
                }
            }
        }
        let frame = src.split_to(self.pos).freeze();
        let args: Args = self.args.iter().cloned().collect();
        self.args.clear();
        if self.args.capacity() > KEPT_ARGS {
            // A long request's offsets are not kept for the next one.
            self.args = Vec::new();
        }
        self.state = State::Idle;
        Ok(Some(Request {
            frame,
            args,
            inline: false,
        }))
    }

    /// Returns `Ok(None)` when more input is needed, `Ok(Some(None))` for a
    /// consumed blank line.
    fn decode_inline(
        &mut self,
        src: &mut BytesMut,
    ) -> Result<Option<Option<Request>>, ProtocolError> {
        let from = self.scan;
        let Some(off) = src[from..].iter().position(|&b| b == b'\n') else {
            self.scan = src.len();
            if src.len() > self.limits.max_inline_len {
                return Err(ProtocolError::TooBigInlineRequest);
            }
            return Ok(None);
        };
        let nl = from + off;
        if nl > self.limits.max_inline_len {
            return Err(ProtocolError::TooBigInlineRequest);
        }
        let end = if nl > 0 && src[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        let args = split_args(&src[..end])?;
        src.advance(nl + 1);
        self.state = State::Idle;
        if args.is_empty() {
            return Ok(Some(None));
        }
        Ok(Some(Some(Request::encoded(&args, true))))
    }
}

impl Decoder for RequestDecoder {
    type Item = Request;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        loop {
            match self.state {
                State::Idle => {
                    let Some(&first) = src.first() else {
                        return Ok(None);
                    };
                    self.pos = 0;
                    self.scan = 0;
                    self.bulk = None;
                    self.remaining = 0;
                    self.args.clear();
                    self.state = if first == b'*' {
                        State::Count
                    } else {
                        State::Inline
                    };
                }
                State::Count => {
                    if self.decode_count(src)?.is_none() {
                        return Ok(None);
                    }
                }
                State::Args => return self.decode_args(src),
                State::Inline => match self.decode_inline(src)? {
                    None => return Ok(None),
                    Some(None) => {}
                    Some(Some(req)) => return Ok(Some(req)),
                },
            }
        }
    }

    /// At end of stream, a partial request is dropped silently (the client
    /// disconnected mid-frame; there is nobody to reply to).
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        match self.decode(src)? {
            Some(req) => Ok(Some(req)),
            None => {
                src.clear();
                self.state = State::Idle;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::encode;
    use proptest::prelude::*;
    use std::time::Instant;

    fn decoder() -> RequestDecoder {
        RequestDecoder::new(Limits::default())
    }

    /// Decodes everything in `input` at once.
    fn decode_all(input: &[u8]) -> Result<Vec<Request>, ProtocolError> {
        let mut d = decoder();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(r) = d.decode(&mut buf)? {
            out.push(r);
        }
        Ok(out)
    }

    /// Feeds `input` in chunks of the given sizes (cycled), decoding after each.
    fn decode_chunked(input: &[u8], sizes: &[usize]) -> (Vec<Request>, Option<String>) {
        let mut d = decoder();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut at = 0;
        let mut k = 0;
        while at < input.len() {
            let size = sizes
                .get(k % sizes.len().max(1))
                .copied()
                .unwrap_or(1)
                .max(1);
            k += 1;
            let end = (at + size).min(input.len());
            buf.extend_from_slice(&input[at..end]);
            at = end;
            loop {
                match d.decode(&mut buf) {
                    Ok(Some(r)) => out.push(r),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e.to_string())),
                }
            }
        }
        (out, None)
    }

    fn args_of(r: &Request) -> Vec<Vec<u8>> {
        r.args().map(<[u8]>::to_vec).collect()
    }

    fn err(input: &[u8]) -> String {
        match decode_all(input) {
            Err(e) => e.to_string(),
            Ok(v) => panic!("expected error, got {v:?}"),
        }
    }

    fn one(input: &[u8]) -> Request {
        let mut v = decode_all(input).unwrap();
        assert_eq!(v.len(), 1, "{v:?}");
        v.pop().unwrap()
    }

    #[test]
    fn multibulk_basic_and_zero_copy() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva\r\nl\r\n";
        let r = one(input);
        assert_eq!(&r.frame()[..], &input[..]);
        assert_eq!(r.argc(), 3);
        assert_eq!(r.arg(0), b"SET");
        assert_eq!(r.arg(2), b"va\r\nl");
        assert!(!r.is_inline());
        assert_eq!(r.args().len(), 3);
        let frame = r.frame().clone();
        let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        for i in 0..r.argc() {
            let a = r.arg_bytes(i);
            assert!(range.contains(&(a.as_ptr() as usize)));
            assert!(a.as_ptr() as usize + a.len() <= range.end);
            assert_eq!(&a[..], r.arg(i));
        }
        assert_eq!(&r.into_frame()[..], &input[..]);
    }

    #[test]
    fn empty_bulk_argument() {
        let r = one(b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n");
        assert_eq!(args_of(&r), vec![b"ECHO".to_vec(), Vec::new()]);
    }

    #[test]
    #[should_panic]
    fn arg_out_of_range_panics() {
        let r = Request::from_args(&["PING"]);
        let _ = r.arg(1);
    }

    #[test]
    fn pipelined_frames_in_one_buffer() {
        let input = b"*1\r\n$4\r\nPING\r\nECHO hi\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPI";
        let mut d = decoder();
        let mut buf = BytesMut::from(&input[..]);
        let a = d.decode(&mut buf).unwrap().unwrap();
        let b = d.decode(&mut buf).unwrap().unwrap();
        let c = d.decode(&mut buf).unwrap().unwrap();
        assert!(d.decode(&mut buf).unwrap().is_none());
        assert_eq!(args_of(&a), vec![b"PING".to_vec()]);
        assert_eq!(args_of(&b), vec![b"ECHO".to_vec(), b"hi".to_vec()]);
        assert!(b.is_inline());
        assert_eq!(args_of(&c), vec![b"GET".to_vec(), b"k".to_vec()]);
        buf.extend_from_slice(b"NG\r\n");
        let e = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(args_of(&e), vec![b"PING".to_vec()]);
        assert!(buf.is_empty());
    }

    #[test]
    fn empty_multibulk_and_blank_lines_are_skipped() {
        let v = decode_all(b"*0\r\n*-1\r\n\r\n\n   \t\r\n*1\r\n$4\r\nPING\r\n").unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].arg(0), b"PING");
        assert!(decode_all(b"*0\r\n\r\n").unwrap().is_empty());
    }

    #[test]
    fn encoded_args_are_the_frames_own_bytes() {
        let wire = b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$0\r\n\r\n$10\r\nbbbbbbbbbb\r\n$3\r\nc\nd\r\n";
        let mut d = RequestDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&wire[..]);
        let r = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(r.encoded_args(0, 1), b"$4\r\nMSET\r\n");
        assert_eq!(r.encoded_args(1, 2), b"$1\r\na\r\n$0\r\n\r\n");
        assert_eq!(r.encoded_args(3, 2), b"$10\r\nbbbbbbbbbb\r\n$3\r\nc\nd\r\n");
        // Inline input is re-encoded, and the same holds.
        let mut buf = BytesMut::from(&b"mget k1 \"x y\"\r\n"[..]);
        let r = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(r.encoded_args(0, 1), b"$4\r\nmget\r\n");
        assert_eq!(r.encoded_args(2, 1), b"$3\r\nx y\r\n");
    }

    #[test]
    fn inline_simple() {
        let r = one(b"SET  key\tvalue \r\n");
        assert!(r.is_inline());
        assert_eq!(
            args_of(&r),
            vec![b"SET".to_vec(), b"key".to_vec(), b"value".to_vec()]
        );
        assert_eq!(
            &r.frame()[..],
            &encode::command(&["SET", "key", "value"])[..]
        );
        // Bare LF works too.
        assert_eq!(args_of(&one(b"PING\n")), vec![b"PING".to_vec()]);
        let r = one(b"GET k\n");
        let frame = r.frame().clone();
        let a = r.arg_bytes(1);
        assert!(a.as_ptr() >= frame.as_ptr());
        assert!(a.as_ptr() as usize + a.len() <= frame.as_ptr() as usize + frame.len());
    }

    #[test]
    fn inline_quotes_and_escapes() {
        let r = one(b"SET \"a b\\n\\r\\t\\b\\a\\\\\\\"\\x41\\x4g\\q\" 'it\\'s \\n' \"\" ''\r\n");
        assert_eq!(
            args_of(&r),
            vec![
                b"SET".to_vec(),
                b"a b\n\r\t\x08\x07\\\"Ax4gq".to_vec(),
                b"it's \\n".to_vec(),
                Vec::new(),
                Vec::new(),
            ]
        );
        // A quote inside a word starts quoting.
        assert_eq!(
            args_of(&one(b"foo\"bar baz\" x\n")),
            vec![b"foobar baz".to_vec(), b"x".to_vec()]
        );
        // A closing quote followed by whitespace other than space.
        assert_eq!(
            args_of(&one(b"\"a\"\tb\n")),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        // Hex escape with uppercase digits.
        assert_eq!(args_of(&one(b"\"\\xFf\"\n")), vec![vec![0xff]]);
    }

    #[test]
    fn inline_unbalanced_quotes() {
        for input in [
            &b"SET \"foo\r\n"[..],
            b"SET \"foo\"bar\r\n",
            b"SET 'foo\r\n",
            b"SET 'foo'bar\r\n",
            b"SET \"foo\\\"\n",
            b"\"\\\n",
        ] {
            assert_eq!(err(input), "unbalanced quotes in request");
        }
    }

    #[test]
    fn error_invalid_multibulk_length() {
        for input in [
            &b"*abc\r\n"[..],
            b"*2147483648\r\n",
            b"*\r\n",
            b"*01\r\n",
            b"*1\rx",
            b"* 1\r\n",
        ] {
            assert_eq!(err(input), "invalid multibulk length");
        }
        let mut d = RequestDecoder::new(Limits {
            max_multibulk_len: 2,
            ..Limits::default()
        });
        let mut buf = BytesMut::from(&b"*3\r\n"[..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(ProtocolError::InvalidMultibulkLength)
        ));
        // i32::MAX itself is accepted (and not preallocated).
        assert!(decode_all(b"*2147483647\r\n").unwrap().is_empty());
    }

    #[test]
    fn error_invalid_bulk_length() {
        for input in [
            &b"*1\r\n$-1\r\n"[..],
            b"*1\r\n$abc\r\n",
            b"*1\r\n$\r\n",
            b"*1\r\n$536870913\r\n",
            b"*1\r\n$3\rx",
        ] {
            assert_eq!(err(input), "invalid bulk length");
        }
        assert_eq!(one(b"*1\r\n$0\r\n\r\n").arg(0), b"");
    }

    #[test]
    fn error_expected_bulk() {
        assert_eq!(err(b"*1\r\n:1\r\n"), "expected '$', got ':'");
        assert_eq!(err(b"*2\r\n$1\r\na\r\n+b\r\n"), "expected '$', got '+'");
    }

    #[test]
    fn error_too_big_count_strings() {
        let mut input = b"*".to_vec();
        input.extend_from_slice(&vec![b'1'; MAX_HEADER_LEN + 1]);
        assert_eq!(err(&input), "too big mbulk count string");
        let mut input = b"*1\r\n$".to_vec();
        input.extend_from_slice(&vec![b'1'; MAX_HEADER_LEN + 1]);
        assert_eq!(err(&input), "too big bulk count string");
    }

    #[test]
    fn error_too_big_inline() {
        let line = vec![b'a'; 64 * 1024 + 1];
        assert_eq!(err(&line), "too big inline request");
        let mut with_nl = line.clone();
        with_nl.push(b'\n');
        assert_eq!(err(&with_nl), "too big inline request");
        let mut ok = vec![b'a'; 64 * 1024];
        ok.push(b'\n');
        assert_eq!(one(&ok).arg(0).len(), 64 * 1024);
    }

    #[test]
    fn error_bad_bulk_terminator() {
        assert_eq!(
            err(b"*1\r\n$3\r\nfooXY"),
            "bulk string not terminated by CRLF"
        );
        assert_eq!(
            err(b"*1\r\n$3\r\nfoo\n\r"),
            "bulk string not terminated by CRLF"
        );
    }

    #[test]
    fn eof_with_partial_frame_is_silent() {
        let mut d = decoder();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1"[..]);
        assert!(d.decode(&mut buf).unwrap().is_none());
        assert!(d.decode_eof(&mut buf).unwrap().is_none());
        let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n"[..]);
        assert!(d.decode_eof(&mut buf).unwrap().is_some());
        assert!(d.decode_eof(&mut buf).unwrap().is_none());
    }

    #[test]
    fn from_args_encodes_multibulk() {
        let r = Request::from_args(&[&b"SET"[..], b"k", b"\r\n"]);
        assert_eq!(
            &r.frame()[..],
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\r\n\r\n"
        );
        assert_eq!(r.arg(2), b"\r\n");
        assert!(!r.is_inline());
        let again = one(r.frame());
        assert_eq!(args_of(&again), args_of(&r));
    }

    #[test]
    fn big_bulk_fed_byte_by_byte_is_linear() {
        let payload = vec![b'x'; 10 * 1024 * 1024];
        let input = encode::command(&[&b"SET"[..], b"key", &payload]);
        let mut d = decoder();
        let mut buf = BytesMut::with_capacity(input.len());
        let started = Instant::now();
        let mut got = None;
        for &b in input.iter() {
            buf.extend_from_slice(&[b]);
            if let Some(r) = d.decode(&mut buf).unwrap() {
                got = Some(r);
            }
        }
        let elapsed = started.elapsed();
        let r = got.expect("frame decoded");
        assert_eq!(r.arg(2).len(), payload.len());
        assert!(elapsed.as_secs_f64() < 5.0, "took {elapsed:?}");
    }

    #[test]
    fn long_inline_fed_byte_by_byte_is_linear() {
        let mut input = vec![b'a'; 60 * 1024];
        input.extend_from_slice(b" b\r\n");
        let started = Instant::now();
        let (v, e) = decode_chunked(&input, &[1]);
        assert!(e.is_none());
        assert_eq!(v.len(), 1);
        assert!(started.elapsed().as_secs_f64() < 1.0);
    }

    #[derive(Debug, Clone)]
    enum Req {
        Multi(Vec<Vec<u8>>),
        Inline(Vec<String>, bool),
        Empty(&'static [u8]),
    }

    fn req_strategy() -> impl Strategy<Value = Req> {
        let arg = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..12),
            proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'$'), Just(b'*'), Just(b'a')],
                0..6
            ),
        ];
        prop_oneof![
            4 => proptest::collection::vec(arg, 1..5).prop_map(Req::Multi),
            2 => (proptest::collection::vec("[a-zA-Z0-9]{1,6}", 1..4), any::<bool>())
                .prop_map(|(a, crlf)| Req::Inline(a, crlf)),
            1 => prop_oneof![
                Just(&b"*0\r\n"[..]),
                Just(&b"*-1\r\n"[..]),
                Just(&b"\r\n"[..]),
                Just(&b"  \n"[..]),
            ]
            .prop_map(Req::Empty),
        ]
    }

    fn garbage_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            any::<u8>(),
            proptest::sample::select(vec![
                b'\r', b'\n', b'*', b'$', b'"', b'\'', b'\\', b'-', b'0', b'1', b'3',
            ]),
        ]
    }

    proptest! {
        #[test]
        fn any_chunking_yields_same_requests(
            reqs in proptest::collection::vec(req_strategy(), 1..8),
            sizes in proptest::collection::vec(1usize..20, 1..10),
        ) {
            let mut input = Vec::new();
            let mut expected: Vec<(Vec<Vec<u8>>, bool, Vec<u8>)> = Vec::new();
            for r in &reqs {
                match r {
                    Req::Multi(args) => {
                        let f = encode::command(args);
                        input.extend_from_slice(&f);
                        expected.push((args.clone(), false, f.to_vec()));
                    }
                    Req::Inline(args, crlf) => {
                        input.extend_from_slice(args.join(" ").as_bytes());
                        input.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
                        let a: Vec<Vec<u8>> = args.iter().map(|s| s.as_bytes().to_vec()).collect();
                        let f = encode::command(&a).to_vec();
                        expected.push((a, true, f));
                    }
                    Req::Empty(b) => input.extend_from_slice(b),
                }
            }
            let whole = decode_all(&input).unwrap();
            let (chunked, e) = decode_chunked(&input, &sizes);
            prop_assert!(e.is_none());
            prop_assert_eq!(whole.len(), expected.len());
            prop_assert_eq!(chunked.len(), expected.len());
            for ((w, c), (args, inline, frame)) in whole.iter().zip(&chunked).zip(&expected) {
                prop_assert_eq!(&args_of(w), args);
                prop_assert_eq!(&args_of(c), args);
                prop_assert_eq!(w.is_inline(), *inline);
                prop_assert_eq!(c.is_inline(), *inline);
                prop_assert_eq!(&w.frame()[..], &frame[..]);
                prop_assert_eq!(&c.frame()[..], &frame[..]);
            }
        }

        #[test]
        fn garbage_never_panics_and_is_chunking_independent(
            input in proptest::collection::vec(garbage_byte(), 0..300),
            sizes in proptest::collection::vec(1usize..16, 1..6),
        ) {
            let whole = decode_chunked(&input, &[input.len().max(1)]);
            let chunked = decode_chunked(&input, &sizes);
            let args = |v: &Vec<Request>| v.iter().map(args_of).collect::<Vec<_>>();
            prop_assert_eq!(args(&whole.0), args(&chunked.0));
            prop_assert_eq!(whole.1, chunked.1);
            let mut d = decoder();
            let mut buf = BytesMut::from(&input[..]);
            let _ = d.decode_eof(&mut buf);
        }
    }
}
