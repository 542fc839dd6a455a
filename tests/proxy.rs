//! The data path against real Redis Clusters: every data type, slot
//! routing, ordered pipelines, inline commands, malformed and oversize input.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::proxy::{closed_by_peer, exchange, Proxy};
use common::{err, q, Cluster};
use redis::Value;
use slotproxy::cluster::slot::key_slot;

#[test]
fn every_data_type_through_the_proxy() {
    let cluster = Cluster::start(3, 1);
    let proxy = Proxy::start(cluster.seeds());
    let mut c = proxy.conn();

    // Strings and expiry.
    let _: () = q(&mut c, &["SET", "str", "hello"]);
    assert_eq!(q::<String>(&mut c, &["GET", "str"]), "hello");
    assert_eq!(q::<i64>(&mut c, &["APPEND", "str", " world"]), 11);
    assert_eq!(q::<String>(&mut c, &["GETRANGE", "str", "0", "4"]), "hello");
    assert_eq!(q::<i64>(&mut c, &["INCRBY", "counter", "5"]), 5);
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "fl", "1.5"]), "1.5");
    let _: () = q(&mut c, &["SET", "ttl", "v", "EX", "100"]);
    let ttl: i64 = q(&mut c, &["TTL", "ttl"]);
    assert!((1..=100).contains(&ttl));
    assert_eq!(q::<i64>(&mut c, &["PERSIST", "ttl"]), 1);
    assert_eq!(q::<i64>(&mut c, &["TTL", "ttl"]), -1);
    assert_eq!(q::<i64>(&mut c, &["PEXPIRE", "ttl", "50"]), 1);
    common::wait_until(Duration::from_secs(5), "key expires", || {
        q::<i64>(&mut proxy.conn(), &["EXISTS", "ttl"]) == 0
    });
    // Same-slot multi-key commands.
    let _: () = q(&mut c, &["MSET", "{u1}a", "1", "{u1}b", "2"]);
    assert_eq!(
        q::<Vec<String>>(&mut c, &["MGET", "{u1}a", "{u1}b"]),
        ["1", "2"]
    );
    assert_eq!(q::<i64>(&mut c, &["DEL", "{u1}a", "{u1}b", "{u1}c"]), 2);

    // Hashes.
    assert_eq!(q::<i64>(&mut c, &["HSET", "h", "f1", "v1", "f2", "v2"]), 2);
    assert_eq!(q::<String>(&mut c, &["HGET", "h", "f1"]), "v1");
    let all: HashMap<String, String> = q(&mut c, &["HGETALL", "h"]);
    assert_eq!(all.len(), 2);
    assert_eq!(q::<i64>(&mut c, &["HINCRBY", "h", "n", "3"]), 3);

    // Lists.
    assert_eq!(q::<i64>(&mut c, &["RPUSH", "l", "a", "b", "c"]), 3);
    assert_eq!(
        q::<Vec<String>>(&mut c, &["LRANGE", "l", "0", "-1"]),
        ["a", "b", "c"]
    );
    assert_eq!(q::<String>(&mut c, &["LPOP", "l"]), "a");
    assert_eq!(
        q::<Option<String>>(&mut c, &["LMOVE", "{x}l1", "{x}l2", "LEFT", "RIGHT"]),
        None,
        "LMOVE of a missing list is nil"
    );

    // Sets.
    assert_eq!(q::<i64>(&mut c, &["SADD", "s", "a", "b", "c"]), 3);
    assert_eq!(q::<i64>(&mut c, &["SCARD", "s"]), 3);
    assert_eq!(q::<i64>(&mut c, &["SISMEMBER", "s", "b"]), 1);
    let _: i64 = q(&mut c, &["SADD", "{t}s2", "b", "z"]);
    let _: i64 = q(&mut c, &["SADD", "{t}s3", "b", "y"]);
    assert_eq!(
        q::<Vec<String>>(&mut c, &["SINTER", "{t}s2", "{t}s3"]),
        ["b"]
    );

    // Sorted sets.
    assert_eq!(
        q::<i64>(&mut c, &["ZADD", "z", "1", "a", "2", "b", "3", "c"]),
        3
    );
    assert_eq!(
        q::<Vec<String>>(&mut c, &["ZRANGEBYSCORE", "z", "2", "+inf"]),
        ["b", "c"]
    );
    assert_eq!(q::<i64>(&mut c, &["ZRANK", "z", "c"]), 2);

    // Streams.
    let id: String = q(&mut c, &["XADD", "stream", "*", "field", "value"]);
    assert!(id.contains('-'));
    assert_eq!(q::<i64>(&mut c, &["XLEN", "stream"]), 1);
    let _: () = q(&mut c, &["XGROUP", "CREATE", "stream", "g", "0"]);
    let read: Value = q(
        &mut c,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c1",
            "COUNT",
            "10",
            "STREAMS",
            "stream",
            ">",
        ],
    );
    assert!(
        matches!(read, Value::Array(ref a) if a.len() == 1),
        "{read:?}"
    );
    let read: Value = q(&mut c, &["XREAD", "STREAMS", "stream", "0"]);
    assert!(
        matches!(read, Value::Array(ref a) if a.len() == 1),
        "{read:?}"
    );

    // HyperLogLog.
    assert_eq!(q::<i64>(&mut c, &["PFADD", "hll", "a", "b", "c", "a"]), 1);
    assert_eq!(q::<i64>(&mut c, &["PFCOUNT", "hll"]), 3);

    // Bitmaps.
    assert_eq!(q::<i64>(&mut c, &["SETBIT", "bits", "7", "1"]), 0);
    assert_eq!(q::<i64>(&mut c, &["BITCOUNT", "bits"]), 1);
    assert_eq!(q::<i64>(&mut c, &["GETBIT", "bits", "7"]), 1);
    let bf: Vec<i64> = q(&mut c, &["BITFIELD", "bf", "INCRBY", "u8", "0", "200"]);
    assert_eq!(bf, [200]);

    // Geo.
    assert_eq!(
        q::<i64>(
            &mut c,
            &[
                "GEOADD",
                "geo",
                "13.361389",
                "38.115556",
                "Palermo",
                "15.087269",
                "37.502669",
                "Catania"
            ]
        ),
        2
    );
    let dist: String = q(&mut c, &["GEODIST", "geo", "Palermo", "Catania", "km"]);
    assert!(dist.starts_with("166.27"), "{dist}");

    // Scripts routed by their keys.
    assert_eq!(
        q::<String>(
            &mut c,
            &["EVAL", "return redis.call('GET', KEYS[1])", "1", "str"]
        ),
        "hello world"
    );
    assert_eq!(q::<i64>(&mut c, &["EVAL", "return 7", "0"]), 7);

    // Keys really live on the master that owns their slot.
    for key in ["str", "h", "l", "s", "z", "stream", "hll", "bits", "geo"] {
        let port = cluster.node_for_slot(key_slot(key.as_bytes()));
        assert_eq!(
            cluster.cli(port, &["EXISTS", key]).trim(),
            "1",
            "{key} on {port}"
        );
    }
}

