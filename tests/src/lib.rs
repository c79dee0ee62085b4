//! Test kit for the end-to-end tests and the benchmark: real `xcat3-server` processes on ephemeral
//! ports with temporary data directories, a fresh PostgreSQL database per server, the real `xcat3`
//! CLI, and gRPC clients that carry the token.
//!
//! The binaries are found next to the test executable (`target/<profile>/`), so the test command
//! runs `cargo build --workspace --bins` first; a missing binary panics with that hint.
//! PostgreSQL comes from `XCAT3_TEST_POSTGRES_URL` (an admin URL; `scripts/test.sh` starts a server
//! and sets it). Without it the PostgreSQL tests fail: they never skip silently.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

pub mod bmcsim;
pub mod docker;
pub mod hosts;
pub mod iso;
pub mod kube_api;
pub mod kubelet;
pub mod netns;
pub mod otlp;
pub mod ownership;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use xcat3_proto::pb;

/// Path of a workspace binary built beside the running executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Which database a server under test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A PostgreSQL database created for one test (or server) and dropped with it.
pub struct PgDatabase {
    admin_url: String,
    name: String,
}

impl PgDatabase {
    /// Creates a fresh database on the server of `XCAT3_TEST_POSTGRES_URL`; returns it and its URL.
    pub fn create() -> anyhow::Result<(PgDatabase, String)> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let admin_url = std::env::var("XCAT3_TEST_POSTGRES_URL").context(
            "XCAT3_TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL",
        )?;
        let name = format!(
            "xcat3_t{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .subsec_nanos()
        );
        psql(&admin_url, &format!("CREATE DATABASE {name}"))?;
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .unwrap_or(&admin_url);
        let url = format!("{base}/{name}");
        Ok((PgDatabase { admin_url, name }, url))
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs `sql` on the PostgreSQL database at `url`.
pub fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .context("run psql")?;
    if !out.status.success() {
        bail!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Spawns `cmd` (stdout piped) and waits for the line starting with `prefix` that a service prints
/// when it is ready; then keeps draining stdout. On failure, the error carries the log at `log`.
pub async fn spawn_ready(
    cmd: Command,
    prefix: &str,
    log: &Path,
) -> anyhow::Result<(Child, String)> {
    let (child, mut lines) = spawn_ready_lines(cmd, prefix, log).await?;
    Ok((child, lines.pop().unwrap_or_default()))
}

/// Like [`spawn_ready`], but returns every line printed up to the ready line (the last).
pub async fn spawn_ready_lines(
    mut cmd: Command,
    prefix: &str,
    log: &Path,
) -> anyhow::Result<(Child, Vec<String>)> {
    let mut child = cmd.stdout(Stdio::piped()).spawn().context("spawn")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().await? {
            let done = line.starts_with(prefix);
            seen.push(line);
            if done {
                return Ok::<_, anyhow::Error>(seen);
            }
        }
        bail!("the process exited before it was ready")
    })
    .await
    .map_err(|_| anyhow::anyhow!("not ready within 60 s"))?
    .with_context(|| std::fs::read_to_string(log).unwrap_or_default())?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, ready))
}

/// The value of `key=` (with the `=`) in a ready line.
pub fn ready_field(line: &str, key: &str) -> anyhow::Result<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .map(String::from)
        .with_context(|| format!("{key} missing in {line:?}"))
}

/// Options for [`TestServer::start_with`].
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Reuse this data directory (to restart on the same SQLite file).
    pub data_dir: Option<PathBuf>,
    /// Run the network agent inside the server too (its flags go in `extra_args`); without it
    /// the server gets `--no-network-agent`.
    pub network_agent: bool,
    /// A command the server runs under (`prlimit --nofile=512:512`, say).
    pub wrapper: Vec<String>,
    /// Where `xcat3-server` is, if not beside the running executable (another build, for a
    /// benchmark against it).
    pub bin_dir: Option<PathBuf>,
}

