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

/// Files at least this big are parsed in parts, one per core (see [`split_items`]).
const PARALLEL_FROM: usize = 1 << 20;

/// Parses the text of a nodes file (see [`read_nodes`]).
///
/// A big file laid out plainly (`nodes:` then its items) is cut at its items and the parts are
/// parsed on all cores: 100,000 nodes are 17 MB, a second of YAML parsing on one core. Each part
/// is a whole YAML document of the same shape, so the nodes are those of the whole file; if any
/// part fails (an alias to an anchor in another part, a quote left open across items), the whole
/// file is parsed at once, so errors name the file's own lines.
pub fn parse_nodes(text: &str) -> anyhow::Result<Vec<NodeDoc>> {
    if text.len() >= PARALLEL_FROM {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        if let Some(nodes) = parse_in_parts(text, cores) {
            return Ok(nodes);
        }
    }
    let doc: NodesDoc = serde_yaml::from_str(text)?;
    Ok(doc.nodes)
}

/// The nodes of a plainly laid out file (see [`split_items`]), parsed in about `parts` parts on
/// as many threads; `None` when the layout is not plain, there is only one part, or a part
/// fails. When it answers, it answers what parsing the whole file does (fuzzed: `import_yaml`).
pub fn parse_in_parts(text: &str, parts: usize) -> Option<Vec<NodeDoc>> {
    let items = split_items(text, parts).filter(|items| items.len() > 1)?;
    parse_parts(&items)
}

