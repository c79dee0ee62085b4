//! `deploy/compose/compose.yaml` as users run it: `docker-compose up` (Debian's Compose) with the
//! images built here standing in for the registries' etcd and PostgreSQL, then the cluster it made
//! works: three conductors share the shards, the CLI image creates a node through the api, and
//! power runs through a conductor against a BMC simulator on the compose network.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use xcat3_tests::docker::{Scope, cli, test_image};
use xcat3_tests::kubelet::grpc_health;
use xcat3_tests::{free_port, wait_for};

const TOKEN: &str = "compose-admin-token-0123456789";

/// One compose project, taken down with its volumes when dropped.
struct Project {
    name: String,
    env: BTreeMap<String, String>,
}

impl Project {
    fn compose(&self, args: &[&str]) -> (bool, String) {
        let file = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/compose/compose.yaml"
        );
        let out = Command::new("docker-compose")
            .args(["--project-name", &self.name, "--file", file])
            .args(args)
            .envs(&self.env)
            .output()
            .expect("run docker-compose (Debian's docker-compose package)");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "--volumes", "--remove-orphans", "--timeout", "5"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_cluster_starts_and_works() {
    let api_port = free_port();
    let env = BTreeMap::from(
        [
            ("XCAT3_ETCD_IMAGE", test_image("etcd")),
            ("XCAT3_POSTGRES_IMAGE", test_image("postgresql")),
            ("XCAT3_ADMIN_TOKEN", TOKEN.to_owned()),
            (
                "XCAT3_AGENT_TOKEN",
                "compose-agent-token-0123456789".to_owned(),
            ),
            ("POSTGRES_PASSWORD", "compose-pg-password".to_owned()),
            ("XCAT3_API_BIND", "127.0.0.1".to_owned()),
            ("XCAT3_API_PORT", api_port.to_string()),
            ("XCAT3_IMAGE_HTTP_BIND", "127.0.0.1".to_owned()),
            ("XCAT3_IMAGE_HTTP_PORT", free_port().to_string()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let project = Project {
        name: format!("x3-{}-compose", std::process::id()),
        env,
    };
    let (ok, out) = project.compose(&["config", "--quiet"]);
    assert!(ok, "{out}");
    let (ok, out) = project.compose(&["up", "--detach", "--no-build"]);
    assert!(ok, "{out}");
    let api = format!("http://127.0.0.1:{api_port}");
    wait_for(Duration::from_secs(180), "the api serves", || async {
        grpc_health(&api, "xcat3.v1.NodeService").await.ok()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", project.compose(&["logs", "--tail", "20"]).1));

    let network = format!("{}_core", project.name);
    let xcat3 = |args: &[&str]| {
        let (ok, out) = cli(&network, "http://api:3010", TOKEN, args);
        assert!(ok, "xcat3 {args:?}: {out}");
        out
    };
    wait_for(Duration::from_secs(60), "three conductors", || async {
        let out = xcat3(&["conductor-list"]);
        (out.matches("conductor-").count() >= 3).then_some(())
    })
    .await
    .unwrap();

    let scope = Scope::new("compose-bmc");
    let bmc = scope.name("bmc");
    let args: Vec<String> = ["--network", &network, &test_image("bmcsim"), "8000", "1"]
        .map(String::from)
        .to_vec();
    scope.run(&bmc, &args, &BTreeMap::new()).unwrap();
    let control = format!(
        "bmc_address={bmc},bmc_port=8000,bmc_username=admin,bmc_password=secret,redfish_scheme=http,redfish_system=/redfish/v1/Systems/n1"
    );
    xcat3(&["create", "n1", "mgt=redfish", "--control", &control]);
    xcat3(&["power", "n1", "on"]);
    let out = xcat3(&["power", "n1", "status"]);
    assert!(out.contains("n1: on"), "{out}");
    let out = xcat3(&["list"]);
    assert!(out.contains("n1") && !out.contains("secret"), "{out}");
}
