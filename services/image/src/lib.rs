//! The xcat3 image service (`xcat3-server image`, and part of `all-in-one`).
//!
//! - [`iso`]: reading ISO 9660 images safely and extracting them;
//! - [`detect`]: recognising RHEL-family, Ubuntu and Debian media (pure);
//! - [`import`]: the import pipeline (`xcat3-copycds`): upload, checksum, extract, record;
//! - [`metrics`]: imports, install files and callbacks counted;
//! - [`render`]: per-deploy kickstart, preseed and autoinstall files from templates;
//! - [`trees`]: install trees over HTTP/1.1 with sendfile and byte ranges, in front of
//! - [`http`]: the rendered install files and the install callback;
//! - [`grpc`]: `xcat3.v1.ImageService` (import);
//! - [`cli`], flags and environment.
//!
//! It reads nodes, osimages and deploys from the database and writes osimages and the end of
//! deploys (through the store's state machine); it never changes anything else.

pub mod cli;
pub mod detect;
pub mod grpc;
pub mod http;
pub mod import;
pub mod importer;
pub mod iso;
pub mod metrics;
pub mod render;
pub mod trees;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use xcat3_proto::pb;
use xcat3_runtime::auth::{AuthLayer, Tokens};
use xcat3_runtime::metrics::Metrics;
use xcat3_store::Store;

/// Everything the image service needs to start.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    pub data_dir: PathBuf,
    pub database_url: String,
    /// gRPC (import) address.
    pub grpc_listen: SocketAddr,
    /// HTTP address nodes fetch from.
    pub http_listen: SocketAddr,
    /// The base URL nodes reach the HTTP side at, written into install files
    /// [default: `http://<http_listen>`].
    pub base_url: Option<String>,
    pub tokens: Tokens,
    pub insecure: bool,
    /// Prometheus `/metrics` address, or none (in all-in-one, the api's page shows them).
    pub metrics_listen: Option<SocketAddr>,
    /// Serve deploy files and accept callbacks only from the node's primary NIC address.
    pub install_source_check: bool,
    /// TLS of the gRPC (import) listener; the HTTP side nodes use stays plain (installers and
    /// iPXE cannot be given a CA).
    pub tls: xcat3_runtime::tls::Tls,
    /// Keys that open the sealed credential hashes.
    pub sealing: xcat3_store::SealingKeys,
}

impl ImageConfig {
    pub fn base_url(&self) -> String {
        self.base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.http_listen))
    }
}

/// A built image service: its directory prepared, database connected, listeners bound.
pub struct Image {
    config: ImageConfig,
    metrics: Metrics,
    layout: import::Layout,
    store: Store,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    metrics_listener: Option<TcpListener>,
}

impl Image {
    pub async fn build(config: ImageConfig, metrics: Metrics) -> anyhow::Result<Image> {
        let layout = import::Layout {
            root: config.data_dir.clone(),
        };
        layout.prepare().with_context(|| {
            format!("prepare the image directory {}", config.data_dir.display())
        })?;
        let store = Store::connect(&config.database_url)
            .await?
            .with_sealing(config.sealing.clone());
        let (grpc_listener, metrics_listener) =
            xcat3_runtime::grpc::bind("image gRPC", config.grpc_listen, config.metrics_listen)
                .await?;
        let http_listener = bind_http(config.http_listen)
            .with_context(|| format!("bind the image HTTP address {}", config.http_listen))?;
        let mut config = config;
        config.http_listen = http_listener.local_addr()?;
        Ok(Image {
            config,
            metrics,
            layout,
            store,
            grpc_listener,
            http_listener,
            metrics_listener,
        })
    }

