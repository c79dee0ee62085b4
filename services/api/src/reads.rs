//! Reads of the inventory, on domain types: a noderange's nodes page by page, each with the
//! conductor that owns it now, and their latest events. The gRPC layer only converts.

use std::sync::Arc;

use tokio_stream::Stream;
use xcat3_coord::{Coordinator, shard_of};
use xcat3_store::{EventRecord, NodeRecord};
use xcat3_types::FieldError;

use crate::index::NodeIndex;
use crate::inventory::{Inventory, Outcome, READ_PAGE, RequestError};

/// Events per node when a request names no limit, and the most it may ask for.
pub const DEFAULT_EVENTS: u64 = 20;
pub const MAX_EVENTS: u32 = 1000;

/// A node as read, with the conductor that owns its shard now (none when ownership cannot be
/// read, or nobody owns the shard).
#[derive(Debug, Clone)]
pub struct NodeRead {
    pub record: NodeRecord,
    pub conductor: Option<String>,
}

/// The names of a read that are nodes, and a "no such node" outcome for every other name.
pub struct Resolved {
    pub nodes: Vec<String>,
    pub missing: Vec<Outcome>,
}

#[derive(Clone)]
pub struct Reads {
    inventory: Inventory,
    coordinator: Arc<dyn Coordinator>,
}

impl Reads {
    pub fn new(inventory: Inventory, coordinator: Arc<dyn Coordinator>) -> Self {
        Self {
            inventory,
            coordinator,
        }
    }

    /// Expands `noderange` and sorts its names into nodes and the rest.
    pub async fn resolve(&self, noderange: &str) -> Result<Resolved, RequestError> {
        let (names, index) = self.inventory.resolve(noderange).await?;
        let (nodes, missing) = split_missing(names, &index);
        Ok(Resolved { nodes, missing })
    }

    /// The nodes `names`, [`READ_PAGE`] to a page, in that order; a failed read ends the stream.
    pub fn nodes(
        &self,
        names: Vec<String>,
    ) -> impl Stream<Item = Result<Vec<NodeRead>, xcat3_store::Error>> + Send + 'static {
        let store = self.inventory.store().clone();
        let coordinator = self.coordinator.clone();
        async_stream::try_stream! {
            // Who owns each shard now, read once for the whole request.
            let owners = coordinator.snapshot().await.ok().map(|s| s.owners);
            let shards = coordinator.shards();
            for chunk in names.chunks(READ_PAGE) {
                let records = store.get_nodes(chunk).await?;
                yield records
                    .into_iter()
                    .map(|record| {
                        let shard = shard_of(&record.node.name, shards);
                        let conductor = owners.as_ref().and_then(|o| o.get(&shard)).cloned();
                        NodeRead { record, conductor }
                    })
                    .collect();
            }
        }
    }

    /// The latest `limit` events of each of `nodes`, oldest first per node, in pages of at
    /// most [`READ_PAGE`] nodes' events: one query per `EVENT_NODES_PER_QUERY` nodes.
    pub fn events(
        &self,
        nodes: Vec<String>,
        limit: u64,
    ) -> impl Stream<Item = Result<Vec<EventRecord>, xcat3_store::Error>> + Send + 'static {
        let store = self.inventory.store().clone();
        async_stream::try_stream! {
            for chunk in nodes.chunks(xcat3_store::EVENT_NODES_PER_QUERY) {
                let events = store.node_events(chunk, limit).await?;
                for page in event_pages(events, READ_PAGE) {
                    yield page;
                }
            }
        }
    }
}

/// Sorts `names` into nodes of `index` and a "no such node" outcome for every other name.
pub fn split_missing(names: Vec<String>, index: &NodeIndex) -> (Vec<String>, Vec<Outcome>) {
    let (nodes, missing): (Vec<String>, Vec<String>) =
        names.into_iter().partition(|n| index.contains(n));
    let missing = missing
        .into_iter()
        .map(|name| Outcome::err(name, FieldError::not_found("name", "no such node")))
        .collect();
    (nodes, missing)
}

/// The events limit a request asks for: 0 means [`DEFAULT_EVENTS`], more than [`MAX_EVENTS`]
/// is refused.
pub fn events_limit(asked: u32) -> Result<u64, FieldError> {
    match asked {
        0 => Ok(DEFAULT_EVENTS),
        n if n > MAX_EVENTS => Err(FieldError::invalid(
            "limit",
            format!("{n} events per node; at most {MAX_EVENTS}"),
        )),
        n => Ok(u64::from(n)),
    }
}

/// Splits events grouped by node into pages of at most `nodes` nodes' events; a node's events
/// are never split between pages.
pub fn event_pages(events: Vec<EventRecord>, nodes: usize) -> Vec<Vec<EventRecord>> {
    let mut pages = Vec::new();
    let mut page = Vec::new();
    let mut nodes_in_page = 0;
    let mut events = events.into_iter().peekable();
    while let Some(e) = events.next() {
        let last_of_node = events.peek().is_none_or(|next| next.node != e.node);
        page.push(e);
        if last_of_node {
            nodes_in_page += 1;
            if nodes_in_page == nodes.max(1) {
                pages.push(std::mem::take(&mut page));
                nodes_in_page = 0;
            }
        }
    }
    if !page.is_empty() {
        pages.push(page);
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(node: &str, at: i64) -> EventRecord {
        EventRecord {
            node: node.into(),
            at,
            kind: "power".into(),
            message: format!("{node} at {at}"),
            conductor: "c1".into(),
        }
    }

    #[test]
    fn event_pages_keep_each_node_whole() {
        let events = vec![
            event("a", 1),
            event("a", 2),
            event("b", 1),
            event("c", 1),
            event("c", 2),
            event("c", 3),
            event("d", 1),
        ];
        let pages = event_pages(events, 2);
        let shape: Vec<Vec<(String, i64)>> = pages
            .iter()
            .map(|p| p.iter().map(|e| (e.node.clone(), e.at)).collect())
            .collect();
        let want = |v: &[(&str, i64)]| -> Vec<(String, i64)> {
            v.iter().map(|(n, at)| ((*n).to_owned(), *at)).collect()
        };
        assert_eq!(
            shape,
            [
                want(&[("a", 1), ("a", 2), ("b", 1)]),
                want(&[("c", 1), ("c", 2), ("c", 3), ("d", 1)]),
            ]
        );
        assert!(event_pages(Vec::new(), 2).is_empty());
        assert_eq!(event_pages(vec![event("a", 1)], 0).len(), 1);
    }

    #[test]
    fn events_limit_defaults_and_caps() {
        assert_eq!(events_limit(0).unwrap(), DEFAULT_EVENTS);
        assert_eq!(events_limit(5).unwrap(), 5);
        assert_eq!(events_limit(MAX_EVENTS).unwrap(), u64::from(MAX_EVENTS));
        assert_eq!(events_limit(MAX_EVENTS + 1).unwrap_err().field, "limit");
    }
}
