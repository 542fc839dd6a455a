//! The client request decoder: never panics, and any split of the input
//! gives the same requests (or the same error) as the whole.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use slotproxy::resp::{Limits, RequestDecoder};
use tokio_util::codec::Decoder;

fn decode_all(chunks: &[&[u8]]) -> (Vec<Vec<Vec<u8>>>, Option<String>) {
    let limits = Limits {
        max_bulk_len: 1 << 20,
        max_multibulk_len: 1 << 16,
        max_inline_len: 1 << 12,
    };
    let mut d = RequestDecoder::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(req)) => out.push(req.args().map(<[u8]>::to_vec).collect()),
                Ok(None) => break,
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let split = data[0] as usize % data.len();
    let data = &data[1..];
    let split = split.min(data.len());
    let whole = decode_all(&[data]);
    let parts = decode_all(&[&data[..split], &data[split..]]);
    assert_eq!(whole, parts);
});
