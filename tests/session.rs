//! Stateful sessions against real clusters: transactions, blocking commands,
//! pub/sub with re-subscription after failover, and real clients (redis-cli,
//! redis-py 8 in RESP2 and RESP3, ioredis).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{q, run_client, wait_until, Cluster};
use redis::Value;
use slotproxy::cluster::slot::key_slot;

#[test]
fn real_clients_redis_py_8_both_protocols_and_ioredis() {
    let cluster = Cluster::start(3, 1);
    let proxy = Proxy::start(cluster.seeds());
    run_client("python3", "tests/python/session_client.py", proxy.port());
    run_client("node", "tests/node/client.js", proxy.port());
}

#[test]
fn redis_cli_transactions_and_resp3() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let port = proxy.port().to_string();
    let mut child = Command::new(common::cli_bin())
        .args(["-p", &port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"MULTI\nSET {t}a 5\nINCR {t}a\nEXEC\nMULTI\nSET a 1\nSET b 2\nEXEC\nGET a\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(&lines[..5], ["OK", "QUEUED", "QUEUED", "OK", "6"], "{text}");
    assert!(text.contains("CROSSSLOT"), "{text}");
    assert!(text.contains("EXECABORT"), "{text}");
    assert_eq!(
        lines.last(),
        Some(&""),
        "nothing of the aborted transaction applied: {text}"
    );

    let out = Command::new(common::cli_bin())
        .args(["-3", "-p", &port, "HSET", "h", "f", "v"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new(common::cli_bin())
        .args(["--no-raw", "-3", "-p", &port, "HGETALL", "h"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"f\" => \"v\""), "RESP3 map: {text}");
}

#[test]
fn moved_inside_a_transaction_aborts_cleanly() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let mut c = proxy.conn();
    let slot = key_slot(b"{mv}");
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let q: String = redis::cmd("SET").arg("{mv}a").arg(1).query(&mut c).unwrap();
    assert_eq!(q, "QUEUED");
    let q: String = redis::cmd("SET").arg("{mv}b").arg(2).query(&mut c).unwrap();
    assert_eq!(q, "QUEUED");
    // The (empty) slot moves before EXEC.
    let to = cluster.move_empty_slot(slot);
    let e = redis::cmd("EXEC").query::<Value>(&mut c).unwrap_err();
    assert_eq!(e.code(), Some("EXECABORT"), "{e}");
    let n: i64 = redis::cmd("EXISTS")
        .arg("{mv}a")
        .arg("{mv}b")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 0, "nothing of the aborted transaction applied");
    // The retried transaction goes to the new owner.
    let mut pipe = redis::pipe();
    pipe.atomic().set("{mv}a", 1).set("{mv}b", 2);
    let _: () = pipe.query(&mut c).unwrap();
    assert_eq!(cluster.cli(to, &["get", "{mv}b"]).trim(), "2");
}

#[test]
fn blocking_commands_never_stall_other_clients() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let url = format!("redis://{}/", proxy.addr);
    // Several clients blocked at once.
    let blocked: Vec<_> = (0..4)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url.as_str())
                    .unwrap()
                    .get_connection()
                    .unwrap();
                let t = Instant::now();
                let v: Option<(String, String)> = redis::cmd("BLPOP")
                    .arg(format!("blk:{i}"))
                    .arg(3)
                    .query(&mut c)
                    .unwrap();
                (v, t.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut c = proxy.conn();
    let t = Instant::now();
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("free:{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "others stalled: {:?}",
        t.elapsed()
    );
    // INFO counts the clients blocked at the proxy, as one server would.
    let clients: String = q(&mut c, &["INFO", "clients"]);
    assert!(clients.contains("blocked_clients:4\r\n"), "{clients}");
    let _: i64 = redis::cmd("RPUSH")
        .arg("blk:0")
        .arg("x")
        .query(&mut c)
        .unwrap();
    for (i, h) in blocked.into_iter().enumerate() {
        let (v, took) = h.join().unwrap();
        if i == 0 {
            assert_eq!(v, Some(("blk:0".into(), "x".into())));
            assert!(took < Duration::from_secs(2));
        } else {
            assert_eq!(v, None, "timeout honoured");
            assert!(
                took >= Duration::from_millis(2900) && took < Duration::from_secs(6),
                "{took:?}"
            );
        }
    }
    // Other blocking forms.
    let _: i64 = redis::cmd("ZADD")
        .arg("bz")
        .arg(1)
        .arg("m")
        .query(&mut c)
        .unwrap();
    let v: Value = redis::cmd("BZPOPMIN")
        .arg("bz")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert!(matches!(v, Value::Array(ref a) if a.len() == 3), "{v:?}");
    let _: i64 = redis::cmd("RPUSH")
        .arg("{m}src")
        .arg("y")
        .query(&mut c)
        .unwrap();
    let v: String = redis::cmd("BLMOVE")
        .arg(&["{m}src", "{m}dst", "LEFT", "RIGHT", "1"])
        .query(&mut c)
        .unwrap();
    assert_eq!(v, "y");
    let v: Value = redis::cmd("XREAD")
        .arg(&["BLOCK", "200", "STREAMS", "nostream", "$"])
        .query(&mut c)
        .unwrap();
    assert_eq!(v, Value::Nil);

    // A client that leaves while blocked frees its node.
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.write_all(b"*3\r\n$5\r\nBLPOP\r\n$6\r\ngone:1\r\n$1\r\n0\r\n")
        .unwrap();
    let owner = cluster.node_for_slot(key_slot(b"gone:1"));
    wait_until(Duration::from_secs(5), "client blocked on the node", || {
        cluster
            .cli(owner, &["info", "clients"])
            .contains("blocked_clients:1")
    });
    drop(s);
    wait_until(Duration::from_secs(5), "blocked connection closed", || {
        cluster
            .cli(owner, &["info", "clients"])
            .contains("blocked_clients:0")
    });
}

