//! `xcat3.v1.NodeService`.

use std::sync::Arc;

use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status};
use xcat3_proto::convert::{node_from_pb, node_to_pb, node_with_secrets_to_pb, outcome_to_pb};

use xcat3_proto::{internal, pb};
use xcat3_types::{BootDevice, FieldError, PowerAction};

use tracing::Instrument as _;

use crate::dispatch::{Dispatcher, Op};
use crate::inventory::{Inventory, Outcome, Report, RequestError};
use crate::netboot::BootFeed;
use crate::order::Places;
use crate::reads::{NodeRead, Reads, events_limit, split_missing};

/// Results per streamed message.
const RESULTS_PER_MESSAGE: usize = 5000;

pub struct NodeService {
    inventory: Inventory,
    reads: Reads,
    dispatcher: Arc<Dispatcher>,
    deploys: Deploys,
}

/// What deploys need beyond the dispatcher.
pub struct Deploys {
    /// Refreshed when a deploy or undeploy has run, before the call ends: a node answered
    /// `wait-callback` has its install boot action on its way to the agents.
    pub feed: BootFeed,
    pub image_url: Option<String>,
    pub default_timeout: Duration,
}

impl NodeService {
    pub fn new(inventory: Inventory, dispatcher: Arc<Dispatcher>, deploys: Deploys) -> Self {
        Self {
            reads: Reads::new(inventory.clone(), dispatcher.coordinator().clone()),
            inventory,
            dispatcher,
            deploys,
        }
    }

    /// The nodes of a noderange in pages, the first naming what is not a node.
    async fn node_pages(
        &self,
        noderange: &str,
        secrets: Secrets,
    ) -> Result<Response<PageStream>, Status> {
        let resolved = self.reads.resolve(noderange).await.map_err(super::status)?;
        let first = pb::NodePage {
            nodes: Vec::new(),
            errors: resolved.missing.into_iter().map(outcome_to_pb).collect(),
            total: resolved.nodes.len() as u64,
        };
        let pages = self.reads.nodes(resolved.nodes).map(move |page| {
            let page = page.map_err(|e| super::store_status(&e))?;
            Ok(pb::NodePage {
                nodes: page.iter().map(|read| node_pb(read, secrets)).collect(),
                errors: Vec::new(),
                total: 0,
            })
        });
        Ok(Response::new(Box::pin(
            tokio_stream::once(Ok(first)).chain(pages),
        )))
    }

    /// Resolves the noderange, answers names that are not nodes, and sends the rest to the
    /// conductors.
    async fn dispatch(&self, noderange: &str, op: Op) -> Result<Response<ResultStream>, Status> {
        let refresh_feed = matches!(op, Op::Deploy(_) | Op::Undeploy)
            .then(|| (self.deploys.feed.clone(), self.inventory.store().clone()));
        let (names, index) = self
            .inventory
            .resolve(noderange)
            .await
            .map_err(super::status)?;
        let dispatcher = self.dispatcher.clone();
        Ok(Response::new(stream_results(move |tx| async move {
            let _ = tx.send(Report::Names(names.clone())).await;
            let (present, missing) = split_missing(names, &index);
            let _ = tx.send(Report::Results(missing)).await;
            let (results_tx, mut results) = mpsc::channel(16);
            let run = tokio::spawn(
                async move { dispatcher.run(present, op, results_tx).await }
                    .instrument(tracing::Span::current()),
            );
            while let Some(outcomes) = results.recv().await {
                let _ = tx.send(Report::Results(outcomes)).await;
            }
            run.await
                .map_err(|e| RequestError::Internal(format!("the dispatch failed: {e}")))?;
            // Before the call ends: a node answered `wait-callback` has its install boot
            // action on its way to the agents.
            if let Some((feed, store)) = refresh_feed
                && let Err(e) = feed.refresh(&store).await
            {
                tracing::warn!(error = %e, "refreshing the boot table after a deploy failed; the next poll will");
            }
            Ok(())
        })))
    }
}

