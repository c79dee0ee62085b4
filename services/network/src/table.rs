//! The agent's copy of the boot table: networks and hosts (NICs) as the api last sent them.
//!
//! It is replaced or patched by [`BootUpdate`]s from the watch stream and saved to disk after each
//! change, so an agent that restarts while the api is down still answers every known machine.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

use prost::Message as _;
use xcat3_proto::internal::{self, BootUpdate, boot_host::Action};
use xcat3_types::{MacAddr, Network};

/// What a host's iPXE script does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootAction {
    LocalDisk,
    Install {
        osimage: String,
        kernel: String,
        initrds: Vec<String>,
        cmdline: String,
    },
}

/// One NIC of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub mac: MacAddr,
    pub ip: Option<Ipv4Addr>,
    pub node: String,
    pub nic: String,
    pub primary: bool,
    pub arch: String,
    pub netboot: String,
    pub action: BootAction,
}

/// The boot table at one revision.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub revision: u64,
    pub networks: Vec<Network>,
    pub hosts: HashMap<MacAddr, Host>,
    /// Hosts by reserved address (for DNS and for refusing a dynamic lease of a reserved address).
    pub by_ip: HashMap<Ipv4Addr, MacAddr>,
    /// MACs with a reserved address by lower-cased node name (DNS answers from it).
    pub by_node: HashMap<String, Vec<MacAddr>>,
}

/// A message from the api that does not make sense.
#[derive(Debug, thiserror::Error)]
#[error("bad boot update: {0}")]
pub struct BadUpdate(String);

fn host_from_pb(h: &internal::BootHost) -> Result<Host, BadUpdate> {
    let bad =
        |what: &str, e: &dyn std::fmt::Display| BadUpdate(format!("host {}: {what}: {e}", h.mac));
    let action = match &h.action {
        Some(Action::Install(i)) => BootAction::Install {
            osimage: i.osimage.clone(),
            kernel: i.kernel.clone(),
            initrds: i.initrds.clone(),
            cmdline: i.cmdline.clone(),
        },
        Some(Action::Local(_)) | None => BootAction::LocalDisk,
    };
    Ok(Host {
        mac: h.mac.parse().map_err(|e| bad("mac", &e))?,
        ip: if h.ip.is_empty() {
            None
        } else {
            Some(h.ip.parse().map_err(|e| bad("ip", &e))?)
        },
        node: h.node.clone(),
        nic: h.nic.clone(),
        primary: h.primary,
        arch: h.arch.clone(),
        netboot: h.netboot.clone(),
        action,
    })
}

fn network_from_pb(n: &xcat3_proto::pb::Network) -> Result<Network, BadUpdate> {
    xcat3_proto::convert::network_from_pb(n)
        .map_err(|e| BadUpdate(format!("network {}: {e}", n.name)))
}

impl Table {
    /// Applies a snapshot or a change. A bad message changes nothing.
    pub fn apply(&mut self, update: &BootUpdate) -> Result<(), BadUpdate> {
        let networks = update
            .networks
            .iter()
            .map(network_from_pb)
            .collect::<Result<Vec<_>, _>>()?;
        let hosts = update
            .hosts
            .iter()
            .map(host_from_pb)
            .collect::<Result<Vec<_>, _>>()?;
        let removed: Vec<MacAddr> = update
            .removed_macs
            .iter()
            .map(|m| {
                m.parse()
                    .map_err(|e| BadUpdate(format!("removed mac {m}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        if update.snapshot {
            self.networks.clear();
            self.hosts.clear();
        }
        self.networks
            .retain(|n| !update.removed_networks.contains(&n.name));
        for n in networks {
            match self.networks.iter_mut().find(|o| o.name == n.name) {
                Some(o) => *o = n,
                None => self.networks.push(n),
            }
        }
        self.networks.sort_by(|a, b| a.name.cmp(&b.name));
        for mac in removed {
            self.hosts.remove(&mac);
        }
        for h in hosts {
            self.hosts.insert(h.mac, h);
        }
        self.by_ip.clear();
        self.by_node.clear();
        for h in self.hosts.values() {
            if let Some(ip) = h.ip {
                self.by_ip.insert(ip, h.mac);
                self.by_node
                    .entry(h.node.to_ascii_lowercase())
                    .or_default()
                    .push(h.mac);
            }
        }
        self.revision = update.revision;
        Ok(())
    }

    /// The network that contains `ip`.
    pub fn network_of(&self, ip: Ipv4Addr) -> Option<&Network> {
        self.networks.iter().find(|n| n.contains(ip))
    }

    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The whole table as a snapshot message (what is saved to disk).
    pub fn to_snapshot(&self) -> BootUpdate {
        let mut hosts: Vec<&Host> = self.hosts.values().collect();
        hosts.sort_by_key(|h| h.mac);
        BootUpdate {
            revision: self.revision,
            snapshot: true,
            networks: self
                .networks
                .iter()
                .map(xcat3_proto::convert::network_to_pb)
                .collect(),
            removed_networks: Vec::new(),
            hosts: hosts
                .into_iter()
                .map(|h| internal::BootHost {
                    mac: h.mac.to_string(),
                    ip: h.ip.map(|i| i.to_string()).unwrap_or_default(),
                    node: h.node.clone(),
                    nic: h.nic.clone(),
                    primary: h.primary,
                    arch: h.arch.clone(),
                    netboot: h.netboot.clone(),
                    action: Some(match &h.action {
                        BootAction::LocalDisk => Action::Local(internal::LocalBoot {}),
                        BootAction::Install {
                            osimage,
                            kernel,
                            initrds,
                            cmdline,
                        } => Action::Install(internal::InstallBoot {
                            osimage: osimage.clone(),
                            kernel: kernel.clone(),
                            initrds: initrds.clone(),
                            cmdline: cmdline.clone(),
                        }),
                    }),
                })
                .collect(),
            removed_macs: Vec::new(),
        }
    }

    /// Writes the table to `path` atomically (a temporary file renamed over it), readable only
    /// by this user: it holds deploy tokens.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        xcat3_runtime::config::write_private(path, &self.to_snapshot().encode_to_vec())
    }

    /// Reads a table saved by [`Table::save`]; none if there is no file.
    pub fn load(path: &Path) -> anyhow::Result<Option<Table>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let update = BootUpdate::decode(bytes.as_slice())?;
        let mut table = Table::default();
        table.apply(&update)?;
        Ok(Some(table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_saved_table_is_private_and_loads_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boot-table.pb");
        // An earlier, world-readable copy is replaced by a private one.
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Table::default().save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(Table::load(&path).unwrap().is_some());
    }
}