/// Sends `frame` to `port` on a fresh connection and reads one reply, as
/// the bytes the server sent.
fn one_reply(port: u16, frame: &[u8]) -> Vec<u8> {
    use std::io::Read;
    use tokio_util::codec::Decoder;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(frame).unwrap();
    let mut decoder = slotproxy::resp::ReplyDecoder::new();
    let mut buf = bytes::BytesMut::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Some(reply) = decoder.decode(&mut buf).unwrap() {
            return reply.to_vec();
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed before the reply");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn deeply_nested_replies_pass_through_as_the_node_sent_them() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    // A self-referencing table: Redis nests arrays until its Lua stack
    // limit, thousands deep.
    let eval = redis::cmd("EVAL")
        .arg("local t = {}; t[1] = t; return t")
        .arg(0)
        .get_packed_command();
    let direct = one_reply(cluster.master_ports()[0], &eval);
    assert!(direct.len() > 4 * 1000, "{} bytes", direct.len());
    let through = one_reply(proxy.addr.port(), &eval);
    assert_eq!(through, direct);
}

#[test]
fn thousand_keys_across_all_masters() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let mut c = proxy.conn();
    let mut per_master: HashMap<u16, usize> = HashMap::new();
    for i in 0..1000 {
        let key = format!("key:{i}");
        let _: () = q(&mut c, &["SET", &key, &i.to_string()]);
        *per_master
            .entry(cluster.node_for_slot(key_slot(key.as_bytes())))
            .or_default() += 1;
    }
    assert_eq!(per_master.len(), 3, "keys spread over every master");
    for i in 0..1000 {
        let key = format!("key:{i}");
        assert_eq!(q::<String>(&mut c, &["GET", &key]), i.to_string());
    }
    // Each master holds exactly the keys of its slots.
    for (port, n) in per_master {
        assert_eq!(cluster.cli(port, &["DBSIZE"]).trim(), n.to_string());
    }
}

