//! The xcat3 conductor. It owns a share of the node shards (through a [`Coordinator`]: etcd in a
//! cluster, local in the all-in-one server), runs power and boot-device operations on those
//! nodes through the drivers, and records results in the database with its fencing token.
//!
//! - [`driver`]: one module per `mgt` (`ipmi` today);
//! - [`limits`]: per-driver and per-endpoint concurrency, per-operation timeouts;
//! - [`work`]: running an operation on many nodes, shard by shard, with fenced writes;
//! - [`deploy`]: OS deploys (checks, state changes, booting the installer) and their deadline;
//! - [`grpc`]: the internal service the api calls.

pub mod cli;
pub mod deploy;
pub mod driver;
pub mod grpc;
pub mod limits;
pub mod metrics;
mod tasks;
pub mod work;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use xcat3_coord::{Coordinator, Member, shard_of};
use xcat3_proto::internal;
use xcat3_runtime::auth::{AuthLayer, Tokens};
use xcat3_runtime::metrics::Metrics;
use xcat3_store::Store;

use crate::driver::{Drivers, PowerAction};
use crate::limits::{Limits, LimitsConfig};
use crate::work::{Claimed, Executor, Operation};

/// Everything a conductor needs to start.
#[derive(Debug, Clone)]
pub struct ConductorConfig {
    /// Unique id in the cluster (default `<host>-<pid>-<start ms>`).
    pub id: Option<String>,
    /// Internal gRPC address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Address the api uses to reach this conductor (default `http://<bound listen address>`,
    /// `https://` with TLS).
    pub advertise: Option<String>,
    pub metrics_listen: Option<SocketAddr>,
    pub database_url: String,
    /// Tokens accepted from the api.
    pub tokens: Tokens,
    pub insecure: bool,
    pub limits: LimitsConfig,
    /// How often to read the power state of every owned node and record drift (zero: never).
    pub power_sync_interval: Duration,
    pub ipmi: driver::ipmi::Ipmi,
    pub kvm: driver::kvm::KvmConfig,
    /// TLS of the gRPC listener (with a client CA, only the api's certificate gets in).
    pub tls: xcat3_runtime::tls::Tls,
    /// Keys that open the sealed BMC secrets.
    pub sealing: xcat3_store::SealingKeys,
}

impl ConductorConfig {
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            id: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 3020)),
            advertise: None,
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9320))),
            database_url: database_url.into(),
            tokens: Tokens::default(),
            insecure: false,
            limits: LimitsConfig::default(),
            power_sync_interval: Duration::from_secs(60),
            ipmi: driver::ipmi::Ipmi::default(),
            kvm: driver::kvm::KvmConfig::default(),
            tls: Default::default(),
            sealing: Default::default(),
        }
    }
}

/// A built conductor: listeners bound, database connected.
pub struct Conductor {
    config: ConductorConfig,
    coordinator: Arc<dyn Coordinator>,
    store: Store,
    metrics: Metrics,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    id: String,
}