/// A blank node with `attributes` applied in order: the template of `create NODERANGE
/// path=value ...`, in the grammar of `update`.
fn template_from(attributes: &[pb::AttributeChange]) -> Result<xcat3_types::Node, FieldError> {
    let mut node = xcat3_types::Node::new("");
    let changes = crate::changes::parse_all(
        attributes
            .iter()
            .map(|a| (a.path.as_str(), a.value.as_str())),
    )?;
    for c in changes {
        c.apply(&mut node)?;
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(path: String, value: &str) -> pb::AttributeChange {
        pb::AttributeChange {
            path,
            value: value.into(),
        }
    }

    #[test]
    fn templates_are_bounded_before_they_are_copied() {
        let too_many: Vec<_> = (0..=crate::changes::MAX_CHANGES)
            .map(|i| attribute(format!("labels/l{i}"), "x"))
            .collect();
        assert!(template_from(&too_many).is_err());
        // 65 NICs: parsed, then refused by the size check the create path runs on the template.
        let nics: Vec<_> = (0..=xcat3_types::MAX_NICS)
            .map(|i| attribute(format!("nics/e{i}/mac"), &format!("52:54:00:00:01:{i:02x}")))
            .collect();
        let template = template_from(&nics).unwrap();
        assert!(template.check_sizes().is_err());
    }
}

/// The names that are nodes, and a "no such node" result for each of the others.
type ResultStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::NodeResults, Status>> + Send>>;
type PageStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::NodePage, Status>> + Send>>;
type EventStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::EventPage, Status>> + Send>>;

/// A node for the wire, its secrets masked or shown.
fn node_pb(read: &NodeRead, secrets: Secrets) -> pb::Node {
    let r = &read.record;
    let mut n = match secrets {
        Secrets::Masked => node_to_pb(&r.node, r.created_at, r.updated_at),
        Secrets::Shown => node_with_secrets_to_pb(&r.node, r.created_at, r.updated_at),
    };
    n.conductor = read.conductor.clone().unwrap_or_default();
    n
}

/// Whether node pages carry secrets in clear (`ExportNodes`) or masked (everything else).
#[derive(Clone, Copy)]
enum Secrets {
    Masked,
    Shown,
}

/// Results for the wire, each with its node's place in the request when it is known, at most
/// [`RESULTS_PER_MESSAGE`] to a message.
fn messages(
    outcomes: Vec<Outcome>,
    mut places: Option<&mut Places>,
) -> impl Iterator<Item = pb::NodeResults> {
    let mut results: Vec<pb::NodeResult> = outcomes
        .into_iter()
        .map(|o| {
            let index = places.as_mut().map_or(0, |p| p.take(&o.name));
            pb::NodeResult {
                index,
                ..outcome_to_pb(o)
            }
        })
        .collect();
    std::iter::from_fn(move || {
        if results.is_empty() {
            return None;
        }
        let rest = results.split_off(results.len().min(RESULTS_PER_MESSAGE));
        Some(pb::NodeResults {
            results: std::mem::replace(&mut results, rest),
            total: 0,
        })
    })
}

/// Runs a many-node operation in its own task (a client that goes away does not stop it) and
/// streams its reports as `NodeResults`: the total first, then each result as it comes, with its
/// node's place in the request, then the operation's own failure, if any.
fn stream_results<F, Fut>(op: F) -> ResultStream
where
    F: FnOnce(mpsc::Sender<Report>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), RequestError>> + Send + 'static,
{
    let (tx, mut reports) = mpsc::channel::<Report>(8);
    let work = tokio::spawn(op(tx).instrument(tracing::Span::current()));
    Box::pin(async_stream::try_stream! {
        let mut places: Option<Places> = None;
        while let Some(report) = reports.recv().await {
            match report {
                Report::Names(names) => {
                    let p = Places::new(names);
                    yield pb::NodeResults {
                        results: Vec::new(),
                        total: p.total() as u64,
                    };
                    places = Some(p);
                }
                Report::Results(outcomes) => {
                    for m in messages(outcomes, places.as_mut()) {
                        yield m;
                    }
                }
            }
        }
        match work.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => Err(super::status(e))?,
            Err(e) => Err(Status::internal(format!("the operation failed: {e}")))?,
        }
    })
}