#[test]
fn ten_thousand_command_pipeline_keeps_order() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let mut c = proxy.conn();
    let mut pipe = redis::pipe();
    for i in 0..5000 {
        let key = format!("p:{}", i % 97);
        pipe.cmd("INCR").arg(&key);
        pipe.cmd("GET").arg(&key);
    }
    let replies: Vec<Value> = pipe.query(&mut c).expect("pipeline");
    assert_eq!(replies.len(), 10_000);
    let mut expected: HashMap<usize, i64> = HashMap::new();
    for i in 0..5000 {
        let n = expected.entry(i % 97).or_default();
        *n += 1;
        assert_eq!(replies[2 * i], Value::Int(*n), "INCR reply {i}");
        assert_eq!(
            replies[2 * i + 1],
            Value::BulkString(n.to_string().into_bytes()),
            "GET reply {i}"
        );
    }
}

#[test]
fn one_write_mixing_every_kind_of_command_keeps_order_and_effects() {
    // Forwards of one read are grouped per node and sent together; fan-outs,
    // local commands, transactions and blocking commands in the same read
    // must still see every earlier write.
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let mut c = proxy.conn();
    let mut pipe = redis::pipe();
    for i in 0..30 {
        pipe.cmd("SET").arg(format!("mix:{i}")).arg(i);
    }
    pipe.cmd("INCR").arg("mix:0");
    pipe.cmd("MGET").arg("mix:0").arg("mix:1").arg("mix:none");
    pipe.cmd("PING");
    pipe.cmd("RPUSH").arg("mix:list").arg("v");
    pipe.cmd("BLPOP").arg("mix:list").arg(1);
    pipe.cmd("SET").arg("{mix}t").arg(1);
    pipe.cmd("MULTI");
    pipe.cmd("INCR").arg("{mix}t");
    pipe.cmd("EXEC");
    pipe.cmd("DEL").arg("mix:1").arg("mix:2").arg("mix:29");
    pipe.cmd("EXISTS").arg("mix:1").arg("mix:3");
    pipe.cmd("GET").arg("{mix}t");
    let replies: Vec<Value> = pipe.query(&mut c).expect("pipeline");
    let ok = || Value::Okay;
    let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
    let mut want: Vec<Value> = (0..30).map(|_| ok()).collect();
    want.extend([
        Value::Int(1),
        Value::Array(vec![bulk("1"), bulk("1"), Value::Nil]),
        Value::SimpleString("PONG".into()),
        Value::Int(1),
        Value::Array(vec![bulk("mix:list"), bulk("v")]),
        ok(),
        ok(),
        Value::SimpleString("QUEUED".into()),
        Value::Array(vec![Value::Int(2)]),
        Value::Int(3),
        Value::Int(1),
        bulk("2"),
    ]);
    assert_eq!(replies, want);
}

#[test]
fn many_concurrent_clients() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    std::thread::scope(|s| {
        for t in 0..16 {
            let proxy = &proxy;
            s.spawn(move || {
                let mut c = proxy.conn();
                for i in 0..200 {
                    let key = format!("c:{t}:{i}");
                    let _: () = q(&mut c, &["SET", &key, &format!("{t}-{i}")]);
                    assert_eq!(q::<String>(&mut c, &["GET", &key]), format!("{t}-{i}"));
                }
            });
        }
    });
}

