//! The service registry: which api, conductor, network and image processes run, by heartbeat.

use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder};

use crate::entity::service;
use crate::{Result, Store, now_ms};

/// One running (or recently running) service process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    pub id: String,
    pub hostname: String,
    pub kind: String,
    pub version: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
}

impl Store {
    /// Records (or refreshes) a service process's heartbeat.
    pub async fn heartbeat(&self, s: &ServiceRecord) -> Result<()> {
        service::Entity::insert(service::ActiveModel {
            id: Set(s.id.clone()),
            hostname: Set(s.hostname.clone()),
            kind: Set(s.kind.clone()),
            version: Set(s.version.clone()),
            started_at: Set(s.started_at),
            heartbeat_at: Set(now_ms()),
        })
        .on_conflict(
            OnConflict::column(service::Column::Id)
                .update_column(service::Column::HeartbeatAt)
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        Ok(())
    }

    /// Removes a service on clean shutdown, and entries whose heartbeat is older than `stale_before`.
    pub async fn unregister_service(&self, id: &str, stale_before: i64) -> Result<()> {
        service::Entity::delete_many()
            .filter(
                Condition::any()
                    .add(service::Column::Id.eq(id))
                    .add(service::Column::HeartbeatAt.lt(stale_before)),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }

    pub async fn list_services(&self) -> Result<Vec<ServiceRecord>> {
        let rows = service::Entity::find()
            .order_by_asc(service::Column::Kind)
            .order_by_asc(service::Column::Hostname)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|m| ServiceRecord {
                id: m.id,
                hostname: m.hostname,
                kind: m.kind,
                version: m.version,
                started_at: m.started_at,
                heartbeat_at: m.heartbeat_at,
            })
            .collect())
    }
}
