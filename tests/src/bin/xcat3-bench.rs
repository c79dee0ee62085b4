//! `xcat3-bench`: bulk inventory figures on SQLite and PostgreSQL.
//!
//! Build in release and run: `bash scripts/bench.sh` (which builds and starts PostgreSQL), or
//! `cargo build --release --workspace --bins && target/release/xcat3-bench [inventory|power|dhcp|netboot|deploy] [NODES] [ROUNDS]`.
//! PostgreSQL is measured when `XCAT3_TEST_POSTGRES_URL` is set.
//!
//! `power` starts etcd, the api and four conductor processes on PostgreSQL, creates NODES Redfish
//! nodes on a simulated BMC (`xcat3_tests::bmcsim`, 20 ms per answer), times `power status` of all
//! of them in one request, then SIGKILLs a conductor and times the takeover of its shards.
//!
//! `lookup` times a lookup of one node among NODES (750,000 for the issue-13 figure).
//!
//! `cli` runs create/list/update/delete of NODES nodes through the real `xcat3` CLI, beside a
//! baseline build when `XCAT3_BENCH_BASELINE` names one (`scripts/bench-cli.sh` builds it), and
//! reports the server's memory a minute later.
//!
//! `deploy` imports an ISO, deploys NODES nodes in one request until a network agent serves the
//! last one's installer script, posts NODES install callbacks at once to the image service until
//! the agent serves local boot again, and undeploys (per round).
//!
//! Per back end it starts a real `xcat3-server all-in-one` and, for each round, creates NODES
//! nodes with one NIC each in one request, lists them all, updates one attribute on all of them by
//! noderange and deletes them, timing each call (wall clock) and the server's CPU time (user +
//! system, from /proc). It also reports the server's resident memory when idle.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use xcat3_proto::pb;
use xcat3_tests::{
    Backend, ServerOptions, TestServer, big_network, collect_results, error_of, get_all,
    numbered_node,
};

/// A server and CLI build to measure: this one, or a baseline built elsewhere.
struct Build {
    label: &'static str,
    /// Directory of `xcat3-server` and `xcat3`; `None`: beside this executable.
    dir: Option<std::path::PathBuf>,
}

impl Build {
    fn cli(&self) -> std::path::PathBuf {
        match &self.dir {
            Some(d) => d.join("xcat3"),
            None => xcat3_tests::bin("xcat3"),
        }
    }
}

/// This build, and before it the baseline `XCAT3_BENCH_BASELINE` names, if any.
fn builds() -> Vec<Build> {
    let mut builds = Vec::new();
    if let Some(dir) = std::env::var_os("XCAT3_BENCH_BASELINE") {
        builds.push(Build {
            label: "baseline",
            dir: Some(dir.into()),
        });
    }
    builds.push(Build {
        label: "this build",
        dir: None,
    });
    builds
}

/// `build`'s all-in-one server on `backend`, quiet, with a network for the numbered nodes.
async fn start(build: &Build, backend: Backend) -> TestServer {
    let opts = ServerOptions {
        env: vec![("RUST_LOG".into(), "warn".into())],
        bin_dir: build.dir.clone(),
        ..Default::default()
    };
    let s = TestServer::start_with(backend, opts)
        .await
        .expect("start server");
    s.networks()
        .await
        .create_network(big_network())
        .await
        .unwrap();
    s
}

/// The nodes file `xcat3 create -f` reads: `n` nodes as [`numbered_node`] makes them.
fn nodes_yaml(n: u32) -> String {
    let mut out = String::with_capacity(n as usize * 160);
    out.push_str("nodes:\n");
    for i in 0..n {
        let node = numbered_node("cn", i);
        let nic = &node.nics[0];
        out.push_str(&format!(
            "- name: {}\n  groups: [bench]\n  mgt: ipmi\n  control: {{bmc_address: {}}}\n  nics: [{{name: eth0, mac: \"{}\", ip: {}, primary: true}}]\n",
            node.name, node.control["bmc_address"], nic.mac, nic.ip
        ));
    }
    out
}

