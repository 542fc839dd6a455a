//! Runs an in-process slotproxy in front of a test cluster.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use slotproxy::config::Config;
use slotproxy::server::Server;

/// An in-process proxy on a free loopback port; shut down on drop.
pub struct Proxy {
    pub addr: SocketAddr,
    /// The admin HTTP address, when `admin.listen` was set.
    pub admin: Option<SocketAddr>,
    runtime: Option<tokio::runtime::Runtime>,
    server: Option<Server>,
    /// The name of the runtime's threads (for [`Proxy::cpu_time`]).
    threads: String,
}

impl Proxy {
    /// Starts a proxy whose seeds are `seeds`, with default settings.
    pub fn start(seeds: Vec<String>) -> Proxy {
        Proxy::start_with(seeds, |_| {})
    }

    /// Starts a proxy from a configuration file, reloadable from it.
    pub fn start_from_file(path: &std::path::Path) -> Proxy {
        let config = slotproxy::server::load_config(Some(path), &Default::default())
            .expect("valid config file");
        let source = slotproxy::server::ReloadSource {
            path: Some(path.to_path_buf()),
            ..Default::default()
        };
        Proxy::launch(&config, source)
    }

    /// Runs a server on a runtime of its own.
    fn launch(config: &Config, source: slotproxy::server::ReloadSource) -> Proxy {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        // At most 15 characters: the kernel's limit for a thread name.
        let threads = format!(
            "sp-{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(threads.clone())
            .enable_all()
            .build()
            .expect("tokio runtime");
        let server = runtime
            .block_on(Server::start_with_reload(config, source))
            .expect("proxy starts");
        Proxy {
            addr: server.local_addr(),
            admin: server.admin_addr(),
            runtime: Some(runtime),
            server: Some(server),
            threads,
        }
    }

    /// CPU time (user and system) the proxy's threads have used so far.
    pub fn cpu_time(&self) -> std::time::Duration {
        let mut ticks = 0u64;
        for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
            let dir = task.expect("task entry").path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if comm.trim_end() != self.threads {
                continue;
            }
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
            // Fields after the parenthesised name: state is field 3, utime
            // and stime are fields 14 and 15.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<&str> = after.split_whitespace().collect();
            for i in [11, 12] {
                ticks += fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0);
            }
        }
        // USER_HZ is 100 on Linux.
        std::time::Duration::from_millis(ticks * 10)
    }

    /// Starts a proxy after `tweak` adjusts the configuration.
    pub fn start_with(seeds: Vec<String>, tweak: impl FnOnce(&mut Config)) -> Proxy {
        let proxy = Proxy::start_with_unchecked(seeds, tweak);
        assert_eq!(
            proxy.server.as_ref().unwrap().slot_table().assigned_slots(),
            16384,
            "proxy discovered the whole cluster"
        );
        proxy
    }

    /// Like [`Proxy::start_with`], without requiring a successful discovery.
    pub fn start_with_unchecked(seeds: Vec<String>, tweak: impl FnOnce(&mut Config)) -> Proxy {
        let mut config = Config::default();
        config.frontend.listen = "127.0.0.1:0".into();
        config.cluster.seeds = seeds;
        tweak(&mut config);
        config.validate().expect("test config is valid");
        Proxy::launch(&config, Default::default())
    }

    /// Starts draining (what SIGTERM does) in the background; wait for it
    /// with [`Proxy::wait_drained`].
    pub fn begin_drain(&mut self) -> tokio::task::JoinHandle<()> {
        let server = self.server.take().expect("not drained yet");
        self.runtime.as_ref().unwrap().spawn(server.shutdown())
    }

    /// Waits for a drain started by [`Proxy::begin_drain`].
    pub fn wait_drained(&self, drain: tokio::task::JoinHandle<()>) {
        self.runtime.as_ref().unwrap().block_on(drain).unwrap();
    }

    /// `GET path` on the admin server: (status code, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        self.admin_request("GET", path)
    }

    /// `METHOD path` (no body) on the admin server: (status code, body).
    pub fn admin_request(&self, method: &str, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.admin.expect("admin enabled")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A redis-rs connection to the proxy.
    pub fn conn(&self) -> redis::Connection {
        let con = redis::Client::open(format!("redis://{}/", self.addr))
            .expect("client")
            .get_connection()
            .expect("connect to proxy");
        // A hung reply fails the test instead of hanging the suite.
        con.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("read timeout");
        con
    }

    /// A numeric field of `INFO proxy` (read on a connection of its own).
    pub fn info_field(&self, field: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("proxy")
            .query(&mut self.conn())
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} missing in {info}"))
    }

    /// A raw TCP connection to the proxy, with a read timeout.
    pub fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect to proxy");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let (Some(rt), Some(server)) = (self.runtime.as_ref(), self.server.take()) {
            rt.block_on(server.shutdown());
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// Writes `input`, then reads until `expected_len` bytes arrived, the peer
/// closed, or 10 s passed; returns what was read and whether the peer closed.
pub fn exchange(stream: &mut TcpStream, input: &[u8], expected_len: usize) -> (Vec<u8>, bool) {
    stream.write_all(input).expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while out.len() < expected_len && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                break
            }
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

/// Reads until the peer closes (or 10 s); true if it closed.
pub fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}
