//! What every xcat3 gRPC server has: health, reflection (v1 and v1alpha, so both grpcurl 1.8 and
//! newer clients work), and deliberate message-size limits.

/// The largest request or answer message a server or client accepts: 256 MiB. A node on the wire
/// is well under 2 KiB, so a 100,000-node request (the noderange cap) fits, and many-node answers
/// are streamed in pages far below this.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Reflection services listing `services` (and health), described by the given encoded
/// descriptor sets plus the health service's. A descriptor set may hold more services than a
/// server answers (the internal ones): only the named ones are listed.
pub fn reflection(
    descriptor_sets: &[&'static [u8]],
    services: &[&str],
) -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let builder = || {
        let b = descriptor_sets.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health"),
            |b, set| b.register_encoded_file_descriptor_set(set),
        );
        services
            .iter()
            .fold(b, |b, name| b.with_service_name(*name))
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// Binds a service's gRPC listener and, if asked, its metrics listener, before anything else
/// starts, so a taken port fails the start with a clear message.
pub async fn bind(
    what: &str,
    listen: std::net::SocketAddr,
    metrics: Option<std::net::SocketAddr>,
) -> anyhow::Result<(tokio::net::TcpListener, Option<tokio::net::TcpListener>)> {
    use anyhow::Context as _;
    let grpc = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind the {what} listener on {listen}"))?;
    let metrics = match metrics {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind the metrics listener on {addr}"))?,
        ),
        None => None,
    };
    Ok((grpc, metrics))
}

/// A connection accepted by [`incoming`]: it holds its places in the listener's limits until it
/// is dropped.
pub struct Limited {
    stream: tokio::net::TcpStream,
    _permit: tokio::sync::OwnedSemaphorePermit,
    _peer: PeerSlot,
}

/// One connection's count against its client address.
struct PeerSlot {
    ip: std::net::IpAddr,
    counts: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl tokio::io::AsyncRead for Limited {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Limited {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Limited {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// Connections a gRPC listener holds at once: twice an HTTP listener's share
/// ([`crate::http::connection_cap`]), a quarter of the open-file limit (128..131,072).
pub fn grpc_connection_cap() -> usize {
    crate::http::connection_cap().saturating_mul(2)
}

/// The connections of a gRPC listener, bounded so that no client can take every descriptor or
/// lock the others out: at most `cap` at once (more wait in the kernel's backlog), at most
/// `cap / 16` (at least 4) from one address (more are closed at once), and a failed accept
/// (EMFILE) waits a moment instead of spinning. Ends when the server drops it.
pub fn incoming(
    listener: tokio::net::TcpListener,
    cap: usize,
) -> impl tokio_stream::Stream<Item = std::io::Result<Limited>> {
    let limit = crate::http::ConnectionLimit::new(cap);
    let per_peer = (cap / 16).max(4);
    let counts: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<_, usize>>> =
        std::sync::Arc::default();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (stream, peer, permit) = tokio::select! {
                accepted = limit.accept(&listener) => match accepted {
                    Some(a) => a,
                    None => return,
                },
                _ = tx.closed() => return,
            };
            let ip = peer.ip();
            {
                let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
                let n = map.entry(ip).or_default();
                if *n >= per_peer {
                    tracing::debug!(%peer, per_peer, "too many connections from one address");
                    continue; // dropped: closed at once
                }
                *n += 1;
            }
            let _ = stream.set_nodelay(true);
            let conn = Limited {
                stream,
                _permit: permit,
                _peer: PeerSlot {
                    ip,
                    counts: std::sync::Arc::clone(&counts),
                },
            };
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A gRPC server builder with xcat3's settings: `tls` (see [`crate::tls`]), and HTTP/2 pings
/// every 30 s so a peer that vanished is dropped within 40 s instead of holding its connection.
pub fn server(
    tls: &crate::tls::Tls,
) -> anyhow::Result<tonic::transport::Server<tower::layer::util::Identity>> {
    tls.apply(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10))),
    )
}
