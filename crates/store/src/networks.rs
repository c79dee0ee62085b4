//! Provisioning networks.

use sea_orm::{ActiveValue::Set, EntityTrait, QueryOrder};
use xcat3_types::{IpRange, Network};

use crate::entity::network;
use crate::{Result, Store, corrupt, now_ms};

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

impl Store {
    /// Adds a network; fails with [`crate::Error::Conflict`] if the name is taken.
    pub async fn create_network(&self, n: &Network) -> Result<()> {
        let now = now_ms();
        let txn = self.begin_write().await?;
        network::Entity::insert(to_active(n, now, now))
            .exec_without_returning(&txn)
            .await?;
        self.commit_inventory(txn, Vec::new(), true).await?;
        Ok(())
    }

    /// Replaces a network's attributes (its name stays).
    pub async fn save_network(&self, n: &Network) -> Result<()> {
        let txn = self.begin_write().await?;
        let mut row = to_active(n, 0, now_ms());
        row.created_at = sea_orm::ActiveValue::NotSet;
        network::Entity::update(row).exec(&txn).await?;
        self.commit_inventory(txn, Vec::new(), true).await?;
        Ok(())
    }

    /// Deletes a network; returns whether it existed.
    pub async fn delete_network(&self, name: &str) -> Result<bool> {
        let txn = self.begin_write().await?;
        let res = network::Entity::delete_by_id(name.to_owned())
            .exec(&txn)
            .await?;
        self.commit_inventory(txn, Vec::new(), true).await?;
        Ok(res.rows_affected > 0)
    }

    pub async fn get_network(&self, name: &str) -> Result<Option<Network>> {
        network::Entity::find_by_id(name.to_owned())
            .one(&self.db)
            .await?
            .map(from_row)
            .transpose()
    }

    pub async fn list_networks(&self) -> Result<Vec<Network>> {
        self.list_networks_in(&self.db).await
    }

    pub(crate) async fn list_networks_in<C: sea_orm::ConnectionTrait>(
        &self,
        db: &C,
    ) -> Result<Vec<Network>> {
        network::Entity::find()
            .order_by_asc(network::Column::Name)
            .all(db)
            .await?
            .into_iter()
            .map(from_row)
            .collect()
    }
}