/// Runs the `xcat3` CLI of `build` against `s`; panics unless it exits 0.
async fn xcat3(build: &Build, s: &TestServer, args: &[&str]) {
    let out = tokio::process::Command::new(build.cli())
        .args(args)
        .current_dir(s.dir())
        .env("XCAT3_URL", s.url())
        .env("XCAT3_TOKEN", &s.token)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .expect("run xcat3");
    assert!(
        out.status.success(),
        "{} xcat3 {args:?}: {}",
        build.label,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The four bulk operations through the real CLI, as an operator runs them: `create -f` of a
/// nodes file, `list` (the table), `update` of one attribute by noderange, `delete` by noderange.
/// With `XCAT3_BENCH_BASELINE=DIR` (another build's `xcat3-server` and `xcat3`, made by
/// `scripts/bench-cli.sh`), both builds run side by side, round after round, and the figures are
/// also given as ratios to the baseline's. Then the servers' resident memory, at once and a
/// minute later.
async fn cli(backend: Backend, n: u32, rounds: usize) {
    let builds = builds();
    let mut servers = Vec::new();
    for b in &builds {
        let s = start(b, backend).await;
        std::fs::write(s.dir().join("nodes.yaml"), nodes_yaml(n)).unwrap();
        servers.push(s);
    }
    let range = format!("cn[00000-{:05}]", n - 1);
    let ops: [(&str, Vec<&str>); 4] = [
        ("create", vec!["create", "-f", "nodes.yaml"]),
        ("list", vec!["list"]),
        ("update", vec!["update", &range, "arch=aarch64"]),
        ("delete", vec!["delete", &range]),
    ];
    // samples[build][op]
    let mut samples: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); ops.len()]; builds.len()];
    for _ in 0..rounds {
        for (b, build) in builds.iter().enumerate() {
            let s = &servers[b];
            let pid = s.pid().unwrap();
            for (o, (_, args)) in ops.iter().enumerate() {
                let sample = measure(pid, xcat3(build, s, args)).await;
                samples[b][o].push(sample);
            }
        }
    }
    let name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    println!("\n== {name}: {n} nodes through the CLI, median of {rounds} rounds");
    print!("{:<8}", "op");
    for b in &builds {
        print!(" {:>22}", format!("{} wall/CPU ms", b.label));
    }
    if builds.len() == 2 {
        print!(" {:>18}", "ratio wall/CPU");
    }
    println!();
    for (o, (op, _)) in ops.iter().enumerate() {
        print!("{op:<8}");
        let mut figures = Vec::new();
        for per_op in &samples {
            let wall = median(
                per_op[o]
                    .iter()
                    .map(|s| s.wall.as_secs_f64() * 1000.0)
                    .collect(),
            );
            let cpu = median(per_op[o].iter().map(|s| s.cpu * 1000.0).collect());
            print!(" {:>22}", format!("{wall:.0} / {cpu:.0}"));
            figures.push((wall, cpu));
        }
        if let [(bw, bc), (w, c)] = figures[..] {
            print!(
                " {:>18}",
                format!("{:.2}× / {:.2}×", w / bw, c / bc.max(1.0))
            );
        }
        println!();
    }
    let now: Vec<f64> = servers.iter().map(|s| rss_mib(s.pid().unwrap())).collect();
    tokio::time::sleep(Duration::from_secs(60)).await;
    for (b, build) in builds.iter().enumerate() {
        println!(
            "{}: server RSS after the rounds {:.1} MiB, a minute later {:.1} MiB",
            build.label,
            now[b],
            rss_mib(servers[b].pid().unwrap())
        );
    }
}