impl Conductor {
    pub async fn build(
        config: ConductorConfig,
        coordinator: Arc<dyn Coordinator>,
        metrics: Metrics,
    ) -> anyhow::Result<Conductor> {
        use anyhow::Context as _;
        if config.tokens.is_empty() && !config.insecure {
            anyhow::bail!(
                "no token configured: set XCAT3_ADMIN_TOKEN (the api calls conductors with it), or pass --insecure"
            );
        }
        let (listener, metrics_listener) =
            xcat3_runtime::grpc::bind("conductor", config.listen, config.metrics_listen).await?;
        let store = Store::connect(&config.database_url)
            .await
            .context("open the database")?
            .with_sealing(config.sealing.clone());
        let host = xcat3_runtime::config::hostname();
        let id = config
            .id
            .clone()
            .unwrap_or_else(|| format!("{host}-{}-{}", std::process::id(), xcat3_store::now_ms()));
        Ok(Conductor {
            config,
            coordinator,
            store,
            metrics,
            listener,
            metrics_listener,
            id,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Joins the cluster and serves until `shutdown`; then hands its shards over (after the work
    /// holding them ends) and stops.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.run_until(shutdown, None).await
    }

    /// Like [`Conductor::run`]; `ready` fires once the conductor owns shards and has recorded its
    /// claims in the database (the all-in-one server waits for it before serving the api).
    pub async fn run_until(
        self,
        shutdown: CancellationToken,
        ready: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> anyhow::Result<()> {
        let addr = self.listener.local_addr()?;
        let advertise = self
            .config
            .advertise
            .clone()
            .unwrap_or_else(|| format!("{}://{addr}", self.config.tls.scheme()));
        let member = Member {
            id: self.id.clone(),
            host: xcat3_runtime::config::hostname(),
            addr: advertise,
        };
        // Tokens must start above what the database holds, whatever etcd (new, restored) says.
        self.coordinator
            .raise_above(self.store.max_shard_epoch().await?)
            .await?;
        let membership = self.coordinator.join(member, shutdown.clone()).await?;
        let claimed = Claimed::default();
        let conductor_metrics = metrics::ConductorMetrics::register(&self.metrics);
        let executor = Arc::new(Executor {
            id: self.id.clone(),
            store: self.store.clone(),
            membership: membership.clone(),
            claimed: claimed.clone(),
            drivers: Drivers {
                ipmi: self.config.ipmi.clone(),
                redfish: driver::redfish::Redfish::default(),
                kvm: driver::kvm::Kvm::new(self.config.kvm.clone()),
            },
            limits: Limits::new(self.config.limits.clone())
                .with_queue_wait(conductor_metrics.queue_wait.clone()),
            shards: self.coordinator.shards(),
            metrics: conductor_metrics.clone(),
            failing_status: Default::default(),
        });
        let claims = tokio::spawn(record_claims(
            executor.clone(),
            self.coordinator.clone(),
            shutdown.clone(),
            ready,
        ));
        let sync = tokio::spawn(power_sync(
            executor.clone(),
            self.config.power_sync_interval,
            shutdown.clone(),
        ));
        let timeouts = tokio::spawn(deploy_timeouts(executor.clone(), shutdown.clone()));
        let lease_task = tokio::spawn(lease_gauges(
            membership.lease(),
            executor.metrics.clone(),
            shutdown.clone(),
        ));
        let metrics_task = self
            .metrics_listener
            .map(|l| tokio::spawn(self.metrics.clone().serve(l, shutdown.clone())));

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<internal::conductor_server::ConductorServer<grpc::ConductorService>>()
            .await;
        let service =
            internal::conductor_server::ConductorServer::new(grpc::ConductorService { executor })
                .max_decoding_message_size(xcat3_runtime::grpc::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(xcat3_runtime::grpc::MAX_MESSAGE_BYTES);
        let layers = tower::ServiceBuilder::new()
            .layer(self.metrics.layer(&[xcat3_proto::FILE_DESCRIPTOR_SET]))
            .layer(AuthLayer::new(
                self.config.tokens.clone(),
                self.config.insecure,
            ));
        tracing::info!(id = %self.id, %addr, "conductor serving");
        let token = shutdown.clone();
        let served = xcat3_runtime::grpc::server(&self.config.tls)?
            .trace_fn(xcat3_runtime::trace_context::server_span)
            .layer(layers)
            .add_service(health_service)
            .add_service(service)
            .serve_with_incoming_shutdown(
                xcat3_runtime::grpc::incoming(
                    self.listener,
                    xcat3_runtime::grpc::grpc_connection_cap(),
                ),
                async move { token.cancelled().await },
            )
            .await;
        shutdown.cancel();
        membership.finished().await;
        let _ = claims.await;
        let _ = sync.await;
        let _ = timeouts.await;
        let _ = lease_task.await;
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
        served?;
        tracing::info!(id = %self.id, "conductor stopped");
        Ok(())
    }
}

/// Records each newly owned shard's fencing token in the database before any work runs on it.
async fn record_claims(
    executor: Arc<Executor>,
    coordinator: Arc<dyn Coordinator>,
    shutdown: CancellationToken,
    mut ready: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let Executor {
        store,
        membership,
        claimed,
        id,
        metrics,
        ..
    } = &*executor;
    let mut owned = membership.watch();
    loop {
        let now = owned.borrow_and_update().clone();
        let mut known = claimed.write().await;
        known.retain(|shard, token| now.get(shard) == Some(token));
        for (shard, token) in &now {
            if known.get(shard) == Some(token) {
                continue;
            }
            match store.claim_shard(*shard, token.0, id).await {
                Ok(true) => {
                    known.insert(*shard, *token);
                    metrics.shard_claims.inc();
                }
                Ok(false) => {
                    tracing::warn!(
                        shard,
                        token = token.0,
                        "the database holds a newer owner for this shard"
                    );
                    // Either another conductor claimed it since (etcd will say so), or etcd is
                    // behind the database (replaced while we ran): then raise its tokens.
                    let raised = match store.max_shard_epoch().await {
                        Ok(epoch) => coordinator
                            .raise_above(epoch)
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(e) = raised {
                        tracing::warn!(error = %e, "raising the fencing tokens failed; will retry");
                    }
                }
                Err(e) => {
                    tracing::warn!(shard, error = %e, "recording a shard claim failed; will retry")
                }
            }
        }
        metrics.owned_shards.set(known.len() as i64);
        let missing = now.len() != known.len();
        drop(known);
        if !missing
            && !now.is_empty()
            && let Some(ready) = ready.take()
        {
            let _ = ready.send(());
        }
        tokio::select! {
            changed = owned.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep(Duration::from_secs(1)), if missing => {}
            _ = shutdown.cancelled() => break,
        }
    }
}

/// Mirrors the coordinator's lease health into the conductor's metrics every second.
async fn lease_gauges(
    lease: Arc<xcat3_coord::LeaseHealth>,
    metrics: metrics::ConductorMetrics,
    shutdown: CancellationToken,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut counted = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let last = lease.last_alive_ms.load(Relaxed);
        let age = if last == 0 {
            0.0
        } else {
            (xcat3_store::now_ms() - last).max(0) as f64 / 1000.0
        };
        metrics.lease_age.set(age);
        let losses = lease.losses.load(Relaxed);
        if losses > counted {
            metrics.lease_losses.inc_by(losses - counted);
            counted = losses;
        }
    }
}

/// Fails, every few seconds, the deploys of owned nodes whose deadline passed.
async fn deploy_timeouts(executor: Arc<Executor>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(e) = executor.fail_expired().await {
            tracing::warn!(error = %e, "checking deploy deadlines failed");
        }
    }
}

/// Reads the power state of every owned node now and then, recording drift as events.
async fn power_sync(executor: Arc<Executor>, interval: Duration, shutdown: CancellationToken) {
    if interval.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let owned = executor.membership.owned();
        let names: Vec<String> = match executor.store.node_names_and_groups().await {
            Ok(rows) => rows
                .into_iter()
                .map(|(name, _)| name)
                .filter(|n| owned.contains_key(&shard_of(n, executor.shards)))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "power sync: listing nodes failed");
                continue;
            }
        };
        if names.is_empty() {
            continue;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let count = names.len();
        tracing::debug!(nodes = count, "power sync started");
        // Aborted at shutdown: dropping the run drops its tasks, which kill their BMC tools
        // (`kill_on_drop`), so no new ipmitool starts after "shutting down".
        let run = tokio::spawn({
            let executor = executor.clone();
            async move {
                executor
                    .run(names, Operation::Power(PowerAction::Status), tx)
                    .await
            }
        });
        let mut failed = 0;
        loop {
            tokio::select! {
                results = rx.recv() => match results {
                    Some(results) => {
                        failed += results.iter().filter(|r| r.result.is_err()).count();
                    }
                    None => break,
                },
                _ = shutdown.cancelled() => {
                    run.abort();
                    tracing::info!(nodes = count, "power sync stopped: shutting down");
                    return;
                }
            }
        }
        tracing::info!(nodes = count, failed, "power sync done");
    }
}
