//! Provision-state changes and deploys in progress. Every state change goes through
//! [`Store::change_states`] or [`Store::finish_deploys`], which apply
//! [`ProvisionEvent::apply`](xcat3_types::ProvisionEvent::apply) to the state read inside the write
//! transaction: a change made meanwhile by someone else is seen, never undone.

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QuerySelect,
};
use xcat3_types::{ProvisionEvent, ProvisionState, Refused};

use crate::entity::{deploy, nic, node, node_event, shard};
use crate::netboot::Touched;
use crate::{Error, KEYS_PER_QUERY, ROWS_PER_STATEMENT, Result, Store, corrupt, now_ms};

/// A deploy being started: what the node installs and how it reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployStart {
    pub osimage: String,
    /// Addresses the node's install files and its callback; secret, single-use.
    pub token: String,
    /// Unix ms after which a missing callback fails the deploy.
    pub deadline: i64,
    pub ssh_keys: Vec<String>,
    pub reboot: bool,
    /// The deploy request's W3C `traceparent` (empty: none).
    pub trace_context: String,
}

/// A deploy in progress, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRecord {
    pub node: String,
    pub start: DeployStart,
    pub started_at: i64,
}

/// One node's state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub node: String,
    pub event: ProvisionEvent,
    /// Why, for the node's history.
    pub message: String,
    /// With [`ProvisionEvent::Deploy`]: the deploy to record.
    pub start: Option<DeployStart>,
}

/// What happened to one [`StateChange`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeOutcome {
    Done(ProvisionState),
    Refused(Refused),
    NotFound,
}

/// A conductor's claim on the shard whose nodes it changes.
#[derive(Debug, Clone, Copy)]
pub struct Fence<'a> {
    pub shard: u32,
    pub token: i64,
    pub conductor: &'a str,
}

/// The installed system's report, as it arrived at a callback URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackReport {
    pub token: String,
    /// False: the installer reported a failure.
    pub success: bool,
    pub message: String,
    /// The address the callback came from; when given, it must be the node's primary NIC
    /// address, or the callback is refused as [`CallbackError::WrongSource`] (and the token
    /// stays valid for the real node).
    pub source: Option<String>,
}

/// A deploy a callback ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub node: String,
    pub trace_context: String,
    /// When the deploy started (Unix ms).
    pub started_at: i64,
}

/// Why a callback changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("no deploy has this token: it was used already, cancelled or never issued")]
    UnknownToken,
    #[error("the deploy of {0} timed out before the callback came")]
    Expired(String),
    #[error("node {node}: {refused}")]
    Refused { node: String, refused: Refused },
    /// The callback did not come from the node's address (told to the caller as an unknown
    /// token: a stranger learns nothing).
    #[error("callback for {node} from {source_ip}, not from the node's address")]
    WrongSource { node: String, source_ip: String },
}

/// The primary NIC address of each of `nodes` that has one.
pub(crate) async fn primary_addresses<C: sea_orm::ConnectionTrait>(
    db: &C,
    nodes: &[String],
) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for chunk in nodes.chunks(KEYS_PER_QUERY) {
        let rows: Vec<(String, Option<String>)> = nic::Entity::find()
            .select_only()
            .column(nic::Column::Node)
            .column(nic::Column::Ip)
            .filter(nic::Column::Node.is_in(chunk.iter().cloned()))
            .filter(nic::Column::IsPrimary.eq(true))
            .into_tuple()
            .all(db)
            .await?;
        out.extend(rows.into_iter().filter_map(|(n, ip)| Some((n, ip?))));
    }
    Ok(out)
}

/// Fails with [`Error::Fenced`] unless `shard`'s recorded epoch is still `token`.
pub(crate) async fn check_fence(txn: &DatabaseTransaction, shard: u32, token: i64) -> Result<()> {
    let epoch = shard::Entity::find_by_id(shard as i32)
        .one(txn)
        .await?
        .map_or(0, |r| r.epoch);
    if epoch != token {
        return Err(Error::Fenced {
            shard,
            token,
            epoch,
        });
    }
    Ok(())
}

fn to_record(m: deploy::Model) -> DeployRecord {
    DeployRecord {
        node: m.node,
        start: DeployStart {
            osimage: m.osimage,
            token: m.token,
            deadline: m.deadline,
            ssh_keys: m.ssh_keys.lines().map(str::to_owned).collect(),
            reboot: m.reboot,
            trace_context: m.trace_context,
        },
        started_at: m.started_at,
    }
}

