//! Power and boot-device control through the all-in-one server's conductor, against OpenIPMI's
//! ipmi_sim BMC simulator driven by the real ipmitool.

use xcat3_tests::{Backend, ServerOptions, TestBmc, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_power_and_boot_device_through_the_conductor() {
    let bmc = TestBmc::start().await.unwrap();
    let s = TestServer::start(Backend::Sqlite).await;
    s.cli(&["create", "bmc1", "mgt=ipmi", "--control", &bmc.control()])
        .await
        .ok();
    s.cli(&["create", "plain1"]).await.ok();

    let out = s.cli(&["power", "bmc1", "on"]).await.ok();
    assert!(out.stdout.contains("bmc1: on"), "{out:?}");
    assert!(bmc.is_on(), "the simulated chassis was not switched on");
    let out = s.cli(&["power", "bmc1", "status"]).await.ok();
    assert!(out.stdout.contains("bmc1: on"), "{out:?}");
    let out = s.cli(&["bootdev", "bmc1", "net"]).await.ok();
    assert!(out.stdout.contains("bmc1: net"), "{out:?}");
    assert_eq!(bmc.boot(), "pxe");
    let out = s.cli(&["bootdev", "bmc1", "status"]).await.ok();
    assert!(out.stdout.contains("bmc1: net"), "{out:?}");
    let out = s.cli(&["power", "bmc1", "off"]).await.ok();
    assert!(out.stdout.contains("bmc1: off"), "{out:?}");
    assert!(!bmc.is_on());

    // One result per node, the unmanageable ones with the field at fault.
    let out = s.cli(&["power", "bmc1,plain1,ghost", "status"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("bmc1: off"), "{out:?}");
    assert!(
        out.stdout
            .contains("plain1: Error: mgt: the node has no management driver"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("ghost: Error: name: no such node"),
        "{out:?}"
    );
    assert!(out.stdout.contains("Success: 1 Total: 3"), "{out:?}");

    // What happened is in the node's history and its state.
    let out = s.cli(&["events", "bmc1"]).await.ok();
    for want in [
        "power on: now on",
        "next boot from net",
        "power off: now off",
    ] {
        assert!(out.stdout.contains(want), "{want} missing: {out:?}");
    }
    let out = s.cli(&["show", "bmc1", "-o", "json"]).await.ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["nodes"][0]["power_state"], "off");
    assert!(
        !v["nodes"][0]["conductor"].as_str().unwrap().is_empty(),
        "{v}"
    );
    let out = s.cli(&["conductor-list"]).await.ok();
    assert!(
        out.stdout.contains(" 64 "),
        "one conductor owns all 64 shards: {out:?}"
    );
    assert!(
        !s.log().contains(TestBmc::PASSWORD),
        "the BMC password was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_a_dead_bmc_fails_only_its_node() {
    let bmc = TestBmc::start().await.unwrap();
    let opts = ServerOptions {
        extra_args: vec!["--operation-timeout-secs".into(), "3".into()],
        ..Default::default()
    };
    let s = TestServer::start_with(Backend::Sqlite, opts).await.unwrap();
    s.cli(&["create", "good", "mgt=ipmi", "--control", &bmc.control()])
        .await
        .ok();
    let wrong = bmc.control().replace(TestBmc::PASSWORD, "wrong-password");
    s.cli(&["create", "badpw", "mgt=ipmi", "--control", &wrong])
        .await
        .ok();
    // Nothing listens on port 9 of loopback (discard is not running): the BMC never answers.
    s.cli(&[
        "create",
        "dead",
        "mgt=ipmi",
        "--control",
        "bmc_address=127.0.0.1,bmc_port=9,bmc_username=admin,bmc_password=x",
    ])
    .await
    .ok();
    let out = s.cli(&["power", "good,badpw,dead", "status"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("good: off"), "{out:?}");
    assert!(
        out.stdout.contains("badpw: Error: BMC 127.0.0.1:"),
        "{out:?}"
    );
    assert!(out.stdout.contains("dead: Error:"), "{out:?}");
    assert!(out.stdout.contains("Success: 1 Total: 3"), "{out:?}");
    let out = s.cli(&["events", "dead"]).await.ok();
    assert!(out.stdout.contains("power status failed"), "{out:?}");
}
