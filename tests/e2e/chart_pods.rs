//! The Helm chart's pods run as a kubelet would (`xcat3_tests::kubelet`): `helm template` with
//! the default, HA and autoscale values, the bundled etcd and PostgreSQL pointed at images built
//! here, every Deployment, StatefulSet and DaemonSet started in Docker with exactly its pod spec,
//! every probe passing. Then the cluster works: the CLI image creates nodes through the api
//! Service, power runs through the conductors against BMC simulators in a container, and the
//! DaemonSet's agent answers a real dhclient on a provisioning segment plugged into its node.

use std::time::{Duration, Instant};

use xcat3_tests::docker::{cli, require_image, server_image, test_image};
use xcat3_tests::kube_api::KubeApi;
use xcat3_tests::kubelet::{Kubelet, NAMESPACE};
use xcat3_tests::netns::{Netns, Segment, dhclient};

const MAC: &str = "52:54:00:77:00:21";

/// Renders the chart with `values` and `sets` (the bundled etcd and PostgreSQL on the images built
/// here), ready to start.
fn chart(test: &str, values: Option<&str>, sets: &[&str]) -> Kubelet {
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
    Kubelet::new(test, objects, 1).unwrap()
}

/// Runs every workload of `k` and waits for every probe.
async fn start(k: &mut Kubelet, test: &str) {
    let started = Instant::now();
    k.start_all().unwrap();
    k.wait_ready(Duration::from_secs(240)).await.unwrap();
    println!(
        "{test}: {} pods ready {:?} after start",
        k.pods.len(),
        started.elapsed()
    );
}

/// [`chart`], then [`start`].
async fn run_chart(test: &str, values: Option<&str>, sets: &[&str]) -> Kubelet {
    let mut k = chart(test, values, sets);
    start(&mut k, test).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ha_chart_runs_three_etcd_members_and_works() {
    let mut k = run_chart("chart-ha", Some("ha-values.yaml"), &[]).await;
    assert_eq!(k.pods_of("-etcd").len(), 3);
    assert_eq!(k.pods_of("-api").len(), 3);
    assert_eq!(k.pods_of("-conductor").len(), 4);
    check_the_cluster_works(&mut k).await;
}

/// The number of conductors `xcat3 conductor-list` shows.
fn conductors(k: &Kubelet) -> usize {
    xcat3(k, &["conductor-list"])
        .lines()
        .filter(|l| l.contains("rel-xcat3-conductor-"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscale_chart_follows_the_node_count_through_the_scale_subresource() {
    let mut k = chart("chart-autoscale", Some("autoscale-values.yaml"), &[]);
    // The Kubernetes API stand-in on this host as the pods see it, and its service account.
    let dir = tempfile::tempdir().unwrap();
    let port = xcat3_tests::free_port();
    let deployment = "rel-xcat3-conductor";
    let mut kube = KubeApi::start(dir.path(), &k.gateway(), port, NAMESPACE, deployment, 1)
        .await
        .unwrap();
    k.service_account = Some(kube.service_account.clone());
    k.extra_env
        .insert("KUBERNETES_SERVICE_HOST".into(), kube.host.clone());
    k.extra_env
        .insert("KUBERNETES_SERVICE_PORT".into(), kube.port.to_string());
    start(&mut k, "chart-autoscale").await;
    assert_eq!(
        k.pods_of("-conductor").len(),
        1,
        "no replicas: one, as Kubernetes defaults"
    );

    // Five nodes at two per conductor want three; then one node wants one.
    let names: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        xcat3(
            &k,
            &["create", n, "--nic", &format!("mac=52:54:00:66:00:0{i}")],
        );
    }
    for want in [3, 1] {
        let replicas = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let n = kube.changes.recv().await.expect("the stand-in runs");
                if n == want {
                    return n;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the api did not scale the conductors to {want}"));
        k.scale(deployment, replicas).unwrap();
        k.wait_ready(Duration::from_secs(120)).await.unwrap();
        xcat3_tests::wait_for(
            Duration::from_secs(60),
            "the conductors the api lists",
            || async { (conductors(&k) == want).then_some(()) },
        )
        .await
        .unwrap();
        if want == 3 {
            xcat3(&k, &["delete", "n[2-5]"]);
        }
    }
}
