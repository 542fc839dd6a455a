//! The backend reply scanner and the control-plane parser: never panic, and
//! any split gives the same frames. (The scanner only finds boundaries;
//! `Value::parse` may still refuse a frame's content, e.g. a bad boolean.)
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use slotproxy::resp::{reply::split_aggregate, ReplyDecoder, Value};
use tokio_util::codec::Decoder;

fn frames(chunks: &[&[u8]]) -> (Vec<Bytes>, bool) {
    let mut d = ReplyDecoder::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(f)) => out.push(f),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let split = (data[0] as usize % data.len()).min(data.len() - 1);
    let data = &data[1..];
    let split = split.min(data.len());
    let whole = frames(&[data]);
    assert_eq!(whole, frames(&[&data[..split], &data[split..]]));
    for f in &whole.0 {
        let _ = Value::parse(f);
        let _ = split_aggregate(f);
    }
});
