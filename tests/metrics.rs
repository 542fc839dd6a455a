//! Metrics: the series budget of an idle proxy, a valid scrape after many
//! distinct commands, replication lag that follows a stopped replica, and
//! slots in MIGRATING/IMPORTING state.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::prom::promtool_check;
use common::proxy::Proxy;
use common::{free_port, wait_until, Cluster, Running};
use slotproxy::cluster::slot::key_slot;

/// `GET path` on an admin server: (status code, body).
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text.split("\r\n\r\n").nth(1)?.to_string()))
}

/// Series in a scrape: its lines that are not comments.
fn series(body: &str) -> usize {
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// The value of the first series whose line starts with `prefix`.
fn sample(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The binary, in a process of its own (the in-process proxies of other
/// tests share one registry), scraped as Prometheus would.
#[test]
fn idle_proxy_exports_at_most_150_series() {
    let cluster = Cluster::start(3, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slotproxy.toml");
    let port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("{s:?}")).collect();
    std::fs::write(
        &path,
        format!(
            "[frontend]\nlisten = \"127.0.0.1:{port}\"\n[admin]\nlisten = \"{admin}\"\n\
             [cluster]\nseeds = [{}]\n[log]\nlevel = \"warn\"\n",
            seeds.join(", ")
        ),
    )
    .unwrap();
    let _proxy = Running(
        Command::new(env!("CARGO_BIN_EXE_slotproxy"))
            .arg("--config")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let scrape = || http_get(&admin, "/metrics").expect("scrape").1;
    wait_until(Duration::from_secs(20), "the proxy is ready", || {
        http_get(&admin, "/readyz").is_some_and(|(status, _)| status == 200)
    });
    // Every replica's lag is known after the first refresh.
    wait_until(Duration::from_secs(10), "replica lag", || {
        scrape().matches("slotproxy_replica_lag_seconds{").count() == 3
    });
    let idle = scrape();
    let n = series(&idle);
    eprintln!(
        "idle proxy (3 masters, 3 replicas): {n} series, {} bytes",
        idle.len()
    );
    assert!(n <= 150, "{n} series at idle:\n{idle}");
    promtool_check(&idle);
    assert!(!idle.contains("slotproxy_commands_total{"), "{idle}");
    assert_eq!(sample(&idle, "slotproxy_build_info{"), Some(1.0));
    assert!(idle.contains("\nprocess_resident_memory_bytes "), "{idle}");

    // A first client and command, then each further command.
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: Option<String> = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    let first = series(&scrape());
    let _: () = redis::cmd("SET").arg("k").arg(1).query(&mut c).unwrap();
    let _: i64 = redis::cmd("DEL").arg("k").query(&mut c).unwrap();
    let after = scrape();
    let per_command = (series(&after) - first) as f64 / 2.0;
    eprintln!(
        "first client and GET (after redis-rs's CLIENT SETINFO, unknown to Redis 7.0): \
         +{} series; each further command: +{per_command}",
        first - n
    );
    assert_eq!(per_command, 2.0, "{after}");
    assert!(
        !after.contains("slotproxy_command_duration_seconds_bucket{"),
        "per-command histograms are opt-in"
    );
    // Counted once the writer flushes, right after the reply; the client
    // library sends CLIENT SETINFO twice on connecting.
    wait_until(Duration::from_secs(5), "5 requests timed", || {
        sample(&scrape(), "slotproxy_request_duration_seconds_count") == Some(5.0)
    });
}

/// `n` commands and subcommands of the cluster's COMMAND reply that read,
/// or write keys, each with as many arguments as it needs at least (keys
/// named `x1`, `x2`, ...: run, or refused for their syntax).
fn key_commands(cluster: &Cluster, n: usize) -> Vec<(String, Vec<String>)> {
    fn word(v: &redis::Value) -> String {
        match v {
            redis::Value::SimpleString(s) => s.clone(),
            other => common::text(other),
        }
    }
    fn collect(entries: &[redis::Value], out: &mut Vec<(String, Vec<String>)>) {
        for entry in entries {
            let fields = common::array(entry);
            let name = word(&fields[0]).to_ascii_lowercase();
            let redis::Value::Int(arity) = fields[1] else {
                continue;
            };
            let flags: Vec<String> = common::array(&fields[2]).iter().map(word).collect();
            if let Some(subs) = fields.get(9) {
                collect(common::array(subs), out);
            }
            let blocking = flags.iter().any(|f| f == "blocking" || f == "pubsub");
            let first_key = matches!(fields[3], redis::Value::Int(k) if k > 0);
            let reads = flags.iter().any(|f| f == "readonly");
            let writes_keys = first_key && flags.iter().any(|f| f == "write");
            if !(reads || writes_keys) || blocking {
                continue;
            }
            let mut words: Vec<String> = name.split('|').map(str::to_string).collect();
            let needed = arity.unsigned_abs() as usize;
            for i in words.len()..needed {
                words.push(format!("x{i}"));
            }
            out.push((name, words));
        }
    }
    let mut c = cluster.conn(cluster.master_ports()[0]);
    let reply: redis::Value = redis::cmd("COMMAND").query(&mut c).unwrap();
    let mut out = Vec::new();
    collect(common::array(&reply), &mut out);
    out.sort();
    assert!(out.len() >= n, "{} commands: {out:?}", out.len());
    out.truncate(n);
    out
}

#[test]
fn scrape_is_valid_after_100_distinct_commands() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start_with(cluster.seeds(), |c| {
        c.admin.listen = Some("127.0.0.1:0".into());
        c.metrics.command_histograms = vec!["*".into()];
    });
    let commands = key_commands(&cluster, 100);
    let mut c = proxy.conn();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for (_, words) in &commands {
        let mut cmd = redis::cmd(&words[0]);
        for w in &words[1..] {
            cmd.arg(w);
        }
        // Replies or errors alike: only the count matters.
        let _ = cmd.query::<redis::Value>(&mut c);
    }
    let last = format!(
        "slotproxy_command_duration_seconds_count{{command=\"{}\"}}",
        commands[99].0
    );
    wait_until(Duration::from_secs(5), "the last reply counted", || {
        sample(&proxy.admin_get("/metrics").1, &last).is_some()
    });
    let (status, body) = proxy.admin_get("/metrics");
    assert_eq!(status, 200);
    promtool_check(&body);
    for (name, _) in &commands {
        let count = format!("slotproxy_command_duration_seconds_count{{command=\"{name}\"}}");
        assert_eq!(sample(&body, &count), Some(1.0), "{count}\n{body}");
    }
    eprintln!(
        "100 commands, every histogram on: {} series, {} bytes",
        series(&body),
        body.len()
    );
}

/// The port of the replica of the master on `master`.
fn replica_of(cluster: &Cluster, master: u16) -> u16 {
    let info = cluster.cli(master, &["info", "replication"]);
    info.lines()
        .find(|l| l.starts_with("slave0:"))
        .and_then(|l| l.split(',').find_map(|kv| kv.strip_prefix("port=")))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no replica in {info}"))
}

#[test]
fn replica_lag_follows_a_stopped_replica() {
    let cluster = Cluster::start(3, 1);
    let refresh = Duration::from_secs(2);
    let proxy = Proxy::start_with(cluster.seeds(), |c| {
        c.admin.listen = Some("127.0.0.1:0".into());
        c.cluster.refresh_interval = refresh;
    });
    let master = cluster.master_ports()[0];
    let replica = replica_of(&cluster, master);
    let series =
        format!("slotproxy_replica_lag_seconds{{master=\"127.0.0.1:{master}\",replica=\"127.0.0.1:{replica}\"}}");
    let lag = || sample(&proxy.admin_get("/metrics").1, &series);
    wait_until(Duration::from_secs(10), "a caught-up replica", || {
        lag().is_some_and(|l| l < 1.0)
    });
    // Writes on the master, all the time.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let key = (0..)
            .map(|i| format!("lag:{i}"))
            .find(|k| cluster.node_for_slot(key_slot(k.as_bytes())) == master)
            .unwrap();
        let mut c = cluster.conn(master);
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _: () = redis::cmd("SET").arg(&key).arg(i).query(&mut c).unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // A healthy replica under writes: about a second at most (its
    // acknowledgements and the proxy's samples, once a second each).
    let mut healthy = Vec::new();
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        healthy.push(lag().expect("lag"));
    }
    let worst = healthy.iter().copied().fold(0.0, f64::max);
    let zeros = healthy.iter().filter(|&&l| l == 0.0).count();
    eprintln!("healthy replica under writes: worst {worst:.3} s, 0 in {zeros} of 30 reads");
    assert!(worst < 2.0, "{healthy:?}");
    cluster.signal(replica, "-STOP");
    let stopped = Instant::now();
    let read_at = |after: Duration| {
        std::thread::sleep((stopped + after).saturating_duration_since(Instant::now()));
        (
            stopped.elapsed().as_secs_f64(),
            lag().expect("lag of the stopped replica"),
        )
    };
    let (t1, lag1) = read_at(Duration::from_secs(4));
    let (t2, lag2) = read_at(Duration::from_secs(7));
    cluster.signal(replica, "-CONT");
    eprintln!("stopped replica: lag {lag1:.3} s after {t1:.3} s, {lag2:.3} s after {t2:.3} s");
    assert!((2.0..=5.5).contains(&lag1), "lag {lag1} after {t1} s");
    let (grew, elapsed) = (lag2 - lag1, t2 - t1);
    assert!(
        (grew - elapsed).abs() <= 1.5,
        "lag grew {grew} s in {elapsed} s"
    );
    let resumed = Instant::now();
    wait_until(Duration::from_secs(10), "the replica caught up", || {
        lag().is_some_and(|l| l < refresh.as_secs_f64())
    });
    eprintln!(
        "resumed replica: lag {:?} after {:.3} s",
        lag(),
        resumed.elapsed().as_secs_f64()
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

#[test]
fn slots_in_migration_are_counted() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start_with(cluster.seeds(), |c| {
        c.admin.listen = Some("127.0.0.1:0".into());
        c.cluster.refresh_interval = Duration::from_millis(300);
    });
    let transfers = || {
        let body = proxy.admin_get("/metrics").1;
        (
            sample(&body, "slotproxy_cluster_slots_migrating "),
            sample(&body, "slotproxy_cluster_slots_importing "),
        )
    };
    assert_eq!(transfers(), (Some(0.0), Some(0.0)));
    let slot = 1234u16.to_string();
    let from = cluster.node_for_slot(1234);
    let to = cluster
        .master_ports()
        .into_iter()
        .find(|&p| p != from)
        .unwrap();
    let (from_id, to_id) = (cluster.node_id(from), cluster.node_id(to));
    cluster.cli(to, &["cluster", "setslot", &slot, "importing", &from_id]);
    cluster.cli(from, &["cluster", "setslot", &slot, "migrating", &to_id]);
    wait_until(Duration::from_secs(5), "1 migrating, 1 importing", || {
        transfers() == (Some(1.0), Some(1.0))
    });
    cluster.cli(to, &["cluster", "setslot", &slot, "stable"]);
    cluster.cli(from, &["cluster", "setslot", &slot, "stable"]);
    wait_until(Duration::from_secs(5), "no slot in transfer", || {
        transfers() == (Some(0.0), Some(0.0))
    });
}
