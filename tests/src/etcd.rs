//! A real etcd for the tests.

use crate::*;

/// A real etcd (Debian's `etcd-server`) on free loopback ports with a temporary data directory,
/// killed when dropped.
pub struct TestEtcd {
    _child: Child,
    pub endpoint: String,
    ca: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl TestEtcd {
    pub async fn start() -> anyhow::Result<TestEtcd> {
        Self::launch(None).await
    }

    /// An etcd whose client port speaks TLS only, with the certificate and key given; `ca`
    /// verifies it (etcdctl uses it too).
    pub async fn start_tls(cert: &Path, key: &Path, ca: &Path) -> anyhow::Result<TestEtcd> {
        Self::launch(Some((cert, key, ca))).await
    }

    async fn launch(tls: Option<(&Path, &Path, &Path)>) -> anyhow::Result<TestEtcd> {
        let dir = tempfile::Builder::new().prefix("xcat3-etcd").tempdir()?;
        let (client, peer) = (free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new("etcd");
        cmd.arg("--name=t")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=t={peer_url}"))
            .arg("--log-level=error");
        if let Some((cert, key, _)) = tls {
            cmd.arg(format!("--cert-file={}", cert.display()))
                .arg(format!("--key-file={}", key.display()));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("etcd.log"))?)
            .kill_on_drop(true)
            .spawn()
            .context("start etcd (scripts/install-deps.sh installs Debian's etcd-server)")?;
        let etcd = TestEtcd {
            _child: child,
            endpoint,
            ca: tls.map(|(_, _, ca)| ca.to_owned()),
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !etcd
            .etcdctl(&["--command-timeout=1s", "endpoint", "health"])
            .await
            .is_ok_and(|o| o.status.success())
        {
            if std::time::Instant::now() > deadline {
                bail!(
                    "etcd not healthy within 20 s: {}",
                    std::fs::read_to_string(etcd._dir.path().join("etcd.log")).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(etcd)
    }

    /// Runs etcdctl (API v3) against this etcd.
    pub async fn etcdctl(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        let mut cmd = tokio::process::Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint]);
        if let Some(ca) = &self.ca {
            cmd.arg(format!("--cacert={}", ca.display()));
        }
        cmd.args(args).output().await
    }
}
