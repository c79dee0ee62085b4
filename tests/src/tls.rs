//! A throw-away certificate authority for TLS tests.

use crate::*;

/// A throw-away certificate authority (made with the openssl command), for TLS tests.
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> anyhow::Result<TestCa> {
        let dir = tempfile::Builder::new().prefix("xcat3-ca").tempdir()?;
        let ca = TestCa { dir };
        ca.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=xcat3 test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ])?;
        Ok(ca)
    }

    fn openssl(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues a certificate for `sans` (`IP:127.0.0.1,DNS:conductor`), usable by servers and
    /// clients; returns the certificate and key files.
    pub fn issue(&self, name: &str, sans: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let (cert, key, csr, ext) = (
            format!("{name}.pem"),
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.ext"),
        );
        std::fs::write(
            self.dir.path().join(&ext),
            format!(
                "subjectAltName={sans}\nbasicConstraints=CA:FALSE\n\
                 extendedKeyUsage=serverAuth,clientAuth\n"
            ),
        )?;
        self.openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ])?;
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ])?;
        Ok((self.dir.path().join(cert), self.dir.path().join(key)))
    }
}