/// A running `xcat3-server all-in-one`, killed when dropped.
pub struct TestServer {
    child: Child,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    /// The image service's HTTP address.
    pub image_http: Option<SocketAddr>,
    pub token: String,
    pub backend: Backend,
    pub database_url: String,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    _pg: Option<PgDatabase>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        Self::start_with(backend, ServerOptions::default())
            .await
            .expect("start xcat3-server")
    }

    pub async fn start_with(backend: Backend, opts: ServerOptions) -> anyhow::Result<TestServer> {
        let (tmp, dir) = match &opts.data_dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::Builder::new().prefix("xcat3-test").tempdir()?;
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let (pg, database_url) = match backend {
            Backend::Sqlite => (
                None,
                format!("sqlite://{}?mode=rwc", dir.join("xcat3.db").display()),
            ),
            Backend::Postgres => {
                let (db, url) = PgDatabase::create()?;
                (Some(db), url)
            }
        };
        Self::spawn(backend, dir, tmp, pg, database_url, opts).await
    }

    async fn spawn(
        backend: Backend,
        dir: PathBuf,
        tmp: Option<tempfile::TempDir>,
        pg: Option<PgDatabase>,
        database_url: String,
        opts: ServerOptions,
    ) -> anyhow::Result<TestServer> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))?;
        let server = match &opts.bin_dir {
            Some(d) => d.join("xcat3-server"),
            None => bin("xcat3-server"),
        };
        let mut cmd = match opts.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(server);
                c
            }
            None => Command::new(server),
        };
        cmd.arg("all-in-one");
        if !opts.network_agent {
            cmd.arg("--no-network-agent");
        }
        cmd.arg("--data-dir")
            .arg(&dir)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args([
                "--image-grpc-listen",
                "127.0.0.1:0",
                "--image-http-listen",
                "127.0.0.1:0",
            ])
            .arg("--database-url")
            .arg(&database_url)
            .args(&opts.extra_args)
            .env_remove("XCAT3_ADMIN_TOKEN")
            .env_remove("XCAT3_READONLY_TOKEN")
            .env("RUST_LOG", "debug,h2=info,hyper=info,tower=info,sqlx=info")
            .envs(opts.env.iter().cloned())
            .stdin(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        let (child, lines) =
            spawn_ready_lines(cmd, "xcat3 api ready", &dir.join("server.log")).await?;
        let ready = lines.last().cloned().unwrap_or_default();
        let field = |key: &str| ready_field(&ready, key).and_then(|v| Ok(v.parse()?));
        let image_http = lines
            .iter()
            .find(|l| l.starts_with("xcat3 image ready"))
            .map(|l| ready_field(l, "http="))
            .transpose()?
            .map(|a| a.parse())
            .transpose()?;
        let token = std::fs::read_to_string(dir.join("admin.token"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        Ok(TestServer {
            child,
            addr: field("grpc=")?,
            metrics: field("metrics=")?,
            image_http,
            token,
            backend,
            database_url,
            dir,
            _tmp: tmp,
            _pg: pg,
        })
    }

    /// Stops the server (SIGKILL) and starts it again on the same data and database.
    pub async fn restart(self) -> anyhow::Result<TestServer> {
        self.restart_with(ServerOptions::default()).await
    }

    /// Like [`TestServer::restart`], with other options (the data directory stays).
    pub async fn restart_with(mut self, opts: ServerOptions) -> anyhow::Result<TestServer> {
        self.child.kill().await?;
        let tmp = self._tmp.take();
        let pg = self._pg.take();
        let opts = ServerOptions {
            data_dir: Some(self.dir.clone()),
            ..opts
        };
        Self::spawn(
            self.backend,
            self.dir.clone(),
            tmp,
            pg,
            self.database_url.clone(),
            opts,
        )
        .await
    }

    /// Sends SIGTERM and waits (at most 60 s) for the server to exit.
    pub async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().context("already exited")?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        Ok(tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await??)
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's `/metrics` page.
    pub async fn metrics_text(&self) -> String {
        metrics_page(self.metrics).await
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .expect("connect to the api")
    }

    /// A gRPC channel that sends `token` (or none).
    pub async fn authed(&self, token: Option<&str>) -> InterceptedService<Channel, Auth> {
        let auth = token.map_or_else(|| Auth::new(None), bearer);
        InterceptedService::new(self.channel().await, auth)
    }

    pub async fn nodes(
        &self,
    ) -> pb::node_service_client::NodeServiceClient<InterceptedService<Channel, Auth>> {
        pb::node_service_client::NodeServiceClient::new(self.authed(Some(&self.token)).await)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20)
    }

    pub async fn networks(
        &self,
    ) -> pb::network_service_client::NetworkServiceClient<InterceptedService<Channel, Auth>> {
        pb::network_service_client::NetworkServiceClient::new(self.authed(Some(&self.token)).await)
    }

    /// Runs the `xcat3` CLI against this server (with a HOME of its own, so no user config leaks in).
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_env(args, &[]).await
    }

    pub async fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
        self.run_client("xcat3", args, env).await
    }

    /// Runs `xcat3-copycds` against this server.
    pub async fn copycds(&self, args: &[&str]) -> CliOutput {
        self.run_client("xcat3-copycds", args, &[]).await
    }

    /// The boot table's entry for `mac`, as the network agents get it (one snapshot of the
    /// api's watch stream).
    pub async fn boot_host(&self, mac: &str) -> Option<xcat3_proto::internal::BootHost> {
        let mut client = xcat3_proto::internal::netboot_config_client::NetbootConfigClient::new(
            self.authed(Some(&self.token)).await,
        )
        .max_decoding_message_size(256 << 20);
        let mut stream = client
            .watch(xcat3_proto::internal::WatchRequest {
                agent_id: "test".into(),
            })
            .await
            .expect("watch the boot table")
            .into_inner();
        let snapshot = stream
            .message()
            .await
            .expect("a boot table snapshot")
            .expect("the stream starts with a snapshot");
        snapshot.hosts.into_iter().find(|h| h.mac == mac)
    }

    async fn run_client(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
        let out = Command::new(bin(name))
            .args(args)
            .current_dir(&self.dir)
            .env("HOME", &self.dir)
            .env("XCAT3_URL", self.url())
            .env("XCAT3_TOKEN", &self.token)
            .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap_or_else(|e| panic!("run {name}: {e}"));
        CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// What a CLI run printed and its exit status.
#[derive(Debug)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Panics with the output unless the command exited 0.
    pub fn ok(self) -> CliOutput {
        assert_eq!(self.code, 0, "command failed: {self:#?}");
        self
    }
}

