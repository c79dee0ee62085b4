//! The inventory's many-node operations, on domain types. The gRPC layer converts messages and
//! streams the [`Outcome`]s these functions report; everything here is testable without gRPC.
//!
//! Each operation (1) resolves its noderange once, (2) checks every node in memory against the
//! inventory, read with a handful of set queries, and (3) writes the nodes that passed in
//! transactions of [`WRITE_BATCH`] nodes, reporting each batch's results as it commits. With
//! `all_or_nothing` the write is one transaction and happens only if every node passed.

mod checks;

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::mpsc;
use xcat3_noderange::NoUniverse;
use xcat3_store::Store;
use xcat3_types::{ErrorCode, FieldError, Node};

use crate::changes::Change;
use crate::index::{IndexCache, NodeIndex};
use checks::InventoryCheck;

/// Nodes written per transaction when a request is not all-or-nothing.
pub const WRITE_BATCH: usize = 1000;

/// Nodes per page of a streamed read.
pub const READ_PAGE: usize = 1000;

/// The result for one node.
pub use xcat3_types::NodeOutcome as Outcome;

/// A failure of the whole request (nothing was done).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("noderange: {0}")]
    Noderange(#[from] xcat3_noderange::Error),
    #[error("{0}")]
    Invalid(FieldError),
    #[error(transparent)]
    Store(#[from] xcat3_store::Error),
    #[error("the request's work failed: {0}")]
    Internal(String),
}

/// Runs CPU-heavy request work (building the name index, expanding a noderange) on the blocking
/// pool, so that the async workers keep serving other calls while it runs. The work itself is
/// bounded (the noderange's work budget), so it cannot hold a thread for long.
async fn off_the_workers<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RequestError> + Send + 'static,
) -> Result<T, RequestError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RequestError::Internal(e.to_string()))?
}

/// Where an operation reports its results, batch by batch. The first message names every node of
/// the request, in order: results are sent to the client in that order.
pub type Reporter = mpsc::Sender<Report>;

#[derive(Debug)]
pub enum Report {
    Names(Vec<String>),
    Results(Vec<Outcome>),
}

async fn report(tx: &Reporter, outcomes: Vec<Outcome>) {
    if !outcomes.is_empty() {
        // A closed channel means the client went away; the work still completes.
        let _ = tx.send(Report::Results(outcomes)).await;
    }
}

/// A node that may still be written, or the reason it will not be.
struct Candidate {
    node: Node,
    /// The revision the node was read at (0 for a new node).
    revision: i64,
    error: Option<FieldError>,
}

/// The inventory service core.
#[derive(Clone)]
pub struct Inventory {
    store: Store,
    limit: usize,
    index: Arc<IndexCache>,
}

