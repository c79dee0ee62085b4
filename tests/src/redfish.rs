//! A Redfish BMC emulator: sushy-tools.

use crate::*;

/// A Redfish BMC emulator: sushy-tools' `sushy-emulator` (PyPI, installed by
/// scripts/install-deps.sh) with its fake driver, on a free loopback port, basic auth
/// `admin`/[`TestRedfish::PASSWORD`], plain HTTP or HTTPS with a self-signed certificate for
/// 127.0.0.1. Killed when dropped.
pub struct TestRedfish {
    _child: Child,
    pub port: u16,
    /// The CA (PEM) that signed the HTTPS emulator's certificate, when it uses TLS.
    pub cert: Option<PathBuf>,
    _ca: Option<TestCa>,
    _dir: tempfile::TempDir,
}

impl TestRedfish {
    pub const PASSWORD: &'static str = "redfish-secret-77";

    pub async fn start(tls: bool) -> anyhow::Result<TestRedfish> {
        let emulator = std::env::var("XCAT3_TEST_SUSHY").context(
            "XCAT3_TEST_SUSHY is not set: run the tests with scripts/test.sh, which installs sushy-tools",
        )?;
        let python = Path::new(&emulator).with_file_name("python");
        let dir = tempfile::Builder::new().prefix("xcat3-redfish").tempdir()?;
        let d = dir.path();
        let port = free_port();
        let out = std::process::Command::new(&python)
            .arg("-c")
            .arg("import bcrypt,sys; open(sys.argv[1],'w').write('admin:'+bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(rounds=4)).decode()+'\\n')")
            .arg(d.join("htpasswd"))
            .arg(Self::PASSWORD)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "htpasswd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut conf = format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\nSUSHY_EMULATOR_LISTEN_PORT = {port}\n\
             SUSHY_EMULATOR_AUTH_FILE = '{}'\nSUSHY_EMULATOR_FAKE_DRIVER = True\n\
             SUSHY_EMULATOR_FAKE_SYSTEMS = [{{'uuid': '27946b59-9e44-4fa7-8e91-f3527a1ef094', 'name': 'node-0', 'power_state': 'Off', 'nics': [{{'mac': '52:54:00:23:10:01', 'ip': '10.231.0.119'}}]}}]\n",
            d.join("htpasswd").display()
        );
        let mut ca = None;
        let mut cert_path = None;
        if tls {
            let test_ca = TestCa::new()?;
            let (cert, key) = test_ca.issue("redfish", "IP:127.0.0.1")?;
            conf += &format!(
                "SUSHY_EMULATOR_SSL_CERT = '{}'\nSUSHY_EMULATOR_SSL_KEY = '{}'\n",
                cert.display(),
                key.display()
            );
            cert_path = Some(test_ca.ca());
            ca = Some(test_ca);
        }
        std::fs::write(d.join("emu.conf"), conf)?;
        let child = Command::new(&emulator)
            .arg("--config")
            .arg(d.join("emu.conf"))
            // Its state lives under TMPDIR: keep every emulator's apart.
            .env("TMPDIR", d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("emulator.log"))?)
            .kill_on_drop(true)
            .spawn()
            .context("start sushy-emulator")?;
        wait_for(
            Duration::from_secs(20),
            "sushy-emulator listening",
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await
        .with_context(|| std::fs::read_to_string(d.join("emulator.log")).unwrap_or_default())?;
        Ok(TestRedfish {
            _child: child,
            port,
            cert: cert_path,
            _ca: ca,
            _dir: dir,
        })
    }

    /// `control` parameters that point a node at this emulator.
    pub fn control(&self) -> String {
        let scheme = if self.cert.is_some() { "https" } else { "http" };
        format!(
            "bmc_address=127.0.0.1,bmc_port={},bmc_username=admin,bmc_password={},redfish_scheme={scheme}",
            self.port,
            Self::PASSWORD
        )
    }
}