/// Applies `changes` inside `txn` and returns one outcome per change, in order, plus the nodes
/// whose state changed.
async fn apply_changes(
    txn: &DatabaseTransaction,
    actor: &str,
    changes: &[StateChange],
) -> Result<(Vec<ChangeOutcome>, Vec<String>)> {
    let lock = txn.get_database_backend() == DbBackend::Postgres;
    let mut current: HashMap<String, String> = HashMap::with_capacity(changes.len());
    let names: Vec<String> = changes.iter().map(|c| c.node.clone()).collect();
    for chunk in names.chunks(KEYS_PER_QUERY) {
        let mut query = node::Entity::find()
            .select_only()
            .column(node::Column::Name)
            .column(node::Column::ProvisionState)
            .filter(node::Column::Name.is_in(chunk.iter().cloned()));
        if lock {
            query = query.lock_exclusive();
        }
        let rows: Vec<(String, String)> = query.into_tuple().all(txn).await?;
        current.extend(rows);
    }
    let now = now_ms();
    let mut outcomes = Vec::with_capacity(changes.len());
    let mut by_target: HashMap<ProvisionState, Vec<String>> = HashMap::new();
    let mut starts = Vec::new();
    let mut ended = Vec::new();
    let mut events = Vec::new();
    for change in changes {
        let Some(state) = current.get_mut(&change.node) else {
            outcomes.push(ChangeOutcome::NotFound);
            continue;
        };
        let from: ProvisionState = state
            .parse()
            .map_err(|e| corrupt(format!("provision state of {}", change.node), e))?;
        let to = match change.event.apply(from) {
            Ok(to) => to,
            Err(refused) => {
                outcomes.push(ChangeOutcome::Refused(refused));
                continue;
            }
        };
        // A later change of the same node in this call sees this one.
        *state = to.to_string();
        by_target.entry(to).or_default().push(change.node.clone());
        match (&change.start, to) {
            (Some(start), ProvisionState::Deploying) => starts.push(deploy::ActiveModel {
                node: Set(change.node.clone()),
                osimage: Set(start.osimage.clone()),
                token: Set(start.token.clone()),
                deadline: Set(start.deadline),
                ssh_keys: Set(start.ssh_keys.join("\n")),
                reboot: Set(start.reboot),
                started_at: Set(now),
                trace_context: Set(start.trace_context.clone()),
            }),
            (_, ProvisionState::Deploying | ProvisionState::WaitCallback) => {}
            _ => ended.push(change.node.clone()),
        }
        let mut message = format!("{}: {from} → {to}", change.event);
        if !change.message.is_empty() {
            message = format!("{message}: {}", change.message);
        }
        events.push(node_event::ActiveModel {
            node: Set(change.node.clone()),
            at: Set(now),
            kind: Set("provision".to_owned()),
            message: Set(message),
            conductor: Set(actor.to_owned()),
            ..Default::default()
        });
        outcomes.push(ChangeOutcome::Done(to));
    }
    for chunk in ended.chunks(KEYS_PER_QUERY) {
        deploy::Entity::delete_many()
            .filter(deploy::Column::Node.is_in(chunk.iter().cloned()))
            .exec(txn)
            .await?;
    }
    for chunk in starts.chunks(ROWS_PER_STATEMENT) {
        deploy::Entity::insert_many(chunk.iter().cloned())
            .on_conflict(
                OnConflict::column(deploy::Column::Node)
                    .update_columns([
                        deploy::Column::Osimage,
                        deploy::Column::Token,
                        deploy::Column::Deadline,
                        deploy::Column::SshKeys,
                        deploy::Column::Reboot,
                        deploy::Column::StartedAt,
                        deploy::Column::TraceContext,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    let mut changed = Vec::new();
    for (state, nodes) in by_target {
        for chunk in nodes.chunks(KEYS_PER_QUERY) {
            node::Entity::update_many()
                .col_expr(node::Column::ProvisionState, Expr::value(state.to_string()))
                .filter(node::Column::Name.is_in(chunk.iter().cloned()))
                .exec(txn)
                .await?;
        }
        changed.extend(nodes);
    }
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        node_event::Entity::insert_many(chunk.iter().cloned())
            .exec_without_returning(txn)
            .await?;
    }
    Store::trim_events(txn, &changed).await?;
    Ok((outcomes, changed))
}

impl Store {
    /// Applies provision-state changes in one transaction (fenced by the shard's epoch when
    /// `fence` is given, all nodes then being of that shard), records an event per change, and
    /// raises the inventory revision so the network agents learn the new boot actions. One
    /// outcome per change, in order.
    pub async fn change_states(
        &self,
        fence: Option<Fence<'_>>,
        actor: &str,
        changes: &[StateChange],
    ) -> Result<Vec<ChangeOutcome>> {
        let txn = self.begin_inventory_write().await?;
        if let Some(f) = fence {
            check_fence(&txn, f.shard, f.token).await?;
        }
        let (outcomes, changed) = apply_changes(&txn, actor, changes).await?;
        if changed.is_empty() {
            txn.rollback().await?;
        } else {
            self.commit_inventory(txn, Touched::Nodes(changed)).await?;
        }
        Ok(outcomes)
    }

    /// Ends the deploys the reports' tokens name, in one transaction: `deployed` on success,
    /// `deploy-failed` otherwise. Each token works once. One result per report, in order: the
    /// node and its deploy's trace context, or why nothing changed.
    pub async fn finish_deploys(
        &self,
        actor: &str,
        reports: &[CallbackReport],
    ) -> Result<Vec<Result<Finished, CallbackError>>> {
        let txn = self.begin_inventory_write().await?;
        let mut by_token: HashMap<String, deploy::Model> = HashMap::new();
        let tokens: Vec<String> = reports.iter().map(|r| r.token.clone()).collect();
        for chunk in tokens.chunks(KEYS_PER_QUERY) {
            let rows = deploy::Entity::find()
                .filter(deploy::Column::Token.is_in(chunk.iter().cloned()))
                .all(&txn)
                .await?;
            by_token.extend(rows.into_iter().map(|r| (r.token.clone(), r)));
        }
        let addresses = if reports.iter().any(|r| r.source.is_some()) {
            let nodes: Vec<String> = by_token.values().map(|r| r.node.clone()).collect();
            primary_addresses(&txn, &nodes).await?
        } else {
            HashMap::new()
        };
        let now = now_ms();
        let mut results: Vec<Result<Finished, CallbackError>> = Vec::with_capacity(reports.len());
        let mut changes = Vec::new();
        let mut slots = Vec::new();
        for (i, report) in reports.iter().enumerate() {
            // A token reported twice in one batch counts once.
            if let (Some(source), Some(row)) = (&report.source, by_token.get(&report.token))
                && addresses.get(&row.node) != Some(source)
            {
                results.push(Err(CallbackError::WrongSource {
                    node: row.node.clone(),
                    source_ip: source.clone(),
                }));
                continue;
            }
            let Some(row) = by_token.remove(&report.token) else {
                results.push(Err(CallbackError::UnknownToken));
                continue;
            };
            if row.deadline < now {
                results.push(Err(CallbackError::Expired(row.node)));
                continue;
            }
            let (event, message) = if report.success {
                (
                    ProvisionEvent::Callback,
                    "the installed system reported success".to_owned(),
                )
            } else {
                (
                    ProvisionEvent::Fail,
                    format!("the installer reported failure: {}", report.message),
                )
            };
            results.push(Ok(Finished {
                node: row.node.clone(),
                trace_context: row.trace_context.clone(),
                started_at: row.started_at,
            }));
            slots.push(i);
            changes.push(StateChange {
                node: row.node,
                event,
                message,
                start: None,
            });
        }
        let (outcomes, changed) = apply_changes(&txn, actor, &changes).await?;
        for (slot, outcome) in slots.into_iter().zip(outcomes) {
            let node = results[slot]
                .as_ref()
                .map(|f| f.node.clone())
                .unwrap_or_default();
            match outcome {
                ChangeOutcome::Done(_) => {}
                ChangeOutcome::Refused(refused) => {
                    results[slot] = Err(CallbackError::Refused { node, refused })
                }
                ChangeOutcome::NotFound => results[slot] = Err(CallbackError::UnknownToken),
            }
        }
        if changed.is_empty() {
            txn.rollback().await?;
        } else {
            self.commit_inventory(txn, Touched::Nodes(changed)).await?;
        }
        Ok(results)
    }

    /// The deploy a token addresses, while it is in progress.
    pub async fn deploy_by_token(&self, token: &str) -> Result<Option<DeployRecord>> {
        Ok(deploy::Entity::find()
            .filter(deploy::Column::Token.eq(token))
            .one(&self.db)
            .await?
            .map(to_record))
    }

    /// Nodes whose deploy deadline passed before `now` (Unix ms).
    pub async fn expired_deploys(&self, now: i64) -> Result<Vec<String>> {
        Ok(deploy::Entity::find()
            .select_only()
            .column(deploy::Column::Node)
            .filter(deploy::Column::Deadline.lt(now))
            .into_tuple()
            .all(&self.db)
            .await?)
    }
}
