//! Checks of nodes against the rest of the inventory: MACs and IPs unique across all nodes, IPs
//! inside a defined network and outside its dynamic range, OS images that exist.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use xcat3_store::Store;
use xcat3_types::{FieldError, MacAddr, Network, home_network};

use super::Candidate;

/// What the store says about the MACs, IPs and OS images the candidates use.
pub(super) struct InventoryCheck {
    /// Whether the NICs are checked: not when a change leaves them as they are (they passed
    /// when they were written, and network writes keep them valid).
    nics: bool,
    mac_owners: HashMap<String, String>,
    ip_owners: HashMap<String, String>,
    networks: Vec<Network>,
    osimages: HashSet<String>,
}

impl InventoryCheck {
    /// Reads, in a few set queries, everything [`InventoryCheck::check`] needs; the NICs'
    /// owners and networks only if `nics`.
    pub(super) async fn load(
        store: &Store,
        candidates: &[Candidate],
        nics: bool,
    ) -> xcat3_store::Result<Self> {
        let live = || candidates.iter().filter(|c| c.error.is_none());
        let live_nics = || live().filter(|_| nics);
        let macs: Vec<String> = live_nics()
            .flat_map(|c| c.node.nics.iter().map(|n| n.mac.to_string()))
            .collect();
        let ips: Vec<String> = live_nics()
            .flat_map(|c| {
                c.node
                    .nics
                    .iter()
                    .filter_map(|n| n.ip.map(|ip| ip.to_string()))
            })
            .collect();
        let images: HashSet<String> = live().filter_map(|c| c.node.osimage.clone()).collect();
        let images: Vec<String> = images.into_iter().collect();
        Ok(Self {
            nics,
            mac_owners: if macs.is_empty() {
                HashMap::new()
            } else {
                store.nic_owners_by_mac(&macs).await?
            },
            ip_owners: if ips.is_empty() {
                HashMap::new()
            } else {
                store.nic_owners_by_ip(&ips).await?
            },
            networks: if ips.is_empty() {
                Vec::new()
            } else {
                store.list_networks().await?
            },
            osimages: if images.is_empty() {
                HashSet::new()
            } else {
                store
                    .existing_osimages(&images)
                    .await?
                    .into_iter()
                    .collect()
            },
        })
    }

    /// Marks each candidate that conflicts with the inventory or with an earlier candidate.
    pub(super) fn check(&self, candidates: &mut [Candidate]) {
        let mut macs: HashMap<MacAddr, String> = HashMap::new();
        let mut ips: HashMap<Ipv4Addr, String> = HashMap::new();
        for c in candidates.iter_mut().filter(|c| c.error.is_none()) {
            c.error = self.check_one(c, &macs, &ips).err();
            if c.error.is_none() {
                for nic in &c.node.nics {
                    macs.insert(nic.mac, c.node.name.clone());
                    if let Some(ip) = nic.ip {
                        ips.insert(ip, c.node.name.clone());
                    }
                }
            }
        }
    }

    fn check_one(
        &self,
        c: &Candidate,
        macs: &HashMap<MacAddr, String>,
        ips: &HashMap<Ipv4Addr, String>,
    ) -> Result<(), FieldError> {
        let name = &c.node.name;
        let nics = if self.nics {
            c.node.nics.as_slice()
        } else {
            &[]
        };
        for (i, nic) in nics.iter().enumerate() {
            let field = |f: &str| format!("nics[{i}].{f}");
            let mac = nic.mac.to_string();
            if let Some(owner) = self.mac_owners.get(&mac).filter(|o| *o != name) {
                return Err(FieldError::exists(
                    field("mac"),
                    format!("{mac} already belongs to node {owner}"),
                ));
            }
            if let Some(owner) = macs.get(&nic.mac) {
                return Err(FieldError::exists(
                    field("mac"),
                    format!("{mac} is also given to node {owner} in this request"),
                ));
            }
            let Some(ip) = nic.ip else { continue };
            let ip_text = ip.to_string();
            if let Some(owner) = self.ip_owners.get(&ip_text).filter(|o| *o != name) {
                return Err(FieldError::exists(
                    field("ip"),
                    format!("{ip} already belongs to node {owner}"),
                ));
            }
            if let Some(owner) = ips.get(&ip) {
                return Err(FieldError::exists(
                    field("ip"),
                    format!("{ip} is also given to node {owner} in this request"),
                ));
            }
            if let Err(reason) = home_network(&self.networks, ip) {
                return Err(FieldError::invalid(field("ip"), reason));
            }
        }
        if let Some(image) = &c.node.osimage
            && !self.osimages.contains(image)
        {
            return Err(FieldError::not_found(
                "osimage",
                format!("no OS image named {image:?} (see `xcat3 osimage-list`)"),
            ));
        }
        Ok(())
    }
}
