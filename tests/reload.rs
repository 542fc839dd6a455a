//! Reload without a signal: the configuration watched in a directory laid
//! out like a Kubernetes volume (ConfigMap updates re-point `..data`), a
//! broken file that changes nothing, and `POST /reload` on the admin server.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::volume::Volume;
use common::{wait_until, Cluster, Running};

const BIN: &str = env!("CARGO_BIN_EXE_slotproxy");

/// The slotproxy binary reading `config`, its log (text, info) going to
/// the file `log`.
fn run_binary(config: &Path, log: &Path) -> Running {
    let log = std::fs::File::create(log).unwrap();
    Running(
        Command::new(BIN)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start slotproxy"),
    )
}

/// A connection to the binary at `port`, once it serves.
fn connect(port: u16) -> redis::Connection {
    let url = format!("redis://127.0.0.1:{port}/");
    let open = || redis::Client::open(url.as_str()).and_then(|c| c.get_connection());
    wait_until(Duration::from_secs(20), "the binary serves", || {
        open().is_ok()
    });
    open().unwrap()
}

/// Whether a SET is now slow enough for the slow log: its length after one.
fn slowlog_len_after_a_set(c: &mut redis::Connection) -> i64 {
    let _: () = redis::cmd("SET").arg("k").arg("v").query(c).unwrap();
    redis::cmd("SLOWLOG").arg("LEN").query(c).unwrap()
}

/// A proxy configuration listening on `port`.
fn config(port: u16, cluster: &Cluster, extra: &str) -> Vec<u8> {
    format!(
        "[frontend]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n[cluster]\nseeds = [\"{}\"]\n",
        cluster.seeds()[0]
    )
    .into_bytes()
}

fn log_text(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned()
}

#[test]
fn a_kubernetes_configmap_update_is_applied_within_5s() {
    let cluster = Cluster::start(1, 0);
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut volume = Volume::new(
        &dir.path().join("config"),
        &[(
            "slotproxy.toml",
            &config(port, &cluster, "slowlog_threshold = \"1h\""),
        )],
    );
    let log = dir.path().join("slotproxy.log");
    let _proxy = run_binary(&volume.path("slotproxy.toml"), &log);
    let mut c = connect(port);
    assert_eq!(slowlog_len_after_a_set(&mut c), 0);

    volume.update(&[(
        "slotproxy.toml",
        &config(port, &cluster, "slowlog_threshold = \"0s\""),
    )]);
    let swapped = Instant::now();
    wait_until(
        Duration::from_secs(5),
        "the new threshold in effect",
        || slowlog_len_after_a_set(&mut c) > 0,
    );
    eprintln!("applied {:?} after the swap", swapped.elapsed());
    wait_until(Duration::from_secs(2), "the reload logged", || {
        log_text(&log).contains(r#"applied=["frontend.slowlog_threshold"]"#)
    });

    // A key that shapes the connection pools: logged as needing a restart.
    volume.update(&[(
        "slotproxy.toml",
        &config(
            port,
            &cluster,
            "slowlog_threshold = \"0s\"\n[backend]\nconnections_per_node = 4",
        ),
    )]);
    wait_until(Duration::from_secs(5), "restart needed logged", || {
        log_text(&log).contains(r#"restart_needed=["backend.connections_per_node"]"#)
    });
    let text = log_text(&log);
    assert!(!text.contains('\x1b'), "colour codes in a log file: {text}");
}

#[test]
fn a_broken_config_changes_nothing_is_logged_and_its_fix_applies() {
    let cluster = Cluster::start(1, 0);
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut volume = Volume::new(
        &dir.path().join("config"),
        &[(
            "slotproxy.toml",
            &config(port, &cluster, "slowlog_threshold = \"1h\""),
        )],
    );
    let log = dir.path().join("slotproxy.log");
    let _proxy = run_binary(&volume.path("slotproxy.toml"), &log);
    let mut c = connect(port);

    // An unknown key, then a file that is not TOML: each logged with the
    // reason, neither applied.
    let log = &log;
    let failures =
        |n: usize| move || log_text(log).matches("configuration not reloaded").count() == n;
    volume.update(&[(
        "slotproxy.toml",
        &config(
            port,
            &cluster,
            "slowlog_threshold = \"0s\"\nno_such_key = 1",
        ),
    )]);
    wait_until(Duration::from_secs(5), "unknown key logged", failures(1));
    let text = log_text(log);
    assert!(
        text.contains("ERROR") && text.contains("no_such_key"),
        "{text}"
    );
    volume.update(&[("slotproxy.toml", b"[frontend\nslowlog_threshold = \"0s\"\n")]);
    wait_until(Duration::from_secs(5), "broken TOML logged", failures(2));
    assert_eq!(slowlog_len_after_a_set(&mut c), 0, "nothing applied");
    // Not retried while the file stays as it is.
    std::thread::sleep(Duration::from_secs(3));
    assert!(failures(2)(), "{}", log_text(log));

    // The next change is tried again.
    volume.update(&[(
        "slotproxy.toml",
        &config(port, &cluster, "slowlog_threshold = \"0s\""),
    )]);
    wait_until(Duration::from_secs(5), "the fixed file applied", || {
        slowlog_len_after_a_set(&mut c) > 0
    });
}

#[test]
fn post_reload_is_off_by_default_and_reports_when_allowed() {
    let cluster = Cluster::start(1, 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slotproxy.toml");
    // No watching: every reload here is one the test asks for.
    std::fs::write(
        &path,
        format!(
            "[frontend]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [reload]\nwatch_interval = \"0s\"\n[cluster]\nseeds = [\"{}\"]\n",
            cluster.seeds()[0]
        ),
    )
    .unwrap();
    let proxy = Proxy::start_from_file(&path);
    let (status, body) = proxy.admin_request("POST", "/reload");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admin.allow_reload = true"), "{body}");
    assert_eq!(proxy.admin_request("GET", "/reload").0, 405);
    assert_eq!(proxy.admin_request("POST", "/healthz").0, 405);

    // Turned on by a reload of its own.
    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("[reload]", "allow_reload = true\n[reload]"),
    )
    .unwrap();
    let lines: Vec<String> = redis::cmd("PROXY")
        .arg("CONFIG")
        .arg("RELOAD")
        .query(&mut proxy.conn())
        .unwrap();
    assert_eq!(lines, ["applied: admin.allow_reload"]);
    assert_eq!(
        proxy.admin_request("POST", "/reload"),
        (200, String::new()),
        "nothing changed: no line"
    );
    let allowed = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        allowed.replace(
            "[admin]",
            "slowlog_threshold = \"0s\"\nmax_pipeline = 100\n[admin]",
        ),
    )
    .unwrap();
    let (status, body) = proxy.admin_request("POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "applied: frontend.max_pipeline\napplied: frontend.slowlog_threshold\n"
    );
    std::fs::write(
        &path,
        allowed.replace("[admin]", "no_such_key = 1\n[admin]"),
    )
    .unwrap();
    let (status, body) = proxy.admin_request("POST", "/reload");
    assert_eq!(status, 422, "{body}");
    assert!(
        body.starts_with("configuration not reloaded") && body.contains("no_such_key"),
        "{body}"
    );
    assert!(
        slowlog_len_after_a_set(&mut proxy.conn()) > 0,
        "the last good configuration stays"
    );
}
