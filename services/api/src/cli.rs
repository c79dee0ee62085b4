//! Configuration of the api. The flags (and the environment, and a `--config` file: see
//! `xcat3_runtime::layered`, shared by every service) are resolved here into an [`ApiConfig`]. The
//! environment is passed in, so tests never change the process's own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use xcat3_runtime::auth::Tokens;
use xcat3_runtime::config::{
    default_data_dir, generated_token, optional_addr, sqlite_url, token_from,
};

use crate::ApiConfig;

/// Flags of `xcat3-api`, `xcat3-server api` and `xcat3-server all-in-one`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ApiArgs {
    /// gRPC address [default: 127.0.0.1:3010].
    #[arg(long, env = "XCAT3_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Prometheus /metrics address, or "none" [default: 127.0.0.1:9310].
    #[arg(long, env = "XCAT3_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Database URL [default: SQLite file xcat3.db in the data directory].
    #[arg(long, env = "XCAT3_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory for the SQLite database and the generated admin token
    /// [default: /var/lib/xcat3 as root, else ~/.local/share/xcat3].
    #[arg(long, env = "XCAT3_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// File holding the admin token (else XCAT3_ADMIN_TOKEN).
    #[arg(long, env = "XCAT3_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// File holding the read-only token (else XCAT3_READONLY_TOKEN).
    #[arg(long, env = "XCAT3_READONLY_TOKEN_FILE")]
    pub readonly_token_file: Option<PathBuf>,
    /// File holding the network agents' token, which may only follow the boot table and report
    /// discoveries (else XCAT3_AGENT_TOKEN).
    #[arg(long, env = "XCAT3_AGENT_TOKEN_FILE")]
    pub agent_token_file: Option<PathBuf>,
    /// Largest number of names a noderange may expand to [default: 100000].
    #[arg(long, env = "XCAT3_NODERANGE_LIMIT")]
    pub noderange_limit: Option<usize>,
    /// Accept requests without a token. For local development only.
    #[arg(long)]
    pub insecure: bool,
    /// The image service's HTTP base URL as nodes reach it (http://10.0.0.1:8090); deploys need it.
    #[arg(long, env = "XCAT3_IMAGE_URL")]
    pub image_url: Option<String>,
    /// The image service's gRPC URL, where imports (`xcat3-copycds`) are forwarded.
    #[arg(long, env = "XCAT3_IMAGE_GRPC")]
    pub image_grpc: Option<String>,
    /// Minutes a deploy waits for the installed system's callback by default [default: 60].
    #[arg(long, env = "XCAT3_DEPLOY_TIMEOUT_MINUTES")]
    pub deploy_timeout_minutes: Option<u64>,
    /// On Kubernetes: scale this conductor Deployment from the node count (needs RBAC on
    /// deployments/scale; the chart grants it with conductor.autoscale.enabled).
    #[arg(long, env = "XCAT3_SCALE_CONDUCTORS")]
    pub scale_conductors: Option<String>,
    /// The Deployment's namespace [default: the pod's own].
    #[arg(long, env = "XCAT3_SCALE_NAMESPACE")]
    pub scale_namespace: Option<String>,
    /// Nodes one conductor should own at most.
    #[arg(long, env = "XCAT3_NODES_PER_CONDUCTOR", default_value_t = 2000)]
    pub nodes_per_conductor: u64,
    #[arg(long, env = "XCAT3_MIN_CONDUCTORS", default_value_t = 1)]
    pub min_conductors: i32,
    #[arg(long, env = "XCAT3_MAX_CONDUCTORS", default_value_t = 16)]
    pub max_conductors: i32,
    /// Seconds between two looks at the node count and the conductor Deployment's scale.
    #[arg(long, env = "XCAT3_SCALE_INTERVAL_SECS", default_value_t = 30)]
    pub scale_interval_secs: u64,
    /// With TLS: the name every conductor's certificate must carry, when their addresses (pod
    /// IPs) are not in their certificates [default: the host of each conductor's address].
    #[arg(long, env = "XCAT3_CONDUCTOR_TLS_NAME")]
    pub conductor_tls_name: Option<String>,
    #[command(flatten)]
    pub secrets: xcat3_runtime::config::SecretsArgs,
}

/// What [`ApiArgs::resolve`] decided besides the [`ApiConfig`].
#[derive(Debug)]
pub struct Resolved {
    pub config: ApiConfig,
    pub data_dir: PathBuf,
    /// Set when the admin token was generated into this file.
    pub generated_token_file: Option<PathBuf>,
}