/// Reads RESP frames from a raw subscriber socket until `want` appears.
fn read_until(s: &mut TcpStream, want: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                if seen.contains(want) {
                    return seen;
                }
            }
            Err(_) => {}
        }
    }
    panic!("{want:?} not received; got {seen:?}");
}

/// Everything `s` receives within `window`.
fn read_for(s: &mut TcpStream, window: Duration) -> String {
    let deadline = Instant::now() + window;
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = s.read(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    seen
}

/// A subscriber connection that has sent `verb` (SUBSCRIBE or PSUBSCRIBE)
/// for `name` and got its confirmation.
fn subscribed_to(proxy: &Proxy, verb: &str, name: &str) -> TcpStream {
    let mut sub = TcpStream::connect(proxy.addr).unwrap();
    sub.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let req = format!(
        "*2\r\n${}\r\n{verb}\r\n${}\r\n{name}\r\n",
        verb.len(),
        name.len()
    );
    sub.write_all(req.as_bytes()).unwrap();
    let verb = verb.to_ascii_lowercase();
    let confirmed = format!("{verb}\r\n${}\r\n{name}\r\n:1\r\n", name.len());
    read_until(&mut sub, &confirmed, Duration::from_secs(5));
    sub
}

/// A subscriber connection that has PSUBSCRIBEd `pattern`.
fn psubscribed(proxy: &Proxy, pattern: &str) -> TcpStream {
    subscribed_to(proxy, "PSUBSCRIBE", pattern)
}

#[test]
fn keyspace_events_arrive_from_every_master_exactly_once() {
    let cluster = Cluster::start_with(3, 0, &["--notify-keyspace-events", "KEA"]);
    let proxy = Proxy::start(cluster.seeds());
    // One key on each master.
    let keys = cluster.key_on_each_master("ks");
    let mut events = psubscribed(&proxy, "__keyspace@0__:ks:*");
    let mut everything = psubscribed(&proxy, "*");
    // Right after the confirmation: every master's events are subscribed.
    let mut c = proxy.conn();
    for k in &keys {
        let _: () = q(&mut c, &["SET", k, "v"]);
    }
    let n: i64 = q(&mut c, &["PUBLISH", "news", "hello-once"]);
    assert!(n >= 1, "PUBLISH reached the subscriber's master");
    let got = read_for(&mut events, Duration::from_secs(1));
    let all = read_for(&mut everything, Duration::from_secs(1));
    for k in &keys {
        let channel = format!("__keyspace@0__:{k}");
        let event = format!("${}\r\n{channel}\r\n$3\r\nset\r\n", channel.len());
        assert_eq!(got.matches(&event).count(), 1, "{k} on {got:?}");
        assert_eq!(all.matches(&event).count(), 1, "{k} on {all:?}");
        let keyevent = format!("__keyevent@0__:set\r\n${}\r\n{k}\r\n", k.len());
        assert_eq!(all.matches(&keyevent).count(), 1, "{k} on {all:?}");
    }
    // A published message reaches every node, and the subscriber once.
    assert_eq!(all.matches("hello-once").count(), 1, "{all:?}");
    assert!(!got.contains("hello-once"), "{got:?}");
    // Unsubscribed: no more events, from any master.
    events.write_all(b"*1\r\n$12\r\nPUNSUBSCRIBE\r\n").unwrap();
    read_until(&mut events, "punsubscribe", Duration::from_secs(5));
    for k in &keys {
        let _: () = q(&mut c, &["SET", k, "w"]);
    }
    let after = read_for(&mut events, Duration::from_millis(500));
    assert!(!after.contains("pmessage"), "{after:?}");
}

/// A subscriber connection that has SUBSCRIBEd `channel`.
fn subscribed(proxy: &Proxy, channel: &str) -> TcpStream {
    subscribed_to(proxy, "SUBSCRIBE", channel)
}

#[test]
fn publish_counts_subscribers_through_every_proxy() {
    let cluster = Cluster::start(3, 0);
    let one = Proxy::start(cluster.seeds());
    let two = Proxy::start(cluster.seeds());
    let mut c = one.conn();
    // Nobody listens yet.
    assert_eq!(q::<i64>(&mut c, &["PUBLISH", "news", "first"]), 0);
    let mut a = subscribed(&one, "news");
    let mut b = subscribed(&two, "news");
    // Two subscribers, one through each proxy: as one server counts them.
    assert_eq!(q::<i64>(&mut c, &["PUBLISH", "news", "hello"]), 2);
    // A pattern that matches counts too, wherever the channel lives.
    let mut p = psubscribed(&two, "n*");
    assert_eq!(q::<i64>(&mut c, &["PUBLISH", "news", "again"]), 3);
    for (name, s) in [("a", &mut a), ("b", &mut b)] {
        let got = read_for(s, Duration::from_millis(500));
        assert_eq!(got.matches("again").count(), 1, "{name}: {got:?}");
    }
    let got = read_for(&mut p, Duration::from_millis(500));
    assert_eq!(got.matches("again").count(), 1, "{got:?}");
    // PUBSUB across the cluster.
    let numsub: Vec<Value> = q(&mut c, &["PUBSUB", "NUMSUB", "news", "other"]);
    assert_eq!(
        numsub,
        [
            Value::BulkString(b"news".to_vec()),
            Value::Int(2),
            Value::BulkString(b"other".to_vec()),
            Value::Int(0)
        ]
    );
    assert_eq!(q::<Vec<String>>(&mut c, &["PUBSUB", "CHANNELS"]), ["news"]);
    assert_eq!(q::<i64>(&mut c, &["PUBSUB", "NUMPAT"]), 1);
    // Unsubscribed: the count follows.
    a.write_all(b"*1\r\n$11\r\nUNSUBSCRIBE\r\n").unwrap();
    read_until(&mut a, "unsubscribe", Duration::from_secs(5));
    wait_until(Duration::from_secs(5), "one subscriber left", || {
        q::<i64>(&mut c, &["PUBLISH", "news", "last"]) == 2
    });
}

#[test]
fn monitor_streams_every_request_through_the_proxy() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let mut mon = TcpStream::connect(proxy.addr).unwrap();
    mon.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    mon.write_all(b"*1\r\n$7\r\nMONITOR\r\n").unwrap();
    read_until(&mut mon, "+OK\r\n", Duration::from_secs(5));
    let mut c = proxy.conn();
    // Keys on every master, a fan-out and a local command: all of them.
    for i in 0..10 {
        let _: () = q(&mut c, &["SET", &format!("mon:{i}"), "v \"1\""]);
    }
    let _: Vec<Option<String>> = q(&mut c, &["MGET", "mon:1", "mon:2"]);
    let _: String = q(&mut c, &["PING"]);
    let got = read_until(&mut mon, "\"PING\"", Duration::from_secs(5));
    for i in 0..10 {
        let line = format!("\"SET\" \"mon:{i}\" \"v \\\"1\\\"\"\r\n");
        assert_eq!(got.matches(&line).count(), 1, "{line} in {got}");
    }
    assert!(got.contains("\"MGET\" \"mon:1\" \"mon:2\""), "{got}");
    let from = "[0 127.0.0.1:";
    assert!(
        got.lines()
            .filter(|l| l.starts_with('+'))
            .all(|l| l.contains(from) || l == "+OK"),
        "{got}"
    );
    // The monitor leaves: nothing more is recorded for it, nothing breaks.
    drop(mon);
    let _: () = q(&mut c, &["SET", "after", "1"]);
}

