//! What conductors write: shard epochs (fencing), node power state, node events.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait as _, EntityTrait, QueryFilter, QuerySelect,
};
use std::collections::HashMap;

use xcat3_types::PowerState;

use crate::entity::{node, node_event, shard};
use crate::{KEYS_PER_QUERY, ROWS_PER_STATEMENT, Result, Store, now_ms};

/// Most events kept per node; older ones are deleted as new ones are written.
pub const EVENTS_PER_NODE: usize = 100;

/// Nodes whose events one query reads: 10,000 bound names (SQLite takes 32,766 parameters,
/// PostgreSQL 65,535).
pub const EVENT_NODES_PER_QUERY: usize = 10_000;

/// One conductor write for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUpdate {
    pub node: String,
    /// New power state, if it changed.
    pub power_state: Option<PowerState>,
    /// An event to append to the node's history: (kind, message).
    pub event: Option<(String, String)>,
}

/// One entry of a node's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub node: String,
    pub at: i64,
    pub kind: String,
    pub message: String,
    pub conductor: String,
}

impl Store {
    /// The highest fencing epoch recorded for any shard (0 when none is): a coordinator's tokens
    /// must start above it.
    pub async fn max_shard_epoch(&self) -> Result<i64> {
        let max: Option<Option<i64>> = shard::Entity::find()
            .select_only()
            .column_as(shard::Column::Epoch.max(), "max")
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(max.flatten().unwrap_or(0))
    }

    /// Records that `owner` claimed `shard` with fencing token `epoch`. Returns false (and changes
    /// nothing) if the shard already carries a newer token.
    pub async fn claim_shard(&self, shard: u32, epoch: i64, owner: &str) -> Result<bool> {
        let txn = self.begin_write().await?;
        let current = shard::Entity::find_by_id(shard as i32).one(&txn).await?;
        let claimed = match current {
            None => {
                shard::Entity::insert(shard::ActiveModel {
                    id: Set(shard as i32),
                    epoch: Set(epoch),
                    owner: Set(owner.to_owned()),
                })
                .exec_without_returning(&txn)
                .await?;
                true
            }
            Some(row) if row.epoch < epoch => {
                shard::Entity::update_many()
                    .col_expr(shard::Column::Epoch, Expr::value(epoch))
                    .col_expr(shard::Column::Owner, Expr::value(owner))
                    .filter(shard::Column::Id.eq(shard as i32))
                    .exec(&txn)
                    .await?;
                true
            }
            Some(row) => row.epoch == epoch && row.owner == owner,
        };
        txn.commit().await?;
        Ok(claimed)
    }

