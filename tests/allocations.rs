//! Heap allocations per request through the proxy, counted by a global
//! allocator: one client, one request at a time, against a real cluster.
//! A tripwire on the per-request path (issue 21's "allocations per
//! request"); the figures and where each allocation comes from are in
//! docs/benchmarks.md. Its own test binary: the allocator counts every
//! thread of the process, so nothing else may run beside it.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};

use common::proxy::Proxy;
use common::Cluster;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Sends `frame` `n` times, one at a time, reading each reply (`reply_len`
/// bytes) into a fixed buffer; allocations per request over the run.
fn per_request(stream: &mut TcpStream, frame: &[u8], reply_len: usize, n: u64) -> f64 {
    let mut buf = [0u8; 4096];
    let mut once = || {
        stream.write_all(frame).unwrap();
        let mut got = 0;
        while got < reply_len {
            got += stream.read(&mut buf[got..]).unwrap();
        }
        assert_eq!(got, reply_len, "{:?}", String::from_utf8_lossy(&buf[..got]));
    };
    for _ in 0..1000 {
        once();
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..n {
        once();
    }
    (ALLOCS.load(Ordering::Relaxed) - before) as f64 / n as f64
}

fn frame(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

#[test]
fn allocations_per_request() {
    let cluster = Cluster::start(3, 0);
    // No periodic refresh during the count (its allocations are not a
    // request's).
    let proxy = Proxy::start_with(cluster.seeds(), |c| {
        c.cluster.refresh_interval = std::time::Duration::from_secs(3600)
    });
    let mut s = proxy.raw();
    s.set_nodelay(true).unwrap();
    let n = 20_000;
    let set = per_request(&mut s, &frame(&["SET", "k", "xxx"]), 5, n);
    let get = per_request(&mut s, &frame(&["GET", "k"]), 9, n);
    let mut mset = vec!["MSET"];
    let keys: Vec<String> = (0..10).map(|i| format!("k:{i}")).collect();
    for k in &keys {
        mset.push(k);
        mset.push("xxx");
    }
    let mset = per_request(&mut s, &frame(&mset), 5, n / 4);
    println!("allocations per request: SET {set:.2}, GET {get:.2}, 10-key MSET {mset:.2}");
    // The counts measured when this test was written (docs/benchmarks.md):
    // an increase is a regression on the per-request path.
    assert!(set <= 3.1 && get <= 3.1, "SET {set:.2}, GET {get:.2}");
    assert!(mset <= 35.1, "10-key MSET {mset:.2}");
}
