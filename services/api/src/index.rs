//! The node names and groups a noderange is resolved against, kept in memory between requests.
//!
//! [`IndexCache`] holds the index of the inventory revision it was built at. A request reads the
//! revision (one row) and uses the index as it is when nothing changed; after writes made by
//! this process it re-reads only the nodes they touched; only a write it did not make (another
//! api replica) makes it read every name again. So looking up a few nodes among 750,000 costs a
//! few hash lookups, not a scan of the inventory.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::broadcast::{Receiver, error::TryRecvError};
use xcat3_noderange::Universe;
use xcat3_store::{InventoryWrite, Store};

/// Every node name with its groups, and every group's members.
#[derive(Debug, Default, Clone)]
pub struct NodeIndex {
    nodes: HashMap<String, Vec<String>>,
    groups: HashMap<String, HashSet<String>>,
}

impl NodeIndex {
    pub fn new(rows: Vec<(String, Vec<String>)>) -> Self {
        let mut index = NodeIndex::default();
        for (name, groups) in rows {
            index.insert(name, groups);
        }
        index
    }

    pub fn contains(&self, name: &str) -> bool {
        self.nodes.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn insert(&mut self, name: String, groups: Vec<String>) {
        self.remove(&name);
        for g in &groups {
            self.groups
                .entry(g.clone())
                .or_default()
                .insert(name.clone());
        }
        self.nodes.insert(name, groups);
    }

    fn remove(&mut self, name: &str) {
        for g in self.nodes.remove(name).unwrap_or_default() {
            if let Some(members) = self.groups.get_mut(&g) {
                members.remove(name);
                if members.is_empty() {
                    self.groups.remove(&g);
                }
            }
        }
    }
}

impl Universe for NodeIndex {
    fn all_nodes(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    fn group(&self, name: &str) -> Option<Vec<String>> {
        self.groups.get(name).map(|m| m.iter().cloned().collect())
    }

    fn has_node(&self, name: &str) -> bool {
        self.nodes.contains_key(name)
    }
}

/// The index of one inventory revision, brought up to date when a request needs it.
pub struct IndexCache {
    store: Store,
    state: tokio::sync::Mutex<State>,
}

struct State {
    /// The revision `index` reflects; -1: none built yet.
    revision: i64,
    index: Arc<NodeIndex>,
    /// This process's committed writes, in revision order.
    writes: Receiver<Arc<InventoryWrite>>,
}

/// What brought the index up to date (for tests and the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    Unchanged,
    /// Re-read this many nodes touched by this process's writes.
    Patched(usize),
    /// Read every node.
    Rebuilt,
}

impl IndexCache {
    pub fn new(store: Store) -> Self {
        let writes = store.subscribe_writes();
        IndexCache {
            store,
            state: tokio::sync::Mutex::new(State {
                revision: -1,
                index: Arc::default(),
                writes,
            }),
        }
    }

    /// The index as of now.
    pub async fn get(&self) -> Result<Arc<NodeIndex>, xcat3_store::Error> {
        Ok(self.refresh().await?.0)
    }

    /// The index as of now, and how it was brought up to date.
    pub async fn refresh(&self) -> Result<(Arc<NodeIndex>, Refresh), xcat3_store::Error> {
        let mut state = self.state.lock().await;
        let current = self.store.inventory_revision().await?;
        if state.revision == current {
            return Ok((state.index.clone(), Refresh::Unchanged));
        }
        // The writes since, if this process made every one of them (consecutive revisions).
        let mut touched: HashSet<String> = HashSet::new();
        let mut deleted: HashSet<String> = HashSet::new();
        let mut reached = state.revision;
        let mut complete = state.revision >= 0;
        loop {
            match state.writes.try_recv() {
                Ok(w) if w.revision <= reached => {}
                Ok(w) => {
                    complete &= w.revision == reached + 1;
                    reached = w.revision;
                    for name in &w.deleted {
                        touched.remove(name);
                        deleted.insert(name.clone());
                    }
                    for name in &w.nodes {
                        deleted.remove(name);
                        touched.insert(name.clone());
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(_)) => complete = false,
                Err(TryRecvError::Closed) => {
                    complete = false;
                    break;
                }
            }
        }
        // A write committed after `current` was read is in the database too.
        let target = reached.max(current);
        let how = if complete && reached >= current && touched.len() <= state.index.len() / 2 + 1000
        {
            // Deleted nodes need no reading.
            let names: Vec<String> = touched.into_iter().collect();
            let rows = self.store.node_groups(&names).await?;
            let count = names.len();
            let index = Arc::make_mut(&mut state.index);
            for name in names.iter().chain(&deleted) {
                index.remove(name);
            }
            for (name, groups) in rows {
                index.insert(name, groups);
            }
            Refresh::Patched(count)
        } else {
            let rows = self.store.node_names_and_groups().await?;
            let index = tokio::task::spawn_blocking(move || NodeIndex::new(rows))
                .await
                .map_err(|e| xcat3_store::Error::Corrupt {
                    what: "node index".into(),
                    reason: e.to_string(),
                })?;
            state.index = Arc::new(index);
            Refresh::Rebuilt
        };
        state.revision = target;
        Ok((state.index.clone(), how))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xcat3_noderange::expand_with_limit;
    use xcat3_types::Node;

    fn node(name: &str, groups: &[&str]) -> Node {
        let mut n = Node::new(name);
        n.groups = groups.iter().map(|g| (*g).to_owned()).collect();
        n
    }

    async fn expand(cache: &IndexCache, noderange: &str) -> Vec<String> {
        let index = cache.get().await.unwrap();
        expand_with_limit(noderange, index.as_ref(), 1000).unwrap()
    }

    #[tokio::test]
    async fn the_index_follows_writes_without_reading_every_node_again() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        store
            .create_nodes(&[node("n1", &["rack1"]), node("n2", &["rack1"])])
            .await
            .unwrap();
        let cache = IndexCache::new(store.clone());
        assert_eq!(cache.refresh().await.unwrap().1, Refresh::Rebuilt);
        assert_eq!(cache.refresh().await.unwrap().1, Refresh::Unchanged);

        // This process's writes: only the nodes they touched are read again.
        store.create_nodes(&[node("n3", &["rack2"])]).await.unwrap();
        store.delete_nodes(&["n1".into()]).await.unwrap();
        let (index, how) = cache.refresh().await.unwrap();
        // The deleted node is dropped without reading it.
        assert_eq!(how, Refresh::Patched(1));
        assert!(index.contains("n3") && !index.contains("n1"));
        assert_eq!(expand(&cache, "rack1").await, ["n2"]);
        assert_eq!(expand(&cache, "rack2").await, ["n3"]);
        let (n2, revision) = {
            let r = store.get_nodes(&["n2".into()]).await.unwrap().remove(0);
            (r.node, r.revision)
        };
        let moved = Node {
            groups: vec!["rack2".into()],
            ..n2
        };
        store
            .save_nodes(&[(moved, revision)], false, false)
            .await
            .unwrap();
        assert_eq!(expand(&cache, "rack2").await, ["n2", "n3"]);
        assert!(cache.get().await.unwrap().group("rack1").is_none());

        // Another process's write (another store on the same database): read everything.
        let other = Store::connect(&url).await.unwrap();
        other.create_nodes(&[node("n9", &["rack1"])]).await.unwrap();
        let (index, how) = cache.refresh().await.unwrap();
        assert_eq!(how, Refresh::Rebuilt);
        assert!(index.contains("n9"));
        assert_eq!(expand(&cache, "rack1").await, ["n9"]);
    }
}
