//! Operations: health and readiness probes, topology JSON, drain on
//! shutdown, and `slotproxy check`.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::prom::promtool_check;
use common::proxy::Proxy;
use common::{array, wait_until, Cluster, Running};
use slotproxy::cluster::slot::key_slot;

fn with_admin(seeds: Vec<String>) -> Proxy {
    Proxy::start_with(seeds, |c| {
        c.admin.listen = Some("127.0.0.1:0".into());
        c.cluster.refresh_interval = Duration::from_millis(500);
        c.backend.connect_timeout = Duration::from_millis(300);
    })
}

#[test]
fn probes_and_topology() {
    let cluster = Cluster::start(3, 1);
    let proxy = with_admin(cluster.seeds());
    assert_eq!(proxy.admin_get("/healthz"), (200, "ok\n".into()));
    assert_eq!(proxy.admin_get("/readyz"), (200, "ready\n".into()));
    let (status, body) = proxy.admin_get("/topology");
    assert_eq!(status, 200);
    let topo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(topo["slots_assigned"], 16384);
    assert_eq!(topo["shards"].as_array().unwrap().len(), 3);
    for shard in topo["shards"].as_array().unwrap() {
        assert_eq!(shard["replicas"].as_array().unwrap().len(), 1, "{shard}");
    }
    assert_eq!(proxy.admin_get("/nope").0, 404);
}

#[test]
fn readiness_flips_when_a_master_without_replica_dies() {
    let mut cluster = Cluster::start(3, 0);
    let proxy = with_admin(cluster.seeds());
    assert_eq!(proxy.admin_get("/readyz").0, 200);
    let victim = cluster.node_for_slot(key_slot(b"x"));
    cluster.kill_node(victim);
    wait_until(Duration::from_secs(10), "readyz turns 503", || {
        proxy.admin_get("/readyz").0 == 503
    });
    let (_, body) = proxy.admin_get("/readyz");
    assert!(
        body.contains("unreachable master") && body.contains(&victim.to_string()),
        "{body}"
    );
    // The other slots keep working.
    let mut c = proxy.conn();
    let other_key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| cluster.node_for_slot(key_slot(k.as_bytes())) != victim)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&other_key)
        .arg(1)
        .query(&mut c)
        .unwrap();
}

#[test]
fn drain_under_load_loses_no_reply() {
    let cluster = Cluster::start(3, 0);
    let mut proxy = with_admin(cluster.seeds());
    let s = proxy.raw();
    let mut writer = s.try_clone().unwrap();
    // A client writing a steady pipeline of SETs until the proxy closes.
    let feeder = std::thread::spawn(move || {
        let mut sent = 0usize;
        for batch in 0..1000 {
            let mut buf = Vec::new();
            for i in 0..100 {
                let key = format!("drain:{}", batch * 100 + i);
                buf.extend_from_slice(
                    format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\n1\r\n", key.len()).as_bytes(),
                );
            }
            if writer.write_all(&buf).is_err() {
                break;
            }
            sent += 100;
            std::thread::sleep(Duration::from_millis(2));
        }
        sent
    });
    let mut reader = s;
    let mut replies = Vec::new();
    let mut buf = [0u8; 65536];
    let mut drain = None;
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => replies.extend_from_slice(&buf[..n]),
        }
        // Drain once the load is well under way.
        if drain.is_none() && replies.len() >= 5 * 2000 {
            drain = Some(proxy.begin_drain());
        }
    }
    proxy.wait_drained(drain.expect("drain started"));
    let sent = feeder.join().unwrap();
    let acked = String::from_utf8_lossy(&replies).matches("+OK\r\n").count();
    assert_eq!(acked * 5, replies.len(), "only whole +OK replies");
    assert!(acked >= 2000 && acked <= sent, "{acked} of {sent}");
    // Every write the proxy executed was answered: none executed silently.
    let mut written = 0;
    for port in cluster.master_ports() {
        written += cluster
            .cli(port, &["dbsize"])
            .trim()
            .parse::<usize>()
            .unwrap();
    }
    eprintln!("drain: {sent} sent, {acked} answered, {written} executed");
    assert_eq!(written, acked, "writes executed without a reply");
}

