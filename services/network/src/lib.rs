//! The xcat3 network agent: what a booting machine meets first.
//!
//! - [`dhcp`]: DHCPv4 (reserved addresses for known NICs, dynamic ones for the rest, relays,
//!   PXE/iPXE/HTTP-boot answers) and ProxyDHCP;
//! - [`tftp`]: a read-only TFTP server confined to its root (iPXE binaries);
//! - [`http`]: per-node iPXE scripts and the files of the TFTP root over HTTP;
//! - [`table`]: the agent's copy of the boot table, fed by the api's watch stream ([`watch`]) and
//!   saved to disk, so the agent keeps answering known machines while the api is down.
//!
//! The agent never opens the database: it can run as a Kubernetes hostNetwork DaemonSet next to the
//! provisioning network, one per segment or several for availability.

pub mod cli;
pub mod dhcp;
pub mod dns;
pub mod http;
pub mod metrics;
pub mod table;
pub mod tftp;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use xcat3_runtime::metrics::Metrics;
use xcat3_types::Secret;

use dhcp::answer::{Settings, Sighting};
use dhcp::pool::Pool;
use metrics::AgentMetrics;
use table::Table;

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Everything the agent needs to start.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Stable name of this agent (block claims and discovery reports carry it).
    pub id: String,
    /// The api's gRPC URL, such as `http://127.0.0.1:3010`.
    pub api: String,
    pub token: Option<Secret>,
    /// Where the boot table and the lease log are kept.
    pub state_dir: PathBuf,
    pub interfaces: dhcp::InterfaceFilter,
    /// Serve DHCP at all (off: TFTP and HTTP only, for sites whose DHCP points here).
    pub dhcp: bool,
    pub settings: Settings,
    /// TFTP address, or none.
    pub tftp_listen: Option<SocketAddr>,
    /// Files served over TFTP and HTTP.
    pub tftp_root: PathBuf,
    /// Where iPXE binaries are copied from into the TFTP root at start (Debian's `ipxe` package).
    pub ipxe_dir: Option<PathBuf>,
    /// DNS address (A and PTR records of the nodes), or none.
    pub dns_listen: Option<SocketAddr>,
    /// HTTP address of the iPXE scripts.
    pub http_listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    /// Serve a host's installer script (which names its deploy token) only to the host's
    /// reserved address.
    pub install_source_check: bool,
    /// TLS to the api: with a CA, the api must be https:// and prove its name.
    pub tls: xcat3_runtime::tls::Tls,
}

impl AgentConfig {
    pub fn new(id: impl Into<String>, api: impl Into<String>, state_dir: PathBuf) -> Self {
        let tftp_root = state_dir.join("tftp");
        Self {
            id: id.into(),
            api: api.into(),
            token: None,
            state_dir,
            interfaces: dhcp::InterfaceFilter::default(),
            dhcp: true,
            settings: Settings::default(),
            tftp_listen: Some(SocketAddr::from(([0, 0, 0, 0], 69))),
            tftp_root,
            ipxe_dir: Some(PathBuf::from("/usr/lib/ipxe")),
            dns_listen: Some(SocketAddr::from(([0, 0, 0, 0], 53))),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9330))),
            install_source_check: true,
            tls: Default::default(),
        }
    }
}

/// What the agent's tasks share.
pub struct State {
    pub id: String,
    table: RwLock<Arc<Table>>,
    pub pool: Mutex<Pool>,
    pub settings: Settings,
    pub metrics: AgentMetrics,
    /// Signalled when a network ran out of dynamic addresses.
    pub blocks_wanted: Notify,
    sightings: mpsc::Sender<Sighting>,
}

impl State {
    /// The current boot table.
    pub fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_table(&self, t: Arc<Table>) {
        self.metrics
            .table_revision
            .set(i64::try_from(t.revision).unwrap_or(i64::MAX));
        self.metrics
            .table_hosts
            .set(i64::try_from(t.hosts.len()).unwrap_or(i64::MAX));
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = t;
    }

    /// Queues an unknown machine for the next discovery report (dropped if the queue is full).
    pub fn discovered(&self, s: Sighting) {
        let _ = self.sightings.try_send(s);
    }