/// Parses each part as a nodes file (`nodes:` then the part) on its own thread; `None` if any
/// part fails.
fn parse_parts(parts: &[&str]) -> Option<Vec<NodeDoc>> {
    let parsed: Vec<Option<Vec<NodeDoc>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .iter()
            .map(|part| {
                scope.spawn(move || {
                    let doc: NodesDoc = serde_yaml::from_str(&format!("nodes:\n{part}")).ok()?;
                    Some(doc.nodes)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect()
    });
    let mut nodes = Vec::new();
    for part in parsed {
        nodes.extend(part?);
    }
    Some(nodes)
}

/// Cuts a nodes file laid out plainly into about `parts` runs of whole items: the file is blank
/// or comment lines, a `nodes:` line, then a block sequence whose items start with `- ` at one
/// indentation and whose other lines are blank, comments or indented deeper. `None` for any
/// other layout (flow style, more keys, several documents, JSON), which is parsed whole.
fn split_items(text: &str, parts: usize) -> Option<Vec<&str>> {
    let is_filler = |line: &str| {
        let t = line.trim_start();
        t.is_empty() || t.starts_with('#')
    };
    let mut lines = text.split_inclusive('\n');
    // Everything up to and including the `nodes:` line.
    let mut offset = 0;
    for line in lines.by_ref() {
        offset += line.len();
        if line.trim_end() == "nodes:" {
            break;
        }
        if !is_filler(line) {
            return None;
        }
    }
    let body = &text[offset..];
    // The items' indentation, from the first line that is not filler.
    let first = body.split_inclusive('\n').find(|l| !is_filler(l))?;
    let indent = first.len() - first.trim_start_matches(' ').len();
    if !first[indent..].starts_with("- ") {
        return None;
    }
    // Compared as bytes: a line may hold any UTF-8 after its indentation.
    let spaces = |line: &[u8], n: usize| line.len() >= n && line[..n].iter().all(|&b| b == b' ');
    let item_start = |line: &str| {
        let line = line.as_bytes();
        spaces(line, indent) && line[indent..].starts_with(b"- ")
    };
    let deeper = |line: &str| spaces(line.as_bytes(), indent + 1);
    let target = body.len() / parts.max(1) + 1;
    let mut cuts = Vec::new();
    let (mut start, mut at) = (0, 0);
    for line in body.split_inclusive('\n') {
        if item_start(line) {
            if at - start >= target {
                cuts.push(&body[start..at]);
                start = at;
            }
        } else if !is_filler(line) && !deeper(line) {
            return None;
        }
        at += line.len();
    }
    cuts.push(&body[start..]);
    Some(cuts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(text: &str) -> Vec<NodeDoc> {
        serde_yaml::from_str::<NodesDoc>(text).unwrap().nodes
    }

    /// Items with comments, blank lines, nested sequences and a block scalar whose text looks
    /// like an item, at two indentations.
    const PLAIN: &str = "# inventory\n\nnodes:\n- name: a\n  groups: [x]\n  # comment\n  labels:\n    note: |\n      - not an item\n      two\n- name: b\n  control: {bmc_address: 10.0.0.1}\n\n- name: c\n  nics:\n  - {mac: \"52:54:00:00:00:01\", ip: 10.0.0.3}\n# between\n- name: d\n  labels: {é: ü}\n";

    #[test]
    fn parts_give_what_the_whole_file_gives() {
        let indented = PLAIN.replace("\n- ", "\n  - ").replace("\n  ", "\n    ");
        let indented = indented.replace("\n    - name", "\n  - name");
        for text in [PLAIN.to_owned(), indented, PLAIN.replace('\n', "\r\n")] {
            let want = whole(&text);
            assert_eq!(want.len(), 4, "{text}");
            for parts in 2..=5 {
                assert_eq!(parse_in_parts(&text, parts), Some(want.clone()), "{text}");
            }
        }
    }

    #[test]
    fn other_layouts_are_parsed_whole() {
        for text in [
            "nodes: [{name: a}, {name: b}]\n",
            "{\"nodes\": [{\"name\": \"a\"}, {\"name\": \"b\"}]}\n",
            "nodes:\n- name: a\n- name: b\nextra: 1\n",
            "---\nnodes:\n- name: a\n- name: b\n",
            "nodes:\n-\n  name: a\n- name: b\n",
            "nodes: # the lot\n- name: a\n- name: b\n",
            "nodes:\n  - name: a\n  - name: b\n other: x\n",
        ] {
            assert_eq!(split_items(text, 2), None, "{text}");
        }
    }

    #[test]
    fn a_part_that_fails_sends_the_file_to_a_whole_parse() {
        // An alias to an anchor in another part, and a quoted scalar running across items.
        for text in [
            "nodes:\n- name: a\n  groups: &g [x]\n- name: b\n- name: c\n  groups: *g\n",
            "nodes:\n- name: \"a\n- b\"\n- name: c\n- name: d\n",
        ] {
            let whole = serde_yaml::from_str::<NodesDoc>(text).ok().map(|d| d.nodes);
            assert!(whole.is_some(), "{text}");
            // Cut at every item, the part with the alias, or with half the quote, fails.
            assert_eq!(parse_in_parts(text, 100), None, "{text}");
            // Cut elsewhere, the parts agree with the whole file.
            for parts in 2..=4 {
                let got = parse_in_parts(text, parts);
                assert!(got.is_none() || got == whole, "{text} in {parts}");
            }
            assert_eq!(parse_nodes(text).ok(), whole);
        }
    }

    #[test]
    fn a_big_file_is_parsed_in_parts_and_its_errors_name_its_lines() {
        let mut text = String::from("nodes:\n");
        let mut n = 0;
        while text.len() < PARALLEL_FROM + 1000 {
            text.push_str(&format!(
                "- name: cn{n:05}\n  groups: [bench]\n  control: {{bmc_address: 10.200.0.1}}\n  nics: [{{name: eth0, mac: \"52:54:00:00:00:01\", ip: 10.1.0.1, primary: true}}]\n"
            ));
            n += 1;
        }
        let nodes = parse_nodes(&text).unwrap();
        assert_eq!(nodes.len(), n);
        assert_eq!(nodes, whole(&text));
        assert!(split_items(&text, 2).unwrap().len() == 2);
        // An unknown field on the last item: the error names the file's line, not a part's.
        text.push_str("- name: last\n  colour: blue\n");
        let err = format!("{:#}", parse_nodes(&text).unwrap_err());
        let line = text.lines().count();
        assert!(
            err.contains("colour") && err.contains(&format!("line {line}")),
            "{err}"
        );
    }
}
