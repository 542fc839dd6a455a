//! Multi-key fan-out, cluster-wide commands and the emulated one-node
//! cluster, against real Redis Clusters.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::proxy::Proxy;
use common::{err, q, Cluster};
use redis::Value;

#[test]
fn multi_key_commands_merge_in_key_order() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let mut c = proxy.conn();
    let _: () = q(&mut c, &["MSET", "a", "1", "b", "2", "c", "3", "{a}x", "4"]);
    // Order, duplicates and missing keys.
    let got: Vec<Option<String>> = q(
        &mut c,
        &["MGET", "c", "a", "missing", "b", "a", "{a}x", "c"],
    );
    let want = [
        Some("3"),
        Some("1"),
        None,
        Some("2"),
        Some("1"),
        Some("4"),
        Some("3"),
    ];
    assert_eq!(got, want.map(|s| s.map(String::from)));
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "a", "b", "missing", "a"]), 3);
    assert_eq!(q::<i64>(&mut c, &["TOUCH", "a", "b", "c", "nope"]), 3);
    assert_eq!(q::<i64>(&mut c, &["UNLINK", "c", "nope"]), 1);
    assert_eq!(q::<i64>(&mut c, &["DEL", "a", "b", "c", "{a}x"]), 3);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "a", "b", "c", "{a}x"]), 0);

    // MSETNX: atomic within one slot, refused across slots.
    assert_eq!(q::<i64>(&mut c, &["MSETNX", "{n}1", "a", "{n}2", "b"]), 1);
    assert_eq!(q::<i64>(&mut c, &["MSETNX", "{n}2", "x", "{n}3", "c"]), 0);
    assert_eq!(q::<Option<String>>(&mut c, &["GET", "{n}3"]), None);
    assert!(err(&mut c, &["MSETNX", "p", "1", "q", "2"]).contains("CROSSSLOT"));
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "p", "q"]), 0);

    // Other multi-key commands across slots: the cluster's error, unchanged.
    for args in [
        &["RENAME", "a", "b"][..],
        &["SUNIONSTORE", "d", "a", "b"],
        &["LMOVE", "a", "b", "LEFT", "LEFT"],
        &["EVAL", "return 1", "2", "a", "b"],
    ] {
        assert!(err(&mut c, args).contains("CROSSSLOT"), "{args:?}");
    }
}

#[test]
fn thousand_key_mget_and_mset_across_all_slots() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let mut c = proxy.conn();
    let keys: Vec<String> = (0..1000).map(|i| format!("bulk:{i}")).collect();
    let slots: HashSet<u16> = keys
        .iter()
        .map(|k| slotproxy::cluster::slot::key_slot(k.as_bytes()))
        .collect();
    assert!(slots.len() > 900, "keys spread over many slots");
    let mut mset = redis::cmd("MSET");
    for (i, k) in keys.iter().enumerate() {
        mset.arg(k).arg(i);
    }
    let _: () = mset.query(&mut c).unwrap();
    let mut mget = redis::cmd("MGET");
    for k in &keys {
        mget.arg(k);
    }
    let vals: Vec<i64> = mget.query(&mut c).unwrap();
    assert_eq!(vals, (0..1000).collect::<Vec<i64>>());
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 1000);
    // Each master really holds its share.
    let per_node: i64 = cluster
        .master_ports()
        .iter()
        .map(|&p| cluster.cli(p, &["DBSIZE"]).trim().parse::<i64>().unwrap())
        .sum();
    assert_eq!(per_node, 1000);
    let mut del = redis::cmd("DEL");
    for k in &keys {
        del.arg(k);
    }
    assert_eq!(del.query::<i64>(&mut c).unwrap(), 1000);
}

