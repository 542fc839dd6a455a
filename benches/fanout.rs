//! Fan-out micro-benchmarks: splitting a multi-key MGET/MSET across slots
//! into per-slot parts (`fanout::split_by_slot`), and merging the parts'
//! replies back in key order (`fanout::merge`).
//!
//! `cargo bench --bench fanout` (or `make microbench`).

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use slotproxy::backend::ReplyResult;
use slotproxy::command::fanout::{merge, split_by_slot, Plan};
use slotproxy::resp::{encode, Request, Value};
use std::hint::black_box;
use std::time::Duration;

/// `MGET k:0 .. k:{n-1}` or `MSET k:0 xxx ..`, keys spread over slots as
/// `make bench` sends them.
fn request(cmd: &str, n: usize) -> Request {
    let mut args = vec![cmd.to_string()];
    for i in 0..n {
        args.push(format!("k:{i}"));
        if cmd == "MSET" {
            args.push("xxx".into());
        }
    }
    Request::from_args(&args)
}

/// What the nodes reply to each part of `plan`: for MGET an array with one
/// 3-byte value per key, for MSET `+OK`.
fn replies(plan: &Plan) -> Vec<ReplyResult> {
    plan.parts
        .iter()
        .map(|p| {
            if plan.command == "MSET" {
                return Ok(Bytes::from_static(encode::OK));
            }
            let sub = Value::parse(&p.frame).expect("valid part");
            let keys = sub.as_array().expect("array").len() - 1;
            let mut out = BytesMut::new();
            encode::array_header(keys, &mut out);
            for _ in 0..keys {
                encode::bulk_into(b"xxx", &mut out);
            }
            Ok(out.freeze())
        })
        .collect()
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    for (cmd, n) in [("MGET", 10), ("MSET", 10), ("MGET", 100), ("MSET", 100)] {
        let name = cmd.to_ascii_lowercase();
        let req = request(cmd, n);
        let plan = split_by_slot(&name, &req).expect("keys span slots");
        let parts = replies(&plan);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(
            format!("plan_{name}_{n}_keys_{}_slots", plan.parts.len()),
            |b| b.iter(|| split_by_slot(black_box(&name), black_box(&req))),
        );
        g.bench_function(format!("merge_{name}_{n}_keys"), |b| {
            b.iter(|| {
                merge(
                    &plan.command,
                    plan.write,
                    black_box(&plan.merge),
                    black_box(&parts),
                )
            })
        });
        g.bench_function(format!("plan_and_merge_{name}_{n}_keys"), |b| {
            b.iter(|| {
                let plan = split_by_slot(black_box(&name), black_box(&req)).expect("split");
                merge(&plan.command, plan.write, &plan.merge, black_box(&parts))
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = fanout
}
criterion_main!(benches);
