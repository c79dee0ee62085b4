//! The xcat3 api service: the public gRPC interface (`proto/xcat3/v1`). It keeps the inventory
//! (nodes, networks, OS images, credentials) in the store and answers many-node requests with one
//! result per node.
//!
//! Layout:
//! - [`inventory`]: the many-node operations on domain types (create, update, delete), with the
//!   checks against the rest of the inventory;
//! - [`changes`]: the `path=value` attribute changes of `update`;
//! - [`index`]: names and groups for noderange expansion;
//! - [`grpc`]: thin adapters from the generated service traits to the above.
//!
//! [`Api::build`] binds every listener and connects the database, so misconfiguration fails before
//! anything is served; [`Api::run`] serves until its cancellation token fires.

pub mod changes;
pub mod cli;
pub mod credentials;
pub mod dispatch;
pub mod error;
pub mod fleet;
pub mod grpc;
pub mod index;
pub mod inventory;
pub mod netboot;
pub mod networks;
pub mod order;
pub mod reads;
pub mod scaler;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use xcat3_coord::Coordinator;
use xcat3_proto::pb;
use xcat3_runtime::auth::{AuthLayer, Tokens};
use xcat3_runtime::grpc::MAX_MESSAGE_BYTES;
use xcat3_runtime::metrics::Metrics;
use xcat3_store::{ServiceRecord, Store, now_ms};

/// Everything the api needs to start.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// gRPC address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Prometheus `/metrics` address, or none.
    pub metrics_listen: Option<SocketAddr>,
    /// `sqlite:///var/lib/xcat3/xcat3.db?mode=rwc` or `postgres://...`.
    pub database_url: String,
    pub tokens: Tokens,
    /// Accept requests without a token (local development only).
    pub insecure: bool,
    /// Largest number of names a noderange may expand to.
    pub noderange_limit: usize,
    /// How often the api records its heartbeat in the service registry.
    pub heartbeat_interval: Duration,
    /// How long a many-node operation waits for the shards of a failed conductor to be taken over.
    pub takeover_wait: Duration,
    /// How often the boot feed checks for inventory changes made by other api processes (changes
    /// made by this one go out at once).
    pub netboot_poll: Duration,
    /// The image service's base URL as the nodes reach it (`http://10.0.0.1:8090`): installers
    /// load kernels, trees and their answer files from there. Without it, deploys are refused.
    pub image_url: Option<String>,
    /// The image service's gRPC URL: `ImportIso` calls are forwarded there.
    pub image_grpc: Option<String>,
    /// How long a deploy waits for the installed system's callback when the request says nothing.
    pub deploy_timeout: Duration,
    /// Scale the conductor Deployment from the node count (on Kubernetes).
    pub scaler: Option<scaler::ScalerConfig>,
    /// TLS of the gRPC listener, and of the calls to conductors and the image service.
    pub tls: xcat3_runtime::tls::Tls,
    /// The name conductors' certificates must carry [default: the host of their address].
    pub conductor_tls_name: Option<String>,
    /// Keys that seal BMC secrets and credential hashes in the database.
    pub sealing: xcat3_store::SealingKeys,
    /// A bound loopback listener served without TLS beside the public one, for peers in the
    /// same process (the all-in-one server's network agent) when the public one speaks TLS.
    pub internal_listener: Option<Arc<std::net::TcpListener>>,
}

impl ApiConfig {
    /// Defaults for everything but the database.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3010)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9310))),
            database_url: database_url.into(),
            tokens: Tokens::default(),
            insecure: false,
            noderange_limit: xcat3_noderange::DEFAULT_LIMIT,
            heartbeat_interval: Duration::from_secs(10),
            takeover_wait: Duration::from_secs(15),
            netboot_poll: Duration::from_millis(500),
            image_url: None,
            image_grpc: None,
            deploy_timeout: Duration::from_secs(3600),
            scaler: None,
            tls: Default::default(),
            conductor_tls_name: None,
            sealing: Default::default(),
            internal_listener: None,
        }
    }
}

/// A built api: listeners bound, database connected and migrated.
pub struct Api {
    config: ApiConfig,
    coordinator: Arc<dyn Coordinator>,
    store: Store,
    metrics: Metrics,
    grpc_listener: TcpListener,
    metrics_listener: Option<TcpListener>,
}

