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
    let cpu = proxy.cpu_time();
    std::thread::sleep(Duration::from_millis(1200));
    // Past its idle timeout, a busy client's session waits; it once spun on
    // the fired timer (a core's worth of CPU per such client).
    let used = proxy.cpu_time() - cpu;
    assert!(
        used < Duration::from_millis(300),
        "{used:?} of CPU while waiting"
    );
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

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn garbage_input_never_hurts_other_clients() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start_with(cluster.seeds(), |c| {
        c.frontend.frame_timeout = Duration::from_millis(300)
    });
    let mut bystander = proxy.conn();
    let _: () = q(&mut bystander, &["SET", "keep", "me"]);
    let mut g = Gen(0x5eed_1234_abcd_ef01);
    let nested: Vec<u8> = b"*1\r\n".repeat(10_000);
    let fixed: Vec<Vec<u8>> = vec![
        b"*99999999999999999999\r\n".to_vec(),
        b"*1\r\n$99999999999999\r\n".to_vec(),
        b"*2\r\n$3\r\nGET\r\n$-2\r\n".to_vec(),
        b"*3\r\n$3\r\nSET\r\n$1\r\nk".to_vec(),
        b"$5\r\nhello\r\n".to_vec(),
        b"\"unbalanced quote\r\n".to_vec(),
        b"\r\n\r\n\r\n*0\r\n*-1\r\n".to_vec(),
        nested,
    ];
    for round in 0..200 {
        let input = match round % 3 {
            0 => {
                let n = 1 + (g.next() % 4096) as usize;
                g.bytes(n)
            }
            1 => fixed[(g.next() as usize) % fixed.len()].clone(),
            _ => {
                // A valid request cut anywhere, followed by garbage.
                let mut v = b"*3\r\n$3\r\nSET\r\n$4\r\ngarb\r\n$5\r\nvalue\r\n".to_vec();
                let cut = (g.next() as usize) % v.len();
                v.truncate(cut);
                let n = (g.next() % 64) as usize;
                v.extend(g.bytes(n));
                v
            }
        };
        let mut s = proxy.raw();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let _ = s.write_all(&input);
        let _ = exchange(&mut s, b"", 1);
        drop(s);
        if round % 20 == 0 {
            assert_eq!(
                q::<String>(&mut bystander, &["GET", "keep"]),
                "me",
                "round {round}"
            );
        }
    }
    // Still serving, old and new clients alike.
    assert_eq!(q::<String>(&mut bystander, &["GET", "keep"]), "me");
    let mut fresh = proxy.conn();
    assert_eq!(q::<String>(&mut fresh, &["PING"]), "PONG");
}
