//! `xcat3.v1.NetworkService`.

use tonic::{Request, Response, Status};
use xcat3_proto::convert::{network_from_pb, network_to_pb};
use xcat3_proto::pb;
use xcat3_store::Store;
use xcat3_types::{ErrorCode, FieldError, Network};

use super::{field_status, store_status};

pub struct NetworkService {
    store: Store,
}

impl NetworkService {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    async fn get(&self, name: &str) -> Result<Network, Status> {
        self.store
            .get_network(name)
            .await
            .map_err(|e| store_status(&e))?
            .ok_or_else(|| Status::not_found(format!("no network named {name:?}")))
    }

    /// Checks `net` against the other networks and against the NIC addresses that use it.
    async fn check_fits(&self, net: &Network, old: Option<&Network>) -> Result<(), Status> {
        let others = self
            .store
            .list_networks()
            .await
            .map_err(|e| store_status(&e))?;
        if let Some(o) = others
            .iter()
            .find(|o| o.name != net.name && o.overlaps(net))
        {
            return Err(Status::already_exists(format!(
                "subnet: {} overlaps network {} ({})",
                net.cidr(),
                o.name,
                o.cidr()
            )));
        }
        let Some(old) = old else { return Ok(()) };
        for (ip, node) in self
            .store
            .all_nic_ips()
            .await
            .map_err(|e| store_status(&e))?
        {
            let Ok(ip) = ip.parse() else { continue };
            if !old.contains(ip) {
                continue;
            }
            if !net.is_host_address(ip) {
                return Err(Status::failed_precondition(format!(
                    "node {node} uses {ip}, which would fall outside {}; change its address first",
                    net.cidr()
                )));
            }
            if let Some(range) = net.dynamic_range.filter(|r| r.contains(ip)) {
                return Err(Status::failed_precondition(format!(
                    "dynamic_range: {range} would contain {ip}, the address of node {node}"
                )));
            }
        }
        Ok(())
    }
}

/// Applies one `path=value` change to a network (empty value clears an optional field).
fn apply(net: &mut pb::Network, path: &str, value: &str) -> Result<(), FieldError> {
    match path {
        "subnet" => net.subnet = value.to_owned(),
        "netmask" => net.netmask = value.to_owned(),
        "gateway" => net.gateway = value.to_owned(),
        "dynamic_range" => net.dynamic_range = value.to_owned(),
        "nameservers" => {
            net.nameservers = value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        }
        "domain" => net.domain = value.to_owned(),
        "mtu" => {
            net.mtu = if value.is_empty() {
                0
            } else {
                value
                    .parse()
                    .map_err(|_| FieldError::invalid("mtu", format!("{value:?} is not a number")))?
            }
        }
        "name" => return Err(FieldError::invalid("name", "networks cannot be renamed")),
        other => {
            return Err(FieldError::invalid(
                other,
                "unknown attribute; use subnet, netmask, gateway, dynamic_range, nameservers, domain, mtu",
            ));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::network_service_server::NetworkService for NetworkService {
    async fn create_network(
        &self,
        request: Request<pb::Network>,
    ) -> Result<Response<pb::Network>, Status> {
        let net = network_from_pb(&request.into_inner()).map_err(|e| field_status(&e))?;
        self.check_fits(&net, None).await?;
        match self.store.create_network(&net).await {
            Ok(()) => {
                tracing::info!(network = %net.name, cidr = %net.cidr(), "network created");
                Ok(Response::new(network_to_pb(&net)))
            }
            Err(xcat3_store::Error::Conflict(_)) => Err(Status::already_exists(format!(
                "name: network {:?} exists already",
                net.name
            ))),
            Err(e) => Err(store_status(&e)),
        }
    }

    async fn update_network(
        &self,
        request: Request<pb::UpdateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let req = request.into_inner();
        let old = self.get(&req.name).await?;
        let mut wire = network_to_pb(&old);
        for c in &req.changes {
            apply(&mut wire, &c.path, &c.value).map_err(|e| field_status(&e))?;
        }
        let net = network_from_pb(&wire).map_err(|e| field_status(&e))?;
        self.check_fits(&net, Some(&old)).await?;
        self.store
            .save_network(&net)
            .await
            .map_err(|e| store_status(&e))?;
        tracing::info!(network = %net.name, "network updated");
        Ok(Response::new(network_to_pb(&net)))
    }

    async fn delete_network(
        &self,
        request: Request<pb::NetworkRef>,
    ) -> Result<Response<pb::DeleteNetworkResponse>, Status> {
        let name = request.into_inner().name;
        let net = self.get(&name).await?;
        let users: Vec<(String, String)> = self
            .store
            .all_nic_ips()
            .await
            .map_err(|e| store_status(&e))?
            .into_iter()
            .filter(|(ip, _)| ip.parse().is_ok_and(|ip| net.contains(ip)))
            .collect();
        if let Some((ip, node)) = users.first() {
            return Err(field_status(&FieldError::new(
                ErrorCode::FailedPrecondition,
                "",
                format!(
                    "network {name} is in use by {} NIC(s), for example node {node} ({ip})",
                    users.len()
                ),
            )));
        }
        if !self
            .store
            .delete_network(&name)
            .await
            .map_err(|e| store_status(&e))?
        {
            return Err(Status::not_found(format!("no network named {name:?}")));
        }
        tracing::info!(network = %name, "network deleted");
        Ok(Response::new(pb::DeleteNetworkResponse {}))
    }

    async fn get_network(
        &self,
        request: Request<pb::NetworkRef>,
    ) -> Result<Response<pb::Network>, Status> {
        Ok(Response::new(network_to_pb(
            &self.get(&request.into_inner().name).await?,
        )))
    }

    async fn list_networks(
        &self,
        _: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let networks = self
            .store
            .list_networks()
            .await
            .map_err(|e| store_status(&e))?;
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
