//! The Helm chart's pods run as a kubelet would (`xcat3_tests::kubelet`): `helm template` with
//! the default, HA and autoscale values, the bundled etcd and PostgreSQL pointed at images built
//! here, every Deployment, StatefulSet and DaemonSet started in Docker with exactly its pod spec,
//! every probe passing. Then the cluster works: the CLI image creates nodes through the api
//! Service, power runs through the conductors against BMC simulators in a container, and the
//! DaemonSet's agent answers a real dhclient on a provisioning segment plugged into its node.

use std::time::{Duration, Instant};

use xcat3_tests::docker::{cli, require_image, server_image, test_image};
use xcat3_tests::kubelet::{Kubelet, NAMESPACE};
use xcat3_tests::netns::{Netns, Segment, dhclient};

const MAC: &str = "52:54:00:77:00:21";

/// Renders the chart with `values` and `sets`, runs every workload, waits for every probe.
async fn run_chart(test: &str, values: Option<&str>, sets: &[&str]) -> Kubelet {
    for image in [
        server_image(),
        xcat3_tests::docker::cli_image(),
        test_image("etcd"),
        test_image("postgresql"),
        test_image("bmcsim"),
        test_image("base"),
    ] {
        require_image(&image).unwrap();
    }
    let etcd = format!("etcd.bundled.image={}", test_image("etcd"));
    let pg = format!("postgresql.bundled.image={}", test_image("postgresql"));
    let mut all = vec![etcd.as_str(), pg.as_str()];
    all.extend(sets);
    let objects = crate::helm::render_in(NAMESPACE, values, &all);
    let mut k = Kubelet::new(test, objects, 1).unwrap();
    let started = Instant::now();
    k.start_all().unwrap();
    k.wait_ready(Duration::from_secs(240)).await.unwrap();
    println!(
        "{test}: {} pods ready {:?} after start",
        k.pods.len(),
        started.elapsed()
    );
    k
}

/// The CLI image against the api Service with the chart's admin token.
fn xcat3(k: &Kubelet, args: &[&str]) -> String {
    let token = k.secret("rel-xcat3-auth", "admin-token").unwrap();
    let (ok, out) = cli(&k.network, "http://rel-xcat3-api:3010", &token, args);
    assert!(ok, "xcat3 {args:?}: {out}");
    out
}

/// Power through the conductors against a BMC simulator container, and DHCP from the DaemonSet's
/// agent on a provisioning segment plugged into its node.
async fn check_the_cluster_works(k: &mut Kubelet) {
    let bmc_ip = k.allocate_ip();
    let bmc = k.scope.name("bmc");
    let args: Vec<String> = [
        "--network",
        &k.network,
        "--ip",
        &bmc_ip,
        &test_image("bmcsim"),
        "8000",
        "4",
    ]
    .map(String::from)
    .to_vec();
    k.scope.run(&bmc, &args, &Default::default()).unwrap();

    xcat3(
        k,
        &[
            "network-create",
            "prov",
            "subnet=10.77.0.0",
            "netmask=255.255.255.0",
            "gateway=10.77.0.254",
            "dynamic_range=10.77.0.100-10.77.0.120",
        ],
    );
    let control = format!(
        "bmc_address={bmc_ip},bmc_port=8001,bmc_username=admin,bmc_password=secret,redfish_scheme=http,redfish_system=/redfish/v1/Systems/node01"
    );
    let nic = format!("mac={MAC},ip=10.77.0.11,name=eth0,primary=True");
    xcat3(
        k,
        &[
            "create",
            "node01",
            "mgt=redfish",
            "--control",
            &control,
            "--nic",
            &nic,
        ],
    );
    let out = xcat3(k, &["power", "node01", "on"]);
    assert!(out.contains("node01"), "{out}");
    let out = xcat3(k, &["power", "node01", "status"]);
    assert!(
        out.contains("on"),
        "power status through the conductors: {out}"
    );
    let out = xcat3(k, &["list"]);
    assert!(
        !out.contains("secret"),
        "the BMC password is never shown: {out}"
    );

    // The node's provisioning interface, and a machine on the same segment.
    let seg = Segment::create().unwrap();
    seg.plug(&k.nodes[0].netns, "prov0", None, Some("10.77.0.1/24"))
        .unwrap();
    let machine = Netns::create("m").unwrap();
    seg.plug(&machine, "eth0", Some(MAC), None).unwrap();
    let conf = "timeout 20;\nretry 1;\n";
    let deadline = Instant::now() + Duration::from_secs(60);
    let lease = loop {
        match dhclient(&machine, "eth0", conf).await {
            Ok(lease) => break lease,
            Err(e) if Instant::now() < deadline => {
                println!("dhclient: {e}; again");
            }
            Err(e) => {
                let agent = &k.pods_of("-network")[0].container;
                panic!("{e}\n{}", xcat3_tests::docker::logs(agent));
            }
        }
    };
    assert_eq!(lease["new_ip_address"], "10.77.0.11", "{lease:?}");

    // Every probe still passes after the work.
    for pod in &k.pods {
        for which in ["readinessProbe", "livenessProbe"] {
            k.probe(pod, which)
                .await
                .unwrap_or_else(|e| panic!("{} {which}: {e:#}", pod.name));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_chart_runs_as_a_kubelet_would_and_works() {
    let mut k = run_chart("chart-default", None, &[]).await;
    assert_eq!(k.pods_of("-api").len(), 2);
    assert_eq!(k.pods_of("-conductor").len(), 2);
    check_the_cluster_works(&mut k).await;
}
