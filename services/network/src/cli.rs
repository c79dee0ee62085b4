//! Command-line configuration of the network agent (flags, or `XCAT3_*` environment variables).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use xcat3_runtime::config::{default_data_dir, optional_addr, token_from};

use crate::AgentConfig;
use crate::dhcp::InterfaceFilter;

/// Where a stand-alone agent serves its metrics unless told otherwise.
const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9330";

/// Flags of `xcat3-server network` (and the agent inside `all-in-one`).
#[derive(clap::Args, Debug, Clone)]
pub struct NetworkArgs {
    /// Name of this agent [default: the host name].
    #[arg(long = "agent-id", env = "XCAT3_AGENT_ID")]
    pub agent_id: Option<String>,
    /// The api's gRPC URL.
    #[arg(
        long = "api-url",
        env = "XCAT3_API_URL",
        default_value = "http://127.0.0.1:3010"
    )]
    pub api_url: String,
    /// File holding the token the agent calls the api with (else XCAT3_AGENT_TOKEN, the scoped
    /// agent token, or XCAT3_ADMIN_TOKEN).
    #[arg(long = "api-token-file", env = "XCAT3_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Interfaces to serve DHCP on, comma-separated [default: every interface but loopback]. The
    /// agent answers only for subnets defined with `xcat3 network-create`.
    #[arg(
        long = "dhcp-interfaces",
        env = "XCAT3_DHCP_INTERFACES",
        value_delimiter = ','
    )]
    pub dhcp_interfaces: Vec<String>,
    /// Do not serve DHCP (TFTP and HTTP only).
    #[arg(long = "no-dhcp", env = "XCAT3_NO_DHCP")]
    pub no_dhcp: bool,
    /// ProxyDHCP: another server gives the addresses; answer PXE clients with boot information only.
    #[arg(long = "proxy-dhcp", env = "XCAT3_PROXY_DHCP")]
    pub proxy_dhcp: bool,
    /// DHCP lease time in seconds.
    #[arg(
        long = "lease-time",
        env = "XCAT3_LEASE_TIME",
        default_value_t = 43_200
    )]
    pub lease_time: u32,
    /// TFTP address, or "none".
    #[arg(
        long = "tftp-listen",
        env = "XCAT3_TFTP_LISTEN",
        default_value = "0.0.0.0:69"
    )]
    pub tftp_listen: String,
    /// Directory served over TFTP [default: <state dir>/tftp].
    #[arg(long = "tftp-root", env = "XCAT3_TFTP_ROOT")]
    pub tftp_root: Option<PathBuf>,
    /// iPXE binaries copied into the TFTP root at start, or "none".
    #[arg(
        long = "ipxe-dir",
        env = "XCAT3_IPXE_DIR",
        default_value = "/usr/lib/ipxe"
    )]
    pub ipxe_dir: String,
    /// DNS address (A and PTR records of the nodes in their networks' domains), or "none".
    #[arg(
        long = "dns-listen",
        env = "XCAT3_DNS_LISTEN",
        default_value = "0.0.0.0:53"
    )]
    pub dns_listen: String,
    /// HTTP address for iPXE scripts and files.
    #[arg(
        long = "http-listen",
        env = "XCAT3_BOOT_HTTP_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub http_listen: SocketAddr,
    /// Prometheus /metrics address of the network agent, or "none" [default: 127.0.0.1:9330;
    /// all-in-one: the agent's metrics are on the api's --metrics-listen page unless this is
    /// given].
    #[arg(long = "network-metrics-listen", env = "XCAT3_NETWORK_METRICS_LISTEN")]
    pub network_metrics_listen: Option<String>,
    /// Where the agent keeps its boot table and leases [default: <data dir>/network].
    #[arg(long = "state-dir", env = "XCAT3_NETWORK_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

impl NetworkArgs {
    /// The agent's configuration; `data_dir` is the service data directory when none is set.
    pub fn resolve(
        &self,
        env: &HashMap<String, String>,
        data_dir: Option<PathBuf>,
    ) -> anyhow::Result<AgentConfig> {
        let state_dir = self.state_dir.clone().unwrap_or_else(|| {
            data_dir
                .unwrap_or_else(|| default_data_dir(env))
                .join("network")
        });
        let id = self
            .agent_id
            .clone()
            .unwrap_or_else(xcat3_runtime::config::hostname);
        let mut config = AgentConfig::new(id, self.api_url.clone(), state_dir);
        config.token = match token_from(self.api_token_file.as_deref(), env, "XCAT3_AGENT_TOKEN")? {
            Some(t) => Some(t),
            None => token_from(None, env, "XCAT3_ADMIN_TOKEN")?,
        };
        config.interfaces = InterfaceFilter {
            names: self
                .dhcp_interfaces
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
        };
        config.dhcp = !self.no_dhcp;
        config.settings.proxy = self.proxy_dhcp;
        config.settings.lease_secs = self.lease_time.max(60);
        config.settings.http_port = self.http_listen.port();
        config.tftp_listen = optional_addr("tftp_listen", &self.tftp_listen)?;
        if let Some(root) = &self.tftp_root {
            config.tftp_root = root.clone();
        }
        config.ipxe_dir = (self.ipxe_dir != "none").then(|| PathBuf::from(&self.ipxe_dir));
        config.dns_listen = optional_addr("dns_listen", &self.dns_listen)?;
        config.http_listen = self.http_listen;
        config.metrics_listen = optional_addr(
            "network_metrics_listen",
            self.network_metrics_listen
                .as_deref()
                .unwrap_or(DEFAULT_METRICS_LISTEN),
        )?;
        Ok(config)
    }
}

/// `xcat3-server network`.
/// Flags of the stand-alone agent only (in `all-in-one` the image service's flag of the same
/// name sets both).
#[derive(clap::Args, Debug, Clone)]
pub struct StandaloneArgs {
    /// Serve installer scripts (which carry a deploy token) to any address, not only to the
    /// node's reserved one. Only for sites where requests reach the agent through NAT, or whose
    /// other DHCP server (ProxyDHCP) gives nodes addresses other than their reservations.
    #[arg(
        long = "no-install-source-check",
        env = "XCAT3_NO_INSTALL_SOURCE_CHECK"
    )]
    pub no_install_source_check: bool,
}

pub fn main(
    args: NetworkArgs,
    standalone: StandaloneArgs,
    tls: xcat3_runtime::tls::TlsArgs,
) -> std::process::ExitCode {
    use xcat3_runtime::process::Failure;
    let env: HashMap<String, String> = std::env::vars().collect();
    let env = &env;
    xcat3_runtime::process::run("xcat3-network", env, |shutdown| async move {
        let mut config = args.resolve(env, None).map_err(Failure::Config)?;
        config.install_source_check = !standalone.no_install_source_check;
        config.tls = xcat3_runtime::tls::Tls::load(&tls).map_err(Failure::Config)?;
        crate::serve(config, xcat3_runtime::metrics::Metrics::new(), shutdown)
            .await
            .map_err(Failure::Serve)?;
        Ok(())
    })
}
