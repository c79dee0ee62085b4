//! `xcat3.internal.v1.Conductor`: what the api calls.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use xcat3_coord::shard_of;
use xcat3_proto::convert::{
    boot_device_from_internal, outcome_to_internal, power_action_from_internal,
};
use xcat3_proto::internal;
use xcat3_types::{ErrorCode, NodeOutcome};

use crate::deploy::DeployParams;
use crate::work::{Executor, Operation, err, ok};

pub struct ConductorService {
    pub executor: Arc<Executor>,
}

type Results = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<internal::NodeOutcomes, Status>> + Send>,
>;

/// The answer to the api: a first message carrying the number of outcomes, then each batch
/// `work` sends, converted for the wire. The work runs in its own task: a caller that goes away
/// does not stop it (its results are recorded in the database all the same).
fn stream<F, Fut>(total: usize, work: F) -> Results
where
    F: FnOnce(mpsc::Sender<Vec<NodeOutcome>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Vec<NodeOutcome>>(16);
    tokio::spawn(tracing::Instrument::instrument(
        work(tx),
        tracing::Span::current(),
    ));
    let first = internal::NodeOutcomes {
        outcomes: Vec::new(),
        total: total as u64,
    };
    Box::pin(
        tokio_stream::once(Ok(first)).chain(ReceiverStream::new(rx).map(|batch| {
            Ok(internal::NodeOutcomes {
                outcomes: batch.into_iter().map(outcome_to_internal).collect(),
                total: 0,
            })
        })),
    )
}

impl ConductorService {
    fn start(&self, names: Vec<String>, op: Operation, no_wait: bool) -> Results {
        if no_wait {
            return self.accept(names, op);
        }
        let executor = self.executor.clone();
        stream(names.len(), move |tx| async move {
            executor.run(names, op, tx).await
        })
    }
}

impl ConductorService {
    /// Answers "accepted" for the nodes of shards this conductor owns (the others get the usual
    /// "not owned" error, so the api sends them elsewhere), then does the work in the background;
    /// its outcome is recorded in the nodes' state and events.
    fn accept(&self, names: Vec<String>, op: Operation) -> Results {
        let executor = self.executor.clone();
        stream(names.len(), move |tx| async move {
            let owned = executor.membership.owned();
            let (mine, others): (Vec<String>, Vec<String>) = names
                .into_iter()
                .partition(|n| owned.contains_key(&shard_of(n, executor.shards)));
            let mut results: Vec<NodeOutcome> = mine.iter().map(|n| ok(n, "accepted")).collect();
            results.extend(others.iter().map(|n| {
                let shard = shard_of(n, executor.shards);
                err(
                    n,
                    ErrorCode::NotOwner,
                    "",
                    format!(
                        "shard {shard} is not owned by conductor {}; retry",
                        executor.id
                    ),
                )
            }));
            let _ = tx.send(results).await;
            drop(tx);
            // The work outlives the call; its results go to the database, not to the caller.
            let (tx, mut rx) = mpsc::channel(16);
            tokio::spawn(async move { while rx.recv().await.is_some() {} });
            executor.run(mine, op, tx).await;
        })
    }
}

#[tonic::async_trait]
impl internal::conductor_server::Conductor for ConductorService {
    type PowerStream = Results;
    type BootDeviceStream = Results;
    type DeployStream = Results;
    type UndeployStream = Results;

    async fn power(
        &self,
        request: Request<internal::PowerRequest>,
    ) -> Result<Response<Results>, Status> {
        let req = request.into_inner();
        let action = power_action_from_internal(req.action)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(nodes = req.names.len(), %action, "power");
        Ok(Response::new(self.start(
            req.names,
            Operation::Power(action),
            req.no_wait,
        )))
    }

    async fn boot_device(
        &self,
        request: Request<internal::BootDeviceRequest>,
    ) -> Result<Response<Results>, Status> {
        let req = request.into_inner();
        let target = boot_device_from_internal(req.device)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(nodes = req.names.len(), device = ?target, "boot device");
        Ok(Response::new(self.start(
            req.names,
            Operation::BootDevice(target),
            req.no_wait,
        )))
    }

    async fn deploy(
        &self,
        request: Request<internal::DeployRequest>,
    ) -> Result<Response<Results>, Status> {
        let req = request.into_inner();
        if req.timeout_seconds == 0 {
            return Err(Status::invalid_argument(
                "timeout_seconds: must be positive",
            ));
        }
        let params = DeployParams {
            osimage: Some(req.osimage).filter(|o| !o.is_empty()),
            reboot: req.reboot,
            timeout: Duration::from_secs(req.timeout_seconds.into()),
            ssh_keys: req.ssh_authorized_keys,
        };
        tracing::info!(nodes = req.names.len(), osimage = ?params.osimage, reboot = params.reboot, "deploy");
        let executor = self.executor.clone();
        Ok(Response::new(stream(
            req.names.len(),
            move |tx| async move { executor.deploy(req.names, params, tx).await },
        )))
    }

    async fn undeploy(
        &self,
        request: Request<internal::UndeployRequest>,
    ) -> Result<Response<Results>, Status> {
        let req = request.into_inner();
        tracing::info!(nodes = req.names.len(), "undeploy");
        let executor = self.executor.clone();
        Ok(Response::new(stream(
            req.names.len(),
            move |tx| async move { executor.undeploy(req.names, tx).await },
        )))
    }

    async fn get_status(
        &self,
        _: Request<internal::GetStatusRequest>,
    ) -> Result<Response<internal::ConductorStatus>, Status> {
        let e = &self.executor;
        Ok(Response::new(internal::ConductorStatus {
            id: e.id.clone(),
            shards: e.membership.owned().into_keys().collect(),
            in_flight: e.metrics.in_flight.get().max(0) as u64,
        }))
    }
}