#[test]
fn check_cli_reports_problems_and_exit_codes() {
    let cluster = Cluster::start(3, 1);
    let bin = env!("CARGO_BIN_EXE_slotproxy");
    let seed = cluster.seeds()[0].clone();
    let run = |args: &[&str]| {
        let out = Command::new(bin).arg("check").args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(&[&seed]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("[OK] All 16384 slots covered by 3 masters."),
        "{out}"
    );
    let (code, out) = run(&[&seed, "--min-replicas", "2"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("fewer than 2"), "{out}");
    // A slot being migrated.
    let from = cluster.node_for_slot(0);
    let to = cluster
        .master_ports()
        .into_iter()
        .find(|&p| p != from)
        .unwrap();
    cluster.cli(
        from,
        &["cluster", "setslot", "0", "migrating", &cluster.node_id(to)],
    );
    let (code, out) = run(&[&seed]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("migrating"), "{out}");
    let (code, out) = run(&["127.0.0.1:1"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("cannot read CLUSTER NODES"), "{out}");
}

fn sample(body: &str, prefix: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{prefix} missing"))
}

#[test]
fn metrics_are_valid_during_load() {
    let cluster = Cluster::start(3, 1);
    let proxy = with_admin(cluster.seeds());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let mut c = proxy.conn();
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _: () = redis::cmd("SET")
                    .arg(format!("m:{i}"))
                    .arg(i)
                    .query(&mut c)
                    .unwrap();
                let _: Option<i64> = redis::cmd("GET")
                    .arg(format!("m:{i}"))
                    .query(&mut c)
                    .unwrap();
                let _: Vec<Option<i64>> = redis::cmd("MGET")
                    .arg("m:1")
                    .arg("m:2")
                    .query(&mut c)
                    .unwrap();
                let _ = redis::cmd("MSETNX")
                    .arg("a")
                    .arg(1)
                    .arg("b")
                    .arg(2)
                    .query::<i64>(&mut c);
                i += 1;
            }
        })
    };
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(200));
        let (status, body) = proxy.admin_get("/metrics");
        assert_eq!(status, 200);
        promtool_check(&body);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    let (_, body) = proxy.admin_get("/metrics");
    assert!(
        sample(
            &body,
            "slotproxy_commands_total{command=\"get\",outcome=\"ok\"}"
        ) >= 1.0
    );
    assert!(
        sample(
            &body,
            "slotproxy_commands_total{command=\"msetnx\",outcome=\"error\"}"
        ) >= 1.0
    );
    assert!(sample(&body, "slotproxy_errors_total{kind=\"CROSSSLOT\"}") >= 1.0);
    assert!(sample(&body, "slotproxy_request_duration_seconds_count") >= 4.0);
    assert!(sample(&body, "slotproxy_frontend_connections_accepted_total") >= 1.0);
    assert!(sample(&body, "slotproxy_frontend_bytes_total{direction=\"in\"}") > 0.0);
    assert!(sample(&body, "slotproxy_backend_bytes_total{direction=\"out\"}") > 0.0);
    assert!(sample(&body, "slotproxy_backend_connections") >= 1.0);
    assert_eq!(sample(&body, "slotproxy_cluster_state"), 1.0);
    assert_eq!(sample(&body, "slotproxy_cluster_slots_ok"), 16384.0);
    assert_eq!(sample(&body, "slotproxy_cluster_nodes_ok"), 6.0);
    assert_eq!(
        sample(&body, "slotproxy_cluster_masters_without_replica"),
        0.0
    );
    assert!(sample(&body, "slotproxy_slot_table_version") >= 1.0);
    assert!(
        body.contains("slotproxy_replica_lag_bytes{master=\"127.0.0.1:"),
        "{body}"
    );
    assert!(body.contains("slotproxy_redirects_total{kind=\"moved\"}"));
}

