//! TLS with rustls, on both sides: the frontend acceptor (optionally
//! verifying client certificates) and the backend connector (verifying node
//! certificates, optionally presenting a client certificate).
//!
//! Both hold their rustls configuration in an `ArcSwap`: a reload reads the
//! PEM files again (for both sides before installing either) and swaps the
//! new configurations in; connections already established keep the one
//! they started with.
//!
//! [`Stream`] is what the data path reads and writes: plain TCP, TLS, or a
//! Unix socket (frontend only). Its halves ([`ReadHalf`], [`WriteHalf`])
//! use the socket's own zero-cost split for plain connections, so plain
//! traffic pays nothing for TLS support.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{unix, TcpStream, UnixStream};

use crate::config::{parse_host_port, BackendTlsConfig, Config, FrontendTlsConfig};

/// The one crypto provider slotproxy uses (ring).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key}: invalid PEM in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{key}: no certificate in {}", path.display()));
    }
    Ok(certs)
}

fn load_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("{key}: no private key in {}", path.display())
        }
        e => format!(
            "{key}: cannot read a private key from {}: {e}",
            path.display()
        ),
    })
}

fn load_roots(key: &str, path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(key, path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{key}: unusable CA certificate in {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The rustls server configuration for `[frontend.tls]`, reading its files.
pub fn server_config(c: &FrontendTlsConfig) -> Result<Arc<ServerConfig>, String> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("frontend.tls: {e}"))?;
    let builder = match &c.client_ca_file {
        Some(ca) => {
            let roots = Arc::new(load_roots("frontend.tls.client_ca_file", ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if c.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("frontend.tls.client_ca_file: {e}"))?,
            )
        }
        None => builder.with_no_client_auth(),
    };
    let certs = load_certs("frontend.tls.cert_file", &c.cert_file)?;
    let key = load_key("frontend.tls.key_file", &c.key_file)?;
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("frontend.tls: the certificate and key do not fit: {e}"))?;
    Ok(Arc::new(config))
}

/// The TLS files a configuration names, loaded as they would be at start:
/// one problem per side whose certificates or keys do not load. Part of
/// validating a configuration (the server's `load_config`), so a broken
/// certificate fails the load or reload and changes nothing.
pub fn check_files(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(t) = &config.frontend.tls {
        if let Err(e) = server_config(t) {
            problems.push(e);
        }
    }
    if config.backend.tls.enabled {
        if let Err(e) = client_config(&config.backend.tls) {
            problems.push(e);
        }
    }
    problems
}