#[test]
fn subscriptions_survive_failover() {
    let mut cluster = Cluster::start_with(3, 1, &["--cluster-node-timeout", "2000"]);
    let proxy = Proxy::start(cluster.seeds());
    let mut sub = TcpStream::connect(proxy.addr).unwrap();
    sub.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    sub.write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nnews\r\n")
        .unwrap();
    read_until(
        &mut sub,
        "subscribe\r\n$4\r\nnews\r\n:1",
        Duration::from_secs(5),
    );
    // The master holding the subscription; a shard channel it owns too.
    let holder = cluster
        .master_ports()
        .into_iter()
        .find(|&p| {
            cluster
                .cli(p, &["pubsub", "numsub", "news"])
                .contains("\n1")
        })
        .expect("a master holds the subscription");
    let shard = (0..)
        .map(|i| format!("shard{i}"))
        .find(|ch| cluster.node_for_slot(key_slot(ch.as_bytes())) == holder)
        .unwrap();
    let ssub = format!("*2\r\n$10\r\nSSUBSCRIBE\r\n${}\r\n{shard}\r\n", shard.len());
    sub.write_all(ssub.as_bytes()).unwrap();
    read_until(
        &mut sub,
        &format!("ssubscribe\r\n${}\r\n{shard}\r\n:1", shard.len()),
        Duration::from_secs(5),
    );
    cluster.kill_node(holder);
    let mut c = proxy.conn();
    // Messages flow again once the replicas are promoted and the proxy re-subscribed.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut got = String::new();
    while Instant::now() < deadline
        && !(got.contains("after-failover") && got.contains("shard-after"))
    {
        let _ = redis::cmd("PUBLISH")
            .arg("news")
            .arg("after-failover")
            .query::<i64>(&mut c);
        let _ = redis::cmd("SPUBLISH")
            .arg(&shard)
            .arg("shard-after")
            .query::<i64>(&mut c);
        let mut buf = [0u8; 4096];
        if let Ok(n) = sub.read(&mut buf) {
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(
        got.contains("message\r\n$4\r\nnews\r\n$14\r\nafter-failover"),
        "{got:?}"
    );
    assert!(
        got.contains(&format!(
            "smessage\r\n${}\r\n{shard}\r\n$11\r\nshard-after",
            shard.len()
        )),
        "{got:?}"
    );
    // Re-subscription is invisible: no second confirmation reached the client.
    assert!(!got.contains("subscribe\r\n"), "{got:?}");
    // RESP2 subscribed mode allows only subscription commands and PING.
    sub.write_all(b"*1\r\n$3\r\nGET\r\n*1\r\n$4\r\nPING\r\n")
        .unwrap();
    read_until(&mut sub, "$4\r\npong\r\n$0\r\n\r\n", Duration::from_secs(5));
}

#[test]
fn wait_counts_the_replicas_that_have_the_clients_writes() {
    let cluster = Cluster::start(3, 1);
    let proxy = Proxy::start(cluster.seeds());
    let mut c = proxy.conn();
    for i in 0..20 {
        let _: () = redis::cmd("SET")
            .arg(format!("w:{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let n: i64 = redis::cmd("WAIT").arg(1).arg(2000).query(&mut c).unwrap();
    assert_eq!(n, 1, "every master's replica acknowledged");
    let t = Instant::now();
    let n: i64 = redis::cmd("WAIT").arg(2).arg(300).query(&mut c).unwrap();
    assert_eq!(n, 1, "only one replica per master");
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "timeout honoured"
    );
    // The markers expire; only the client's keys remain.
    wait_until(Duration::from_secs(5), "markers expired", || {
        redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap() == 20
    });
}

#[test]
fn pooled_dedicated_connections_closed_by_the_node_are_not_reused() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let mut c = proxy.conn();
    let owner = cluster.node_for_slot(key_slot(b"pool:l"));
    for round in 0..3 {
        // A BLPOP that times out leaves its connection idle in the pool...
        let v: Option<(String, String)> = redis::cmd("BLPOP")
            .arg("pool:l")
            .arg(1)
            .query(&mut c)
            .unwrap();
        assert_eq!(v, None, "round {round}");
        // ...and the node closes every client connection meanwhile.
        cluster.cli(
            owner,
            &["client", "kill", "type", "normal", "skipme", "yes"],
        );
        let _: i64 = redis::cmd("RPUSH")
            .arg("pool:l")
            .arg("x")
            .query(&mut c)
            .unwrap();
        let v: Option<(String, String)> = redis::cmd("BLPOP")
            .arg("pool:l")
            .arg(1)
            .query(&mut c)
            .unwrap();
        assert_eq!(v, Some(("pool:l".into(), "x".into())), "round {round}");
        cluster.cli(
            owner,
            &["client", "kill", "type", "normal", "skipme", "yes"],
        );
    }
}

#[test]
fn noscript_is_healed_transparently() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let mut c = proxy.conn();
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.call('GET', KEYS[1])")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("ns:k")
        .arg("v")
        .query(&mut c)
        .unwrap();
    // The owning node loses its scripts (a restart, a failover to a replica
    // that never saw SCRIPT LOAD).
    let owner = cluster.node_for_slot(key_slot(b"ns:k"));
    cluster.cli(owner, &["script", "flush"]);
    let v: String = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg("ns:k")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, "v");
    assert!(cluster
        .cli(owner, &["script", "exists", &sha])
        .trim()
        .starts_with('1'));
    // An unknown script still gets NOSCRIPT.
    let e = redis::cmd("EVALSHA")
        .arg("0123456789012345678901234567890123456789")
        .arg(0)
        .query::<Value>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("NOSCRIPT"), "{e}");
    // A script the client flushed through the proxy is not healed back.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut c).unwrap();
    let e = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg("ns:k")
        .query::<Value>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("NOSCRIPT"), "{e}");
}

