//! CLIENT commands at the proxy, which describe and control the proxy's
//! own clients: LIST, KILL, UNBLOCK, REPLY, PAUSE. Replies are compared
//! with one plain redis-server given the same input.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::proxy::{exchange, Proxy};
use common::standalone::Standalone;
use common::{wait_until, Cluster};

/// A RESP command frame.
fn frame(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// Reads one single-line reply (`*-1`, `:0`, `-ERR ...`).
fn read_line(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\r\n") {
        match s.read(&mut b) {
            Ok(1) => out.push(b[0]),
            other => panic!(
                "read failed after {:?}: {other:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Each request, alone on a new connection, gets the same bytes through
/// the proxy as from the reference server (errors as Redis words them).
fn same_reply(proxy: &Proxy, reference: &Standalone, requests: &[&[&str]]) {
    for args in requests {
        let want = exchange(&mut reference.raw(), &frame(args), 1).0;
        let (got, _) = exchange(&mut proxy.raw(), &frame(args), want.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{args:?}"
        );
    }
}

fn blocked_clients(c: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("clients").query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Blocks a raw client in `blocking`, ends it with CLIENT UNBLOCK (with
/// `mode`, if any) from `other`, and returns what the blocked client got,
/// after checking CLIENT UNBLOCK's reply and that the client goes on.
fn unblocked(
    mut blocked: TcpStream,
    other: &mut redis::Connection,
    blocking: &[&str],
    mode: Option<&str>,
) -> String {
    blocked.write_all(&frame(&["CLIENT", "ID"])).unwrap();
    let id = read_line(&mut blocked)[1..].trim().to_string();
    blocked.write_all(&frame(blocking)).unwrap();
    wait_until(Duration::from_secs(10), "the client blocks", || {
        blocked_clients(other) >= 1
    });
    let mut unblock = redis::cmd("CLIENT");
    unblock.arg("UNBLOCK").arg(&id);
    if let Some(m) = mode {
        unblock.arg(m);
    }
    let n: i64 = unblock.query(other).unwrap();
    assert_eq!(n, 1, "{blocking:?}");
    let reply = read_line(&mut blocked);
    blocked.write_all(&frame(&["PING"])).unwrap();
    assert_eq!(read_line(&mut blocked), "+PONG\r\n");
    // No longer blocked: nothing to unblock.
    let n: i64 = unblock.query(other).unwrap();
    assert_eq!(n, 0);
    reply
}

#[test]
fn client_unblock_ends_blocking_commands_and_wait_as_one_server_does() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let reference = Standalone::start();
    let mut via_proxy = proxy.conn();
    let mut direct = reference.conn();
    let cases: &[(&[&str], Option<&str>)] = &[
        (&["BLPOP", "{q}l", "0"], None),
        (&["BLPOP", "{q}l", "0"], Some("ERROR")),
        (
            &["BLMOVE", "{q}a", "{q}b", "LEFT", "RIGHT", "0"],
            Some("TIMEOUT"),
        ),
        (&["BZPOPMIN", "{q}z", "0"], None),
        (&["XREAD", "BLOCK", "0", "STREAMS", "{q}s", "$"], None),
        (&["WAIT", "1", "0"], None),
        (&["WAIT", "1", "0"], Some("ERROR")),
    ];
    for (blocking, mode) in cases {
        let want = unblocked(reference.raw(), &mut direct, blocking, *mode);
        let got = unblocked(proxy.raw(), &mut via_proxy, blocking, *mode);
        assert_eq!(got, want, "{blocking:?} {mode:?}");
    }
    // The node answered the unblocked BLPOP itself: a push afterwards is
    // still there (nothing was popped for a client that left).
    let _: i64 = redis::cmd("RPUSH")
        .arg("{q}l")
        .arg("x")
        .query(&mut via_proxy)
        .unwrap();
    let len: i64 = redis::cmd("LLEN")
        .arg("{q}l")
        .query(&mut via_proxy)
        .unwrap();
    assert_eq!(len, 1);
    // Errors as Redis words them.
    same_reply(
        &proxy,
        &reference,
        &[
            &["CLIENT", "UNBLOCK", "x"][..],
            &["CLIENT", "UNBLOCK", "1", "SOON"],
            &["CLIENT", "UNBLOCK", "99999"],
        ],
    );
}

#[test]
fn client_reply_off_skip_and_on_as_one_server_does() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let reference = Standalone::start();
    let mut input = Vec::new();
    for args in [
        &["CLIENT", "REPLY", "OFF"][..],
        &["SET", "k", "1"],
        &["GET", "k"],
        &["MGET", "k", "other"],
        &["CLIENT", "REPLY", "ON"],
        &["GET", "k"],
        &["CLIENT", "REPLY", "SKIP"],
        &["INCR", "k"],
        &["GET", "k"],
        &["CLIENT", "REPLY", "MAYBE"],
        &["PING"],
    ] {
        input.extend_from_slice(&frame(args));
    }
    let want = exchange(&mut reference.raw(), &input, 1).0;
    // Read a moment more than needed: nothing else may arrive.
    let mut want_all = want.clone();
    let mut s = reference.raw();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let (more, _) = exchange(&mut s, b"", usize::MAX);
    assert!(more.is_empty());
    want_all.extend(more);
    let mut s = proxy.raw();
    let (got, _) = exchange(&mut s, &input, want_all.len());
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let (extra, _) = exchange(&mut s, b"", usize::MAX);
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want_all)
    );
    assert!(extra.is_empty(), "{:?}", String::from_utf8_lossy(&extra));
    assert_eq!(
        String::from_utf8_lossy(&want_all),
        "+OK\r\n$1\r\n1\r\n$1\r\n2\r\n-ERR syntax error\r\n+PONG\r\n"
    );
}

#[test]
fn client_pause_holds_the_proxy_clients_until_it_ends_or_is_lifted() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let reference = Standalone::start();
    let mut admin = proxy.conn();
    let mut c = proxy.raw();
    // WRITE: reads go on, a write waits for the pause's end.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(700)
        .arg("WRITE")
        .query(&mut admin)
        .unwrap();
    let t = Instant::now();
    c.write_all(&frame(&["GET", "p"])).unwrap();
    assert_eq!(read_line(&mut c), "$-1\r\n");
    assert!(t.elapsed() < Duration::from_millis(500), "a read was held");
    c.write_all(&frame(&["SET", "p", "1"])).unwrap();
    assert_eq!(read_line(&mut c), "+OK\r\n");
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "a write went through"
    );
    // ALL: everything waits, until CLIENT UNPAUSE from another client.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        .query(&mut admin)
        .unwrap();
    let t = Instant::now();
    c.write_all(&frame(&["GET", "p"])).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(c.read(&mut buf).is_err(), "a read went through a pause ALL");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut admin)
        .unwrap();
    assert_eq!(read_line(&mut c), "$1\r\n");
    assert!(t.elapsed() < Duration::from_secs(10));
    // A paused client that leaves costs nothing: the others go on.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(400)
        .query(&mut admin)
        .unwrap();
    let mut gone = proxy.raw();
    gone.write_all(&frame(&["SET", "p", "2"])).unwrap();
    drop(gone);
    let got: String = redis::cmd("GET").arg("p").query(&mut admin).unwrap();
    assert!(got == "1" || got == "2");
    // Errors as Redis words them.
    same_reply(
        &proxy,
        &reference,
        &[
            &["CLIENT", "PAUSE", "soon"][..],
            &["CLIENT", "PAUSE", "-1"],
            &["CLIENT", "PAUSE", "10", "READS"],
        ],
    );
}

