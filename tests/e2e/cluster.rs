//! A cluster of separate processes: real etcd, the api and three conductors on PostgreSQL,
//! with BMCs simulated by OpenIPMI's ipmi_sim.

use std::collections::HashSet;

use xcat3_proto::pb;
use xcat3_tests::{TestBmc, TestCluster, collect_results, error_of};

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
    let names: HashSet<&str> = results.iter().map(|r| r.name.as_str()).collect();
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
    assert!(
        cluster.log("api").contains("retrying on the new owners"),
        "the killed conductor's nodes were retried"
    );
}
