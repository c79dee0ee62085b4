//! `xcat3.v1.ImageService`, forwarded to the image service, so users have one endpoint.

use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};
use xcat3_proto::pb;
use xcat3_runtime::auth::Bearer;
use xcat3_types::Secret;

type Client = pb::image_service_client::ImageServiceClient<InterceptedService<Channel, Bearer>>;

pub struct ImageProxy {
    client: Option<Client>,
}

impl ImageProxy {
    /// `url`: the image service's gRPC URL (none: imports are refused); `token` is sent to it.
    /// With `tls` verifying servers, only an https:// URL is accepted.
    pub fn new(
        url: Option<&str>,
        token: Option<&Secret>,
        tls: &xcat3_runtime::tls::Tls,
    ) -> Result<Self, String> {
        let client = match url {
            None => None,
            Some(url) => {
                let channel = tls
                    .endpoint(url, None)
                    .map_err(|e| format!("image service: {e:#}"))?
                    .connect_timeout(Duration::from_secs(3))
                    .connect_lazy();
                Some(
                    pb::image_service_client::ImageServiceClient::new(InterceptedService::new(
                        channel,
                        Bearer::new(token),
                    ))
                    .max_encoding_message_size(xcat3_runtime::grpc::MAX_MESSAGE_BYTES),
                )
            }
        };
        Ok(Self { client })
    }
}

#[tonic::async_trait]
impl pb::image_service_server::ImageService for ImageProxy {
    type ImportIsoStream = Streaming<pb::ImportIsoProgress>;

    async fn import_iso(
        &self,
        request: Request<Streaming<pb::ImportIsoRequest>>,
    ) -> Result<Response<Self::ImportIsoStream>, Status> {
        let Some(mut client) = self.client.clone() else {
            return Err(Status::unavailable(
                "no image service is configured (--image-grpc)",
            ));
        };
        // Ends the forwarded stream at the first broken message; the image service then sees a
        // short upload and refuses it.
        let inbound = request.into_inner().map_while(|m| m.ok());
        client.import_iso(inbound).await
    }
}
