//! How every backend connection is opened: TCP, then TLS if configured,
//! then AUTH if the cluster needs it. Multiplexed lanes, dedicated
//! connections, pub/sub, discovery and `slotproxy check` all go through
//! [`Link`].

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::codec::{Decoder, FramedRead};

use crate::config::BackendConfig;
use crate::resp::{encode, error_text, ReplyDecoder};
use crate::tls::{Stream, TlsConnector};

/// The AUTH request for the `[backend]` credentials (validated at load).
pub fn auth_frame(c: &BackendConfig) -> Option<Bytes> {
    let (user, password) = c.credentials().ok().flatten()?;
    Some(match user {
        Some(u) => encode::command(&["AUTH", u.as_str(), password.0.as_str()]),
        None => encode::command(&["AUTH", password.0.as_str()]),
    })
}

/// How to open a ready connection to a node: TCP, then TLS if configured,
/// then AUTH if the cluster needs it.
#[derive(Clone, Debug, Default)]
pub struct Link {
    /// The AUTH request sent first on every new connection.
    pub auth: Option<Bytes>,
    /// TLS to the nodes.
    pub tls: Option<Arc<TlsConnector>>,
}

impl Link {
    /// The link for the `[backend]` section (credentials and TLS files are
    /// read here; the configuration was validated at load).
    pub fn from_config(c: &BackendConfig) -> Result<Link, String> {
        Ok(Link {
            auth: auth_frame(c),
            tls: if c.tls.enabled {
                Some(Arc::new(TlsConnector::new(&c.tls)?))
            } else {
                None
            },
        })
    }

    /// Opens a connection to `addr`: connect and TLS handshake within
    /// `timeout`, then AUTH.
    pub async fn open(&self, addr: &str, timeout: Duration) -> Result<Stream, String> {
        let mut stream = crate::tls::connect(addr, timeout, self.tls.as_deref()).await?;
        if let Some(auth) = &self.auth {
            tokio::time::timeout(timeout, authenticate(&mut stream, auth, addr))
                .await
                .map_err(|_| format!("AUTH to {addr} timed out"))??;
        }
        Ok(stream)
    }
}

/// Sends AUTH on a fresh connection and checks the reply (before the
/// connection carries anything else). The error never includes the secret.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    auth: &[u8],
    addr: &str,
) -> Result<(), String> {
    crate::tls::write_all(stream, auth)
        .await
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut decoder = ReplyDecoder::new();
    let mut buf = BytesMut::with_capacity(64);
    loop {
        if let Some(reply) = decoder
            .decode(&mut buf)
            .map_err(|e| format!("invalid AUTH reply from {addr}: {e}"))?
        {
            if let Some(why) = error_text(&reply) {
                return Err(format!("AUTH to {addr} failed: {why}"));
            }
            return Ok(());
        }
        if stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| format!("read from {addr}: {e}"))?
            == 0
        {
            return Err(format!("{addr} closed the connection during AUTH"));
        }
    }
}

/// Sends one request on a fresh, dedicated connection and reads one reply
/// (used by the topology refresher, never on the data path).
pub async fn roundtrip(
    addr: &str,
    link: &Link,
    frame: &[u8],
    timeout: Duration,
) -> Result<Bytes, String> {
    let work = async {
        let mut stream = link.open(addr, timeout).await?;
        crate::tls::write_all(&mut stream, frame)
            .await
            .map_err(|e| format!("write to {addr}: {e}"))?;
        let mut framed = FramedRead::new(stream, ReplyDecoder::new());
        match framed.next().await {
            Some(Ok(reply)) => Ok(reply),
            Some(Err(e)) => Err(format!("invalid reply from {addr}: {e}")),
            None => Err(format!("{addr} closed the connection")),
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("request to {addr} timed out"))?
}