/// Looking up one node among `n` (`xcat3 list cnNNNNNN`, a `GetNodes` of one name): the time
/// and server CPU of 20 lookups, after `n` nodes were created (100,000 per request). Beside the
/// baseline build when `XCAT3_BENCH_BASELINE` names one.
async fn lookup(n: u32) {
    let builds = builds();
    println!("\n== sqlite: one node among {n}, 20 lookups (GetNodes of one name)");
    for build in &builds {
        let s = start(build, Backend::Sqlite).await;
        for start in (0..n).step_by(100_000) {
            let nodes = (start..(start + 100_000).min(n))
                .map(|i| {
                    let mut node = numbered_node("cn", i);
                    node.name = format!("cn{i:06}");
                    node
                })
                .collect();
            create_ok(
                &s,
                pb::CreateNodesRequest {
                    nodes,
                    ..Default::default()
                },
            )
            .await;
        }
        let pid = s.pid().unwrap();
        // The first lookup after the writes may build the index.
        get_all(&s, "cn000001").await;
        let mut samples = Vec::new();
        for i in 0..20u32 {
            let name = format!("cn{:06}", (i * 7919) % n);
            samples.push(
                measure(pid, async {
                    let (nodes, _) = get_all(&s, &name).await;
                    assert_eq!(nodes.len(), 1);
                })
                .await,
            );
        }
        let wall = median(
            samples
                .iter()
                .map(|s| s.wall.as_secs_f64() * 1000.0)
                .collect(),
        );
        let cpu = median(samples.iter().map(|s| s.cpu * 1000.0).collect());
        println!(
            "{:<12} median {wall:.1} ms, server CPU {cpu:.1} ms",
            build.label
        );
    }
}

/// CPU seconds (user + system, all threads) of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|f| f.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

fn rss_mib(pid: u32) -> f64 {
    xcat3_tests::status_mib(pid, "VmRSS:")
}

#[derive(Clone)]
struct Sample {
    wall: Duration,
    cpu: f64,
}