impl Inventory {
    /// `limit` caps how many names a noderange may expand to.
    pub fn new(store: Store, limit: usize) -> Self {
        let index = Arc::new(IndexCache::new(store.clone()));
        Self {
            store,
            limit,
            index,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The most names a request may name, by noderange or by an explicit list.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Expands a noderange against the inventory (empty means `all`).
    pub async fn resolve(
        &self,
        noderange: &str,
    ) -> Result<(Vec<String>, Arc<NodeIndex>), RequestError> {
        // Refuse text the grammar would refuse before looking at the inventory for it.
        if noderange.len() > xcat3_noderange::MAX_INPUT_LEN {
            return Err(xcat3_noderange::Error::InputTooLong.into());
        }
        let index = self.index.get().await?;
        let expr = if noderange.trim().is_empty() {
            "all".to_owned()
        } else {
            noderange.to_owned()
        };
        let limit = self.limit;
        off_the_workers(move || {
            let names = xcat3_noderange::expand_with_limit(&expr, index.as_ref(), limit)?;
            Ok((names, index))
        })
        .await
    }

    /// Expands a noderange of new names (no groups, no `all`).
    pub async fn new_names(&self, noderange: &str) -> Result<Vec<String>, RequestError> {
        let expr = noderange.to_owned();
        let limit = self.limit;
        off_the_workers(move || {
            Ok(xcat3_noderange::expand_with_limit(
                &expr,
                &NoUniverse,
                limit,
            )?)
        })
        .await
    }

    /// Creates nodes. `nodes` holds each requested node, or why it could not be read.
    pub async fn create(
        &self,
        nodes: Vec<(String, Result<Node, FieldError>)>,
        all_or_nothing: bool,
        tx: &Reporter,
    ) -> Result<(), RequestError> {
        let _ = tx
            .send(Report::Names(
                nodes.iter().map(|(n, _)| n.clone()).collect(),
            ))
            .await;
        let mut seen = HashSet::with_capacity(nodes.len());
        let mut candidates: Vec<Candidate> = nodes
            .into_iter()
            .map(|(name, parsed)| {
                let mut node = parsed
                    .as_ref()
                    .cloned()
                    .unwrap_or_else(|_| Node::new(name.clone()));
                let mut error = parsed.err();
                if error.is_none() {
                    error = node.validate().err();
                }
                if !seen.insert(name.clone()) && error.is_none() {
                    error = Some(FieldError::invalid(
                        "name",
                        "named more than once in this request",
                    ));
                }
                Candidate {
                    node,
                    revision: 0,
                    error,
                }
            })
            .collect();
        let names: Vec<String> = candidates
            .iter()
            .filter(|c| c.error.is_none())
            .map(|c| c.node.name.clone())
            .collect();
        let existing = self.store.existing_node_names(&names).await?;
        for c in candidates.iter_mut().filter(|c| c.error.is_none()) {
            if existing.contains(&c.node.name) {
                c.error = Some(FieldError::exists(
                    "name",
                    "a node with this name exists already",
                ));
            }
        }
        InventoryCheck::load(&self.store, &candidates, true)
            .await?
            .check(&mut candidates);
        self.write(
            candidates,
            all_or_nothing,
            "created",
            tx,
            |store, batch| async move {
                let nodes: Vec<Node> = batch.into_iter().map(|(n, _)| n).collect();
                store.create_nodes(&nodes).await.map(|()| Vec::new())
            },
        )
        .await
    }

    /// Applies `changes` (path, value) to every node of `noderange`.
    pub async fn update(
        &self,
        noderange: &str,
        changes: &[(String, String)],
        all_or_nothing: bool,
        tx: &Reporter,
    ) -> Result<(), RequestError> {
        if changes.is_empty() {
            return Err(RequestError::Invalid(FieldError::invalid(
                "changes",
                "nothing to change",
            )));
        }
        let parsed =
            crate::changes::parse_all(changes.iter().map(|(p, v)| (p.as_str(), v.as_str())))
                .map_err(RequestError::Invalid)?;
        let nics_changed = parsed.iter().any(Change::touches_nics);
        let (names, _) = self.resolve(noderange).await?;
        let _ = tx.send(Report::Names(names.clone())).await;
        let mut found = Vec::with_capacity(names.len());
        for chunk in names.chunks(READ_PAGE * 5) {
            found.extend(self.store.get_nodes(chunk).await?);
        }
        let found_names: HashSet<&str> = found.iter().map(|r| r.node.name.as_str()).collect();
        let missing: Vec<Outcome> = names
            .iter()
            .filter(|n| !found_names.contains(n.as_str()))
            .map(|n| Outcome::err(n, FieldError::not_found("name", "no such node")))
            .collect();
        let mut candidates: Vec<Candidate> = found
            .into_iter()
            .map(|record| {
                let mut node = record.node;
                let error = parsed
                    .iter()
                    .try_for_each(|c| c.apply(&mut node))
                    .and_then(|()| node.validate())
                    .err();
                Candidate {
                    node,
                    revision: record.revision,
                    error,
                }
            })
            .collect();
        InventoryCheck::load(&self.store, &candidates, nics_changed)
            .await?
            .check(&mut candidates);
        if all_or_nothing && !missing.is_empty() {
            for c in candidates.iter_mut().filter(|c| c.error.is_none()) {
                c.error = Some(aborted());
            }
        }
        report(tx, missing).await;
        self.write(
            candidates,
            all_or_nothing,
            "updated",
            tx,
            move |store, batch| async move {
                store.save_nodes(&batch, nics_changed, all_or_nothing).await
            },
        )
        .await
    }

    /// Deletes every node of `noderange`.
    pub async fn delete(
        &self,
        noderange: &str,
        all_or_nothing: bool,
        tx: &Reporter,
    ) -> Result<(), RequestError> {
        let (names, index) = self.resolve(noderange).await?;
        let _ = tx.send(Report::Names(names.clone())).await;
        let (present, missing): (Vec<String>, Vec<String>) =
            names.into_iter().partition(|n| index.contains(n));
        let missing: Vec<Outcome> = missing
            .iter()
            .map(|n| Outcome::err(n, FieldError::not_found("name", "no such node")))
            .collect();
        if all_or_nothing && !missing.is_empty() {
            let mut outcomes = missing;
            outcomes.extend(present.iter().map(|n| Outcome::err(n, aborted())));
            report(tx, outcomes).await;
            return Ok(());
        }
        report(tx, missing).await;
        let batch_size = if all_or_nothing {
            present.len().max(1)
        } else {
            WRITE_BATCH * 5
        };
        for batch in present.chunks(batch_size) {
            let outcomes = match self.store.delete_nodes(batch).await {
                Ok(_) => batch.iter().map(|n| Outcome::ok(n, "deleted")).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, nodes = batch.len(), "deleting a batch of nodes failed");
                    batch
                        .iter()
                        .map(|n| Outcome::err(n, store_error(&e)))
                        .collect()
                }
            };
            report(tx, outcomes).await;
        }
        Ok(())
    }

