//! TLS for gRPC, from PEM files (the `tls.crt`, `tls.key` and `ca.crt` of a Kubernetes TLS Secret,
//! as cert-manager writes them).
//!
//! - A listener with a certificate and key speaks TLS only. With a client CA it also requires
//!   every caller to present a certificate from that CA (mutual TLS): the internal services
//!   (conductor, image) are served that way, the public api is not (people come with tokens).
//! - A process with a CA verifies every server it calls against it and refuses `http://` URLs:
//!   a bearer token is only ever sent to a server that proved its name. Its own certificate, if
//!   it has one, is its client certificate.
//!
//! Files are read at start; a renewed certificate takes effect when the process restarts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// The TLS flags every service role takes.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// PEM certificate (chain) this process presents: its gRPC listener then speaks TLS only,
    /// and it is the client certificate when it calls a server that asks for one.
    #[arg(long, env = "XCAT3_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "XCAT3_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates the servers this process calls must chain to; with it, only https://
    /// URLs are called.
    #[arg(long, env = "XCAT3_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM CA certificates callers must present a certificate from (mutual TLS on the listener).
    #[arg(long, env = "XCAT3_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// TLS material, loaded. `Tls::default()` is plaintext.
#[derive(Clone, Debug, Default)]
pub struct Tls {
    identity: Option<Identity>,
    ca: Option<Certificate>,
    client_ca: Option<Certificate>,
}

/// Largest PEM file read: certificates and keys are a few KiB; a CA bundle can be larger.
const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;

fn read_pem(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .with_context(|| format!("read the {what} from {}", path.display()))?;
    let mut pem = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut pem)
        .with_context(|| format!("read the {what} from {}", path.display()))?;
    if pem.len() as u64 > MAX_PEM_BYTES {
        anyhow::bail!("the {what} file {} is larger than 4 MiB", path.display());
    }
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        anyhow::bail!("the {what} file {} holds no PEM block", path.display());
    }
    Ok(pem)
}

impl Tls {
    /// Reads the files named by `args`.
    pub fn load(args: &TlsArgs) -> anyhow::Result<Self> {
        let identity = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(Identity::from_pem(
                read_pem(cert, "TLS certificate")?,
                read_pem(key, "TLS key")?,
            )),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        let ca = args
            .tls_ca
            .as_deref()
            .map(|p| read_pem(p, "TLS CA").map(Certificate::from_pem))
            .transpose()?;
        let client_ca = args
            .tls_client_ca
            .as_deref()
            .map(|p| read_pem(p, "TLS client CA").map(Certificate::from_pem))
            .transpose()?;
        if client_ca.is_some() && identity.is_none() {
            anyhow::bail!("--tls-client-ca needs --tls-cert and --tls-key");
        }
        let tls = Self {
            identity,
            ca,
            client_ca,
        };
        // Unusable files fail the start here, not at the first connection.
        tls.apply(tonic::transport::Server::builder())?;
        if tls.verifies_servers() {
            tls.endpoint("https://check.invalid", None)?;
        }
        Ok(tls)
    }

    /// Whether the listener speaks TLS.
    pub fn serves_tls(&self) -> bool {
        self.identity.is_some()
    }

    /// Whether calls go to verified https:// servers only.
    pub fn verifies_servers(&self) -> bool {
        self.ca.is_some()
    }

    /// The URL scheme this process's own listener is reached with.
    pub fn scheme(&self) -> &'static str {
        if self.serves_tls() { "https" } else { "http" }
    }

    /// The listener's TLS configuration, if it has a certificate.
    pub fn server(&self) -> Option<ServerTlsConfig> {
        let identity = self.identity.clone()?;
        let mut config = ServerTlsConfig::new()
            .identity(identity)
            .timeout(Duration::from_secs(10));
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(ca.clone());
        }
        Some(config)
    }

    /// Applies the listener's TLS configuration to a server builder.
    pub fn apply<L>(
        &self,
        builder: tonic::transport::Server<L>,
    ) -> anyhow::Result<tonic::transport::Server<L>> {
        Ok(match self.server() {
            Some(config) => builder
                .tls_config(config)
                .context("the TLS certificate and key do not make a server configuration")?,
            None => builder,
        })
    }

    /// An endpoint for `url`. An https:// URL is verified against the CA (and against
    /// `server_name` instead of the URL's host, if given); with a CA, http:// is refused, so a
    /// token never goes to a server that did not prove who it is.
    pub fn endpoint(&self, url: &str, server_name: Option<&str>) -> anyhow::Result<Endpoint> {
        let endpoint =
            Endpoint::from_shared(url.to_owned()).with_context(|| format!("bad URL {url:?}"))?;
        let https = url.starts_with("https://");
        match (&self.ca, https) {
            (None, false) => Ok(endpoint),
            (Some(_), false) => anyhow::bail!(
                "{url} is not https:// but TLS is required (--tls-ca): nothing is sent to a server \
                 that cannot prove who it is"
            ),
            (None, true) => anyhow::bail!("{url} is https:// but no CA is configured (--tls-ca)"),
            (Some(ca), true) => {
                let mut config = ClientTlsConfig::new().ca_certificate(ca.clone());
                if let Some(identity) = &self.identity {
                    config = config.identity(identity.clone());
                }
                if let Some(name) = server_name {
                    config = config.domain_name(name);
                }
                endpoint
                    .tls_config(config)
                    .with_context(|| format!("TLS configuration for {url}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_only_sent_over_verified_tls() {
        let dir = std::env::temp_dir().join(format!("xcat3-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let err = Tls::load(&TlsArgs {
            tls_ca: Some(not_pem.clone()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("no PEM block"), "{err:#}");
        let err = Tls::load(&TlsArgs {
            tls_ca: Some(dir.join("missing.pem")),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err:#}");

        let plain = Tls::default();
        assert!(plain.endpoint("http://127.0.0.1:1", None).is_ok());
        let err = plain.endpoint("https://127.0.0.1:1", None).unwrap_err();
        assert!(err.to_string().contains("no CA"), "{err:#}");
        let verifying = Tls {
            ca: Some(Certificate::from_pem("-----BEGIN CERTIFICATE-----\n")),
            ..Default::default()
        };
        let err = verifying.endpoint("http://127.0.0.1:1", None).unwrap_err();
        assert!(err.to_string().contains("not https://"), "{err:#}");
        assert_eq!(plain.scheme(), "http");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