    /// A state for tests and benchmarks: no lease log, no api.
    pub fn for_tests(table: Table, pool: Pool, settings: Settings) -> Arc<State> {
        let (tx, _rx) = mpsc::channel(1);
        Arc::new(State {
            id: "test".into(),
            table: RwLock::new(Arc::new(table)),
            pool: Mutex::new(pool),
            settings,
            metrics: AgentMetrics::default(),
            blocks_wanted: Notify::new(),
            sightings: tx,
        })
    }
}

/// A built network agent: its state loaded from disk, every listener bound.
pub struct Agent {
    config: AgentConfig,
    metrics: Metrics,
    state: Arc<State>,
    table_file: std::path::PathBuf,
    sightings: mpsc::Receiver<Sighting>,
    client: watch::ApiClient,
    http_listener: tokio::net::TcpListener,
    tftp_socket: Option<tokio::net::UdpSocket>,
    dns_socket: Option<tokio::net::UdpSocket>,
    metrics_listener: Option<tokio::net::TcpListener>,
}

/// Where a built [`Agent`] listens.
#[derive(Debug, Clone, Copy)]
pub struct AgentAddrs {
    pub http: SocketAddr,
    pub tftp: Option<SocketAddr>,
    pub dns: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

impl Agent {
    /// Loads the saved boot table and lease log and binds every listener: what can fail on a
    /// bad configuration fails here, before anything is served.
    pub async fn build(config: AgentConfig, metrics: Metrics) -> anyhow::Result<Agent> {
        use anyhow::Context as _;
        xcat3_runtime::config::private_dir(&config.state_dir)
            .with_context(|| format!("the state directory {}", config.state_dir.display()))?;
        std::fs::create_dir_all(&config.tftp_root)
            .with_context(|| format!("create the TFTP root {}", config.tftp_root.display()))?;
        if let Some(dir) = &config.ipxe_dir {
            tftp::install_ipxe(dir, &config.tftp_root);
        }
        let table_file = config.state_dir.join("boot-table.pb");
        let table = match Table::load(&table_file) {
            Ok(Some(t)) => {
                tracing::info!(
                    revision = t.revision,
                    hosts = t.hosts.len(),
                    "boot table loaded from disk"
                );
                t
            }
            Ok(None) => Table::default(),
            Err(e) => {
                tracing::warn!(error = %e, file = %table_file.display(), "the saved boot table is unreadable; starting empty");
                Table::default()
            }
        };
        let pool = Pool::open(&config.state_dir.join("leases.log"), now_ms())
            .context("open the lease log")?;
        let agent_metrics = AgentMetrics::register(&metrics);
        let (sightings_tx, sightings_rx) = mpsc::channel(4096);
        let state = Arc::new(State {
            id: config.id.clone(),
            table: RwLock::new(Arc::new(Table::default())),
            pool: Mutex::new(pool),
            settings: config.settings.clone(),
            metrics: agent_metrics,
            blocks_wanted: Notify::new(),
            sightings: sightings_tx,
        });
        state.set_table(Arc::new(table));

        let (http_listener, metrics_listener) =
            xcat3_runtime::grpc::bind("HTTP", config.http_listen, config.metrics_listen).await?;
        let tftp_socket = bind_udp("TFTP", config.tftp_listen).await?;
        let dns_socket = bind_udp("DNS", config.dns_listen).await?;
        let client = watch::ApiClient::new(&config.api, config.token.as_ref(), &config.tls)?;
        Ok(Agent {
            config,
            metrics,
            state,
            table_file,
            sightings: sightings_rx,
            client,
            http_listener,
            tftp_socket,
            dns_socket,
            metrics_listener,
        })
    }

    pub fn local_addrs(&self) -> std::io::Result<AgentAddrs> {
        Ok(AgentAddrs {
            http: self.http_listener.local_addr()?,
            tftp: self.tftp_socket.as_ref().and_then(|s| s.local_addr().ok()),
            dns: self.dns_socket.as_ref().and_then(|s| s.local_addr().ok()),
            metrics: self
                .metrics_listener
                .as_ref()
                .and_then(|l| l.local_addr().ok()),
        })
    }

