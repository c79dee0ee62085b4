//! Command-line configuration of the image service (flags, or `XCAT3_*` environment variables).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use xcat3_runtime::config::{default_data_dir, token_from};

use crate::ImageConfig;

/// Flags of `xcat3-server image` (and the image service inside `all-in-one`).
#[derive(clap::Args, Debug, Clone)]
pub struct ImageArgs {
    /// gRPC address for imports (`xcat3-copycds` reaches it through the api).
    #[arg(
        long = "image-grpc-listen",
        env = "XCAT3_IMAGE_GRPC_LISTEN",
        default_value = "127.0.0.1:3030"
    )]
    pub image_grpc_listen: SocketAddr,
    /// HTTP address installing nodes fetch trees and install files from.
    #[arg(
        long = "image-http-listen",
        env = "XCAT3_IMAGE_HTTP_LISTEN",
        default_value = "0.0.0.0:8090"
    )]
    pub image_http_listen: SocketAddr,
    /// The URL nodes reach the HTTP address at, like http://10.0.0.1:8090 [default: from
    /// --image-http-listen].
    #[arg(long = "image-base-url", env = "XCAT3_IMAGE_BASE_URL")]
    pub image_base_url: Option<String>,
    /// Prometheus /metrics address of the image service, or "none" (all-in-one: the image
    /// service's metrics are on the api's --metrics-listen page unless this is given).
    #[arg(
        long = "image-metrics-listen",
        env = "XCAT3_IMAGE_METRICS_LISTEN",
        default_value = "none"
    )]
    pub image_metrics_listen: String,
    /// Where trees, uploads and template overrides live [default: <data dir>/images].
    #[arg(long = "image-dir", env = "XCAT3_IMAGE_DIR")]
    pub image_dir: Option<PathBuf>,
    /// Serve deploy files (root password hash, ssh keys) and accept install callbacks from any
    /// address, not only from the node's primary NIC address. Only where nodes reach the image
    /// service through NAT (a Kubernetes Service that does not keep the client's address).
    #[arg(
        long = "no-install-source-check",
        env = "XCAT3_NO_INSTALL_SOURCE_CHECK"
    )]
    pub no_install_source_check: bool,
}

/// Flags only the stand-alone `xcat3-server image` has.
#[derive(clap::Args, Debug, Clone)]
pub struct StandaloneArgs {
    #[arg(long = "database-url", env = "XCAT3_DATABASE_URL")]
    pub database_url: String,
    /// File holding the token the api sends (else XCAT3_ADMIN_TOKEN).
    #[arg(long = "admin-token-file", env = "XCAT3_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Accept requests without a token (local development only).
    #[arg(long, env = "XCAT3_INSECURE")]
    pub insecure: bool,
    #[command(flatten)]
    pub secrets: xcat3_runtime::config::SecretsArgs,
}

impl ImageArgs {
    /// The configuration, with the database and tokens given by the caller.
    pub fn resolve(
        &self,
        env: &HashMap<String, String>,
        data_dir: Option<PathBuf>,
        database_url: String,
        tokens: xcat3_runtime::auth::Tokens,
        insecure: bool,
    ) -> anyhow::Result<ImageConfig> {
        let data_dir = self.image_dir.clone().unwrap_or_else(|| {
            data_dir
                .unwrap_or_else(|| default_data_dir(env))
                .join("images")
        });
        let base_url = self.image_base_url.clone().or_else(|| {
            // 0.0.0.0 is no address a node can use, and port 0 is known once bound.
            (!self.image_http_listen.ip().is_unspecified() && self.image_http_listen.port() != 0)
                .then(|| format!("http://{}", self.image_http_listen))
        });
        let metrics_listen = xcat3_runtime::config::optional_addr(
            "image_metrics_listen",
            &self.image_metrics_listen,
        )?;
        Ok(ImageConfig {
            metrics_listen,
            data_dir,
            database_url,
            grpc_listen: self.image_grpc_listen,
            http_listen: self.image_http_listen,
            base_url,
            tokens,
            insecure,
            install_source_check: !self.no_install_source_check,
            tls: Default::default(),
            sealing: Default::default(),
        })
    }
}

/// `xcat3-server image`.
pub fn main(
    args: ImageArgs,
    standalone: StandaloneArgs,
    tls: xcat3_runtime::tls::TlsArgs,
) -> std::process::ExitCode {
    use xcat3_runtime::process::Failure;
    let env: HashMap<String, String> = std::env::vars().collect();
    let env = &env;
    xcat3_runtime::process::run("xcat3-image", env, |shutdown| async move {
        let admin = token_from(
            standalone.admin_token_file.as_deref(),
            env,
            "XCAT3_ADMIN_TOKEN",
        )
        .map_err(Failure::Config)?;
        let tokens = xcat3_runtime::auth::Tokens {
            admin,
            readonly: None,
            agent: None,
        };
        let mut config = args
            .resolve(
                env,
                None,
                standalone.database_url,
                tokens,
                standalone.insecure,
            )
            .map_err(Failure::Config)?;
        config.tls = xcat3_runtime::tls::Tls::load(&tls).map_err(Failure::Config)?;
        config.sealing = xcat3_store::SealingKeys::from_files(
            standalone.secrets.secrets_key_file.as_deref(),
            &standalone.secrets.secrets_previous_key_files,
        )
        .map_err(|e| Failure::Config(anyhow::Error::msg(e)))?;
        crate::serve(config, xcat3_runtime::metrics::Metrics::new(), shutdown)
            .await
            .map_err(Failure::Serve)?;
        Ok(())
    })
}
