//! The cluster as separate hosts: every xcat3 service in its own container with its own address,
//! started from the images `scripts/images.sh` builds, on Docker networks the test creates. A
//! test can kill a host (`docker kill`), cut it off (`docker network disconnect`), or start two at
//! the same moment, and reaches every host from this machine at its address.
//!
//! Two networks: `core` joins every host; `etcd` joins the etcd members with the api replicas and
//! the conductors only, so cutting a conductor off `etcd` leaves it talking to PostgreSQL and the
//! api. xcat3's containers run as the chart runs them: non-root (the network agent: root with
//! NET_BIND_SERVICE and NET_RAW only), read-only root, every other capability dropped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use xcat3_proto::pb;

use crate::docker::{Scope, docker, docker_env, logs, server_image, test_image};
use crate::kubelet::{grpc_health, http_status, tail};
use crate::{Auth, CLUSTER_TOKEN, bearer};

/// The agents' scoped token.
pub const AGENT_TOKEN: &str = "cluster-agent-token-0123456789";
const PG_PASSWORD: &str = "cluster-pg-password-0123";
/// The api's gRPC port in every api container.
pub const API_PORT: u16 = 3010;
/// A conductor's gRPC port.
pub const CONDUCTOR_PORT: u16 = 3020;

/// One container.
#[derive(Clone, Debug)]
pub struct Host {
    /// Its short name (`c1`, `api0`), also its host name and, on `core`, its DNS name.
    pub name: String,
    /// The container's name.
    pub container: String,
    /// Its address on `core` (or on `etcd` for the etcd members, which are on that one only).
    pub ip: String,
    /// When `docker start` was called for it.
    pub started: Instant,
}

/// The containers of one test and the two networks between them.
pub struct Hosts {
    pub scope: Scope,
    pub core: String,
    pub etcd_net: String,
    core_prefix: String,
    etcd_prefix: String,
    next: u8,
    pub lease_ttl_secs: u64,
    pub etcd: Vec<Host>,
    pub apis: Vec<Host>,
    pub conductors: Vec<Host>,
    pub agents: Vec<Host>,
    pub others: Vec<Host>,
}

/// `docker create` arguments for xcat3's server image as `user`, hardened, with `role` and `extra`
/// as its command line.
fn xcat3_args(user: &str, role: &[&str], extra: &[&str]) -> Vec<String> {
    let mut args = hardened(user);
    args.push(server_image());
    args.extend(role.iter().chain(extra).map(|s| (*s).to_owned()));
    args
}

/// The flags of every xcat3 container: the chart's container security context.
fn hardened(user: &str) -> Vec<String> {
    [
        "--user",
        user,
        "--read-only",
        "--tmpfs",
        "/tmp:mode=1777",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
    ]
    .map(String::from)
    .to_vec()
}

impl Hosts {
    /// Creates the two networks; no host yet.
    pub fn new(test: &str, lease_ttl_secs: u64) -> anyhow::Result<Hosts> {
        let scope = Scope::new(test);
        let (core, core_prefix) = scope.network("core")?;
        let (etcd_net, etcd_prefix) = scope.network("etcd")?;
        Ok(Hosts {
            scope,
            core,
            etcd_net,
            core_prefix,
            etcd_prefix,
            next: 10,
            lease_ttl_secs,
            etcd: Vec::new(),
            apis: Vec::new(),
            conductors: Vec::new(),
            agents: Vec::new(),
            others: Vec::new(),
        })
    }

    /// A whole cluster: `etcd` members, PostgreSQL, `apis` api replicas and `conductors`
    /// conductors (`c0`..), each ready.
    pub async fn cluster(
        test: &str,
        lease_ttl_secs: u64,
        etcd: usize,
        apis: usize,
        conductors: usize,
    ) -> anyhow::Result<Hosts> {
        let mut h = Hosts::new(test, lease_ttl_secs)?;
        h.start_etcd(etcd).await?;
        h.start_postgres().await?;
        for i in 0..conductors {
            h.start_conductor(&format!("c{i}"))?;
        }
        for i in 0..apis {
            h.start_api(&format!("api{i}"), &[])?;
        }
        for host in h.conductors.clone().iter().chain(h.apis.clone().iter()) {
            h.wait_log(host, "ready", Duration::from_secs(60)).await?;
        }
        Ok(h)
    }

    /// `docker create` on `core` (or on `etcd` only), connect to `etcd` if asked, `docker start`.
    /// `aliases` are extra DNS names on `core`.
    fn start(
        &mut self,
        name: &str,
        on_core: bool,
        on_etcd: bool,
        aliases: &[&str],
        args: &[String],
        env: &BTreeMap<String, String>,
    ) -> anyhow::Result<Host> {
        let mut host = self.create(name, on_core, on_etcd, aliases, args, env)?;
        host.started = Instant::now();
        docker(&["start", &host.container])?;
        Ok(host)
    }

