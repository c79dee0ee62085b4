//! The node names and groups a noderange is resolved against, loaded once per request.

use std::collections::{HashMap, HashSet};

use xcat3_noderange::Universe;

/// Every node name and every group's members, as of one read of the store.
#[derive(Debug, Default)]
pub struct NodeIndex {
    names: HashSet<String>,
    groups: HashMap<String, Vec<String>>,
}

impl NodeIndex {
    pub fn new(rows: Vec<(String, Vec<String>)>) -> Self {
        let mut index = NodeIndex::default();
        for (name, groups) in rows {
            for g in groups {
                index.groups.entry(g).or_default().push(name.clone());
            }
            index.names.insert(name);
        }
        index
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }
}

impl Universe for NodeIndex {
    fn all_nodes(&self) -> Vec<String> {
        self.names.iter().cloned().collect()
    }

    fn group(&self, name: &str) -> Option<Vec<String>> {
        self.groups.get(name).cloned()
    }

    fn has_node(&self, name: &str) -> bool {
        self.names.contains(name)
    }
}