#[test]
fn cluster_wide_commands() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let mut c = proxy.conn();
    for i in 0..30 {
        let _: () = q(&mut c, &["SET", &format!("cw:{i}"), "v"]);
    }
    let mut keys: Vec<String> = q(&mut c, &["KEYS", "cw:*"]);
    keys.sort();
    let mut want: Vec<String> = (0..30).map(|i| format!("cw:{i}")).collect();
    want.sort();
    assert_eq!(keys, want);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 30);
    let rk: String = q(&mut c, &["RANDOMKEY"]);
    assert!(rk.starts_with("cw:"));

    // Scripts reach every master, so EVALSHA works for keys anywhere.
    let sha: String = q(
        &mut c,
        &["SCRIPT", "LOAD", "return redis.call('GET', KEYS[1])"],
    );
    for i in 0..30 {
        assert_eq!(
            q::<String>(&mut c, &["EVALSHA", &sha, "1", &format!("cw:{i}")]),
            "v"
        );
    }
    assert_eq!(
        q::<Vec<i64>>(&mut c, &["SCRIPT", "EXISTS", &sha, "0000"]),
        [1, 0]
    );
    for p in cluster.master_ports() {
        assert!(cluster
            .cli(p, &["SCRIPT", "EXISTS", &sha])
            .trim()
            .starts_with('1'));
    }
    let _: () = q(&mut c, &["SCRIPT", "FLUSH"]);
    assert_eq!(q::<Vec<i64>>(&mut c, &["SCRIPT", "EXISTS", &sha]), [0]);

    // Functions.
    let lib = "#!lua name=plib\nredis.register_function('pget', function(keys) return redis.call('GET', keys[1]) end)";
    assert_eq!(q::<String>(&mut c, &["FUNCTION", "LOAD", lib]), "plib");
    assert_eq!(q::<String>(&mut c, &["FCALL", "pget", "1", "cw:3"]), "v");
    let list: Value = q(&mut c, &["FUNCTION", "LIST"]);
    assert!(format!("{list:?}").contains("plib"));
    // A backup's round trip: DUMP from one master, RESTORE on every one.
    let dump: Vec<u8> = q(&mut c, &["FUNCTION", "DUMP"]);
    let _: () = q(&mut c, &["FUNCTION", "FLUSH"]);
    assert!(err(&mut c, &["FCALL", "pget", "1", "cw:3"]).contains("Function not found"));
    let _: () = redis::cmd("FUNCTION")
        .arg("RESTORE")
        .arg(&dump)
        .query(&mut c)
        .unwrap();
    for i in 0..30 {
        let k = format!("cw:{i}");
        assert_eq!(q::<String>(&mut c, &["FCALL", "pget", "1", &k]), "v");
    }
    let _: () = q(&mut c, &["FUNCTION", "DELETE", "plib"]);
    assert!(err(&mut c, &["FCALL", "pget", "1", "cw:3"]).contains("Function not found"));

    // Keyless node commands with an answer at the proxy: it is one master,
    // and its last save is the oldest of the masters'.
    let role: Value = q(&mut c, &["ROLE"]);
    assert_eq!(
        format!("{role:?}"),
        format!(
            "{:?}",
            Value::Array(vec![
                Value::BulkString(b"master".to_vec()),
                Value::Int(0),
                Value::Array(vec![]),
            ])
        )
    );
    let oldest = cluster
        .master_ports()
        .into_iter()
        .map(|p| cluster.cli(p, &["LASTSAVE"]).trim().parse::<i64>().unwrap())
        .min()
        .unwrap();
    assert_eq!(q::<i64>(&mut c, &["LASTSAVE"]), oldest);

    // INFO: the proxy's section plus the keyspace summed over masters.
    let info: String = q(&mut c, &["INFO"]);
    assert!(info.starts_with("# Proxy\r\n"), "{info}");
    assert!(info.contains("cluster_masters:3\r\n"));
    // The command table came from the cluster's own COMMAND reply.
    assert!(info.contains("command_table_source:127.0.0.1:"), "{info}");
    assert!(info.contains("db0:keys=30,"), "{info}");
    let ks: String = q(&mut c, &["INFO", "keyspace"]);
    assert!(ks.starts_with("# Keyspace\r\ndb0:keys=30,"), "{ks}");
    // Every section asked for, in the order asked; replication and
    // persistence among them.
    let two: String = q(&mut c, &["INFO", "cpu", "replication"]);
    assert!(two.starts_with("# CPU\r\nused_cpu_sys:"), "{two}");
    assert!(
        two.contains("\r\n\r\n# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"),
        "{two}"
    );
    for args in [&["INFO"][..], &["INFO", "all"], &["INFO", "everything"]] {
        let all: String = q(&mut c, args);
        for section in ["# Persistence\r\n", "# Replication\r\n", "# Clients\r\n"] {
            assert!(all.contains(section), "{args:?}: {section} in {all}");
        }
        assert!(all.contains("rdb_changes_since_last_save:"), "{all}");
        assert!(all.contains("blocked_clients:0\r\n"), "{all}");
    }

    // CONFIG: GET answers, writes are refused unless allowed.
    let maxmem: Vec<String> = q(&mut c, &["CONFIG", "GET", "maxmemory"]);
    assert_eq!(maxmem[0], "maxmemory");
    assert!(err(&mut c, &["CONFIG", "SET", "maxmemory-samples", "7"])
        .contains("frontend.allow_config_write"));

    // FLUSHALL empties every master.
    let _: () = q(&mut c, &["FLUSHALL", "ASYNC"]);
    common::wait_until(Duration::from_secs(5), "flush", || {
        q::<i64>(&mut proxy.conn(), &["DBSIZE"]) == 0
    });
    let _: () = q(&mut c, &["FLUSHDB"]);
    assert_eq!(q::<Option<String>>(&mut c, &["RANDOMKEY"]), None);
}