#[test]
fn client_list_and_kill_see_every_client_of_the_proxy() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let mut me = proxy.conn();
    let mut other = proxy.conn();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("victim")
        .query(&mut other)
        .unwrap();
    let my_id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut me).unwrap();
    let their_id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut other).unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut me).unwrap();
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(list.contains(&format!("id={my_id} ")), "{list}");
    assert!(
        list.contains(&format!("id={their_id} ")) && list.contains("name=victim"),
        "{list}"
    );
    // The other client's last command, as Redis shows it.
    let _: Option<String> = redis::cmd("GET").arg("k").query(&mut other).unwrap();
    let only: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("ID")
        .arg(their_id)
        .query(&mut me)
        .unwrap();
    assert_eq!(only.lines().count(), 1, "{only}");
    assert!(only.contains(" cmd=get "), "{only}");
    // One server's fields, in its order (newer servers' lib-name and
    // lib-ver may follow).
    let reference = Standalone::start();
    let theirs: String = redis::cmd("CLIENT")
        .arg("INFO")
        .query(&mut reference.conn())
        .unwrap();
    let keys = |line: &str| -> Vec<String> {
        line.split_whitespace()
            .map(|f| f.split('=').next().unwrap().to_string())
            .collect()
    };
    let ours = keys(&only);
    assert_eq!(ours[..keys(&theirs).len()], keys(&theirs)[..], "{only}");
    // SKIPME (the default) spares the caller; the other one is closed.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(their_id)
        .query(&mut me)
        .unwrap();
    assert_eq!(killed, 1);
    wait_until(Duration::from_secs(5), "the killed client is gone", || {
        redis::cmd("PING").query::<String>(&mut other).is_err()
    });
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut me).unwrap();
    assert_eq!(list.lines().count(), 1, "{list}");
    // The old form: by address, OK or an error.
    let third = proxy.conn();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut me).unwrap();
    let addr = list
        .lines()
        .find(|l| !l.contains(&format!("id={my_id} ")))
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("addr=")))
        .unwrap()
        .to_string();
    let ok: String = redis::cmd("CLIENT")
        .arg("KILL")
        .arg(&addr)
        .query(&mut me)
        .unwrap();
    assert_eq!(ok, "OK");
    let e = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("127.0.0.1:1")
        .query::<String>(&mut me)
        .unwrap_err();
    assert!(e.to_string().contains("No such client"), "{e}");
    drop(third);
    // Nothing matched: none killed, and the caller is still served.
    let none: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("USER")
        .arg("nobody")
        .query(&mut me)
        .unwrap();
    assert_eq!(none, 0);
    let pong: String = redis::cmd("PING").query(&mut me).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn hello_commandlog_and_client_capa_as_one_server_does() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let reference = Standalone::start();
    // COMMANDLOG (Valkey 8.1) is the proxy's slow log; CLIENT CAPA (Valkey
    // 8) is accepted. Against Redis 7.0 both are unknown, in Redis's words.
    same_reply(
        &proxy,
        &reference,
        &[
            &["COMMANDLOG", "GET", "5", "large-request"],
            &["COMMANDLOG", "GET", "x", "slow"],
            &["COMMANDLOG", "GET", "1", "huge"],
            &["COMMANDLOG", "LEN", "large-reply"],
            &["COMMANDLOG", "RESET", "large-request"],
            &["COMMANDLOG", "RESET", "nope"],
            &["COMMANDLOG", "GET", "1"],
            &["CLIENT", "CAPA", "redirect"],
            &["CLIENT", "CAPA"],
        ],
    );
    // HELLO names the cluster's server and version; only the id differs.
    for args in [&["HELLO"][..], &["HELLO", "3"], &["HELLO", "2"]] {
        let want = exchange(&mut reference.raw(), &frame(args), 1).0;
        let (got, _) = exchange(&mut proxy.raw(), &frame(args), 1);
        let without_id = |b: &[u8]| {
            let t = String::from_utf8_lossy(b).into_owned();
            let at = t.find("$2\r\nid\r\n:").expect("an id field") + 8;
            let end = at + t[at..].find("\r\n").unwrap();
            format!("{}{}", &t[..at], &t[end..])
        };
        assert_eq!(without_id(&got), without_id(&want), "{args:?}");
    }
}

#[test]
fn a_request_refused_for_its_arity_is_its_commands_as_in_redis() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let reference = Standalone::start();
    let sides = [
        ("proxy", proxy.conn(), proxy.conn()),
        ("redis-server", reference.conn(), reference.conn()),
    ];
    for (side, mut watcher, mut client) in sides {
        let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut client).unwrap();
        let e = redis::cmd("HSET")
            .arg("k")
            .query::<i64>(&mut client)
            .unwrap_err();
        assert!(
            e.to_string().contains("wrong number of arguments"),
            "{side}: {e}"
        );
        let line: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("ID")
            .arg(id)
            .query(&mut watcher)
            .unwrap();
        assert!(line.contains(" cmd=hset "), "{side}: {line}");
    }
}
