//! `xcat3-server ROLE`: one binary for every role, so a single machine runs the whole system with
//! `xcat3-server all-in-one` and a cluster runs one role per pod. Composition only: each service
//! is a library and owns its configuration.
//!
//! - `all-in-one`: the api and a conductor in one process, talking gRPC over loopback (the same
//!   code path as a cluster), SQLite under the data directory, the local coordinator (no etcd),
//!   and an admin token generated into `<data_dir>/admin.token` when none is configured.
//! - `api`, `conductor`, `network`, `image`: one service each; conductors share shards through
//!   etcd.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use xcat3_coord::{CoordArgs, Coordinator};
use xcat3_runtime::auth::Tokens;
use xcat3_runtime::process::Failure;
use xcat3_runtime::tls::TlsArgs;

#[derive(Parser)]
#[command(version, about = "xcat3 server: run one service, or all of them")]
struct Cli {
    #[command(subcommand)]
    role: Role,
    #[command(flatten)]
    file: xcat3_runtime::layered::ConfigFile,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start
enum Role {
    /// Every service in one process, SQLite by default, no etcd. Metrics: the api, the conductor
    /// and (unless --network-metrics-listen or --image-metrics-listen give them a page of their
    /// own) the network agent and the image service on one page, --metrics-listen.
    AllInOne {
        #[command(flatten)]
        api: xcat3_api::cli::ApiArgs,
        #[command(flatten)]
        drivers: xcat3_conductor::cli::DriverArgs,
        /// Number of shards.
        #[arg(long, env = "XCAT3_SHARDS", default_value_t = xcat3_coord::DEFAULT_SHARDS)]
        shards: u32,
        #[command(flatten)]
        network: xcat3_network::cli::NetworkArgs,
        /// Run without the network agent (no DHCP, TFTP or boot HTTP in this process).
        #[arg(long, env = "XCAT3_NO_NETWORK_AGENT")]
        no_network_agent: bool,
        #[command(flatten)]
        image: xcat3_image::cli::ImageArgs,
        /// TLS of the api's listener (--tls-cert, --tls-key); the in-process hops stay on
        /// loopback.
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// The image service: ISO import, install trees and files over HTTP, install callbacks.
    Image {
        #[command(flatten)]
        image: xcat3_image::cli::ImageArgs,
        #[command(flatten)]
        standalone: xcat3_image::cli::StandaloneArgs,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// The public gRPC api.
    Api {
        #[command(flatten)]
        api: xcat3_api::cli::ApiArgs,
        #[command(flatten)]
        coord: CoordArgs,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// A network agent (DHCP, ProxyDHCP, TFTP, iPXE HTTP), fed by the api.
    Network {
        #[command(flatten)]
        network: xcat3_network::cli::NetworkArgs,
        #[command(flatten)]
        standalone: xcat3_network::cli::StandaloneArgs,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Seals every stored secret with the current key: secrets stored before a key was set,
    /// and those sealed with a previous key (rotation). Safe while the services run.
    ResealSecrets {
        /// Database URL [default: SQLite file xcat3.db in the data directory].
        #[arg(long, env = "XCAT3_DATABASE_URL")]
        database_url: Option<String>,
        #[arg(long, env = "XCAT3_DATA_DIR")]
        data_dir: Option<std::path::PathBuf>,
        #[command(flatten)]
        secrets: xcat3_runtime::config::SecretsArgs,
    },
    /// A conductor.
    Conductor {
        #[command(flatten)]
        conductor: xcat3_conductor::cli::ConductorArgs,
        #[command(flatten)]
        coord: CoordArgs,
        #[command(flatten)]
        tls: TlsArgs,
    },
}

/// mimalloc: after four 100,000-node operations the all-in-one server held 455 MB, against
/// 978 MB with glibc's allocator (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match xcat3_runtime::layered::parse::<Cli>().role {
        Role::AllInOne {
            api,
            drivers,
            shards,
            network,
            no_network_agent,
            image,
            tls,
        } => all_in_one(
            api,
            drivers,
            shards,
            (!no_network_agent).then_some(network),
            image,
            tls,
        ),
        Role::Image {
            image,
            standalone,
            tls,
        } => xcat3_image::cli::main(image, standalone, tls),
        Role::Network {
            network,
            standalone,
            tls,
        } => xcat3_network::cli::main(network, standalone, tls),
        Role::Api { api, coord, tls } => xcat3_api::cli::main(api, coord, tls),
        Role::ResealSecrets {
            database_url,
            data_dir,
            secrets,
        } => reseal_secrets(database_url, data_dir, secrets),
        Role::Conductor {
            conductor,
            coord,
            tls,
        } => xcat3_conductor::cli::main(conductor, coord, tls),
    }
}

fn reseal_secrets(
    database_url: Option<String>,
    data_dir: Option<std::path::PathBuf>,
    secrets: xcat3_runtime::config::SecretsArgs,
) -> std::process::ExitCode {
    let env: HashMap<String, String> = std::env::vars().collect();
    let env = &env;
    xcat3_runtime::process::run("xcat3-server", env, |_shutdown| async move {
        let url = match database_url {
            Some(url) => url,
            None => xcat3_runtime::config::sqlite_url(
                &data_dir.unwrap_or_else(|| xcat3_runtime::config::default_data_dir(env)),
            )
            .map_err(Failure::Config)?,
        };
        let keys = xcat3_store::SealingKeys::from_files(
            secrets.secrets_key_file.as_deref(),
            &secrets.secrets_previous_key_files,
        )
        .map_err(|e| Failure::Config(std::io::Error::other(e).into()))?;
        if !keys.seals() {
            return Err(Failure::Config(
                std::io::Error::other("no --secrets-key-file: nothing to seal with").into(),
            ));
        }
        let store = xcat3_store::Store::connect(&url)
            .await
            .map_err(|e| Failure::Config(e.into()))?
            .with_sealing(keys);
        let done = store.reseal_secrets().await?;
        #[allow(clippy::print_stdout)]
        {
            println!(
                "resealed the secrets of {} nodes and {} credentials",
                done.nodes, done.credentials
            );
        }
        Ok(())
    })
}

fn all_in_one(
    api: xcat3_api::cli::ApiArgs,
    drivers: xcat3_conductor::cli::DriverArgs,
    shards: u32,
    network: Option<xcat3_network::cli::NetworkArgs>,
    image: xcat3_image::cli::ImageArgs,
    tls: TlsArgs,
) -> std::process::ExitCode {
    let env: HashMap<String, String> = std::env::vars().collect();
    let env = &env;
    xcat3_runtime::process::run("xcat3-server", env, |shutdown| async move {
        let mut resolved = api.resolve(env, true).map_err(Failure::Config)?;
        if tls.tls_ca.is_some() || tls.tls_client_ca.is_some() {
            return Err(Failure::Config(
                std::io::Error::other(
                    "all-in-one calls no other host: --tls-ca and --tls-client-ca are for the split roles",
                )
                .into(),
            ));
        }
        resolved.config.tls = xcat3_runtime::tls::Tls::load(&tls).map_err(Failure::Config)?;
        // The agent in this process reaches the api over plain loopback when the public
        // listener speaks TLS (its certificate need not name 127.0.0.1).
        let agent_api = if resolved.config.tls.serves_tls() {
            let internal = std::net::TcpListener::bind(("127.0.0.1", 0))
                .map_err(|e| Failure::Config(e.into()))?;
            let addr = internal
                .local_addr()
                .map_err(|e| Failure::Config(e.into()))?;
            resolved.config.internal_listener = Some(Arc::new(internal));
            format!("http://{addr}")
        } else {
            format!("http://{}", resolved.config.listen)
        };
        if let Some(path) = &resolved.generated_token_file {
            tracing::info!(
                file = %path.display(),
                "admin token is in this file; for the CLI: export XCAT3_TOKEN=$(cat {})",
                path.display()
            );
        }
        // Tokens start above what the database holds, whatever the clock says.
        let stored_epoch = xcat3_store::Store::connect(&resolved.config.database_url)
            .await
            .map_err(|e| Failure::Config(e.into()))?
            .max_shard_epoch()
            .await?;
        let coordinator: Arc<dyn Coordinator> =
            Arc::new(xcat3_coord::LocalCoordinator::new(shards).above(stored_epoch));
        let metrics = xcat3_runtime::metrics::Metrics::new();
        let mut config =
            xcat3_conductor::ConductorConfig::new(resolved.config.database_url.clone());
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.metrics_listen = None; // its RPCs show on the api's /metrics
        config.tokens = Tokens {
            admin: resolved.config.tokens.admin.clone(),
            readonly: None,
            agent: None,
        };
        config.insecure = resolved.config.insecure;
        config.sealing = resolved.config.sealing.clone();
        drivers.apply(&mut config);
        // Build all four first: a bad setting fails here, before anything serves.
        let conductor =
            xcat3_conductor::Conductor::build(config, coordinator.clone(), metrics.clone())
                .await
                .map_err(Failure::Config)?;
        let mut image_config = image
            .resolve(
                env,
                Some(resolved.data_dir.clone()),
                resolved.config.database_url.clone(),
                Tokens {
                    admin: resolved.config.tokens.admin.clone(),
                    readonly: None,
                    agent: None,
                },
                resolved.config.insecure,
            )
            .map_err(Failure::Config)?;
        image_config.sealing = resolved.config.sealing.clone();
        let explicit_base = image_config.base_url.clone();
        let install_source_check = image_config.install_source_check;
        // With --image-metrics-listen its own page; otherwise on the api's.
        let image_metrics = if image_config.metrics_listen.is_some() {
            xcat3_runtime::metrics::Metrics::new()
        } else {
            metrics.clone()
        };
        let image = xcat3_image::Image::build(image_config, image_metrics)
            .await
            .map_err(Failure::Config)?;
        let (image_grpc, image_http) =
            image.local_addrs().map_err(|e| Failure::Config(e.into()))?;
        resolved.config.image_grpc = Some(format!("http://{image_grpc}"));
        if resolved.config.image_url.is_none() {
            resolved.config.image_url = explicit_base.or_else(|| {
                (!image_http.ip().is_unspecified()).then(|| format!("http://{image_http}"))
            });
        }
        let agent = match network {
            Some(args) => {
                let own_metrics = args.network_metrics_listen.is_some();
                let mut config = args
                    .resolve(env, Some(resolved.data_dir.clone()))
                    .map_err(Failure::Config)?;
                config.api = agent_api;
                config.token = resolved.config.tokens.admin.clone();
                config.install_source_check = install_source_check;
                let metrics = if own_metrics {
                    // Its own page, as a stand-alone agent has ("none": no page).
                    xcat3_runtime::metrics::Metrics::new()
                } else {
                    config.metrics_listen = None;
                    metrics.clone()
                };
                Some(
                    xcat3_network::Agent::build(config, metrics)
                        .await
                        .map_err(Failure::Config)?,
                )
            }
            None => None,
        };
        let api = xcat3_api::Api::build(resolved.config, coordinator, metrics)
            .await
            .map_err(Failure::Config)?;

        // Then run them; the api serves once the conductor owns its shards, so the first power
        // request finds it. Any of them ending ends them all.
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let conductor = tokio::spawn(conductor.run_until(shutdown.clone(), Some(ready_tx)));
        if ready.await.is_err() {
            shutdown.cancel();
            conductor.await??;
            return Err(Failure::Serve(
                std::io::Error::other("the conductor stopped before it was ready").into(),
            ));
        }
        image.announce().map_err(|e| Failure::Serve(e.into()))?;
        let image_task = spawn_service(image.run(shutdown.clone()), shutdown.clone());
        let agent_task = match agent {
            Some(agent) => {
                agent.announce().map_err(|e| Failure::Serve(e.into()))?;
                Some(spawn_service(agent.run(shutdown.clone()), shutdown.clone()))
            }
            None => None,
        };
        api.announce().map_err(|e| Failure::Serve(e.into()))?;
        let api = api.run(shutdown.clone()).await;
        shutdown.cancel();
        let conductor = conductor.await;
        if let Some(agent) = agent_task {
            agent.await??;
        }
        image_task.await??;
        api?;
        conductor??;
        Ok(())
    })
}

/// Runs a service on its own task; when it ends, for whatever reason, the others are told to stop.
fn spawn_service<T: Send + 'static>(
    run: impl std::future::Future<Output = T> + Send + 'static,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<T> {
    tokio::spawn(async move {
        let ended = run.await;
        shutdown.cancel();
        ended
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn flags_of_every_role_are_distinct() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