#[test]
fn local_commands_and_errors() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let mut c = proxy.conn();
    assert_eq!(q::<String>(&mut c, &["PING"]), "PONG");
    assert_eq!(q::<String>(&mut c, &["PING", "hi"]), "hi");
    assert_eq!(q::<String>(&mut c, &["ECHO", "e"]), "e");
    assert_eq!(q::<String>(&mut c, &["SELECT", "0"]), "OK");
    assert!(err(&mut c, &["SELECT", "1"]).contains("SELECT is not allowed in cluster mode"));
    for key in ["foo", "{user}1", "", "a{b}c"] {
        let real: i64 = q(
            &mut cluster.conn(cluster.ports()[0]),
            &["CLUSTER", "KEYSLOT", key],
        );
        assert_eq!(
            q::<i64>(&mut c, &["CLUSTER", "KEYSLOT", key]),
            real,
            "{key:?}"
        );
    }
    let count: i64 = q(&mut c, &["COMMAND", "COUNT"]);
    assert!(count >= 240);
    let info: Value = q(&mut c, &["COMMAND", "INFO", "get"]);
    assert!(matches!(info, Value::Array(ref a) if a.len() == 1));
    assert!(err(&mut c, &["MSETNX", "a", "1", "b", "2"]).contains("CROSSSLOT"));
    assert!(err(&mut c, &["RENAME", "a", "b"]).contains("CROSSSLOT"));
    assert!(err(&mut c, &["GET"]).contains("wrong number of arguments for 'get' command"));
    assert!(err(&mut c, &["NOSUCHCMD", "x"]).contains("unknown command 'NOSUCHCMD'"));
    // SCRIPT KILL reaches every master (nothing runs here), SCRIPT DEBUG is
    // node administration.
    assert!(err(&mut c, &["SCRIPT", "KILL"]).starts_with("NOTBUSY"));
    assert!(err(&mut c, &["SCRIPT", "DEBUG", "YES"]).contains("node administration"));
    assert!(err(&mut c, &["CLUSTER", "MEET", "a", "1"]).contains("node administration"));
    assert!(err(&mut c, &["OBJECT", "nope", "k"]).contains("unknown subcommand"));
    // The connection is still fine after errors.
    assert_eq!(q::<String>(&mut c, &["PING"]), "PONG");
}

#[test]
fn key_extraction_agrees_with_redis_command_getkeys() {
    let cluster = Cluster::start(1, 0);
    let proxy = Proxy::start(cluster.seeds());
    let mut direct = cluster.conn(cluster.ports()[0]);
    let mut via = proxy.conn();
    let corpus: &[&str] = &[
        "GET a",
        "SET a b EX 10",
        "MSET a 1 b 2 c 3",
        "MGET a b c d",
        "DEL a b",
        "EVAL s 3 k1 k2 k3 arg",
        "EVALSHA abc 1 k1",
        "FCALL f 2 k1 k2 a",
        "ZUNIONSTORE d 3 a b c WEIGHTS 1 2 3",
        "ZINTER 2 a b",
        "ZDIFFSTORE d 2 a b",
        "XREAD COUNT 2 STREAMS s1 s2 s3 0 0 0",
        "XREADGROUP GROUP g c COUNT 1 STREAMS s1 s2 > >",
        "SORT a BY w LIMIT 0 10 GET x STORE dst",
        "SORT_RO a BY w",
        "MIGRATE h 1 k 0 10",
        "MIGRATE h 1 \"\" 0 10 COPY REPLACE KEYS a b c",
        "GEORADIUS g 0 0 10 km STORE d",
        "GEORADIUSBYMEMBER g m 10 km STOREDIST d",
        "GEOSEARCHSTORE d s FROMMEMBER m BYRADIUS 1 km",
        "LMPOP 2 a b LEFT",
        "BLMPOP 0 2 a b LEFT",
        "ZMPOP 1 z MIN",
        "SINTERCARD 3 a b c LIMIT 1",
        "BITOP AND d a b c",
        "RENAME a b",
        "SMOVE a b m",
        "LMOVE a b LEFT RIGHT",
        "OBJECT ENCODING k",
        "MEMORY USAGE k",
        "XINFO STREAM s FULL",
        "PFMERGE d a b",
        "COPY a b",
        "TOUCH a b c",
        "RPOPLPUSH a b",
        "BZPOPMIN a b 0",
        "WATCH a b",
    ];
    for line in corpus {
        let mut args: Vec<String> = vec!["COMMAND".into(), "GETKEYS".into()];
        args.extend(line.split(' ').map(|a| {
            if a == "\"\"" {
                String::new()
            } else {
                a.to_string()
            }
        }));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let real: Vec<String> = q(&mut direct, &args);
        let ours: Vec<String> = q(&mut via, &args);
        assert_eq!(ours, real, "{line}");
    }
}

