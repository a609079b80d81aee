//! The harness's own origin servers, on loopback (and in the namespace world): a keep-alive
//! HTTP server with a 1 KiB body, and three tunnel servers that each expect the captured
//! ClientHello first — one answers 1 KiB and waits for the close, one streams the number of
//! bytes the client asks for, one acknowledges with a byte and stays idle.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

use crate::HELLO_CLASSIC;

/// The HTTP origin's body size and the tunnel origin's reply size.
pub(super) const REPLY_BYTES: usize = 1024;
/// What the idle origin sends once the hello has arrived.
pub(super) const IDLE_ACK: u8 = b'k';
/// The bulk origin's write size.
const BULK_CHUNK: usize = 256 * 1024;

/// Where each origin listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Endpoints {
    /// Keep-alive HTTP, 1 KiB bodies.
    pub(super) http: SocketAddr,
    /// Hello in, 1 KiB out, then waits for the client's close.
    pub(super) reply: SocketAddr,
    /// Hello and a big-endian u64 count in, that many bytes out, close.
    pub(super) bulk: SocketAddr,
    /// Hello in, one byte out, then idle until the client closes.
    pub(super) idle: SocketAddr,
}

/// The running origins; they stop when this is dropped.
#[derive(Debug)]
pub(super) struct Origins {
    runtime: Runtime,
    /// The loopback addresses.
    pub(super) endpoints: Endpoints,
}

impl Origins {
    /// Starts every origin on 127.0.0.1, on a runtime of `threads` worker threads.
    pub(super) fn start(threads: usize) -> io::Result<Origins> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("load-origin")
            .enable_all()
            .build()?;
        let endpoints = runtime.block_on(async {
            let bind = || TcpListener::bind("127.0.0.1:0");
            let (http, reply, bulk, idle) =
                (bind().await?, bind().await?, bind().await?, bind().await?);
            let endpoints = Endpoints {
                http: http.local_addr()?,
                reply: reply.local_addr()?,
                bulk: bulk.local_addr()?,
                idle: idle.local_addr()?,
            };
            tokio::spawn(accept(http, Kind::Http));
            tokio::spawn(accept(reply, Kind::Reply));
            tokio::spawn(accept(bulk, Kind::Bulk));
            tokio::spawn(accept(idle, Kind::Idle));
            io::Result::Ok(endpoints)
        })?;
        Ok(Origins { runtime, endpoints })
    }

    /// Serves the reply origin (hello in, 1 KiB out) on `listener`, a socket made elsewhere
    /// (e.g. inside a network namespace), until the returned handle aborts it.
    pub(super) fn serve_reply(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<tokio::task::AbortHandle> {
        listener.set_nonblocking(true)?;
        let _guard = self.runtime.enter();
        let listener = TcpListener::from_std(listener)?;
        Ok(self
            .runtime
            .spawn(accept(listener, Kind::Reply))
            .abort_handle())
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Http,
    Reply,
    Bulk,
    Idle,
}

async fn accept(listener: TcpListener, kind: Kind) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = serve(stream, kind).await;
                });
            }
            // Out of descriptors or a connection reset before accept: try again shortly.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

async fn serve(mut stream: TcpStream, kind: Kind) -> io::Result<()> {
    match kind {
        Kind::Http => http(stream).await,
        Kind::Reply => {
            read_hello(&mut stream).await?;
            stream.write_all(&[b'r'; REPLY_BYTES]).await?;
            drain(stream).await
        }
        Kind::Bulk => {
            read_hello(&mut stream).await?;
            let mut count = stream.read_u64().await?;
            let chunk = vec![b'b'; BULK_CHUNK];
            while count > 0 {
                let n = usize::try_from(count).map_or(BULK_CHUNK, |c| c.min(BULK_CHUNK));
                stream.write_all(&chunk[..n]).await?;
                count -= n as u64;
            }
            stream.shutdown().await
        }
        Kind::Idle => {
            read_hello(&mut stream).await?;
            stream.write_all(&[IDLE_ACK]).await?;
            drain(stream).await
        }
    }
}

/// Reads the captured hello, byte for byte, or fails.
async fn read_hello(stream: &mut TcpStream) -> io::Result<()> {
    let mut hello = vec![0u8; HELLO_CLASSIC.len()];
    stream.read_exact(&mut hello).await?;
    if hello == HELLO_CLASSIC {
        Ok(())
    } else {
        Err(io::Error::other(
            "the tunnel did not carry the hello unchanged",
        ))
    }
}

/// Reads until the client closes.
async fn drain(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 1024];
    while stream.read(&mut buf).await? > 0 {}
    Ok(())
}

/// Answers every request head with a 1 KiB body, keeping the connection open.
async fn http(mut stream: TcpStream) -> io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: \
         {REPLY_BYTES}\r\n\r\n"
    )
    .into_bytes();
    response.extend_from_slice(&[b'h'; REPLY_BYTES]);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            buf.drain(..end + 4);
            stream.write_all(&response).await?;
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::other("request head too large"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Returns the offset of the first `needle` in `haystack`.
pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
