//! Authentication, secrets that never leak, health, reflection and metrics.

use xcat3_proto::pb;
use xcat3_tests::{Backend, ServerOptions, TestServer, bin, collect_results, get_all};

const READONLY: &str = "readonly-token-for-tests-0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_decide_what_a_caller_may_do() {
    let opts = ServerOptions {
        env: vec![("XCAT3_READONLY_TOKEN".into(), READONLY.into())],
        ..Default::default()
    };
    let s = TestServer::start_with(Backend::Sqlite, opts).await.unwrap();
    let list = pb::ListNetworksRequest {};
    for token in [None, Some("wrong-token")] {
        let mut client =
            pb::network_service_client::NetworkServiceClient::new(s.authed(token).await);
        let err = client.list_networks(list).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{token:?}");
    }
    let mut ro =
        pb::network_service_client::NetworkServiceClient::new(s.authed(Some(READONLY)).await);
    ro.list_networks(list).await.unwrap();
    let err = ro
        .create_network(pb::Network {
            name: "n".into(),
            subnet: "10.0.0.0".into(),
            netmask: "255.0.0.0".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let mut ro_nodes =
        pb::node_service_client::NodeServiceClient::new(s.authed(Some(READONLY)).await);
    let err = ro_nodes
        .delete_nodes(pb::DeleteNodesRequest {
            noderange: "all".into(),
            all_or_nothing: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // The CLI with the read-only token can list but not create.
    let out = s
        .cli_env(&["network-list"], &[("XCAT3_TOKEN", READONLY)])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let out = s
        .cli_env(&["create", "n1"], &[("XCAT3_TOKEN", READONLY)])
        .await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("PermissionDenied"), "{out:?}");
    // Secrets in clear are for the admin token only.
    let out = s
        .cli_env(
            &["export", "all", "--with-secrets", "-o", "ro.yaml"],
            &[("XCAT3_TOKEN", READONLY)],
        )
        .await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("PermissionDenied"), "{out:?}");
    assert!(!s.dir().join("ro.yaml").exists());
    let out = s.cli_env(&["list"], &[("XCAT3_TOKEN", "")]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("Unauthenticated"), "{out:?}");
    assert!(!s.log().contains(&s.token), "the admin token was logged");
    assert!(
        !s.log().contains(READONLY),
        "the read-only token was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_stored_but_never_returned_or_logged() {
    let s = TestServer::start(Backend::Sqlite).await;
    let sentinel = "S3cr3t-sentinel-98765";
    let node = pb::Node {
        name: "bmc1".into(),
        mgt: "ipmi".into(),
        control: [
            ("bmc_password".to_owned(), sentinel.to_owned()),
            ("bmc_address".to_owned(), "10.0.0.1".to_owned()),
        ]
        .into(),
        ..Default::default()
    };
    let stream = s
        .nodes()
        .await
        .create_nodes(pb::CreateNodesRequest {
            nodes: vec![node],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    collect_results(stream).await.unwrap();
    s.cli(&["update", "bmc1", &format!("control/bmc_kg_key={sentinel}")])
        .await
        .ok();
    s.cli(&["passwd-create", "system", &format!("password={sentinel}")])
        .await
        .ok();
    let (nodes, _) = get_all(&s, "bmc1").await;
    assert_eq!(nodes[0].control["bmc_password"], "******");
    assert_eq!(nodes[0].control["bmc_kg_key"], "******");
    for args in [
        vec!["show", "bmc1"],
        vec!["show", "bmc1", "-o", "json"],
        vec!["list", "-o", "yaml"],
        vec!["passwd-list", "-o", "json"],
    ] {
        let out = s.cli(&args).await.ok();
        assert!(
            !out.stdout.contains(sentinel),
            "{args:?} printed the secret"
        );
    }
    s.cli(&["export", "bmc1", "-o", "export.yaml"]).await.ok();
    let exported = std::fs::read_to_string(s.dir().join("export.yaml")).unwrap();
    assert!(!exported.contains(sentinel) && exported.contains("******"));
    // A backup with secrets holds them, in a file only its owner can read; the log says who
    // asked, never what.
    s.cli(&["export", "bmc1", "--with-secrets", "-o", "backup.yaml"])
        .await
        .ok();
    let backup = s.dir().join("backup.yaml");
    assert!(std::fs::read_to_string(&backup).unwrap().contains(sentinel));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert!(s.log().contains("export nodes with their secrets"));
    // Stored: the database file holds it (the conductor needs it), the log never does.
    let db = std::fs::read(s.dir().join("xcat3.db")).unwrap_or_default();
    let wal = std::fs::read(s.dir().join("xcat3.db-wal")).unwrap_or_default();
    let stored = [db, wal].concat();
    assert!(
        stored
            .windows(sentinel.len())
            .any(|w| w == sentinel.as_bytes()),
        "the BMC password was not stored"
    );
    assert!(!s.log().contains(sentinel), "a secret was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_metrics_need_no_token() {
    let s = TestServer::start(Backend::Sqlite).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(s.authed(None).await);
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "xcat3.v1.NodeService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(s.authed(None).await);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        replies.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "xcat3.v1.NodeService",
        "xcat3.v1.NetworkService",
        "xcat3.v1.PasswdService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }

    s.cli(&["list"]).await.ok();
    s.cli(&["network-list"]).await.ok();
    let text = s.metrics_text().await;
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    assert!(
        text.contains(r#"xcat3_grpc_requests_total{service="xcat3.v1.NodeService",method="GetNodes",code="Ok"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"xcat3_grpc_request_duration_seconds_count{service="xcat3.v1.NetworkService",method="ListNetworks"} 1"#), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_mode_warns_and_the_api_role_wants_a_token() {
    let opts = ServerOptions {
        extra_args: vec!["--insecure".into()],
        ..Default::default()
    };
    let s = TestServer::start_with(Backend::Sqlite, opts).await.unwrap();
    let mut nets = pb::network_service_client::NetworkServiceClient::new(s.authed(None).await);
    nets.list_networks(pb::ListNetworksRequest {})
        .await
        .unwrap();
    assert!(s.log().contains("--insecure"), "no warning in the log");

    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(bin("xcat3-server"))
        .args([
            "api",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "none",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("XCAT3_ADMIN_TOKEN")
        .env_remove("XCAT3_READONLY_TOKEN")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no token configured"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_when_an_endpoint_is_set() {
    let mut otlp = xcat3_tests::otlp::Receiver::start().await;
    let opts = ServerOptions {
        env: otlp.env(),
        ..Default::default()
    };
    let s = TestServer::start_with(Backend::Sqlite, opts).await.unwrap();
    s.cli(&["network-list"]).await.ok();
    let wanted = "/xcat3.v1.NetworkService/ListNetworks";
    let has = |spans: &[(String, opentelemetry_proto::tonic::trace::v1::Span)]| {
        spans.iter().any(|(_, s)| s.name == wanted)
    };
    let spans = otlp.collect(std::time::Duration::from_secs(30), has).await;
    let service = spans
        .iter()
        .find(|(_, s)| s.name == wanted)
        .map(|(service, _)| service.clone())
        .expect("no span for the call reached the collector within 30 s");
    assert!(service.contains("xcat3-server"), "service.name: {service}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_and_calls_through_reflection() {
    let grpcurl = std::env::var("XCAT3_TEST_GRPCURL").expect(
        "XCAT3_TEST_GRPCURL is not set: run the tests with scripts/test.sh, which installs grpcurl",
    );
    let s = TestServer::start(Backend::Sqlite).await;
    let addr = s.addr.to_string();
    let auth = format!("authorization: Bearer {}", s.token);
    let run = |args: Vec<String>| {
        let grpcurl = grpcurl.clone();
        async move {
            let out = tokio::process::Command::new(&grpcurl)
                .args(&args)
                .output()
                .await
                .expect("run grpcurl");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        }
    };
    let (ok, text) = run(vec!["-plaintext".into(), addr.clone(), "list".into()]).await;
    // Exactly what the api port serves: not the conductors' internal service.
    let mut listed: Vec<&str> = text.lines().map(str::trim).collect();
    listed.sort_unstable();
    assert!(ok, "{text}");
    assert_eq!(
        listed,
        [
            "grpc.health.v1.Health",
            "xcat3.internal.v1.NetbootConfig",
            "xcat3.v1.ConductorService",
            "xcat3.v1.ImageService",
            "xcat3.v1.NetworkService",
            "xcat3.v1.NodeService",
            "xcat3.v1.OsImageService",
            "xcat3.v1.PasswdService",
            "xcat3.v1.ServiceRegistry",
        ],
        "{text}"
    );
    let (ok, text) = run(vec![
        "-plaintext".into(),
        addr.clone(),
        "describe".into(),
        "xcat3.v1.Node".into(),
    ])
    .await;
    assert!(ok && text.contains("provision_state"), "{text}");
    let body = r#"{"name":"c1","subnet":"10.0.0.0","netmask":"255.0.0.0"}"#;
    let (ok, text) = run(vec![
        "-plaintext".into(),
        "-H".into(),
        auth.clone(),
        "-d".into(),
        body.into(),
        addr.clone(),
        "xcat3.v1.NetworkService/CreateNetwork".into(),
    ])
    .await;
    assert!(ok && text.contains("\"subnet\": \"10.0.0.0\""), "{text}");
    let (ok, text) = run(vec![
        "-plaintext".into(),
        addr.clone(),
        "xcat3.v1.NetworkService/ListNetworks".into(),
    ])
    .await;
    assert!(!ok && text.contains("Unauthenticated"), "{text}");
    let body = r#"{"noderange":"n[1-2]","template":{"mgt":"ipmi"}}"#;
    let (ok, text) = run(vec![
        "-plaintext".into(),
        "-H".into(),
        auth,
        "-d".into(),
        body.into(),
        addr,
        "xcat3.v1.NodeService/CreateNodes".into(),
    ])
    .await;
    assert!(
        ok && text.contains("\"ok\": \"created\"") && text.contains("n2"),
        "{text}"
    );
}

/// A many-node operation is one trace across services: the conductor's span for the api's call
/// is a child in the trace of the api's span for the client's call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_request_is_one_trace_from_the_api_to_the_conductor() {
    let mut otlp = xcat3_tests::otlp::Receiver::start().await;
    let opts = ServerOptions {
        env: otlp.env(),
        ..Default::default()
    };
    let s = TestServer::start_with(Backend::Sqlite, opts).await.unwrap();
    s.cli(&["create", "t1"]).await.ok();
    s.cli(&["power", "t1", "status"]).await;
    let api = "/xcat3.v1.NodeService/Power";
    let conductor = "/xcat3.internal.v1.Conductor/Power";
    let both = |spans: &[(String, opentelemetry_proto::tonic::trace::v1::Span)]| {
        [api, conductor]
            .iter()
            .all(|n| spans.iter().any(|(_, s)| s.name == *n))
    };
    let spans = otlp.collect(std::time::Duration::from_secs(30), both).await;
    let find = |name: &str| {
        spans
            .iter()
            .find(|(_, s)| s.name == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| panic!("no span {name}"))
    };
    let (a, c) = (find(api), find(conductor));
    assert_eq!(
        a.trace_id, c.trace_id,
        "the conductor's span is in another trace"
    );
    assert!(
        !c.parent_span_id.is_empty(),
        "the conductor's span has no parent"
    );
}

/// The mode bits of `path` (permissions only).
fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_at_rest_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt as _;
    // A data directory made by an earlier version, world-readable, with a world-readable database.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("xcat3.db"), b"").unwrap();
    std::fs::set_permissions(
        data.join("xcat3.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let opts = ServerOptions {
        data_dir: Some(data.clone()),
        ..Default::default()
    };
    let s = TestServer::start_with(Backend::Sqlite, opts).await.unwrap();
    s.cli(&[
        "create",
        "bmc1",
        "mgt=ipmi",
        "--control",
        "bmc_address=10.0.0.1,bmc_password=hidden-at-rest",
    ])
    .await
    .ok();
    assert_eq!(mode_of(&data), 0o700, "data directory");
    for file in ["xcat3.db", "xcat3.db-wal", "xcat3.db-shm", "admin.token"] {
        let path = data.join(file);
        if path.exists() {
            assert_eq!(mode_of(&path), 0o600, "{file}");
        } else {
            assert_ne!(file, "xcat3.db-wal", "the WAL exists while the server runs");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_stepped_back_does_not_lock_the_conductor_out() {
    let s = TestServer::start(Backend::Sqlite).await;
    s.cli(&["create", "n1"]).await.ok();
    let dir = s.dir().to_owned();
    let db = dir.join("xcat3.db");
    // The last run recorded epochs an hour ahead of this machine's clock (the clock was stepped
    // back since, or the VM was restored from a snapshot).
    let ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 3_600_000;
    let s = {
        let mut s = s;
        s.terminate().await.unwrap();
        let status = std::process::Command::new("python3")
            .args([
                "-c",
                "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
                 c.execute('UPDATE shards SET epoch=?', (int(sys.argv[2]),)); c.commit()",
            ])
            .arg(&db)
            .arg(ahead.to_string())
            .status()
            .unwrap();
        assert!(status.success());
        s.restart().await.expect("the server serves again")
    };
    let out = s.cli(&["list"]).await.ok();
    assert!(out.stdout.contains("n1"), "{out:?}");
    let out = s.cli(&["conductor-list", "-o", "json"]).await.ok();
    assert!(out.stdout.contains("\"shards\""), "{out:?}");
}

/// The network agents get their own token: enough to follow the boot table, nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_token_only_follows_the_boot_table() {
    const AGENT: &str = "agent-token-for-tests-0123456789";
    let opts = ServerOptions {
        env: vec![("XCAT3_AGENT_TOKEN".into(), AGENT.into())],
        ..Default::default()
    };
    let s = TestServer::start_with(Backend::Sqlite, opts).await.unwrap();
    s.cli(&["create", "n1", "--nic", "mac=52:54:00:ab:00:01"])
        .await
        .ok();
    for args in [vec!["list"], vec!["passwd-list"], vec!["create", "n2"]] {
        let out = s.cli_env(&args, &[("XCAT3_TOKEN", AGENT)]).await;
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert!(out.stderr.contains("PermissionDenied"), "{args:?}: {out:?}");
    }
    // An agent holding only that token follows the table and serves the node.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("agent.token");
    std::fs::write(&token_file, AGENT).unwrap();
    let (_agent, ready) = xcat3_tests::loopback_agent(
        &s,
        dir.path(),
        &["--api-token-file", token_file.to_str().unwrap()],
    )
    .await;
    let http = xcat3_tests::ready_field(&ready, "http=").unwrap();
    xcat3_tests::wait_for_script(
        &format!("http://{http}/boot/52:54:00:ab:00:01.ipxe"),
        "n1 boots from its local disk",
    )
    .await;
    assert!(!s.log().contains(AGENT), "the agent token was logged");
}

/// Contents of the SQLite database and its WAL, for looking for secrets in them.
fn database_bytes(dir: &std::path::Path) -> Vec<u8> {
    ["xcat3.db", "xcat3.db-wal"]
        .iter()
        .filter_map(|f| std::fs::read(dir.join(f)).ok())
        .flatten()
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// With `--secrets-key-file`, BMC passwords and credential hashes are sealed in the database: a
/// copied database holds none of them, a server without the key says so instead of using the
/// ciphertext, and a key is rotated with `reseal-secrets` while values written before any key
/// (plain) are sealed by it too.
#[tokio::test(flavor = "multi_thread")]
async fn a_copied_database_leaks_no_secret() {
    let keys = tempfile::tempdir().unwrap();
    let key_file = |name: &str, byte: &str| {
        let path = keys.path().join(name);
        std::fs::write(&path, byte.repeat(32)).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (k1, k2) = (key_file("k1", "a1"), key_file("k2", "b2"));
    let with_keys = |current: &str, previous: &[&str]| ServerOptions {
        extra_args: [
            vec!["--secrets-key-file".to_owned(), current.to_owned()],
            previous
                .iter()
                .flat_map(|p| ["--secrets-previous-key-files".to_owned(), p.to_string()])
                .collect(),
        ]
        .concat(),
        ..Default::default()
    };
    // Written before any key was configured: stored as given.
    let s = TestServer::start(Backend::Sqlite).await;
    let bmc = xcat3_tests::TestBmc::start().await.unwrap();
    s.cli(&["create", "old1", "mgt=ipmi", "--control", &bmc.control()])
        .await
        .ok();
    let password = xcat3_tests::TestBmc::PASSWORD;
    assert!(
        contains(&database_bytes(s.dir()), password),
        "the test's premise"
    );

    // With a key: new secrets are sealed, old plain ones still work, and reseal seals those.
    let s = s.restart_with(with_keys(&k1, &[])).await.unwrap();
    let dir = s.dir().to_owned();
    let bmc2 = xcat3_tests::TestBmc::start().await.unwrap();
    s.cli(&["create", "new1", "mgt=ipmi", "--control", &bmc2.control()])
        .await
        .ok();
    s.cli(&["passwd-create", "system", "password=root-password-77"])
        .await
        .ok();
    let out = s.cli(&["power", "old1,new1", "on"]).await.ok();
    assert!(
        out.stdout.contains("old1: on") && out.stdout.contains("new1: on"),
        "{out:?}"
    );
    let reseal = |args: Vec<String>| {
        let dir = dir.clone();
        async move {
            let out = tokio::process::Command::new(bin("xcat3-server"))
                .arg("reseal-secrets")
                .arg("--data-dir")
                .arg(&dir)
                .args(args)
                .output()
                .await
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let said = reseal(vec!["--secrets-key-file".into(), k1.clone()]).await;
    assert!(
        said.contains("resealed the secrets of 1 nodes and 0 credentials"),
        "{said}"
    );
    let said = reseal(vec!["--secrets-key-file".into(), k1.clone()]).await;
    assert!(said.contains("of 0 nodes and 0 credentials"), "{said}");

    // A fresh copy of the database (what a backup holds after a checkpoint): no password, no
    // crypt hash.
    let s = s.restart_with(with_keys(&k1, &[])).await.unwrap();
    let bmc3 = xcat3_tests::TestBmc::start().await.unwrap();
    s.cli(&["create", "new2", "mgt=ipmi", "--control", &bmc3.control()])
        .await
        .ok();
    let copy = database_bytes(s.dir());
    assert!(!contains(&copy, "$6$"), "a credential hash is readable");
    let sealed = copy
        .windows(b"xcat3:sealed:v1:".len())
        .filter(|w| *w == b"xcat3:sealed:v1:")
        .count();
    assert!(sealed >= 3, "{sealed} sealed values");

    // Without the key: the reason, never the ciphertext used as a password.
    let s = s.restart().await.unwrap();
    let out = s.cli(&["power", "new1", "status"]).await;
    assert_ne!(out.code, 0);
    assert!(format!("{out:?}").contains("--secrets-key-file"), "{out:?}");

    // Rotation: k2 current with k1 still readable, reseal, then k2 alone.
    let s = s.restart_with(with_keys(&k2, &[&k1])).await.unwrap();
    let out = s.cli(&["power", "new1,new2,old1", "status"]).await.ok();
    assert_eq!(out.stdout.matches(": on").count(), 2, "{out:?}");
    let said = reseal(vec![
        "--secrets-key-file".into(),
        k2.clone(),
        "--secrets-previous-key-files".into(),
        k1.clone(),
    ])
    .await;
    assert!(said.contains("of 3 nodes and 1 credentials"), "{said}");
    let s = s.restart_with(with_keys(&k2, &[])).await.unwrap();
    let out = s.cli(&["power", "new1,new2,old1", "status"]).await.ok();
    assert_eq!(out.stdout.matches("Error").count(), 0, "{out:?}");
    assert!(!s.log().contains(password), "a BMC password was logged");
}