/// Adds `authorization: Bearer ...` to every call: the services' own client interceptor.
pub use xcat3_runtime::auth::Bearer as Auth;

/// An interceptor sending `token`.
pub(crate) fn bearer(token: &str) -> Auth {
    Auth::new(Some(&xcat3_types::Secret::new(token)))
}

/// Collects a stream of per-node results.
pub async fn collect_results(
    mut stream: tonic::Streaming<pb::NodeResults>,
) -> Result<Vec<pb::NodeResult>, tonic::Status> {
    let mut all = Vec::new();
    while let Some(m) = stream.message().await? {
        all.extend(m.results);
    }
    Ok(all)
}

/// Panics unless `results` hold exactly one result for each of `nodes` distinct nodes, none an
/// error.
pub fn assert_one_success_per_node(results: &[pb::NodeResult], nodes: usize) {
    let names: std::collections::HashSet<&str> = results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(results.len(), nodes, "exactly one result per node");
    assert_eq!(names.len(), nodes, "no node answered twice");
    let failed: Vec<_> = results
        .iter()
        .filter_map(|r| error_of(r).map(|e| (&r.name, &e.reason)))
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}

/// The error of a per-node result, if it failed.
pub fn error_of(r: &pb::NodeResult) -> Option<&pb::ErrorDetail> {
    match &r.outcome {
        Some(pb::node_result::Outcome::Error(e)) => Some(e),
        _ => None,
    }
}

/// A node with one NIC whose MAC and IP derive from `i` (IP inside 10.0.0.0/8).
pub fn numbered_node(prefix: &str, i: u32) -> pb::Node {
    pb::Node {
        name: format!("{prefix}{i:05}"),
        mgt: "ipmi".into(),
        groups: vec!["bench".into()],
        control: [(
            "bmc_address".to_owned(),
            format!("10.200.{}.{}", i / 250, i % 250 + 1),
        )]
        .into(),
        nics: vec![pb::Nic {
            name: "eth0".into(),
            mac: format!(
                "52:54:{:02x}:{:02x}:{:02x}:{:02x}",
                (i >> 24) & 0xff,
                (i >> 16) & 0xff,
                (i >> 8) & 0xff,
                i & 0xff
            ),
            ip: {
                let n = i + 0x1_0001;
                format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
            },
            primary: true,
        }],
        ..Default::default()
    }
}

/// The big flat network the numbered nodes live in.
pub fn big_network() -> pb::Network {
    pb::Network {
        name: "big".into(),
        subnet: "10.0.0.0".into(),
        netmask: "255.0.0.0".into(),
        ..Default::default()
    }
}

/// Fetches every node of a noderange.
pub async fn get_all(server: &TestServer, noderange: &str) -> (Vec<pb::Node>, Vec<pb::NodeResult>) {
    let mut stream = server
        .nodes()
        .await
        .get_nodes(pb::GetNodesRequest {
            noderange: noderange.into(),
        })
        .await
        .expect("get nodes")
        .into_inner();
    let (mut nodes, mut errors) = (Vec::new(), Vec::new());
    while let Some(page) = stream.message().await.expect("page") {
        nodes.extend(page.nodes);
        errors.extend(page.errors);
    }
    (nodes, errors)
}

