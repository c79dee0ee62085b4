//! Credentials on the wire: TLS between the CLI, the api, conductors and agents, and etcd with
//! authentication and TLS.

use std::time::Duration;

use xcat3_tests::{TestBmc, TestCa, TestCluster, TestEtcd, bin, ready_field, spawn_ready};

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Whether `v` (the JSON of `conductor-list`) shows conductor `id` owning a shard.
fn owns_shards(v: &serde_json::Value, id: &str) -> bool {
    match v {
        serde_json::Value::Array(a) => a.iter().any(|x| owns_shards(x, id)),
        serde_json::Value::Object(o) => {
            (o.get("id").and_then(|i| i.as_str()) == Some(id)
                && o.get("shards")
                    .and_then(|s| s.as_array())
                    .is_some_and(|s| !s.is_empty()))
                || o.values().any(|x| owns_shards(x, id))
        }
        _ => false,
    }
}

/// Waits until the api sees conductor `id` owning shards: a conductor says it is ready before it
/// has joined, and a call in between finds no owner.
async fn wait_owner(cluster: &TestCluster, env: &[(&str, &str)], id: &str) {
    xcat3_tests::wait_for(Duration::from_secs(30), id, || async {
        let out = cluster.cli(&["conductor-list", "-o", "json"], env).await;
        let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        owns_shards(&v, id).then_some(())
    })
    .await
    .unwrap();
}

