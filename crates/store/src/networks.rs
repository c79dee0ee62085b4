//! Provisioning networks.

use std::net::Ipv4Addr;

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use xcat3_types::{IpRange, Network};

use crate::entity::{network, nic};
use crate::netboot::Touched;
use crate::{Error, Result, Store, corrupt, now_ms};

fn to_active(n: &Network, created_at: i64, updated_at: i64) -> network::ActiveModel {
    network::ActiveModel {
        name: Set(n.name.clone()),
        subnet: Set(n.subnet.to_string()),
        netmask: Set(n.netmask.to_string()),
        gateway: Set(n.gateway.map(|g| g.to_string())),
        dynamic_range: Set(n.dynamic_range.map(|r| r.to_string())),
        nameservers: Set(n
            .nameservers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")),
        domain: Set(n.domain.clone()),
        mtu: Set(n.mtu.map(|m| m as i32)),
        created_at: Set(created_at),
        updated_at: Set(updated_at),
    }
}

fn from_row(m: network::Model) -> Result<Network> {
    let what = || format!("network {}", m.name);
    let ip = |s: &str| s.parse().map_err(|e| corrupt(what(), e));
    let mut n = Network::new(m.name.clone(), ip(&m.subnet)?, ip(&m.netmask)?);
    n.gateway = m.gateway.as_deref().map(ip).transpose()?;
    n.dynamic_range = m
        .dynamic_range
        .as_deref()
        .map(str::parse::<IpRange>)
        .transpose()
        .map_err(|e| corrupt(what(), e))?;
    n.nameservers = m
        .nameservers
        .split(',')
        .filter(|s| !s.is_empty())
        .map(ip)
        .collect::<Result<_>>()?;
    n.domain = m.domain;
    n.mtu = m.mtu.map(|v| v as u32);
    Ok(n)
}

/// What a network write sees, read inside its transaction.
#[derive(Debug, Default)]
pub struct NetworkView {
    /// Every network, by name.
    pub networks: Vec<Network>,
    /// Every static NIC address with its node; read only when the write asks for it.
    pub nic_addresses: Vec<(Ipv4Addr, String)>,
}

/// The write a network operation decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkWrite {
    Create(Network),
    /// Replaces the attributes of the network of that name (the name stays).
    Replace(Network),
    Delete(String),
}

pub(crate) async fn networks_in<C: ConnectionTrait>(db: &C) -> Result<Vec<Network>> {
    network::Entity::find()
        .order_by_asc(network::Column::Name)
        .all(db)
        .await?
        .into_iter()
        .map(from_row)
        .collect()
}

async fn nic_addresses_in<C: ConnectionTrait>(db: &C) -> Result<Vec<(Ipv4Addr, String)>> {
    let rows: Vec<(Option<String>, String)> = nic::Entity::find()
        .select_only()
        .column(nic::Column::Ip)
        .column(nic::Column::Node)
        .filter(nic::Column::Ip.is_not_null())
        .into_tuple()
        .all(db)
        .await?;
    rows.into_iter()
        .filter_map(|(ip, node)| Some((ip?, node)))
        .map(|(ip, node)| {
            let ip = ip
                .parse()
                .map_err(|e| corrupt(format!("NIC address of node {node}"), e))?;
            Ok((ip, node))
        })
        .collect()
}

impl Store {
    /// Runs one network write whose rules depend on the rest of the inventory. Inside one
    /// transaction that holds the inventory write lock it reads the networks (and, with
    /// `with_nics`, every static NIC address), lets `decide` check them and choose the write, and
    /// commits that write: no node or network write can come between the check and the write.
    /// Returns what `decide` gave besides the write; an error from `decide` is returned as it
    /// is, with nothing written.
    pub async fn write_network<T, E: From<Error>>(
        &self,
        with_nics: bool,
        decide: impl FnOnce(&NetworkView) -> std::result::Result<(NetworkWrite, T), E>,
    ) -> std::result::Result<T, E> {
        let txn = self.begin_inventory_write().await?;
        let view = NetworkView {
            networks: networks_in(&txn).await?,
            nic_addresses: if with_nics {
                nic_addresses_in(&txn).await?
            } else {
                Vec::new()
            },
        };
        let (write, answer) = match decide(&view) {
            Ok(decided) => decided,
            Err(e) => {
                txn.rollback().await.map_err(Error::from)?;
                return Err(e);
            }
        };
        let now = now_ms();
        match &write {
            NetworkWrite::Create(n) => {
                network::Entity::insert(to_active(n, now, now))
                    .exec_without_returning(&txn)
                    .await
                    .map_err(Error::from)?;
            }
            NetworkWrite::Replace(n) => {
                let mut row = to_active(n, 0, now);
                row.created_at = sea_orm::ActiveValue::NotSet;
                network::Entity::update(row)
                    .exec(&txn)
                    .await
                    .map_err(Error::from)?;
            }
            NetworkWrite::Delete(name) => {
                network::Entity::delete_by_id(name.clone())
                    .exec(&txn)
                    .await
                    .map_err(Error::from)?;
            }
        }
        self.commit_inventory(txn, Touched::Networks).await?;
        Ok(answer)
    }

    pub async fn get_network(&self, name: &str) -> Result<Option<Network>> {
        network::Entity::find_by_id(name.to_owned())
            .one(&self.db)
            .await?
            .map(from_row)
            .transpose()
    }

    pub async fn list_networks(&self) -> Result<Vec<Network>> {
        networks_in(&self.db).await
    }
}
