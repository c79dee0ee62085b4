//! The inventory suite, run against SQLite and PostgreSQL alike.

use std::collections::HashSet;

use xcat3_proto::pb;
use xcat3_tests::{
    Backend, TestServer, big_network, collect_results, error_of, get_all, numbered_node,
};

crate::backend_suite!(
    readme_network_and_node,
    bulk_create_list_update_delete,
    validation_errors_name_node_and_field,
    all_or_nothing_writes_nothing,
    hundred_thousand_nodes_fit_in_one_request,
    update_rules,
    delete_and_noderange_errors,
    network_rules,
    data_survives_a_restart,
);

fn c920() -> pb::Network {
    pb::Network {
        name: "c920".into(),
        subnet: "11.0.0.0".into(),
        netmask: "255.0.0.0".into(),
        gateway: "11.0.0.101".into(),
        dynamic_range: "11.4.40.111-11.4.40.113".into(),
        nameservers: vec!["11.0.0.101".into()],
        ..Default::default()
    }
}

fn node(name: &str, mac: &str, ip: &str) -> pb::Node {
    pb::Node {
        name: name.into(),
        nics: vec![pb::Nic {
            mac: mac.into(),
            ip: ip.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn create(s: &TestServer, nodes: Vec<pb::Node>, all_or_nothing: bool) -> Vec<pb::NodeResult> {
    let stream = s
        .nodes()
        .await
        .create_nodes(pb::CreateNodesRequest {
            nodes,
            all_or_nothing,
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    collect_results(stream).await.expect("results")
}

async fn update(
    s: &TestServer,
    noderange: &str,
    changes: &[(&str, &str)],
    all_or_nothing: bool,
) -> Vec<pb::NodeResult> {
    let changes = changes
        .iter()
        .map(|(p, v)| pb::AttributeChange {
            path: (*p).into(),
            value: (*v).into(),
        })
        .collect();
    let stream = s
        .nodes()
        .await
        .update_nodes(pb::UpdateNodesRequest {
            noderange: noderange.into(),
            changes,
            all_or_nothing,
        })
        .await
        .expect("update")
        .into_inner();
    collect_results(stream).await.expect("results")
}

async fn delete(s: &TestServer, noderange: &str, all_or_nothing: bool) -> Vec<pb::NodeResult> {
    let req = pb::DeleteNodesRequest {
        noderange: noderange.into(),
        all_or_nothing,
    };
    let stream = s
        .nodes()
        .await
        .delete_nodes(req)
        .await
        .expect("delete")
        .into_inner();
    collect_results(stream).await.expect("results")
}

/// The status of a many-node request refused as a whole, before or during its answer stream.
async fn refused(
    call: Result<tonic::Response<tonic::Streaming<pb::NodeResults>>, tonic::Status>,
) -> tonic::Status {
    match call {
        Err(status) => status,
        Ok(stream) => collect_results(stream.into_inner())
            .await
            .expect_err("the request was accepted"),
    }
}

/// The error (field, reason) for `name`, panicking if it succeeded.
fn failure<'a>(results: &'a [pb::NodeResult], name: &str) -> &'a pb::ErrorDetail {
    let r = results
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no result for {name}: {results:?}"));
    error_of(r).unwrap_or_else(|| panic!("{name} succeeded: {results:?}"))
}

fn all_ok(results: &[pb::NodeResult]) -> bool {
    results.iter().all(|r| error_of(r).is_none())
}

async fn readme_network_and_node(b: Backend) {
    let s = TestServer::start(b).await;
    s.networks().await.create_network(c920()).await.unwrap();
    let mut n = node("xcat3test1", "52:54:00:36:ac:b1", "11.5.102.60");
    n.mgt = "kvm".into();
    n.netboot = "pxe".into();
    n.arch = "x86_64".into();
    n.nics[0].name = "eth0".into();
    n.nics[0].primary = true;
    n.control = [
        ("ssh_username", "root"),
        ("ssh_virt_type", "virsh"),
        ("ssh_address", "11.5.102.1"),
        ("ssh_key_filename", "/root/.ssh/id_rsa"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let results = create(&s, vec![n], false).await;
    assert_eq!(results.len(), 1);
    assert!(all_ok(&results), "{results:?}");
    let (nodes, errors) = get_all(&s, "xcat3test1,missing1").await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].name, "missing1");
    let got = &nodes[0];
    assert_eq!(got.mgt, "kvm");
    assert_eq!(got.control["ssh_address"], "11.5.102.1");
    assert_eq!(got.nics[0].mac, "52:54:00:36:ac:b1");
    assert_eq!(got.nics[0].ip, "11.5.102.60");
    assert!(got.nics[0].primary);
    assert_eq!(got.provision_state, "available");
    assert_eq!(got.power_state, "unknown");
    assert!(got.created_at.is_some());
}

async fn bulk_create_list_update_delete(b: Backend) {
    let s = TestServer::start(b).await;
    s.networks()
        .await
        .create_network(big_network())
        .await
        .unwrap();
    let n = 3000;
    let results = create(&s, (0..n).map(|i| numbered_node("cn", i)).collect(), false).await;
    assert_eq!(results.len(), n as usize, "one result per node");
    assert!(
        all_ok(&results),
        "{:?}",
        results.iter().find(|r| error_of(r).is_some())
    );
    let names: HashSet<&str> = results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.len(), n as usize);

    let (nodes, errors) = get_all(&s, "all").await;
    assert!(errors.is_empty());
    assert_eq!(nodes.len(), n as usize);
    assert_eq!(nodes[0].name, "cn00000", "natural order");

    let results = update(
        &s,
        "cn[00000-02999]",
        &[("arch", "aarch64"), ("labels/rack", "r7")],
        false,
    )
    .await;
    assert_eq!(results.len(), n as usize);
    assert!(all_ok(&results));
    let (nodes, _) = get_all(&s, "bench").await;
    assert_eq!(nodes.len(), n as usize, "group noderange");
    assert!(
        nodes
            .iter()
            .all(|n| n.arch == "aarch64" && n.labels["rack"] == "r7")
    );
    assert!(
        nodes.iter().all(|n| n.nics.len() == 1),
        "NICs untouched by an attribute update"
    );

    let results = delete(&s, "all,-cn00007", false).await;
    assert_eq!(results.len(), n as usize - 1);
    assert!(all_ok(&results));
    let (nodes, _) = get_all(&s, "").await;
    assert_eq!(
        nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["cn00007"]
    );
}

async fn validation_errors_name_node_and_field(b: Backend) {
    let s = TestServer::start(b).await;
    s.networks().await.create_network(c920()).await.unwrap();
    assert!(all_ok(
        &create(
            &s,
            vec![node("taken", "52:54:00:00:00:01", "11.0.0.1")],
            false
        )
        .await
    ));

    let mut wrong_driver = node("wrongdriver", "52:54:00:00:01:09", "");
    wrong_driver.mgt = "ipmi".into();
    wrong_driver
        .control
        .insert("ssh_address".into(), "h1".into());
    let mut bad_port = node("badport", "52:54:00:00:01:0a", "");
    bad_port.mgt = "ipmi".into();
    bad_port.control.insert("bmc_port".into(), "99999".into());
    let mut unknown_key = node("unknownkey", "52:54:00:00:01:0b", "");
    unknown_key.control.insert("colour".into(), "red".into());
    let mut bad_mgt = node("badmgt", "52:54:00:00:01:0c", "");
    bad_mgt.mgt = "xen".into();
    let batch = vec![
        node("badmac", "52:54:00:zz:00:01", ""),
        node("dupmacdb", "52:54:00:00:00:01", ""),
        node("dupmac1", "52:54:00:00:01:01", ""),
        node("dupmac2", "52:54:00:00:01:01", ""),
        node("outside", "52:54:00:00:01:02", "12.0.0.1"),
        node("dupipdb", "52:54:00:00:01:03", "11.0.0.1"),
        node("inrange", "52:54:00:00:01:04", "11.4.40.112"),
        node("dupname", "52:54:00:00:01:05", ""),
        node("dupname", "52:54:00:00:01:06", ""),
        node("", "52:54:00:00:01:07", ""),
        node("bad_host", "52:54:00:00:01:08", ""),
        node("taken", "52:54:00:00:01:0d", ""),
        wrong_driver,
        bad_port,
        unknown_key,
        bad_mgt,
        node("fine", "52:54:00:00:02:01", "11.0.0.2"),
    ];
    let total = batch.len();
    let results = create(&s, batch, false).await;
    assert_eq!(
        results.len(),
        total,
        "one result per requested node: {results:?}"
    );
    let expect = |name: &str, field: &str, words: &str| {
        let e = failure(&results, name);
        assert_eq!(e.field, field, "{name}: {e:?}");
        assert!(
            e.reason.contains(words),
            "{name}: {e:?} should mention {words:?}"
        );
    };
    expect("badmac", "nics[0].mac", "not a MAC address");
    expect("dupmacdb", "nics[0].mac", "already belongs to node taken");
    expect("dupmac2", "nics[0].mac", "also given to node dupmac1");
    expect("outside", "nics[0].ip", "outside every defined network");
    expect("dupipdb", "nics[0].ip", "already belongs to node taken");
    expect("inrange", "nics[0].ip", "dynamic range");
    expect("dupname", "name", "more than once");
    expect("", "name", "must not be empty");
    expect("bad_host", "name", "not a valid hostname");
    expect("taken", "name", "exists already");
    expect("wrongdriver", "control.ssh_address", "mgt=ipmi");
    expect("badport", "control.bmc_port", "port");
    expect("unknownkey", "control.colour", "unknown parameter");
    expect("badmgt", "mgt", "not one of");
    let ok: Vec<&str> = results
        .iter()
        .filter(|r| error_of(r).is_none())
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(ok, ["dupmac1", "dupname", "fine"]);
    let (nodes, _) = get_all(&s, "all").await;
    let mut names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["dupmac1", "dupname", "fine", "taken"],
        "failed nodes left nothing behind"
    );
    // The first dupname won, with its own MAC.
    let dup = nodes.iter().find(|n| n.name == "dupname").unwrap();
    assert_eq!(dup.nics[0].mac, "52:54:00:00:01:05");
}

async fn all_or_nothing_writes_nothing(b: Backend) {
    let s = TestServer::start(b).await;
    s.networks().await.create_network(c920()).await.unwrap();
    let batch = vec![
        node("a1", "52:54:00:00:00:01", "11.0.0.1"),
        node("a2", "52:54:00:00:00:02", "12.0.0.1"),
        node("a3", "52:54:00:00:00:03", "11.0.0.3"),
    ];
    let results = create(&s, batch, true).await;
    assert_eq!(results.len(), 3);
    assert_eq!(failure(&results, "a2").field, "nics[0].ip");
    assert_eq!(failure(&results, "a1").code, "failed_precondition");
    assert_eq!(failure(&results, "a3").code, "failed_precondition");
    assert!(get_all(&s, "all").await.0.is_empty());

    assert!(all_ok(
        &create(&s, vec![node("a1", "52:54:00:00:00:01", "11.0.0.1")], true).await
    ));
    let results = update(&s, "a1,a9", &[("arch", "ppc64le")], true).await;
    assert_eq!(failure(&results, "a9").code, "not_found");
    assert_eq!(failure(&results, "a1").code, "failed_precondition");
    assert_eq!(
        get_all(&s, "a1").await.0[0].arch,
        "x86_64",
        "nothing updated"
    );
}

async fn hundred_thousand_nodes_fit_in_one_request(b: Backend) {
    // A request and an answer far above gRPC's default 4 MB: 100,000 nodes, the last one invalid,
    // all or nothing, so the server checks them all, writes none and streams 100,000 results.
    let s = TestServer::start(b).await;
    let mut nodes: Vec<pb::Node> = (0..100_000u32)
        .map(|i| pb::Node {
            name: format!("n{i:06}"),
            labels: [("padding".to_owned(), "x".repeat(40))].into(),
            ..Default::default()
        })
        .collect();
    nodes[99_999].name = "not a hostname".into();
    let results = create(&s, nodes, true).await;
    assert_eq!(results.len(), 100_000);
    assert_eq!(failure(&results, "not a hostname").field, "name");
    assert_eq!(
        results.iter().filter(|r| error_of(r).is_some()).count(),
        100_000
    );
    assert!(get_all(&s, "all").await.0.is_empty());
}

async fn update_rules(b: Backend) {
    let s = TestServer::start(b).await;
    s.networks().await.create_network(c920()).await.unwrap();
    let results = create(
        &s,
        vec![
            node("u1", "52:54:00:00:00:01", "11.0.0.1"),
            node("u2", "52:54:00:00:00:02", "11.0.0.2"),
            node("u3", "52:54:00:00:00:03", ""),
        ],
        false,
    )
    .await;
    assert!(all_ok(&results));

    // The same new IP for two nodes: the first gets it, the second is refused.
    let results = update(&s, "u1,u3", &[("nics/eth0/ip", "11.0.0.9")], false).await;
    assert!(error_of(results.iter().find(|r| r.name == "u1").unwrap()).is_none());
    assert!(
        failure(&results, "u3")
            .reason
            .contains("also given to node u1")
    );
    // Taking another node's IP or MAC.
    let results = update(&s, "u2", &[("nics/eth0/ip", "11.0.0.9")], false).await;
    assert!(
        failure(&results, "u2")
            .reason
            .contains("already belongs to node u1")
    );
    let results = update(&s, "u2", &[("nics/eth0/mac", "52:54:00:00:00:01")], false).await;
    assert_eq!(failure(&results, "u2").field, "nics[0].mac");
    // Groups, labels, control; an empty value removes.
    assert!(all_ok(
        &update(
            &s,
            "u[1-3]",
            &[
                ("groups", "compute,rack1"),
                ("labels/pos", "1"),
                ("mgt", "ipmi"),
                ("control/bmc_password", "pw")
            ],
            false
        )
        .await
    ));
    let results = update(
        &s,
        "compute@rack1",
        &[("labels/pos", ""), ("control/bmc_password", "")],
        false,
    )
    .await;
    assert_eq!(results.len(), 3);
    assert!(all_ok(&results));
    let (nodes, _) = get_all(&s, "rack1").await;
    assert!(
        nodes.iter().all(|n| n.labels.is_empty()
            && n.control.is_empty()
            && n.groups == ["compute", "rack1"])
    );
    // A second NIC, then its removal.
    assert!(all_ok(
        &update(&s, "u1", &[("nics/eth1/mac", "52:54:00:00:00:11")], false).await
    ));
    assert_eq!(get_all(&s, "u1").await.0[0].nics.len(), 2);
    assert!(all_ok(&update(&s, "u1", &[("nics/eth1", "")], false).await));
    assert_eq!(get_all(&s, "u1").await.0[0].nics.len(), 1);
    // Request-level errors: unknown attribute, read-only attribute, bad value.
    for (path, value) in [
        ("colour", "red"),
        ("power_state", "on"),
        ("arch", "sparc"),
        ("name", "x"),
    ] {
        let err = s
            .nodes()
            .await
            .update_nodes(pb::UpdateNodesRequest {
                noderange: "u1".into(),
                changes: vec![pb::AttributeChange {
                    path: path.into(),
                    value: value.into(),
                }],
                all_or_nothing: false,
            })
            .await;
        let status = refused(err).await;
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{path}");
        assert!(
            status.message().starts_with(path),
            "{path}: {}",
            status.message()
        );
    }
}

async fn delete_and_noderange_errors(b: Backend) {
    let s = TestServer::start(b).await;
    assert!(all_ok(
        &create(
            &s,
            vec![
                node("d1", "52:54:00:00:00:01", ""),
                node("d2", "52:54:00:00:00:02", "")
            ],
            false
        )
        .await
    ));
    let results = delete(&s, "d[1-3]", true).await;
    assert_eq!(failure(&results, "d3").code, "not_found");
    assert_eq!(
        get_all(&s, "all").await.0.len(),
        2,
        "all or nothing: nothing deleted"
    );

    for bad in ["node[1-1000000]", "node[5-1]", "/cn(/", "a,,b"] {
        let status = match s
            .nodes()
            .await
            .get_nodes(pb::GetNodesRequest {
                noderange: bad.into(),
            })
            .await
        {
            Err(status) => status,
            Ok(_) => panic!("{bad} was accepted"),
        };
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad}");
        assert!(
            status.message().starts_with("noderange:"),
            "{bad}: {}",
            status.message()
        );
    }
    let req = pb::DeleteNodesRequest {
        noderange: "x[1-1000000]".into(),
        all_or_nothing: false,
    };
    let status = refused(s.nodes().await.delete_nodes(req).await).await;
    assert!(
        status.message().contains("more than 100000 names"),
        "{}",
        status.message()
    );
    assert_eq!(
        get_all(&s, "all").await.0.len(),
        2,
        "a bad noderange deletes nothing"
    );
}

async fn network_rules(b: Backend) {
    let s = TestServer::start(b).await;
    let mut nets = s.networks().await;
    nets.create_network(c920()).await.unwrap();
    let err = nets.create_network(c920()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    let overlap = pb::Network {
        name: "inner".into(),
        subnet: "11.5.0.0".into(),
        netmask: "255.255.0.0".into(),
        ..Default::default()
    };
    let err = nets.create_network(overlap).await.unwrap_err();
    assert!(
        err.message().contains("overlaps network c920"),
        "{}",
        err.message()
    );
    let bad_mask = pb::Network {
        name: "x".into(),
        subnet: "12.0.0.0".into(),
        netmask: "255.0.255.0".into(),
        ..Default::default()
    };
    let err = nets.create_network(bad_mask).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("netmask:"), "{}", err.message());

    assert!(all_ok(
        &create(
            &s,
            vec![node("n1", "52:54:00:00:00:01", "11.0.0.50")],
            false
        )
        .await
    ));
    let err = nets
        .delete_network(pb::NetworkRef {
            name: "c920".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("n1"), "{}", err.message());
    let change = |path: &str, value: &str| pb::UpdateNetworkRequest {
        name: "c920".into(),
        changes: vec![pb::AttributeChange {
            path: path.into(),
            value: value.into(),
        }],
    };
    let err = nets
        .update_network(change("dynamic_range", "11.0.0.40-11.0.0.60"))
        .await
        .unwrap_err();
    assert!(err.message().contains("n1"), "{}", err.message());
    let err = nets.update_network(change("netmask", "255.255.0.0")).await;
    assert!(
        err.is_err(),
        "11.0.0.0/16 still holds 11.0.0.50, but the range 11.4.40.x would fall outside"
    );
    let updated = nets
        .update_network(change("domain", "cluster.example"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.domain, "cluster.example");
    assert_eq!(
        nets.get_network(pb::NetworkRef {
            name: "c920".into()
        })
        .await
        .unwrap()
        .into_inner()
        .domain,
        "cluster.example"
    );
    assert!(all_ok(
        &update(&s, "n1", &[("nics/eth0/ip", "")], false).await
    ));
    nets.delete_network(pb::NetworkRef {
        name: "c920".into(),
    })
    .await
    .unwrap();
    assert!(
        nets.list_networks(pb::ListNetworksRequest {})
            .await
            .unwrap()
            .into_inner()
            .networks
            .is_empty()
    );
}

async fn data_survives_a_restart(b: Backend) {
    let s = TestServer::start(b).await;
    s.networks()
        .await
        .create_network(big_network())
        .await
        .unwrap();
    assert!(all_ok(
        &create(&s, (0..50).map(|i| numbered_node("p", i)).collect(), false).await
    ));
    let s = s.restart().await.unwrap();
    let (nodes, _) = get_all(&s, "p[00000-00049]").await;
    assert_eq!(nodes.len(), 50);
    assert_eq!(nodes[49].nics[0].mac, numbered_node("p", 49).nics[0].mac);
}
