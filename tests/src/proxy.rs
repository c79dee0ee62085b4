//! A TCP proxy a test can cut, to isolate a process from a peer.

use crate::*;

/// Copies between `inbound` and a new connection to `target` until either side closes or `cut`
/// fires.
pub async fn forward<S>(
    mut inbound: S,
    target: SocketAddr,
    cut: tokio_util::sync::CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = cut.cancelled() => {}
    }
}

/// A TCP forwarder on loopback that a test can cut, to take a process off the network.
pub struct TcpProxy {
    pub addr: SocketAddr,
    cut: tokio_util::sync::CancellationToken,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> anyhow::Result<TcpProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = tokio_util::sync::CancellationToken::new();
        let token = cut.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = token.cancelled() => return,
                };
                let Ok((inbound, _)) = accepted else {
                    continue;
                };
                tokio::spawn(forward(inbound, target, token.clone()));
            }
        });
        Ok(TcpProxy { addr, cut })
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.cancel();
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut.cancel();
    }
}