    /// Starts created hosts with one `docker start`: as near the same moment as Docker allows.
    pub fn start_together(&mut self, hosts: &mut [&mut Host]) -> anyhow::Result<()> {
        let mut args = vec!["start".to_owned()];
        args.extend(hosts.iter().map(|h| h.container.clone()));
        let now = Instant::now();
        for h in hosts.iter_mut() {
            h.started = now;
        }
        for h in self.apis.iter_mut().chain(&mut self.conductors) {
            if hosts.iter().any(|s| s.name == h.name) {
                h.started = now;
            }
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&refs).map(drop)
    }

    /// [`Hosts::start`] without the start.
    fn create(
        &mut self,
        name: &str,
        on_core: bool,
        on_etcd: bool,
        aliases: &[&str],
        args: &[String],
        env: &BTreeMap<String, String>,
    ) -> anyhow::Result<Host> {
        let n = self.next;
        self.next = self.next.checked_add(1).context("out of addresses")?;
        let container = self.scope.name(name);
        let core_ip = format!("{}.{n}", self.core_prefix);
        let etcd_ip = format!("{}.{n}", self.etcd_prefix);
        let (first, first_ip) = if on_core {
            (&self.core, &core_ip)
        } else {
            (&self.etcd_net, &etcd_ip)
        };
        let mut all: Vec<String> = ["create", "--name", &container, "--hostname", name]
            .map(String::from)
            .to_vec();
        all.extend(["--network", first, "--ip", first_ip].map(String::from));
        all.extend(["--network-alias".to_owned(), name.to_owned()]);
        for a in aliases {
            all.extend(["--network-alias".to_owned(), (*a).to_owned()]);
        }
        for k in env.keys() {
            all.extend(["-e".to_owned(), k.clone()]);
        }
        all.extend(args.iter().cloned());
        self.scope.track(&container);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        docker_env(&refs, env)?;
        if on_core && on_etcd {
            docker(&[
                "network",
                "connect",
                "--ip",
                &etcd_ip,
                "--alias",
                name,
                &self.etcd_net,
                &container,
            ])?;
        }
        Ok(Host {
            name: name.to_owned(),
            container,
            ip: first_ip.clone(),
            started: Instant::now(),
        })
    }

