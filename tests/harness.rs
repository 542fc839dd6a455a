//! The test harness itself: clusters start healthy and vanish on drop.

mod common;

use common::Cluster;

#[test]
fn cluster_starts_and_cleans_up() {
    let cluster = Cluster::start(3, 1);
    let ports = cluster.ports();
    assert_eq!(ports.len(), 6);
    assert_eq!(cluster.master_ports().len(), 3);
    for &p in &ports {
        assert!(cluster
            .cli(p, &["cluster", "info"])
            .contains("cluster_state:ok"));
    }
    let slot = slotproxy::cluster::slot::key_slot(b"harness");
    let owner = cluster.node_for_slot(slot);
    assert_eq!(cluster.cli(owner, &["set", "harness", "1"]).trim(), "OK");
    // Through a node that does not own the slot: redis-cli -c follows MOVED.
    let other = *ports.iter().find(|&&p| p != owner).unwrap();
    assert_eq!(
        cluster.cli(other, &["-c", "set", "harness", "2"]).trim(),
        "OK"
    );
    assert_eq!(cluster.cli(owner, &["get", "harness"]).trim(), "2");
    drop(cluster);
    for p in ports {
        assert!(!common::port_open(p), "port {p} still open after drop");
    }
}

#[test]
fn runs_the_server_the_environment_names() {
    let cluster = Cluster::start(3, 0);
    let info = cluster.cli(cluster.ports()[0], &["info", "server"]);
    let valkey = info.contains("valkey_version:");
    assert_eq!(
        valkey,
        common::server() == common::Server::Valkey,
        "SLOTPROXY_TEST_SERVER={:?}, INFO server:\n{info}",
        std::env::var("SLOTPROXY_TEST_SERVER")
    );
}
