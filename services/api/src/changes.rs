//! Attribute changes (`update NODERANGE path=value ...`, and the attributes of `create NODERANGE
//! path=value ...`, one grammar for both): parsed and checked once per request,
//! then applied to each node.
//!
//! | path | value |
//! |---|---|
//! | `groups` | comma-separated group names (empty: no groups) |
//! | `mgt`, `netboot`, `arch` | one of their words (`mgt` empty: unmanaged) |
//! | `osimage` | an OS image name (empty: none) |
//! | `control/<key>` | a control parameter (empty: removed) |
//! | `labels/<key>` | a label (empty: removed) |
//! | `nics/<nic>/mac`, `nics/<nic>/ip`, `nics/<nic>/primary` | NIC fields; a new `<nic>` needs a `mac` |
//! | `nics/<nic>` | empty: the NIC is removed |

use xcat3_types::{Arch, Control, FieldError, MacAddr, Mgt, Netboot, Nic, Node};

/// The most attribute changes one request may carry: every NIC field of a node and every
/// label and group several times over. Each change is applied to every node of the request, so
/// the count multiplies the work.
pub const MAX_CHANGES: usize = 1024;

/// Parses the `path=value` changes of one request (update, or the attributes of create),
/// refusing more than [`MAX_CHANGES`] before parsing any.
pub fn parse_all<'a>(
    changes: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<Change>, FieldError> {
    if changes.len() > MAX_CHANGES {
        return Err(FieldError::invalid(
            "changes",
            format!(
                "{} changes in one request; at most {MAX_CHANGES}",
                changes.len()
            ),
        ));
    }
    changes.map(|(p, v)| Change::parse(p, v)).collect()
}

/// One checked change.
#[derive(Debug, Clone)]
pub enum Change {
    Groups(Vec<String>),
    Mgt(Option<Mgt>),
    Netboot(Netboot),
    Arch(Arch),
    Osimage(Option<String>),
    Control(String, String),
    Label(String, Option<String>),
    NicMac(String, MacAddr),
    NicIp(String, Option<std::net::Ipv4Addr>),
    NicPrimary(String, bool),
    RemoveNic(String),
}

impl Change {
    /// Parses `path=value`. Errors name the path and are the same for every node.
    pub fn parse(path: &str, value: &str) -> Result<Change, FieldError> {
        let bad = |reason: String| FieldError::invalid(path, reason);
        let parts: Vec<&str> = path.split('/').collect();
        let change = match parts.as_slice() {
            ["groups"] => Change::Groups(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(String::from)
                    .collect(),
            ),
            ["mgt"] => Change::Mgt(if value.is_empty() {
                None
            } else {
                Some(value.parse()?)
            }),
            ["netboot"] => Change::Netboot(value.parse()?),
            ["arch"] => Change::Arch(value.parse()?),
            ["osimage"] => Change::Osimage((!value.is_empty()).then(|| value.to_owned())),
            ["control", key] => {
                // Checks the key and the value's form now, once.
                Control::default().set(key, value.to_owned())?;
                Change::Control((*key).to_owned(), value.to_owned())
            }
            ["labels", key] => {
                xcat3_types::validate_label_key(key)?;
                Change::Label(
                    (*key).to_owned(),
                    (!value.is_empty()).then(|| value.to_owned()),
                )
            }
            ["nics", nic] if value.is_empty() => Change::RemoveNic((*nic).to_owned()),
            ["nics", nic, "mac"] => Change::NicMac(
                (*nic).to_owned(),
                value.parse().map_err(|e: FieldError| bad(e.reason))?,
            ),
            ["nics", nic, "ip"] => Change::NicIp(
                (*nic).to_owned(),
                if value.is_empty() {
                    None
                } else {
                    Some(
                        value
                            .parse()
                            .map_err(|_| bad(format!("{value:?} is not an IPv4 address")))?,
                    )
                },
            ),
            ["nics", nic, "primary"] => Change::NicPrimary(
                (*nic).to_owned(),
                parse_bool(value).ok_or_else(|| bad(format!("{value:?} is not true or false")))?,
            ),
            ["name"] => {
                return Err(bad(
                    "nodes cannot be renamed; create the new name and delete the old".into(),
                ));
            }
            ["provision_state"] | ["power_state"] => {
                return Err(bad("is read-only: it is set by the conductors".into()));
            }
            _ => {
                return Err(bad(
                    "unknown attribute; use groups, mgt, netboot, arch, osimage, control/<key>, labels/<key>, nics/<nic>[/mac|ip|primary]"
                        .into(),
                ));
            }
        };
        Ok(change)
    }

