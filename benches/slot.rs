//! Hash slot micro-benchmarks: `key_slot` (CRC16-XMODEM of the hash tag or
//! key, mod 16384) on short, hash-tagged and long keys.
//!
//! `cargo bench --bench slot` (or `make microbench`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use slotproxy::cluster::slot::key_slot;
use std::hint::black_box;
use std::time::Duration;

fn slots(c: &mut Criterion) {
    let long = [b'k'; 100];
    let mut g = c.benchmark_group("key_slot");
    for (name, key) in [
        ("short_key", &b"key:000000001"[..]),
        ("hash_tag", &b"{user1000}.following"[..]),
        ("100B_key", &long[..]),
        (
            "100B_key_with_late_tag",
            &[&long[..90], b"{tag}xxxxx"].concat()[..],
        ),
    ] {
        g.throughput(Throughput::Bytes(key.len() as u64));
        g.bench_function(name, |b| b.iter(|| key_slot(black_box(key))));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = slots
}
criterion_main!(benches);
