//! Plain HTTP/1.1 servers that machines on the provisioning network reach (the agents' iPXE
//! scripts and files, the image service's install files and callbacks, `/metrics`), bounded so
//! that slow or abusive clients cannot exhaust the process:
//!
//! - a request head must arrive whole within [`HEAD_DEADLINE`], and a kept-alive connection that
//!   sends no new request is closed after that long too (hyper's header-read timer covers both);
//! - a listener serves at most its share of the process's open-file limit at once
//!   ([`connection_cap`]); past that it stops accepting until a connection ends, so the gRPC api,
//!   the database and files keep the descriptors they need;
//! - the open-file limit is raised to its hard maximum at start ([`raise_open_file_limit`]).
//!
//! Every request carries the client's address as a [`PeerAddr`] extension.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Longest a client may take to send a request head, and to start the next one on a kept-alive
/// connection.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(10);

/// Largest request head (and read buffer) accepted.
pub const MAX_HEAD_BYTES: usize = 64 << 10;

/// The address of the client that sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Raises the soft open-file limit to the hard one; returns the limit now in force.
pub fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum
        && limit.current != Some(hard)
    {
        let raised = rustix::process::Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Connections one HTTP listener may hold at once: an eighth of the open-file limit (at least 64,
/// at most 65,536), so that several listeners together leave most descriptors to the rest.
pub fn connection_cap() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 20);
    usize::try_from(limit / 8).map_or(65_536, |n| n.clamp(64, 65_536))
}

/// The HTTP/1.1 connection settings every xcat3 HTTP server uses.
pub fn http1() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEAD_DEADLINE)
        .max_buf_size(MAX_HEAD_BYTES);
    b
}

/// A listener's open connections.
#[derive(Clone)]
pub struct ConnectionLimit(Arc<Semaphore>);

impl ConnectionLimit {
    pub fn new(cap: usize) -> Self {
        ConnectionLimit(Arc::new(Semaphore::new(cap.max(1))))
    }

    /// Waits for a free place, then accepts one connection. The permit is held for as long as the
    /// connection lives. `None` when the limit was closed.
    pub async fn accept(
        &self,
        listener: &TcpListener,
    ) -> Option<(TcpStream, SocketAddr, tokio::sync::OwnedSemaphorePermit)> {
        let permit = self.0.clone().acquire_owned().await.ok()?;
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => return Some((stream, peer, permit)),
                Err(e) => {
                    // EMFILE and friends: wait a moment rather than spin.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Serves `router` on `stream` with [`http1`] settings, tagging each request with `peer`.
pub async fn serve_connection<S>(stream: S, peer: SocketAddr, router: axum::Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(PeerAddr(peer));
            let router = router.clone();
            async move {
                use tower::ServiceExt as _;
                Ok::<_, Infallible>(
                    router
                        .oneshot(req.map(axum::body::Body::new))
                        .await
                        .unwrap_or_else(|e| match e {}),
                )
            }
        });
    let served = http1()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, %peer, "HTTP connection ended with an error");
    }
}

/// Serves `router` on `listener` until `shutdown`, at most [`connection_cap`] connections at once.
pub async fn serve(listener: TcpListener, router: axum::Router, shutdown: CancellationToken) {
    accept_loop(listener, shutdown, move |stream, peer| {
        serve_connection(stream, peer, router.clone())
    })
    .await
}

/// Accepts connections on `listener` until `shutdown`, at most [`connection_cap`] at once, and
/// runs `handle` for each in its own task (ended at `shutdown`).
pub async fn accept_loop<F, Fut>(listener: TcpListener, shutdown: CancellationToken, handle: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let limit = ConnectionLimit::new(connection_cap());
    loop {
        let (stream, peer, permit) = tokio::select! {
            accepted = limit.accept(&listener) => match accepted {
                Some(a) => a,
                None => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let connection = handle(stream, peer);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = connection => {}
                _ = shutdown.cancelled() => {}
            }
            drop(permit);
        });
    }
}
