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
    let slot = slotproxy::slot::key_slot(b"harness");
    let owner = cluster.node_for_slot(slot);
    assert_eq!(cluster.cli(owner, &["set", "harness", "1"]).trim(), "OK");
    drop(cluster);
    for p in ports {
        assert!(!common::port_open(p), "port {p} still open after drop");
    }
}
