//! TLS: clients to the proxy (`redis-cli --tls`, client certificates),
//! the proxy to a TLS-only-verified cluster (`--tls-port`, `tls-cluster`,
//! client certificates required by the nodes), and certificates reloaded on
//! SIGHUP and when a mounted Secret is renewed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::proxy::Proxy;
use common::{make_tls, Cluster, Running, TlsFiles};
use slotproxy::config::{BackendTlsConfig, FrontendTlsConfig};

const BIN: &str = env!("CARGO_BIN_EXE_slotproxy");

/// `[frontend.tls]` serving `files`' certificate.
fn frontend_tls(files: &TlsFiles) -> FrontendTlsConfig {
    FrontendTlsConfig {
        cert_file: files.cert.clone(),
        key_file: files.key.clone(),
        client_ca_file: None,
        require_client_cert: false,
        handshake_timeout: Duration::from_secs(10),
    }
}

/// Runs `redis-cli --tls --cacert CA [--cert C --key K] -p PORT args`;
/// returns (success, stdout + stderr).
fn tls_cli(port: u16, ca: &Path, client: Option<&TlsFiles>, args: &[&str]) -> (bool, String) {
    let mut c = Command::new(common::cli_bin());
    c.args(["--tls", "--cacert", ca.to_str().unwrap()]);
    if let Some(f) = client {
        c.args([
            "--cert",
            f.cert.to_str().unwrap(),
            "--key",
            f.key.to_str().unwrap(),
        ]);
    }
    let out = c
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success() && !text.contains("Could not connect"),
        text,
    )
}

/// The output of a `redis-cli --tls` command that must succeed.
fn tls_ok(port: u16, ca: &Path, client: Option<&TlsFiles>, args: &[&str]) -> String {
    let (ok, text) = tls_cli(port, ca, client, args);
    assert!(ok, "redis-cli --tls {args:?} failed: {text}");
    text.trim_end().to_string()
}

/// A long-lived TLS client connection (rustls, blocking), for checking
/// that connections opened before a reload keep working.
struct TlsConn(rustls::StreamOwned<rustls::ClientConnection, TcpStream>);

impl TlsConn {
    fn open(port: u16, ca: &Path) -> TlsConn {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca).unwrap();
        for cert in rustls_pemfile_certs(&pem) {
            roots.add(cert).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let conn = rustls::ClientConnection::new(
            Arc::new(config),
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
        )
        .unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        TlsConn(rustls::StreamOwned::new(conn, tcp))
    }

