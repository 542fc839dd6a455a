//! Replica reads that follow the proxy's zone (`read_from = "same_zone"`,
//! zones from each node's `availability-zone`, Valkey 8.1), and replicas
//! skipped while they are behind `max_replica_lag`.

mod common;

use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{wait_until, Cluster, Server};
use slotproxy::cluster::slot::key_slot;
use slotproxy::config::ReadFrom;

/// `cmdstat_get` calls of one node.
fn gets(cluster: &Cluster, port: u16) -> u64 {
    cluster
        .cli(port, &["info", "commandstats"])
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// The replicas of `master`, in port order.
fn replicas_of(cluster: &Cluster, master: u16) -> Vec<u16> {
    let mut r: Vec<u16> = cluster
        .roles(master)
        .into_iter()
        .filter(|&(p, is_master)| {
            !is_master
                && cluster
                    .cli(p, &["info", "replication"])
                    .contains(&format!("master_port:{master}"))
        })
        .map(|(p, _)| p)
        .collect();
    r.sort();
    r
}

/// One key on each master, as `(key, master)`.
fn keys(cluster: &Cluster) -> Vec<(String, u16)> {
    cluster
        .key_on_each_master("zone")
        .into_iter()
        .map(|k| {
            let m = cluster.node_for_slot(key_slot(k.as_bytes()));
            (k, m)
        })
        .collect()
}

/// Writes every key through the proxy and waits until every replica has it.
fn write_and_sync(cluster: &Cluster, proxy: &Proxy, keys: &[(String, u16)]) {
    let mut c = proxy.conn();
    for (k, _) in keys {
        let _: () = redis::cmd("SET").arg(k).arg(k).query(&mut c).unwrap();
    }
    for (k, m) in keys {
        for r in replicas_of(cluster, *m) {
            let mut rc = cluster.conn(r);
            let _: () = redis::cmd("READONLY").query(&mut rc).unwrap();
            wait_until(Duration::from_secs(10), "replica has the key", || {
                redis::cmd("GET")
                    .arg(k)
                    .query::<Option<String>>(&mut rc)
                    .unwrap()
                    == Some(k.clone())
            });
        }
    }
}

fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn reads_stay_in_the_proxys_zone() {
    let mut cluster = Cluster::start(3, 2);
    let valkey = common::server() == Server::Valkey;
    let masters = cluster.master_ports();
    // Masters and each master's first replica in zone a, its second in b.
    let mut zone_b = Vec::new();
    if valkey {
        for &m in &masters {
            cluster.cli(m, &["config", "set", "availability-zone", "a"]);
            let r = replicas_of(&cluster, m);
            assert_eq!(r.len(), 2);
            cluster.cli(r[0], &["config", "set", "availability-zone", "a"]);
            cluster.cli(r[1], &["config", "set", "availability-zone", "b"]);
            zone_b.push(r[1]);
        }
    }
    let proxy = Proxy::start_with(cluster.seeds(), |c| {
        c.admin.listen = Some("127.0.0.1:0".into());
        c.cluster.read_from = ReadFrom::SameZone;
        c.cluster.zone = Some("b".into());
        c.backend.connect_timeout = Duration::from_millis(200);
    });
    let keys = keys(&cluster);
    write_and_sync(&cluster, &proxy, &keys);
    // The zones are read at the first refresh, after the table is built.
    wait_until(Duration::from_secs(10), "zones discovered", || {
        let body = proxy.admin_get("/metrics").1;
        !valkey || body.contains("zone=\"b\"")
    });
    for p in cluster.ports() {
        cluster.cli(p, &["config", "resetstat"]);
    }
    let mut c = proxy.conn();
    let rounds = 400;
    for _ in 0..rounds {
        for (k, _) in &keys {
            let v: String = redis::cmd("GET").arg(k).query(&mut c).unwrap();
            assert_eq!(&v, k);
        }
    }
    let total = (rounds * keys.len()) as u64;
    let on_b: u64 = zone_b.iter().map(|&p| gets(&cluster, p)).sum();
    let on_masters: u64 = masters.iter().map(|&p| gets(&cluster, p)).sum();
    let all: u64 = cluster.ports().iter().map(|&p| gets(&cluster, p)).sum();
    eprintln!("{total} GETs: {on_b} on zone-b replicas, {on_masters} on masters, {all} in all");
    assert_eq!(all, total, "every GET served once");
    if !valkey {
        // Redis nodes report no zone: no replica is in the proxy's zone.
        assert_eq!(on_masters, total, "Redis: every read on the masters");
        return;
    }
    assert!(
        on_b * 100 >= total * 99,
        "{on_b} of {total} reads on zone-b replicas"
    );
    let body = proxy.admin_get("/metrics").1;
    for &p in &zone_b {
        let series =
            format!("slotproxy_backend_requests_total{{node=\"127.0.0.1:{p}\",zone=\"b\"}}");
        let n = metric(&body, &series).unwrap_or_else(|| panic!("{series} in\n{body}"));
        assert!(n >= total as f64 / 3.0 * 0.99, "{series} {n}");
    }

    // /topology says which replicas serve reads, and every node's zone.
    let topo: serde_json::Value = serde_json::from_str(&proxy.admin_get("/topology").1).unwrap();
    let replicas: Vec<&serde_json::Value> = topo["shards"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["replicas"].as_array().unwrap())
        .collect();
    let readers: Vec<&str> = replicas
        .iter()
        .filter(|r| r["serves_reads"] == true)
        .map(|r| r["zone"].as_str().unwrap())
        .collect();
    assert_eq!(readers, ["b", "b", "b"], "{topo}");
    assert!(topo["shards"][0]["zone"] == "a", "{topo}");

    // The zone-b replica of the first key's master dies: its reads go to
    // that master, and no client sees an error.
    let (key, master) = keys[0].clone();
    let victim = replicas_of(&cluster, master)[1];
    assert!(zone_b.contains(&victim));
    let before = gets(&cluster, master);
    cluster.kill_node(victim);
    let t = Instant::now();
    let mut served = 0;
    while t.elapsed() < Duration::from_secs(3) || served < 500 {
        let v: String = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
        assert_eq!(v, key);
        served += 1;
    }
    let on_master = gets(&cluster, master) - before;
    eprintln!("after the zone-b replica died: {on_master} of {served} reads on its master");
    assert!(
        on_master + 5 >= served,
        "{on_master} of {served} reads on the master"
    );
}

#[test]
fn reads_leave_a_replica_that_falls_behind() {
    falls_behind(ReadFrom::PreferReplica);
}

#[test]
fn replica_mode_reads_the_master_while_its_replicas_are_behind() {
    falls_behind(ReadFrom::Replica);
}

#[test]
fn same_zone_reads_leave_a_replica_that_falls_behind() {
    if common::server() != Server::Valkey {
        eprintln!("Redis nodes have no zone: nothing to show");
        return;
    }
    falls_behind(ReadFrom::SameZone);
}

/// A replica stopped (SIGSTOP) falls behind `max_replica_lag`: its reads
/// go to the master (it still counts as reachable), and come back once it
/// caught up. Every node is in zone b with the proxy for `same_zone`.
fn falls_behind(mode: ReadFrom) {
    let cluster = Cluster::start(3, 1);
    if mode == ReadFrom::SameZone {
        for p in cluster.ports() {
            cluster.cli(p, &["config", "set", "availability-zone", "b"]);
        }
    }
    let proxy = Proxy::start_with(cluster.seeds(), |c| {
        c.admin.listen = Some("127.0.0.1:0".into());
        c.cluster.read_from = mode;
        c.cluster.zone = Some("b".into());
        c.cluster.max_replica_lag = Duration::from_secs(2);
        // No refresh (and no probe of the stopped replica) during the test:
        // the lag alone moves the reads.
        c.cluster.refresh_interval = Duration::from_secs(120);
    });
    let keys = keys(&cluster);
    write_and_sync(&cluster, &proxy, &keys);
    if mode == ReadFrom::SameZone {
        wait_until(Duration::from_secs(10), "zones discovered", || {
            proxy.info_field("replicas_serving_reads") == 3
        });
    }
    let (key, master) = keys[0].clone();
    let replica = replicas_of(&cluster, master)[0];
    let mut c = proxy.conn();
    let read = |c: &mut redis::Connection, n: usize| {
        for _ in 0..n {
            let v: String = redis::cmd("GET").arg(&key).query(c).unwrap();
            assert_eq!(v, key);
        }
    };
    let (m0, r0) = (gets(&cluster, master), gets(&cluster, replica));
    read(&mut c, 100);
    assert_eq!(gets(&cluster, replica) - r0, 100, "reads on the replica");
    assert_eq!(gets(&cluster, master), m0);

    let version = || proxy.info_field("slot_table_version");
    let v0 = version();
    cluster.signal(replica, "-STOP");
    let stopped = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // The replica falls behind (its master's replication pings move
        // the offset every second); past 2 s the table is rebuilt without it.
        wait_until(Duration::from_secs(10), "the replica marked stale", || {
            version() > v0
        });
        let took = stopped.elapsed();
        let body = proxy.admin_get("/metrics").1;
        let up = metric(&body, "slotproxy_cluster_nodes_ok").unwrap_or_default();
        let m1 = gets(&cluster, master);
        read(&mut c, 100);
        (took, up, gets(&cluster, master) - m1)
    }));
    cluster.signal(replica, "-CONT");
    let (took, up, on_master) = result.expect("reads while the replica is stopped");
    eprintln!(
        "{mode:?}: stopped replica skipped after {took:?}; {on_master} of 100 reads on the master"
    );
    assert_eq!(up, 6.0, "the stopped replica still counts as reachable");
    // The lag runs from the replica's last acknowledgement (once a second),
    // which may precede the stop by up to a second.
    assert!(took >= Duration::from_secs(1), "skipped after {took:?}");
    assert_eq!(on_master, 100);

    // Caught up again: reads go back to it.
    let v1 = version();
    wait_until(Duration::from_secs(10), "the replica back", || {
        version() > v1
    });
    let r1 = gets(&cluster, replica);
    read(&mut c, 100);
    assert_eq!(
        gets(&cluster, replica) - r1,
        100,
        "reads back on the replica"
    );
}