#[test]
fn inline_commands() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let mut s = proxy.raw();
    let expected = b"+PONG\r\n+OK\r\n$6\r\na b\tc\"\r\n$1\r\n1\r\n";
    let (out, _) = exchange(
        &mut s,
        b"PING\r\nset inline \"a b\\tc\\\"\"\n\r\n   \r\nget inline\r\nECHO '1'\r\n",
        expected.len(),
    );
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(expected)
    );
    let (out, closed) = exchange(&mut s, b"set x \"unbalanced\r\n", 1);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "-ERR Protocol error: unbalanced quotes in request\r\n"
    );
    assert!(closed || closed_by_peer(&mut s));
}

#[test]
fn malformed_and_oversize_input_is_rejected_without_hurting_others() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let mut bystander = proxy.conn();
    let _: () = q(&mut bystander, &["SET", "keep", "me"]);
    let cases: &[(&[u8], &str)] = &[
        (
            b"*1\r\nX\r\n",
            "-ERR Protocol error: expected '$', got 'X'\r\n",
        ),
        (
            b"*3000000000\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*x\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$600000000\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$-5\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$3\r\nabcde\r\n",
            "-ERR Protocol error: bulk string not terminated by CRLF\r\n",
        ),
    ];
    for (input, expected) in cases {
        let mut s = proxy.raw();
        // A good request first: its reply must come back before the error.
        let mut bytes = b"*1\r\n$4\r\nPING\r\n".to_vec();
        bytes.extend_from_slice(input);
        let want = format!("+PONG\r\n{expected}");
        let (out, _) = exchange(&mut s, &bytes, want.len());
        assert_eq!(
            String::from_utf8_lossy(&out),
            want,
            "input {:?}",
            String::from_utf8_lossy(input)
        );
        assert!(
            closed_by_peer(&mut s),
            "connection closed after {:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(q::<String>(&mut bystander, &["GET", "keep"]), "me");
    }
    // A huge inline line without a newline.
    let mut s = proxy.raw();
    let line = vec![b'a'; 70 * 1024];
    let (out, _) = exchange(&mut s, &line, 10);
    assert!(
        String::from_utf8_lossy(&out).starts_with("-ERR Protocol error: too big inline request")
    );
    // A large but legal value passes through untouched.
    let big = "v".repeat(3 * 1024 * 1024);
    let _: () = q(&mut bystander, &["SET", "big", &big]);
    assert_eq!(q::<String>(&mut bystander, &["GET", "big"]), big);
    // A client that disconnects mid-frame loses nothing for others.
    let mut s = proxy.raw();
    s.write_all(b"*2\r\n$3\r\nGET\r\n$100\r\nabc").unwrap();
    drop(s);
    assert_eq!(q::<String>(&mut bystander, &["GET", "keep"]), "me");
}

