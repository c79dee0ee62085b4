//! Power and boot-device control through the all-in-one server's conductor, against OpenIPMI's
//! ipmi_sim BMC simulator driven by the real ipmitool.

use xcat3_tests::{Backend, ServerOptions, TestBmc, TestServer, wait_for};

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
    // Times read as dates: RFC 3339 in UTC for scripts, local date and time in the table.
    let json = s.cli(&["events", "bmc1", "-o", "json"]).await.ok();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let at = v[0]["at"].as_str().unwrap_or_default();
    assert!(
        at.len() == 20 && at.starts_with("20") && at.as_bytes()[10] == b'T' && at.ends_with('Z'),
        "{json:?}"
    );
    let first_row = out.stdout.lines().nth(1).unwrap_or_default();
    assert!(
        first_row.starts_with("20") && first_row.as_bytes().get(10) == Some(&b' '),
        "{out:?}"
    );
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

/// Runs `xcat3 power NODE status` until it answers `want` (the emulator applies power changes a
/// few seconds after accepting them, as real BMCs do).
async fn wait_power(s: &TestServer, node: &str, want: &str) {
    let line = format!("{node}: {want}");
    xcat3_tests::wait_for(
        std::time::Duration::from_secs(25),
        "the power state",
        || async {
            s.cli(&["power", node, "status"])
                .await
                .stdout
                .contains(&line)
                .then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_power_and_boot_device_against_sushy_tools() {
    let bmc = xcat3_tests::TestRedfish::start(false).await.unwrap();
    let s = TestServer::start(Backend::Sqlite).await;
    s.cli(&["create", "rf1", "mgt=redfish", "--control", &bmc.control()])
        .await
        .ok();
    let out = s.cli(&["power", "rf1", "status"]).await.ok();
    assert!(out.stdout.contains("rf1: off"), "{out:?}");
    let out = s.cli(&["power", "rf1", "on"]).await.ok();
    assert!(out.stdout.contains("rf1: on"), "{out:?}");
    wait_power(&s, "rf1", "on").await;
    s.cli(&["bootdev", "rf1", "net"]).await.ok();
    let out = s.cli(&["bootdev", "rf1", "status"]).await.ok();
    assert!(out.stdout.contains("rf1: net"), "{out:?}");
    s.cli(&["power", "rf1", "off"]).await.ok();
    wait_power(&s, "rf1", "off").await;
    // An explicit system path works too; a wrong password is the BMC's 401.
    s.cli(&[
        "update",
        "rf1",
        "control/redfish_system=/redfish/v1/Systems/27946b59-9e44-4fa7-8e91-f3527a1ef094",
    ])
    .await
    .ok();
    s.cli(&["power", "rf1", "status"]).await.ok();
    s.cli(&["update", "rf1", "control/bmc_password=wrong"])
        .await
        .ok();
    let out = s.cli(&["power", "rf1", "status"]).await;
    assert!(out.stdout.contains("HTTP 401"), "{out:?}");
    assert!(!s.log().contains(xcat3_tests::TestRedfish::PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_over_https_verifies_the_certificate_unless_told_otherwise() {
    let bmc = xcat3_tests::TestRedfish::start(true).await.unwrap();
    let s = TestServer::start(Backend::Sqlite).await;
    s.cli(&["create", "tls1", "mgt=redfish", "--control", &bmc.control()])
        .await
        .ok();
    let out = s.cli(&["power", "tls1", "status"]).await;
    assert_eq!(
        out.code, 1,
        "a self-signed certificate must not be trusted by default: {out:?}"
    );
    assert!(out.stdout.contains("tls1: Error: BMC 127.0.0.1"), "{out:?}");
    let ca = format!(
        "control/redfish_ca_file={}",
        bmc.cert.as_ref().unwrap().display()
    );
    s.cli(&["update", "tls1", &ca]).await.ok();
    let out = s.cli(&["power", "tls1", "status"]).await.ok();
    assert!(out.stdout.contains("tls1: off"), "{out:?}");
    s.cli(&[
        "update",
        "tls1",
        "control/redfish_ca_file=",
        "control/redfish_insecure=true",
    ])
    .await
    .ok();
    let out = s.cli(&["power", "tls1", "status"]).await.ok();
    assert!(out.stdout.contains("tls1: off"), "{out:?}");
}

/// mgt=kvm: ssh (a real sshd on loopback, key login, host key checked) to a hypervisor whose
/// `virsh` drives a real libvirtd (started by scripts/libvirt.sh in its own network namespace;
/// TCG domains, since KVM is unusable on these machines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvm_power_and_boot_device_over_ssh_and_libvirt() {
    let sshd = xcat3_tests::TestSshd::start().await.unwrap();
    let dom =
        xcat3_tests::TestDomain::define(&format!("xcat3-test-{}", std::process::id())).unwrap();
    let known_hosts = sshd.known_hosts.display().to_string();
    let opts = ServerOptions {
        extra_args: vec!["--ssh-known-hosts".into(), known_hosts],
        ..Default::default()
    };
    let s = TestServer::start_with(Backend::Sqlite, opts).await.unwrap();
    let control = format!(
        "ssh_address=127.0.0.1,ssh_port={},ssh_username=root,ssh_key_filename={},ssh_virt_type=virsh,domain={}",
        sshd.port,
        sshd.client_key.display(),
        dom.name
    );
    s.cli(&["create", "vm1", "mgt=kvm", "--control", &control])
        .await
        .ok();
    let out = s.cli(&["power", "vm1", "status"]).await.ok();
    assert!(out.stdout.contains("vm1: off"), "{out:?}");
    let out = s.cli(&["power", "vm1", "on"]).await.ok();
    assert!(out.stdout.contains("vm1: on"), "{out:?}");
    assert_eq!(dom.state(), "running");
    let out = s.cli(&["power", "vm1", "reset"]).await.ok();
    assert!(out.stdout.contains("vm1: on"), "{out:?}");
    let out = s.cli(&["bootdev", "vm1", "net"]).await.ok();
    assert!(out.stdout.contains("vm1: net"), "{out:?}");
    assert!(dom.xml().contains("<boot dev='network'/>"), "{}", dom.xml());
    let out = s.cli(&["bootdev", "vm1", "status"]).await.ok();
    assert!(out.stdout.contains("vm1: net"), "{out:?}");
    let out = s.cli(&["power", "vm1", "off"]).await.ok();
    assert!(out.stdout.contains("vm1: off"), "{out:?}");
    assert_eq!(dom.state(), "shut off");

    // A hypervisor whose host key is not known is refused.
    let empty = tempfile::NamedTempFile::new().unwrap();
    let opts = ServerOptions {
        extra_args: vec![
            "--ssh-known-hosts".into(),
            empty.path().display().to_string(),
        ],
        ..Default::default()
    };
    let strict = TestServer::start_with(Backend::Sqlite, opts).await.unwrap();
    strict
        .cli(&["create", "vm1", "mgt=kvm", "--control", &control])
        .await
        .ok();
    let out = strict.cli(&["power", "vm1", "status"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("vm1: Error: hypervisor 127.0.0.1"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_power_sync_records_drift() {
    let bmc = TestBmc::start().await.unwrap();
    let opts = ServerOptions {
        extra_args: vec!["--power-sync-interval-secs".into(), "1".into()],
        ..Default::default()
    };
    let s = TestServer::start_with(Backend::Sqlite, opts).await.unwrap();
    s.cli(&["create", "drift1", "mgt=ipmi", "--control", &bmc.control()])
        .await
        .ok();
    s.cli(&["power", "drift1", "status"]).await.ok();
    // Someone switches the machine on behind xcat3's back.
    let out = tokio::process::Command::new("ipmitool")
        .args([
            "-I",
            "lanplus",
            "-C",
            "3",
            "-H",
            "127.0.0.1",
            "-p",
            &bmc.port.to_string(),
            "-U",
            "admin",
            "-P",
        ])
        .arg(TestBmc::PASSWORD)
        .args(["power", "on"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    xcat3_tests::wait_for(
        std::time::Duration::from_secs(15),
        "a drift event",
        || async {
            s.cli(&["events", "drift1"])
                .await
                .stdout
                .contains("power is on (was off)")
                .then_some(())
        },
    )
    .await
    .unwrap();
    let out = s.cli(&["show", "drift1", "-o", "json"]).await.ok();
    assert!(out.stdout.contains("\"power_state\": \"on\""), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_wait_answers_accepted_and_the_outcome_lands_in_events() {
    let bmc = TestBmc::start().await.unwrap();
    let s = TestServer::start(Backend::Sqlite).await;
    s.cli(&["create", "async1", "mgt=ipmi", "--control", &bmc.control()])
        .await
        .ok();
    s.cli(&["create", "async2"]).await.ok();
    let out = s.cli(&["power", "async1,async2", "on", "--no-wait"]).await;
    assert!(out.stdout.contains("async1: accepted"), "{out:?}");
    assert!(out.stdout.contains("async2: accepted"), "{out:?}");
    xcat3_tests::wait_for(
        std::time::Duration::from_secs(15),
        "the outcome in the events",
        || async {
            let out = s.cli(&["events", "async1,async2"]).await.stdout;
            (out.contains("power on: now on") && out.contains("power on failed")).then_some(())
        },
    )
    .await
    .unwrap();
    assert!(bmc.is_on());
}

/// Ten nodes behind one BMC that never answers: one operation waits for it, the other nine fail
/// at once with its reason; the power sync records one event per node however often it runs, and
/// stops at SIGTERM instead of going on starting ipmitool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_bmc_costs_one_timeout_and_the_power_sync_stops_at_sigterm() {
    let opts = ServerOptions {
        extra_args: [
            "--power-sync-interval-secs",
            "1",
            "--operation-timeout-secs",
            "3",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    };
    let mut s = TestServer::start_with(Backend::Sqlite, opts).await.unwrap();
    s.cli(&[
        "create",
        "dead[01-10]",
        "mgt=ipmi",
        "--control",
        "bmc_address=127.0.0.1,bmc_port=9,bmc_username=admin,bmc_password=x",
    ])
    .await
    .ok();
    let out = s.cli(&["power", "dead[01-10]", "status"]).await;
    assert!(out.stdout.contains("Success: 0 Total: 10"), "{out:?}");
    let not_tried = out.stdout.matches("not tried").count();
    assert_eq!(not_tried, 9, "{out:?}");
    // Let the power sync run over them a few times.
    wait_for(
        std::time::Duration::from_secs(120),
        "three power syncs",
        || async { (s.log().matches("power sync done").count() >= 3).then_some(()) },
    )
    .await
    .unwrap();
    let out = s.cli(&["events", "dead[01-10]", "-o", "json"]).await.ok();
    let events: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    for n in 1..=10 {
        let node = format!("dead{n:02}");
        let failures = events
            .iter()
            .filter(|e| e["node"] == node.as_str() && e["kind"] == "error")
            .count();
        assert_eq!(failures, 1, "{node}: {events:?}");
    }
    // SIGTERM while a sync waits for the dead BMC: the sync stops instead of finishing.
    wait_for(
        std::time::Duration::from_secs(60),
        "a sync in progress",
        || async {
            let log = s.log();
            (log.matches("power sync started").count() > log.matches("power sync done").count())
                .then_some(())
        },
    )
    .await
    .unwrap();
    let status = s.terminate().await.unwrap();
    assert!(status.success(), "{status:?}");
    let log = s.log();
    let after = &log[log.find("shutting down").expect("the shutdown was logged")..];
    assert!(
        !after.contains("power sync done"),
        "the sync went on after the signal:\n{after}"
    );
}
