//! The file form of nodes (YAML or JSON), used by `create -f`, `import`, `export` and `-o yaml`.
//!
//! ```yaml
//! nodes:
//! - name: node01
//!   groups: [compute]
//!   mgt: ipmi
//!   control: {bmc_address: 10.1.0.1, bmc_username: admin}
//!   nics: [{name: eth0, mac: "52:54:00:00:00:01", ip: 10.0.0.1, primary: true}]
//! ```
//!
//! `export` writes secrets as `******` unless `--with-secrets` (admin token only; the file is
//! written readable by its owner only). The api refuses a node whose secret is `******`, so a
//! masked backup cannot quietly lose or overwrite a password.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use xcat3_proto::pb;

#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NicDoc {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub mac: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    #[serde(default)]
    pub primary: bool,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeDoc {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mgt: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netboot: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arch: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub control: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<NicDoc>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub osimage: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Output only; ignored on import.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provision_state: String,
    /// Output only; ignored on import.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub power_state: String,
    /// Output only (the conductor owning the node now); ignored on import.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub conductor: String,
}

#[derive(Serialize, Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct NodesDoc {
    pub nodes: Vec<NodeDoc>,
}

impl From<pb::Node> for NodeDoc {
    fn from(n: pb::Node) -> Self {
        NodeDoc {
            name: n.name,
            groups: n.groups,
            mgt: n.mgt,
            netboot: n.netboot,
            arch: n.arch,
            control: n.control.into_iter().collect(),
            nics: n
                .nics
                .into_iter()
                .map(|x| NicDoc {
                    name: x.name,
                    mac: x.mac,
                    ip: x.ip,
                    primary: x.primary,
                })
                .collect(),
            osimage: n.osimage,
            labels: n.labels.into_iter().collect(),
            provision_state: n.provision_state,
            power_state: n.power_state,
            conductor: n.conductor,
        }
    }
}

impl NodeDoc {
    /// The node to create. A masked secret (`******`) is sent as it is: the api refuses that
    /// node, naming the field, rather than storing the mask or dropping the secret quietly.
    pub fn into_pb(self) -> pb::Node {
        pb::Node {
            name: self.name,
            groups: self.groups,
            mgt: self.mgt,
            netboot: self.netboot,
            arch: self.arch,
            control: self.control.into_iter().collect(),
            nics: self
                .nics
                .into_iter()
                .map(|x| pb::Nic {
                    name: x.name,
                    mac: x.mac,
                    ip: x.ip,
                    primary: x.primary,
                })
                .collect(),
            osimage: self.osimage,
            labels: self.labels.into_iter().collect(),
            ..Default::default()
        }
    }
}

/// Reads a nodes file: YAML (of which JSON is a subset) with a top-level `nodes:` list.
pub fn read_nodes(path: &std::path::Path) -> anyhow::Result<Vec<NodeDoc>> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    parse_nodes(&text).with_context(|| format!("parse {}", path.display()))
}

/// Parses the text of a nodes file (see [`read_nodes`]).
pub fn parse_nodes(text: &str) -> anyhow::Result<Vec<NodeDoc>> {
    let doc: NodesDoc = serde_yaml::from_str(text)?;
    Ok(doc.nodes)
}
