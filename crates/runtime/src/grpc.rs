//! What every xcat3 gRPC server has: health, reflection (v1 and v1alpha, so both grpcurl 1.8 and
//! newer clients work), and deliberate message-size limits.

/// The largest request or answer message a server or client accepts: 256 MiB. A node on the wire
/// is well under 2 KiB, so a 100,000-node request (the noderange cap) fits, and many-node answers
/// are streamed in pages far below this.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Reflection services for the given encoded descriptor sets plus the health service's.
pub fn reflection(
    descriptor_sets: &[&'static [u8]],
) -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let builder = || {
        descriptor_sets.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |b, set| b.register_encoded_file_descriptor_set(set),
        )
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