    /// Sends one command and returns its reply's raw bytes.
    fn call(&mut self, args: &[&str]) -> String {
        let frame = slotproxy::resp::encode::command(args);
        self.0.write_all(&frame).unwrap();
        self.0.flush().unwrap();
        let mut decoder = slotproxy::resp::ReplyDecoder::new();
        let mut buf = bytes::BytesMut::new();
        loop {
            use tokio_util::codec::Decoder;
            if let Some(reply) = decoder.decode(&mut buf).unwrap() {
                return String::from_utf8_lossy(&reply).into_owned();
            }
            let mut chunk = [0u8; 4096];
            let n = self.0.read(&mut chunk).expect("read reply");
            assert!(n > 0, "connection closed");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The whole path over TLS: redis-cli --tls to the proxy, the proxy to a
/// cluster whose nodes require client certificates and replicate over TLS.
#[test]
fn redis_cli_over_tls_to_a_tls_cluster() {
    let cluster = Cluster::start_tls(3, 1);
    let dir = tempfile::tempdir().unwrap();
    let proxy_certs = make_tls(dir.path(), "proxy");
    let node_files = cluster.tls.as_ref().unwrap();
    let proxy = Proxy::start_with(cluster.tls_seeds(), |c| {
        c.frontend.tls = Some(frontend_tls(&proxy_certs));
        c.backend.tls = BackendTlsConfig {
            enabled: true,
            ca_file: Some(node_files.ca.clone()),
            cert_file: Some(node_files.cert.clone()),
            key_file: Some(node_files.key.clone()),
            ..Default::default()
        };
    });
    let port = proxy.port();
    let ca = &proxy_certs.ca;
    assert_eq!(tls_ok(port, ca, None, &["PING"]), "PONG");
    assert_eq!(tls_ok(port, ca, None, &["SET", "tls:a", "1"]), "OK");
    assert_eq!(tls_ok(port, ca, None, &["GET", "tls:a"]), "1");
    // Fan-out over several backend TLS connections.
    let mut mset = vec!["MSET"];
    let keys: Vec<String> = (0..20).map(|i| format!("tls:k{i}")).collect();
    for k in &keys {
        mset.push(k);
        mset.push("v");
    }
    assert_eq!(tls_ok(port, ca, None, &mset), "OK");
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    assert_eq!(tls_ok(port, ca, None, &mget).lines().count(), 20);
    assert_eq!(tls_ok(port, ca, None, &["DBSIZE"]), "21");
    // Large values both ways over TLS on both sides (several TLS records,
    // writes that meet full socket buffers).
    let mut conn = TlsConn::open(port, ca);
    let big = "x".repeat(4 << 20);
    assert_eq!(conn.call(&["SET", "tls:big", &big]), "+OK\r\n");
    let reply = conn.call(&["GET", "tls:big"]);
    assert_eq!(reply.len(), big.len() + "$4194304\r\n\r\n".len());
    // A dedicated (blocking) connection over TLS.
    assert_eq!(tls_ok(port, ca, None, &["BLPOP", "tls:list", "0.1"]), "");
    // The keys really are on the nodes owning their slots.
    let owner = cluster.node_for_slot(slotproxy::cluster::slot::key_slot(b"tls:a"));
    let mut node = cluster.conn(owner);
    let v: String = common::q(&mut node, &["GET", "tls:a"]);
    assert_eq!(v, "1");
    // The listener speaks TLS only: a plain client gets nowhere, and the
    // proxy keeps serving TLS clients.
    let mut plain = TcpStream::connect(proxy.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = plain.read(&mut buf).unwrap_or(0);
    assert!(!buf[..n].starts_with(b"+PONG"), "plain text was served");
    assert_eq!(tls_ok(port, ca, None, &["GET", "tls:a"]), "1");
    // `slotproxy check` speaks TLS to the nodes too.
    let out = Command::new(BIN)
        .args(["check", &cluster.tls_seeds()[0], "--tls", "--cacert"])
        .arg(&node_files.ca)
        .arg("--cert")
        .arg(&node_files.cert)
        .arg("--key")
        .arg(&node_files.key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Backend TLS misconfigured: a clear error, never a hang or a plain-text
/// fallback.
#[test]
fn backend_tls_with_the_wrong_ca_fails_clearly() {
    let cluster = Cluster::start_tls(1, 0);
    let dir = tempfile::tempdir().unwrap();
    let other = make_tls(dir.path(), "other");
    let node_files = cluster.tls.as_ref().unwrap();
    let proxy = Proxy::start_with_unchecked(cluster.tls_seeds(), |c| {
        c.backend.tls = BackendTlsConfig {
            enabled: true,
            ca_file: Some(other.ca.clone()),
            cert_file: Some(node_files.cert.clone()),
            key_file: Some(node_files.key.clone()),
            ..Default::default()
        };
        c.cluster.discovery_timeout = Duration::from_secs(2);
        // Requests wait for a discovery this long before failing.
        c.retry.budget = Duration::from_secs(1);
    });
    let mut con = proxy.conn();
    let e = common::err(&mut con, &["GET", "x"]);
    assert!(
        e.contains("CLUSTERDOWN") && e.contains("TLS handshake") && e.contains("UnknownIssuer"),
        "{e}"
    );
}

#[test]
fn client_certificates_are_verified() {
    let cluster = Cluster::start(1, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = make_tls(dir.path(), "server");
    let clients = make_tls(dir.path(), "clients");
    let stranger = make_tls(dir.path(), "stranger");
    for required in [true, false] {
        let proxy = Proxy::start_with(cluster.seeds(), |c| {
            c.frontend.tls = Some(FrontendTlsConfig {
                client_ca_file: Some(clients.ca.clone()),
                require_client_cert: required,
                ..frontend_tls(&server)
            });
        });
        let port = proxy.port();
        assert_eq!(tls_ok(port, &server.ca, Some(&clients), &["PING"]), "PONG");
        let (ok, text) = tls_cli(port, &server.ca, Some(&stranger), &["PING"]);
        assert!(
            !ok || !text.contains("PONG"),
            "stranger's certificate accepted: {text}"
        );
        let (ok, text) = tls_cli(port, &server.ca, None, &["PING"]);
        if required {
            assert!(
                !ok || !text.contains("PONG"),
                "no certificate accepted: {text}"
            );
        } else {
            assert_eq!(text.trim(), "PONG", "optional client certificate");
        }
    }
}

#[test]
fn slow_handshakes_time_out_without_hurting_others() {
    let cluster = Cluster::start(1, 0);
    let dir = tempfile::tempdir().unwrap();
    let server = make_tls(dir.path(), "server");
    let proxy = Proxy::start_with(cluster.seeds(), |c| {
        c.frontend.tls = Some(FrontendTlsConfig {
            handshake_timeout: Duration::from_millis(300),
            ..frontend_tls(&server)
        });
    });
    // Silent clients and garbage instead of a ClientHello.
    let mut silent = TcpStream::connect(proxy.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut garbage = TcpStream::connect(proxy.addr).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    garbage.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut tls = TlsConn::open(proxy.port(), &server.ca);
    assert_eq!(tls.call(&["PING"]), "+PONG\r\n");
    assert!(
        common::proxy::closed_by_peer(&mut silent),
        "silent client kept"
    );
    assert!(
        common::proxy::closed_by_peer(&mut garbage),
        "garbage client kept"
    );
    assert_eq!(tls.call(&["SET", "k", "v"]), "+OK\r\n");
}

#[test]
fn certificates_reload_on_sighup() {
    let cluster = Cluster::start(1, 0);
    let dir = tempfile::tempdir().unwrap();
    let first = make_tls(dir.path(), "first");
    let second = make_tls(dir.path(), "second");
    // The proxy reads its certificate from fixed paths, as from a
    // Kubernetes secret mount.
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let port = common::free_port();
    let config = dir.path().join("slotproxy.toml");
    std::fs::write(
        &config,
        format!(
            "[frontend]\nlisten = \"127.0.0.1:{port}\"\n\
             [frontend.tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n\
             [cluster]\nseeds = [\"{}\"]\n[log]\nlevel = \"warn\"\n",
            cluster.seeds()[0]
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start slotproxy");
    let pid = child.id().to_string();
    let _proxy = Running(child);
    common::wait_until(Duration::from_secs(20), "TLS PING", || {
        tls_cli(port, &first.ca, None, &["PING"]).1.contains("PONG")
    });
    let mut before = TlsConn::open(port, &first.ca);
    assert_eq!(before.call(&["PING"]), "+PONG\r\n");

    // Renewed certificate under the same names, then SIGHUP.
    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    common::wait_until(Duration::from_secs(10), "new certificate served", || {
        tls_cli(port, &second.ca, None, &["PING"])
            .1
            .contains("PONG")
    });
    let (ok, text) = tls_cli(port, &first.ca, None, &["PING"]);
    assert!(
        !ok || !text.contains("PONG"),
        "old certificate still served: {text}"
    );
    // The connection opened before the reload keeps working.
    assert_eq!(before.call(&["SET", "reload", "1"]), "+OK\r\n");

    // A broken file is refused by the reload (PROXY CONFIG RELOAD says
    // why), and the certificate in use stays.
    std::fs::write(&cert, "garbage\n").unwrap();
    let reply = before.call(&["PROXY", "CONFIG", "RELOAD"]);
    assert!(
        reply.starts_with('-') && reply.contains("frontend.tls.cert_file"),
        "{reply}"
    );
    assert_eq!(tls_ok(port, &second.ca, None, &["GET", "reload"]), "1");
    std::fs::copy(&second.cert, &cert).unwrap();
    let reply = before.call(&["PROXY", "CONFIG", "RELOAD"]);
    assert!(reply.contains("certificates reloaded: frontend"), "{reply}");
}

/// The certificate the proxy at `port` serves to a new TLS client that
/// trusts every CA in `cas`; None if the handshake fails.
fn served_cert(port: u16, cas: &[&Path]) -> Option<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for cert in rustls_pemfile_certs(&std::fs::read(ca).unwrap()) {
            roots.add(cert).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(
        Arc::new(config),
        rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).ok()?;
    }
    Some(conn.peer_certificates()?.first()?.to_vec())
}

/// The DER of the first certificate in a PEM file.
fn der(pem: &Path) -> Vec<u8> {
    rustls_pemfile_certs(&std::fs::read(pem).unwrap())[0].to_vec()
}

#[test]
fn a_renewed_certificate_in_a_secret_volume_is_served_within_5s() {
    let cluster = Cluster::start(1, 0);
    let dir = tempfile::tempdir().unwrap();
    let first = make_tls(dir.path(), "first");
    let second = make_tls(dir.path(), "second");
    let read = std::fs::read;
    // The Secret as Kubernetes mounts it (tls.crt -> ..data/tls.crt), and
    // cert-manager's renewal as the kubelet applies it: a new ..data.
    let mut secret = common::volume::Volume::new(
        &dir.path().join("tls"),
        &[
            ("tls.crt", &read(&first.cert).unwrap()),
            ("tls.key", &read(&first.key).unwrap()),
        ],
    );
    let port = common::free_port();
    let config = dir.path().join("slotproxy.toml");
    std::fs::write(
        &config,
        format!(
            "[frontend]\nlisten = \"127.0.0.1:{port}\"\n\
             [frontend.tls]\ncert_file = {:?}\nkey_file = {:?}\n\
             [cluster]\nseeds = [\"{}\"]\n",
            secret.path("tls.crt"),
            secret.path("tls.key"),
            cluster.seeds()[0]
        ),
    )
    .unwrap();
    let log = dir.path().join("slotproxy.log");
    let _proxy = Running(
        Command::new(BIN)
            .args(["--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start slotproxy"),
    );
    let cas = [first.ca.as_path(), second.ca.as_path()];
    common::wait_until(Duration::from_secs(20), "the first certificate", || {
        served_cert(port, &cas) == Some(der(&first.cert))
    });
    let mut before = TlsConn::open(port, &first.ca);
    assert_eq!(before.call(&["PING"]), "+PONG\r\n");

    secret.update(&[
        ("tls.crt", &read(&second.cert).unwrap()),
        ("tls.key", &read(&second.key).unwrap()),
    ]);
    let renewed = std::time::Instant::now();
    common::wait_until(Duration::from_secs(5), "the renewed certificate", || {
        served_cert(port, &cas) == Some(der(&second.cert))
    });
    eprintln!("served {:?} after the renewal", renewed.elapsed());
    assert_eq!(before.call(&["SET", "renewed", "1"]), "+OK\r\n");

    // A certificate that does not load: logged with the file's key, and
    // the renewed one stays in use.
    secret.update(&[
        ("tls.crt", b"garbage\n"),
        ("tls.key", &read(&second.key).unwrap()),
    ]);
    let logged = || {
        let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
        text.contains("configuration not reloaded") && text.contains("frontend.tls.cert_file")
    };
    common::wait_until(Duration::from_secs(5), "the broken file logged", logged);
    assert_eq!(served_cert(port, &cas), Some(der(&second.cert)));
    assert_eq!(tls_ok(port, &second.ca, None, &["GET", "renewed"]), "1");
}