impl Api {
    /// `coordinator` tells the api which conductor owns which shard.
    pub async fn build(
        config: ApiConfig,
        coordinator: Arc<dyn Coordinator>,
        metrics: Metrics,
    ) -> anyhow::Result<Api> {
        use anyhow::Context as _;
        if config.tokens.is_empty() && !config.insecure {
            anyhow::bail!(
                "no token configured: set XCAT3_ADMIN_TOKEN (and optionally XCAT3_READONLY_TOKEN), or pass --insecure for local development"
            );
        }
        let (grpc_listener, metrics_listener) =
            xcat3_runtime::grpc::bind("gRPC", config.listen, config.metrics_listen).await?;
        let store = Store::connect(&config.database_url)
            .await
            .context("open the database")?
            .with_sealing(config.sealing.clone());
        Ok(Api {
            config,
            coordinator,
            store,
            metrics,
            grpc_listener,
            metrics_listener,
        })
    }

    /// The bound gRPC address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc_listener.local_addr()
    }

    /// The bound metrics address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Prints the ready line on stdout, for supervisors and tests.
    pub fn announce(&self) -> std::io::Result<()> {
        let metrics_addr = self
            .metrics_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "none".into());
        #[allow(clippy::print_stdout)]
        {
            println!(
                "xcat3 api ready grpc={} metrics={metrics_addr}",
                self.local_addr()?
            );
        }
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` is cancelled, then stops accepting calls, lets running ones finish
    /// and leaves the service registry.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Api {
            config,
            coordinator,
            store,
            metrics,
            grpc_listener,
            metrics_listener,
        } = self;
        if config.insecure {
            tracing::warn!(
                "running with --insecure: every request is accepted without a token; never do this in production"
            );
        }
        let inventory = inventory::Inventory::new(store.clone(), config.noderange_limit);

        let dispatcher = Arc::new(dispatch::Dispatcher::new(
            coordinator.clone(),
            config.tokens.admin.as_ref(),
            config.takeover_wait,
            config.tls.clone(),
            config.conductor_tls_name.clone(),
        ));
        let conductors = pb::conductor_service_server::ConductorServiceServer::new(
            grpc::conductors::ConductorService::new(dispatcher.clone()),
        );
        let feed = netboot::BootFeed::new(config.image_url.clone());
        let deploys = grpc::nodes::Deploys {
            feed: feed.clone(),
            image_url: config.image_url.clone(),
            default_timeout: config.deploy_timeout,
        };
        let nodes = pb::node_service_server::NodeServiceServer::new(grpc::nodes::NodeService::new(
            inventory, dispatcher, deploys,
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let networks = pb::network_service_server::NetworkServiceServer::new(
            grpc::networks::NetworkService::new(store.clone()),
        );
        let osimages = pb::os_image_service_server::OsImageServiceServer::new(
            grpc::osimages::OsImageService::new(store.clone()),
        );
        let passwds = pb::passwd_service_server::PasswdServiceServer::new(
            grpc::passwds::PasswdService::new(store.clone()),
        );
        let netboot = xcat3_proto::internal::netboot_config_server::NetbootConfigServer::new(
            grpc::netboot::NetbootConfig::new(store.clone(), feed.clone()),
        )
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let images = pb::image_service_server::ImageServiceServer::new(
            grpc::images::ImageProxy::new(
                config.image_grpc.as_deref(),
                config.tokens.admin.as_ref(),
                &config.tls,
            )
            .map_err(anyhow::Error::msg)?,
        )
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let registry = pb::service_registry_server::ServiceRegistryServer::new(
            grpc::registry::ServiceRegistry::new(store.clone(), config.heartbeat_interval),
        );

        // Health and reflection name exactly the services the routes below serve (the internal
        // Conductor service is in the same descriptors but served by the conductors only).
        let services = [
            service_name(&nodes),
            service_name(&networks),
            service_name(&osimages),
            service_name(&images),
            service_name(&passwds),
            service_name(&registry),
            service_name(&conductors),
            service_name(&netboot),
        ];
        let (health, health_service) = tonic_health::server::health_reporter();
        for name in services {
            health
                .set_service_status(name, tonic_health::ServingStatus::Serving)
                .await;
        }
        let (reflection_v1, reflection_v1alpha) =
            xcat3_runtime::grpc::reflection(&[xcat3_proto::FILE_DESCRIPTOR_SET], &services)?;

        let layers = tower::ServiceBuilder::new()
            .layer(metrics.layer(&[xcat3_proto::FILE_DESCRIPTOR_SET]))
            .layer(AuthLayer::new(config.tokens.clone(), config.insecure));
        let routes = tonic::service::Routes::new(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(nodes)
            .add_service(networks)
            .add_service(osimages)
            .add_service(images)
            .add_service(passwds)
            .add_service(registry)
            .add_service(conductors)
            .add_service(netboot);
        // Same services, same token checks, without TLS: loopback only, for this process.
        let internal = match &config.internal_listener {
            Some(l) => {
                let l = l.try_clone()?;
                l.set_nonblocking(true)?;
                let l = TcpListener::from_std(l)?;
                let server = xcat3_runtime::grpc::server(&Default::default())?
                    .trace_fn(xcat3_runtime::trace_context::server_span)
                    .layer(layers.clone())
                    .add_routes(routes.clone());
                let token = shutdown.clone();
                Some(tokio::spawn(server.serve_with_incoming_shutdown(
                    xcat3_runtime::grpc::incoming(l, 64),
                    token.cancelled_owned(),
                )))
            }
            None => None,
        };
        let server = xcat3_runtime::grpc::server(&config.tls)?
            .trace_fn(xcat3_runtime::trace_context::server_span)
            .layer(layers)
            .add_routes(routes);

        let heartbeat = tokio::spawn(heartbeat(
            store.clone(),
            config.heartbeat_interval,
            shutdown.clone(),
        ));
        let feed_task =
            tokio::spawn(feed.run(store.clone(), config.netboot_poll, shutdown.clone()));
        let scaler_task = match config.scaler.clone() {
            Some(scaler_config) => {
                let client = kube::Client::try_default().await.map_err(|e| {
                    anyhow::anyhow!("the conductor scaler needs Kubernetes credentials: {e}")
                })?;
                let desired = prometheus_client::metrics::gauge::Gauge::default();
                metrics.register(
                    "conductor_replicas_desired",
                    "Conductor replicas the scaler asks for (from the node count)",
                    desired.clone(),
                );
                Some(tokio::spawn(scaler::run(
                    client,
                    scaler_config,
                    store.clone(),
                    desired,
                    shutdown.clone(),
                )))
            }
            None => None,
        };
        let fleet_task = tokio::spawn(fleet::run(
            store.clone(),
            coordinator.clone(),
            fleet::FleetGauges::register(&metrics),
            Duration::from_secs(5),
            shutdown.clone(),
        ));
        let metrics_task =
            metrics_listener.map(|l| tokio::spawn(metrics.clone().serve(l, shutdown.clone())));
        tracing::info!(addr = %grpc_listener.local_addr()?, backend = store.backend_name(), "api serving");
        let token = shutdown.clone();
        let served = server
            .serve_with_incoming_shutdown(
                xcat3_runtime::grpc::incoming(
                    grpc_listener,
                    xcat3_runtime::grpc::grpc_connection_cap(),
                ),
                async move {
                    token.cancelled().await;
                    for name in services {
                        health
                            .set_service_status(name, tonic_health::ServingStatus::NotServing)
                            .await;
                    }
                },
            )
            .await;
        shutdown.cancel();
        let _ = heartbeat.await;
        let _ = feed_task.await;
        let _ = fleet_task.await;
        if let Some(t) = scaler_task {
            let _ = t.await;
        }
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
        if let Some(t) = internal {
            let _ = t.await;
        }
        served?;
        tracing::info!("api stopped");
        Ok(())
    }
}

/// Builds the api, prints the ready line (`xcat3 api ready grpc=ADDR metrics=ADDR`) on stdout for
/// supervisors and tests, and serves until `shutdown`.
pub async fn serve(
    config: ApiConfig,
    coordinator: Arc<dyn Coordinator>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let api = Api::build(config, coordinator, metrics).await?;
    api.announce()?;
    api.run(shutdown).await
}

/// Records the api in the service registry every `interval` and leaves it on shutdown.
async fn heartbeat(store: Store, interval: Duration, shutdown: CancellationToken) {
    let started = now_ms();
    let host = xcat3_runtime::config::hostname();
    let me = ServiceRecord {
        id: format!("{host}:api:{}:{started}", std::process::id()),
        hostname: host,
        kind: "api".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at: started,
        heartbeat_at: started,
    };
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = store.heartbeat(&me).await {
                    tracing::warn!(error = %e, "recording the heartbeat failed");
                }
            }
            _ = shutdown.cancelled() => break,
        }
    }
    // Forget ourselves and anything silent for a day (processes that were killed).
    let stale = now_ms() - 24 * 3600 * 1000;
    if let Err(e) = store.unregister_service(&me.id, stale).await {
        tracing::warn!(error = %e, "leaving the service registry failed");
    }
}

/// The gRPC name of a service (`xcat3.v1.NodeService`), as reflection and health list it.
fn service_name<S: tonic::server::NamedService>(_: &S) -> &'static str {
    S::NAME
}