#[test]
fn slowlog_records_slow_requests() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start_with(cluster.seeds(), |c| {
        c.frontend.slowlog_threshold = Duration::from_millis(30)
    });
    let mut c = proxy.conn();
    let _: () = redis::cmd("SET").arg("fast").arg(1).query(&mut c).unwrap();
    assert_eq!(
        redis::cmd("SLOWLOG")
            .arg("LEN")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    // A script that spins for 60 ms on the node.
    let spin = "local s=redis.call('TIME') while true do local n=redis.call('TIME') \
                if (n[1]-s[1])*1000000+(n[2]-s[2]) > 60000 then return 1 end end";
    let _: i64 = redis::cmd("EVAL").arg(spin).arg(0).query(&mut c).unwrap();
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG").arg("GET").query(&mut c).unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let redis::Value::Array(e) = &entries[0] else {
        panic!()
    };
    let redis::Value::Int(micros) = e[2] else {
        panic!()
    };
    assert!(micros >= 60_000, "{micros}");
    let text = format!("{e:?}");
    assert!(
        text.contains("EVAL") && text.contains("127.0.0.1:"),
        "{text}"
    );
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    assert_eq!(
        redis::cmd("SLOWLOG")
            .arg("LEN")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );

    // CONFIG reaches the proxy's slow log, which SLOWLOG answers from; the
    // nodes' stay as they were (no allow_config_write needed).
    let cfg = |c: &mut redis::Connection, args: &[&str]| -> redis::RedisResult<redis::Value> {
        common::cmd(args).query(c)
    };
    let got = cfg(&mut c, &["CONFIG", "GET", "slowlog-log-slower-than"]).unwrap();
    assert!(format!("{got:?}").contains("\"30000\""), "{got:?}");
    let _ = cfg(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "slowlog-log-slower-than",
            "0",
            "slowlog-max-len",
            "2",
        ],
    )
    .unwrap();
    for i in 0..5 {
        let _: () = redis::cmd("SET")
            .arg(format!("sl{i}"))
            .arg(1)
            .query(&mut c)
            .unwrap();
    }
    let len: i64 = redis::cmd("SLOWLOG").arg("LEN").query(&mut c).unwrap();
    assert_eq!(len, 2);
    let pairs: std::collections::HashMap<String, String> =
        common::cmd(&["CONFIG", "GET", "slowlog*"])
            .query(&mut c)
            .unwrap();
    assert_eq!(pairs["slowlog-log-slower-than"], "0");
    assert_eq!(pairs["slowlog-max-len"], "2");
    for p in cluster.master_ports() {
        let node = cluster.cli(p, &["CONFIG", "GET", "slowlog-log-slower-than"]);
        assert!(node.contains("10000"), "node {p}: {node}");
    }
    // Negative: nothing is logged, as in Redis.
    let _ = cfg(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "-1"]).unwrap();
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    let _: () = redis::cmd("SET")
        .arg("unlogged")
        .arg(1)
        .query(&mut c)
        .unwrap();
    let len: i64 = redis::cmd("SLOWLOG").arg("LEN").query(&mut c).unwrap();
    assert_eq!(len, 0);
    let e = cfg(&mut c, &["CONFIG", "SET", "slowlog-max-len", "many"]).unwrap_err();
    assert!(e.to_string().contains("slowlog-max-len"), "{e}");
    // Mixed with a node setting, it is a node write: refused by default.
    let e = cfg(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "slowlog-max-len",
            "5",
            "maxmemory-samples",
            "6",
        ],
    )
    .unwrap_err();
    assert!(e.to_string().contains("allow_config_write"), "{e}");
    drop(proxy);

    // Logging everything: each kind of request is logged with its own
    // arguments, whether its reply slot or the proxy kept the request
    // (forwards alone and in a batch, a fan-out, a local command).
    let proxy = Proxy::start_with(cluster.seeds(), |c| {
        c.frontend.slowlog_threshold = Duration::ZERO
    });
    let mut c = proxy.conn();
    let (a, b) = ("{a}k", "{b}k");
    assert_ne!(key_slot(a.as_bytes()), key_slot(b.as_bytes()));
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(a)
        .arg("one")
        .ignore()
        .cmd("GET")
        .arg(a)
        .ignore()
        .cmd("GET")
        .arg(b)
        .ignore()
        .cmd("MGET")
        .arg(a)
        .arg(b)
        .ignore()
        .cmd("PING")
        .arg("pong-arg")
        .ignore()
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SET").arg(b).arg("alone").query(&mut c).unwrap();
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query(&mut c)
        .unwrap();
    // Newest first: the lone SET, then the pipeline backwards.
    let args: Vec<String> = entries
        .iter()
        .map(|e| {
            array(&array(e)[3])
                .iter()
                .map(common::text)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(
        args[..6],
        [
            "SET {b}k alone",
            "PING pong-arg",
            "MGET {a}k {b}k",
            "GET {b}k",
            "GET {a}k",
            "SET {a}k one",
        ],
        "{args:?}"
    );
}

#[test]
fn reload_applies_what_it_can_and_reports_the_rest() {
    let cluster = Cluster::start(3, 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slotproxy.toml");
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("{s:?}")).collect();
    let write = |extra: &str| {
        std::fs::write(
            &path,
            format!(
                "[frontend]\nlisten = \"127.0.0.1:0\"\n{extra}\n[cluster]\nseeds = [{}]\n",
                seeds.join(", ")
            ),
        )
        .unwrap();
    };
    write("slowlog_threshold = \"1h\"");
    let proxy = Proxy::start_from_file(&path);
    let mut c = proxy.conn();
    assert!(redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory-samples", "6"])
        .query::<()>(&mut c)
        .is_err());
    let reload = |c: &mut redis::Connection| {
        redis::cmd("PROXY")
            .arg("CONFIG")
            .arg("RELOAD")
            .query::<Vec<String>>(c)
    };
    write("slowlog_threshold = \"0s\"\nallow_config_write = true\nmax_pipeline = 100\n[backend]\nrequest_timeout = \"3s\"");
    let lines = reload(&mut c).unwrap();
    for want in [
        "applied: frontend.slowlog_threshold",
        "applied: frontend.allow_config_write",
        "applied: frontend.max_pipeline",
        "applied: backend.request_timeout",
    ] {
        assert!(
            lines.iter().any(|l| l == want),
            "{want} missing from {lines:?}"
        );
    }
    // In effect at once.
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory-samples", "6"])
        .query(&mut c)
        .unwrap();
    assert!(
        redis::cmd("SLOWLOG")
            .arg("LEN")
            .query::<i64>(&mut c)
            .unwrap()
            >= 1
    );
    // A new listen address needs a restart.
    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("127.0.0.1:0", "127.0.0.1:1"),
    )
    .unwrap();
    assert_eq!(reload(&mut c).unwrap(), ["restart needed: frontend.listen"]);
    // An invalid file changes nothing and says why.
    write("max_clients = 0\nno_such_key = 1");
    let e = reload(&mut c).unwrap_err().to_string();
    assert!(
        e.contains("configuration not reloaded") && e.contains("no_such_key"),
        "{e}"
    );
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory-samples", "5"])
        .query(&mut c)
        .unwrap();
}

