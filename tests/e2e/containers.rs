//! The container images as users get them (`deploy/docker/Dockerfile`, runtime stages built
//! from this tree's binaries by `scripts/images.sh`): the server image runs as its non-root user
//! on a read-only root file system with its data on a volume, and the CLI image manages it
//! across a Docker network the test creates. The images hold no shell, so the checks look from
//! the host: `/proc/PID/status` of the container's process, and Docker's own record.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use xcat3_tests::docker::{Scope, cli, cli_image, docker, logs, pid, server_image};

const TOKEN: &str = "container-test-token-0123456789";

/// Starts the all-in-one server container on `network` with its data on `volume`; returns how
/// long it took to print its ready line.
fn start_server(scope: &Scope, network: &str, volume: &str) -> Duration {
    let started = Instant::now();
    let server = scope.name("server");
    let args: Vec<String> = [
        "--network",
        network,
        "--read-only",
        "--tmpfs",
        "/tmp",
        "-v",
        &format!("{volume}:/var/lib/xcat3"),
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-e",
        "XCAT3_ADMIN_TOKEN",
        &server_image(),
        "all-in-one",
        "--no-network-agent",
        "--listen",
        "0.0.0.0:3010",
    ]
    .map(String::from)
    .to_vec();
    let env = BTreeMap::from([("XCAT3_ADMIN_TOKEN".to_owned(), TOKEN.to_owned())]);
    scope.run(&server, &args, &env).unwrap();
    while !logs(&server).contains("xcat3 api ready") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not ready within 60 s: {}",
            logs(&server)
        );
        #[allow(clippy::disallowed_methods)] // a plain #[test]: no tokio worker to block
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// The real, effective, saved and file-system UIDs of a container's main process, from the host.
fn uids(container: &str) -> String {
    let pid = pid(container).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_images_run_non_root_on_a_read_only_root_and_keep_their_data_on_a_volume() {
    for tag in [server_image(), cli_image()] {
        let config = docker(&[
            "image",
            "inspect",
            "-f",
            "{{.Config.User}} {{.Config.Env}}",
            &tag,
        ])
        .unwrap_or_else(|e| {
            panic!("{tag} is not built: scripts/test.sh builds it with scripts/images.sh: {e:#}")
        });
        assert!(config.starts_with("65532:65532 "), "{tag}: {config}");
        assert!(!config.contains("TOKEN"), "{tag} carries a token: {config}");
        // No shell, no package manager: what an intruder could use is not there.
        for tool in ["/bin/sh", "/usr/bin/apt", "/usr/bin/dpkg"] {
            let created = docker(&["create", &tag]).unwrap();
            let id = created.trim();
            let out = docker(&["cp", &format!("{id}:{tool}"), "-"]);
            let _ = docker(&["rm", id]);
            assert!(out.is_err(), "{tag} holds {tool}");
        }
    }
    let scope = Scope::new("images");
    let (network, _) = scope.network("net").unwrap();
    let (volume, _) = scope.volume("data").unwrap();
    let cold = start_server(&scope, &network, &volume);
    println!("server image: all-in-one ready {cold:?} after docker run");
    let server = scope.name("server");
    assert_eq!(uids(&server), "65532 65532 65532 65532");
    let read_only = docker(&["inspect", "-f", "{{.HostConfig.ReadonlyRootfs}}", &server]).unwrap();
    assert_eq!(read_only.trim(), "true");

    let url = format!("http://{server}:3010");
    let (ok, out) = cli(
        &network,
        &url,
        TOKEN,
        &["create", "n1", "--nic", "mac=52:54:00:c0:00:01"],
    );
    assert!(ok, "{out}");
    // The data survives the container: a new one on the same volume still knows n1.
    docker(&["rm", "-f", &server]).unwrap();
    start_server(&scope, &network, &volume);
    let (ok, out) = cli(&network, &url, TOKEN, &["list"]);
    assert!(ok && out.contains("n1"), "{out}");
    let (ok, out) = cli(
        &network,
        &url,
        TOKEN,
        &["list", "--token", "wrong-token-0123456789"],
    );
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
}
