//! The `xcat3` CLI against a real server: the prototype's commands, exit statuses, summaries,
//! export/import and the client configuration file.

use xcat3_tests::{Backend, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_commands_work() {
    let s = TestServer::start(Backend::Sqlite).await;
    let out = s
        .cli(&[
            "network-create",
            "c920",
            "subnet=11.0.0.0",
            "netmask=255.0.0.0",
            "gateway=11.0.0.101",
            "dynamic_range=11.4.40.111-11.4.40.113",
            "nameservers=11.0.0.101",
        ])
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "c920: created");
    let out = s
        .cli(&[
            "create", "xcat3test1",
            "--control", "ssh_username=root,ssh_virt_type=virsh,ssh_address=11.5.102.1,ssh_key_filename=/root/.ssh/id_rsa",
            "--nic", "mac=52:54:00:36:ac:b1,ip=11.5.102.60,name=eth0,primary=True",
            "mgt=kvm", "netboot=pxe", "arch=x86_64",
        ])
        .await
        .ok();
    assert!(out.stdout.contains("xcat3test1: created"), "{out:?}");
    assert!(out.stdout.contains("Success: 1 Total: 1"), "{out:?}");
    let out = s.cli(&["list"]).await.ok();
    assert!(out.stdout.lines().next().unwrap().starts_with("NAME"));
    assert!(out.stdout.contains("11.5.102.60"), "{out:?}");
    let out = s.cli(&["network-show", "c920"]).await.ok();
    assert!(
        out.stdout
            .contains("dynamic_range: 11.4.40.111-11.4.40.113"),
        "{out:?}"
    );
    let out = s.cli(&["osimage-list"]).await.ok();
    assert!(out.stdout.starts_with("NAME"), "{out:?}");
    let out = s.cli(&["service-list"]).await.ok();
    assert!(
        out.stdout.contains("api") && out.stdout.contains("online"),
        "{out:?}"
    );
    let out = s.cli(&["show", "xcat3test1", "-o", "json"]).await.ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["nodes"][0]["control"]["ssh_virt_type"], "virsh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_name_node_and_field_and_exit_non_zero() {
    let s = TestServer::start(Backend::Sqlite).await;
    s.cli(&["create", "n[1-3]", "mgt=ipmi"]).await.ok();
    // The same MAC for every node of a range: the first gets it, the others are told why not.
    let out = s
        .cli(&["create", "m[1-3]", "--nic", "mac=52:54:00:00:00:01"])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(
            "m2: Error: nics[0].mac: 52:54:00:00:00:01 is also given to node m1 in this request"
        ),
        "{out:?}"
    );
    assert!(out.stdout.contains("Success: 1 Total: 3"), "{out:?}");
    // Results come in the order of the noderange, whatever order the work finished in.
    let names = |stdout: &str| -> Vec<String> {
        stdout
            .lines()
            .filter_map(|l| l.split_once(": ").map(|(n, _)| n.to_owned()))
            .filter(|n| n != "Success")
            .collect()
    };
    assert_eq!(names(&out.stdout), ["m1", "m2", "m3"], "{out:?}");
    let out = s.cli(&["update", "n9,n2,n1", "arch=aarch64"]).await;
    assert_eq!(names(&out.stdout), ["n9", "n2", "n1"], "{out:?}");
    let out = s.cli(&["delete", "m3,m1,m2"]).await;
    assert_eq!(names(&out.stdout), ["m3", "m1", "m2"], "{out:?}");
    let out = s.cli(&["update", "n[1-4]", "arch=aarch64"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("n4: Error: name: no such node"),
        "{out:?}"
    );
    assert!(out.stdout.contains("Success: 3 Total: 4"), "{out:?}");
    let out = s.cli(&["update", "n1", "colour=red"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("InvalidArgument: colour: unknown attribute"),
        "{out:?}"
    );
    let out = s.cli(&["list", "n[1-1000000]"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("more than 100000 names"), "{out:?}");
    // A template error is the same for every node: the request is refused as a whole.
    let out = s
        .cli(&["create", "bad[1-2]", "--nic", "mac=zz:54:00:00:00:01"])
        .await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "InvalidArgument: attributes: nics/eth0/mac: \"zz:54:00:00:00:01\" is not a MAC address"
        ),
        "{out:?}"
    );
    let out = s.cli(&["create", "x1", "colour=red"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("colour: unknown attribute"), "{out:?}");
    // Create and update speak one grammar: what update takes, create takes.
    s.cli(&[
        "create",
        "g1",
        "--nic",
        "mac=52:54:00:00:09:01,primary=on",
        "--nic",
        "mac=52:54:00:00:09:02",
        "nics/eth1/primary=yes",
        "labels/rack=r9",
    ])
    .await
    .ok();
    let out = s.cli(&["show", "g1", "-o", "json"]).await.ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["nodes"][0]["nics"][1]["primary"], true, "{v}");
    assert_eq!(v["nodes"][0]["labels"]["rack"], "r9", "{v}");
    s.cli(&["update", "g1", "nics/eth0/primary=on"]).await.ok();
    let out = s.cli(&["delete", "n[1-2],n9"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("Success: 2 Total: 3"), "{out:?}");
    let out = s.cli(&["show", "n9"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("n9: Error: no such node"), "{out:?}");
    let out = s
        .cli_env(&["list"], &[("XCAT3_URL", "http://127.0.0.1:1")])
        .await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("cannot reach the api"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_import_round_trip_and_yaml_files() {
    let s = TestServer::start(Backend::Sqlite).await;
    s.cli(&[
        "network-create",
        "pxe",
        "subnet=10.1.0.0",
        "netmask=255.255.0.0",
    ])
    .await
    .ok();
    std::fs::write(
        s.dir().join("nodes.yaml"),
        r#"nodes:
- name: r1n1
  groups: [compute, rack1]
  mgt: ipmi
  arch: aarch64
  control: {bmc_address: 10.9.0.1, bmc_username: admin, bmc_password: pw1}
  nics:
  - {name: eth0, mac: "52:54:00:10:00:01", ip: 10.1.0.1, primary: true}
  - {name: eth1, mac: "52:54:00:10:00:02"}
  labels: {position: "1"}
- name: r1n2
  mgt: kvm
  netboot: uefi-http
  control: {ssh_address: hv1, ssh_username: root, domain: vm2}
"#,
    )
    .unwrap();
    let out = s.cli(&["create", "-f", "nodes.yaml"]).await.ok();
    assert!(out.stdout.contains("Success: 2 Total: 2"), "{out:?}");
    s.cli(&["export", "r1n[1-2]", "-o", "masked.yaml"])
        .await
        .ok();
    s.cli(&["export", "r1n[1-2]", "--with-secrets", "-o", "first.yaml"])
        .await
        .ok();
    let first = std::fs::read_to_string(s.dir().join("first.yaml")).unwrap();
    assert!(first.contains("bmc_password: pw1"), "{first}");
    s.cli(&["delete", "all"]).await.ok();
    // A masked password is refused, never stored as ****** nor dropped quietly; the node
    // without secrets is created.
    let out = s.cli(&["import", "masked.yaml"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("r1n1: Error: control.bmc_password")
            && out.stdout.contains("--with-secrets"),
        "{out:?}"
    );
    assert!(out.stdout.contains("Success: 1 Total: 2"), "{out:?}");
    s.cli(&["delete", "all"]).await.ok();
    // The backup with secrets round-trips without loss.
    let out = s.cli(&["import", "first.yaml"]).await.ok();
    assert!(out.stdout.contains("Success: 2 Total: 2"), "{out:?}");
    s.cli(&["export", "r1n[1-2]", "--with-secrets", "-o", "second.yaml"])
        .await
        .ok();
    let second = std::fs::read_to_string(s.dir().join("second.yaml")).unwrap();
    assert_eq!(first, second);
    assert!(
        second.contains("r1n2")
            && second.contains("uefi-http")
            && second.contains("52:54:00:10:00:02")
    );
    let out = s.cli(&["show", "r1n1"]).await.ok();
    let doc: serde_yaml::Value = serde_yaml::from_str(&out.stdout).unwrap();
    assert_eq!(doc["nodes"][0]["groups"][1], "rack1");

    std::fs::write(
        s.dir().join("broken.yaml"),
        "nodes:\n- name: a\n  colour: red\n",
    )
    .unwrap();
    let out = s.cli(&["import", "broken.yaml"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("colour"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_config_file_and_flags() {
    let s = TestServer::start(Backend::Sqlite).await;
    let cfg = s.dir().join(".config/xcat3");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("config.yaml"),
        format!("url: {}\ntoken: {}\n", s.addr, s.token),
    )
    .unwrap();
    let out = s
        .cli_env(&["list"], &[("XCAT3_URL", ""), ("XCAT3_TOKEN", "")])
        .await;
    // Empty environment values do not count; the file does.
    assert_eq!(out.code, 0, "{out:?}");
    let out = s.cli_env(&["--token", "wrong", "list"], &[]).await;
    assert_eq!(out.code, 1, "the flag wins over env and file: {out:?}");
}
