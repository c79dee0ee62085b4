//! ISO import (`xcat3-copycds`) and deploys, end to end through a real server: synthetic media
//! built by xorriso, the install files and trees fetched over HTTP with curl, the callback posted
//! by curl as an installed system would.

use std::path::Path;
use std::time::Duration;

use xcat3_proto::internal::boot_host::Action;
use xcat3_proto::pb;
use xcat3_tests::iso::{fake_kernel, make_iso, rocky_iso};
use xcat3_tests::{Backend, TestServer};

const ROCKY: &str = "rocky9.4-x86_64-install-compute";
const MAC: &str = "52:54:00:aa:00:01";

/// `curl` with its exit status, body and HTTP status.
fn curl(args: &[&str]) -> (bool, String, u16) {
    let (ok, body, code) = curl_bytes(args);
    (ok, String::from_utf8_lossy(&body).into_owned(), code)
}

fn curl_bytes(args: &[&str]) -> (bool, Vec<u8>, u16) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl (scripts/install-deps.sh installs it)");
    let split = out.stdout.iter().rposition(|b| *b == b'\n').unwrap_or(0);
    let code = String::from_utf8_lossy(&out.stdout[split..])
        .trim()
        .parse()
        .unwrap_or(0);
    (out.status.success(), out.stdout[..split].to_vec(), code)
}

/// A server (started with `opts`) with the Rocky image imported and the provisioning network.
/// The tests fetch install files and post callbacks from loopback on the nodes' behalf, so the
/// source check is off here; `install_secrets_go_only_to_the_node` tests it, and the `vm` tests
/// run with it on.
async fn rocky_site(mut opts: xcat3_tests::ServerOptions) -> (TestServer, tempfile::TempDir) {
    opts.extra_args.push("--no-install-source-check".into());
    let server = TestServer::start_with(Backend::Sqlite, opts).await.unwrap();
    let dir = import_rocky(&server).await;
    (server, dir)
}

/// Imports the Rocky image into `server` and defines the provisioning network; the directory
/// holds the ISO.
async fn import_rocky(server: &TestServer) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = server
        .copycds(&[rocky_iso(dir.path()).to_str().unwrap()])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    provisioning_network(server).await;
    dir
}

