//! Docker for the container tests: the machine's Docker Engine runs the images `scripts/images.sh`
//! built (nothing can be pulled). A [`Scope`] names everything one test creates after the test
//! and the process, and removes it all when dropped, so parallel tests and leftovers of a killed
//! run never collide.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context as _, bail};

/// The chart's appVersion: the tag `scripts/images.sh` gives xcat3's images.
pub const VERSION: &str = "0.1.0";

/// xcat3's server image, as the chart names it.
pub fn server_image() -> String {
    format!("ghcr.io/xcat3/xcat3-server:{VERSION}")
}

/// The CLI image.
pub fn cli_image() -> String {
    format!("ghcr.io/xcat3/xcat3:{VERSION}")
}

/// A test image from `tests/images/Dockerfile` (`etcd`, `postgresql`, `bmcsim`) or `base`.
pub fn test_image(name: &str) -> String {
    format!("xcat3-test/{name}:latest")
}

/// Runs `docker ARGS` with `env` set for the client (values passed as `-e NAME` never appear on
/// a command line); returns stdout, or fails with the output.
pub fn docker_env(args: &[&str], env: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .envs(env)
        .output()
        .context("run docker (the machine's Docker Engine)")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}{}",
            args.iter().take(6).copied().collect::<Vec<_>>().join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `docker ARGS`; returns stdout, or fails with the output.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    docker_env(args, &BTreeMap::new())
}

/// Fails with the hint to build the images when `image` is missing.
pub fn require_image(image: &str) -> anyhow::Result<()> {
    docker(&["image", "inspect", "-f", "{{.Id}}", image])
        .map(drop)
        .with_context(|| {
            format!(
                "{image} is not built: scripts/test.sh builds it (scripts/images.sh debug --test)"
            )
        })
}

/// What one test created in Docker, removed on drop (containers first, then networks, volumes).
pub struct Scope {
    /// Prefix of every name: `x3-<pid>-<test>`.
    pub prefix: String,
    created: Mutex<Created>,
}

#[derive(Default)]
struct Created {
    containers: Vec<String>,
    networks: Vec<String>,
    volumes: Vec<String>,
}

impl Scope {
    pub fn new(test: &str) -> Scope {
        Scope {
            prefix: format!("x3-{}-{test}", std::process::id()),
            created: Mutex::default(),
        }
    }

    fn created(&self) -> std::sync::MutexGuard<'_, Created> {
        self.created.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The scoped name of `name`.
    pub fn name(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Creates a bridge network `name` on a /24 that no other network of this machine uses;
    /// returns its full name and the subnet's prefix (`10.N.M`).
    pub fn network(&self, name: &str) -> anyhow::Result<(String, String)> {
        let full = self.name(name);
        for _ in 0..50 {
            let prefix = subnet_prefix();
            match docker(&[
                "network",
                "create",
                "--subnet",
                &format!("{prefix}.0/24"),
                &full,
            ]) {
                Ok(_) => {
                    self.created().networks.push(full.clone());
                    return Ok((full, prefix));
                }
                // Another test (of this run or another) has it: try the next one.
                Err(e) if e.to_string().contains("overlap") => continue,
                Err(e) => return Err(e),
            }
        }
        bail!("no free subnet for network {full}")
    }

    /// Creates (or names, if this scope made it already) volume `name`; returns its full name
    /// and whether it was made now.
    pub fn volume(&self, name: &str) -> anyhow::Result<(String, bool)> {
        let full = self.name(name);
        let mut created = self.created();
        if created.volumes.contains(&full) {
            return Ok((full, false));
        }
        docker(&["volume", "create", &full])?;
        created.volumes.push(full.clone());
        Ok((full, true))
    }

    /// Records a container this scope must remove (`docker run --name` of a scoped name).
    pub fn track(&self, container: &str) {
        let mut created = self.created();
        if !created.containers.iter().any(|c| c == container) {
            created.containers.push(container.to_owned());
        }
    }

    /// `docker run -d` with `args` (which must include `--name` of a scoped name, tracked here)
    /// and `env` passed through the client's environment; returns the container id.
    pub fn run(
        &self,
        container: &str,
        args: &[String],
        env: &BTreeMap<String, String>,
    ) -> anyhow::Result<String> {
        self.track(container);
        let mut all: Vec<&str> = vec!["run", "-d", "--name", container];
        all.extend(args.iter().map(String::as_str));
        docker_env(&all, env).map(|id| id.trim().to_owned())
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let created = std::mem::take(&mut *self.created());
        if !created.containers.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(created.containers.iter().map(String::as_str));
            let _ = docker(&args);
        }
        for n in &created.networks {
            let _ = docker(&["network", "rm", n]);
        }
        if !created.volumes.is_empty() {
            let mut args = vec!["volume", "rm", "-f"];
            args.extend(created.volumes.iter().map(String::as_str));
            let _ = docker(&args);
        }
    }
}

/// The logs of a container (stdout and stderr), or why they could not be read.
pub fn logs(container: &str) -> String {
    match Command::new("docker").args(["logs", container]).output() {
        Ok(out) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("(docker logs {container}: {e})"),
    }
}

/// The main process's PID on this host (for `ip netns attach`, `/proc/PID/status`).
pub fn pid(container: &str) -> anyhow::Result<u32> {
    let out = docker(&["inspect", "-f", "{{.State.Pid}}", container])?;
    let pid: u32 = out.trim().parse().context("container PID")?;
    anyhow::ensure!(pid != 0, "{container} is not running");
    Ok(pid)
}

/// A subnet prefix (`10.N.M`, N in 200..250) for a test network: a new one at each call in this
/// process, starting from a point that depends on the process id.
fn subnet_prefix() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let n = std::process::id().wrapping_mul(7919).wrapping_add(i) % (50 * 250);
    format!("10.{}.{}", 200 + n / 250, n % 250)
}

/// Runs the CLI image once on `network` against `url` with `token`; returns whether it succeeded
/// and what it printed.
pub fn cli(network: &str, url: &str, token: &str, args: &[&str]) -> (bool, String) {
    let image = cli_image();
    let url = format!("XCAT3_URL={url}");
    let mut all = vec![
        "run",
        "--rm",
        "--network",
        network,
        "-e",
        &url,
        "-e",
        "XCAT3_TOKEN",
    ];
    all.push(&image);
    all.extend(args);
    match Command::new("docker")
        .args(&all)
        .env("XCAT3_TOKEN", token)
        .output()
    {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, format!("run docker: {e}")),
    }
}
