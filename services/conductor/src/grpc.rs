//! `xcat3.internal.v1.Conductor`: what the api calls.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use xcat3_proto::{internal, pb};

use crate::driver::{BootDevice, PowerAction};
use crate::work::{Executor, Operation};

pub struct ConductorService {
    pub executor: Arc<Executor>,
}

type Results = ReceiverStream<Result<pb::NodeResults, Status>>;

impl ConductorService {
    fn start(&self, names: Vec<String>, op: Operation) -> Results {
        let (tx, mut rx) = mpsc::channel::<Vec<pb::NodeResult>>(16);
        let (out_tx, out_rx) = mpsc::channel(16);
        let total = names.len() as u64;
        let executor = self.executor.clone();
        tokio::spawn(async move { executor.run(names, op, tx).await });
        tokio::spawn(async move {
            let _ = out_tx
                .send(Ok(pb::NodeResults {
                    results: Vec::new(),
                    total,
                }))
                .await;
            while let Some(results) = rx.recv().await {
                if out_tx
                    .send(Ok(pb::NodeResults { results, total: 0 }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        ReceiverStream::new(out_rx)
    }
}

#[tonic::async_trait]
impl internal::conductor_server::Conductor for ConductorService {
    type PowerStream = Results;
    type BootDeviceStream = Results;

    async fn power(
        &self,
        request: Request<internal::PowerRequest>,
    ) -> Result<Response<Results>, Status> {
        let req = request.into_inner();
        let action: PowerAction = req
            .action
            .parse()
            .map_err(|e| Status::invalid_argument(format!("action: {e}")))?;
        tracing::info!(nodes = req.names.len(), %action, "power");
        Ok(Response::new(
            self.start(req.names, Operation::Power(action)),
        ))
    }

    async fn boot_device(
        &self,
        request: Request<internal::BootDeviceRequest>,
    ) -> Result<Response<Results>, Status> {
        let req = request.into_inner();
        let target = match req.device.as_str() {
            "status" => None,
            other => Some(
                BootDevice::parse_target(other)
                    .map_err(|e| Status::invalid_argument(format!("device: {e}")))?,
            ),
        };
        tracing::info!(nodes = req.names.len(), device = %req.device, "boot device");
        Ok(Response::new(
            self.start(req.names, Operation::BootDevice(target)),
        ))
    }

    async fn get_status(
        &self,
        _: Request<internal::GetStatusRequest>,
    ) -> Result<Response<internal::ConductorStatus>, Status> {
        let e = &self.executor;
        Ok(Response::new(internal::ConductorStatus {
            id: e.id.clone(),
            shards: e.membership.owned().into_keys().collect(),
            in_flight: e.in_flight.load(Ordering::Relaxed),
        }))
    }
}
