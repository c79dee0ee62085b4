//! `xcat3-server ROLE`: one binary for every role, so a single machine runs the whole system with
//! `xcat3-server all-in-one` and a cluster runs one role per pod. Composition only: each service
//! is a library and owns its configuration.
//!
//! - `all-in-one`: the api and a conductor in one process, talking gRPC over loopback (the same
//!   code path as a cluster), SQLite under the data directory, the local coordinator (no etcd),
//!   and an admin token generated into `<data_dir>/admin.token` when none is configured.
//! - `api`, `conductor`: one service each; conductors share shards through etcd.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use xcat3_coord::{CoordArgs, Coordinator};
use xcat3_runtime::auth::Tokens;
use xcat3_runtime::process::Failure;

#[derive(Parser)]
#[command(version, about = "xcat3 server: run one service, or all of them")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Every service in one process, SQLite by default, no etcd.
    AllInOne {
        #[command(flatten)]
        api: xcat3_api::cli::ApiArgs,
        #[command(flatten)]
        drivers: xcat3_conductor::cli::DriverArgs,
        /// Number of shards.
        #[arg(long, env = "XCAT3_SHARDS", default_value_t = xcat3_coord::DEFAULT_SHARDS)]
        shards: u32,
    },
    /// The public gRPC api.
    Api {
        #[command(flatten)]
        api: xcat3_api::cli::ApiArgs,
        #[command(flatten)]
        coord: CoordArgs,
    },
    /// A conductor.
    Conductor {
        #[command(flatten)]
        conductor: xcat3_conductor::cli::ConductorArgs,
        #[command(flatten)]
        coord: CoordArgs,
    },
}

fn main() -> std::process::ExitCode {
    match Cli::parse().role {
        Role::AllInOne {
            api,
            drivers,
            shards,
        } => all_in_one(api, drivers, shards),
        Role::Api { api, coord } => xcat3_api::cli::main(api, coord),
        Role::Conductor { conductor, coord } => xcat3_conductor::cli::main(conductor, coord),
    }
}

fn all_in_one(
    api: xcat3_api::cli::ApiArgs,
    drivers: xcat3_conductor::cli::DriverArgs,
    shards: u32,
) -> std::process::ExitCode {
    let env: HashMap<String, String> = std::env::vars().collect();
    let env = &env;
    xcat3_runtime::process::run("xcat3-server", env, |shutdown| async move {
        let resolved = api.resolve(env, true).map_err(Failure::Config)?;
        if let Some(path) = &resolved.generated_token_file {
            tracing::info!(
                file = %path.display(),
                "admin token is in this file; for the CLI: export XCAT3_TOKEN=$(cat {})",
                path.display()
            );
        }
        let coordinator: Arc<dyn Coordinator> =
            Arc::new(xcat3_coord::LocalCoordinator::new(shards));
        let metrics = xcat3_runtime::metrics::Metrics::new();
        let mut config =
            xcat3_conductor::ConductorConfig::new(resolved.config.database_url.clone());
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.metrics_listen = None; // its RPCs show on the api's /metrics
        config.tokens = Tokens {
            admin: resolved.config.tokens.admin.clone(),
            readonly: None,
        };
        config.insecure = resolved.config.insecure;
        drivers.apply(&mut config);
        let conductor =
            xcat3_conductor::Conductor::build(config, coordinator.clone(), metrics.clone())
                .await
                .map_err(Failure::Config)?;
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let conductor = tokio::spawn(conductor.run_until(shutdown.clone(), Some(ready_tx)));
        // Serve only once the conductor owns its shards, so the first power request finds it.
        if ready.await.is_err() {
            shutdown.cancel();
            conductor.await??;
            return Err(Failure::Serve(
                std::io::Error::other("the conductor stopped before it was ready").into(),
            ));
        }
        let api = xcat3_api::serve(resolved.config, coordinator, metrics, shutdown.clone()).await;
        shutdown.cancel();
        let conductor = conductor.await;
        api?;
        conductor??;
        Ok(())
    })
}
