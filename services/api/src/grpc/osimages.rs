//! `xcat3.v1.OsImageService`.

use tonic::{Request, Response, Status};
use xcat3_proto::convert::osimage_to_pb;
use xcat3_proto::pb;
use xcat3_store::{OsImageDeletion, Store};

use super::store_status;

pub struct OsImageService {
    store: Store,
}

impl OsImageService {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl pb::os_image_service_server::OsImageService for OsImageService {
    async fn list_os_images(
        &self,
        _: Request<pb::ListOsImagesRequest>,
    ) -> Result<Response<pb::ListOsImagesResponse>, Status> {
        let images = self
            .store
            .list_osimages()
            .await
            .map_err(|e| store_status(&e))?;
        Ok(Response::new(pb::ListOsImagesResponse {
            osimages: images.into_iter().map(osimage_to_pb).collect(),
        }))
    }

    async fn get_os_image(
        &self,
        request: Request<pb::OsImageRef>,
    ) -> Result<Response<pb::OsImage>, Status> {
        let name = request.into_inner().name;
        let image = self
            .store
            .get_osimage(&name)
            .await
            .map_err(|e| store_status(&e))?;
        image
            .map(|i| Response::new(osimage_to_pb(i)))
            .ok_or_else(|| Status::not_found(format!("no OS image named {name:?}")))
    }

    async fn delete_os_image(
        &self,
        request: Request<pb::OsImageRef>,
    ) -> Result<Response<pb::DeleteOsImageResponse>, Status> {
        let name = request.into_inner().name;
        match self
            .store
            .delete_osimage(&name)
            .await
            .map_err(|e| store_status(&e))?
        {
            OsImageDeletion::Deleted => {
                tracing::info!(osimage = %name, "osimage deleted");
                Ok(Response::new(pb::DeleteOsImageResponse {}))
            }
            OsImageDeletion::NotFound => {
                Err(Status::not_found(format!("no OS image named {name:?}")))
            }
            OsImageDeletion::InUse(nodes) => Err(Status::failed_precondition(format!(
                "osimage {name} is used by node(s) {} (their osimage attribute or a deploy in progress); \
                 change or undeploy them first",
                nodes.join(", ")
            ))),
        }
    }
}
