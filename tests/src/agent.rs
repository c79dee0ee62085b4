//! Network agents on loopback, and waiting for what they serve.

use crate::*;

/// A stand-alone network agent following `server` over loopback: no DHCP, TFTP or DNS, its iPXE
/// scripts on a loopback HTTP port (in its ready line, `http=`), its state in `dir`, plus `extra`
/// flags. Killed when dropped.
pub async fn loopback_agent(server: &TestServer, dir: &Path, extra: &[&str]) -> (Child, String) {
    loopback_agent_of(&server.url(), &server.token, dir, extra).await
}

/// Like [`loopback_agent`], following the api at `api_url` with `token`.
pub async fn loopback_agent_of(
    api_url: &str,
    token: &str,
    dir: &Path,
    extra: &[&str],
) -> (Child, String) {
    let log = dir.join("agent.log");
    let mut cmd = Command::new(bin("xcat3-server"));
    cmd.args([
        "network",
        "--no-dhcp",
        "--tftp-listen",
        "none",
        "--dns-listen",
        "none",
    ])
    .args(["--ipxe-dir", "none", "--http-listen", "127.0.0.1:0"])
    .args([
        "--network-metrics-listen",
        "127.0.0.1:0",
        "--api-url",
        api_url,
    ])
    .arg("--state-dir")
    .arg(dir)
    .args(extra)
    .env("XCAT3_ADMIN_TOKEN", token)
    .env("RUST_LOG", "info,xcat3_network=debug")
    .stdin(Stdio::null())
    .stderr(std::fs::File::create(&log).expect("agent log"))
    .kill_on_drop(true);
    spawn_ready(cmd, "xcat3 network ready", &log)
        .await
        .expect("start a network agent")
}

/// Waits (30 s at most) until the iPXE script at `url` contains `text`.
pub async fn wait_for_script(url: &str, text: &str) {
    wait_for(Duration::from_secs(30), text, || async {
        let out = tokio::process::Command::new("curl")
            .args(["-sf", url])
            .output()
            .await
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .contains(text)
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{url}: {e:#}"));
}