#[test]
fn config_set_broadcasts_when_allowed() {
    let cluster = Cluster::start(3, 1);
    let proxy = Proxy::start_with(cluster.seeds(), |c| c.frontend.allow_config_write = true);
    let mut c = proxy.conn();
    let _: () = q(&mut c, &["CONFIG", "SET", "maxmemory-samples", "7"]);
    for p in cluster.ports() {
        assert!(
            cluster
                .cli(p, &["CONFIG", "GET", "maxmemory-samples"])
                .contains('7'),
            "node {p}"
        );
    }
    // Settings that decide how the proxy reaches the nodes are refused,
    // even among others: a new password would lock the proxy out.
    for args in [
        &["CONFIG", "SET", "requirepass", "s3cret"][..],
        &["CONFIG", "SET", "maxmemory-samples", "5", "masterauth", "x"],
        &["CONFIG", "SET", "tls-port", "0"],
    ] {
        let e = err(&mut c, args);
        assert!(e.contains("could cut the proxy off"), "{e}");
    }
    for p in cluster.ports() {
        let pass = cluster.cli(p, &["CONFIG", "GET", "requirepass"]);
        assert!(!pass.contains("s3cret"), "node {p}: {pass}");
        assert!(cluster
            .cli(p, &["CONFIG", "GET", "maxmemory-samples"])
            .contains('7'));
    }
    // The proxy still opens new backend connections.
    let mut fresh = proxy.conn();
    let _: () = q(&mut fresh, &["SET", "after-refusal", "1"]);
}