/// The rustls client configuration for `[backend.tls]`, reading its files.
pub fn client_config(c: &BackendTlsConfig) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("backend.tls: {e}"))?;
    let builder = if c.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
    } else {
        let roots = match &c.ca_file {
            Some(ca) => load_roots("backend.tls.ca_file", ca)?,
            None => {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(
                        "backend.tls.ca_file: not set and the system has no CA certificates".into(),
                    );
                }
                roots
            }
        };
        builder.with_root_certificates(roots)
    };
    let config = match (&c.cert_file, &c.key_file) {
        (Some(cert), Some(key)) => {
            let certs = load_certs("backend.tls.cert_file", cert)?;
            let key = load_key("backend.tls.key_file", key)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("backend.tls: the certificate and key do not fit: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("backend.tls: cert_file and key_file go together".into()),
    };
    Ok(Arc::new(config))
}

/// Accepts any server certificate (`backend.tls.insecure_skip_verify`); the
/// handshake signatures are still checked.
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The frontend's TLS acceptor; [`TlsAcceptor::install`] swaps in new
/// certificates for the connections accepted after it.
pub struct TlsAcceptor {
    config: ArcSwap<ServerConfig>,
    handshake_timeout: crate::config::Tunable,
}

impl TlsAcceptor {
    /// An acceptor for `[frontend.tls]`.
    pub fn new(c: &FrontendTlsConfig) -> Result<TlsAcceptor, String> {
        Ok(TlsAcceptor {
            config: ArcSwap::new(server_config(c)?),
            handshake_timeout: crate::config::Tunable::new(c.handshake_timeout),
        })
    }

    /// Swaps in a configuration built by [`server_config`] from `c` (a
    /// reload; connections already accepted keep theirs).
    pub fn install(&self, config: Arc<ServerConfig>, c: &FrontendTlsConfig) {
        self.config.store(config);
        self.handshake_timeout.set(c.handshake_timeout);
    }

    /// Runs the server handshake on an accepted connection, within
    /// `handshake_timeout`.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Stream> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.load_full());
        let tls = tokio::time::timeout(self.handshake_timeout.get(), acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        Ok(Stream::Tls(Box::new(tls.into())))
    }
}

/// The backend's TLS connector; [`TlsConnector::install`] swaps in new
/// certificates for connections opened after it.
pub struct TlsConnector {
    config: ArcSwap<ClientConfig>,
    server_name: ArcSwap<Option<String>>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name.load())
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// A connector for `[backend.tls]`.
    pub fn new(c: &BackendTlsConfig) -> Result<TlsConnector, String> {
        Ok(TlsConnector {
            config: ArcSwap::new(client_config(c)?),
            server_name: ArcSwap::from_pointee(c.server_name.clone()),
        })
    }

    /// Swaps in a configuration built by [`client_config`] from `c` (a
    /// reload; connections already open keep theirs).
    pub fn install(&self, config: Arc<ClientConfig>, c: &BackendTlsConfig) {
        self.config.store(config);
        self.server_name.store(Arc::new(c.server_name.clone()));
    }

    /// Runs the client handshake with node `addr` (`host:port`) on a
    /// connected socket. The certificate must name `backend.tls.server_name`
    /// if set, otherwise the host of `addr` (an IP address or a name).
    pub async fn connect(&self, tcp: TcpStream, addr: &str) -> Result<Stream, String> {
        let name = match &**self.server_name.load() {
            Some(n) => n.clone(),
            None => parse_host_port(addr)
                .map(|(host, _)| host.to_string())
                .map_err(|e| format!("{addr}: {e}"))?,
        };
        let name = ServerName::try_from(name.as_str())
            .map_err(|e| format!("TLS to {addr}: invalid server name {name:?}: {e}"))?
            .to_owned();
        let connector = tokio_rustls::TlsConnector::from(self.config.load_full());
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
        Ok(Stream::Tls(Box::new(tls.into())))
    }
}

/// A connection: plain TCP, TLS over TCP, or a Unix socket (a client of
/// `frontend.unix_socket`).
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS, client or server side.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    /// A Unix domain socket.
    Unix(UnixStream),
}

impl Stream {
    /// Splits into halves that a reader and a writer task can own. Plain
    /// TCP uses the socket's own split (no locking).
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Unix(r), WriteHalf::Unix(w))
            }
            tls => {
                let (r, w) = tokio::io::split(tls);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }

    /// Whether this is a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    fn tcp(&self) -> io::Result<&TcpStream> {
        match self {
            Stream::Tcp(s) => Ok(s),
            Stream::Tls(s) => Ok(s.get_ref().0),
            Stream::Unix(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a Unix socket has no IP address",
            )),
        }
    }

    /// The peer's address (an error for a Unix socket).
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp()?.peer_addr()
    }

    /// The local address (an error for a Unix socket).
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp()?.local_addr()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The read half of a [`Stream`].
pub enum ReadHalf {
    /// Plain TCP.
    Tcp(OwnedReadHalf),
    /// A Unix socket.
    Unix(unix::OwnedReadHalf),
    /// TLS.
    Tls(tokio::io::ReadHalf<Stream>),
}

/// The write half of a [`Stream`].
pub enum WriteHalf {
    /// Plain TCP.
    Tcp(OwnedWriteHalf),
    /// A Unix socket.
    Unix(unix::OwnedWriteHalf),
    /// TLS.
    Tls(tokio::io::WriteHalf<Stream>),
}

impl ReadHalf {
    /// Whether this is a plain socket (TCP or Unix): one an idle session can
    /// wait on without a read buffer.
    pub fn is_plain(&self) -> bool {
        !matches!(self, ReadHalf::Tls(_))
    }