/// A free loopback port (bound and released; the tiny race with other processes is accepted).
/// The `/metrics` page served at `addr`.
pub async fn metrics_page(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to /metrics");
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let mut text = String::new();
    conn.read_to_string(&mut text).await.expect("read /metrics");
    text
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real etcd (Debian's `etcd-server`) on free loopback ports with a temporary data directory,
/// killed when dropped.
pub struct TestEtcd {
    _child: Child,
    pub endpoint: String,
    ca: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl TestEtcd {
    pub async fn start() -> anyhow::Result<TestEtcd> {
        Self::launch(None).await
    }

    /// An etcd whose client port speaks TLS only, with the certificate and key given; `ca`
    /// verifies it (etcdctl uses it too).
    pub async fn start_tls(cert: &Path, key: &Path, ca: &Path) -> anyhow::Result<TestEtcd> {
        Self::launch(Some((cert, key, ca))).await
    }

    async fn launch(tls: Option<(&Path, &Path, &Path)>) -> anyhow::Result<TestEtcd> {
        let dir = tempfile::Builder::new().prefix("xcat3-etcd").tempdir()?;
        let (client, peer) = (free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new("etcd");
        cmd.arg("--name=t")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=t={peer_url}"))
            .arg("--log-level=error");
        if let Some((cert, key, _)) = tls {
            cmd.arg(format!("--cert-file={}", cert.display()))
                .arg(format!("--key-file={}", key.display()));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("etcd.log"))?)
            .kill_on_drop(true)
            .spawn()
            .context("start etcd (scripts/install-deps.sh installs Debian's etcd-server)")?;
        let etcd = TestEtcd {
            _child: child,
            endpoint,
            ca: tls.map(|(_, _, ca)| ca.to_owned()),
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !etcd
            .etcdctl(&["--command-timeout=1s", "endpoint", "health"])
            .await
            .is_ok_and(|o| o.status.success())
        {
            if std::time::Instant::now() > deadline {
                bail!(
                    "etcd not healthy within 20 s: {}",
                    std::fs::read_to_string(etcd._dir.path().join("etcd.log")).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(etcd)
    }

    /// Runs etcdctl (API v3) against this etcd.
    pub async fn etcdctl(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        let mut cmd = tokio::process::Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint]);
        if let Some(ca) = &self.ca {
            cmd.arg(format!("--cacert={}", ca.display()));
        }
        cmd.args(args).output().await
    }
}

/// Copies between `inbound` and a new connection to `target` until either side closes or `cut`
/// fires.
pub async fn forward<S>(
    mut inbound: S,
    target: SocketAddr,
    cut: tokio_util::sync::CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = cut.cancelled() => {}
    }
}

/// A TCP forwarder on loopback that a test can cut, to take a process off the network.
pub struct TcpProxy {
    pub addr: SocketAddr,
    cut: tokio_util::sync::CancellationToken,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> anyhow::Result<TcpProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = tokio_util::sync::CancellationToken::new();
        let token = cut.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = token.cancelled() => return,
                };
                let Ok((inbound, _)) = accepted else {
                    continue;
                };
                tokio::spawn(forward(inbound, target, token.clone()));
            }
        });
        Ok(TcpProxy { addr, cut })
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.cancel();
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut.cancel();
    }
}

/// Polls `probe` every 50 ms until it returns `Some`, or fails after `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what}: not reached within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The chassis-control program ipmi_sim runs for power and boot requests: keeps the state in files.
const CHASSIS_CONTROL: &str = r#"#!/bin/sh
# <mc> get parm... | <mc> set parm value...
dir=$(dirname "$0")/state
mkdir -p "$dir"
shift
op=$1; shift
echo "$op $*" >> "$dir/calls.log"
case $op in
  get) for p in "$@"; do
         case $p in
           power) echo "power:$(cat "$dir/power" 2>/dev/null || echo 0)";;
           boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)";;
           *) echo "Invalid parameter: $p"; exit 1;;
         esac
       done;;
  set) while [ $# -gt 0 ]; do
         p=$1; v=$2; shift 2
         case $p in
           power) echo "$v" > "$dir/power";;
           reset) echo "$v" >> "$dir/resets";;
           boot) echo "$v" > "$dir/boot";;
           *) ;;
         esac
       done;;
esac
"#;