async fn measure<F: std::future::Future<Output = ()>>(pid: u32, f: F) -> Sample {
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    f.await;
    let wall = t0.elapsed();
    // Let the server finish accounting the last of its work.
    tokio::time::sleep(Duration::from_millis(20)).await;
    Sample {
        wall,
        cpu: cpu_seconds(pid) - cpu0,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn run(backend: Backend, n: u32, rounds: usize) {
    // XCAT3_BENCH_PASSWORDS=1 gives every node a BMC password; XCAT3_BENCH_SECRETS_KEY=FILE
    // makes the server seal them (the cost of encrypted secrets at rest).
    let passwords = std::env::var_os("XCAT3_BENCH_PASSWORDS").is_some();
    let key = std::env::var("XCAT3_BENCH_SECRETS_KEY").ok();
    let opts = ServerOptions {
        env: vec![("RUST_LOG".into(), "warn".into())],
        extra_args: key
            .iter()
            .flat_map(|k| ["--secrets-key-file".to_owned(), k.clone()])
            .collect(),
        ..Default::default()
    };
    println!(
        "{backend:?}: BMC passwords {}, secrets key {}",
        if passwords { "yes" } else { "no" },
        if key.is_some() { "yes" } else { "no" }
    );
    let s = TestServer::start_with(backend, opts)
        .await
        .expect("start server");
    let pid = s.pid().unwrap();
    s.networks()
        .await
        .create_network(big_network())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_mib(pid);
    let range = format!("cn[00000-{:05}]", n - 1);
    let mut table: Vec<(&str, Vec<Sample>)> = vec![
        ("create", vec![]),
        ("list", vec![]),
        ("update", vec![]),
        ("delete", vec![]),
    ];
    for _ in 0..rounds {
        let nodes: Vec<pb::Node> = (0..n)
            .map(|i| {
                let mut node = numbered_node("cn", i);
                if passwords {
                    node.control
                        .insert("bmc_password".into(), format!("bmc-password-{i}"));
                }
                node
            })
            .collect();
        let mut client = s.nodes().await;
        table[0].1.push(
            measure(pid, async {
                let stream = client
                    .create_nodes(pb::CreateNodesRequest {
                        nodes,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let results = collect_results(stream).await.unwrap();
                assert_eq!(results.len(), n as usize);
                assert!(
                    results.iter().all(|r| error_of(r).is_none()),
                    "create failed"
                );
            })
            .await,
        );
        table[1].1.push(
            measure(pid, async {
                assert_eq!(get_all(&s, "all").await.0.len(), n as usize);
            })
            .await,
        );
        table[2].1.push(
            measure(pid, async {
                let stream = client
                    .update_nodes(pb::UpdateNodesRequest {
                        noderange: range.clone(),
                        changes: vec![pb::AttributeChange {
                            path: "arch".into(),
                            value: "aarch64".into(),
                        }],
                        all_or_nothing: false,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let results = collect_results(stream).await.unwrap();
                assert!(
                    results.iter().all(|r| error_of(r).is_none()) && results.len() == n as usize
                );
            })
            .await,
        );
        table[3].1.push(
            measure(pid, async {
                let stream = client
                    .delete_nodes(pb::DeleteNodesRequest {
                        noderange: range.clone(),
                        all_or_nothing: false,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(collect_results(stream).await.unwrap().len(), n as usize);
            })
            .await,
        );
    }
    let name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    println!("\n== {name}: {n} nodes, median of {rounds} rounds");
    println!(
        "{:<8} {:>10} {:>14} {:>16}",
        "op", "wall ms", "server CPU ms", "CPU µs/node"
    );
    for (op, samples) in table {
        let wall = median(
            samples
                .iter()
                .map(|s| s.wall.as_secs_f64() * 1000.0)
                .collect(),
        );
        let cpu = median(samples.iter().map(|s| s.cpu * 1000.0).collect());
        println!(
            "{op:<8} {wall:>10.0} {cpu:>14.0} {:>16.1}",
            cpu * 1000.0 / f64::from(n)
        );
    }
    println!(
        "idle RSS before: {idle_rss:.1} MiB, after: {:.1} MiB",
        rss_mib(pid)
    );
}

/// `power status` of `n` Redfish nodes through `conductors` conductor processes (etcd, PostgreSQL),
/// the simulated BMCs answering after 20 ms; then the takeover time after SIGKILL of a conductor.
async fn power(n: u32, conductors: usize, rounds: usize) {
    use xcat3_tests::{TestCluster, bmcsim};
    let ports = bmcsim::start(250, Duration::from_millis(20)).await.unwrap();
    let ttl = 10;
    let mut cluster = TestCluster::start(conductors, ttl, &["--power-sync-interval-secs", "0"])
        .await
        .unwrap();
    let mut client = cluster.nodes().await;
    let nodes: Vec<pb::Node> = (0..n)
        .map(|i| pb::Node {
            name: format!("rf{i:05}"),
            mgt: "redfish".into(),
            control: [
                ("bmc_address", "127.0.0.1".to_owned()),
                ("bmc_port", ports[i as usize % ports.len()].to_string()),
                ("bmc_username", "admin".to_owned()),
                ("bmc_password", "x".to_owned()),
                ("redfish_scheme", "http".to_owned()),
                ("redfish_system", format!("/redfish/v1/Systems/rf{i:05}")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            ..Default::default()
        })
        .collect();
    let stream = client
        .create_nodes(pb::CreateNodesRequest {
            nodes,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let created = collect_results(stream).await.unwrap();
    assert!(
        created.iter().all(|r| error_of(r).is_none()),
        "create failed"
    );
    let status = || async {
        let mut client = cluster.nodes().await;
        let req = pb::PowerRequest {
            noderange: "all".into(),
            action: "status".into(),
            no_wait: false,
        };
        let stream = client.power(req).await.unwrap().into_inner();
        let results = collect_results(stream).await.unwrap();
        assert_eq!(results.len(), n as usize);
        results.iter().filter(|r| error_of(r).is_some()).count()
    };
    // The first call also waits for the conductors to settle their shards.
    let failed = status().await;
    let pids = cluster.pids();
    let cpu = || -> f64 { pids.iter().map(|(_, p)| cpu_seconds(*p)).sum() };
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for _ in 0..rounds {
        let cpu0 = cpu();
        let t0 = Instant::now();
        let failed_now = status().await;
        walls.push(t0.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        cpus.push((cpu() - cpu0) * 1000.0);
        assert_eq!(failed_now, 0, "power status failed for some nodes");
    }
    println!(
        "\n== power status: {n} Redfish nodes (20 ms BMC latency, {} BMC ports), {conductors} conductors, median of {rounds}",
        ports.len()
    );
    println!("first call (shards settling): {failed} failures");
    let (wall, cpu_ms) = (median(walls), median(cpus));
    println!(
        "wall {wall:.0} ms; CPU of api + conductors {cpu_ms:.0} ms ({:.1} µs/node)",
        cpu_ms * 1000.0 / f64::from(n)
    );

    // Takeover: kill one conductor and time until the others own every shard.
    let mut list_client = cluster.conductors().await;
    let t0 = Instant::now();
    cluster.kill_conductor("c0").await.unwrap();
    loop {
        let list = list_client
            .list_conductors(pb::ListConductorsRequest {})
            .await
            .unwrap()
            .into_inner();
        let gone = list.conductors.iter().all(|c| c.id != "c0");
        let owned: usize = list.conductors.iter().map(|c| c.shards.len()).sum();
        if gone && owned == list.shards as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "takeover after SIGKILL of a conductor: {:.2} s (lease TTL {ttl} s)",
        t0.elapsed().as_secs_f64()
    );
}

/// Reads one gauge from a Prometheus endpoint.
async fn gauge(addr: &str, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// How long a change of 1,000 nodes takes to reach a network agent: N nodes exist, 1,000 more are
/// created (then deleted) in one request; the time runs from the request to the agent's table
/// holding the change (its `netboot_table_hosts` gauge, polled every millisecond).
async fn netboot(n: u32, rounds: usize) {
    use xcat3_tests::ready_field;
    let server = TestServer::start(Backend::Sqlite).await;
    server
        .networks()
        .await
        .create_network(big_network())
        .await
        .unwrap();
    let create = |from: u32, count: u32| {
        let nodes: Vec<pb::Node> = (from..from + count)
            .map(|i| numbered_node("nb", i))
            .collect();
        pb::CreateNodesRequest {
            nodes,
            all_or_nothing: false,
            ..Default::default()
        }
    };
    create_ok(&server, create(0, n)).await;
    let dir = tempfile::tempdir().unwrap();
    let (_agent, ready) =
        xcat3_tests::loopback_agent(&server, dir.path(), &["--no-install-source-check"]).await;
    let metrics = ready_field(&ready, "metrics=").unwrap();
    let hosts = "xcat3_netboot_table_hosts";
    let wait_hosts = |want: f64| {
        let metrics = metrics.clone();
        async move {
            loop {
                if gauge(&metrics, hosts).await == Some(want) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    wait_hosts(f64::from(n)).await;
    println!("netboot: agent holds {n} NICs; changing 1,000 nodes");
    for round in 0..rounds {
        let t0 = Instant::now();
        create_ok(&server, create(n, 1000)).await;
        let answered = t0.elapsed();
        wait_hosts(f64::from(n + 1000)).await;
        let created = t0.elapsed();
        let t0 = Instant::now();
        let req = pb::DeleteNodesRequest {
            noderange: format!("nb[{:05}-{:05}]", n, n + 999),
            all_or_nothing: false,
        };
        collect_results(
            server
                .nodes()
                .await
                .delete_nodes(req)
                .await
                .unwrap()
                .into_inner(),
        )
        .await
        .unwrap();
        wait_hosts(f64::from(n)).await;
        let deleted = t0.elapsed();
        println!(
            "round {round}: create 1,000 -> in the agent's table {:.0} ms (api answered in {:.0} ms); delete 1,000 -> {:.0} ms",
            created.as_secs_f64() * 1e3,
            answered.as_secs_f64() * 1e3,
            deleted.as_secs_f64() * 1e3
        );
    }
    if std::env::var_os("XCAT3_BENCH_LOGS").is_some() {
        println!(
            "{}",
            std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
        );
        println!("{}", server.log());
    }
}

/// Sends one HTTP/1.1 request on a fresh connection; returns the status code.
async fn http_status(addr: &str, method: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if conn.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut text = Vec::new();
    let _ = conn.read_to_end(&mut text).await;
    String::from_utf8_lossy(&text)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Creates nodes and checks that every one was created.
async fn create_ok(server: &TestServer, req: pb::CreateNodesRequest) {
    let stream = server
        .nodes()
        .await
        .create_nodes(req)
        .await
        .unwrap()
        .into_inner();
    let results = collect_results(stream).await.unwrap();
    assert!(results.iter().all(|r| error_of(r).is_none()));
}

/// `deploy`: N nodes deployed in one request until their install boot configuration is in a
/// network agent's table (the agent serves the last node's installer script), then N install
/// callbacks posted at once to the image service, until every node is `deployed`; then undeploy.
async fn deploy(n: u32, rounds: usize) {
    use xcat3_tests::ready_field;
    // The callbacks come from loopback on behalf of every node, not from the nodes' addresses.
    let opts = ServerOptions {
        extra_args: vec!["--no-install-source-check".into()],
        ..Default::default()
    };
    let server = TestServer::start_with(Backend::Sqlite, opts)
        .await
        .expect("start server");
    let pid = server.pid().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let iso = xcat3_tests::iso::rocky_iso(dir.path());
    let out = server.copycds(&[iso.to_str().unwrap()]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let image = "rocky9.4-x86_64-install-compute";
    server
        .networks()
        .await
        .create_network(big_network())
        .await
        .unwrap();
    let nodes: Vec<pb::Node> = (0..n)
        .map(|i| pb::Node {
            osimage: image.into(),
            ..numbered_node("dp", i)
        })
        .collect();
    let req = pb::CreateNodesRequest {
        nodes,
        ..Default::default()
    };
    create_ok(&server, req).await;
    let last_mac = numbered_node("dp", n - 1).nics[0].mac.clone();
    let (_agent, ready) =
        xcat3_tests::loopback_agent(&server, dir.path(), &["--no-install-source-check"]).await;
    let agent_http = ready_field(&ready, "http=").unwrap();
    let image_http = server.image_http.unwrap().to_string();
    let script_path = format!("/boot/{last_mac}.ipxe");
    let script = |want: &'static str| {
        let agent_http = agent_http.clone();
        let script_path = script_path.clone();
        async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            loop {
                let mut conn = tokio::net::TcpStream::connect(&agent_http).await.unwrap();
                let req = format!("GET {script_path} HTTP/1.0\r\n\r\n");
                conn.write_all(req.as_bytes()).await.unwrap();
                let mut text = String::new();
                let _ = conn.read_to_string(&mut text).await;
                if text.contains(want) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    println!("deploy: {n} nodes, one osimage, an agent following the boot table");
    for round in 0..rounds {
        let t0 = Instant::now();
        let cpu0 = cpu_seconds(pid);
        let req = pb::DeployRequest {
            noderange: "bench".into(),
            ..Default::default()
        };
        let results = collect_results(server.nodes().await.deploy(req).await.unwrap().into_inner())
            .await
            .unwrap();
        let answered = t0.elapsed();
        let failed = results.iter().filter(|r| error_of(r).is_some()).count();
        assert_eq!(
            failed,
            0,
            "{:?}",
            results.iter().find(|r| error_of(r).is_some())
        );
        script("kernel --name kernel").await;
        let published = t0.elapsed();
        let deploy_cpu = cpu_seconds(pid) - cpu0;

        // Every node's callback URL, from the boot table the agents get.
        let mut client = xcat3_proto::internal::netboot_config_client::NetbootConfigClient::new(
            server.authed(Some(&server.token)).await,
        )
        .max_decoding_message_size(256 << 20);
        let snapshot = client
            .watch(xcat3_proto::internal::WatchRequest {
                agent_id: "bench".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap();
        let done: Vec<String> = snapshot
            .hosts
            .iter()
            .filter_map(|h| match &h.action {
                Some(xcat3_proto::internal::boot_host::Action::Install(i)) => i
                    .cmdline
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("inst.ks="))
                    .and_then(|u| u.split_once("/deploy/"))
                    .map(|(_, rest)| format!("/deploy/{}", rest.replace("/kickstart", "/done"))),
                _ => None,
            })
            .collect();
        assert_eq!(done.len(), n as usize);
        let t1 = Instant::now();
        let cpu1 = cpu_seconds(pid);
        let mut calls = tokio::task::JoinSet::new();
        for path in done {
            let addr = image_http.clone();
            calls.spawn(async move { http_status(&addr, "POST", &path).await });
        }
        let mut ok = 0;
        let mut first = None;
        while let Some(code) = calls.join_next().await {
            first.get_or_insert_with(|| t1.elapsed());
            if code.unwrap() == 200 {
                ok += 1;
            }
        }
        let called_back = t1.elapsed();
        let commits = server
            .metrics_text()
            .await
            .lines()
            .find_map(|l| l.strip_prefix("xcat3_image_callback_commits_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        println!(
            "  callbacks: first answered after {:.0} ms; {commits} commits so far",
            first.unwrap_or_default().as_secs_f64() * 1e3
        );
        let callback_cpu = cpu_seconds(pid) - cpu1;
        assert_eq!(ok, n, "callbacks answered 200");
        script("boots from its local disk").await;
        let local = t1.elapsed();
        println!(
            "round {round}: deploy {n} -> all wait-callback {:.0} ms, install script in the agent {:.0} ms (server CPU {:.2} s); \
             {n} callbacks -> all deployed {:.0} ms (server CPU {:.2} s), local boot in the agent {:.0} ms",
            answered.as_secs_f64() * 1e3,
            published.as_secs_f64() * 1e3,
            deploy_cpu,
            called_back.as_secs_f64() * 1e3,
            callback_cpu,
            local.as_secs_f64() * 1e3,
        );
        let undeployed = collect_results(
            server
                .nodes()
                .await
                .undeploy(pb::UndeployRequest {
                    noderange: "bench".into(),
                })
                .await
                .unwrap()
                .into_inner(),
        )
        .await
        .unwrap();
        assert!(undeployed.iter().all(|r| error_of(r).is_none()));
    }
}

/// CPU cost of the DHCP decision alone (decode, decide, encode; no sockets): N reserved NICs,
/// then N unknown machines on a dynamic range, each doing DISCOVER and REQUEST.
fn dhcp_decisions(n: u32, rounds: usize) {
    use dhcproto::Encodable as _;
    use dhcproto::v4::{DhcpOption, Message, MessageType};
    use std::net::Ipv4Addr;
    use xcat3_network::dhcp::answer::Settings;
    use xcat3_network::dhcp::pool::Pool;
    use xcat3_proto::internal::{BootHost, BootUpdate};
    let ip = |i: u32| Ipv4Addr::new(10, 88, 1 + (i / 250) as u8, 1 + (i % 250) as u8);
    let mac = |i: u32, kind: u8| [2, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8, kind];
    let mut table = xcat3_network::table::Table::default();
    table
        .apply(&BootUpdate {
            revision: 1,
            snapshot: true,
            networks: vec![pb::Network {
                name: "bench".into(),
                subnet: "10.88.0.0".into(),
                netmask: "255.255.0.0".into(),
                gateway: "10.88.0.254".into(),
                dynamic_range: "10.88.100.1-10.88.200.250".into(),
                ..Default::default()
            }],
            hosts: (0..n)
                .map(|i| BootHost {
                    mac: xcat3_types::MacAddr(mac(i, 1)).to_string(),
                    ip: ip(i).to_string(),
                    node: format!("b{i:05}"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .unwrap();
    let local = [Ipv4Addr::new(10, 88, 0, 1)];
    let packets = |kind: u8, server: Ipv4Addr| -> Vec<Vec<u8>> {
        let z = Ipv4Addr::UNSPECIFIED;
        (0..n)
            .flat_map(|i| {
                let mut d = Message::new_with_id(i, z, z, z, z, &mac(i, kind));
                d.opts_mut()
                    .insert(DhcpOption::MessageType(MessageType::Discover));
                let mut r = Message::new_with_id(i, z, z, z, z, &mac(i, kind));
                r.opts_mut()
                    .insert(DhcpOption::MessageType(MessageType::Request));
                r.opts_mut().insert(DhcpOption::ServerIdentifier(server));
                let want = if kind == 1 {
                    ip(i)
                } else {
                    Ipv4Addr::new(10, 88, 100 + (i / 250) as u8, 1 + (i % 250) as u8)
                };
                r.opts_mut().insert(DhcpOption::RequestedIpAddress(want));
                [d.to_vec().unwrap(), r.to_vec().unwrap()]
            })
            .collect()
    };
    for (label, kind) in [("reserved", 1u8), ("dynamic", 2u8)] {
        let pkts = packets(kind, local[0]);
        for round in 0..rounds {
            let mut pool = Pool::in_memory();
            let range = |a: Ipv4Addr, b: Ipv4Addr| xcat3_types::IpRange { start: a, end: b };
            pool.set_blocks(
                "bench",
                vec![(
                    range(
                        Ipv4Addr::new(10, 88, 100, 1),
                        Ipv4Addr::new(10, 88, 200, 250),
                    ),
                    i64::MAX,
                )],
            );
            let state = xcat3_network::State::for_tests(table.clone(), pool, Settings::default());
            let mut out = Vec::new();
            let t0 = Instant::now();
            let mut replies = 0;
            for p in &pkts {
                if xcat3_network::dhcp::handle(&state, p, &local, 67, &mut out).is_some() {
                    replies += 1;
                }
            }
            let us = t0.elapsed().as_secs_f64() * 1e6 / f64::from(n);
            println!(
                "dhcp decisions, {label}, round {round}: {n} DORA, {replies} replies, {us:.2} us of CPU per DORA (no sockets)"
            );
        }
    }
}

#[tokio::main]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match args.first().map(String::as_str) {
        Some("power") | Some("inventory") | Some("dhcp") | Some("netboot") | Some("deploy")
        | Some("cli") | Some("lookup") => args.remove(0),
        _ => "inventory".into(),
    };
    let mut args = args.into_iter();
    let n: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let has_pg = std::env::var_os("XCAT3_TEST_POSTGRES_URL").is_some();
    if mode == "deploy" {
        deploy(n, rounds).await;
        return;
    }
    if mode == "netboot" {
        netboot(n, rounds).await;
        return;
    }
    if mode == "dhcp" {
        dhcp_decisions(n, rounds);
        return;
    }
    if mode == "lookup" {
        lookup(n).await;
        return;
    }
    if mode == "cli" {
        cli(Backend::Sqlite, n, rounds).await;
        if has_pg {
            cli(Backend::Postgres, n, rounds).await;
        }
        return;
    }
    if mode == "power" {
        if has_pg {
            power(n, 4, rounds).await;
        } else {
            println!(
                "the power benchmark needs PostgreSQL: XCAT3_TEST_POSTGRES_URL (scripts/bench.sh sets it)"
            );
        }
        return;
    }
    run(Backend::Sqlite, n, rounds).await;
    if has_pg {
        run(Backend::Postgres, n, rounds).await;
    } else {
        println!(
            "\n(PostgreSQL skipped: XCAT3_TEST_POSTGRES_URL is not set; scripts/bench.sh sets it)"
        );
    }
}
