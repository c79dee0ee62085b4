//! What the kvm driver talks to: a real sshd and a libvirt domain.

use crate::*;

/// A real OpenSSH server (Debian's openssh-server) on a free loopback port, accepting one client
/// key for root, with its host key written to a known-hosts file. Killed when dropped.
pub struct TestSshd {
    _child: Child,
    pub port: u16,
    /// Private key the conductor logs in with.
    pub client_key: PathBuf,
    /// A known-hosts file holding this server's host key.
    pub known_hosts: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestSshd {
    pub async fn start() -> anyhow::Result<TestSshd> {
        let dir = tempfile::Builder::new().prefix("xcat3-sshd").tempdir()?;
        let d = dir.path();
        for (name, comment) in [("host_key", "host"), ("client_key", "client")] {
            let out = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(d.join(name))
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "ssh-keygen: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))?;
        let port = free_port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n\
                 PidFile {}\nMaxSessions 64\nMaxStartups 64\n",
                d.join("host_key").display(),
                d.join("authorized_keys").display(),
                d.join("sshd.pid").display()
            ),
        )?;
        let host_pub = std::fs::read_to_string(d.join("host_key.pub"))?;
        let mut fields = host_pub.split_whitespace();
        let (kind, key) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {kind} {key}\n"),
        )?;
        std::fs::create_dir_all("/run/sshd")?;
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log"))?)
            .kill_on_drop(true)
            .spawn()
            .context("start sshd (scripts/install-deps.sh installs openssh-server)")?;
        wait_for(Duration::from_secs(10), "sshd listening", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await?;
        Ok(TestSshd {
            _child: child,
            port,
            client_key: d.join("client_key"),
            known_hosts: d.join("known_hosts"),
            _dir: dir,
        })
    }
}

/// A libvirt domain on the test libvirtd (scripts/libvirt.sh), TCG, no disk: it sits in firmware
/// when started. Undefined (and destroyed) when dropped.
pub struct TestDomain {
    pub name: String,
}

impl TestDomain {
    pub fn define(name: &str) -> anyhow::Result<TestDomain> {
        std::env::var("XCAT3_TEST_LIBVIRT_DIR")
            .context("XCAT3_TEST_LIBVIRT_DIR is not set: run the tests with scripts/test.sh, which starts libvirtd")?;
        let xml = format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='q35'>hvm</type><boot dev='hd'/></os><devices></devices></domain>"
        );
        let mut child = std::process::Command::new("virsh")
            .args(["-c", "qemu:///system", "define", "/dev/stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        use std::io::Write as _;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(xml.as_bytes())?;
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "virsh define {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(TestDomain {
            name: name.to_owned(),
        })
    }

    fn virsh(&self, args: &[&str]) -> String {
        std::process::Command::new("virsh")
            .args(["-c", "qemu:///system"])
            .args(args)
            .arg(&self.name)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    /// `running`, `shut off`, ...
    pub fn state(&self) -> String {
        self.virsh(&["domstate"])
    }

    pub fn xml(&self) -> String {
        self.virsh(&["dumpxml", "--inactive"])
    }
}

impl Drop for TestDomain {
    fn drop(&mut self) {
        self.virsh(&["destroy"]);
        self.virsh(&["undefine"]);
    }
}