/// A BMC simulator: OpenIPMI's `ipmi_sim` (Debian `openipmi`) on a free loopback UDP port,
/// user `admin` / password [`TestBmc::PASSWORD`], killed when dropped.
pub struct TestBmc {
    _child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl TestBmc {
    pub const PASSWORD: &'static str = "bmc-secret-4242";

    pub async fn start() -> anyhow::Result<TestBmc> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::Builder::new().prefix("xcat3-bmc").tempdir()?;
        let port = {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
            sock.local_addr()?.port()
        };
        let control = dir.path().join("chassis-control.sh");
        std::fs::write(&control, CHASSIS_CONTROL)?;
        std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o755))?;
        std::fs::write(
            dir.path().join("lan.conf"),
            format!(
                "name \"xcat3bmc\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n    priv_limit admin\n    \
                 allowed_auths_callback none md2 md5 straight\n    allowed_auths_user none md2 md5 straight\n    \
                 allowed_auths_operator none md2 md5 straight\n    allowed_auths_admin none md2 md5 straight\n    \
                 guid a123456789abcdefa123456789abcdef\n  endlan\n  chassis_control \"{} 0x20\"\n  \
                 user 2 true \"admin\" \"{}\" admin 10 none md2 md5 straight\n",
                control.display(),
                Self::PASSWORD
            ),
        )?;
        std::fs::write(
            dir.path().join("bmc.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nsel_enable 0x20 1000 0x0a\nmc_enable 0x20\n",
        )?;
        std::fs::create_dir_all(dir.path().join("sim"))?;
        let child = Command::new("ipmi_sim")
            .arg("-c")
            .arg(dir.path().join("lan.conf"))
            .arg("-f")
            .arg(dir.path().join("bmc.emu"))
            .arg("-s")
            .arg(dir.path().join("sim"))
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start ipmi_sim (scripts/install-deps.sh installs Debian's openipmi)")?;
        let bmc = TestBmc {
            _child: child,
            port,
            dir,
        };
        wait_for(Duration::from_secs(10), "ipmi_sim answering", || async {
            let out = Command::new("ipmitool")
                .args([
                    "-I",
                    "lanplus",
                    "-C",
                    "3",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "admin",
                    "-P",
                ])
                .arg(Self::PASSWORD)
                .args(["-R", "1", "-N", "1", "power", "status"])
                .output()
                .await
                .ok()?;
            out.status.success().then_some(())
        })
        .await?;
        Ok(bmc)
    }

    /// The power state the simulated chassis is in (true: on).
    pub fn is_on(&self) -> bool {
        std::fs::read_to_string(self.dir.path().join("state/power")).is_ok_and(|s| s.trim() == "1")
    }

    /// The boot device last set (`pxe`, `default`, ...).
    pub fn boot(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("state/boot"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// `control` parameters that point a node at this BMC.
    pub fn control(&self) -> String {
        format!(
            "bmc_address=127.0.0.1,bmc_port={},bmc_username=admin,bmc_password={}",
            self.port,
            Self::PASSWORD
        )
    }
}

/// The admin token of a [`TestCluster`].
pub const CLUSTER_TOKEN: &str = "cluster-test-token-0123456789";

/// A cluster of separate processes: a real etcd, one api and several conductors sharing a fresh
/// PostgreSQL database, with a short lease so takeovers are quick.
pub struct TestCluster {
    pub etcd: TestEtcd,
    pub api: SocketAddr,
    pub database_url: String,
    pub lease_ttl_secs: u64,
    conductors: Vec<(String, Child)>,
    /// gRPC address of every conductor started, by id.
    pub conductor_addrs: Vec<(String, String)>,
    _api: Option<Child>,
    dir: tempfile::TempDir,
    _pg: PgDatabase,
}

impl TestCluster {
    pub async fn start(
        conductors: usize,
        lease_ttl_secs: u64,
        conductor_args: &[&str],
    ) -> anyhow::Result<TestCluster> {
        Self::start_with_api(conductors, lease_ttl_secs, conductor_args, &[]).await
    }

    /// Like [`TestCluster::start`], with extra flags for the api.
    pub async fn start_with_api(
        conductors: usize,
        lease_ttl_secs: u64,
        conductor_args: &[&str],
        api_args: &[&str],
    ) -> anyhow::Result<TestCluster> {
        let dir = tempfile::Builder::new().prefix("xcat3-cluster").tempdir()?;
        let etcd = TestEtcd::start().await?;
        let (pg, database_url) = PgDatabase::create()?;
        let mut cluster = TestCluster {
            api: "127.0.0.1:0".parse()?,
            database_url,
            lease_ttl_secs,
            conductors: Vec::new(),
            conductor_addrs: Vec::new(),
            _api: None,
            etcd,
            dir,
            _pg: pg,
        };
        for i in 0..conductors {
            cluster
                .add_conductor(&format!("c{i}"), conductor_args)
                .await?;
        }
        let log = cluster.dir.path().join("api.log");
        let mut cmd = Command::new(bin("xcat3-server"));
        cmd.args([
            "api",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "none",
            "--database-url",
        ])
        .arg(&cluster.database_url)
        .arg("--etcd-endpoints")
        .arg(&cluster.etcd.endpoint)
        .args(api_args)
        .env("XCAT3_ADMIN_TOKEN", CLUSTER_TOKEN)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true);
        let (api, ready) = spawn_ready(cmd, "xcat3 api ready", &log).await?;
        cluster.api = ready_field(&ready, "grpc=")?.parse()?;
        cluster._api = Some(api);
        Ok(cluster)
    }

    /// Starts conductor `id`.
    pub async fn add_conductor(&mut self, id: &str, args: &[&str]) -> anyhow::Result<()> {
        let endpoint = self.etcd.endpoint.clone();
        self.add_conductor_via(id, &endpoint, args).await
    }

    /// Starts conductor `id` reaching etcd at `etcd_endpoint` (a [`TcpProxy`] to cut it off).
    pub async fn add_conductor_via(
        &mut self,
        id: &str,
        etcd_endpoint: &str,
        args: &[&str],
    ) -> anyhow::Result<()> {
        let log = self.dir.path().join(format!("{id}.log"));
        let mut cmd = Command::new(bin("xcat3-server"));
        cmd.args([
            "conductor",
            "--id",
            id,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "none",
            "--database-url",
        ])
        .arg(&self.database_url)
        .arg("--etcd-endpoints")
        .arg(etcd_endpoint)
        .arg("--lease-ttl-secs")
        .arg(self.lease_ttl_secs.to_string())
        .args(args)
        .env("XCAT3_ADMIN_TOKEN", CLUSTER_TOKEN)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true);
        let (child, ready) = spawn_ready(cmd, "xcat3 conductor ready", &log).await?;
        self.conductors.push((id.to_owned(), child));
        let scheme = if args.contains(&"--tls-cert") {
            "https"
        } else {
            "http"
        };
        self.conductor_addrs.push((
            id.to_owned(),
            format!("{scheme}://{}", ready_field(&ready, "grpc=")?),
        ));
        Ok(())
    }

    /// Stops conductor `id` with SIGTERM and waits for it to exit; returns its exit status.
    pub async fn stop_conductor(&mut self, id: &str) -> anyhow::Result<std::process::ExitStatus> {
        let i = self
            .conductors
            .iter()
            .position(|(c, _)| c == id)
            .context("no such conductor")?;
        let (_, mut child) = self.conductors.remove(i);
        let pid = child.id().context("already exited")?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        Ok(tokio::time::timeout(Duration::from_secs(60), child.wait()).await??)
    }

    /// The shards conductor `addr` says it owns, or `None` if it does not answer within a second.
    pub async fn owned_by(addr: &str) -> Option<Vec<u32>> {
        let channel = Channel::from_shared(addr.to_owned())
            .ok()?
            .connect_timeout(Duration::from_secs(1));
        let channel = tokio::time::timeout(Duration::from_secs(1), channel.connect())
            .await
            .ok()?
            .ok()?;
        let auth = bearer(CLUSTER_TOKEN);
        let mut client = xcat3_proto::internal::conductor_client::ConductorClient::new(
            InterceptedService::new(channel, auth),
        );
        let status = tokio::time::timeout(
            Duration::from_secs(1),
            client.get_status(xcat3_proto::internal::GetStatusRequest {}),
        )
        .await
        .ok()?
        .ok()?;
        Some(status.into_inner().shards)
    }

    /// Process ids: the api's, then each conductor's.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let mut pids: Vec<(String, u32)> = self
            ._api
            .iter()
            .filter_map(|c| c.id())
            .map(|p| ("api".to_owned(), p))
            .collect();
        pids.extend(
            self.conductors
                .iter()
                .filter_map(|(id, c)| c.id().map(|p| (id.clone(), p))),
        );
        pids
    }

    /// Kills conductor `id` with SIGKILL (no hand-over: its lease must expire).
    pub async fn kill_conductor(&mut self, id: &str) -> anyhow::Result<()> {
        let i = self
            .conductors
            .iter()
            .position(|(c, _)| c == id)
            .context("no such conductor")?;
        let (_, mut child) = self.conductors.remove(i);
        child.kill().await?;
        Ok(())
    }

    async fn channel(&self) -> InterceptedService<Channel, Auth> {
        let channel = Channel::from_shared(format!("http://{}", self.api))
            .unwrap()
            .connect()
            .await
            .expect("connect");
        let auth = bearer(CLUSTER_TOKEN);
        InterceptedService::new(channel, auth)
    }

    /// A conductor-service client with the cluster's token.
    pub async fn conductors(
        &self,
    ) -> pb::conductor_service_client::ConductorServiceClient<InterceptedService<Channel, Auth>>
    {
        pb::conductor_service_client::ConductorServiceClient::new(self.channel().await)
    }

    /// A node client with the cluster's token.
    pub async fn nodes(
        &self,
    ) -> pb::node_service_client::NodeServiceClient<InterceptedService<Channel, Auth>> {
        pb::node_service_client::NodeServiceClient::new(self.channel().await)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20)
    }

    /// Runs the `xcat3` CLI against the api with the cluster's token; `env` comes last (an
    /// `XCAT3_URL` there wins).
    pub async fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
        let out = Command::new(bin("xcat3"))
            .args(args)
            .env("HOME", self.dir.path())
            .env("XCAT3_URL", format!("http://{}", self.api))
            .env("XCAT3_TOKEN", CLUSTER_TOKEN)
            .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run xcat3");
        CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The log of conductor or api `name` (`c0`, `api`).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