    /// The bound gRPC and HTTP addresses.
    pub fn local_addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((
            self.grpc_listener.local_addr()?,
            self.http_listener.local_addr()?,
        ))
    }

    /// Prints the ready line on stdout, for supervisors and tests.
    pub fn announce(&self) -> std::io::Result<()> {
        let (grpc, http) = self.local_addrs()?;
        #[allow(clippy::print_stdout)]
        {
            println!("xcat3 image ready grpc={grpc} http={http}");
        }
        Ok(())
    }

    /// Where nodes fetch install files: `--image-base-url`, else the bound HTTP address.
    pub fn base_url(&self) -> String {
        self.config.base_url()
    }

    /// Serves imports over gRPC and trees, installer files and callbacks over HTTP until
    /// `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Image {
            config,
            metrics,
            layout,
            store,
            grpc_listener,
            http_listener,
            metrics_listener,
        } = self;
        let (grpc_addr, http_addr) = (grpc_listener.local_addr()?, http_listener.local_addr()?);
        let base_url = config.base_url();
        let image_metrics = metrics::ImageMetrics::register(&metrics);
        let metrics_task = metrics_listener
            .map(|listener| tokio::spawn(metrics.clone().serve(listener, shutdown.clone())));
        let router = http::router(
            store.clone(),
            layout.clone(),
            base_url.clone(),
            image_metrics.clone(),
            config.install_source_check,
        );
        let http_task = tokio::spawn(trees::serve(
            http_listener,
            layout.trees(),
            router,
            image_metrics.tree_bytes.clone(),
            shutdown.clone(),
        ));
        let importing: Arc<tokio::sync::Mutex<()>> = Arc::default();
        let sweeper = tokio::spawn(remove_deleted_trees(
            store.clone(),
            layout.clone(),
            importing.clone(),
            shutdown.clone(),
        ));
        let service = pb::image_service_server::ImageServiceServer::new(grpc::ImageService {
            importer: importer::Importer {
                store,
                layout,
                metrics: image_metrics,
                importing,
            },
        });
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<pb::image_service_server::ImageServiceServer<grpc::ImageService>>()
            .await;
        let layers = tower::ServiceBuilder::new()
            .layer(metrics.layer(&[xcat3_proto::FILE_DESCRIPTOR_SET]))
            .layer(AuthLayer::new(config.tokens.clone(), config.insecure));
        tracing::info!(grpc = %grpc_addr, http = %http_addr, base_url = %base_url, "image service serving");
        let token = shutdown.clone();
        let served = xcat3_runtime::grpc::server(&config.tls)?
            .trace_fn(xcat3_runtime::trace_context::server_span)
            .layer(layers)
            .add_service(health_service)
            .add_service(service)
            .serve_with_incoming_shutdown(
                xcat3_runtime::grpc::incoming(
                    grpc_listener,
                    xcat3_runtime::grpc::grpc_connection_cap(),
                ),
                async move { token.cancelled().await },
            )
            .await;
        shutdown.cancel();
        let _ = http_task.await;
        let _ = sweeper.await;
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
        served?;
        Ok(())
    }
}

/// Builds the image service, prints the ready line (`xcat3 image ready grpc=ADDR http=ADDR`) and
/// serves until `shutdown`.
pub async fn serve(
    config: ImageConfig,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let image = Image::build(config, metrics).await?;
    image.announce()?;
    image.run(shutdown).await
}

/// How often trees of deleted osimages are looked for.
const TREE_SWEEP: std::time::Duration = std::time::Duration::from_secs(10);

/// Removes, at start and then every [`TREE_SWEEP`], the trees no osimage refers to any more
/// (`xcat3 osimage-delete` deletes the record through the api, which cannot reach this service's
/// volume). Holds the import lock, so a tree being imported is never taken for an orphan.
async fn remove_deleted_trees(
    store: xcat3_store::Store,
    layout: import::Layout,
    importing: Arc<tokio::sync::Mutex<()>>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(TREE_SWEEP);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let _no_import = importing.lock().await;
        let images = match store.list_osimages().await {
            Ok(i) => i,
            Err(e) => {
                tracing::debug!(error = %e, "tree sweep: listing osimages failed");
                continue;
            }
        };
        let used: std::collections::HashSet<String> =
            images.into_iter().map(|i| i.repo_root).collect();
        let trees = layout.trees();
        let removed = tokio::task::spawn_blocking(move || {
            let mut removed = Vec::new();
            for entry in std::fs::read_dir(&trees).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                // `.partial-*` are imports in progress (or cleaned at start).
                if name.starts_with('.') || used.contains(&format!("trees/{name}")) {
                    continue;
                }
                if std::fs::remove_dir_all(entry.path()).is_ok() {
                    removed.push(name);
                }
            }
            removed
        })
        .await
        .unwrap_or_default();
        for tree in removed {
            tracing::info!(%tree, "removed the tree of a deleted osimage");
        }
    }
}

/// Binds the HTTP listener with a deep accept queue: a rack that finishes installing together
/// calls back in the same instant, and a full queue makes clients wait a SYN retry (1 s).
fn bind_http(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
