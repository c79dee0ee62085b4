//! A cluster of processes: etcd, PostgreSQL, api replicas and conductors.

use crate::*;

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
