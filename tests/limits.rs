//! Limits that keep one client from hurting others: slow-loris protection,
//! idle timeout, per-client and total query buffer caps.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::proxy::{closed_by_peer, exchange, Proxy};
use common::{q, Cluster};

#[test]
fn trickled_requests_pass_stalled_ones_are_refused() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start_with(cluster.seeds(), |c| {
        c.frontend.frame_timeout = Duration::from_millis(500)
    });
    let mut bystander = proxy.conn();
    // Byte by byte, 100 ms apart: 1.4 s in total, never 500 ms without progress.
    let mut trickler = proxy.raw();
    for b in b"*1\r\n$4\r\nPING\r\n" {
        trickler.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let (out, _) = exchange(&mut trickler, b"", 7);
    assert_eq!(out, b"+PONG\r\n");
    // Half a request, then nothing.
    let mut stalled = proxy.raw();
    let t = Instant::now();
    let (out, _) = exchange(&mut stalled, b"*1\r\n$4\r\nPI", 45);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "-ERR slotproxy: incomplete request timed out\r\n"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t.elapsed()
    );
    assert!(closed_by_peer(&mut stalled));
    assert_eq!(q::<String>(&mut bystander, &["PING"]), "PONG");
}

#[test]
fn idle_clients_are_closed_busy_ones_are_not() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start_with(cluster.seeds(), |c| {
        c.frontend.idle_timeout = Duration::from_millis(500)
    });
    let mut idle = proxy.raw();
    let (out, _) = exchange(&mut idle, b"PING\r\n", 7);
    assert_eq!(out, b"+PONG\r\n");
    let t = Instant::now();
    assert!(closed_by_peer(&mut idle), "idle client closed");
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    // A subscriber waits for messages: never idle.
    let mut sub = proxy.raw();
    let (out, _) = exchange(&mut sub, b"SUBSCRIBE news\r\n", 10);
    assert!(String::from_utf8_lossy(&out).contains("subscribe"));
    std::thread::sleep(Duration::from_millis(1200));
    let mut c = proxy.conn();
    let _: i64 = q(&mut c, &["PUBLISH", "news", "still-here"]);
    let (out, _) = exchange(&mut sub, b"", 20);
    assert!(String::from_utf8_lossy(&out).contains("still-here"));
}

#[test]
fn query_buffer_caps_per_client_and_in_total() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start_with(cluster.seeds(), |c| {
        c.frontend.max_query_buffer = 64 * 1024;
        c.frontend.max_client_memory = 256 * 1024;
    });
    let mut bystander = proxy.conn();
    // One client over its own cap.
    let mut big = proxy.raw();
    let mut input = b"*2\r\n$3\r\nGET\r\n$1000000\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 100 * 1024));
    let _ = big.write_all(&input);
    let (out, _) = exchange(&mut big, b"", 60);
    assert!(
        String::from_utf8_lossy(&out)
            .starts_with("-ERR Protocol error: query buffer limit exceeded"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(closed_by_peer(&mut big));
    // Several clients under their own cap, together over the total.
    let mut hogs = Vec::new();
    let mut refused = 0;
    for _ in 0..6 {
        let mut s = proxy.raw();
        let mut input = b"*2\r\n$3\r\nGET\r\n$1000000\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'y', 60 * 1024));
        let _ = s.write_all(&input);
        std::thread::sleep(Duration::from_millis(100));
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let (out, _) = exchange(&mut s, b"", 60);
        if String::from_utf8_lossy(&out).contains("total client memory limit reached") {
            refused += 1;
        }
        hogs.push(s);
    }
    assert!(refused >= 1, "the total cap refused someone");
    assert_eq!(q::<String>(&mut bystander, &["PING"]), "PONG");
    drop(hogs);
}
