//! Live migration from a standalone redis-server to a 6-node cluster
//! through the proxy, phases changed by reload while 8 clients write; and
//! the copy resuming after the source is killed with SIGKILL.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{free_port, wait_until, Cluster};

/// A standalone redis-server with its data directory, restartable on the
/// same port (AOF with fsync on every write: nothing acknowledged is lost
/// by a SIGKILL).
struct Source {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Source {
    fn start(dir: &Path) -> Source {
        let mut s = Source {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        wait_until(Duration::from_secs(20), "the source serves", || {
            redis::Client::open(self.url())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-9", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to the source")
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The proxy's configuration file with `[migration]` in `phase`.
fn write_config(path: &Path, cluster: &Cluster, source: &Source, phase: &str, extra: &str) {
    let cursor = path.with_extension("cursor");
    let text = format!(
        "[frontend]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [cluster]\nseeds = [\"{}\"]\n\
         [migration]\nsource = \"127.0.0.1:{}\"\nphase = \"{phase}\"\ncursor_file = {:?}\n{extra}\n",
        cluster.seeds()[0],
        source.port,
        cursor.display().to_string(),
    );
    std::fs::write(path, text).unwrap();
}

/// What every test starts from: a cluster, the temporary directory (kept
/// by the caller), a standalone source with its data in it, and the path of
/// the proxy's file there.
fn setup(masters: usize, replicas: usize) -> (Cluster, tempfile::TempDir, Source, PathBuf) {
    let cluster = Cluster::start(masters, replicas);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("source");
    std::fs::create_dir_all(&data).unwrap();
    let source = Source::start(&data);
    let path = dir.path().join("slotproxy.toml");
    (cluster, dir, source, path)
}

/// Writes the proxy's file with `[migration]` in `phase` and starts it.
fn start_proxy(path: &Path, cluster: &Cluster, source: &Source, phase: &str, extra: &str) -> Proxy {
    write_config(path, cluster, source, phase, extra);
    Proxy::start_from_file(path)
}

/// Moves the proxy to `phase` by rewriting its file and reloading.
fn reload_to(
    proxy: &Proxy,
    path: &Path,
    cluster: &Cluster,
    source: &Source,
    phase: &str,
    extra: &str,
) {
    write_config(path, cluster, source, phase, extra);
    let mut c = proxy.conn();
    let lines: Vec<String> = redis::cmd("PROXY")
        .arg("CONFIG")
        .arg("RELOAD")
        .query(&mut c)
        .expect("reload");
    assert!(
        lines.iter().any(|l| l == "applied: migration.phase"),
        "{lines:?}"
    );
    wait_until(Duration::from_secs(30), "the phase applies", || {
        status(proxy)["phase"] == phase
    });
}

fn status(proxy: &Proxy) -> serde_json::Value {
    let (code, body) = proxy.admin_get("/migration");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// What a key holds, as the model and the servers are compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Val {
    Absent,
    Str(String),
    Hash(BTreeMap<String, String>),
    List(Vec<String>),
    Set(BTreeSet<String>),
}

/// The type a seeded key has (its writes keep it).
fn kind_of(i: usize) -> &'static str {
    ["string", "counter", "hash", "list", "set"][i % 5]
}

fn key(i: usize) -> String {
    format!("mig:{i}")
}

/// Seeds `n` keys of mixed types, every 7th with a TTL; returns the model.
fn seed(con: &mut redis::Connection, n: usize) -> Vec<(Val, bool)> {
    let mut model = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut p = redis::pipe();
        for &i in chunk {
            let k = key(i);
            let v = match kind_of(i) {
                "string" => {
                    p.cmd("SET").arg(&k).arg(format!("v{i}")).ignore();
                    Val::Str(format!("v{i}"))
                }
                "counter" => {
                    p.cmd("SET").arg(&k).arg(i).ignore();
                    Val::Str(i.to_string())
                }
                "hash" => {
                    p.cmd("HSET")
                        .arg(&k)
                        .arg("a")
                        .arg(i)
                        .arg("b")
                        .arg("x")
                        .ignore();
                    Val::Hash(
                        [("a".to_string(), i.to_string()), ("b".into(), "x".into())]
                            .into_iter()
                            .collect(),
                    )
                }
                "list" => {
                    p.cmd("RPUSH").arg(&k).arg("l1").arg("l2").ignore();
                    Val::List(vec!["l1".into(), "l2".into()])
                }
                _ => {
                    p.cmd("SADD")
                        .arg(&k)
                        .arg("m1")
                        .arg(format!("m{i}"))
                        .ignore();
                    Val::Set(["m1".to_string(), format!("m{i}")].into_iter().collect())
                }
            };
            let ttl = i % 7 == 0;
            if ttl {
                p.cmd("EXPIRE").arg(&k).arg(3600).ignore();
            }
            model.push((v, ttl));
        }
        p.query::<()>(con).expect("seed");
    }
    model
}

/// Every key's (type, value, PTTL) on a connection, pipelined.
fn snapshot(con: &mut redis::Connection, keys: &[String]) -> Vec<(Val, i64)> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        let mut p = redis::pipe();
        for k in chunk {
            p.cmd("TYPE").arg(k).cmd("PTTL").arg(k);
        }
        let meta: Vec<redis::Value> = p.query(con).expect("TYPE/PTTL");
        let mut p = redis::pipe();
        let mut kinds = Vec::new();
        for (k, pair) in chunk.iter().zip(meta.chunks(2)) {
            let t: String = redis::from_redis_value(pair[0].clone()).unwrap();
            let pttl: i64 = redis::from_redis_value(pair[1].clone()).unwrap();
            match t.as_str() {
                "string" => p.cmd("GET").arg(k),
                "hash" => p.cmd("HGETALL").arg(k),
                "list" => p.cmd("LRANGE").arg(k).arg(0).arg(-1),
                "set" => p.cmd("SMEMBERS").arg(k),
                _ => p.cmd("EXISTS").arg(k),
            };
            kinds.push((t, pttl));
        }
        let values: Vec<redis::Value> = p.query(con).expect("values");
        for ((t, pttl), v) in kinds.into_iter().zip(values) {
            let val = match t.as_str() {
                "string" => Val::Str(redis::from_redis_value(v).unwrap()),
                "hash" => Val::Hash(redis::from_redis_value(v).unwrap()),
                "list" => Val::List(redis::from_redis_value(v).unwrap()),
                "set" => Val::Set(redis::from_redis_value(v).unwrap()),
                _ => Val::Absent,
            };
            out.push((val, pttl));
        }
    }
    out
}

/// One client: writes and reads its share of the keys (`i % 8 == id`)
/// through the proxy until `stop`, keeping the model of what it was
/// acknowledged. Any error fails the test.
fn client(
    port: u16,
    id: usize,
    mut model: HashMap<usize, (Val, bool)>,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
) -> HashMap<usize, (Val, bool)> {
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection())
        .expect("connect");
    let mine: Vec<usize> = model.keys().copied().collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ id as u64;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = mine[(x as usize) % mine.len()];
        let k = key(i);
        let op = (x >> 32) % 10;
        n += 1;
        let entry = model.get_mut(&i).unwrap();
        let result: redis::RedisResult<()> = (|| {
            match (op, kind_of(i)) {
                (0, _) => {
                    redis::cmd("DEL").arg(&k).query::<i64>(&mut con)?;
                    *entry = (Val::Absent, false);
                }
                (1, _) => {
                    let set: i64 = redis::cmd("EXPIRE").arg(&k).arg(3000).query(&mut con)?;
                    assert_eq!(set == 1, entry.0 != Val::Absent, "EXPIRE on {k}");
                    if set == 1 {
                        entry.1 = true;
                    }
                }
                (2 | 3, "string") => {
                    let got: Option<String> = redis::cmd("GET").arg(&k).query(&mut con)?;
                    let want = match &entry.0 {
                        Val::Str(s) => Some(s.clone()),
                        _ => None,
                    };
                    assert_eq!(got, want, "GET {k} read back what was written");
                }
                (_, "string") => {
                    let v = format!("c{id}-{n}");
                    redis::cmd("SET").arg(&k).arg(&v).query::<()>(&mut con)?;
                    *entry = (Val::Str(v), false);
                }
                (_, "counter") => {
                    let got: i64 = redis::cmd("INCR").arg(&k).query(&mut con)?;
                    let before = match &entry.0 {
                        Val::Str(s) => s.parse::<i64>().unwrap(),
                        _ => {
                            entry.1 = false;
                            0
                        }
                    };
                    assert_eq!(got, before + 1, "INCR {k}");
                    entry.0 = Val::Str(got.to_string());
                }
                (_, "hash") => {
                    let f = format!("f{}", n % 5);
                    let v = format!("h{n}");
                    redis::cmd("HSET")
                        .arg(&k)
                        .arg(&f)
                        .arg(&v)
                        .query::<i64>(&mut con)?;
                    match &mut entry.0 {
                        Val::Hash(h) => {
                            h.insert(f, v);
                        }
                        other => {
                            *other = Val::Hash([(f, v)].into_iter().collect());
                            entry.1 = false;
                        }
                    }
                }
                (_, "list") => {
                    let v = format!("p{n}");
                    let len: usize = redis::cmd("LPUSH").arg(&k).arg(&v).query(&mut con)?;
                    match &mut entry.0 {
                        Val::List(l) => l.insert(0, v),
                        other => {
                            *other = Val::List(vec![v]);
                            entry.1 = false;
                        }
                    }
                    if let Val::List(l) = &entry.0 {
                        assert_eq!(len, l.len(), "LPUSH {k}");
                    }
                }
                (_, _) => {
                    let v = format!("s{}", n % 50);
                    redis::cmd("SADD").arg(&k).arg(&v).query::<i64>(&mut con)?;
                    match &mut entry.0 {
                        Val::Set(s) => {
                            s.insert(v);
                        }
                        other => {
                            *other = Val::Set([v].into_iter().collect());
                            entry.1 = false;
                        }
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            panic!("client {id}: {k}: unexpected error {e}");
        }
        ops.fetch_add(1, Ordering::Relaxed);
    }
    model
}

/// Compares a side with the model: every key's type and value, and a TTL
/// where the model has one (none where it has none).
fn assert_matches(side: &str, snap: &[(Val, i64)], model: &[(Val, bool)]) {
    let mut bad = Vec::new();
    for (i, ((got, pttl), (want, ttl))) in snap.iter().zip(model).enumerate() {
        let ttl_ok = match (want, ttl) {
            (Val::Absent, _) => true,
            (_, true) => *pttl > 0,
            (_, false) => *pttl == -1,
        };
        if got != want || !ttl_ok {
            bad.push(format!(
                "{}: {got:?} ttl {pttl} != {want:?} ttl {ttl}",
                key(i)
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{side}: {} keys differ from the model, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

#[test]
fn phases_move_a_live_keyspace_with_no_write_lost() {
    const KEYS: usize = 50_000;
    let (cluster, _dir, source, path) = setup(3, 1);
    let model = seed(&mut source.conn(), KEYS);
    let proxy = start_proxy(&path, &cluster, &source, "source", "");

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..8)
        .map(|id| {
            let mine: HashMap<usize, (Val, bool)> = (0..KEYS)
                .filter(|i| i % 8 == id)
                .map(|i| (i, model[i].clone()))
                .collect();
            let (stop, ops, port) = (stop.clone(), ops.clone(), proxy.port());
            std::thread::spawn(move || client(port, id, mine, stop, ops))
        })
        .collect();
    let started = Instant::now();
    let wait_ops = |more: u64| {
        let target = ops.load(Ordering::Relaxed) + more;
        wait_until(Duration::from_secs(60), "client traffic", || {
            ops.load(Ordering::Relaxed) >= target
        });
    };
    wait_ops(2_000);
    // A refusal the cluster would make is made before the source.
    let mut c = proxy.conn();
    let e = common::err(&mut c, &["RENAME", "mig:1", "mig:2"]);
    assert!(e.starts_with("CROSSSLOT"), "{e}");

    reload_to(&proxy, &path, &cluster, &source, "copy", "copy_rate = 0");
    wait_until(Duration::from_secs(90), "the copy is done", || {
        status(&proxy)["copier"]["state"] == "done"
    });
    let copied = status(&proxy);
    eprintln!("after copy: {copied}");
    assert!(copied["keys_copied"].as_u64().unwrap() >= (KEYS as u64) * 9 / 10);
    assert_eq!(copied["progress"], 1.0);

    reload_to(&proxy, &path, &cluster, &source, "verify", "");
    wait_until(Duration::from_secs(90), "the verifier is done", || {
        status(&proxy)["verifier"]["state"] == "done"
    });
    let verified = status(&proxy);
    eprintln!("verifier: {}", verified["verifier"]);
    let last = &verified["verifier"]["last"];
    assert!(last["compared"].as_u64().unwrap() >= (KEYS as u64) * 9 / 10);
    // Writes go on while it compares: a key written between its two looks
    // may differ; a systematic loss would show thousands.
    assert!(last["differing"].as_u64().unwrap() <= 20, "{last}");

    reload_to(&proxy, &path, &cluster, &source, "target", "");
    wait_ops(5_000);
    let e = common::err(&mut c, &["FLUSHALL"]);
    assert!(e.contains("refused during the migration"), "{e}");
    stop.store(true, Ordering::Relaxed);
    let mut model = model;
    for h in clients {
        for (i, v) in h.join().expect("client thread saw no error") {
            model[i] = v;
        }
    }
    let total_ops = ops.load(Ordering::Relaxed);
    // The source got every write of `target` too (the way back).
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    wait_until(Duration::from_secs(10), "the mirror catches up", || {
        status(&proxy)["in_flight"] == 0
    });
    // Both sides, a chunk of each in turn (TTLs are read moments apart).
    let (mut via_proxy, mut at_source) = (proxy.conn(), source.conn());
    let (mut cluster_view, mut source_view) = (Vec::new(), Vec::new());
    for chunk in keys.chunks(500) {
        cluster_view.extend(snapshot(&mut via_proxy, chunk));
        source_view.extend(snapshot(&mut at_source, chunk));
    }
    assert_matches("source", &source_view, &model);
    assert_matches("cluster", &cluster_view, &model);
    for (i, ((_, a), (_, b))) in cluster_view.iter().zip(&source_view).enumerate() {
        assert!(
            (a - b).abs() <= 1000 || (*a < 0 && a == b),
            "{}: TTL {a} ms in the cluster, {b} ms at the source",
            key(i)
        );
    }
    reload_to(&proxy, &path, &cluster, &source, "done", "");
    eprintln!(
        "{total_ops} client operations in {:?}; final status {}",
        started.elapsed(),
        status(&proxy)
    );
    // Through the proxy in `done`: the cluster alone.
    let cluster_view = snapshot(&mut proxy.conn(), &keys);
    assert_matches("cluster", &cluster_view, &model);
    // No key beyond the model exists in the cluster (nothing resurrected
    // or invented).
    let mut c = proxy.conn();
    let dbsize: usize = redis::cmd("DBSIZE").query(&mut c).unwrap();
    let live = model.iter().filter(|(v, _)| *v != Val::Absent).count();
    assert_eq!(dbsize, live, "keys in the cluster");
}

#[test]
fn the_copy_pauses_while_the_source_is_down_and_resumes() {
    const KEYS: usize = 20_000;
    let (cluster, _dir, mut source, path) = setup(3, 1);
    let model = seed(&mut source.conn(), KEYS);
    let proxy = start_proxy(
        &path,
        &cluster,
        &source,
        "copy",
        "copy_rate = 4000\ncopy_batch = 50",
    );
    wait_until(Duration::from_secs(30), "the copy has started", || {
        status(&proxy)["keys_copied"].as_u64().unwrap_or(0) > 2_000
    });
    source.kill9();
    // Clients get errors while the source is down.
    let mut c = proxy.conn();
    let e = common::err(&mut c, &["SET", "mig:0", "x"]);
    assert!(!e.is_empty());
    wait_until(Duration::from_secs(30), "the copy pauses", || {
        status(&proxy)["copier"]["state"] == "paused"
    });
    let paused = status(&proxy);
    eprintln!("paused: {}", paused["copier"]);
    source.spawn();
    wait_until(Duration::from_secs(90), "the copy resumes and ends", || {
        status(&proxy)["copier"]["state"] == "done"
    });
    // The restarted source has a new hash seed: the copy went over it again.
    assert!(status(&proxy)["copy_restarts"].as_u64().unwrap() >= 1);
    // Writes go on; the sides agree.
    let _: () = redis::cmd("SET")
        .arg("mig:0")
        .arg("after")
        .query(&mut c)
        .unwrap();
    let mut model = model;
    model[0] = (Val::Str("after".into()), false);
    reload_to(&proxy, &path, &cluster, &source, "verify", "");
    wait_until(Duration::from_secs(60), "the verifier is done", || {
        status(&proxy)["verifier"]["state"] == "done"
    });
    let last = status(&proxy)["verifier"]["last"].clone();
    eprintln!("verifier: {last}");
    assert_eq!(last["equal"], true, "{last}");
    reload_to(&proxy, &path, &cluster, &source, "target", "");
    reload_to(&proxy, &path, &cluster, &source, "done", "");
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    assert_matches("cluster", &snapshot(&mut proxy.conn(), &keys), &model);
}

#[test]
fn a_reload_refuses_to_skip_phases() {
    let (cluster, _dir, source, path) = setup(1, 0);
    let proxy = start_proxy(&path, &cluster, &source, "source", "");
    let mut c = proxy.conn();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    let at_source: String = redis::cmd("GET")
        .arg("k")
        .query(&mut source.conn())
        .unwrap();
    assert_eq!(
        at_source, "v",
        "phase source serves from the standalone server"
    );
    write_config(&path, &cluster, &source, "done", "");
    let e = common::err(&mut c, &["PROXY", "CONFIG", "RELOAD"]);
    assert!(e.contains("cannot go from source to done"), "{e}");
    assert_eq!(status(&proxy)["phase"], "source");
}

/// What the cluster holds at `key` (from its slot's master), as a string.
fn in_cluster(cluster: &Cluster, key: &str) -> Option<String> {
    let port = cluster.node_for_slot(slotproxy::cluster::slot::key_slot(key.as_bytes()));
    let mut c = cluster.conn(port);
    let t: String = redis::cmd("TYPE").arg(key).query(&mut c).unwrap();
    match t.as_str() {
        "none" => None,
        "string" => redis::cmd("GET").arg(key).query(&mut c).unwrap(),
        "list" => {
            let l: Vec<String> = redis::cmd("LRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query(&mut c)
                .unwrap();
            Some(l.join(","))
        }
        "set" => {
            let mut s: Vec<String> = redis::cmd("SMEMBERS").arg(key).query(&mut c).unwrap();
            s.sort();
            Some(s.join(","))
        }
        other => Some(other.to_string()),
    }
}

#[test]
fn transactions_blocking_pops_and_multi_key_writes_reach_the_other_side() {
    let (cluster, _dir, source, path) = setup(3, 0);
    let proxy = start_proxy(&path, &cluster, &source, "copy", "");
    let mut c = proxy.conn();
    let q = |c: &mut redis::Connection, args: &[&str]| -> redis::Value { common::q(c, args) };
    // A transaction on one slot runs at the source; its keys are copied.
    q(&mut c, &["MULTI"]);
    q(&mut c, &["SET", "{t}a", "1"]);
    q(&mut c, &["INCR", "{t}n"]);
    q(&mut c, &["RPUSH", "{t}l", "x", "y"]);
    let exec = q(&mut c, &["EXEC"]);
    assert_eq!(common::array(&exec).len(), 3, "{exec:?}");
    // Across slots, as the cluster refuses it.
    q(&mut c, &["MULTI"]);
    q(&mut c, &["SET", "{t}a", "2"]);
    let e = common::err(&mut c, &["SET", "other", "1"]);
    assert!(e.starts_with("CROSSSLOT") || e.contains("slot"), "{e}");
    let e = common::err(&mut c, &["EXEC"]);
    assert!(e.starts_with("EXECABORT"), "{e}");
    // WATCH at the source, on a connection of its own: a change by another
    // client aborts the transaction, as on the source.
    q(&mut c, &["WATCH", "{t}a"]);
    q(&mut proxy.conn(), &["SET", "{t}a", "changed"]);
    q(&mut c, &["MULTI"]);
    q(&mut c, &["SET", "{t}a", "lost"]);
    assert_eq!(q(&mut c, &["EXEC"]), redis::Value::Nil);
    q(&mut c, &["WATCH", "{t}a"]);
    q(&mut c, &["MULTI"]);
    q(&mut c, &["SET", "{t}w", "kept"]);
    q(&mut c, &["SET", "{t}a", "won"]);
    let exec = q(&mut c, &["EXEC"]);
    assert_eq!(common::array(&exec).len(), 2, "{exec:?}");
    // A blocking pop on a dedicated connection; a non-deterministic pop;
    // writes over several slots.
    q(&mut c, &["RPUSH", "bl", "a", "b"]);
    let got = q(&mut c, &["BLPOP", "bl", "1"]);
    assert_eq!(common::array(&got).len(), 2);
    q(&mut c, &["SADD", "sp", "1", "2", "3"]);
    q(&mut c, &["SPOP", "sp"]);
    q(&mut c, &["MSET", "m1", "1", "m2", "2", "m3", "3"]);
    q(&mut c, &["DEL", "m1", "m2"]);
    let source_view = |k: &str| -> Option<String> {
        let mut s = source.conn();
        let t: String = redis::cmd("TYPE").arg(k).query(&mut s).unwrap();
        match t.as_str() {
            "none" => None,
            "string" => redis::cmd("GET").arg(k).query(&mut s).unwrap(),
            "list" => Some(
                redis::cmd("LRANGE")
                    .arg(k)
                    .arg(0)
                    .arg(-1)
                    .query::<Vec<String>>(&mut s)
                    .unwrap()
                    .join(","),
            ),
            _ => {
                let mut m: Vec<String> = redis::cmd("SMEMBERS").arg(k).query(&mut s).unwrap();
                m.sort();
                Some(m.join(","))
            }
        }
    };
    let keys = ["{t}a", "{t}w", "{t}n", "{t}l", "bl", "sp", "m1", "m2", "m3"];
    wait_until(
        Duration::from_secs(10),
        "the cluster holds the source's keys",
        || {
            keys.iter()
                .all(|k| in_cluster(&cluster, k) == source_view(k))
        },
    );
    assert_eq!(in_cluster(&cluster, "{t}l").as_deref(), Some("x,y"));
    assert_eq!(in_cluster(&cluster, "{t}a").as_deref(), Some("won"));
    // A WATCH made at the source does not carry over to the cluster.
    q(&mut c, &["WATCH", "{t}a"]);
    assert_eq!(in_cluster(&cluster, "m1"), None);

    // In target the cluster serves; the source follows.
    reload_to(&proxy, &path, &cluster, &source, "verify", "");
    reload_to(&proxy, &path, &cluster, &source, "target", "");
    q(&mut c, &["MULTI"]);
    q(&mut c, &["SET", "{t}a", "late"]);
    assert_eq!(q(&mut c, &["EXEC"]), redis::Value::Nil);
    q(&mut c, &["MSET", "m1", "a", "m4", "b"]);
    q(&mut c, &["MULTI"]);
    q(&mut c, &["LPUSH", "{t}l", "z"]);
    q(&mut c, &["EXEC"]);
    q(&mut c, &["SPOP", "sp"]);
    let got = q(&mut c, &["BLPOP", "bl", "1"]);
    assert_eq!(common::array(&got).len(), 2);
    let keys = ["{t}l", "bl", "sp", "m1", "m4"];
    wait_until(
        Duration::from_secs(10),
        "the source follows the cluster",
        || {
            keys.iter()
                .all(|k| in_cluster(&cluster, k) == source_view(k))
        },
    );
    assert_eq!(source_view("m4").as_deref(), Some("b"));

    // Status: the CLI and the metrics.
    let out = Command::new(env!("CARGO_BIN_EXE_slotproxy"))
        .args(["migrate", "status", "--admin"])
        .arg(proxy.admin.unwrap().to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("phase: target"), "{text}");
    assert!(text.contains("dual write:"), "{text}");
    let (_, metrics) = proxy.admin_get("/metrics");
    assert!(
        metrics.contains("slotproxy_migration_phase{phase=\"target\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("slotproxy_migration_keys{kind=\"copied\"}"));
}

#[test]
fn a_cleanly_stopped_proxy_resumes_the_copy_at_its_cursor() {
    const KEYS: usize = 20_000;
    let (cluster, _dir, source, path) = setup(3, 0);
    let model = seed(&mut source.conn(), KEYS);
    let mut proxy = start_proxy(
        &path,
        &cluster,
        &source,
        "copy",
        "copy_rate = 3000\ncopy_batch = 100",
    );
    wait_until(Duration::from_secs(30), "part of the copy", || {
        status(&proxy)["keys_scanned"].as_u64().unwrap_or(0) > 3_000
    });
    let drain = proxy.begin_drain();
    proxy.wait_drained(drain);
    drop(proxy);
    let saved = std::fs::read_to_string(path.with_extension("cursor")).unwrap();
    let words: Vec<&str> = saved.split_whitespace().collect();
    assert_eq!(words[1], "clean", "{saved}");
    assert_ne!(words[0], "0", "{saved}");

    let proxy = Proxy::start_from_file(&path);
    wait_until(Duration::from_secs(60), "the copy ends", || {
        status(&proxy)["copier"]["state"] == "done"
    });
    let s = status(&proxy);
    // Resumed: the second proxy scanned only the rest.
    let scanned = s["keys_scanned"].as_u64().unwrap();
    assert!(scanned < KEYS as u64 - 2_000, "{s}");
    assert_eq!(s["copy_restarts"], 0);
    reload_to(&proxy, &path, &cluster, &source, "verify", "");
    wait_until(Duration::from_secs(60), "the verifier is done", || {
        status(&proxy)["verifier"]["state"] == "done"
    });
    let last = status(&proxy)["verifier"]["last"].clone();
    assert_eq!(last["equal"], true, "{last}");
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    reload_to(&proxy, &path, &cluster, &source, "target", "");
    assert_matches("cluster", &snapshot(&mut proxy.conn(), &keys), &model);
}