    /// Writes the candidates that passed, batch by batch; reports everyone's outcome. `write`
    /// returns the names it did not write because they changed under us.
    async fn write<F, Fut>(
        &self,
        candidates: Vec<Candidate>,
        all_or_nothing: bool,
        done: &'static str,
        tx: &Reporter,
        write: F,
    ) -> Result<(), RequestError>
    where
        F: Fn(Store, Vec<(Node, i64)>) -> Fut,
        Fut: std::future::Future<Output = xcat3_store::Result<Vec<String>>>,
    {
        let (good, bad): (Vec<Candidate>, Vec<Candidate>) =
            candidates.into_iter().partition(|c| c.error.is_none());
        let failed: Vec<Outcome> = bad
            .into_iter()
            .map(|c| Outcome::err(&c.node.name, c.error.unwrap_or_else(aborted)))
            .collect();
        if all_or_nothing && !failed.is_empty() {
            let mut outcomes = failed;
            outcomes.extend(good.iter().map(|c| Outcome::err(&c.node.name, aborted())));
            report(tx, outcomes).await;
            return Ok(());
        }
        report(tx, failed).await;
        let nodes: Vec<(Node, i64)> = good.into_iter().map(|c| (c.node, c.revision)).collect();
        let batch_size = if all_or_nothing {
            nodes.len().max(1)
        } else {
            WRITE_BATCH
        };
        for batch in nodes.chunks(batch_size) {
            let outcomes = match write(self.store.clone(), batch.to_vec()).await {
                Ok(conflicts) => written(batch, &conflicts, all_or_nothing, done),
                Err(e) if batch.len() > 1 && !all_or_nothing => {
                    // Another writer raced us for a name, MAC or IP: find out which nodes it hit.
                    tracing::info!(error = %e, "batch write failed; retrying node by node");
                    let mut outcomes = Vec::with_capacity(batch.len());
                    for one in batch.chunks(1) {
                        outcomes.extend(match write(self.store.clone(), one.to_vec()).await {
                            Ok(conflicts) => written(one, &conflicts, false, done),
                            Err(e) => vec![Outcome::err(&one[0].0.name, store_error(&e))],
                        });
                    }
                    outcomes
                }
                Err(e) => batch
                    .iter()
                    .map(|(n, _)| Outcome::err(&n.name, store_error(&e)))
                    .collect(),
            };
            report(tx, outcomes).await;
        }
        Ok(())
    }
}

/// Outcomes of a batch the store accepted, except for `conflicts` (changed by someone else
/// meanwhile). With `all_or_nothing` a conflict means the store wrote none of the batch.
fn written(
    batch: &[(Node, i64)],
    conflicts: &[String],
    all_or_nothing: bool,
    done: &'static str,
) -> Vec<Outcome> {
    let conflicts: HashSet<&str> = conflicts.iter().map(String::as_str).collect();
    let none_written = all_or_nothing && !conflicts.is_empty();
    batch
        .iter()
        .map(|(n, _)| {
            if conflicts.contains(n.name.as_str()) {
                Outcome::err(
                    &n.name,
                    FieldError::new(
                        ErrorCode::Aborted,
                        "",
                        "changed or deleted by another request while this one ran; not written, try again",
                    ),
                )
            } else if none_written {
                Outcome::err(&n.name, aborted())
            } else {
                Outcome::ok(&n.name, done)
            }
        })
        .collect()
}

fn aborted() -> FieldError {
    FieldError::new(
        ErrorCode::FailedPrecondition,
        "",
        "not written: another node of this all-or-nothing request failed",
    )
}

fn store_error(e: &xcat3_store::Error) -> FieldError {
    match e {
        xcat3_store::Error::Conflict(m) => {
            FieldError::exists("", format!("written concurrently by another request: {m}"))
        }
        xcat3_store::Error::Stale(_) => FieldError::new(ErrorCode::Aborted, "", e.to_string()),
        other => FieldError::new(ErrorCode::Unavailable, "", other.to_string()),
    }
}