#[test]
fn a_runaway_script_is_killed_through_the_proxy() {
    // Nodes take SCRIPT KILL once a script has run 100 ms (5 s by default).
    let cluster = Cluster::start_with(3, 0, &["--busy-reply-threshold", "100"]);
    let proxy = Proxy::start(cluster.seeds());
    let mut c = proxy.conn();
    // Nothing runs: NOTBUSY, as from one server.
    assert!(err(&mut c, &["SCRIPT", "KILL"]).starts_with("NOTBUSY"));
    assert!(err(&mut c, &["FUNCTION", "KILL"]).starts_with("NOTBUSY"));
    // A script in an endless loop holds one master, and the multiplexed
    // connection it came on: the kill goes on connections of its own.
    let mut looping = proxy.conn();
    let script = std::thread::spawn(move || {
        redis::cmd("EVAL")
            .arg("while true do end")
            .arg(0)
            .query::<Value>(&mut looping)
    });
    common::wait_until(Duration::from_secs(10), "the script killed", || {
        redis::cmd("SCRIPT")
            .arg("KILL")
            .query::<String>(&mut c)
            .is_ok_and(|r| r == "OK")
    });
    let e = script.join().unwrap().unwrap_err();
    assert!(e.to_string().contains("killed"), "{e}");
    // Every master serves again.
    for i in 0..30 {
        let _: () = q(&mut c, &["SET", &format!("after-kill:{i}"), "1"]);
    }
    assert!(err(&mut c, &["SCRIPT", "KILL"]).starts_with("NOTBUSY"));
}

#[test]
fn scan_of_a_small_keyspace_ends_in_one_call() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let mut c = proxy.conn();
    // One key on each master: one server returns all three and cursor 0.
    let keys = cluster.key_on_each_master("few");
    for k in &keys {
        let _: () = q(&mut c, &["SET", k, "1"]);
    }
    // RANDOMKEY picks among every master, as one server picks among all keys.
    let mut picked = std::collections::HashSet::new();
    for _ in 0..300 {
        picked.insert(q::<String>(&mut c, &["RANDOMKEY"]));
    }
    assert_eq!(picked.len(), 3, "{picked:?}");
    let (cursor, mut found): (String, Vec<String>) = q(&mut c, &["SCAN", "0"]);
    found.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!((cursor.as_str(), found), ("0", want));
    // COUNT 1 stops after the first node with keys; iterating still
    // visits every key once.
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    let mut calls = 0;
    loop {
        let (next, found): (String, Vec<String>) = q(&mut c, &["SCAN", &cursor, "COUNT", "1"]);
        seen.extend(found);
        calls += 1;
        if next == "0" {
            break;
        }
        cursor = next;
    }
    seen.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(seen, want);
    assert!(calls >= 3, "{calls} calls");
}

#[test]
fn scan_returns_every_key_that_existed_throughout() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let mut c = proxy.conn();
    let mut mset = redis::cmd("MSET");
    for i in 0..2000 {
        mset.arg(format!("old:{i}")).arg(i);
    }
    let _: () = mset.query(&mut c).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Keys keep being added while the scan runs.
        s.spawn(|| {
            let mut w = proxy.conn();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 20_000 {
                let _: () = q(&mut w, &["SET", &format!("new:{i}"), "x"]);
                i += 1;
            }
        });
        let mut seen = HashSet::new();
        let mut cursor = "0".to_string();
        let mut rounds = 0;
        loop {
            let (next, keys): (String, Vec<String>) =
                q(&mut c, &["SCAN", &cursor, "MATCH", "*", "COUNT", "100"]);
            seen.extend(keys);
            rounds += 1;
            assert!(rounds < 10_000, "scan terminates");
            if next == "0" {
                break;
            }
            cursor = next;
        }
        stop.store(true, Ordering::Relaxed);
        for i in 0..2000 {
            assert!(
                seen.contains(&format!("old:{i}")),
                "old:{i} missing from SCAN"
            );
        }
    });
    // TYPE and MATCH filters pass through.
    let _: i64 = q(&mut c, &["SADD", "aset", "m"]);
    let mut found = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let (next, keys): (String, Vec<String>) = q(&mut c, &["SCAN", &cursor, "TYPE", "set"]);
        found.extend(keys);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert_eq!(found, ["aset"]);
    assert!(err(&mut c, &["SCAN", "notanumber"]).contains("invalid cursor"));
}