impl ApiArgs {
    /// Resolves the flags (`env`: the process's environment) into a config. With `generate_token` (the
    /// all-in-one server) and no admin token given, one is generated into the data directory.
    pub fn resolve(
        &self,
        env: &HashMap<String, String>,
        generate_token: bool,
    ) -> anyhow::Result<Resolved> {
        let explicit_dir = self.data_dir.clone();
        if let Some(dir) = &explicit_dir {
            xcat3_runtime::config::private_dir(dir)?;
        }
        let data_dir = explicit_dir.unwrap_or_else(|| default_data_dir(env));
        let database_url = match self.database_url.clone() {
            Some(url) => url,
            None => sqlite_url(&data_dir)?,
        };
        xcat3_runtime::config::private_sqlite_files(&database_url)?;
        let mut config = ApiConfig::new(database_url);
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(m) = self.metrics_listen.clone() {
            config.metrics_listen = optional_addr("metrics_listen", &m)?;
        }
        if let Some(limit) = self.noderange_limit {
            config.noderange_limit = limit;
        }
        config.insecure = self.insecure;
        if let Some(deployment) = &self.scale_conductors {
            let namespace = match &self.scale_namespace {
                Some(ns) => ns.clone(),
                None => std::fs::read_to_string(
                    "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
                )
                .map(|s| s.trim().to_owned())
                .context("--scale-conductors: no --scale-namespace and not running in a pod")?,
            };
            anyhow::ensure!(
                self.min_conductors >= 1 && self.max_conductors >= self.min_conductors,
                "--min-conductors must be at least 1 and at most --max-conductors"
            );
            config.scaler = Some(crate::scaler::ScalerConfig {
                deployment: deployment.clone(),
                namespace,
                nodes_per_conductor: self.nodes_per_conductor.max(1),
                min: self.min_conductors,
                max: self.max_conductors,
                interval: std::time::Duration::from_secs(self.scale_interval_secs.max(1)),
            });
        }
        config.image_url = self.image_url.clone();
        config.image_grpc = self.image_grpc.clone();
        config.conductor_tls_name = self.conductor_tls_name.clone();
        config.sealing = xcat3_store::SealingKeys::from_files(
            self.secrets.secrets_key_file.as_deref(),
            &self.secrets.secrets_previous_key_files,
        )
        .map_err(anyhow::Error::msg)?;
        if let Some(m) = self.deploy_timeout_minutes {
            config.deploy_timeout = std::time::Duration::from_secs(m.max(1) * 60);
        }
        let admin_file = self.admin_token_file.clone();
        let readonly_file = self.readonly_token_file.clone();
        let mut tokens = Tokens {
            admin: token_from(admin_file.as_deref(), env, "XCAT3_ADMIN_TOKEN")?,
            readonly: token_from(readonly_file.as_deref(), env, "XCAT3_READONLY_TOKEN")?,
            agent: token_from(self.agent_token_file.as_deref(), env, "XCAT3_AGENT_TOKEN")?,
        };
        let mut generated_token_file = None;
        if tokens.admin.is_none() && generate_token && !config.insecure {
            let path = data_dir.join("admin.token");
            tokens.admin = Some(generated_token(&path)?);
            generated_token_file = Some(path);
        }
        if tokens.is_empty() && !config.insecure {
            anyhow::bail!(
                "no token configured: set XCAT3_ADMIN_TOKEN (or --admin-token-file), or pass --insecure for local development"
            );
        }
        config.tokens = tokens;
        Ok(Resolved {
            config,
            data_dir,
            generated_token_file,
        })
    }
}

/// `xcat3-api` / `xcat3-server api`: the api alone; conductors are found through `coord`.
pub fn main(
    args: ApiArgs,
    coord: xcat3_coord::CoordArgs,
    tls: xcat3_runtime::tls::TlsArgs,
) -> std::process::ExitCode {
    use xcat3_runtime::process::Failure;
    let env: HashMap<String, String> = std::env::vars().collect();
    let env = &env;
    xcat3_runtime::process::run("xcat3-api", env, |shutdown| async move {
        let mut resolved = args.resolve(env, false).map_err(Failure::Config)?;
        resolved.config.tls = xcat3_runtime::tls::Tls::load(&tls).map_err(Failure::Config)?;
        let coordinator = coord
            .connect()
            .await
            .map_err(|e| Failure::Config(e.into()))?;
        crate::serve(
            resolved.config,
            coordinator,
            xcat3_runtime::metrics::Metrics::new(),
            shutdown,
        )
        .await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_generated_token() {
        let dir = tempfile::tempdir().unwrap();
        let args = ApiArgs {
            metrics_listen: Some("none".into()),
            noderange_limit: Some(7),
            data_dir: Some(dir.path().to_owned()),
            listen: Some("127.0.0.1:5000".parse().unwrap()),
            ..Default::default()
        };
        let r = args.resolve(&HashMap::new(), true).unwrap();
        assert_eq!(r.config.listen.port(), 5000);
        assert_eq!(r.config.metrics_listen, None);
        assert_eq!(r.config.noderange_limit, 7);
        assert!(r.config.database_url.starts_with("sqlite://"));
        let token_file = r.generated_token_file.unwrap();
        let again = args.resolve(&HashMap::new(), true).unwrap();
        assert_eq!(
            again.config.tokens.admin.unwrap().expose(),
            std::fs::read_to_string(&token_file).unwrap().trim(),
            "the generated token is reused"
        );

        let env = HashMap::from([(
            "XCAT3_ADMIN_TOKEN".to_owned(),
            "from-env-0123456789".to_owned(),
        )]);
        let r = args.resolve(&env, true).unwrap();
        assert_eq!(
            r.config.tokens.admin.unwrap().expose(),
            "from-env-0123456789"
        );
        let short = HashMap::from([("XCAT3_ADMIN_TOKEN".to_owned(), "secret".to_owned())]);
        let err = args.resolve(&short, true).unwrap_err();
        assert!(format!("{err:#}").contains("shorter than 16"), "{err:#}");
    }
}
