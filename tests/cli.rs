//! The `slotproxy` binary: flags, config validation, and serving a real cluster.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Cluster, Running};

const BIN: &str = env!("CARGO_BIN_EXE_slotproxy");

/// A connection to the binary on `port`, once it answers PING.
fn connect_when_up(port: u16) -> redis::Connection {
    let url = format!("redis://127.0.0.1:{port}/");
    common::wait_until(Duration::from_secs(20), "slotproxy answers PING", || {
        redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    });
    redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap()
}

#[test]
fn invalid_config_reports_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(
            b"[frontend]\nlisten = \"nope\"\nmax_clients = 0\n[cluster]\nseeds = [\"redis\"]\n[backend]\nconnections_per_node = 100\n",
        )
        .unwrap();
    let out = Command::new(BIN)
        .args(["--config", path.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("4 problems"), "{err}");
    for key in [
        "frontend.listen",
        "frontend.max_clients",
        "cluster.seeds[0]",
        "backend.connections_per_node",
    ] {
        assert!(err.contains(key), "{key} missing: {err}");
    }

    std::fs::write(&path, "[frontend]\nlisten_addr = \"x\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config", path.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_addr"));

    // Flags override the file; the shipped reference config is valid.
    let out = Command::new(BIN)
        .args([
            "--config",
            "config/slotproxy.toml",
            "--seed",
            "127.0.0.1:1",
            "--check-config",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn binary_serves_a_cluster_with_flag_overrides() {
    let cluster = Cluster::start(3, 0);
    let port = common::free_port();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--log-level",
        "warn",
    ]);
    for seed in cluster.seeds() {
        cmd.args(["--seed", &seed]);
    }
    let _proxy = Running(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start slotproxy"),
    );
    let mut con = connect_when_up(port);
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("cli:{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
    }
    let v: i64 = redis::cmd("GET").arg("cli:42").query(&mut con).unwrap();
    assert_eq!(v, 42);
}

#[test]
fn health_subcommand_probes_the_admin_server() {
    let port = common::free_port();
    let admin = format!("127.0.0.1:{}", common::free_port());
    // No cluster at the seed: the proxy serves /healthz but is not ready.
    let _proxy = Running(
        Command::new(BIN)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin",
                &admin,
                "--seed",
                "127.0.0.1:1",
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start slotproxy"),
    );
    let health = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    common::wait_until(Duration::from_secs(20), "slotproxy health passes", || {
        health(&["health", "--admin", &admin]).0 == Some(0)
    });
    let (code, out) = health(&["health", "--admin", &admin]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("/healthz: ok"), "{out}");

    let (code, out) = health(&["health", "--admin", &admin, "--ready"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("HTTP 503") && out.contains("not ready"),
        "{out}"
    );

    // Without --admin: admin.listen of --config; a wildcard is probed on loopback.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let admin_port = admin.rsplit(':').next().unwrap();
    std::fs::write(
        &path,
        format!(
            "[admin]\nlisten = \"0.0.0.0:{admin_port}\"\n[cluster]\nseeds = [\"127.0.0.1:1\"]\n"
        ),
    )
    .unwrap();
    let (code, out) = health(&["--config", path.to_str().unwrap(), "health"]);
    assert_eq!(code, Some(0), "{out}");

    // Nothing listening, or no admin address in the file: 1 (Docker reserves 2).
    let closed = format!("127.0.0.1:{}", common::free_port());
    let (code, out) = health(&["health", "--admin", &closed, "--timeout", "500ms"]);
    assert_eq!(code, Some(1), "{out}");
    std::fs::write(&path, "[cluster]\nseeds = [\"127.0.0.1:1\"]\n").unwrap();
    let (code, out) = health(&["--config", path.to_str().unwrap(), "health"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("admin.listen is not set"), "{out}");
}

#[test]
fn log_redirects_names_each_absorbed_moved_and_sums_them_per_refresh() {
    let cluster = Cluster::start(3, 0);
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("slotproxy.toml");
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("{s:?}")).collect();
    std::fs::write(
        &config,
        format!(
            "[frontend]\nlisten = \"127.0.0.1:{port}\"\n[cluster]\nseeds = [{}]\nrefresh_interval = \"1h\"\n[log]\nredirects = true\n",
            seeds.join(", ")
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let _proxy = Running(
        Command::new(BIN)
            .args(["--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start slotproxy"),
    );
    let mut con = connect_when_up(port);
    // "a" is in slot 15495; moved while the proxy's table still has the old owner.
    let slot = slotproxy::cluster::slot::key_slot(b"a");
    let from = cluster.node_for_slot(slot);
    let to = cluster.move_empty_slot(slot);
    let v: Option<String> = redis::cmd("GET").arg("a").query(&mut con).unwrap();
    assert_eq!(v, None);
    let line = format!("from=127.0.0.1:{from} to=127.0.0.1:{to}");
    // Fields as plain `key=value` (no colours, no quotes).
    let text = || {
        let raw = std::fs::read_to_string(&log).unwrap_or_default();
        let mut plain = String::new();
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            match c {
                '\u{1b}' => {
                    for c in chars.by_ref() {
                        if c == 'm' {
                            break;
                        }
                    }
                }
                '"' => {}
                c => plain.push(c),
            }
        }
        plain
    };
    let logged = common::poll_until(Duration::from_secs(10), || {
        let text = text();
        text.contains("MOVED absorbed")
            && text.contains(&format!("slot={slot}"))
            && text.contains(&line)
            && text.contains("moved=1")
    });
    assert!(logged, "{}", text());
}

/// Starts the binary with no cluster to find (it logs a warning and
/// serves) and its stderr going to `stderr`; returns once it logged that it
/// accepts clients, read through `log`.
fn log_until_serving(format: &str, stderr: Stdio, log: impl Fn() -> Vec<u8>) -> Vec<u8> {
    let args = [
        "--listen".to_string(),
        format!("127.0.0.1:{}", common::free_port()),
        "--seed".into(),
        format!("127.0.0.1:{}", common::free_port()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("slotproxy.toml");
    std::fs::write(&config, format!("[log]\nformat = \"{format}\"\n")).unwrap();
    let _proxy = Running(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    let mut text = Vec::new();
    common::wait_until(Duration::from_secs(20), "accepting clients logged", || {
        text = log();
        String::from_utf8_lossy(&text).contains("accepting clients")
    });
    text
}

#[test]
fn logs_not_written_to_a_terminal_have_no_colour_codes() {
    // Text to a file, as journald or `docker logs` keep it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slotproxy.log");
    let file = std::fs::File::create(&path).unwrap();
    let text = log_until_serving("text", file.into(), || std::fs::read(&path).unwrap());
    let shown = String::from_utf8_lossy(&text);
    assert!(
        shown.contains(" INFO ") && shown.contains(" WARN "),
        "{shown}"
    );
    assert!(!text.contains(&0x1b), "ESC in a text log file: {shown:?}");

    // JSON to a pipe: one object per line, no escape either.
    let (reader, writer) = std::io::pipe().unwrap();
    let read = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = read.clone();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut reader = reader;
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let json = log_until_serving("json", writer.into(), || read.lock().unwrap().clone());
    assert!(!json.contains(&0x1b));
    for line in String::from_utf8(json).unwrap().lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v.is_object() && v["level"].is_string(), "{line}");
    }
}