    /// Whether the change touches NICs (so the store rewrites them).
    pub fn touches_nics(&self) -> bool {
        matches!(
            self,
            Change::NicMac(..) | Change::NicIp(..) | Change::NicPrimary(..) | Change::RemoveNic(..)
        )
    }

    /// Applies the change to one node.
    pub fn apply(&self, node: &mut Node) -> Result<(), FieldError> {
        let nic_index = |node: &Node, name: &str| node.nics.iter().position(|n| n.name == name);
        let missing_nic = |name: &str| {
            FieldError::not_found(
                format!("nics/{name}"),
                "no such NIC on this node; set nics/<nic>/mac first to add one",
            )
        };
        match self {
            Change::Groups(groups) => node.groups = groups.clone(),
            Change::Mgt(mgt) => node.mgt = *mgt,
            Change::Netboot(v) => node.netboot = *v,
            Change::Arch(v) => node.arch = *v,
            Change::Osimage(v) => node.osimage = v.clone(),
            Change::Control(key, value) => node.control.set(key, value.clone())?,
            Change::Label(key, Some(value)) => {
                node.labels.insert(key.clone(), value.clone());
            }
            Change::Label(key, None) => {
                node.labels.remove(key);
            }
            Change::NicMac(name, mac) => match nic_index(node, name) {
                Some(i) => node.nics[i].mac = *mac,
                None => node.nics.push(Nic {
                    name: name.clone(),
                    mac: *mac,
                    ip: None,
                    primary: false,
                }),
            },
            Change::NicIp(name, ip) => {
                let i = nic_index(node, name).ok_or_else(|| missing_nic(name))?;
                node.nics[i].ip = *ip;
            }
            Change::NicPrimary(name, primary) => {
                let i = nic_index(node, name).ok_or_else(|| missing_nic(name))?;
                if *primary {
                    for nic in &mut node.nics {
                        nic.primary = false;
                    }
                }
                node.nics[i].primary = *primary;
            }
            Change::RemoveNic(name) => {
                let i = nic_index(node, name).ok_or_else(|| missing_nic(name))?;
                node.nics.remove(i);
            }
        }
        Ok(())
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Some(true),
        "false" | "no" | "0" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_carries_a_bounded_number_of_changes() {
        let many: Vec<(String, String)> = (0..=MAX_CHANGES)
            .map(|i| (format!("labels/l{i}"), "x".to_owned()))
            .collect();
        let e = parse_all(many.iter().map(|(p, v)| (p.as_str(), v.as_str()))).unwrap_err();
        assert!(e.reason.contains("at most 1024"), "{e}");
        let few = &many[..MAX_CHANGES];
        assert_eq!(
            parse_all(few.iter().map(|(p, v)| (p.as_str(), v.as_str())))
                .unwrap()
                .len(),
            MAX_CHANGES
        );
    }

    #[test]
    fn parse_and_apply() {
        let mut n = Node::new("n1");
        for (p, v) in [
            ("mgt", "ipmi"),
            ("control/bmc_password", "pw"),
            ("labels/rack", "r1"),
            ("groups", "compute, rack1"),
            ("nics/eth0/mac", "52:54:00:00:00:01"),
            ("nics/eth0/ip", "10.0.0.5"),
        ] {
            Change::parse(p, v).unwrap().apply(&mut n).unwrap();
        }
        assert_eq!(n.groups, ["compute", "rack1"]);
        assert_eq!(n.nics[0].ip.unwrap().to_string(), "10.0.0.5");
        Change::parse("labels/rack", "")
            .unwrap()
            .apply(&mut n)
            .unwrap();
        assert!(n.labels.is_empty());
        Change::parse("nics/eth0", "")
            .unwrap()
            .apply(&mut n)
            .unwrap();
        assert!(n.nics.is_empty());
    }

    #[test]
    fn bad_paths_and_values_name_the_path() {
        for (p, v) in [
            ("colour", "red"),
            ("name", "x"),
            ("power_state", "on"),
            ("mgt", "xen"),
            ("control/nope", "1"),
            ("control/bmc_port", "99999"),
            ("nics/eth0/mac", "zz"),
            ("nics/eth0/ip", "1.2.3"),
            ("nics/eth0/primary", "maybe"),
        ] {
            let e = Change::parse(p, v).expect_err(p);
            assert!(!e.field.is_empty(), "{p}");
        }
        let mut n = Node::new("n1");
        let e = Change::parse("nics/eth9/ip", "10.0.0.1")
            .unwrap()
            .apply(&mut n)
            .unwrap_err();
        assert_eq!(e.field, "nics/eth9");
    }
}
