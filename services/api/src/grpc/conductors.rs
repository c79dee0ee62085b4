//! `xcat3.v1.ConductorService`: who owns which shards, and how busy they are.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use xcat3_proto::convert::timestamp;
use xcat3_proto::{internal, pb};

use crate::dispatch::Dispatcher;

pub struct ConductorService {
    dispatcher: Arc<Dispatcher>,
}

impl ConductorService {
    pub fn new(dispatcher: Arc<Dispatcher>) -> Self {
        Self { dispatcher }
    }
}

#[tonic::async_trait]
impl pb::conductor_service_server::ConductorService for ConductorService {
    async fn list_conductors(
        &self,
        _: Request<pb::ListConductorsRequest>,
    ) -> Result<Response<pb::ListConductorsResponse>, Status> {
        let coordinator = self.dispatcher.coordinator();
        let snapshot = coordinator
            .snapshot()
            .await
            .map_err(|e| Status::unavailable(format!("cannot read shard ownership: {e}")))?;
        let mut conductors = Vec::new();
        for m in &snapshot.members {
            let shards: Vec<u32> = snapshot
                .owners
                .iter()
                .filter(|(_, o)| **o == m.id)
                .map(|(s, _)| *s)
                .collect();
            // In-flight work and liveness come from the conductor itself, briefly.
            let status = match self.dispatcher.client(&m.addr) {
                Ok(mut c) => tokio::time::timeout(
                    Duration::from_secs(2),
                    c.get_status(internal::GetStatusRequest {}),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .map(|r| r.into_inner()),
                Err(_) => None,
            };
            conductors.push(pb::ConductorInfo {
                id: m.id.clone(),
                host: m.host.clone(),
                addr: m.addr.clone(),
                shards,
                in_flight: status.as_ref().map_or(0, |s| s.in_flight),
                heartbeat_at: status.map(|_| xcat3_store::now_ms()).and_then(timestamp),
            });
        }
        Ok(Response::new(pb::ListConductorsResponse {
            shards: snapshot.shards,
            conductors,
        }))
    }
}
