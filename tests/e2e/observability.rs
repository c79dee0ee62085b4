//! The Grafana dashboards in the chart only use metrics the services really export.

use std::collections::BTreeSet;
use std::time::Duration;

use xcat3_tests::{Backend, ServerOptions, TestBmc, TestServer, free_port, metrics_page, wait_for};

/// Metric names used by the dashboards' queries.
fn dashboard_metrics() -> BTreeSet<String> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/xcat3/dashboards");
    let name = regex::Regex::new(r"xcat3_[a-z0-9_]+").unwrap();
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let panels = doc["panels"].as_array().unwrap();
        assert!(!panels.is_empty(), "{}", path.display());
        for p in panels {
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                out.extend(name.find_iter(expr).map(|m| m.as_str().to_owned()));
            }
        }
    }
    out
}

/// The family a sample name belongs to: `_total` of counters, `_bucket`/`_sum`/`_count` of
/// histograms name the family declared by `# TYPE`.
fn family(sample: &str) -> &str {
    ["_total", "_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| sample.strip_suffix(s))
        .unwrap_or(sample)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_dashboards_is_exported() {
    let used = dashboard_metrics();
    assert!(used.len() >= 15, "{used:?}");
    // api + conductor + network agent in one process, sharing one /metrics (no DHCP: the agent
    // registers its metrics anyway; everything else on loopback).
    let opts = ServerOptions {
        network_agent: true,
        extra_args: [
            "--no-dhcp",
            "--tftp-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--dns-listen",
            "127.0.0.1:0",
            "--ipxe-dir",
            "none",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    };
    let s = TestServer::start_with(Backend::Sqlite, opts).await.unwrap();
    // Give every family a sample: a node (fleet gauges), a power call through a simulated BMC
    // (RPC and driver families).
    let bmc = TestBmc::start().await.unwrap();
    s.cli(&["create", "m1", "mgt=ipmi", "--control", &bmc.control()])
        .await
        .ok();
    s.cli(&["power", "m1", "status"]).await.ok();
    let text = wait_for(
        Duration::from_secs(15),
        "every family has a sample",
        || async {
            let text = s.metrics_text().await;
            (text.contains("xcat3_nodes{") && text.contains("xcat3_driver_operations_total{"))
                .then_some(text)
        },
    )
    .await
    .unwrap();
    let declared: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let missing: Vec<&String> = used
        .iter()
        .filter(|m| !declared.contains(family(m)))
        .collect();
    assert!(
        missing.is_empty(),
        "dashboards use metrics nobody exports: {missing:?}\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_in_one_gives_the_agent_its_own_metrics_page_when_asked() {
    let port = free_port();
    let opts = ServerOptions {
        network_agent: true,
        extra_args: [
            "--no-dhcp",
            "--tftp-listen",
            "none",
            "--http-listen",
            "127.0.0.1:0",
            "--dns-listen",
            "none",
            "--ipxe-dir",
            "none",
            "--network-metrics-listen",
            &format!("127.0.0.1:{port}"),
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    };
    let s = TestServer::start_with(Backend::Sqlite, opts).await.unwrap();
    let agent = wait_for(Duration::from_secs(15), "the agent's page", || async {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => Some(metrics_page(addr).await),
            Err(_) => None,
        }
    })
    .await
    .unwrap();
    assert!(agent.contains("# TYPE xcat3_dhcp_replies"), "{agent}");
    assert!(!agent.contains("xcat3_nodes"), "the api's metrics: {agent}");
    let api = s.metrics_text().await;
    assert!(!api.contains("xcat3_dhcp_replies"), "{api}");
}