#[test]
fn redis_cli_works_for_every_data_type() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let port = proxy.port().to_string();
    let cli = |args: &[&str]| -> String {
        let out = Command::new(common::cli_bin())
            .args(["-p", &port])
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let cases: &[(&[&str], &str)] = &[
        (&["SET", "s", "v"], "OK"),
        (&["GET", "s"], "v"),
        (&["HSET", "h", "f", "v"], "1"),
        (&["HGET", "h", "f"], "v"),
        (&["LPUSH", "l", "x"], "1"),
        (&["LRANGE", "l", "0", "-1"], "x"),
        (&["SADD", "set", "m"], "1"),
        (&["SMEMBERS", "set"], "m"),
        (&["ZADD", "z", "1", "m"], "1"),
        (&["ZSCORE", "z", "m"], "1"),
        (&["XADD", "x", "1-1", "f", "v"], "1-1"),
        (&["XLEN", "x"], "1"),
        (&["PFADD", "p", "a"], "1"),
        (&["PFCOUNT", "p"], "1"),
        (&["SETBIT", "b", "1", "1"], "0"),
        (&["BITCOUNT", "b"], "1"),
        (&["GEOADD", "g", "13.361389", "38.115556", "P"], "1"),
        (&["GEOHASH", "g", "P"], "sqc8b49rny0"),
        (&["EXPIRE", "s", "100"], "1"),
        (&["PING"], "PONG"),
    ];
    for (args, want) in cases {
        assert_eq!(cli(args), *want, "{args:?}");
    }
}

#[test]
fn redis_benchmark_completes_without_errors() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &proxy.port().to_string(),
            "-c",
            "50",
            "-P",
            "16",
            "-n",
            "20000",
        ])
        .args(["-t", "set,get,incr,lpush,hset,sadd,zadd", "-q"])
        .output()
        .expect("run redis-benchmark");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let mut seen = HashSet::new();
    for line in stdout.split(['\r', '\n']) {
        assert!(
            !line.contains("ERR") && !line.contains("Error"),
            "error in benchmark: {line}"
        );
        if let Some((name, rest)) = line.trim().split_once(": ") {
            if rest.contains("requests per second") {
                seen.insert(name.to_string());
            }
        }
    }
    for t in ["SET", "GET", "INCR", "LPUSH", "HSET", "SADD", "ZADD"] {
        assert!(seen.contains(t), "{t} missing from {stdout}");
    }
}

#[test]
fn slot_hashing_matches_cluster_keyslot_of_a_real_node() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config as PropConfig, TestRunner};
    let cluster = Cluster::start(1, 0);
    let con = std::cell::RefCell::new(cluster.conn(cluster.ports()[0]));
    let keys = proptest::collection::vec(
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            "[a-z{}]{0,12}".prop_map(String::into_bytes),
            ("[a-z]{0,4}", "[a-z{]{0,5}", "[a-z}]{0,5}")
                .prop_map(|(a, b, c)| format!("{a}{{{b}}}{c}").into_bytes()),
        ],
        1..64,
    );
    let mut runner = TestRunner::new(PropConfig {
        cases: 64,
        ..PropConfig::default()
    });
    runner
        .run(&keys, |keys| {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("CLUSTER").arg("KEYSLOT").arg(k.as_slice());
            }
            let real: Vec<i64> = pipe.query(&mut *con.borrow_mut()).expect("CLUSTER KEYSLOT");
            for (k, slot) in keys.iter().zip(real) {
                prop_assert_eq!(i64::from(key_slot(k)), slot, "key {:?}", k);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn max_clients_and_seed_fallback() {
    let cluster = Cluster::start(3, 0);
    // The first seed is dead: discovery falls back to the next ones.
    let mut seeds = vec![format!("127.0.0.1:{}", common::free_port())];
    seeds.extend(cluster.seeds());
    let proxy = Proxy::start_with(seeds, |c| c.frontend.max_clients = 2);
    let mut a = proxy.raw();
    let mut b = proxy.raw();
    for s in [&mut a, &mut b] {
        let (out, _) = exchange(s, b"*1\r\n$4\r\nPING\r\n", 7);
        assert_eq!(out, b"+PONG\r\n");
    }
    let mut third = proxy.raw();
    let (out, _) = exchange(&mut third, b"", 36);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "-ERR max number of clients reached\r\n"
    );
    assert!(closed_by_peer(&mut third));
    drop(a);
    common::wait_until(Duration::from_secs(5), "a slot frees up", || {
        let mut s = proxy.raw();
        exchange(&mut s, b"*1\r\n$4\r\nPING\r\n", 7).0 == b"+PONG\r\n"
    });
}