#[test]
fn emulated_one_node_cluster() {
    let cluster = Cluster::start(3, 1);
    let proxy = Proxy::start(cluster.seeds());
    let mut c = proxy.conn();
    let port = i64::from(proxy.port());
    let slots: Value = q(&mut c, &["CLUSTER", "SLOTS"]);
    let Value::Array(ranges) = slots else {
        panic!()
    };
    assert_eq!(ranges.len(), 1);
    let Value::Array(r) = &ranges[0] else {
        panic!()
    };
    assert_eq!(r[0], Value::Int(0));
    assert_eq!(r[1], Value::Int(16383));
    let Value::Array(node) = &r[2] else { panic!() };
    assert_eq!(node[0], Value::BulkString(b"127.0.0.1".to_vec()));
    assert_eq!(node[1], Value::Int(port));
    let id: String = q(&mut c, &["CLUSTER", "MYID"]);
    assert_eq!(id.len(), 40);
    let nodes: String = q(&mut c, &["CLUSTER", "NODES"]);
    assert!(
        nodes.starts_with(&format!("{id} 127.0.0.1:{port}@0 myself,master")),
        "{nodes}"
    );
    let info: String = q(&mut c, &["CLUSTER", "INFO"]);
    assert!(info.contains("cluster_state:ok"), "{info}");
    let shards: Value = q(&mut c, &["CLUSTER", "SHARDS"]);
    assert!(format!("{shards:?}").contains(&id));
    // No backend address leaks through the cluster commands.
    for p in cluster.ports() {
        assert!(!nodes.contains(&p.to_string()));
    }

    let _: () = q(&mut c, &["SET", "{k}1", "a"]);
    let _: () = q(&mut c, &["SET", "{k}2", "b"]);
    let slot = slotproxy::cluster::slot::key_slot(b"k").to_string();
    assert_eq!(q::<i64>(&mut c, &["CLUSTER", "COUNTKEYSINSLOT", &slot]), 2);
    let mut ks: Vec<String> = q(&mut c, &["CLUSTER", "GETKEYSINSLOT", &slot, "10"]);
    ks.sort();
    assert_eq!(ks, ["{k}1", "{k}2"]);

    // The real topology is one command away.
    let topo: Value = q(&mut c, &["PROXY", "TOPOLOGY"]);
    let text = format!("{topo:?}");
    for p in cluster.ports() {
        assert!(
            text.contains(&format!("127.0.0.1:{p}")),
            "{p} missing in {text}"
        );
    }

    // A cluster-aware client works through the proxy.
    common::run_client("python3", "tests/python/cluster_client.py", proxy.port());
}

#[test]
fn partial_failure_is_an_error_never_a_partial_result() {
    let mut cluster = Cluster::start(3, 0);
    let proxy = Proxy::start_with(cluster.seeds(), |c| {
        c.backend.connect_timeout = Duration::from_millis(300);
        c.backend.request_timeout = Duration::from_secs(2);
        // No replica will take over: give up waiting for a master quickly.
        c.retry.master_wait = Duration::from_millis(500);
    });
    let mut c = proxy.conn();
    let keys: Vec<String> = (0..20).map(|i| format!("pf:{i}")).collect();
    let mut mset = redis::cmd("MSET");
    for k in &keys {
        mset.arg(k).arg("v");
    }
    let _: () = mset.query(&mut c).unwrap();
    let victim = cluster.node_for_slot(slotproxy::cluster::slot::key_slot(keys[0].as_bytes()));
    cluster.kill_node(victim);
    let mut mget = redis::cmd("MGET");
    for k in &keys {
        mget.arg(k);
    }
    let e = mget.query::<Value>(&mut c).unwrap_err().to_string();
    assert!(
        e.contains("slotproxy: MGET failed for ") && e.contains(" parts: "),
        "{e}"
    );
    let mut del = redis::cmd("DEL");
    for k in &keys {
        del.arg(k);
    }
    let e = del.query::<Value>(&mut c).unwrap_err().to_string();
    assert!(
        e.contains("DEL failed for ") && e.contains("the other parts were applied"),
        "{e}"
    );
    let info: String = q(&mut c, &["CLUSTER", "INFO"]);
    assert!(info.contains("cluster_state:fail"), "{info}");
}