    /// The etcd client URLs, as the api and conductors are given them.
    pub fn etcd_endpoints(&self) -> String {
        self.etcd
            .iter()
            .map(|h| format!("http://{}:2379", h.ip))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts an etcd cluster of `n` members on `etcd` and waits until each reports healthy.
    pub async fn start_etcd(&mut self, n: usize) -> anyhow::Result<()> {
        let first = self.next;
        let members: Vec<(String, String)> = (0..n)
            .map(|i| {
                (
                    format!("e{i}"),
                    format!("{}.{}", self.etcd_prefix, first as usize + i),
                )
            })
            .collect();
        let initial = members
            .iter()
            .map(|(name, ip)| format!("{name}=http://{ip}:2380"))
            .collect::<Vec<_>>()
            .join(",");
        for (name, ip) in &members {
            let mut args = vec![test_image("etcd"), "etcd".to_owned()];
            args.extend(
                [
                    "--name",
                    name,
                    "--data-dir",
                    "/tmp/etcd",
                    "--listen-client-urls",
                    "http://0.0.0.0:2379",
                    "--advertise-client-urls",
                    &format!("http://{ip}:2379"),
                    "--listen-peer-urls",
                    "http://0.0.0.0:2380",
                    "--initial-advertise-peer-urls",
                    &format!("http://{ip}:2380"),
                    "--initial-cluster",
                    &initial,
                    "--initial-cluster-token",
                    &self.scope.prefix,
                    "--initial-cluster-state",
                    "new",
                ]
                .map(String::from),
            );
            let host = self.start(name, false, true, &[], &args, &BTreeMap::new())?;
            anyhow::ensure!(&host.ip == ip, "etcd member {name} got {}", host.ip);
            self.etcd.push(host);
        }
        for host in self.etcd.clone() {
            let addr = format!("{}:2379", host.ip);
            let deadline = Instant::now() + Duration::from_secs(60);
            while http_status(&addr, "/health").await.ok() != Some(200) {
                if Instant::now() > deadline {
                    bail!(
                        "etcd {} not healthy: {}",
                        host.name,
                        tail(&logs(&host.container), 3000)
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// The database URL the services are given (PostgreSQL at `pg` on `core`).
    pub fn database_url(&self) -> String {
        format!("postgres://xcat3:{PG_PASSWORD}@pg:5432/xcat3")
    }

    /// Starts PostgreSQL (`pg`) with an empty database `xcat3` and waits until it accepts
    /// connections.
    pub async fn start_postgres(&mut self) -> anyhow::Result<()> {
        let env = BTreeMap::from(
            [
                ("POSTGRES_USER", "xcat3"),
                ("POSTGRES_PASSWORD", PG_PASSWORD),
                ("POSTGRES_DB", "xcat3"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let args = vec![test_image("postgresql")];
        let host = self.start("pg", true, false, &[], &args, &env)?;
        self.wait_log(
            &host,
            "ready to accept connections",
            Duration::from_secs(60),
        )
        .await?;
        self.others.push(host);
        Ok(())
    }

    /// What the api and conductors share: tokens, database, etcd, through the environment.
    fn service_env(&self) -> BTreeMap<String, String> {
        BTreeMap::from(
            [
                ("XCAT3_ADMIN_TOKEN", CLUSTER_TOKEN.to_owned()),
                ("XCAT3_AGENT_TOKEN", AGENT_TOKEN.to_owned()),
                ("XCAT3_DATABASE_URL", self.database_url()),
                ("XCAT3_ETCD_ENDPOINTS", self.etcd_endpoints()),
                ("HOME", "/tmp".to_owned()),
                ("RUST_LOG", "info".to_owned()),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        )
    }

    /// Starts api replica `name` (DNS name `api` on `core` too) with `extra` flags; does not wait.
    pub fn start_api(&mut self, name: &str, extra: &[&str]) -> anyhow::Result<Host> {
        let mut host = self.create_api(name, extra)?;
        host.started = Instant::now();
        if let Some(h) = self.apis.iter_mut().find(|h| h.name == name) {
            h.started = host.started;
        }
        docker(&["start", &host.container])?;
        Ok(host)
    }

    /// Replaces api replica `name` as a rolling update does: `docker stop` (SIGTERM, then the
    /// grace period), remove, start a new one of the same name (a new address), wait until ready.
    pub async fn replace_api(&mut self, name: &str) -> anyhow::Result<Host> {
        let old = self.host(name).clone();
        docker(&["stop", "-t", "30", &old.container])?;
        docker(&["rm", &old.container])?;
        self.apis.retain(|h| h.name != name);
        let host = self.start_api(name, &[])?;
        self.wait_log(&host, "xcat3 api ready", Duration::from_secs(60))
            .await?;
        Ok(host)
    }

    /// [`Hosts::start_api`] without the start ([`Hosts::start_together`]).
    pub fn create_api(&mut self, name: &str, extra: &[&str]) -> anyhow::Result<Host> {
        let args = xcat3_args(
            "65532:65532",
            &[
                "api",
                "--listen",
                "0.0.0.0:3010",
                "--metrics-listen",
                "none",
            ],
            extra,
        );
        let env = self.service_env();
        let host = self.create(name, true, true, &["api"], &args, &env)?;
        self.apis.push(host.clone());
        Ok(host)
    }

    /// Starts conductor `id`; does not wait.
    pub fn start_conductor(&mut self, id: &str) -> anyhow::Result<Host> {
        let ip = format!("{}.{}", self.core_prefix, self.next);
        let args = xcat3_args(
            "65532:65532",
            &[
                "conductor",
                "--id",
                id,
                "--listen",
                "0.0.0.0:3020",
                "--advertise",
                &format!("http://{ip}:{CONDUCTOR_PORT}"),
                "--metrics-listen",
                "none",
                "--lease-ttl-secs",
                &self.lease_ttl_secs.to_string(),
                "--power-sync-interval-secs",
                "0",
            ],
            &[],
        );
        let env = self.service_env();
        let host = self.start(id, true, true, &[], &args, &env)?;
        anyhow::ensure!(host.ip == ip, "conductor {id} got {}", host.ip);
        self.conductors.push(host.clone());
        Ok(host)
    }

    /// Starts network agent `id` on `core` (reaching the api by its DNS name `api`), serving
    /// DHCP on `prov0` only, which the test plugs in ([`crate::netns::Netns::attach`]).
    pub fn start_agent(&mut self, id: &str) -> anyhow::Result<Host> {
        let mut args: Vec<String> = ["--cap-add", "NET_BIND_SERVICE", "--cap-add", "NET_RAW"]
            .map(String::from)
            .to_vec();
        args.extend(xcat3_args(
            "0:0",
            &[
                "network",
                "--agent-id",
                id,
                "--api-url",
                "http://api:3010",
                "--dhcp-interfaces",
                "prov0",
                "--tftp-listen",
                "0.0.0.0:69",
                "--http-listen",
                "0.0.0.0:8080",
                "--dns-listen",
                "none",
                "--network-metrics-listen",
                "none",
                "--state-dir",
                "/tmp/state",
            ],
            &[],
        ));
        let env = BTreeMap::from([
            ("XCAT3_AGENT_TOKEN".to_owned(), AGENT_TOKEN.to_owned()),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ]);
        let host = self.start(id, true, false, &[], &args, &env)?;
        self.agents.push(host.clone());
        Ok(host)
    }

    /// Starts the image service (`image` on `core`, its images on a volume) with `extra` flags.
    pub fn start_image(&mut self, extra: &[&str]) -> anyhow::Result<Host> {
        let (volume, _) = self.scope.volume("images")?;
        let mount = format!("{volume}:/var/lib/xcat3/images");
        let mut args = vec!["-v".to_owned(), mount];
        args.extend(xcat3_args(
            "65532:65532",
            &[
                "image",
                "--image-grpc-listen",
                "0.0.0.0:3030",
                "--image-http-listen",
                "0.0.0.0:8090",
                "--image-dir",
                "/var/lib/xcat3/images",
            ],
            extra,
        ));
        let env = self.service_env();
        let host = self.start("image", true, false, &[], &args, &env)?;
        self.others.push(host.clone());
        Ok(host)
    }

    /// Starts `count` Redfish BMC simulators (`bmc`, ports 8000..) answering after `delay_ms`.
    pub async fn start_bmcs(&mut self, count: u16, delay_ms: u64) -> anyhow::Result<Host> {
        let args = [
            test_image("bmcsim"),
            "8000".to_owned(),
            count.to_string(),
            delay_ms.to_string(),
        ];
        let host = self.start("bmc", true, false, &[], &args, &BTreeMap::new())?;
        self.wait_log(&host, "ready", Duration::from_secs(30))
            .await?;
        self.others.push(host.clone());
        Ok(host)
    }

    /// Waits until `host` answers its health check as SERVING (gRPC health of its role's
    /// service; the agent's HTTP `/healthz`); returns how long after its start that was.
    pub async fn wait_serving(&self, host: &Host, limit: Duration) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + limit;
        loop {
            let serving = match host.name.chars().next() {
                Some('g') => http_status(&format!("{}:8080", host.ip), "/healthz")
                    .await
                    .is_ok_and(|s| s == 200),
                Some('c') => grpc_health(&format!("http://{}:{CONDUCTOR_PORT}", host.ip), "")
                    .await
                    .is_ok(),
                Some('i') => {
                    grpc_health(&format!("http://{}:3030", host.ip), "xcat3.v1.ImageService")
                        .await
                        .is_ok()
                }
                _ => grpc_health(
                    &format!("http://{}:{API_PORT}", host.ip),
                    "xcat3.v1.NodeService",
                )
                .await
                .is_ok(),
            };
            if serving {
                return Ok(host.started.elapsed());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} is not serving: {}",
                    host.name,
                    tail(&logs(&host.container), 3000)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `host`'s log contains `text`; fails with the log's tail.
    pub async fn wait_log(&self, host: &Host, text: &str, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let log = logs(&host.container);
            if log.contains(text) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} did not log {text:?}: {}", host.name, tail(&log, 3000));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.etcd
            .iter()
            .chain(&self.apis)
            .chain(&self.conductors)
            .chain(&self.agents)
            .chain(&self.others)
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// `docker kill` (SIGKILL, no hand-over).
    pub fn kill(&self, name: &str) -> anyhow::Result<()> {
        docker(&["kill", &self.host(name).container]).map(drop)
    }

    /// The conductors as the ownership checker follows them: (id, gRPC URL).
    pub fn conductor_urls(&self) -> Vec<(String, String)> {
        self.conductors
            .iter()
            .map(|h| (h.name.clone(), format!("http://{}:{CONDUCTOR_PORT}", h.ip)))
            .collect()
    }

    /// A channel to api replica `api` (its address), with the admin token.
    pub async fn channel(&self, api: &str) -> anyhow::Result<InterceptedService<Channel, Auth>> {
        let url = format!("http://{}:{API_PORT}", self.host(api).ip);
        let channel = Channel::from_shared(url)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        Ok(InterceptedService::new(channel, bearer(CLUSTER_TOKEN)))
    }

    /// A node client on api replica `api`.
    pub async fn nodes(
        &self,
        api: &str,
    ) -> anyhow::Result<pb::node_service_client::NodeServiceClient<InterceptedService<Channel, Auth>>>
    {
        Ok(
            pb::node_service_client::NodeServiceClient::new(self.channel(api).await?)
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20),
        )
    }

    /// A conductor-service client on api replica `api`.
    pub async fn conductors(
        &self,
        api: &str,
    ) -> anyhow::Result<
        pb::conductor_service_client::ConductorServiceClient<InterceptedService<Channel, Auth>>,
    > {
        Ok(pb::conductor_service_client::ConductorServiceClient::new(
            self.channel(api).await?,
        ))
    }

    /// Runs the CLI image once on `core` against `http://api:3010` (every api replica).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        crate::docker::cli(&self.core, "http://api:3010", CLUSTER_TOKEN, args)
    }
}
