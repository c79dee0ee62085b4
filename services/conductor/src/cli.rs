//! Command-line configuration of the conductor (flags, or `XCAT3_*` environment variables).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use xcat3_runtime::auth::Tokens;
use xcat3_runtime::config::{default_data_dir, sqlite_url, token_from};

use crate::ConductorConfig;

/// How drivers behave; shared by `xcat3-conductor` and `xcat3-server all-in-one`.
#[derive(clap::Args, Debug, Clone)]
pub struct DriverArgs {
    /// Seconds between power-state syncs of every owned node (0: never).
    #[arg(long, env = "XCAT3_POWER_SYNC_INTERVAL_SECS", default_value_t = 60)]
    pub power_sync_interval_secs: u64,
    /// Longest a single BMC or hypervisor operation may take, in seconds.
    #[arg(long, env = "XCAT3_OPERATION_TIMEOUT_SECS", default_value_t = 30)]
    pub operation_timeout_secs: u64,
    /// Operations in flight per driver on one conductor.
    #[arg(long, env = "XCAT3_PER_DRIVER_CONCURRENCY", default_value_t = 256)]
    pub per_driver_concurrency: usize,
    /// Operations in flight per BMC address.
    #[arg(long, env = "XCAT3_PER_BMC_CONCURRENCY", default_value_t = 1)]
    pub per_bmc_concurrency: usize,
    /// IPMI cipher suite for ipmitool (3 or 17).
    #[arg(long, env = "XCAT3_IPMI_CIPHER_SUITE", default_value_t = 3)]
    pub ipmi_cipher_suite: u8,
    /// Known-hosts file that hypervisors' ssh host keys are checked against (mgt=kvm)
    /// [default: ssh's own, ~/.ssh/known_hosts].
    #[arg(long, env = "XCAT3_SSH_KNOWN_HOSTS")]
    pub ssh_known_hosts: Option<PathBuf>,
    /// Accept hypervisors' host keys that are not known: turns off host verification.
    #[arg(long)]
    pub ssh_accept_unknown_host_keys: bool,
}

impl DriverArgs {
    /// Applies these settings to `config`.
    pub fn apply(&self, config: &mut ConductorConfig) {
        config.power_sync_interval = Duration::from_secs(self.power_sync_interval_secs);
        config.limits.timeout = Duration::from_secs(self.operation_timeout_secs.max(1));
        config.limits.per_driver = self.per_driver_concurrency.max(1);
        config.limits.per_bmc = self.per_bmc_concurrency.max(1);
        config.ipmi.cipher_suite = self.ipmi_cipher_suite;
        config.kvm.known_hosts = self.ssh_known_hosts.clone();
        config.kvm.accept_unknown_host_keys = self.ssh_accept_unknown_host_keys;
    }
}

/// Flags of `xcat3-conductor` and `xcat3-server conductor`.
#[derive(clap::Args, Debug, Clone)]
pub struct ConductorArgs {
    /// Unique id in the cluster [default: <host>-<pid>-<start>].
    #[arg(long, env = "XCAT3_CONDUCTOR_ID")]
    pub id: Option<String>,
    /// Internal gRPC address.
    #[arg(long, env = "XCAT3_CONDUCTOR_LISTEN", default_value = "127.0.0.1:3020")]
    pub listen: SocketAddr,
    /// Address the api uses to reach this conductor [default: http://<listen>, https:// with
    /// --tls-cert].
    #[arg(long, env = "XCAT3_CONDUCTOR_ADVERTISE")]
    pub advertise: Option<String>,
    /// Prometheus /metrics address, or "none".
    #[arg(long, env = "XCAT3_METRICS_LISTEN", default_value = "127.0.0.1:9320")]
    pub metrics_listen: String,
    /// Database URL [default: SQLite file xcat3.db in the data directory].
    #[arg(long, env = "XCAT3_DATABASE_URL")]
    pub database_url: Option<String>,
    #[arg(long, env = "XCAT3_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// File holding the admin token the api calls with (else XCAT3_ADMIN_TOKEN).
    #[arg(long, env = "XCAT3_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Accept calls without a token. For local development only.
    #[arg(long)]
    pub insecure: bool,
    #[command(flatten)]
    pub drivers: DriverArgs,
    #[command(flatten)]
    pub secrets: xcat3_runtime::config::SecretsArgs,
}

impl ConductorArgs {
    pub fn resolve(&self, env: &HashMap<String, String>) -> anyhow::Result<ConductorConfig> {
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| default_data_dir(env));
        let database_url = match &self.database_url {
            Some(url) => url.clone(),
            None => sqlite_url(&data_dir)?,
        };
        xcat3_runtime::config::private_sqlite_files(&database_url)?;
        let mut config = ConductorConfig::new(database_url);
        config.id = self.id.clone();
        config.listen = self.listen;
        config.advertise = self.advertise.clone();
        config.metrics_listen =
            xcat3_runtime::config::optional_addr("metrics_listen", &self.metrics_listen)?;
        config.tokens = Tokens {
            admin: token_from(self.admin_token_file.as_deref(), env, "XCAT3_ADMIN_TOKEN")?,
            readonly: None,
            agent: None,
        };
        config.insecure = self.insecure;
        if config.tokens.is_empty() && !config.insecure {
            anyhow::bail!(
                "no token configured: set XCAT3_ADMIN_TOKEN (or --admin-token-file), or pass --insecure"
            );
        }
        self.drivers.apply(&mut config);
        config.sealing = xcat3_store::SealingKeys::from_files(
            self.secrets.secrets_key_file.as_deref(),
            &self.secrets.secrets_previous_key_files,
        )
        .map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

/// `xcat3-conductor` / `xcat3-server conductor`. A conductor needs etcd unless it is alone.
pub fn main(
    args: ConductorArgs,
    coord: xcat3_coord::CoordArgs,
    tls: xcat3_runtime::tls::TlsArgs,
) -> std::process::ExitCode {
    use xcat3_runtime::process::Failure;
    let env: HashMap<String, String> = std::env::vars().collect();
    let env = &env;
    xcat3_runtime::process::run("xcat3-conductor", env, |shutdown| async move {
        let mut config = args.resolve(env).map_err(Failure::Config)?;
        config.tls = xcat3_runtime::tls::Tls::load(&tls).map_err(Failure::Config)?;
        let coordinator = coord
            .connect()
            .await
            .map_err(|e| Failure::Config(e.into()))?;
        let conductor =
            crate::Conductor::build(config, coordinator, xcat3_runtime::metrics::Metrics::new())
                .await
                .map_err(Failure::Config)?;
        let metrics = conductor
            .metrics_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "none".into());
        #[allow(clippy::print_stdout)]
        {
            println!(
                "xcat3 conductor ready id={} grpc={} metrics={metrics}",
                conductor.id(),
                conductor.local_addr()?
            );
        }
        conductor.run(shutdown).await?;
        Ok(())
    })
}
