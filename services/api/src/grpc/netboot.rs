//! `xcat3.internal.v1.NetbootConfig`: the network agents' view of the inventory.

use std::pin::Pin;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use xcat3_proto::MAX_DISCOVERY_REPORT as MAX_REPORT;
use xcat3_proto::internal;
use xcat3_store::{DiscoveredRecord, Store, now_ms};
use xcat3_types::MacAddr;

use super::store_status;
use crate::netboot::BootFeed;

/// Addresses per block of a dynamic range claimed by one agent.
pub const BLOCK_SIZE: u32 = 16;
/// How long a block claim holds without renewal.
pub const BLOCK_TTL: Duration = Duration::from_secs(3600);

pub struct NetbootConfig {
    store: Store,
    feed: BootFeed,
}

impl NetbootConfig {
    pub fn new(store: Store, feed: BootFeed) -> Self {
        Self { store, feed }
    }
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<internal::BootUpdate, Status>> + Send>>;

fn agent_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() || id.len() > 253 {
        return Err(Status::invalid_argument(
            "agent_id: give the agent's name (1 to 253 characters)",
        ));
    }
    Ok(id)
}

#[tonic::async_trait]
impl internal::netboot_config_server::NetbootConfig for NetbootConfig {
    type WatchStream = UpdateStream;

    async fn watch(
        &self,
        request: Request<internal::WatchRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        let agent = agent_id(&request.get_ref().agent_id)?.to_owned();
        self.feed.ready().await;
        let feed = self.feed.clone();
        tracing::info!(agent = %agent, "network agent watching");
        let stream = async_stream::try_stream! {
            let (snapshot, mut rx) = feed.subscribe();
            let mut revision = snapshot.revision;
            yield snapshot;
            loop {
                match rx.recv().await {
                    Ok(update) if update.revision <= revision => {}
                    Ok(update) => yield (*update).clone(),
                    Err(RecvError::Lagged(_)) => {
                        // Too far behind for the backlog: start over from a snapshot.
                        let snapshot;
                        (snapshot, rx) = feed.subscribe();
                        revision = snapshot.revision;
                        yield snapshot;
                        continue;
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn blocks(
        &self,
        request: Request<internal::BlocksRequest>,
    ) -> Result<Response<internal::BlocksResponse>, Status> {
        let req = request.into_inner();
        let agent = agent_id(&req.agent_id)?;
        let net = self
            .store
            .get_network(&req.network)
            .await
            .map_err(|e| store_status(&e))?
            .ok_or_else(|| Status::not_found(format!("no network named {:?}", req.network)))?;
        let Some(range) = net.dynamic_range else {
            return Ok(Response::new(internal::BlocksResponse::default()));
        };
        let ttl = i64::try_from(BLOCK_TTL.as_millis()).unwrap_or(i64::MAX);
        let blocks = self
            .store
            .agent_blocks(
                agent,
                &net.name,
                range,
                BLOCK_SIZE,
                ttl,
                req.claim.then_some(req.want_addresses),
            )
            .await
            .map_err(|e| store_status(&e))?;
        let now = now_ms();
        Ok(Response::new(internal::BlocksResponse {
            blocks: blocks
                .into_iter()
                .map(|b| internal::AddressBlock {
                    first: b.range.start.to_string(),
                    last: b.range.end.to_string(),
                    valid_for_ms: u64::try_from(b.expires_at - now).unwrap_or(0),
                })
                .collect(),
        }))
    }

    async fn report_discovered(
        &self,
        request: Request<internal::ReportDiscoveredRequest>,
    ) -> Result<Response<internal::ReportDiscoveredResponse>, Status> {
        let req = request.into_inner();
        let agent = agent_id(&req.agent_id)?;
        if req.machines.len() > MAX_REPORT {
            return Err(Status::invalid_argument(format!(
                "machines: at most {MAX_REPORT} per report"
            )));
        }
        let mut records = Vec::with_capacity(req.machines.len());
        for m in req.machines {
            let mac: MacAddr = m
                .mac
                .parse()
                .map_err(|e| Status::invalid_argument(format!("machines.mac: {e}")))?;
            let seen = if m.seen_at > 0 { m.seen_at } else { now_ms() };
            records.push(DiscoveredRecord {
                mac: mac.to_string(),
                ip: m.ip,
                network: m.network,
                agent: agent.to_owned(),
                client_arch: m.client_arch,
                vendor_class: m.vendor_class.chars().take(255).collect(),
                first_seen: seen,
                last_seen: seen,
            });
        }
        self.store
            .record_discovered(&records)
            .await
            .map_err(|e| store_status(&e))?;
        Ok(Response::new(internal::ReportDiscoveredResponse {}))
    }
}