/// A throw-away certificate authority (made with the openssl command), for TLS tests.
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> anyhow::Result<TestCa> {
        let dir = tempfile::Builder::new().prefix("xcat3-ca").tempdir()?;
        let ca = TestCa { dir };
        ca.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=xcat3 test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ])?;
        Ok(ca)
    }

    fn openssl(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues a certificate for `sans` (`IP:127.0.0.1,DNS:conductor`), usable by servers and
    /// clients; returns the certificate and key files.
    pub fn issue(&self, name: &str, sans: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let (cert, key, csr, ext) = (
            format!("{name}.pem"),
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.ext"),
        );
        std::fs::write(
            self.dir.path().join(&ext),
            format!(
                "subjectAltName={sans}\nbasicConstraints=CA:FALSE\n\
                 extendedKeyUsage=serverAuth,clientAuth\n"
            ),
        )?;
        self.openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ])?;
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ])?;
        Ok((self.dir.path().join(cert), self.dir.path().join(key)))
    }
}

/// A Redfish BMC emulator: sushy-tools' `sushy-emulator` (PyPI, installed by
/// scripts/install-deps.sh) with its fake driver, on a free loopback port, basic auth
/// `admin`/[`TestRedfish::PASSWORD`], plain HTTP or HTTPS with a self-signed certificate for
/// 127.0.0.1. Killed when dropped.
pub struct TestRedfish {
    _child: Child,
    pub port: u16,
    /// The CA (PEM) that signed the HTTPS emulator's certificate, when it uses TLS.
    pub cert: Option<PathBuf>,
    _ca: Option<TestCa>,
    _dir: tempfile::TempDir,
}

