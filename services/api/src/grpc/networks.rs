//! `xcat3.v1.NetworkService`.

use tonic::{Request, Response, Status};
use xcat3_proto::convert::{network_from_pb, network_to_pb};
use xcat3_proto::pb;
use xcat3_store::Store;

use crate::networks::Networks;

use super::{core_status, field_status, store_status};

pub struct NetworkService {
    networks: Networks,
    store: Store,
}

impl NetworkService {
    pub fn new(store: Store) -> Self {
        Self {
            networks: Networks::new(store.clone()),
            store,
        }
    }
}

#[tonic::async_trait]
impl pb::network_service_server::NetworkService for NetworkService {
    async fn create_network(
        &self,
        request: Request<pb::Network>,
    ) -> Result<Response<pb::Network>, Status> {
        let net = network_from_pb(&request.into_inner()).map_err(|e| field_status(&e))?;
        let net = self
            .networks
            .create(net)
            .await
            .map_err(|e| core_status(&e))?;
        tracing::info!(network = %net.name, cidr = %net.cidr(), "network created");
        Ok(Response::new(network_to_pb(&net)))
    }

    async fn update_network(
        &self,
        request: Request<pb::UpdateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let req = request.into_inner();
        let changes: Vec<(String, String)> =
            req.changes.into_iter().map(|c| (c.path, c.value)).collect();
        let net = self
            .networks
            .update(&req.name, &changes)
            .await
            .map_err(|e| core_status(&e))?;
        tracing::info!(network = %net.name, "network updated");
        Ok(Response::new(network_to_pb(&net)))
    }

    async fn delete_network(
        &self,
        request: Request<pb::NetworkRef>,
    ) -> Result<Response<pb::DeleteNetworkResponse>, Status> {
        let name = request.into_inner().name;
        self.networks
            .delete(&name)
            .await
            .map_err(|e| core_status(&e))?;
        tracing::info!(network = %name, "network deleted");
        Ok(Response::new(pb::DeleteNetworkResponse {}))
    }

    async fn get_network(
        &self,
        request: Request<pb::NetworkRef>,
    ) -> Result<Response<pb::Network>, Status> {
        let net = self
            .networks
            .get(&request.into_inner().name)
            .await
            .map_err(|e| core_status(&e))?;
        Ok(Response::new(network_to_pb(&net)))
    }

    async fn list_networks(
        &self,
        _: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let networks = self.networks.list().await.map_err(|e| core_status(&e))?;
        Ok(Response::new(pb::ListNetworksResponse {
            networks: networks.iter().map(network_to_pb).collect(),
        }))
    }

    async fn list_discovered(
        &self,
        request: Request<pb::ListDiscoveredRequest>,
    ) -> Result<Response<pb::ListDiscoveredResponse>, Status> {
        let req = request.into_inner();
        let size = match req.page_size {
            0 => 1000,
            n @ 1..=5000 => u64::from(n),
            n => {
                return Err(Status::invalid_argument(format!(
                    "page_size: {n}; at most 5000"
                )));
            }
        };
        let after =
            if req.page_token.is_empty() {
                None
            } else {
                let parsed = req
                    .page_token
                    .split_once('/')
                    .and_then(|(t, mac)| Some((t.parse::<i64>().ok()?, mac.to_owned())));
                Some(parsed.ok_or_else(|| {
                    Status::invalid_argument("page_token: not one this api gave out")
                })?)
            };
        let (machines, next) = self
            .store
            .list_discovered(after, size)
            .await
            .map_err(|e| store_status(&e))?;
        Ok(Response::new(pb::ListDiscoveredResponse {
            next_page_token: next.map_or_else(String::new, |(t, mac)| format!("{t}/{mac}")),
            machines: machines
                .into_iter()
                .map(|m| pb::DiscoveredMachine {
                    mac: m.mac,
                    ip: m.ip,
                    network: m.network,
                    agent: m.agent,
                    client_arch: m.client_arch,
                    vendor_class: m.vendor_class,
                    first_seen: xcat3_proto::convert::timestamp(m.first_seen),
                    last_seen: xcat3_proto::convert::timestamp(m.last_seen),
                })
                .collect(),
        }))
    }
}