#[tonic::async_trait]
impl pb::node_service_server::NodeService for NodeService {
    type CreateNodesStream = ResultStream;
    type UpdateNodesStream = ResultStream;
    type DeleteNodesStream = ResultStream;
    type GetNodesStream = PageStream;
    type ExportNodesStream = PageStream;
    type PowerStream = ResultStream;
    type BootDeviceStream = ResultStream;
    type GetEventsStream = EventStream;
    type DeployStream = ResultStream;
    type UndeployStream = ResultStream;

    async fn deploy(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<ResultStream>, Status> {
        let req = request.into_inner();
        if self.deploys.image_url.is_none() {
            return Err(Status::failed_precondition(
                "the api has no --image-url: nodes would not know where to load an installer from",
            ));
        }
        xcat3_types::validate_ssh_keys(&req.ssh_authorized_keys)
            .map_err(|e| super::field_status(&e))?;
        let timeout_seconds = if req.timeout_seconds == 0 {
            u32::try_from(self.deploys.default_timeout.as_secs()).unwrap_or(u32::MAX)
        } else {
            req.timeout_seconds
        };
        tracing::info!(noderange = %req.noderange, osimage = %req.osimage, reboot = req.reboot, "deploy");
        let op = Op::Deploy(internal::DeployRequest {
            names: Vec::new(),
            osimage: req.osimage,
            reboot: req.reboot,
            timeout_seconds,
            ssh_authorized_keys: req.ssh_authorized_keys,
        });
        self.dispatch(&req.noderange, op).await
    }

    async fn undeploy(
        &self,
        request: Request<pb::UndeployRequest>,
    ) -> Result<Response<ResultStream>, Status> {
        let req = request.into_inner();
        tracing::info!(noderange = %req.noderange, "undeploy");
        self.dispatch(&req.noderange, Op::Undeploy).await
    }

    async fn power(
        &self,
        request: Request<pb::PowerRequest>,
    ) -> Result<Response<ResultStream>, Status> {
        let req = request.into_inner();
        let action: PowerAction = req
            .action
            .parse()
            .map_err(|e| Status::invalid_argument(format!("action: {e}")))?;
        tracing::info!(noderange = %req.noderange, %action, "power");
        self.dispatch(&req.noderange, Op::Power(action, req.no_wait))
            .await
    }

    async fn boot_device(
        &self,
        request: Request<pb::BootDeviceRequest>,
    ) -> Result<Response<ResultStream>, Status> {
        let req = request.into_inner();
        let device = match req.device.as_str() {
            "status" => None,
            other => Some(
                BootDevice::parse_target(other)
                    .map_err(|e| Status::invalid_argument(format!("device: {e}")))?,
            ),
        };
        tracing::info!(noderange = %req.noderange, device = %req.device, "boot device");
        self.dispatch(&req.noderange, Op::BootDevice(device, req.no_wait))
            .await
    }

    async fn get_events(
        &self,
        request: Request<pb::GetEventsRequest>,
    ) -> Result<Response<Self::GetEventsStream>, Status> {
        let req = request.into_inner();
        let resolved = self
            .reads
            .resolve(&req.noderange)
            .await
            .map_err(super::status)?;
        let limit = events_limit(req.limit).map_err(|e| super::field_status(&e))?;
        let pages = self.reads.events(resolved.nodes, limit).map(|page| {
            let events = page.map_err(|e| super::store_status(&e))?;
            Ok(pb::EventPage {
                events: events
                    .into_iter()
                    .map(|e| pb::Event {
                        node: e.node,
                        at: xcat3_proto::convert::timestamp(e.at),
                        kind: e.kind,
                        message: e.message,
                        conductor: e.conductor,
                    })
                    .collect(),
            })
        });
        Ok(Response::new(Box::pin(pages)))
    }

    async fn create_nodes(
        &self,
        request: Request<pb::CreateNodesRequest>,
    ) -> Result<Response<ResultStream>, Status> {
        let req = request.into_inner();
        let nodes: Vec<(String, Result<xcat3_types::Node, FieldError>)> =
            if !req.noderange.is_empty() {
                if !req.nodes.is_empty() {
                    return Err(Status::invalid_argument(
                        "give either nodes or noderange + template, not both",
                    ));
                }
                let names = self
                    .inventory
                    .new_names(&req.noderange)
                    .await
                    .map_err(super::status)?;
                // Checked before it is copied for every new name: a template with a million
                // NICs must not become a million NICs per node.
                let template = if req.attributes.is_empty() {
                    node_from_pb(&req.template.unwrap_or_default())
                        .map_err(|e| Status::invalid_argument(format!("template: {e}")))?
                } else if req.template.is_some() {
                    return Err(Status::invalid_argument(
                        "give either template or attributes, not both",
                    ));
                } else {
                    template_from(&req.attributes)
                        .map_err(|e| Status::invalid_argument(format!("attributes: {e}")))?
                };
                template
                    .check_sizes()
                    .map_err(|e| Status::invalid_argument(format!("template: {e}")))?;
                names
                    .into_iter()
                    .map(|name| {
                        let mut node = template.clone();
                        node.name = name.clone();
                        (name, Ok(node))
                    })
                    .collect()
            } else {
                let limit = self.inventory.limit();
                if req.nodes.len() > limit {
                    return Err(Status::invalid_argument(format!(
                        "nodes: {} nodes in one request; at most {limit} (the noderange limit)",
                        req.nodes.len()
                    )));
                }
                req.nodes
                    .iter()
                    .map(|n| (n.name.clone(), node_from_pb(n)))
                    .collect()
            };
        if nodes.is_empty() {
            return Err(Status::invalid_argument("no nodes to create"));
        }
        tracing::info!(
            nodes = nodes.len(),
            all_or_nothing = req.all_or_nothing,
            "create nodes"
        );
        let inventory = self.inventory.clone();
        Ok(Response::new(stream_results(move |tx| async move {
            inventory.create(nodes, req.all_or_nothing, &tx).await
        })))
    }

    async fn update_nodes(
        &self,
        request: Request<pb::UpdateNodesRequest>,
    ) -> Result<Response<ResultStream>, Status> {
        let req = request.into_inner();
        let changes: Vec<(String, String)> =
            req.changes.into_iter().map(|c| (c.path, c.value)).collect();
        // Change paths, never values: values may be passwords.
        let paths: Vec<&str> = changes.iter().map(|(p, _)| p.as_str()).collect();
        tracing::info!(noderange = %req.noderange, ?paths, "update nodes");
        let inventory = self.inventory.clone();
        Ok(Response::new(stream_results(move |tx| async move {
            inventory
                .update(&req.noderange, &changes, req.all_or_nothing, &tx)
                .await
        })))
    }

    async fn delete_nodes(
        &self,
        request: Request<pb::DeleteNodesRequest>,
    ) -> Result<Response<ResultStream>, Status> {
        let req = request.into_inner();
        if req.noderange.trim().is_empty() {
            return Err(Status::invalid_argument(
                "noderange: say which nodes to delete (\"all\" for every node)",
            ));
        }
        tracing::info!(noderange = %req.noderange, "delete nodes");
        let inventory = self.inventory.clone();
        Ok(Response::new(stream_results(move |tx| async move {
            inventory
                .delete(&req.noderange, req.all_or_nothing, &tx)
                .await
        })))
    }

    async fn get_nodes(
        &self,
        request: Request<pb::GetNodesRequest>,
    ) -> Result<Response<Self::GetNodesStream>, Status> {
        self.node_pages(&request.into_inner().noderange, Secrets::Masked)
            .await
    }

    async fn export_nodes(
        &self,
        request: Request<pb::GetNodesRequest>,
    ) -> Result<Response<Self::ExportNodesStream>, Status> {
        let req = request.into_inner();
        tracing::warn!(noderange = %req.noderange, "export nodes with their secrets");
        self.node_pages(&req.noderange, Secrets::Shown).await
    }
}