#[test]
fn shard_subscriptions_follow_their_slot() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let ch = "moving-channel";
    let slot = key_slot(ch.as_bytes());
    let mut sub = TcpStream::connect(proxy.addr).unwrap();
    sub.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let ssub = format!("*2\r\n$10\r\nSSUBSCRIBE\r\n${}\r\n{ch}\r\n", ch.len());
    sub.write_all(ssub.as_bytes()).unwrap();
    read_until(
        &mut sub,
        &format!("ssubscribe\r\n${}\r\n{ch}\r\n:1", ch.len()),
        Duration::from_secs(5),
    );
    // The (empty) slot moves to another master.
    let to = cluster.move_empty_slot(slot);
    let mut c = proxy.conn();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = String::new();
    while Instant::now() < deadline && !got.contains("after-move") {
        let _ = redis::cmd("SPUBLISH")
            .arg(ch)
            .arg("after-move")
            .query::<i64>(&mut c);
        let mut buf = [0u8; 4096];
        if let Ok(n) = sub.read(&mut buf) {
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(got.contains("after-move"), "{got:?}");
    assert!(
        !got.contains("sunsubscribe"),
        "the move is invisible: {got:?}"
    );
    assert!(cluster
        .cli(to, &["pubsub", "shardnumsub", ch])
        .contains("\n1"));
}

/// A client idle long enough for its session to give back its buffers and
/// futures (about a second) keeps its state: name, RESP3, WATCH and
/// subscriptions, and pipelines as before.
#[test]
fn idle_clients_keep_their_state() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let mut con = proxy.conn();
    let _: () = q(&mut con, &["CLIENT", "SETNAME", "sleeper"]);
    let _: () = q(&mut con, &["SET", "idle:w", "1"]);
    let _: () = q(&mut con, &["WATCH", "idle:w"]);
    let mut raw = proxy.raw();
    raw.write_all(b"HELLO 3\r\n").unwrap();
    read_until(&mut raw, "proto", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(
        q::<String>(&mut con, &["CLIENT", "GETNAME"]),
        "sleeper",
        "name kept"
    );
    // The WATCH is still in force.
    let _: () = q(&mut con, &["MULTI"]);
    let _: () = q(&mut con, &["SET", "idle:w", "2"]);
    let done: Value = q(&mut con, &["EXEC"]);
    assert!(
        matches!(done, Value::Array(ref v) if v.len() == 1),
        "{done:?}"
    );
    // RESP3 is kept: a map reply comes back as a map (`%`).
    raw.write_all(b"HSET idle:h f v\r\nHGETALL idle:h\r\n")
        .unwrap();
    let text = read_until(&mut raw, "%1", Duration::from_secs(5));
    assert!(text.contains("%1"), "{text:?}");
    // A pipeline after another idle spell comes back whole and in order.
    std::thread::sleep(Duration::from_millis(1600));
    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.cmd("SET").arg(format!("idle:{i}")).arg(i).ignore();
    }
    for i in 0..500 {
        pipe.cmd("GET").arg(format!("idle:{i}"));
    }
    let got: Vec<i64> = pipe.query(&mut con).unwrap();
    assert_eq!(got, (0..500).collect::<Vec<_>>());
    // No WATCH any more, so this session was released meanwhile too.
    assert_eq!(q::<String>(&mut con, &["CLIENT", "GETNAME"]), "sleeper");
}