impl TestRedfish {
    pub const PASSWORD: &'static str = "redfish-secret-77";

    pub async fn start(tls: bool) -> anyhow::Result<TestRedfish> {
        let emulator = std::env::var("XCAT3_TEST_SUSHY").context(
            "XCAT3_TEST_SUSHY is not set: run the tests with scripts/test.sh, which installs sushy-tools",
        )?;
        let python = Path::new(&emulator).with_file_name("python");
        let dir = tempfile::Builder::new().prefix("xcat3-redfish").tempdir()?;
        let d = dir.path();
        let port = free_port();
        let out = std::process::Command::new(&python)
            .arg("-c")
            .arg("import bcrypt,sys; open(sys.argv[1],'w').write('admin:'+bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(rounds=4)).decode()+'\\n')")
            .arg(d.join("htpasswd"))
            .arg(Self::PASSWORD)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "htpasswd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut conf = format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\nSUSHY_EMULATOR_LISTEN_PORT = {port}\n\
             SUSHY_EMULATOR_AUTH_FILE = '{}'\nSUSHY_EMULATOR_FAKE_DRIVER = True\n\
             SUSHY_EMULATOR_FAKE_SYSTEMS = [{{'uuid': '27946b59-9e44-4fa7-8e91-f3527a1ef094', 'name': 'node-0', 'power_state': 'Off', 'nics': [{{'mac': '52:54:00:23:10:01', 'ip': '10.231.0.119'}}]}}]\n",
            d.join("htpasswd").display()
        );
        let mut ca = None;
        let mut cert_path = None;
        if tls {
            let test_ca = TestCa::new()?;
            let (cert, key) = test_ca.issue("redfish", "IP:127.0.0.1")?;
            conf += &format!(
                "SUSHY_EMULATOR_SSL_CERT = '{}'\nSUSHY_EMULATOR_SSL_KEY = '{}'\n",
                cert.display(),
                key.display()
            );
            cert_path = Some(test_ca.ca());
            ca = Some(test_ca);
        }
        std::fs::write(d.join("emu.conf"), conf)?;
        let child = Command::new(&emulator)
            .arg("--config")
            .arg(d.join("emu.conf"))
            // Its state lives under TMPDIR: keep every emulator's apart.
            .env("TMPDIR", d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("emulator.log"))?)
            .kill_on_drop(true)
            .spawn()
            .context("start sushy-emulator")?;
        wait_for(
            Duration::from_secs(20),
            "sushy-emulator listening",
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await
        .with_context(|| std::fs::read_to_string(d.join("emulator.log")).unwrap_or_default())?;
        Ok(TestRedfish {
            _child: child,
            port,
            cert: cert_path,
            _ca: ca,
            _dir: dir,
        })
    }

    /// `control` parameters that point a node at this emulator.
    pub fn control(&self) -> String {
        let scheme = if self.cert.is_some() { "https" } else { "http" };
        format!(
            "bmc_address=127.0.0.1,bmc_port={},bmc_username=admin,bmc_password={},redfish_scheme={scheme}",
            self.port,
            Self::PASSWORD
        )
    }
}

