//! The container images as users get them (`deploy/docker/Dockerfile`, runtime stages built
//! from this tree's binaries by `scripts/images.sh`): the server image runs as its non-root user
//! on a read-only root file system with its data on a volume, and the CLI image manages it
//! across a Docker network the test creates.

use std::process::Command;
use std::time::{Duration, Instant};

const VERSION: &str = "0.1.0";
const TOKEN: &str = "container-test-token-0123456789";

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker (the machine's Docker Engine)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The containers, network and volume of one test, removed when dropped.
struct Docker {
    name: String,
}

impl Docker {
    fn new(test: &str) -> Docker {
        let name = format!("xcat3-t{}-{test}", std::process::id());
        let (ok, out) = docker(&["network", "create", &name]);
        assert!(ok, "{out}");
        let (ok, out) = docker(&["volume", "create", &name]);
        assert!(ok, "{out}");
        Docker { name }
    }

    fn cli(&self, args: &[&str]) -> (bool, String) {
        let url = format!("XCAT3_URL=http://{}-server:3010", self.name);
        let image = format!("ghcr.io/xcat3/xcat3:{VERSION}");
        let mut all = vec!["run", "--rm", "--network", &self.name, "-e", &url];
        all.extend(["-e", "XCAT3_TOKEN", &image]);
        all.extend(args);
        let out = Command::new("docker")
            .args(&all)
            .env("XCAT3_TOKEN", TOKEN)
            .output()
            .expect("run docker");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Starts the server container and returns how long it took to print its ready line.
    fn start_server(&self) -> Duration {
        let started = Instant::now();
        let server = format!("{}-server", self.name);
        let volume = format!("{}:/var/lib/xcat3", self.name);
        let image = format!("ghcr.io/xcat3/xcat3-server:{VERSION}");
        let (ok, out) = Command::new("docker")
            .args(["run", "-d", "--name", &server, "--network", &self.name])
            .args(["--read-only", "--tmpfs", "/tmp", "-v", &volume])
            .args(["--cap-drop", "ALL", "--security-opt", "no-new-privileges"])
            .args(["-e", "XCAT3_ADMIN_TOKEN", &image, "all-in-one"])
            .args(["--no-network-agent", "--listen", "0.0.0.0:3010"])
            .env("XCAT3_ADMIN_TOKEN", TOKEN)
            .output()
            .map(|o| {
                (
                    o.status.success(),
                    String::from_utf8_lossy(&o.stderr).into_owned(),
                )
            })
            .expect("run docker");
        assert!(ok, "{out}");
        while !docker(&["logs", &server]).1.contains("xcat3 api ready") {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "not ready within 60 s: {}",
                docker(&["logs", &server]).1
            );
            #[allow(clippy::disallowed_methods)] // a plain #[test]: no tokio worker to block
            std::thread::sleep(Duration::from_millis(20));
        }
        started.elapsed()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let server = format!("{}-server", self.name);
        let _ = docker(&["rm", "-f", &server]);
        let _ = docker(&["network", "rm", &self.name]);
        let _ = docker(&["volume", "rm", &self.name]);
    }
}

#[test]
fn the_images_run_non_root_on_a_read_only_root_and_keep_their_data_on_a_volume() {
    for image in ["xcat3-server", "xcat3"] {
        let tag = format!("ghcr.io/xcat3/{image}:{VERSION}");
        let (ok, config) = docker(&[
            "image",
            "inspect",
            "-f",
            "{{.Config.User}} {{.Config.Env}}",
            &tag,
        ]);
        assert!(
            ok,
            "{tag} is not built: scripts/test.sh builds it with scripts/images.sh: {config}"
        );
        assert!(config.starts_with("65532:65532 "), "{tag}: {config}");
        assert!(!config.contains("TOKEN"), "{tag} carries a token: {config}");
    }
    let d = Docker::new("images");
    let cold = d.start_server();
    println!("server image: all-in-one ready {cold:?} after docker run");
    let server = format!("{}-server", d.name);
    let (_, uid) = docker(&["exec", &server, "id", "-u"]);
    assert_eq!(uid.trim(), "65532");
    let (ok, _) = docker(&["exec", &server, "touch", "/usr/local/bin/x"]);
    assert!(!ok, "the root file system is writable");

    let (ok, out) = d.cli(&["create", "n1", "--nic", "mac=52:54:00:c0:00:01"]);
    assert!(ok, "{out}");
    // The data survives the container: a new one on the same volume still knows n1.
    let (ok, out) = docker(&["rm", "-f", &server]);
    assert!(ok, "{out}");
    d.start_server();
    let (ok, out) = d.cli(&["list"]);
    assert!(ok && out.contains("n1"), "{out}");
    let (ok, out) = d.cli(&["list", "--token", "wrong-token-0123456789"]);
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
}