async fn provisioning_network(server: &TestServer) {
    let out = server
        .cli(&[
            "network-create",
            "prov",
            "subnet=10.9.0.0",
            "netmask=255.255.255.0",
            "gateway=10.9.0.1",
            "nameservers=10.9.0.2",
            "domain=cluster.test",
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
}

async fn state_of(server: &TestServer, node: &str) -> String {
    let out = server.cli(&["show", node, "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v["nodes"][0]["provision_state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits for the node's NIC to boot its local disk again: changes made outside the api (the
/// image service's callbacks) reach the boot table within its revision poll.
async fn wait_local_boot(server: &TestServer) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while install_action(server).await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still booting the installer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The install action the NIC `MAC` boots into, if any.
async fn install_action(server: &TestServer) -> Option<xcat3_proto::internal::InstallBoot> {
    install_action_of(server, MAC).await
}

async fn install_action_of(
    server: &TestServer,
    mac: &str,
) -> Option<xcat3_proto::internal::InstallBoot> {
    match server.boot_host(mac).await?.action? {
        Action::Install(i) => Some(i),
        Action::Local(_) => None,
    }
}

/// The kickstart URL an install action's command line gives the installer.
fn kickstart_url(install: &xcat3_proto::internal::InstallBoot) -> String {
    install
        .cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("inst.ks="))
        .expect("inst.ks in the command line")
        .to_owned()
}

fn trees_dir(server: &TestServer) -> std::path::PathBuf {
    server.dir().join("images/trees")
}

fn partial_leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".partial"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copycds_imports_once_and_refuses_bad_media_leaving_nothing() {
    let server = TestServer::start(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let iso = rocky_iso(dir.path());
    let iso = iso.to_str().unwrap();

    let out = server.copycds(&["create", iso]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("osimage {ROCKY} (rocky 9.4 x86_64, kickstart)")),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("uploading"),
        "no progress shown: {out:?}"
    );
    // The same ISO again: nothing to do, and said so.
    let again = server.copycds(&[iso]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again
            .stdout
            .contains(&format!("Already imported: already imported as {ROCKY}")),
        "{again:?}"
    );
    let list = server.cli(&["osimage-list", "-o", "json"]).await;
    let images: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(images.as_array().unwrap().len(), 1, "{list:?}");

    // A second name for other media, given with -n.
    let debian = make_iso(
        dir.path(),
        "debian-12.5.0-amd64-netinst",
        &[
            (".disk/info", b"Debian GNU/Linux 12.5.0 \"Bookworm\" - Official amd64 NETINST with firmware 20240210-11:27"),
            ("install.amd/vmlinuz", b"k"),
            ("install.amd/initrd.gz", b"i"),
        ],
        &[("debian", ".")],
    );
    let out = server
        .copycds(&["-n", "bookworm", debian.to_str().unwrap()])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("osimage bookworm (debian 12.5 x86_64, preseed)"),
        "{out:?}"
    );

    // Not an ISO; an ISO of nothing we know; an ISO with a name that would climb out.
    let junk = dir.path().join("junk.iso");
    std::fs::write(&junk, vec![0x42u8; 100_000]).unwrap();
    let unknown = make_iso(dir.path(), "unknown", &[("README", b"hello")], &[]);
    let hostile = make_iso(dir.path(), "hostile", &[("qz/x", b"x")], &[]);
    let mut bytes = std::fs::read(&hostile).unwrap();
    for i in 0..bytes.len() - 1 {
        if &bytes[i..i + 2] == b"qz" || &bytes[i..i + 2] == b"QZ" {
            bytes[i..i + 2].copy_from_slice(b"..");
        }
    }
    std::fs::write(&hostile, bytes).unwrap();
    for (iso, why) in [
        (junk.as_path(), "not a readable ISO 9660 image"),
        (unknown.as_path(), "not a recognised installation medium"),
        (hostile.as_path(), "unsafe name"),
    ] {
        let out = server.copycds(&[iso.to_str().unwrap()]).await;
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stderr.contains(why), "{why}: {out:?}");
    }
    let list = server.cli(&["osimage-list", "-o", "json"]).await;
    let images: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(images.as_array().unwrap().len(), 2, "{list:?}");
    assert!(partial_leftovers(&trees_dir(&server)).is_empty());
    let incoming = std::fs::read_dir(server.dir().join("images/incoming"))
        .unwrap()
        .count();
    assert_eq!(incoming, 0, "uploads left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_serves_its_files_and_the_callback_ends_it_once() {
    let (server, dir) = rocky_site(Default::default()).await;
    let nic = format!("mac={MAC},ip=10.9.0.21");
    let out = server
        .cli(&[
            "create",
            "n1",
            &format!("osimage={ROCKY}"),
            "labels/install_disk=/dev/vda",
            "--nic",
            &nic,
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let out = server.cli(&["create", "bare"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        install_action(&server).await.is_none(),
        "boots its disk before any deploy"
    );

    let key = dir.path().join("id.pub");
    std::fs::write(
        &key,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB+0a0cIv5rCBa0oZ233Jkz48O8miF9/nu4+WWu3cQ/y operator@site\n",
    )
    .unwrap();
    let out = server
        .cli(&["deploy", "n1,bare", "--ssh-key", key.to_str().unwrap()])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("n1: wait-callback"), "{out:?}");
    assert!(out.stdout.contains("bare: Error"), "{out:?}");
    assert!(out.stdout.contains("osimage"), "{out:?}");
    assert_eq!(state_of(&server, "n1").await, "wait-callback");
    // Deploying again while one runs is refused, and says what to do.
    let out = server.cli(&["deploy", "n1"]).await;
    assert!(out.stdout.contains("undeploy it first"), "{out:?}");

    // The agents were told to boot the installer with the deploy's kickstart.
    let install = install_action(&server).await.expect("an install action");
    let http = format!("http://{}", server.image_http.unwrap());
    assert_eq!(
        install.kernel,
        format!(
            "{http}/trees/{}/images/pxeboot/vmlinuz",
            &tree_of(&server).await
        )
    );
    let ks_url = kickstart_url(&install);
    let (ok, ks, code) = curl(&[&ks_url]);
    assert!(ok && code == 200, "{code} {ks}");
    assert!(
        ks.contains(
            "--ip=10.9.0.21 --netmask=255.255.255.0 --gateway=10.9.0.1 --nameserver=10.9.0.2"
        ),
        "{ks}"
    );
    assert!(ks.contains("--hostname=n1.cluster.test"), "{ks}");
    assert!(
        ks.contains(
            "sshkey --username=root \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB+0a0cIv5rCBa0oZ233Jkz48O8miF9/nu4+WWu3cQ/y operator@site\""
        ),
        "{ks}"
    );
    assert!(ks.contains("ignoredisk --only-use=/dev/vda"), "{ks}");
    let done_url = ks_url.replace("/kickstart", "/done");
    assert!(ks.contains(&done_url), "{ks}");
    // Installers fetch kernels in pieces: byte ranges work.
    let (ok, part, code) = curl_bytes(&["-r", "1000-1099", &install.kernel]);
    assert!(ok && code == 206, "{code}");
    assert_eq!(part, &fake_kernel()[1000..1100]);
    let (_, whole, code) = curl_bytes(&[&install.kernel]);
    assert_eq!((code, whole), (200, fake_kernel()));
    let (ok, head, _) = curl(&["-I", &install.kernel]);
    assert!(ok && head.contains("content-length: 300000"), "{head}");
    assert_eq!(curl(&["-r", "300000-", &install.kernel]).2, 416);
    // Nothing outside a tree, nor a tree being extracted.
    let tree = tree_of(&server).await;
    for path in [
        format!("/trees/{tree}/../../admin.token"),
        format!("/trees/{tree}/%2e%2e/%2e%2e/admin.token"),
        "/trees/.partial-x/vmlinuz".to_owned(),
        format!("/trees/{tree}/images"),
    ] {
        let (_, body, code) = curl(&["--path-as-is", &format!("{http}{path}")]);
        assert_eq!(code, 404, "{path}: {body}");
    }
    // Other files, other tokens: nothing.
    assert_eq!(curl(&[&ks_url.replace("/kickstart", "/preseed")]).2, 404);
    assert_eq!(
        curl(&[&format!("{http}/deploy/{}/kickstart", "0".repeat(64))]).2,
        404
    );
    assert_eq!(curl(&[&format!("{http}/deploy/../../etc/passwd")]).2, 404);

    // The installed system reports back: deployed, local disk, and the token is spent.
    let (ok, body, code) = curl(&["-X", "POST", &done_url]);
    assert!(ok && code == 200, "{code} {body}");
    assert_eq!(body.trim(), "n1: deployed");
    assert_eq!(state_of(&server, "n1").await, "deployed");
    wait_local_boot(&server).await;
    let metrics = server.metrics_text().await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(
        value("xcat3_deploy_duration_seconds_count{result=\"deployed\"} "),
        1.0,
        "{metrics}"
    );
    assert!(
        value("xcat3_image_tree_sent_bytes_total ") >= 300_100.0,
        "{metrics}"
    );
    assert_eq!(curl(&["-X", "POST", &done_url]).2, 404);
    assert_eq!(curl(&[&ks_url]).2, 404, "install files outlive the deploy");
    let token = ks_url.split('/').rev().nth(1).unwrap();
    assert_eq!(token.len(), 64, "{ks_url}");
    assert!(!server.log().contains(token), "a deploy token was logged");
    let events = server.cli(&["events", "n1"]).await;
    for step in [
        "deploy: available → deploying",
        "published: deploying → wait-callback",
        "callback: wait-callback → deployed",
    ] {
        assert!(events.stdout.contains(step), "{step}: {events:?}");
    }

    // Redeploy, then undeploy: available, local boot, token dead.
    let out = server.cli(&["deploy", "n1"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let ks2 = install_action(&server).await.unwrap().cmdline;
    assert!(!ks2.contains(&ks_url), "a redeploy reuses the old token");
    let out = server.cli(&["deploy", "-d", "n1"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(state_of(&server, "n1").await, "available");
    assert!(install_action(&server).await.is_none());

    // The image is in use by n1's osimage attribute: it cannot go.
    let out = server.cli(&["osimage-delete", ROCKY]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("used by node(s) n1"), "{out:?}");
    assert_eq!(server.cli(&["update", "n1", "osimage="]).await.code, 0);
    let out = server.cli(&["osimage-delete", ROCKY]).await;
    assert_eq!(out.code, 0, "{out:?}");
}

/// The install tree id of the only osimage.
async fn tree_of(server: &TestServer) -> String {
    let list = server.cli(&["osimage-list", "-o", "json"]).await;
    let images: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    images[0]["repo_root"]
        .as_str()
        .unwrap()
        .trim_start_matches("trees/")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_without_callback_fails_at_its_deadline_and_a_failure_report_fails_it() {
    let (server, _dir) = rocky_site(Default::default()).await;
    for (name, mac, ip) in [
        ("t1", MAC, "10.9.0.31"),
        ("t2", "52:54:00:aa:00:02", "10.9.0.32"),
    ] {
        let nic = format!("mac={mac},ip={ip}");
        let out = server
            .cli(&["create", name, &format!("osimage={ROCKY}"), "--nic", &nic])
            .await;
        assert_eq!(out.code, 0, "{out:?}");
    }
    let mut nodes = server.nodes().await;
    let mut stream = nodes
        .deploy(pb::DeployRequest {
            noderange: "t1".into(),
            timeout_seconds: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().is_some() {}
    assert_eq!(state_of(&server, "t1").await, "wait-callback");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while state_of(&server, "t1").await != "deploy-failed" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deploy never timed out"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let events = server.cli(&["events", "t1"]).await;
    assert!(
        events
            .stdout
            .contains("no callback from the installed system before the deadline"),
        "{events:?}"
    );
    wait_local_boot(&server).await;

    // The installer says it failed: deploy-failed with its words in the history.
    assert_eq!(server.cli(&["deploy", "t2"]).await.code, 0);
    let install = install_action_of(&server, "52:54:00:aa:00:02")
        .await
        .expect("t2 is installing");
    let ks = kickstart_url(&install);
    let (ok, body, code) = curl(&[
        "-X",
        "POST",
        "--data-binary",
        "no disk found",
        &ks.replace("/kickstart", "/failed"),
    ]);
    assert!(ok && code == 200, "{code} {body}");
    assert_eq!(state_of(&server, "t2").await, "deploy-failed");
    let events = server.cli(&["events", "t2"]).await;
    assert!(
        events
            .stdout
            .contains("the installer reported failure: no disk found"),
        "{events:?}"
    );
}

/// QEMU machines installing through the whole chain, in namespaces made by the test: the network
/// agent and an image service (same database and trees as the test server) at 10.78.0.1, the
/// VM on the segment's bridge.
mod vm {
    use std::path::PathBuf;
    use std::time::Duration;

    use xcat3_tests::iso::make_iso;
    use xcat3_tests::netns::{Firmware, Netns, Segment, TestAgent, TestImage, TestVm, UnixProxy};
    use xcat3_tests::{Backend, ServerOptions, TestServer, wait_for};

    const VM_MAC: &str = "52:54:00:78:00:01";

    fn payloads() -> PathBuf {
        PathBuf::from(std::env::var("XCAT3_TEST_PAYLOADS").unwrap_or_else(|_| {
            panic!("XCAT3_TEST_PAYLOADS is not set: run the tests with scripts/test.sh")
        }))
    }

    struct Site {
        server: TestServer,
        seg: Segment,
        srv: Netns,
        _proxy: UnixProxy,
        agent: TestAgent,
        image: TestImage,
        dir: tempfile::TempDir,
    }

    impl Site {
        /// A server whose nodes install from the image service at 10.78.0.1, an osimage made of
        /// `kernel` and `initrd` as a Debian medium, and node n1 (the VM's MAC) using it.
        async fn start(kernel: &[u8], initrd: &[u8]) -> Site {
            let opts = ServerOptions {
                extra_args: vec!["--image-url".into(), "http://10.78.0.1:8090".into()],
                ..Default::default()
            };
            let server = TestServer::start_with(Backend::Sqlite, opts).await.unwrap();
            let dir = tempfile::tempdir().unwrap();
            let iso = make_iso(
                dir.path(),
                "debian-test",
                &[
                    (".disk/info", b"Debian GNU/Linux 12.8.0 \"Bookworm\" - Official amd64 NETINST 20241109-11:04"),
                    ("install.amd/vmlinuz", kernel),
                    ("install.amd/initrd.gz", initrd),
                ],
                &[],
            );
            let out = server.copycds(&["-n", "deb", iso.to_str().unwrap()]).await;
            assert_eq!(out.code, 0, "{out:?}");
            for args in [
                &[
                    "network-create",
                    "prov",
                    "subnet=10.78.0.0",
                    "netmask=255.255.255.0",
                    "gateway=10.78.0.1",
                    // The installer asks for name servers when DHCP gives none: the agent's DNS.
                    "nameservers=10.78.0.1",
                    "domain=cluster.test",
                ][..],
                &[
                    "create",
                    "n1",
                    "osimage=deb",
                    "--nic",
                    &format!("mac={VM_MAC},ip=10.78.0.21"),
                ][..],
            ] {
                let out = server.cli(args).await;
                assert_eq!(out.code, 0, "{out:?}");
            }
            let seg = Segment::create().unwrap();
            let srv = Netns::create("isrv").unwrap();
            seg.plug(&srv, "eth0", None, Some("10.78.0.1/24")).unwrap();
            let proxy = UnixProxy::start(server.addr).unwrap();
            let agent = TestAgent::start(
                &srv,
                "eth0",
                "10.78.0.1",
                &proxy.path,
                &server.token,
                &dir.path().join("agent"),
                &[],
            )
            .await
            .unwrap();
            let image = TestImage::start(
                &srv,
                "10.78.0.1",
                &server.dir().join("images"),
                &server.database_url,
                &server.token,
                &dir.path().join("image"),
            )
            .await
            .unwrap();
            Site {
                server,
                seg,
                srv,
                _proxy: proxy,
                agent,
                image,
                dir,
            }
        }

        fn logs(&self, vm: &TestVm) -> String {
            format!(
                "--- console ---\n{}\n--- agent ---\n{}\n--- image ---\n{}",
                vm.console(),
                self.agent.log(),
                self.image.log()
            )
        }
    }

    /// The iPXE script the agent serves the VM's NIC now.
    fn boot_script(site: &Site) -> String {
        site.srv
            .run(&[
                "curl",
                "-sS",
                &format!("http://10.78.0.1:8080/boot/{VM_MAC}.ipxe"),
            ])
            .unwrap_or_default()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_machine_pxe_boots_its_installer_calls_back_and_then_boots_its_disk() {
        let kernel = std::fs::read(payloads().join("callback/vmlinuz")).unwrap();
        let initrd = std::fs::read(payloads().join("callback/initrd.gz")).unwrap();
        let site = Site::start(&kernel, &initrd).await;
        let _ra = xcat3_tests::netns::router_advertiser(&site.srv, "eth0", "fd00:78::").unwrap();
        let out = site.server.cli(&["deploy", "n1"]).await;
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("n1: wait-callback"), "{out:?}");
        // Asked from the agent's own host, the script names no token: the installer goes only
        // to the node's address (10.78.0.21), which the VM gets from the agent's DHCP.
        let script = boot_script(&site);
        assert!(
            script.contains("only to its address 10.78.0.21"),
            "{script}"
        );
        assert!(!script.contains("/deploy/"), "{script}");

        let vm = TestVm::boot(&site.seg.switch, "br0", VM_MAC, Firmware::Bios).unwrap();
        let deployed = wait_for(Duration::from_secs(240), "the node is deployed", || async {
            let out = site.server.cli(&["show", "n1", "-o", "json"]).await;
            out.stdout
                .contains("\"provision_state\": \"deployed\"")
                .then_some(())
        })
        .await;
        let logs = site.logs(&vm);
        vm.stop().await;
        deployed.unwrap_or_else(|e| panic!("{e}\n{logs}"));
        assert!(
            logs.contains("XCAT3-TEST: calling back http://10.78.0.1:8090/deploy/"),
            "{logs}"
        );
        assert!(
            logs.contains("install callback") && logs.contains("node=n1"),
            "{logs}"
        );
        // Its next network boot goes to the local disk.
        let local = wait_for(
            Duration::from_secs(10),
            "the boot script says local disk",
            || async {
                let s = boot_script(&site);
                s.contains("boots from its local disk").then_some(s)
            },
        )
        .await;
        local.unwrap_or_else(|e| panic!("{e}: {}", boot_script(&site)));
        let _ = &site.dir;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_debian_installer_boots_and_fetches_its_preseed_from_us() {
        let kernel = std::fs::read(payloads().join("d-i/linux")).unwrap();
        let initrd = std::fs::read(payloads().join("d-i/initrd.gz")).unwrap();
        let site = Site::start(&kernel, &initrd).await;
        let _ra = xcat3_tests::netns::router_advertiser(&site.srv, "eth0", "fd00:78::").unwrap();
        let out = site.server.cli(&["deploy", "n1"]).await;
        assert_eq!(out.code, 0, "{out:?}");
        let vm = TestVm::boot_with_memory(&site.seg.switch, "br0", VM_MAC, Firmware::Bios, 1024)
            .unwrap();
        let fetched = wait_for(
            Duration::from_secs(300),
            "the installer fetches its preseed",
            || async {
                let log = site.image.log();
                (log.contains("deploy file served") && log.contains("file=\"preseed\"")
                    || log.contains("deploy file served") && log.contains("file=preseed"))
                .then_some(())
            },
        )
        .await;
        let logs = site.logs(&vm);
        vm.stop().await;
        fetched.unwrap_or_else(|e| panic!("{e}\n{logs}"));
        // It asked the agent's DHCP for its address: the reservation.
        assert!(logs.contains("10.78.0.21"), "{logs}");
    }
}

/// `deploy --reboot` through a real BMC (ipmi_sim driven by ipmitool): the node is set to boot
/// from the network and powered on once its install boot action is published; a dead BMC fails
/// only its node's deploy, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_with_reboot_sets_net_boot_and_powers_the_node_through_its_bmc() {
    let bmc = xcat3_tests::TestBmc::start().await.unwrap();
    let opts = xcat3_tests::ServerOptions {
        extra_args: vec!["--operation-timeout-secs".into(), "3".into()],
        ..Default::default()
    };
    let (server, _dir) = rocky_site(opts).await;
    let nic = format!("mac={MAC},ip=10.9.0.41");
    let out = server
        .cli(&[
            "create",
            "r1",
            "mgt=ipmi",
            &format!("osimage={ROCKY}"),
            "--control",
            &bmc.control(),
            "--nic",
            &nic,
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let dead = "bmc_address=127.0.0.1,bmc_port=1,bmc_username=admin,bmc_password=x";
    let out = server
        .cli(&[
            "create",
            "r2",
            "mgt=ipmi",
            &format!("osimage={ROCKY}"),
            "--control",
            dead,
            "--nic",
            "mac=52:54:00:aa:00:09,ip=10.9.0.42",
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let out = server
        .cli(&[
            "create",
            "r3",
            &format!("osimage={ROCKY}"),
            "--nic",
            "mac=52:54:00:aa:00:0a,ip=10.9.0.43",
        ])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!bmc.is_on());

    let out = server.cli(&["deploy", "r[1-3]", "--reboot"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("r1: wait-callback"), "{out:?}");
    assert!(
        out.stdout
            .contains("r2: Error: mgt: booting the installer failed"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("r3: Error: mgt: --reboot needs a power driver"),
        "{out:?}"
    );
    assert!(out.stdout.contains("Success: 1 Total: 3"), "{out:?}");
    assert!(bmc.is_on(), "the node was not powered on");
    assert_eq!(bmc.boot(), "pxe");
    assert_eq!(state_of(&server, "r1").await, "wait-callback");
    assert_eq!(state_of(&server, "r2").await, "deploy-failed");
    assert_eq!(
        state_of(&server, "r3").await,
        "available",
        "a refused node is left alone"
    );
    let events = server.cli(&["events", "r2"]).await;
    assert!(
        events
            .stdout
            .contains("fail: deploying → deploy-failed: booting the installer failed"),
        "{events:?}"
    );
    assert!(
        !server.log().contains(xcat3_tests::TestBmc::PASSWORD),
        "the BMC password was logged"
    );
}

/// A deploy is one trace: the api's call, the conductor's, and, later, the image service serving
/// the node's kickstart and receiving its callback (they join the trace stored with the deploy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_is_one_trace_from_the_api_to_the_install_callback() {
    use opentelemetry_proto::tonic::trace::v1::Span;
    let mut otlp = xcat3_tests::otlp::Receiver::start().await;
    let opts = xcat3_tests::ServerOptions {
        env: otlp.env(),
        ..Default::default()
    };
    let (server, _dir) = rocky_site(opts).await;
    let nic = format!("mac={MAC},ip=10.9.0.51");
    assert_eq!(
        server
            .cli(&["create", "o1", &format!("osimage={ROCKY}"), "--nic", &nic])
            .await
            .code,
        0
    );
    assert_eq!(server.cli(&["deploy", "o1"]).await.code, 0);
    let install = install_action(&server).await.expect("an install action");
    let ks = kickstart_url(&install);
    assert_eq!(curl(&[&ks]).2, 200);
    assert_eq!(
        curl(&["-X", "POST", &ks.replace("/kickstart", "/done")]).2,
        200
    );
    let names = [
        "/xcat3.v1.NodeService/Deploy",
        "/xcat3.internal.v1.Conductor/Deploy",
        "deploy file",
        "install callback",
    ];
    let all = |spans: &[(String, Span)]| {
        names
            .iter()
            .all(|n| spans.iter().any(|(_, s)| s.name == *n))
    };
    let spans = otlp.collect(Duration::from_secs(30), all).await;
    let traces: Vec<(&str, Option<Vec<u8>>)> = names
        .iter()
        .map(|n| {
            (
                *n,
                spans
                    .iter()
                    .find(|(_, s)| s.name == *n)
                    .map(|(_, s)| s.trace_id.clone()),
            )
        })
        .collect();
    let first = traces[0].1.clone().expect("the api's span");
    for (name, trace) in &traces {
        assert_eq!(
            trace.as_ref(),
            Some(&first),
            "{name} is not in the deploy's trace: {traces:?}"
        );
    }
}

/// Anyone who can reach the agent's HTTP port and knows a MAC used to get the deploy token from
/// `/boot/<mac>.ipxe`, and with it the kickstart (root hash, keys) and forged callbacks. Now the
/// installer script, the install files and the callbacks go only to the node's address: this
/// test asks from loopback, which is not it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_secrets_go_only_to_the_node() {
    let server = TestServer::start(Backend::Sqlite).await;
    let agent_dir = tempfile::tempdir().unwrap();
    let (_agent, ready) = xcat3_tests::loopback_agent(&server, agent_dir.path(), &[]).await;
    let agent_http = xcat3_tests::ready_field(&ready, "http=").unwrap();
    let _dir = import_rocky(&server).await;
    let nic = format!("mac={MAC},ip=10.9.0.21");
    let out = server
        .cli(&["create", "n1", &format!("osimage={ROCKY}"), "--nic", &nic])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let out = server.cli(&["deploy", "n1"]).await;
    assert!(out.stdout.contains("n1: wait-callback"), "{out:?}");
    let install = install_action(&server).await.expect("an install action");
    let ks_url = kickstart_url(&install);
    let token = ks_url
        .split('/')
        .rev()
        .nth(1)
        .expect("a token in the URL")
        .to_owned();

    // The agent's script names no token for a stranger.
    let script_url = format!("http://{agent_http}/boot/{MAC}.ipxe");
    let script = xcat3_tests::wait_for(Duration::from_secs(30), "the agent's script", || {
        let url = script_url.clone();
        async move {
            let (_, body, code) = curl(&[&url]);
            (code == 200 && body.contains("being installed")).then_some(body)
        }
    })
    .await
    .unwrap();
    assert!(!script.contains(&token), "{script}");
    assert!(!script.contains("/deploy/"), "{script}");
    assert!(script.contains("only to its address 10.9.0.21"), "{script}");

    // The image service serves no install file and takes no callback from here.
    for file in ["kickstart", "done"] {
        let url = ks_url.replace("/kickstart", &format!("/{file}"));
        let args: Vec<&str> = if file == "done" {
            vec!["-X", "POST", &url]
        } else {
            vec![&url]
        };
        let (_, body, code) = curl(&args);
        assert_eq!(code, 404, "{file}: {body}");
        assert!(!body.contains("rootpw"), "{body}");
    }
    assert_eq!(state_of(&server, "n1").await, "wait-callback");
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("xcat3_image_deploy_files_refused_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"xcat3_image_callbacks_total{result="wrong-source"} 1"#),
        "{metrics}"
    );
}

/// `osimage-delete` says it removes the tree too: the image service does, and stops serving it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osimage_delete_removes_the_tree() {
    let (server, _dir) = rocky_site(Default::default()).await;
    let tree = tree_of(&server).await;
    let url = format!(
        "http://{}/trees/{tree}/images/pxeboot/vmlinuz",
        server.image_http.unwrap()
    );
    assert_eq!(curl(&["-I", &url]).2, 200);
    let out = server.cli(&["osimage-delete", ROCKY]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let dir = trees_dir(&server).join(&tree);
    xcat3_tests::wait_for(Duration::from_secs(60), "the tree removed", || {
        let gone = !dir.exists();
        async move { gone.then_some(()) }
    })
    .await
    .unwrap();
    assert_eq!(curl(&["-I", &url]).2, 404);
}
