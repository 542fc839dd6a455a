//! One plain `redis-server` (no cluster): the reference a reply through
//! the proxy is compared with. Killed on drop, like a cluster's nodes.

use std::net::TcpStream;
use std::time::Duration;

use super::{spawn_node, NodeProc};

/// A standalone Redis server on a free loopback port.
pub struct Standalone {
    node: NodeProc,
    _dir: tempfile::TempDir,
}

impl Standalone {
    /// Starts one (`cluster-enabled no` overrides the harness's default).
    pub fn start() -> Standalone {
        let dir = tempfile::Builder::new()
            .prefix("slotproxy-standalone-")
            .tempdir()
            .expect("temp dir");
        let node = spawn_node(dir.path(), &["--cluster-enabled", "no"]);
        Standalone { node, _dir: dir }
    }

    /// Its client port.
    pub fn port(&self) -> u16 {
        self.node.port
    }

    /// A redis-rs connection.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.node.port))
            .and_then(|c| c.get_connection())
            .expect("connect to the standalone server")
    }

    /// A raw TCP connection, with a read timeout.
    pub fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.node.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.node.child.kill();
        let _ = self.node.child.wait();
    }
}
