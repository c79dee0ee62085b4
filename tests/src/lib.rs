//! Test kit for the end-to-end tests and the benchmark: real `xcat3-server` processes on ephemeral
//! ports with temporary data directories, a fresh PostgreSQL database per server, the real `xcat3`
//! CLI, and gRPC clients that carry the token.
//!
//! The binaries are found next to the test executable (`target/<profile>/`), so the test command
//! runs `cargo build --workspace --bins` first; a missing binary panics with that hint.
//! PostgreSQL comes from `XCAT3_TEST_POSTGRES_URL` (an admin URL; `scripts/test.sh` starts a server
//! and sets it). Without it the PostgreSQL tests fail: they never skip silently.
//!
//! One module per concern, re-exported here: `server` (the all-in-one server and the CLI),
//! `cluster` (etcd, PostgreSQL, api replicas and conductor processes), `etcd`, `proxy` (a TCP
//! proxy to cut), `bmc` (ipmi_sim), `redfish` (sushy-tools), `kvm` (sshd and a libvirt domain),
//! `tls` (a test CA), `agent` (network agents on loopback); containers in `docker`, `hosts` and
//! `kubelet`, namespaces in `netns`. This file keeps the shared helpers (PostgreSQL databases,
//! ready lines, results, waiting).

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

mod server;
pub use server::*;
mod etcd;
pub use etcd::*;
mod proxy;
pub use proxy::*;
mod bmc;
pub use bmc::*;
mod cluster;
pub use cluster::*;
mod tls;
pub use tls::*;
mod redfish;
pub use redfish::*;
mod kvm;
pub use kvm::*;
mod agent;
pub use agent::*;

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

/// A `/proc/<pid>/status` memory field (`VmRSS:`, `VmHWM:`) in MiB; 0 when unreadable.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