    /// Prints the ready line on stdout, for supervisors and tests.
    pub fn announce(&self) -> std::io::Result<()> {
        let addrs = self.local_addrs()?;
        let show = |a: Option<SocketAddr>| a.map_or_else(|| "none".to_owned(), |a| a.to_string());
        #[allow(clippy::print_stdout)]
        {
            println!(
                "xcat3 network ready http={} tftp={} dns={} metrics={}",
                addrs.http,
                show(addrs.tftp),
                show(addrs.dns),
                show(addrs.metrics),
            );
        }
        Ok(())
    }

    /// Serves DHCP, TFTP, DNS and HTTP, and follows the api, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Agent {
            config,
            metrics,
            state,
            table_file,
            sightings: sightings_rx,
            client,
            http_listener,
            tftp_socket,
            dns_socket,
            metrics_listener,
        } = self;
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(watch::follow(
            client.clone(),
            state.clone(),
            table_file,
            shutdown.clone(),
        ));
        tasks.spawn(watch::keep_blocks(
            client.clone(),
            state.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(watch::report_discovered(
            client,
            state.clone(),
            sightings_rx,
            shutdown.clone(),
        ));
        if config.dhcp {
            tasks.spawn(dhcp::serve(
                state.clone(),
                config.interfaces.clone(),
                shutdown.clone(),
            ));
        }
        if let Some(sock) = tftp_socket {
            let server = tftp::TftpServer::new(config.tftp_root.clone(), state.clone());
            tasks.spawn(server.serve(sock, shutdown.clone()));
        }
        if let Some(sock) = dns_socket {
            tasks.spawn(dns::serve(state.clone(), sock, shutdown.clone()));
        }
        let http = http::router(
            state.clone(),
            config.tftp_root.clone(),
            config.install_source_check,
        );
        tasks.spawn(xcat3_runtime::http::serve(
            http_listener,
            http,
            shutdown.clone(),
        ));
        if let Some(l) = metrics_listener {
            let token = shutdown.clone();
            tasks.spawn(async move {
                let _ = metrics.serve(l, token).await;
            });
        }
        shutdown.cancelled().await;
        // Give tasks a moment to finish their current step.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tracing::info!("network agent stopped");
        Ok(())
    }
}

/// Binds a UDP socket if the service is configured (`what`: its name, for the error).
async fn bind_udp(
    what: &str,
    addr: Option<SocketAddr>,
) -> anyhow::Result<Option<tokio::net::UdpSocket>> {
    use anyhow::Context as _;
    let Some(addr) = addr else { return Ok(None) };
    let socket = tokio::net::UdpSocket::bind(addr)
        .await
        .with_context(|| format!("listen for {what} on {addr}"))?;
    Ok(Some(socket))
}

/// Builds the agent, prints the ready line (`xcat3 network ready http=ADDR tftp=ADDR dns=ADDR
/// metrics=ADDR`) and serves until `shutdown`.
pub async fn serve(
    config: AgentConfig,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let agent = Agent::build(config, metrics).await?;
    agent.announce()?;
    agent.run(shutdown).await
}

/// A small boot table (two networks, a few hosts) for the fuzz targets and benchmarks.
pub fn fuzz_table() -> Table {
    use xcat3_proto::internal::{BootHost, BootUpdate};
    let mut t = Table::default();
    let update = BootUpdate {
        revision: 1,
        snapshot: true,
        networks: vec![xcat3_proto::pb::Network {
            name: "local".into(),
            subnet: "10.0.0.0".into(),
            netmask: "255.255.255.0".into(),
            gateway: "10.0.0.254".into(),
            dynamic_range: "10.0.0.100-10.0.0.199".into(),
            domain: "cluster".into(),
            ..Default::default()
        }],
        hosts: (1..=8u8)
            .map(|i| BootHost {
                mac: format!("52:54:00:00:00:{i:02x}"),
                ip: format!("10.0.0.{}", 10 + i),
                node: format!("n{i}"),
                primary: true,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    if let Err(e) = t.apply(&update) {
        tracing::error!(error = %e, "the built-in table is invalid");
    }
    t
}