#[test]
fn sighup_reloads_the_binary() {
    let cluster = Cluster::start(3, 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slotproxy.toml");
    let port = common::free_port();
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("{s:?}")).collect();
    let config = |threshold: &str| {
        format!(
            "[frontend]\nlisten = \"127.0.0.1:{port}\"\nslowlog_threshold = \"{threshold}\"\n\
             [cluster]\nseeds = [{}]\n[log]\nlevel = \"warn\"\n",
            seeds.join(", ")
        )
    };
    std::fs::write(&path, config("1h")).unwrap();
    let mut running = Running(
        Command::new(env!("CARGO_BIN_EXE_slotproxy"))
            .arg("--config")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let child = &mut running.0;
    let url = format!("redis://127.0.0.1:{port}/");
    let connect = || redis::Client::open(url.as_str()).and_then(|c| c.get_connection());
    wait_until(Duration::from_secs(20), "binary serves", || {
        connect().is_ok()
    });
    let mut c = connect().unwrap();
    let _: () = redis::cmd("SET").arg("a").arg(1).query(&mut c).unwrap();
    assert_eq!(
        redis::cmd("SLOWLOG")
            .arg("LEN")
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );
    std::fs::write(&path, config("0s")).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_until(
        Duration::from_secs(10),
        "reloaded threshold in effect",
        || {
            let _: () = redis::cmd("SET").arg("a").arg(1).query(&mut c).unwrap();
            redis::cmd("SLOWLOG")
                .arg("LEN")
                .query::<i64>(&mut c)
                .unwrap()
                > 0
        },
    );
    // SIGTERM drains and exits cleanly.
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "exited after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