/// The api speaks TLS to the CLI and agents, calls only conductors whose certificate comes from
/// its CA (mutual TLS), and never calls, so never sends its token to, a plain or forged one.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_goes_over_tls_and_the_token_only_to_verified_conductors() {
    let ca = TestCa::new().unwrap();
    let (api_cert, api_key) = ca.issue("api", "IP:127.0.0.1,DNS:xcat3-api").unwrap();
    let (cond_cert, cond_key) = ca.issue("conductor", "DNS:xcat3-conductor").unwrap();
    let ca_pem = ca.ca();
    let conductor_tls = [
        "--power-sync-interval-secs",
        "0",
        "--tls-cert",
        path(&cond_cert),
        "--tls-key",
        path(&cond_key),
        "--tls-client-ca",
        path(&ca_pem),
    ];
    let mut cluster = TestCluster::start_with_api(
        1,
        3,
        &conductor_tls,
        &[
            "--tls-cert",
            path(&api_cert),
            "--tls-key",
            path(&api_key),
            "--tls-ca",
            path(&ca_pem),
            "--conductor-tls-name",
            "xcat3-conductor",
        ],
    )
    .await
    .unwrap();
    let https = format!("https://{}", cluster.api);
    let tls_env = [("XCAT3_URL", https.as_str()), ("XCAT3_CA", path(&ca_pem))];

    // The CLI over https, verified; power through a conductor reached over mutual TLS.
    let bmc = TestBmc::start().await.unwrap();
    cluster
        .cli(
            &["create", "n1", "mgt=ipmi", "--control", &bmc.control()],
            &tls_env,
        )
        .await
        .ok();
    let out = cluster.cli(&["power", "n1", "on"], &tls_env).await.ok();
    assert!(out.stdout.contains("n1: on"), "{out:?}");
    assert!(bmc.is_on());

    // Plain gRPC to the TLS listener fails; https without a CA is refused before connecting;
    // a CA that did not sign the api's certificate fails the handshake.
    let out = cluster.cli(&["list"], &[]).await;
    assert_ne!(out.code, 0, "{out:?}");
    let out = cluster.cli(&["list"], &[("XCAT3_URL", &https)]).await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("XCAT3_CA"), "{out:?}");
    // Through a port-forward the address is not the certificate's name: it is named instead.
    let named = [("XCAT3_SERVER_NAME", "xcat3-api")];
    cluster
        .cli(&["list"], &[&tls_env[..], &named].concat())
        .await
        .ok();
    let wrong = [("XCAT3_SERVER_NAME", "xcat3-other")];
    let out = cluster
        .cli(&["list"], &[&tls_env[..], &wrong].concat())
        .await;
    assert_ne!(out.code, 0, "{out:?}");
    let other = TestCa::new().unwrap();
    let out = cluster
        .cli(
            &["list"],
            &[("XCAT3_URL", &https), ("XCAT3_CA", path(&other.ca()))],
        )
        .await;
    assert_ne!(out.code, 0, "{out:?}");

    // A conductor without a client certificate from the CA cannot be called by others: a
    // direct call without one fails, whatever the token.
    let c0 = cluster.conductor_addrs[0].1.clone();
    let endpoint = tonic::transport::Endpoint::from_shared(c0.clone())
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(
                    std::fs::read(&ca_pem).unwrap(),
                ))
                .domain_name("xcat3-conductor"),
        )
        .unwrap();
    let refused = match endpoint.connect().await {
        Err(_) => true,
        Ok(channel) => {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .is_err()
        }
    };
    assert!(
        refused,
        "a conductor answered a caller without a client certificate"
    );

    // A conductor on plain http:// is never called (the api would hand it its token).
    cluster.stop_conductor("c0").await.unwrap();
    cluster
        .add_conductor("plain", &["--power-sync-interval-secs", "0"])
        .await
        .unwrap();
    wait_owner(&cluster, &tls_env, "plain").await;
    let out = cluster.cli(&["power", "n1", "status"], &tls_env).await;
    assert!(out.stdout.contains("n1: Error:"), "{out:?}");
    assert!(out.stdout.contains("not https://"), "{out:?}");
    // Nor one whose certificate comes from another CA, even with the right name.
    cluster.stop_conductor("plain").await.unwrap();
    let (forged, forged_key) = other.issue("forged", "DNS:xcat3-conductor").unwrap();
    cluster
        .add_conductor(
            "forged",
            &[
                "--power-sync-interval-secs",
                "0",
                "--tls-cert",
                path(&forged),
                "--tls-key",
                path(&forged_key),
            ],
        )
        .await
        .unwrap();
    wait_owner(&cluster, &tls_env, "forged").await;
    let out = cluster.cli(&["power", "n1", "status"], &tls_env).await;
    assert!(out.stdout.contains("n1: Error:"), "{out:?}");
    assert!(!out.stdout.contains("n1: on"), "{out:?}");

    // A network agent follows the boot table over TLS.
    let dir = tempfile::tempdir().unwrap();
    let (_agent, ready) = xcat3_tests::loopback_agent_of(
        &https,
        xcat3_tests::CLUSTER_TOKEN,
        dir.path(),
        &["--tls-ca", path(&ca_pem)],
    )
    .await;
    cluster
        .cli(
            &["create", "pxe1", "--nic", "mac=52:54:00:ab:00:07"],
            &tls_env,
        )
        .await
        .ok();
    let http = ready_field(&ready, "http=").unwrap();
    xcat3_tests::wait_for_script(
        &format!("http://{http}/boot/52:54:00:ab:00:07.ipxe"),
        "pxe1 boots from its local disk",
    )
    .await;
}