    /// Applies a conductor's updates to nodes of `shard`, in one transaction, only if the shard's
    /// epoch is still `token`; otherwise fails with [`Error::Fenced`] and writes nothing.
    pub async fn conductor_write(
        &self,
        shard: u32,
        token: i64,
        conductor: &str,
        updates: &[NodeUpdate],
    ) -> Result<()> {
        let txn = self.begin_write().await?;
        crate::deploys::check_fence(&txn, shard, token).await?;
        let now = now_ms();
        for state in [PowerState::On, PowerState::Off, PowerState::Unknown] {
            let names: Vec<String> = updates
                .iter()
                .filter(|u| u.power_state == Some(state))
                .map(|u| u.node.clone())
                .collect();
            for chunk in names.chunks(KEYS_PER_QUERY) {
                node::Entity::update_many()
                    .col_expr(node::Column::PowerState, Expr::value(state.to_string()))
                    .filter(node::Column::Name.is_in(chunk.iter().cloned()))
                    .exec(&txn)
                    .await?;
            }
        }
        let events: Vec<node_event::ActiveModel> = updates
            .iter()
            .filter_map(|u| {
                u.event
                    .as_ref()
                    .map(|(kind, message)| node_event::ActiveModel {
                        node: Set(u.node.clone()),
                        at: Set(now),
                        kind: Set(kind.clone()),
                        message: Set(message.clone()),
                        conductor: Set(conductor.to_owned()),
                        ..Default::default()
                    })
            })
            .collect();
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            node_event::Entity::insert_many(chunk.iter().cloned())
                .exec_without_returning(&txn)
                .await?;
        }
        let evented: Vec<String> = updates
            .iter()
            .filter(|u| u.event.is_some())
            .map(|u| u.node.clone())
            .collect();
        Self::trim_events(&txn, &evented).await?;
        txn.commit().await?;
        Ok(())
    }

    /// The latest `limit` events of each named node: node by node in the order of `names`,
    /// oldest first per node. One query for up to [`EVENT_NODES_PER_QUERY`] names (a window
    /// over the events of the nodes asked, on the `node` index), not one per node.
    pub async fn node_events(&self, names: &[String], limit: u64) -> Result<Vec<EventRecord>> {
        let backend = self.db.get_database_backend();
        let mut by_node: HashMap<String, Vec<EventRecord>> = HashMap::new();
        for chunk in names.chunks(EVENT_NODES_PER_QUERY) {
            let sql = format!(
                "SELECT node, at, kind, message, conductor FROM (SELECT node, at, kind, message, \
                 conductor, id, ROW_NUMBER() OVER (PARTITION BY node ORDER BY id DESC) AS newer \
                 FROM node_events WHERE node IN ({})) ranked WHERE newer <= {limit} ORDER BY id",
                crate::bind_marks(backend, chunk.len())
            );
            let values: Vec<sea_orm::Value> = chunk.iter().map(|n| n.clone().into()).collect();
            let rows = self
                .db
                .query_all_raw(sea_orm::Statement::from_sql_and_values(
                    backend, sql, values,
                ))
                .await?;
            for r in rows {
                let e = EventRecord {
                    node: r.try_get_by_index(0)?,
                    at: r.try_get_by_index(1)?,
                    kind: r.try_get_by_index(2)?,
                    message: r.try_get_by_index(3)?,
                    conductor: r.try_get_by_index(4)?,
                };
                by_node.entry(e.node.clone()).or_default().push(e);
            }
        }
        Ok(names
            .iter()
            .filter_map(|n| by_node.remove(n))
            .flatten()
            .collect())
    }

    /// Deletes the events of `nodes` beyond the newest [`EVENTS_PER_NODE`] of each. Called in
    /// every transaction that writes events, for the nodes it wrote them for, so a node's history
    /// stays bounded however often something happens to it (a dead BMC polled every minute).
    pub(crate) async fn trim_events<C: sea_orm::ConnectionTrait>(
        db: &C,
        nodes: &[String],
    ) -> Result<()> {
        let mut nodes: Vec<&String> = nodes.iter().collect();
        nodes.sort_unstable();
        nodes.dedup();
        let backend = db.get_database_backend();
        for chunk in nodes.chunks(KEYS_PER_QUERY) {
            let sql = format!(
                "DELETE FROM node_events WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() \
                 OVER (PARTITION BY node ORDER BY id DESC) AS newer FROM node_events WHERE node \
                 IN ({})) ranked WHERE newer > {EVENTS_PER_NODE})",
                crate::bind_marks(backend, chunk.len())
            );
            let values: Vec<sea_orm::Value> = chunk.iter().map(|n| (*n).clone().into()).collect();
            db.execute_raw(sea_orm::Statement::from_sql_and_values(
                backend, sql, values,
            ))
            .await?;
        }
        Ok(())
    }

    /// Deletes the history of deleted nodes.
    pub(crate) async fn delete_events<C: sea_orm::ConnectionTrait>(
        db: &C,
        names: &[String],
    ) -> Result<()> {
        for chunk in names.chunks(KEYS_PER_QUERY) {
            node_event::Entity::delete_many()
                .filter(node_event::Column::Node.is_in(chunk.iter().cloned()))
                .exec(db)
                .await?;
        }
        Ok(())
    }
}
