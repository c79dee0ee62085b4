//! A cluster of separate processes: real etcd, the api and three conductors on PostgreSQL,
//! with BMCs simulated by OpenIPMI's ipmi_sim.

use std::time::Duration;
use xcat3_proto::pb;

use xcat3_tests::ownership::{self, Checker};
use xcat3_tests::{TestBmc, TestCluster, assert_one_success_per_node, collect_results, error_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conductor_killed_mid_operation_still_leaves_one_result_per_node() {
    let nodes = 1000;
    let mut bmcs = Vec::new();
    for _ in 0..8 {
        bmcs.push(TestBmc::start().await.unwrap());
    }
    let mut cluster = TestCluster::start(3, 3, &["--power-sync-interval-secs", "0"])
        .await
        .unwrap();
    let mut client = cluster.nodes().await;
    let batch: Vec<pb::Node> = (0..nodes)
        .map(|i| {
            let bmc = &bmcs[i % bmcs.len()];
            pb::Node {
                name: format!("cn{i:04}"),
                mgt: "ipmi".into(),
                control: [
                    ("bmc_address", "127.0.0.1".to_owned()),
                    ("bmc_port", bmc.port.to_string()),
                    ("bmc_username", "admin".to_owned()),
                    ("bmc_password", TestBmc::PASSWORD.to_owned()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
                ..Default::default()
            }
        })
        .collect();
    let created = collect_results(
        client
            .create_nodes(pb::CreateNodesRequest {
                nodes: batch,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap();
    assert!(created.iter().all(|r| error_of(r).is_none()));

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
    let mut killed = false;
    while let Some(msg) = stream.message().await.unwrap() {
        results.extend(msg.results);
        // Kill a conductor once results are flowing, while most nodes are still pending.
        if !killed && !results.is_empty() {
            assert!(
                results.len() < nodes / 2,
                "the operation finished too fast to interrupt"
            );
            cluster.kill_conductor("c1").await.unwrap();
            killed = true;
        }
    }
    assert!(killed);
    assert_one_success_per_node(&results, nodes);
    assert!(
        cluster.log("api").contains("retrying on the new owners"),
        "the killed conductor's nodes were retried"
    );
}

/// Waits until the live conductors listed by the api own every shard, each ⌊64/n⌋ or ⌈64/n⌉.
async fn wait_balanced(cluster: &TestCluster, ids: &[&str]) {
    ownership::wait_balanced(&cluster.conductors().await, ids, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conductor_processes_scale_1_4_2_and_one_cut_off_from_etcd_stops() {
    let mut cluster = TestCluster::start(1, 3, &["--power-sync-interval-secs", "0"])
        .await
        .unwrap();
    let checker = Checker::start();
    checker.follow(&cluster.conductor_addrs);
    wait_balanced(&cluster, &["c0"]).await;
    for id in ["c1", "c2", "c3"] {
        cluster
            .add_conductor(id, &["--power-sync-interval-secs", "0"])
            .await
            .unwrap();
    }
    checker.follow(&cluster.conductor_addrs);
    wait_balanced(&cluster, &["c0", "c1", "c2", "c3"]).await;
    // Scale down: SIGTERM hands the shards over and exits cleanly.
    for id in ["c3", "c2"] {
        let status = cluster.stop_conductor(id).await.unwrap();
        assert!(
            status.success(),
            "{id} exited with {status}: {}",
            cluster.log(id)
        );
    }
    wait_balanced(&cluster, &["c0", "c1"]).await;

    // A conductor reaching etcd through a proxy that the test then cuts.
    let target = cluster
        .etcd
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = xcat3_tests::TcpProxy::start(target).await.unwrap();
    cluster
        .add_conductor_via(
            "cut",
            &format!("http://{}", proxy.addr),
            &["--power-sync-interval-secs", "0"],
        )
        .await
        .unwrap();
    checker.follow(&cluster.conductor_addrs);
    wait_balanced(&cluster, &["c0", "c1", "cut"]).await;
    let cut_addr = cluster
        .conductor_addrs
        .iter()
        .find(|(id, _)| id == "cut")
        .unwrap()
        .1
        .clone();
    proxy.cut();
    xcat3_tests::wait_for(
        std::time::Duration::from_secs(3),
        "the cut-off conductor drops its shards",
        || {
            let addr = cut_addr.clone();
            async move {
                TestCluster::owned_by(&addr)
                    .await
                    .filter(|s| s.is_empty())
                    .map(|_| ())
            }
        },
    )
    .await
    .unwrap();
    wait_balanced(&cluster, &["c0", "c1"]).await;
    let (rounds, v) = checker.finish();
    assert!(rounds > 20, "the checker ran {rounds} rounds");
    assert!(v.is_empty(), "two owners seen: {:?}", &v[..v.len().min(10)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_live_conductor_each_node_gets_a_clear_error_at_once() {
    let cluster = TestCluster::start(0, 3, &[]).await.unwrap();
    let mut client = cluster.nodes().await;
    let nodes = (0..5)
        .map(|i| pb::Node {
            name: format!("lonely{i}"),
            mgt: "ipmi".into(),
            ..Default::default()
        })
        .collect();
    let req = pb::CreateNodesRequest {
        nodes,
        ..Default::default()
    };
    collect_results(client.create_nodes(req).await.unwrap().into_inner())
        .await
        .unwrap();
    let req = pb::PowerRequest {
        noderange: "lonely[0-4]".into(),
        action: "status".into(),
        no_wait: false,
    };
    let results = collect_results(client.power(req).await.unwrap().into_inner())
        .await
        .unwrap();
    assert_eq!(results.len(), 5);
    for r in &results {
        let e = error_of(r).expect("no conductor, no success");
        assert!(
            e.reason.starts_with("no live conductor owns shard"),
            "{e:?}"
        );
    }
}

/// A new etcd cluster (or one restored from an old backup) starts its revisions again from 1,
/// below the fencing epochs the database holds from the previous one: the conductor raises its
/// tokens above them, records its claims and serves, instead of never serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_etcd_cluster_does_not_lock_the_conductors_out() {
    let mut cluster = TestCluster::start(0, 3, &[]).await.unwrap();
    xcat3_tests::psql(
        &cluster.database_url,
        "INSERT INTO shards (id, epoch, owner) \
         SELECT g, 1000000, 'old-cluster' FROM generate_series(0, 63) g",
    )
    .unwrap();
    cluster
        .add_conductor("c0", &["--power-sync-interval-secs", "0"])
        .await
        .unwrap();
    let bmc = xcat3_tests::TestBmc::start().await.unwrap();
    cluster
        .cli(
            &["create", "n1", "mgt=ipmi", "--control", &bmc.control()],
            &[],
        )
        .await
        .ok();
    let out = cluster.cli(&["power", "n1", "on"], &[]).await;
    assert!(
        out.stdout.contains("n1: on"),
        "{out:?}\n{}",
        cluster.log("c0")
    );
    assert!(bmc.is_on());
    assert!(cluster.log("c0").contains("etcd is behind the database"));
}
