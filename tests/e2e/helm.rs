//! The Helm chart (`deploy/helm/xcat3`): `helm lint --strict`, `helm template` with the default,
//! HA and external values, every manifest validated against the Kubernetes 1.30 schemas
//! (kubernetes-validate --strict), and the chart's invariants checked on the rendered objects.

use std::path::PathBuf;

use serde_yaml::Value;

pub(crate) fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/xcat3")
}

fn tool(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests with scripts/test.sh, which installs it")
    })
}

fn helm(args: &[&str]) -> String {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(tool("XCAT3_TEST_HELM"))
        .args(args)
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Renders the chart with `values` (a file under the chart's ci/), validates it against the
/// Kubernetes schemas, and returns the objects.
fn render(values: Option<&str>) -> Vec<Value> {
    render_in("prov", values, &[])
}

/// Renders the chart in `namespace` with `values` and `--set` assignments, validates it, and
/// returns the objects.
pub(crate) fn render_in(namespace: &str, values: Option<&str>, sets: &[&str]) -> Vec<Value> {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    let mut args = vec![
        "template",
        "rel",
        chart,
        "--namespace",
        namespace,
        "--kube-version",
        "1.30.0",
    ];
    let file;
    if let Some(v) = values {
        file = format!("{chart}/ci/{v}");
        args.extend(["-f", &file]);
    }
    for set in sets {
        args.extend(["--set", set]);
    }
    let text = helm(&args);
    let rendered = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(rendered.path(), &text).unwrap();
    let out = std::process::Command::new(tool("XCAT3_TEST_KUBE_VALIDATE"))
        .args(["--strict", "-k", "1.30.0"])
        .arg(rendered.path())
        .output()
        .expect("run kubernetes-validate");
    assert!(
        out.status.success(),
        "kubernetes-validate ({values:?}): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn named<'a>(objects: &'a [Value], kind_: &str, suffix: &str) -> Option<&'a Value> {
    kind(objects, kind_).into_iter().find(|o| {
        o["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with(suffix))
    })
}

fn containers(workload: &Value) -> Vec<&Value> {
    workload["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .map(|s| s.iter().collect())
        .unwrap_or_default()
}

/// Invariants that hold for every set of values.
fn check_invariants(objects: &[Value]) {
    let workloads: Vec<&Value> = ["Deployment", "StatefulSet", "DaemonSet"]
        .iter()
        .flat_map(|k| kind(objects, k))
        .collect();
    assert!(!workloads.is_empty());
    for w in &workloads {
        let name = w["metadata"]["name"].as_str().unwrap_or("?");
        for c in containers(w) {
            assert!(
                c["readinessProbe"].is_mapping(),
                "{name}: no readiness probe"
            );
            assert!(
                c["resources"]["limits"].is_mapping() && c["resources"]["requests"].is_mapping(),
                "{name}: no resources"
            );
            let sc = &c["securityContext"];
            if name.ends_with("-network") {
                // The network agent is the one container that runs as root: it binds ports 53,
                // 67 and 69 and its sockets to interfaces. It keeps only those two capabilities.
                assert_eq!(
                    sc["capabilities"]["drop"],
                    serde_yaml::from_str::<Value>("[ALL]").unwrap(),
                    "{name}"
                );
                let added = format!("{:?}", sc["capabilities"]["add"]);
                assert!(
                    added.contains("NET_BIND_SERVICE")
                        && added.contains("NET_RAW")
                        && !added.contains("SYS_ADMIN"),
                    "{name}: {added}"
                );
            } else {
                assert_eq!(
                    sc["runAsNonRoot"],
                    Value::Bool(true),
                    "{name}: may run as root"
                );
            }
            assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{name}");
            // Secrets reach containers only through secretKeyRef, never as literal values.
            for env in c["env"].as_sequence().into_iter().flatten() {
                let var = env["name"].as_str().unwrap_or("");
                if var.contains("TOKEN") || var.contains("PASSWORD") || var.contains("DATABASE_URL")
                {
                    assert!(
                        env["valueFrom"]["secretKeyRef"].is_mapping(),
                        "{name}: {var} is not from a Secret"
                    );
                }
            }
        }
        let xcat3 = containers(w)
            .iter()
            .any(|c| c["image"].as_str().is_some_and(|i| i.contains("xcat3")));
        if xcat3 {
            for c in containers(w) {
                // gRPC services are probed over gRPC health (a TCP check with TLS); the network
                // agent over HTTP.
                let probe = &c["livenessProbe"];
                assert!(
                    probe["grpc"].is_mapping()
                        || probe["tcpSocket"].is_mapping()
                        || name.ends_with("-network") && probe["httpGet"].is_mapping(),
                    "{name}: no liveness probe"
                );
                assert_eq!(
                    c["securityContext"]["readOnlyRootFilesystem"],
                    Value::Bool(true),
                    "{name}"
                );
            }
        }
    }
    // No secret in a ConfigMap.
    for cm in kind(objects, "ConfigMap") {
        for (k, v) in cm["data"].as_mapping().into_iter().flatten() {
            let text = format!("{k:?}{v:?}").to_lowercase();
            assert!(
                !text.contains("token") && !text.contains("password"),
                "secret-looking data in a ConfigMap: {k:?}"
            );
        }
    }
    // Conductors: time to hand over on SIGTERM, a disruption budget, and each one advertises itself.
    let conductor = named(objects, "Deployment", "-conductor").expect("a conductor Deployment");
    let grace = conductor["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        grace >= 30,
        "grace period {grace}s is too short to hand shards over"
    );
    assert!(named(objects, "PodDisruptionBudget", "-conductor").is_some());
    let args = format!("{:?}", containers(conductor)[0]["args"]);
    assert!(args.contains("://$(POD_IP)"), "{args}");
    assert!(named(objects, "Service", "-api").is_some());
    // The image service keeps its trees on a volume it owns alone, and the api forwards imports.
    let image = named(objects, "Deployment", "-image").expect("an image service Deployment");
    assert_eq!(image["spec"]["replicas"], Value::from(1));
    assert_eq!(image["spec"]["strategy"]["type"].as_str(), Some("Recreate"));
    let volumes = format!("{:?}", image["spec"]["template"]["spec"]["volumes"]);
    assert!(volumes.contains("persistentVolumeClaim"), "{volumes}");
    assert!(named(objects, "PersistentVolumeClaim", "-images").is_some());
    let http = named(objects, "Service", "-image").expect("an image Service");
    assert!(format!("{:?}", http["spec"]["ports"]).contains("8090"));
    let api = named(objects, "Deployment", "-api").unwrap();
    let api_args = format!("{:?}", containers(api)[0]["args"]);
    assert!(api_args.contains("--image-grpc=http"), "{api_args}");
    // The network agent answers DHCP on the hosts' interfaces and needs no database.
    let agent = named(objects, "DaemonSet", "-network").expect("a network agent DaemonSet");
    let spec = &agent["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], Value::Bool(true));
    assert_eq!(spec["dnsPolicy"].as_str(), Some("ClusterFirstWithHostNet"));
    let env = format!("{:?}", containers(agent)[0]["env"]);
    assert!(
        !env.contains("DATABASE_URL") && !env.contains("ETCD"),
        "{env}"
    );
    // ... nor the admin token: its own token may only follow the boot table.
    assert!(
        env.contains("XCAT3_AGENT_TOKEN") && env.contains("agent-token"),
        "{env}"
    );
    assert!(
        !env.contains("XCAT3_ADMIN_TOKEN") && !env.contains("admin-token"),
        "{env}"
    );
    let api_env = format!("{:?}", containers(api)[0]["env"]);
    assert!(api_env.contains("agent-token"), "{api_env}");
}

#[test]
fn the_chart_lints_renders_validates_and_keeps_its_invariants() {
    let chart = chart();
    helm(&["lint", "--strict", chart.to_str().unwrap()]);

    let default = render(None);
    check_invariants(&default);
    assert!(
        named(&default, "StatefulSet", "-etcd").is_some(),
        "bundled etcd by default"
    );
    assert!(
        named(&default, "StatefulSet", "-postgresql").is_some(),
        "bundled PostgreSQL by default"
    );
    assert_eq!(
        kind(&default, "Secret").len(),
        2,
        "the generated token and database secrets"
    );

    let ha = render(Some("ha-values.yaml"));
    check_invariants(&ha);
    let api_args = format!(
        "{:?}",
        containers(named(&ha, "Deployment", "-api").unwrap())[0]["args"]
    );
    assert!(
        api_args.contains("--image-url=http://10.0.0.5:8090"),
        "{api_args}"
    );
    let default_args = format!(
        "{:?}",
        containers(named(&default, "Deployment", "-api").unwrap())[0]["args"]
    );
    assert!(
        !default_args.contains("--image-url"),
        "no base URL, no deploys: {default_args}"
    );
    let conductor = named(&ha, "Deployment", "-conductor").unwrap();
    assert_eq!(conductor["spec"]["replicas"], Value::from(4));
    let etcd = named(&ha, "StatefulSet", "-etcd").unwrap();
    assert_eq!(etcd["spec"]["replicas"], Value::from(3));
    let cmd = format!("{:?}", containers(etcd)[0]["command"]);
    assert_eq!(
        cmd.matches(":2380").count(),
        3 + 2,
        "three members in --initial-cluster: {cmd}"
    );

    let external = render(Some("external-values.yaml"));
    check_invariants(&external);
    // Autoscaled conductors: the api may get and patch that one Deployment's scale, and the
    // chart leaves the replica count to it.
    let api = named(&external, "Deployment", "-api").unwrap();
    let args = format!("{:?}", containers(api)[0]["args"]);
    for want in [
        "--scale-conductors=rel-xcat3-conductor",
        "--nodes-per-conductor=1000",
        "--max-conductors=32",
    ] {
        assert!(args.contains(want), "{want}: {args}");
    }
    let pod = &api["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"].as_str(), Some("rel-xcat3-api"));
    let role = named(&external, "Role", "-conductor-scaler").expect("a scaler Role");
    let rules = format!("{:?}", role["rules"]);
    assert!(
        rules.contains("deployments/scale") && rules.contains("rel-xcat3-conductor"),
        "{rules}"
    );
    let verbs: Vec<&str> = role["rules"][0]["verbs"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(verbs, ["get", "patch"]);
    assert!(named(&external, "RoleBinding", "-conductor-scaler").is_some());
    let conductor = named(&external, "Deployment", "-conductor").unwrap();
    assert!(
        conductor["spec"]["replicas"].is_null(),
        "the chart would undo the scaler"
    );
    let api_default = named(&default, "Deployment", "-api").unwrap();
    assert_eq!(
        api_default["spec"]["template"]["spec"]["automountServiceAccountToken"],
        Value::Bool(false),
        "no Kubernetes credentials without the scaler"
    );
    assert!(kind(&default, "Role").is_empty());
    assert!(
        kind(&external, "StatefulSet").is_empty(),
        "nothing bundled with external etcd and PostgreSQL"
    );
    assert!(
        kind(&external, "Secret").is_empty(),
        "the operator's secrets are used"
    );
    let env = format!(
        "{:?}",
        containers(named(&external, "Deployment", "-api").unwrap())[0]["env"]
    );
    assert!(
        env.contains("xcat3-tokens") && env.contains("xcat3-database"),
        "{env}"
    );
    assert!(
        env.contains("https://etcd-a.example:2379,https://etcd-b.example:2379"),
        "{env}"
    );

    // TLS: every gRPC URL is https://, internal listeners want client certificates, probes are
    // TCP (the kubelet's gRPC probe has no TLS), etcd gets its user, password and CA, and the
    // DaemonSet's hosts get the CA alone, never the service key.
    assert!(env.contains("XCAT3_TLS_CERT") && env.contains("XCAT3_CONDUCTOR_TLS_NAME"));
    assert!(
        !env.contains("XCAT3_TLS_CLIENT_CA"),
        "people reach the api with tokens"
    );
    assert!(
        env.contains("xcat3-etcd-auth") && env.contains("XCAT3_ETCD_CA"),
        "{env}"
    );
    for (kind_, suffix) in [("Deployment", "-conductor"), ("Deployment", "-image")] {
        let c = &containers(named(&external, kind_, suffix).unwrap())[0];
        let env = format!("{:?}", c["env"]);
        assert!(env.contains("XCAT3_TLS_CLIENT_CA"), "{suffix}: {env}");
        assert!(c["readinessProbe"]["tcpSocket"].is_mapping(), "{suffix}");
    }
    let conductor_args = format!("{:?}", containers(conductor)[0]["args"]);
    assert!(
        conductor_args.contains("--advertise=https://$(POD_IP)"),
        "{conductor_args}"
    );
    assert!(
        args.contains("--image-grpc=https://rel-xcat3-image"),
        "{args}"
    );
    let agent = named(&external, "DaemonSet", "-network").unwrap();
    let agent_spec = format!("{:?}", agent["spec"]["template"]["spec"]);
    assert!(
        agent_spec.contains("--api-url=https://rel-xcat3-api"),
        "{agent_spec}"
    );
    assert!(agent_spec.contains("XCAT3_TLS_CA") && !agent_spec.contains("tls.key"));
    assert!(!agent_spec.contains("XCAT3_TLS_KEY"), "{agent_spec}");
    // The secrets key reaches every service that reads the database, never the agents.
    for suffix in ["-api", "-conductor", "-image"] {
        let c = format!(
            "{:?}",
            containers(named(&external, "Deployment", suffix).unwrap())[0]
        );
        assert!(
            c.contains("XCAT3_SECRETS_KEY_FILE") && c.contains("XCAT3_SECRETS_PREVIOUS_KEY_FILES"),
            "{suffix}: {c}"
        );
    }
    assert!(!agent_spec.contains("secrets-key"), "{agent_spec}");
    let default_api = format!("{:?}", containers(api_default)[0]);
    assert!(!default_api.contains("XCAT3_TLS"), "TLS is off by default");
    assert!(
        !default_api.contains("XCAT3_SECRETS_KEY"),
        "no key unless the operator gives one"
    );
}
