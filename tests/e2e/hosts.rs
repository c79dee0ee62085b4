//! The cluster across hosts (`xcat3_tests::hosts`): every service in its own container with its
//! own address, on Docker networks the test creates. Hosts are killed (`docker kill`), cut off
//! (`docker network disconnect`), started at the same moment and replaced one by one, as they are
//! on a real site.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use xcat3_proto::pb;
use xcat3_tests::docker::docker;
use xcat3_tests::hosts::Hosts;
use xcat3_tests::ownership::{Checker, wait_balanced};
use xcat3_tests::{TestCluster, assert_one_success_per_node, collect_results, error_of};

const TTL: u64 = 3;

/// `count` nodes `cnNNNN` whose Redfish BMCs are the simulator `bmc` on ports 8000..8000+`bmcs`.
fn redfish_nodes(bmc_ip: &str, count: usize, bmcs: usize) -> Vec<pb::Node> {
    (0..count)
        .map(|i| {
            let name = format!("cn{i:04}");
            pb::Node {
                mgt: "redfish".into(),
                control: [
                    ("bmc_address", bmc_ip.to_owned()),
                    ("bmc_port", (8000 + i % bmcs).to_string()),
                    ("bmc_username", "admin".to_owned()),
                    ("bmc_password", "secret".to_owned()),
                    ("redfish_scheme", "http".to_owned()),
                    ("redfish_system", format!("/redfish/v1/Systems/{name}")),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
                name,
                ..Default::default()
            }
        })
        .collect()
}

/// The shards the conductors at `urls` own between them, as each answers.
async fn owned(urls: &[(String, String)]) -> BTreeSet<u32> {
    let mut all = BTreeSet::new();
    for (_, url) in urls {
        all.extend(TestCluster::owned_by(url).await.unwrap_or_default());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_conductor_host_leaves_one_result_per_node_and_its_shards_move_within_the_ttl() {
    let nodes = 1000;
    let mut h = Hosts::cluster("kill", TTL, 3, 2, 3).await.unwrap();
    let bmc = h.start_bmcs(8, 50).await.unwrap();
    let conductors = h.conductors("api0").await.unwrap();
    wait_balanced(&conductors, &["c0", "c1", "c2"], Duration::from_secs(30)).await;
    let mut client = h.nodes("api0").await.unwrap();
    let created = collect_results(
        client
            .create_nodes(pb::CreateNodesRequest {
                nodes: redfish_nodes(&bmc.ip, nodes, 8),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert!(created.iter().all(|r| error_of(r).is_none()), "{created:?}");

    let survivors: Vec<(String, String)> = h
        .conductor_urls()
        .into_iter()
        .filter(|(id, _)| id != "c1")
        .collect();
    let mut stream = client
        .power(pb::PowerRequest {
            noderange: "all".into(),
            action: "status".into(),
            no_wait: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut results = Vec::new();
    let mut takeover = None;
    while let Some(msg) = stream.message().await.unwrap() {
        results.extend(msg.results);
        // Kill a conductor once results flow, while most nodes are still pending.
        if takeover.is_none() && !results.is_empty() {
            assert!(
                results.len() < nodes / 2,
                "the operation finished too fast to interrupt"
            );
            h.kill("c1").unwrap();
            let killed = Instant::now();
            let survivors = survivors.clone();
            takeover = Some(tokio::spawn(async move {
                while owned(&survivors).await.len() < 64 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                killed.elapsed()
            }));
        }
    }
    let takeover = takeover.expect("a conductor was killed").await.unwrap();
    println!(
        "takeover after docker kill: {:.2} s (lease TTL {TTL} s)",
        takeover.as_secs_f64()
    );
    assert_one_success_per_node(&results, nodes);
    assert!(
        takeover <= Duration::from_secs(TTL + 2),
        "the shards moved after {takeover:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conductor_host_cut_off_from_etcd_stops_before_another_takes_its_shards() {
    let h = Hosts::cluster("cut", TTL, 3, 1, 3).await.unwrap();
    let conductors = h.conductors("api0").await.unwrap();
    wait_balanced(&conductors, &["c0", "c1", "c2"], Duration::from_secs(30)).await;
    let checker = Checker::start();
    checker.follow(&h.conductor_urls());
    // Let the checker see the steady state first.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let cut = h.host("c2").clone();
    let cut_url = format!("http://{}:3020", cut.ip);
    let cut_at = Instant::now();
    docker(&["network", "disconnect", &h.etcd_net, &cut.container]).unwrap();
    let stopped = xcat3_tests::wait_for(
        Duration::from_secs(TTL + 2),
        "the cut-off conductor drops its shards",
        || {
            let url = cut_url.clone();
            async move {
                TestCluster::owned_by(&url)
                    .await
                    .filter(|s| s.is_empty())
                    .map(|_| cut_at.elapsed())
            }
        },
    )
    .await
    .unwrap();
    wait_balanced(&conductors, &["c0", "c1"], Duration::from_secs(30)).await;
    let moved = cut_at.elapsed();
    let (rounds, violations) = checker.finish();
    println!(
        "partition: c2 dropped its shards {:.2} s after the cut, c0 and c1 held all 64 by {:.2} s; \
         ownership checker: {rounds} rounds, {} shards seen with two owners",
        stopped.as_secs_f64(),
        moved.as_secs_f64(),
        violations.len()
    );
    assert!(rounds > 20, "the checker ran {rounds} rounds");
    assert!(
        violations.is_empty(),
        "two owners seen: {:?}",
        &violations[..violations.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_apis_migrate_an_empty_database_once_and_a_rolling_restart_loses_no_read() {
    let mut h = Hosts::new("migrate", TTL).unwrap();
    h.start_etcd(1).await.unwrap();
    h.start_postgres().await.unwrap();
    let mut a = h.create_api("api0", &[]).unwrap();
    let mut b = h.create_api("api1", &[]).unwrap();
    h.start_together(&mut [&mut a, &mut b]).unwrap();
    for api in [&a, &b] {
        h.wait_log(api, "xcat3 api ready", Duration::from_secs(60))
            .await
            .unwrap();
    }
    let pg = h.host("pg").container.clone();
    let applied = docker(&[
        "exec",
        &pg,
        "psql",
        "-U",
        "xcat3",
        "-d",
        "xcat3",
        "-tAc",
        "SELECT count(*) FROM seaql_migrations",
    ])
    .unwrap();
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/src"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('m')
        })
        .count();
    assert_eq!(applied.trim(), migrations.to_string());

    let (ok, out) = h.cli(&["create", "n1", "--nic", "mac=52:54:00:99:00:01"]);
    assert!(ok, "{out}");
    // A steady stream of reads through the api's DNS name while each replica is replaced.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (stop, core) = (stop.clone(), h.core.clone());
        readers.push(tokio::task::spawn_blocking(move || {
            let mut calls = Vec::new();
            while !stop.is_cancelled() {
                calls.push(xcat3_tests::docker::cli(
                    &core,
                    "http://api:3010",
                    xcat3_tests::CLUSTER_TOKEN,
                    &["list"],
                ));
            }
            calls
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for api in ["api0", "api1"] {
        h.replace_api(api).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    stop.cancel();
    let mut total = 0;
    let mut failed = Vec::new();
    for r in readers {
        for (ok, out) in r.await.unwrap() {
            total += 1;
            if !ok || !out.contains("n1") {
                failed.push(out);
            }
        }
    }
    println!(
        "rolling api restart: {total} CLI reads, {} failed",
        failed.len()
    );
    assert!(total > 10, "only {total} reads ran");
    assert!(failed.is_empty(), "{failed:?}");
}

mod boot {
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use xcat3_tests::docker::{cli_image, docker, logs, pid};
    use xcat3_tests::hosts::Hosts;
    use xcat3_tests::iso::make_iso;
    use xcat3_tests::netns::{Firmware, Netns, Segment, TestVm, dhclient};

    const VM_MAC: &str = "52:54:00:79:00:01";

    fn payloads() -> PathBuf {
        PathBuf::from(std::env::var("XCAT3_TEST_PAYLOADS").unwrap_or_else(|_| {
            panic!("XCAT3_TEST_PAYLOADS is not set: run the tests with scripts/test.sh")
        }))
    }

    /// Plugs host `name`'s container into the provisioning segment as `prov0` at `addr`.
    fn plug(h: &Hosts, seg: &Segment, name: &str, addr: &str) -> Netns {
        let ns = Netns::attach(name, pid(&h.host(name).container).unwrap()).unwrap();
        seg.plug(&ns, "prov0", None, Some(addr)).unwrap();
        ns
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn with_one_of_two_agents_stopped_mid_boot_the_machine_deploys_and_without_api_and_database_it_is_still_answered()
     {
        // The whole cluster: 3 etcd members, PostgreSQL, the image service, 3 conductors, 2 apis
        // (then 2 agents).
        let mut h = Hosts::new("agents", super::TTL).unwrap();
        h.start_etcd(3).await.unwrap();
        h.start_postgres().await.unwrap();
        let image = h
            .start_image(&["--image-base-url", "http://10.79.0.3:8090"])
            .unwrap();
        for c in ["c0", "c1", "c2"] {
            h.start_conductor(c).unwrap();
        }
        let image_flags = [
            "--image-grpc",
            "http://image:3030",
            "--image-url",
            "http://10.79.0.3:8090",
        ];
        let api = h.start_api("api0", &image_flags).unwrap();
        let api1 = h.start_api("api1", &image_flags).unwrap();
        // Each measured from its own start, all watched at once.
        let c0 = h.host("c0").clone();
        let limit = Duration::from_secs(60);
        let (i, a, c) = tokio::join!(
            h.wait_serving(&image, limit),
            h.wait_serving(&api, limit),
            h.wait_serving(&c0, limit)
        );
        for host in [&api1, &h.host("c1").clone(), &h.host("c2").clone()] {
            h.wait_serving(host, limit).await.unwrap();
        }
        let mut cold = vec![
            ("image".to_owned(), i.unwrap()),
            ("api".to_owned(), a.unwrap()),
            ("conductor".to_owned(), c.unwrap()),
        ];
        let g0 = h.start_agent("g0").unwrap();
        let g1 = h.start_agent("g1").unwrap();
        cold.push((
            "network agent".into(),
            h.wait_serving(&g0, Duration::from_secs(60)).await.unwrap(),
        ));
        println!(
            "cold start to SERVING after docker start: {}",
            cold.iter()
                .map(|(n, d)| format!("{n} {:.2} s", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let seg = Segment::create().unwrap();
        let _ns = [
            plug(&h, &seg, "g0", "10.79.0.1/24"),
            plug(&h, &seg, "g1", "10.79.0.2/24"),
            plug(&h, &seg, "image", "10.79.0.3/24"),
        ];
        for g in [&g0, &g1] {
            h.wait_log(g, "serving DHCP", Duration::from_secs(30))
                .await
                .unwrap();
        }

        // An installer medium whose kernel calls back, imported through the CLI image.
        let dir = tempfile::tempdir().unwrap();
        let kernel = std::fs::read(payloads().join("callback/vmlinuz")).unwrap();
        let initrd = std::fs::read(payloads().join("callback/initrd.gz")).unwrap();
        let iso = make_iso(
            dir.path(),
            "debian-test",
            &[
                (
                    ".disk/info",
                    b"Debian GNU/Linux 12.8.0 \"Bookworm\" - Official amd64 NETINST 20241109-11:04",
                ),
                ("install.amd/vmlinuz", &kernel),
                ("install.amd/initrd.gz", &initrd),
            ],
            &[],
        );
        let mount = format!("{}:/media/debian.iso:ro", iso.display());
        let out = docker(&[
            "run",
            "--rm",
            "--network",
            &h.core,
            "-v",
            &mount,
            "-e",
            "XCAT3_URL=http://api:3010",
            "-e",
            &format!("XCAT3_TOKEN={}", xcat3_tests::CLUSTER_TOKEN),
            "--entrypoint",
            "/usr/local/bin/xcat3-copycds",
            &cli_image(),
            "-n",
            "deb",
            "/media/debian.iso",
        ]);
        out.unwrap();
        for args in [
            &[
                "network-create",
                "prov",
                "subnet=10.79.0.0",
                "netmask=255.255.255.0",
                "gateway=10.79.0.1",
                "nameservers=10.79.0.1",
                "domain=cluster.test",
            ][..],
            &[
                "create",
                "n1",
                "osimage=deb",
                "--nic",
                &format!("mac={VM_MAC},ip=10.79.0.21"),
            ][..],
            &["deploy", "n1"][..],
        ] {
            let (ok, out) = h.cli(args);
            assert!(ok, "{args:?}: {out}");
        }

        // The machine boots; the agent that served its boot script is stopped at once, so its
        // installer's own DHCP and everything after must go to the other one.
        let started = Instant::now();
        let vm = TestVm::boot(&seg.switch, "br0", VM_MAC, Firmware::Bios).unwrap();
        let served = xcat3_tests::wait_for(
            Duration::from_secs(120),
            "an agent serves the boot script",
            || async {
                [&g0, &g1]
                    .into_iter()
                    .find(|g| logs(&g.container).contains("iPXE script served"))
                    .cloned()
            },
        )
        .await;
        let served = served.unwrap_or_else(|e| panic!("{e}\n{}", vm.console()));
        docker(&["stop", "-t", "5", &served.container]).unwrap();
        let other = if served.name == "g0" { &g1 } else { &g0 };
        println!("{} served the boot script and was stopped", served.name);
        let deployed =
            xcat3_tests::wait_for(Duration::from_secs(300), "the node is deployed", || async {
                let (_, out) = h.cli(&["show", "n1", "-o", "json"]);
                out.contains("\"provision_state\": \"deployed\"")
                    .then_some(started.elapsed())
            })
            .await;
        let console = vm.console();
        vm.stop().await;
        let deployed = deployed.unwrap_or_else(|e| {
            panic!(
                "{e}\n--- console ---\n{console}\n--- {} ---\n{}\n--- image ---\n{}",
                other.name,
                logs(&other.container),
                logs(&image.container)
            )
        });
        println!(
            "QEMU machine: power-on to deployed in {:.1} s with one of two agents stopped",
            deployed.as_secs_f64()
        );

        // The machine again, as a plain client: first, the remaining agent learns that n1 is
        // deployed (its boot table follows the api's changes).
        let machine = Netns::create("m").unwrap();
        seg.plug(&machine, "eth0", Some(VM_MAC), Some("10.79.0.21/24"))
            .unwrap();
        let other_ip = if other.name == "g0" {
            "10.79.0.1"
        } else {
            "10.79.0.2"
        };
        let script = |server: String| {
            let url = format!("http://{server}:8080/boot/{VM_MAC}.ipxe");
            machine
                .run(&["curl", "-sS", &url])
                .unwrap_or_else(|e| e.to_string())
        };
        xcat3_tests::wait_for(
            Duration::from_secs(30),
            "the agent's table says local disk",
            || {
                let s = script(other_ip.to_owned());
                async move { s.contains("boots from its local disk").then_some(()) }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", script(other_ip.to_owned())));

        // With the api and PostgreSQL gone, the agent still answers the known machine from what
        // it holds: its lease, and its boot script.
        for name in ["api0", "api1", "pg"] {
            docker(&["stop", "-t", "5", &h.host(name).container]).unwrap();
        }
        machine
            .run(&["ip", "addr", "flush", "dev", "eth0"])
            .unwrap();
        let lease = dhclient(&machine, "eth0", "timeout 20;\nretry 1;\n")
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", logs(&other.container)));
        assert_eq!(lease["new_ip_address"], "10.79.0.21", "{lease:?}");
        // The hook records the lease without configuring it: take the address as a client would.
        machine
            .run(&["ip", "addr", "add", "10.79.0.21/24", "dev", "eth0"])
            .unwrap();
        let script = script(lease["new_dhcp_server_identifier"].clone());
        assert!(script.contains("boots from its local disk"), "{script}");
    }
}
