//! The floor of `make bench`: a server on the proxy's runtime (tokio, one
//! thread) and request decoder that answers every request itself, with no
//! routing and no backend. What it costs per request is one read, one
//! decode and one write: the least any proxy on this runtime can spend.
//! The proxy's CPU per request is reported as a multiple of it.
//!
//! `floor PORT [VALUE_BYTES]`: GET and MGET answer values of VALUE_BYTES
//! (3 by default, redis-benchmark's `-d`), everything else `+OK`.

use bytes::{BufMut, BytesMut};
use slotproxy::resp::{Limits, Request, RequestDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .and_then(|p| p.parse().ok())
        .expect("usage: floor PORT [VALUE_BYTES]");
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let value = {
        let mut v = format!("${size}\r\n").into_bytes();
        v.extend(std::iter::repeat_n(b'x', size));
        v.extend_from_slice(b"\r\n");
        v
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let value: &'static [u8] = Box::leak(value.into_boxed_slice());
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(serve(stream, value));
        }
    })
}

async fn serve(mut stream: TcpStream, value: &'static [u8]) {
    let _ = stream.set_nodelay(true);
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut out = BytesMut::with_capacity(16 * 1024);
    loop {
        if input.capacity() - input.len() < 4096 {
            input.reserve(16 * 1024);
        }
        match stream.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            match decoder.decode(&mut input) {
                Ok(Some(req)) => answer(&req, value, &mut out),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
}

fn answer(req: &Request, value: &[u8], out: &mut BytesMut) {
    let name = req.arg(0);
    if name.eq_ignore_ascii_case(b"get") {
        out.put_slice(value);
    } else if name.eq_ignore_ascii_case(b"mget") {
        out.put_slice(format!("*{}\r\n", req.argc() - 1).as_bytes());
        for _ in 1..req.argc() {
            out.put_slice(value);
        }
    } else {
        out.put_slice(b"+OK\r\n");
    }
}
