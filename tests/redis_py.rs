//! redis-py's own test suite through the proxy, with each protocol: the
//! library's tests of commands, pipelines, scripting, functions, pub/sub,
//! locks, encodings and MONITOR, against a real cluster behind the proxy. What fails
//! by design or is not done yet is listed, with why, in
//! `tests/redis-py-expected-failures.txt`; any other failure fails the
//! test, and a listed test that passes is reported for removal.
//! `make test-deps` downloads the suite (redis-py's sdist) into
//! `target/redis-py`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::proxy::Proxy;
use common::Cluster;

/// The unpacked suite, as `deploy/local/ensure-test-deps.sh` leaves it.
fn suite() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let suite = root.join("target/redis-py/redis-8.2.0");
    assert!(
        suite.join("tests/conftest.py").exists(),
        "redis-py's test suite is not in {}: run `make test-deps`",
        suite.display()
    );
    suite
}

fn run(protocol: &str) {
    let suite = suite();
    let cluster = Cluster::start(3, 0);
    // The suite sets and restores node settings (CONFIG SET): allowed, as
    // an operator may.
    let proxy = Proxy::start_with(cluster.seeds(), |c| c.frontend.allow_config_write = true);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(root.join("tests/python/redis_py_suite.py"))
        .arg("--suite")
        .arg(&suite)
        .arg("--url")
        .arg(format!("redis://{}/0", proxy.addr))
        .args(["--protocol", protocol])
        .arg("--expected")
        .arg(root.join("tests/redis-py-expected-failures.txt"))
        .arg("--server")
        .arg(match common::server() {
            common::Server::Redis => "redis",
            common::Server::Valkey => "valkey",
        })
        .output()
        .expect("python3 runs");
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "redis-py suite, RESP{protocol}:\n{report}"
    );
}

#[test]
fn redis_py_suite_resp2() {
    run("2");
}

#[test]
fn redis_py_suite_resp3() {
    run("3");
}
