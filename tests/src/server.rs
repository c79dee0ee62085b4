//! A real `xcat3-server all-in-one` under test, and the CLI run against it.

use crate::*;

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