    /// Waits until the socket is readable (never, for TLS).
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            ReadHalf::Tcp(s) => s.readable().await,
            ReadHalf::Unix(s) => s.readable().await,
            ReadHalf::Tls(_) => std::future::pending().await,
        }
    }

    /// Ready when input has arrived (or the peer closed, or the socket
    /// failed), without a read buffer and consuming nothing. A one-byte
    /// peek, not [`ReadHalf::readable`]: tokio reports a newly registered
    /// socket readable before anything arrives, which made every new client
    /// start its active phase (and allocate its buffers) at once. The peek
    /// confirms the readiness (and clears it if there is nothing). It costs
    /// a system call, so only idle sessions use it. Never ready for TLS.
    pub fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            ReadHalf::Tcp(s) => {
                let mut byte = [0u8; 1];
                let mut buf = ReadBuf::new(&mut byte);
                s.poll_peek(cx, &mut buf).map(|_| ())
            }
            ReadHalf::Unix(s) => {
                let stream: &UnixStream = s.as_ref();
                loop {
                    match stream.poll_read_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(_)) => return Poll::Ready(()),
                        Poll::Ready(Ok(())) => {}
                    }
                    let peeked = stream.try_io(tokio::io::Interest::READABLE, || {
                        let mut byte = [std::mem::MaybeUninit::uninit(); 1];
                        socket2::SockRef::from(stream).peek(&mut byte)
                    });
                    match peeked {
                        // Readiness was stale (now cleared): wait again.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        // Input, end of input, or an error for the read.
                        _ => return Poll::Ready(()),
                    }
                }
            }
            ReadHalf::Tls(_) => Poll::Pending,
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ReadHalf::Unix(s) => Pin::new(s).poll_read(cx, buf),
            ReadHalf::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            WriteHalf::Unix(s) => Pin::new(s).poll_write(cx, buf),
            WriteHalf::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            WriteHalf::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            WriteHalf::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalf::Tcp(s) => s.is_write_vectored(),
            WriteHalf::Unix(s) => s.is_write_vectored(),
            WriteHalf::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_flush(cx),
            WriteHalf::Unix(s) => Pin::new(s).poll_flush(cx),
            WriteHalf::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            WriteHalf::Unix(s) => Pin::new(s).poll_shutdown(cx),
            WriteHalf::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Writes all of `buf`, then flushes. TLS needs the flush: rustls may keep
/// the last records of a write that met a full socket until the next write
/// or flush (plain TCP's flush does nothing).
pub async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, buf: &[u8]) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    w.write_all(buf).await?;
    w.flush().await
}

/// Opens a TCP connection to `addr` with `timeout` and TCP_NODELAY, then
/// the TLS handshake if `tls` is given (within the same timeout).
pub async fn connect(
    addr: &str,
    timeout: Duration,
    tls: Option<&TlsConnector>,
) -> Result<Stream, String> {
    let work = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("set TCP_NODELAY on {addr}: {e}"))?;
        match tls {
            Some(t) => t.connect(tcp, addr).await,
            None => Ok(Stream::Tcp(tcp)),
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("connect to {addr} timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let c = FrontendTlsConfig {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            client_ca_file: None,
            require_client_cert: false,
            handshake_timeout: Duration::from_secs(1),
        };
        let e = server_config(&c).unwrap_err();
        assert!(e.contains("frontend.tls.cert_file") && e.contains("/nonexistent/cert.pem"));
        let b = BackendTlsConfig {
            enabled: true,
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = client_config(&b).unwrap_err();
        assert!(e.contains("backend.tls.ca_file"), "{e}");
        let b = BackendTlsConfig {
            enabled: true,
            insecure_skip_verify: true,
            cert_file: Some("/x".into()),
            ..Default::default()
        };
        assert!(client_config(&b).unwrap_err().contains("go together"));
    }

    #[test]
    fn empty_pem_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a pem\n").unwrap();
        let c = FrontendTlsConfig {
            cert_file: empty.clone(),
            key_file: empty,
            client_ca_file: None,
            require_client_cert: false,
            handshake_timeout: Duration::from_secs(1),
        };
        assert!(server_config(&c).unwrap_err().contains("no certificate"));
    }
}