/// A real OpenSSH server (Debian's openssh-server) on a free loopback port, accepting one client
/// key for root, with its host key written to a known-hosts file. Killed when dropped.
pub struct TestSshd {
    _child: Child,
    pub port: u16,
    /// Private key the conductor logs in with.
    pub client_key: PathBuf,
    /// A known-hosts file holding this server's host key.
    pub known_hosts: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestSshd {
    pub async fn start() -> anyhow::Result<TestSshd> {
        let dir = tempfile::Builder::new().prefix("xcat3-sshd").tempdir()?;
        let d = dir.path();
        for (name, comment) in [("host_key", "host"), ("client_key", "client")] {
            let out = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(d.join(name))
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "ssh-keygen: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))?;
        let port = free_port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n\
                 PidFile {}\nMaxSessions 64\nMaxStartups 64\n",
                d.join("host_key").display(),
                d.join("authorized_keys").display(),
                d.join("sshd.pid").display()
            ),
        )?;
        let host_pub = std::fs::read_to_string(d.join("host_key.pub"))?;
        let mut fields = host_pub.split_whitespace();
        let (kind, key) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {kind} {key}\n"),
        )?;
        std::fs::create_dir_all("/run/sshd")?;
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log"))?)
            .kill_on_drop(true)
            .spawn()
            .context("start sshd (scripts/install-deps.sh installs openssh-server)")?;
        wait_for(Duration::from_secs(10), "sshd listening", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await?;
        Ok(TestSshd {
            _child: child,
            port,
            client_key: d.join("client_key"),
            known_hosts: d.join("known_hosts"),
            _dir: dir,
        })
    }
}

/// A libvirt domain on the test libvirtd (scripts/libvirt.sh), TCG, no disk: it sits in firmware
/// when started. Undefined (and destroyed) when dropped.
pub struct TestDomain {
    pub name: String,
}

impl TestDomain {
    pub fn define(name: &str) -> anyhow::Result<TestDomain> {
        std::env::var("XCAT3_TEST_LIBVIRT_DIR")
            .context("XCAT3_TEST_LIBVIRT_DIR is not set: run the tests with scripts/test.sh, which starts libvirtd")?;
        let xml = format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='q35'>hvm</type><boot dev='hd'/></os><devices></devices></domain>"
        );
        let mut child = std::process::Command::new("virsh")
            .args(["-c", "qemu:///system", "define", "/dev/stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        use std::io::Write as _;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(xml.as_bytes())?;
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "virsh define {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(TestDomain {
            name: name.to_owned(),
        })
    }

    fn virsh(&self, args: &[&str]) -> String {
        std::process::Command::new("virsh")
            .args(["-c", "qemu:///system"])
            .args(args)
            .arg(&self.name)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    /// `running`, `shut off`, ...
    pub fn state(&self) -> String {
        self.virsh(&["domstate"])
    }

    pub fn xml(&self) -> String {
        self.virsh(&["dumpxml", "--inactive"])
    }
}

impl Drop for TestDomain {
    fn drop(&mut self) {
        self.virsh(&["destroy"]);
        self.virsh(&["undefine"]);
    }
}

/// A `/proc/<pid>/status` memory field (`VmRSS:`, `VmHWM:`) in MiB; 0 when unreadable.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A stand-alone network agent following `server` over loopback: no DHCP, TFTP or DNS, its iPXE
/// scripts on a loopback HTTP port (in its ready line, `http=`), its state in `dir`, plus `extra`
/// flags. Killed when dropped.
pub async fn loopback_agent(server: &TestServer, dir: &Path, extra: &[&str]) -> (Child, String) {
    loopback_agent_of(&server.url(), &server.token, dir, extra).await
}

/// Like [`loopback_agent`], following the api at `api_url` with `token`.
pub async fn loopback_agent_of(
    api_url: &str,
    token: &str,
    dir: &Path,
    extra: &[&str],
) -> (Child, String) {
    let log = dir.join("agent.log");
    let mut cmd = Command::new(bin("xcat3-server"));
    cmd.args([
        "network",
        "--no-dhcp",
        "--tftp-listen",
        "none",
        "--dns-listen",
        "none",
    ])
    .args(["--ipxe-dir", "none", "--http-listen", "127.0.0.1:0"])
    .args([
        "--network-metrics-listen",
        "127.0.0.1:0",
        "--api-url",
        api_url,
    ])
    .arg("--state-dir")
    .arg(dir)
    .args(extra)
    .env("XCAT3_ADMIN_TOKEN", token)
    .env("RUST_LOG", "info,xcat3_network=debug")
    .stdin(Stdio::null())
    .stderr(std::fs::File::create(&log).expect("agent log"))
    .kill_on_drop(true);
    spawn_ready(cmd, "xcat3 network ready", &log)
        .await
        .expect("start a network agent")
}

/// Waits (30 s at most) until the iPXE script at `url` contains `text`.
pub async fn wait_for_script(url: &str, text: &str) {
    wait_for(Duration::from_secs(30), text, || async {
        let out = tokio::process::Command::new("curl")
            .args(["-sf", url])
            .output()
            .await
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .contains(text)
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{url}: {e:#}"));
}
