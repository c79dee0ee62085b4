//! `xcat3.v1.ServiceRegistry`: the services that run, from their heartbeats.

use std::time::Duration;

use tonic::{Request, Response, Status};
use xcat3_proto::convert::timestamp;
use xcat3_proto::pb;
use xcat3_store::{Store, now_ms};

use super::store_status;

pub struct ServiceRegistry {
    store: Store,
    heartbeat_interval: Duration,
}

impl ServiceRegistry {
    pub fn new(store: Store, heartbeat_interval: Duration) -> Self {
        Self {
            store,
            heartbeat_interval,
        }
    }
}

#[tonic::async_trait]
impl pb::service_registry_server::ServiceRegistry for ServiceRegistry {
    async fn list_services(
        &self,
        _: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let rows = self
            .store
            .list_services()
            .await
            .map_err(|e| store_status(&e))?;
        let online_after = now_ms() - 3 * self.heartbeat_interval.as_millis() as i64;
        Ok(Response::new(pb::ListServicesResponse {
            services: rows
                .into_iter()
                .map(|s| pb::ServiceInfo {
                    online: s.heartbeat_at >= online_after,
                    hostname: s.hostname,
                    kind: s.kind,
                    id: s.id,
                    version: s.version,
                    started_at: timestamp(s.started_at),
                    heartbeat_at: timestamp(s.heartbeat_at),
                })
                .collect(),
        }))
    }
}
