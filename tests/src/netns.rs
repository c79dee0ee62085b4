//! Network namespaces for the network agent's tests: a "switch" namespace with a bridge, and host
//! namespaces plugged into it with veth pairs. Nothing touches the machine's own interfaces; every
//! namespace (and every process still in it) is removed when its value is dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

use crate::{bin, spawn_ready};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs `ip ARGS`, failing with its error output.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .context("run ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A network namespace made by the test, deleted (with its processes) on drop.
pub struct Netns {
    pub name: String,
    /// Someone else's namespace given a name (`ip netns attach`): dropping it removes the name
    /// only, not the processes in it.
    attached: bool,
}

impl Netns {
    pub fn create(role: &str) -> anyhow::Result<Netns> {
        let name = format!(
            "x3t{}-{}{role}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = Netns {
            name,
            attached: false,
        };
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Names the network namespace of process `pid` (a container's) so that the test can plug
    /// interfaces into it and run commands in it.
    pub fn attach(role: &str, pid: u32) -> anyhow::Result<Netns> {
        let name = format!(
            "x3t{}-{}{role}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "attach", &name, &pid.to_string()])?;
        Ok(Netns {
            name,
            attached: true,
        })
    }

    /// Runs a command in the namespace to completion, failing with its output.
    pub fn run(&self, cmd: &[&str]) -> anyhow::Result<String> {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .with_context(|| format!("run {cmd:?}"))?;
        if !out.status.success() {
            bail!(
                "{cmd:?} in {}: {}{}",
                self.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command that will run in the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .arg(program)
            .kill_on_drop(true);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.attached {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
            return;
        }
        if let Ok(out) = std::process::Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = std::process::Command::new("kill")
                    .args(["-9", pid])
                    .status();
            }
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A layer-2 segment: a bridge in its own namespace that hosts plug into.
pub struct Segment {
    pub switch: Netns,
    ports: AtomicU32,
}

impl Segment {
    pub fn create() -> anyhow::Result<Segment> {
        let switch = Netns::create("sw")?;
        switch.run(&["ip", "link", "add", "br0", "type", "bridge"])?;
        // No STP delay: ports forward at once.
        switch.run(&[
            "ip",
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ])?;
        switch.run(&["ip", "link", "set", "br0", "up"])?;
        Ok(Segment {
            switch,
            ports: AtomicU32::new(0),
        })
    }

    /// Plugs `host` into the segment as interface `ifname`, with `mac` and `cidr` if given.
    pub fn plug(
        &self,
        host: &Netns,
        ifname: &str,
        mac: Option<&str>,
        cidr: Option<&str>,
    ) -> anyhow::Result<()> {
        let port = format!("p{}", self.ports.fetch_add(1, Ordering::Relaxed));
        ip(&[
            "link",
            "add",
            ifname,
            "netns",
            &host.name,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.switch.name,
        ])?;
        self.switch
            .run(&["ip", "link", "set", &port, "master", "br0", "up"])?;
        if let Some(mac) = mac {
            host.run(&["ip", "link", "set", ifname, "address", mac])?;
        }
        if let Some(cidr) = cidr {
            host.run(&["ip", "addr", "add", cidr, "dev", ifname])?;
        }
        host.run(&["ip", "link", "set", ifname, "up"])?;
        Ok(())
    }
}

/// Forwards a Unix socket to a TCP address on the test's loopback, so a process in another network
/// namespace (which has its own loopback) can reach the api: Unix sockets live in the file system.
pub struct UnixProxy {
    pub path: PathBuf,
    stop: tokio_util::sync::CancellationToken,
    _dir: tempfile::TempDir,
}

impl UnixProxy {
    pub fn start(target: std::net::SocketAddr) -> anyhow::Result<UnixProxy> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("api.sock");
        let listener = tokio::net::UnixListener::bind(&path)?;
        let stop = tokio_util::sync::CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = token.cancelled() => return,
                };
                let Ok((inbound, _)) = accepted else {
                    continue;
                };
                tokio::spawn(crate::forward(inbound, target, token.clone()));
            }
        });
        Ok(UnixProxy {
            path,
            stop,
            _dir: dir,
        })
    }

    /// Drops every connection and refuses new ones (the api "goes away" for the agent).
    pub fn cut(&self) {
        self.stop.cancel();
    }
}

impl Drop for UnixProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An `xcat3-server network` agent running in a namespace.
pub struct TestAgent {
    child: Child,
    pub state_dir: PathBuf,
    log: PathBuf,
    pub http: String,
    pub tftp: String,
}

impl TestAgent {
    /// Starts an agent in `ns` serving DHCP on `iface`, TFTP and HTTP on `addr`, reaching the api
    /// through `api_socket` with `token`.
    pub async fn start(
        ns: &Netns,
        iface: &str,
        addr: &str,
        api_socket: &Path,
        token: &str,
        state_dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<TestAgent> {
        std::fs::create_dir_all(state_dir)?;
        let log = state_dir.join("agent.log");
        let mut cmd = ns.command(bin("xcat3-server"));
        cmd.arg("network")
            .args(["--agent-id", &format!("agent-{}", ns.name)])
            .arg("--api-url")
            .arg(format!("unix:{}", api_socket.display()))
            .args(["--dhcp-interfaces", iface])
            .args(["--tftp-listen", &format!("{addr}:69")])
            .args(["--http-listen", &format!("{addr}:8080")])
            .args(["--dns-listen", &format!("{addr}:53")])
            .args(["--network-metrics-listen", &format!("{addr}:9330")])
            .arg("--state-dir")
            .arg(state_dir)
            .args(extra)
            .env("XCAT3_ADMIN_TOKEN", token)
            .env(
                "RUST_LOG",
                "debug,h2=info,hyper=info,tower=info,xcat3_network::dhcp=trace",
            )
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        let (child, ready) = spawn_ready(cmd, "xcat3 network ready", &log).await?;
        Ok(TestAgent {
            child,
            state_dir: state_dir.to_owned(),
            log,
            http: crate::ready_field(&ready, "http=")?,
            tftp: crate::ready_field(&ready, "tftp=")?,
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// An `xcat3-server image` running in a namespace, serving HTTP on `addr:8090` from the same
/// image directory and database as a test server (whose own image service did the imports).
pub struct TestImage {
    child: Child,
    log: PathBuf,
    pub url: String,
}

impl TestImage {
    pub async fn start(
        ns: &Netns,
        addr: &str,
        image_dir: &Path,
        database_url: &str,
        token: &str,
        log_dir: &Path,
    ) -> anyhow::Result<TestImage> {
        std::fs::create_dir_all(log_dir)?;
        let log = log_dir.join("image.log");
        let url = format!("http://{addr}:8090");
        let mut cmd = ns.command(bin("xcat3-server"));
        cmd.arg("image")
            .args(["--image-http-listen", &format!("{addr}:8090")])
            .args(["--image-grpc-listen", "127.0.0.1:0"])
            .args(["--image-base-url", &url])
            .arg("--image-dir")
            .arg(image_dir)
            .args(["--database-url", database_url])
            .env("XCAT3_ADMIN_TOKEN", token)
            .env("RUST_LOG", "debug,h2=info,hyper=info,tower=info,sqlx=info")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        let (child, _) = spawn_ready(cmd, "xcat3 image ready", &log).await?;
        Ok(TestImage { child, log, url })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The dhclient/udhcpc hook: writes the variables of a BOUND event into `$OUT`.
const HOOK: &str = r#"#!/bin/sh
case "$reason$1" in
  BOUND*|bound*|RENEW*|REBOOT*) env > "@OUT@.tmp"; echo "event=$reason$1" >> "@OUT@.tmp"; mv "@OUT@.tmp" "@OUT@";;
esac
exit 0
"#;

/// What a DHCP client was given: the variables its hook saw.
pub type Lease = HashMap<String, String>;

fn hook(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let out = dir.join("lease.env");
    let script = dir.join("hook.sh");
    std::fs::write(&script, HOOK.replace("@OUT@", &out.display().to_string()))?;
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()?;
    let _ = std::fs::remove_file(&out);
    Ok((script, out))
}

fn read_lease(out: &Path) -> anyhow::Result<Lease> {
    let text = std::fs::read_to_string(out).context("the client's hook never ran (no lease)")?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// Runs ISC `dhclient` once on `iface` in `ns` (one DORA, no daemon); extra lines go into its
/// config file.
pub async fn dhclient(ns: &Netns, iface: &str, config: &str) -> anyhow::Result<Lease> {
    let dir = tempfile::tempdir()?;
    let (script, out) = hook(dir.path())?;
    let conf = dir.path().join("dhclient.conf");
    std::fs::write(&conf, config)?;
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        ns.command("dhclient")
            .args(["-4", "-1", "-v", "-sf"])
            .arg(&script)
            .arg("-cf")
            .arg(&conf)
            .arg("-lf")
            .arg(dir.path().join("leases"))
            .arg("-pf")
            .arg(dir.path().join("pid"))
            .arg(iface)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status(),
    )
    .await
    .context("dhclient did not finish in 30 s")??;
    if !status.success() {
        bail!("dhclient got no lease ({status})");
    }
    read_lease(&out)
}

/// Runs busybox `udhcpc` once on `iface` in `ns`, with extra arguments (`-V`, `-x`, `-O`).
pub async fn udhcpc(ns: &Netns, iface: &str, args: &[&str]) -> anyhow::Result<Lease> {
    let dir = tempfile::tempdir()?;
    let (script, out) = hook(dir.path())?;
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        ns.command("udhcpc")
            .args([
                "-i", iface, "-n", "-q", "-f", "-t", "4", "-T", "1", "-A", "1", "-s",
            ])
            .arg(&script)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status(),
    )
    .await
    .context("udhcpc did not finish in 30 s")??;
    if !status.success() {
        bail!("udhcpc got no lease ({status})");
    }
    read_lease(&out)
}

/// An IPv6 router advertiser (dnsmasq with DHCP off: `--port=0`, `ra-only`) on `iface` in `ns`.
/// iPXE waits about 13 s for IPv6 autoconfiguration on every boot when no router answers.
pub fn router_advertiser(ns: &Netns, iface: &str, prefix: &str) -> anyhow::Result<Child> {
    ns.run(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{prefix}1/64"),
        "dev",
        iface,
        "nodad",
    ])?;
    let child = ns
        .command("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--port=0",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--enable-ra",
        ])
        .arg(format!("--interface={iface}"))
        .arg("--bind-interfaces")
        .arg(format!("--dhcp-range={prefix},ra-only"))
        .arg("--pid-file=")
        .arg("--log-facility=-")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(child)
}

/// Firmware of a test VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS with QEMU's iPXE option ROM: the NIC's PXE is already iPXE.
    Bios,
    /// OVMF with EDK2's own PXE client (no option ROM): it fetches iPXE over TFTP.
    Uefi,
}

/// A QEMU machine (TCG) network-booting on a tap in `ns`, enslaved to `bridge`, its serial
/// console in a file. Killed on drop.
pub struct TestVm {
    child: Child,
    pub serial: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestVm {
    pub fn boot(ns: &Netns, bridge: &str, mac: &str, firmware: Firmware) -> anyhow::Result<TestVm> {
        Self::boot_with_memory(ns, bridge, mac, firmware, 256)
    }

    /// [`TestVm::boot`] with `memory_mib` of RAM (the Debian installer unpacks a 40 MB initrd).
    pub fn boot_with_memory(
        ns: &Netns,
        bridge: &str,
        mac: &str,
        firmware: Firmware,
        memory_mib: u32,
    ) -> anyhow::Result<TestVm> {
        let dir = tempfile::tempdir()?;
        let tap = format!("tap{}", NEXT.fetch_add(1, Ordering::Relaxed));
        ns.run(&["ip", "tuntap", "add", "dev", &tap, "mode", "tap"])?;
        ns.run(&["ip", "link", "set", &tap, "master", bridge, "up"])?;
        let serial = dir.path().join("serial.log");
        let mut cmd = ns.command("qemu-system-x86_64");
        cmd.args([
            "-accel",
            "tcg",
            "-M",
            "q35",
            "-m",
            &memory_mib.to_string(),
            "-nographic",
            "-nodefaults",
            "-no-reboot",
        ])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args([
            "-netdev",
            &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
        ]);
        match firmware {
            Firmware::Bios => {
                cmd.args(["-device", &format!("virtio-net-pci,netdev=n0,mac={mac}")]);
            }
            Firmware::Uefi => {
                let vars = dir.path().join("vars.fd");
                std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars)?;
                cmd.args([
                    "-drive",
                    "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
                ])
                .arg("-drive")
                .arg(format!("if=pflash,format=raw,file={}", vars.display()))
                .args([
                    "-device",
                    &format!("virtio-net-pci,netdev=n0,mac={mac},romfile="),
                ]);
            }
        }
        cmd.args(["-boot", "n"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().context("start qemu-system-x86_64")?;
        Ok(TestVm {
            child,
            serial,
            _dir: dir,
        })
    }

    /// What the VM printed on its serial console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
