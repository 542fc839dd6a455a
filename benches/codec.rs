//! RESP codec micro-benchmarks: the client request decoder and the backend
//! reply boundary scanner, on the inputs the data path sees most.
//!
//! `cargo bench --bench codec` (or `make microbench`). Each iteration decodes
//! a fresh copy of the input; building that copy is not timed.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use slotproxy::resp::encode;
use slotproxy::resp::{Limits, ReplyDecoder, RequestDecoder};
use std::hint::black_box;
use std::time::Duration;
use tokio_util::codec::Decoder;

fn set_frame(key: &str, value: &[u8]) -> Vec<u8> {
    encode::command(&[b"SET".as_slice(), key.as_bytes(), value]).to_vec()
}

/// Decodes every request in `buf`, returning how many there were.
fn decode_all(dec: &mut RequestDecoder, buf: &mut BytesMut) -> usize {
    let mut n = 0;
    while let Some(req) = dec.decode(buf).expect("valid input") {
        black_box(req.argc());
        n += 1;
    }
    n
}

/// Scans every reply in `buf`, returning how many there were.
fn scan_all(dec: &mut ReplyDecoder, buf: &mut BytesMut) -> usize {
    let mut n = 0;
    while let Some(frame) = dec.decode(buf).expect("valid input") {
        black_box(frame.len());
        n += 1;
    }
    n
}

fn requests(c: &mut Criterion) {
    let small = set_frame("key:000000001", b"xxx");
    let pipeline: Vec<u8> = (0..16)
        .flat_map(|i| set_frame(&format!("key:{i:09}"), b"xxx"))
        .collect();
    let big = set_frame("key:000000001", &[b'x'; 4096]);

    let mut g = c.benchmark_group("request");
    for (name, input, count) in [
        ("set_3b", &small, 1),
        ("pipeline_16x_set_3b", &pipeline, 16),
        ("set_4KiB", &big, 1),
    ] {
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(name, |b| {
            let mut dec = RequestDecoder::new(Limits::default());
            b.iter_batched_ref(
                || BytesMut::from(&input[..]),
                |buf| assert_eq!(decode_all(&mut dec, buf), count),
                BatchSize::SmallInput,
            )
        });
    }
    // Resumable decoding: the input arrives in pieces (as TCP segments do)
    // and the decoder is called after each; it must not re-scan.
    for (name, input, count, chunk) in [
        ("pipeline_16x_set_3b_in_64B_chunks", &pipeline, 16, 64),
        ("set_4KiB_in_1460B_chunks", &big, 1, 1460),
        ("set_4KiB_in_16B_chunks", &big, 1, 16),
    ] {
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(name, |b| {
            let mut dec = RequestDecoder::new(Limits::default());
            b.iter_batched_ref(
                || BytesMut::with_capacity(input.len()),
                |buf| {
                    let mut n = 0;
                    for piece in input.chunks(chunk) {
                        buf.extend_from_slice(piece);
                        n += decode_all(&mut dec, buf);
                    }
                    assert_eq!(n, count);
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn replies(c: &mut Criterion) {
    let status = b"+OK\r\n".to_vec();
    let bulk = encode::bulk(&[b'x'; 4096]).to_vec();
    let statuses: Vec<u8> = status.repeat(16);
    // A 10-key MGET reply: an array of 10 three-byte bulks.
    let mut mget = BytesMut::new();
    encode::array_header(10, &mut mget);
    for _ in 0..10 {
        encode::bulk_into(b"xxx", &mut mget);
    }
    // Nested arrays shaped like CLUSTER SLOTS for 3 masters with a replica
    // each: [[start, end, [ip, port, id], [ip, port, id]], ...].
    let mut nested = BytesMut::new();
    encode::array_header(3, &mut nested);
    for shard in 0..3i64 {
        encode::array_header(4, &mut nested);
        nested.extend_from_slice(&encode::integer(shard * 5461));
        nested.extend_from_slice(&encode::integer(shard * 5461 + 5460));
        for node in 0..2i64 {
            encode::array_header(3, &mut nested);
            encode::bulk_into(b"127.0.0.1", &mut nested);
            nested.extend_from_slice(&encode::integer(7000 + shard * 2 + node));
            encode::bulk_into(&[b'a'; 40], &mut nested);
        }
    }
    let mget = mget.to_vec();
    let nested = nested.to_vec();

    let mut g = c.benchmark_group("reply");
    for (name, input, count) in [
        ("status_ok", &status, 1),
        ("pipeline_16x_status_ok", &statuses, 16),
        ("bulk_4KiB", &bulk, 1),
        ("array_10x_bulk_3b", &mget, 1),
        ("nested_cluster_slots", &nested, 1),
    ] {
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(name, |b| {
            let mut dec = ReplyDecoder::new();
            b.iter_batched_ref(
                || BytesMut::from(&input[..]),
                |buf| assert_eq!(scan_all(&mut dec, buf), count),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = requests, replies
}
criterion_main!(benches);