#[test]
fn unix_socket_clients_are_served_like_tcp_ones() {
    let cluster = Cluster::start(3, 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slotproxy.sock");
    // A socket file left behind by a proxy that is gone is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let sock = path.clone();
    let proxy = Proxy::start_with(cluster.seeds(), move |c| {
        c.frontend.unix_socket = Some(sock);
        c.frontend.unix_socket_mode = 0o600;
        // Every request goes to the slow log (checked below).
        c.frontend.slowlog_threshold = Duration::ZERO;
    });
    {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let mut con = redis::Client::open(format!("redis+unix://{}", path.display()))
        .unwrap()
        .get_connection()
        .unwrap();
    con.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // Routed, fanned out and merged in order, pipelined: as over TCP.
    let keys: Vec<String> = (0..20).map(|i| format!("unix:{i}")).collect();
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("SET").arg(k).arg(format!("v-{k}")).ignore();
    }
    let () = pipe.query(&mut con).unwrap();
    let got: Vec<String> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
    let want: Vec<String> = keys.iter().map(|k| format!("v-{k}")).collect();
    assert_eq!(got, want);
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("GET").arg(k);
    }
    let got: Vec<String> = pipe.query(&mut con).unwrap();
    assert_eq!(got, want);
    // Listed as Redis lists a Unix socket client; CLUSTER SLOTS announces
    // the TCP listener, the one address a cluster client could use.
    let info: String = q(&mut con, &["CLIENT", "INFO"]);
    assert!(
        info.contains(&format!("addr={}:0 ", path.display())),
        "{info}"
    );
    assert!(info.contains("flags=U "), "{info}");
    let slots: Value = q(&mut con, &["CLUSTER", "SLOTS"]);
    assert!(
        format!("{slots:?}").contains(&format!("int({})", proxy.port())),
        "{slots:?}"
    );
    // The slow log names the client as Redis would.
    let slow: Value = q(&mut con, &["SLOWLOG", "GET", "3"]);
    let want = format!("{}:0", path.display());
    assert!(format!("{slow:?}").contains(&want), "{slow:?}");
    // A real client.
    let out = Command::new(common::cli_bin())
        .args(["-s", path.to_str().unwrap(), "GET", "unix:3"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v-unix:3");

    // A second proxy may not take a socket that is in use, nor replace a
    // file that is not a socket.
    let regular = dir.path().join("not-a-socket");
    std::fs::write(&regular, "keep me").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (at, why) in [
        (&path, "another process accepts connections on it"),
        (&regular, "is not a socket"),
    ] {
        let mut config = slotproxy::config::Config::default();
        config.frontend.listen = "127.0.0.1:0".into();
        config.frontend.unix_socket = Some(at.clone());
        config.cluster.seeds = cluster.seeds();
        let e = rt
            .block_on(slotproxy::server::Server::start(&config))
            .err()
            .expect("refused");
        assert!(e.to_string().contains(why), "{e}");
    }
    assert_eq!(std::fs::read_to_string(&regular).unwrap(), "keep me");
    let got: String = q(&mut con, &["GET", "unix:0"]);
    assert_eq!(got, "v-unix:0", "the running proxy still serves");

    // The proxy removes its socket file when it stops.
    drop(con);
    drop(proxy);
    assert!(!path.exists());
}
