//! The connection to the api: address and token from flags, environment or
//! `~/.config/xcat3/config.yaml`, and typed clients that send the token with every call.

use std::path::PathBuf;

use anyhow::Context as _;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use xcat3_proto::pb;

use crate::args::ConnArgs;

/// Largest answer accepted (the api streams big answers in pages well below this).
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Svc = InterceptedService<Channel, Auth>;

#[derive(serde::Deserialize, Default)]
struct FileConfig {
    url: Option<String>,
    token: Option<String>,
    ca: Option<PathBuf>,
}

pub struct Connection {
    url: String,
    auth: Auth,
    /// The CA an https:// api is verified against (PEM).
    ca: Option<Vec<u8>>,
    server_name: Option<String>,
}

impl Connection {
    pub fn from_args(args: &ConnArgs) -> anyhow::Result<Connection> {
        let path = args.client_config.clone().or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/xcat3/config.yaml"))
        });
        let file: FileConfig = match path {
            Some(p) if p.exists() => {
                let text =
                    std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))?;
                serde_yaml::from_str(&text).with_context(|| format!("parse {}", p.display()))?
            }
            _ => FileConfig::default(),
        };
        let url = args
            .url
            .clone()
            .filter(|u| !u.is_empty())
            .or(file.url)
            .unwrap_or_else(|| "http://127.0.0.1:3010".into());
        let url = if url.contains("://") {
            url
        } else {
            format!("http://{url}")
        };
        let token = args
            .token
            .clone()
            .filter(|t| !t.is_empty())
            .or(file.token)
            .filter(|t| !t.is_empty());
        let auth = match token {
            Some(t) => Some(
                format!("Bearer {}", t.trim())
                    .parse()
                    .context("the token contains characters that cannot be sent")?,
            ),
            None => None,
        };
        let ca = match args.ca.clone().or(file.ca) {
            Some(p) => {
                Some(std::fs::read(&p).with_context(|| format!("read the CA {}", p.display()))?)
            }
            None => None,
        };
        if url.starts_with("https://") && ca.is_none() {
            anyhow::bail!(
                "{url} is https://: name the CA its certificate comes from (--ca or XCAT3_CA)"
            );
        }
        Ok(Connection {
            url,
            auth: Auth(auth),
            ca,
            server_name: args.server_name.clone(),
        })
    }

    async fn channel(&self) -> anyhow::Result<Svc> {
        let mut endpoint = Endpoint::from_shared(self.url.clone())
            .with_context(|| format!("{:?} is not a valid api address", self.url))?;
        if let (Some(ca), true) = (&self.ca, self.url.starts_with("https://")) {
            let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let Some(name) = &self.server_name {
                config = config.domain_name(name);
            }
            endpoint = endpoint
                .tls_config(config)
                .context("the CA is not usable")?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach the api at {}", self.url))?;
        Ok(InterceptedService::new(channel, self.auth.clone()))
    }

    pub async fn nodes(&self) -> anyhow::Result<pb::node_service_client::NodeServiceClient<Svc>> {
        Ok(
            pb::node_service_client::NodeServiceClient::new(self.channel().await?)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }

    pub async fn networks(
        &self,
    ) -> anyhow::Result<pb::network_service_client::NetworkServiceClient<Svc>> {
        Ok(pb::network_service_client::NetworkServiceClient::new(
            self.channel().await?,
        ))
    }

    pub async fn osimages(
        &self,
    ) -> anyhow::Result<pb::os_image_service_client::OsImageServiceClient<Svc>> {
        Ok(pb::os_image_service_client::OsImageServiceClient::new(
            self.channel().await?,
        ))
    }

    pub async fn images(
        &self,
    ) -> anyhow::Result<pb::image_service_client::ImageServiceClient<Svc>> {
        Ok(pb::image_service_client::ImageServiceClient::new(
            self.channel().await?,
        ))
    }

    pub async fn passwds(
        &self,
    ) -> anyhow::Result<pb::passwd_service_client::PasswdServiceClient<Svc>> {
        Ok(pb::passwd_service_client::PasswdServiceClient::new(
            self.channel().await?,
        ))
    }

    pub async fn conductors(
        &self,
    ) -> anyhow::Result<pb::conductor_service_client::ConductorServiceClient<Svc>> {
        Ok(pb::conductor_service_client::ConductorServiceClient::new(
            self.channel().await?,
        ))
    }

    pub async fn services(
        &self,
    ) -> anyhow::Result<pb::service_registry_client::ServiceRegistryClient<Svc>> {
        Ok(pb::service_registry_client::ServiceRegistryClient::new(
            self.channel().await?,
        ))
    }
}
