//! Topology features: replica reads and nodes announced by hostname.

mod common;

use std::time::Duration;

use common::proxy::Proxy;
use common::{array, text, wait_until, Cluster};
use slotproxy::config::ReadFrom;

fn calls(cluster: &Cluster, port: u16, cmd: &str) -> u64 {
    cluster
        .cli(port, &["info", "commandstats"])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn reads_go_to_replicas_and_writes_to_masters() {
    let cluster = Cluster::start(3, 1);
    let proxy = Proxy::start_with(cluster.seeds(), |c| c.cluster.read_from = ReadFrom::Replica);
    let mut c = proxy.conn();
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("r:{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    // Replication is asynchronous: wait until replicas have everything.
    wait_until(Duration::from_secs(10), "replicas caught up", || {
        (0..100).all(|i| {
            redis::cmd("GET")
                .arg(format!("r:{i}"))
                .query::<Option<i64>>(&mut c)
                .unwrap()
                == Some(i)
        })
    });
    let (masters, replicas): (Vec<u16>, Vec<u16>) = {
        let roles = cluster.roles(cluster.ports()[0]);
        (
            roles.iter().filter(|r| r.1).map(|r| r.0).collect(),
            roles.iter().filter(|r| !r.1).map(|r| r.0).collect(),
        )
    };
    let replica_gets: u64 = replicas.iter().map(|&p| calls(&cluster, p, "get")).sum();
    let master_gets: u64 = masters.iter().map(|&p| calls(&cluster, p, "get")).sum();
    let master_sets: u64 = masters.iter().map(|&p| calls(&cluster, p, "set")).sum();
    assert!(
        replica_gets >= 100,
        "GETs served by replicas: {replica_gets}"
    );
    assert_eq!(master_gets, 0, "no GET on masters");
    assert_eq!(master_sets, 100, "every SET on a master");
}

#[test]
fn prefer_replica_falls_back_to_the_master() {
    let mut cluster = Cluster::start(3, 1);
    let proxy = Proxy::start_with(cluster.seeds(), |c| {
        c.cluster.read_from = ReadFrom::PreferReplica;
        c.backend.connect_timeout = Duration::from_millis(200);
    });
    let mut c = proxy.conn();
    let _: () = redis::cmd("SET").arg("pr").arg("v").query(&mut c).unwrap();
    let master = cluster.node_for_slot(slotproxy::cluster::slot::key_slot(b"pr"));
    let replica = cluster
        .roles(master)
        .into_iter()
        .find(|&(p, is_master)| {
            !is_master
                && cluster
                    .cli(p, &["info", "replication"])
                    .contains(&format!("master_port:{master}"))
        })
        .map(|(p, _)| p)
        .expect("replica of the key's master");
    cluster.kill_node(replica);
    // Reads keep working (from the master) as soon as the replica is seen down.
    wait_until(
        Duration::from_secs(10),
        "read served after replica loss",
        || {
            redis::cmd("GET")
                .arg("pr")
                .query::<Option<String>>(&mut c)
                .ok()
                == Some(Some("v".into()))
        },
    );
    for _ in 0..20 {
        let v: String = redis::cmd("GET").arg("pr").query(&mut c).unwrap();
        assert_eq!(v, "v");
    }
}

#[test]
fn nodes_announced_by_hostname() {
    let cluster = Cluster::start_with(
        3,
        0,
        &[
            "--cluster-announce-hostname",
            "localhost",
            "--cluster-preferred-endpoint-type",
            "hostname",
        ],
    );
    let proxy = Proxy::start(cluster.seeds());
    let mut c = proxy.conn();
    let topo: redis::Value = redis::cmd("PROXY").arg("TOPOLOGY").query(&mut c).unwrap();
    let text = format!("{topo:?}");
    assert!(text.contains("localhost:"), "hostnames used: {text}");
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("h:{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    // A MOVED that names a hostname: move a slot by hand.
    let slot = slotproxy::cluster::slot::key_slot(b"h:1");
    let from = cluster.node_for_slot(slot);
    let to = cluster.ports().into_iter().find(|&p| p != from).unwrap();
    let _: () = redis::cmd("DEL").arg("h:1").query(&mut c).unwrap();
    let keys: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(1000)
        .query(&mut cluster.conn(from))
        .unwrap();
    let to_id = cluster.node_id(to);
    let from_id = cluster.node_id(from);
    let s = slot.to_string();
    cluster.cli(to, &["cluster", "setslot", &s, "importing", &from_id]);
    cluster.cli(from, &["cluster", "setslot", &s, "migrating", &to_id]);
    for k in &keys {
        cluster.cli(
            from,
            &["migrate", "127.0.0.1", &to.to_string(), k, "0", "5000"],
        );
    }
    for p in cluster.ports() {
        cluster.cli(p, &["cluster", "setslot", &s, "node", &to_id]);
    }
    let _: () = redis::cmd("SET")
        .arg("h:1")
        .arg("moved")
        .query(&mut c)
        .unwrap();
    let v: String = redis::cmd("GET").arg("h:1").query(&mut c).unwrap();
    assert_eq!(v, "moved");
    assert_eq!(cluster.cli(to, &["get", "h:1"]).trim(), "moved");
}

#[test]
fn an_active_client_sees_the_refreshed_table() {
    // A client that keeps sending holds the tables cached for its whole
    // active phase (one load per request checks that they are current):
    // once a new slot table is swapped in, its next request must see it,
    // and its requests must go straight to the slot's new owner.
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(cluster.seeds());
    let mut c = proxy.conn();
    let key = "{active}k";
    let slot = slotproxy::cluster::slot::key_slot(key.as_bytes());
    let get = |c: &mut redis::Connection| -> Option<String> {
        redis::cmd("GET").arg(key).query(c).unwrap()
    };
    // The slot table version and the master serving `slot`, as the proxy
    // answers on connection `c`.
    let topology = |c: &mut redis::Connection| -> (i64, String) {
        let redis::Value::Array(t) = redis::cmd("PROXY").arg("TOPOLOGY").query(c).unwrap() else {
            panic!("PROXY TOPOLOGY is an array")
        };
        let (redis::Value::Int(version), redis::Value::Array(shards)) = (&t[1], &t[3]) else {
            panic!("{t:?}")
        };
        let owner = shards
            .iter()
            .find_map(|shard| {
                let f = array(shard);
                array(&f[5])
                    .iter()
                    .any(|r| {
                        let r = text(r);
                        let (a, b) = r.split_once('-').unwrap();
                        (a.parse().unwrap()..=b.parse().unwrap()).contains(&slot)
                    })
                    .then(|| text(&f[1]))
            })
            .expect("the slot is served");
        (*version, owner)
    };
    assert_eq!(get(&mut c), None);
    let (before, _) = topology(&mut c);
    let to = cluster.move_empty_slot(slot);
    // The first request after the move meets MOVED, which the proxy follows
    // and which makes it refresh its table. The client keeps sending (well
    // within the second after which it would go idle) until it sees the
    // new table.
    wait_until(
        Duration::from_secs(10),
        "the active client to see the new slot table",
        || {
            assert_eq!(get(&mut c), None);
            let (version, owner) = topology(&mut c);
            version > before && owner.ends_with(&format!(":{to}"))
        },
    );
    let moved = proxy.info_field("redirects_moved");
    for _ in 0..100 {
        assert_eq!(get(&mut c), None);
    }
    assert_eq!(proxy.info_field("redirects_moved"), moved);
}

#[test]
fn cluster_with_a_password() {
    let cluster = Cluster::start_with(
        3,
        1,
        &[
            "--requirepass",
            "n0d3-s3cret",
            "--masterauth",
            "n0d3-s3cret",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("password");
    std::fs::write(&secret, "n0d3-s3cret\n").unwrap();
    let proxy = Proxy::start_with(cluster.seeds(), |c| {
        c.backend.password_file = Some(secret.clone())
    });
    let mut c = proxy.conn();
    // Multiplexed, fan-out, dedicated (blocking) and pub/sub connections all authenticate.
    let _: () = redis::cmd("MSET")
        .arg(&["pw:a", "1", "pw:b", "2"])
        .query(&mut c)
        .unwrap();
    let v: Vec<i64> = redis::cmd("MGET")
        .arg(&["pw:a", "pw:b"])
        .query(&mut c)
        .unwrap();
    assert_eq!(v, [1, 2]);
    let _: i64 = redis::cmd("RPUSH")
        .arg("pw:l")
        .arg("x")
        .query(&mut c)
        .unwrap();
    let v: Option<(String, String)> = redis::cmd("BLPOP")
        .arg("pw:l")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_eq!(v, Some(("pw:l".into(), "x".into())));
    let n: i64 = redis::cmd("WAIT").arg(1).arg(2000).query(&mut c).unwrap();
    assert_eq!(n, 1);
    let info: String = redis::cmd("INFO").arg("proxy").query(&mut c).unwrap();
    assert!(
        info.contains("command_table_source:127.0.0.1:"),
        "COMMAND fetched with AUTH"
    );

    // A wrong password: a clear error that never shows the secret.
    let wrong = Proxy::start_with_unchecked(cluster.seeds(), |c| {
        c.backend.password = Some(slotproxy::config::Secret("wrong-s3cret".into()));
        c.retry.master_wait = Duration::from_millis(300);
    });
    let mut w = wrong.conn();
    let e = redis::cmd("GET")
        .arg("pw:a")
        .query::<Option<String>>(&mut w)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not discovered") || e.contains("AUTH"), "{e}");
    assert!(!e.contains("s3cret"), "{e}");
}