/// A conductor reaches an etcd that has authentication on and speaks TLS only: with the user's
/// password from a file and the CA, it joins; with a wrong password, no CA, or no user, it
/// stops at start with a clear reason. The password never shows in its log.
#[tokio::test(flavor = "multi_thread")]
async fn conductors_log_in_to_etcd_over_tls() {
    const PASSWORD: &str = "etcd-password-for-tests-42";
    let ca = TestCa::new().unwrap();
    let (cert, key) = ca.issue("etcd", "IP:127.0.0.1").unwrap();
    let etcd = TestEtcd::start_tls(&cert, &key, &ca.ca()).await.unwrap();
    for args in [
        vec!["user", "add", "root:root-password-for-tests"],
        vec!["role", "add", "xcat3"],
        vec![
            "role",
            "grant-permission",
            "xcat3",
            "--prefix=true",
            "readwrite",
            "/xcat3",
        ],
        vec!["user", "add", &format!("xcat3:{PASSWORD}")],
        vec!["user", "grant-role", "xcat3", "xcat3"],
        vec!["auth", "enable"],
    ] {
        let out = etcd.etcdctl(&args).await.unwrap();
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("etcd.password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let wrong_file = dir.path().join("wrong.password");
    std::fs::write(&wrong_file, "not-the-password").unwrap();
    let database = format!("sqlite://{}/c.db?mode=rwc", dir.path().display());
    let conductor = |name: &str, extra: &[&str]| {
        let log = dir.path().join(format!("{name}.log"));
        let mut cmd = tokio::process::Command::new(bin("xcat3-server"));
        cmd.args(["conductor", "--id", name, "--listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "none", "--database-url", &database])
            .args(["--etcd-endpoints", &etcd.endpoint])
            .args(extra)
            .env("XCAT3_ADMIN_TOKEN", xcat3_tests::CLUSTER_TOKEN)
            .env("RUST_LOG", "debug")
            .stdin(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        (cmd, log)
    };
    let ca_pem = ca.ca();
    let ca_flag = ["--etcd-ca", path(&ca_pem)];

    let (cmd, log) = conductor(
        "good",
        &[
            ca_flag[0],
            ca_flag[1],
            "--etcd-user",
            "xcat3",
            "--etcd-password-file",
            path(&password_file),
        ],
    );
    let (_good, _) = spawn_ready(cmd, "xcat3 conductor ready", &log)
        .await
        .unwrap();
    let members = etcd
        .etcdctl(&[
            "--user=root:root-password-for-tests",
            "get",
            "--prefix",
            "--keys-only",
            "/xcat3/members/",
        ])
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&members.stdout).contains("/xcat3/members/good"),
        "{members:?}"
    );
    assert!(!std::fs::read_to_string(&log).unwrap().contains(PASSWORD));

    for (name, extra, reason) in [
        (
            "wrong",
            vec![
                ca_flag[0],
                ca_flag[1],
                "--etcd-user",
                "xcat3",
                "--etcd-password-file",
                path(&wrong_file),
            ],
            "authentication failed",
        ),
        ("nouser", vec![ca_flag[0], ca_flag[1]], "user name is empty"),
        (
            "noca",
            vec![
                "--etcd-user",
                "xcat3",
                "--etcd-password-file",
                path(&password_file),
            ],
            "--etcd-ca",
        ),
    ] {
        let (mut cmd, log) = conductor(name, &extra);
        let status = tokio::time::timeout(Duration::from_secs(60), cmd.status())
            .await
            .unwrap()
            .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!status.success(), "{name}: {text}");
        assert!(text.contains(reason), "{name}: {text}");
        assert!(!text.contains(PASSWORD), "{name}: the password was logged");
    }
}

/// The all-in-one server speaks TLS on its api listener, while its own network agent follows
/// the boot table over plain loopback (the certificate need not name 127.0.0.1).
#[tokio::test(flavor = "multi_thread")]
async fn the_all_in_one_server_speaks_tls_to_its_clients() {
    let ca = TestCa::new().unwrap();
    let (cert, key) = ca.issue("aio", "DNS:xcat3-aio").unwrap();
    let http_port = xcat3_tests::free_port();
    let http = format!("127.0.0.1:{http_port}");
    let opts = xcat3_tests::ServerOptions {
        network_agent: true,
        extra_args: [
            "--tls-cert",
            path(&cert),
            "--tls-key",
            path(&key),
            "--no-dhcp",
            "--tftp-listen",
            "none",
            "--dns-listen",
            "none",
            "--ipxe-dir",
            "none",
            "--http-listen",
            &http,
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    };
    let s = xcat3_tests::TestServer::start_with(xcat3_tests::Backend::Sqlite, opts)
        .await
        .unwrap();
    let https = format!("https://{}", s.addr);
    let ca_pem = ca.ca();
    let tls_env = [
        ("XCAT3_URL", https.as_str()),
        ("XCAT3_CA", path(&ca_pem)),
        ("XCAT3_SERVER_NAME", "xcat3-aio"),
    ];
    s.cli_env(
        &["create", "n1", "--nic", "mac=52:54:00:ab:00:09"],
        &tls_env,
    )
    .await
    .ok();
    assert_ne!(
        s.cli(&["list"]).await.code,
        0,
        "plain gRPC to a TLS listener"
    );
    xcat3_tests::wait_for_script(
        &format!("http://{http}/boot/52:54:00:ab:00:09.ipxe"),
        "n1 boots from its local disk",
    )
    .await;
}
