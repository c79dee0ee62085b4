//! The boot feed: what the network agents answer, kept as a table in memory and sent to them as a
//! snapshot followed by changes (`xcat3.internal.v1.NetbootConfig.Watch`).
//!
//! The table is rebuilt from the store when the inventory revision moves: at once after a write
//! made by this process ([`Store::subscribe_writes`]), and by polling the revision (one cheap read)
//! for writes made by other api processes. Each rebuild is compared with the previous table and only
//! the differences are broadcast. The feed speaks the internal protocol's messages because it exists
//! only to feed that stream.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use xcat3_proto::convert::network_to_pb;
use xcat3_proto::internal::{self, boot_host::Action};
use xcat3_store::{BootHostRecord, BootTable, InventoryWrite, OsImage, Store};
use xcat3_types::{ProvisionState, installer_boot};

/// Changes kept for watchers that fall behind; a watcher further behind gets a new snapshot.
const BACKLOG: usize = 64;

/// The boot table at one revision.
#[derive(Debug, Default, Clone)]
pub struct Table {
    pub revision: u64,
    pub networks: BTreeMap<String, xcat3_proto::pb::Network>,
    pub hosts: HashMap<String, internal::BootHost>,
    /// The MACs of each node's hosts, so that a patch finds a node's hosts without scanning.
    macs_of: HashMap<String, Vec<String>>,
}

/// Tables are equal when an agent sees the same (the index is not compared).
impl PartialEq for Table {
    fn eq(&self, other: &Self) -> bool {
        (self.revision, &self.networks, &self.hosts)
            == (other.revision, &other.networks, &other.hosts)
    }
}

impl Table {
    /// Builds the table from the store's rows; `osimages` gives the installers of deploying nodes,
    /// loaded from the image service at `image_url`.
    pub fn build(rows: BootTable, osimages: &[OsImage], image_url: Option<&str>) -> Table {
        let images: HashMap<&str, &OsImage> =
            osimages.iter().map(|i| (i.name.as_str(), i)).collect();
        let mut macs_of: HashMap<String, Vec<String>> = HashMap::new();
        for h in &rows.hosts {
            macs_of
                .entry(h.node.clone())
                .or_default()
                .push(h.mac.clone());
        }
        Table {
            macs_of,
            revision: u64::try_from(rows.revision).unwrap_or(0),
            networks: rows
                .networks
                .iter()
                .map(|n| (n.name.clone(), network_to_pb(n)))
                .collect(),
            hosts: rows
                .hosts
                .into_iter()
                .map(|h| (h.mac.clone(), boot_host(h, &images, image_url)))
                .collect(),
        }
    }

    /// The whole table as one message.
    pub fn snapshot(&self) -> internal::BootUpdate {
        let mut hosts: Vec<_> = self.hosts.values().cloned().collect();
        hosts.sort_by(|a, b| a.mac.cmp(&b.mac));
        internal::BootUpdate {
            revision: self.revision,
            snapshot: true,
            networks: self.networks.values().cloned().collect(),
            removed_networks: Vec::new(),
            hosts,
            removed_macs: Vec::new(),
        }
    }

    /// What changed from `self` to `new`, or none if nothing an agent sees did.
    pub fn diff(&self, new: &Table) -> Option<internal::BootUpdate> {
        let mut update = internal::BootUpdate {
            revision: new.revision,
            ..Default::default()
        };
        for (name, n) in &new.networks {
            if self.networks.get(name) != Some(n) {
                update.networks.push(n.clone());
            }
        }
        for name in self.networks.keys() {
            if !new.networks.contains_key(name) {
                update.removed_networks.push(name.clone());
            }
        }
        for (mac, h) in &new.hosts {
            if self.hosts.get(mac) != Some(h) {
                update.hosts.push(h.clone());
            }
        }
        for mac in self.hosts.keys() {
            if !new.hosts.contains_key(mac) {
                update.removed_macs.push(mac.clone());
            }
        }
        let empty = update.networks.is_empty()
            && update.removed_networks.is_empty()
            && update.hosts.is_empty()
            && update.removed_macs.is_empty();
        (!empty).then_some(update)
    }
}

/// What a run of this process's writes changed, read back from the store: the table at `revision`
/// is the one at `base` with these nodes' hosts replaced (and the networks, if they changed).
#[derive(Debug, Clone, Default)]
pub struct Patch {
    pub base: u64,
    pub revision: u64,
    /// Every network, when they changed.
    pub networks: Option<BTreeMap<String, xcat3_proto::pb::Network>>,
    /// The nodes created, changed or deleted; `hosts` are the NICs of those that exist now.
    pub nodes: HashSet<String>,
    pub hosts: Vec<internal::BootHost>,
}

impl Table {
    /// Applies `patch` in place and returns what changed, as [`Table::diff`] of the tables
    /// before and after would, at the cost of the nodes touched rather than of the table.
    /// `None` with the table untouched if the table is not at the patch's base revision.
    pub fn patch(&mut self, patch: Patch) -> Option<Option<internal::BootUpdate>> {
        if self.revision != patch.base {
            return None;
        }
        let mut update = internal::BootUpdate {
            revision: patch.revision,
            ..Default::default()
        };
        self.revision = patch.revision;
        if let Some(networks) = patch.networks {
            let new = Table {
                networks,
                ..Default::default()
            };
            let old = Table {
                networks: std::mem::take(&mut self.networks),
                ..Default::default()
            };
            if let Some(d) = old.diff(&new) {
                update.networks = d.networks;
                update.removed_networks = d.removed_networks;
            }
            self.networks = new.networks;
        }
        if !patch.nodes.is_empty() {
            let mut old: HashMap<String, internal::BootHost> = HashMap::new();
            for node in &patch.nodes {
                for mac in self.macs_of.remove(node).unwrap_or_default() {
                    if let Some(h) = self.hosts.remove(&mac) {
                        old.insert(mac, h);
                    }
                }
            }
            for h in patch.hosts {
                if old.remove(&h.mac).as_ref() != Some(&h) {
                    update.hosts.push(h.clone());
                }
                self.macs_of
                    .entry(h.node.clone())
                    .or_default()
                    .push(h.mac.clone());
                self.hosts.insert(h.mac.clone(), h);
            }
            update.removed_macs = old.into_keys().collect();
        }
        let empty = update.networks.is_empty()
            && update.removed_networks.is_empty()
            && update.hosts.is_empty()
            && update.removed_macs.is_empty();
        Some((!empty).then_some(update))
    }
}

/// What a NIC's iPXE script does: install while a deploy waits for the node, local disk otherwise.
fn boot_host(
    h: BootHostRecord,
    images: &HashMap<&str, &OsImage>,
    image_url: Option<&str>,
) -> internal::BootHost {
    let installing = matches!(
        h.provision_state,
        ProvisionState::Deploying | ProvisionState::WaitCallback
    );
    let install = match (&h.osimage, &h.deploy_token, image_url) {
        (Some(name), Some(token), Some(base)) if installing => images
            .get(name.as_str())
            .and_then(|image| match installer_boot(image, base, token, &h.node) {
                Ok(boot) => Some(boot),
                Err(e) => {
                    tracing::warn!(node = %h.node, osimage = %name, error = %e, "cannot boot this image's installer");
                    None
                }
            }),
        _ => None,
    };
    let action = match install {
        Some((kernel, initrds, cmdline)) => Action::Install(internal::InstallBoot {
            osimage: h.osimage.clone().unwrap_or_default(),
            kernel,
            initrds,
            cmdline,
        }),
        None => Action::Local(internal::LocalBoot {}),
    };
    internal::BootHost {
        mac: h.mac,
        ip: h.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        node: h.node,
        nic: h.nic,
        primary: h.primary,
        arch: h.arch,
        netboot: h.netboot,
        action: Some(action),
    }
}

/// The current table and the stream of its changes. Cheap to clone.
#[derive(Clone)]
pub struct BootFeed {
    current: watch::Sender<Arc<Table>>,
    changes: broadcast::Sender<Arc<internal::BootUpdate>>,
    image_url: Option<Arc<str>>,
}

impl BootFeed {
    /// `image_url`: where nodes load installers from (none: no node is sent to an installer).
    pub fn new(image_url: Option<String>) -> Self {
        BootFeed {
            current: watch::Sender::new(Arc::new(Table::default())),
            changes: broadcast::channel(BACKLOG).0,
            image_url: image_url.map(Arc::from),
        }
    }

    /// The current table as a snapshot message, and a receiver of every change after it. The
    /// table itself is not kept: the feed patches it in place while nobody else holds it.
    pub fn subscribe(
        &self,
    ) -> (
        internal::BootUpdate,
        broadcast::Receiver<Arc<internal::BootUpdate>>,
    ) {
        // Subscribe first: a change applied between the two steps arrives with a revision the
        // watcher already has, and is skipped there.
        let rx = self.changes.subscribe();
        let table = self.current.borrow().clone();
        (table.snapshot(), rx)
    }

    /// Waits until the table has been loaded at least once.
    pub async fn ready(&self) {
        let mut rx = self.current.subscribe();
        let _ = rx.wait_for(|t| t.revision > 0).await;
    }

    /// Rebuilds the whole table if the inventory revision moved (a write by another process).
    pub async fn refresh(&self, store: &Store) -> xcat3_store::Result<()> {
        let known = self.current.borrow().revision;
        let revision = u64::try_from(store.inventory_revision().await?).unwrap_or(0);
        if revision == known {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let rows = store.boot_table().await?;
        let images = store.list_osimages().await?;
        let new = Table::build(rows, &images, self.image_url.as_deref());
        tracing::debug!(
            hosts = new.hosts.len(),
            ms = started.elapsed().as_millis() as u64,
            "boot table rebuilt"
        );
        self.publish(new);
        Ok(())
    }

    /// Applies writes made by this process, in revision order: re-reads only the nodes they
    /// created or changed (and the networks if they changed) if they follow the table's revision
    /// without a gap; otherwise rebuilds.
    pub async fn patch(
        &self,
        store: &Store,
        writes: &[Arc<InventoryWrite>],
    ) -> xcat3_store::Result<()> {
        let base = self.current.borrow().revision;
        let revision_of = |w: &InventoryWrite| u64::try_from(w.revision).unwrap_or(0);
        // Older ones are in the table already (a rebuild read them).
        let writes: Vec<&InventoryWrite> = writes
            .iter()
            .map(AsRef::as_ref)
            .filter(|w| revision_of(w) > base)
            .collect();
        let Some(last) = writes.last() else {
            return Ok(());
        };
        let consecutive = writes
            .iter()
            .zip(base + 1..)
            .all(|(w, want)| revision_of(w) == want);
        if !consecutive {
            return self.refresh(store).await;
        }
        let started = std::time::Instant::now();
        // What they touched, in order: a node deleted and then created again is read.
        let mut changed: HashSet<&str> = HashSet::new();
        let mut nodes: HashSet<String> = HashSet::new();
        let mut networks = false;
        for w in &writes {
            for name in &w.deleted {
                changed.remove(name.as_str());
                nodes.insert(name.clone());
            }
            for name in &w.nodes {
                changed.insert(name);
                nodes.insert(name.clone());
            }
            networks |= w.networks;
        }
        let mut patch = Patch {
            base,
            revision: revision_of(last),
            nodes,
            ..Default::default()
        };
        if networks {
            patch.networks = Some(
                store
                    .list_networks()
                    .await?
                    .iter()
                    .map(|n| (n.name.clone(), network_to_pb(n)))
                    .collect(),
            );
        }
        if !changed.is_empty() {
            let changed: Vec<String> = changed.into_iter().map(String::from).collect();
            let rows = store.boot_hosts_of(&changed).await?;
            let images = store.list_osimages().await?;
            let images: HashMap<&str, &OsImage> =
                images.iter().map(|i| (i.name.as_str(), i)).collect();
            patch.hosts = rows
                .into_iter()
                .map(|h| boot_host(h, &images, self.image_url.as_deref()))
                .collect();
        }
        let (writes, nodes) = (writes.len(), patch.nodes.len());
        let mut applied = None;
        self.current.send_modify(|table| {
            // Cloned only if a watcher is making its snapshot of it right now.
            applied = Arc::make_mut(table).patch(patch);
        });
        let Some(update) = applied else {
            // A rebuild moved the table meanwhile.
            return self.refresh(store).await;
        };
        tracing::debug!(
            writes,
            nodes,
            ms = started.elapsed().as_millis() as u64,
            "boot table patched"
        );
        self.broadcast(update);
        Ok(())
    }

    /// Brings the table up to date after a while without local writes: takes this process's
    /// writes that are on their way first, then rebuilds if another process wrote too.
    async fn catch_up(
        &self,
        store: &Store,
        writes: &mut broadcast::Receiver<Arc<InventoryWrite>>,
    ) -> xcat3_store::Result<()> {
        let revision = u64::try_from(store.inventory_revision().await?).unwrap_or(0);
        // Local writes still on their way arrive as messages: not a reason to read everything.
        let local_in_flight = store.inventory_writes_in_flight() > 0;
        match pending(writes, Vec::new()) {
            Some(batch) => self.patch(store, &batch).await?,
            None => return self.refresh(store).await,
        }
        if self.current.borrow().revision < revision && !local_in_flight {
            self.refresh(store).await?;
        }
        Ok(())
    }

    /// Makes `new` current and broadcasts what changed.
    fn publish(&self, new: Table) {
        let old = self.current.borrow().clone();
        let update = old.diff(&new);
        self.current.send_replace(Arc::new(new));
        self.broadcast(update);
    }

    fn broadcast(&self, update: Option<internal::BootUpdate>) {
        if let Some(update) = update {
            tracing::debug!(
                revision = update.revision,
                hosts = update.hosts.len(),
                removed = update.removed_macs.len(),
                networks = update.networks.len(),
                "boot table changed"
            );
            let _ = self.changes.send(Arc::new(update));
        }
    }

    /// Keeps the table current until `shutdown`: after local writes (all those waiting at once,
    /// so a bulk operation's many transactions cost one patch per pass, not one each), and
    /// every `poll`.
    pub async fn run(self, store: Store, poll: Duration, shutdown: CancellationToken) {
        let mut writes = store.subscribe_writes();
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let result = tokio::select! {
                w = writes.recv() => match w.ok().and_then(|first| pending(&mut writes, vec![first])) {
                    Some(batch) => self.patch(&store, &batch).await,
                    // Missed some writes: read everything.
                    None => self.refresh(&store).await,
                },
                _ = tick.tick() => self.catch_up(&store, &mut writes).await,
                _ = shutdown.cancelled() => return,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "reading the boot table failed; agents keep the last one");
            }
        }
    }
}

/// `batch` and every write waiting in `writes`, in revision order; `None` if some were missed.
fn pending(
    writes: &mut broadcast::Receiver<Arc<InventoryWrite>>,
    mut batch: Vec<Arc<InventoryWrite>>,
) -> Option<Vec<Arc<InventoryWrite>>> {
    loop {
        match writes.try_recv() {
            Ok(w) => batch.push(w),
            Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => {
                return Some(batch);
            }
            Err(broadcast::error::TryRecvError::Lagged(_)) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xcat3_types::Network;

    fn host(mac: &str, node: &str, state: ProvisionState, token: Option<&str>) -> BootHostRecord {
        BootHostRecord {
            mac: mac.into(),
            ip: Some("10.0.0.5".parse().unwrap()),
            node: node.into(),
            nic: "eth0".into(),
            primary: true,
            arch: "x86_64".into(),
            netboot: "ipxe".into(),
            osimage: Some("rocky9".into()),
            provision_state: state,
            deploy_token: token.map(String::from),
        }
    }

    fn image() -> OsImage {
        OsImage {
            name: "rocky9".into(),
            distro: "rocky".into(),
            version: "9.4".into(),
            arch: "x86_64".into(),
            install_method: "kickstart".into(),
            kernel: "trees/abc/images/pxeboot/vmlinuz".into(),
            initrd: "trees/abc/images/pxeboot/initrd.img".into(),
            repo_root: "trees/abc".into(),
            created_at: 0,
            source: "rocky.iso".into(),
            sha256: String::new(),
        }
    }

    fn network(name: &str, subnet: &str) -> Network {
        Network::new(
            name,
            subnet.parse().unwrap(),
            "255.255.0.0".parse().unwrap(),
        )
    }

    fn table(revision: i64, networks: Vec<Network>, hosts: Vec<BootHostRecord>) -> Table {
        let rows = BootTable {
            revision,
            networks,
            hosts,
        };
        Table::build(rows, &[image()], Some("http://10.0.0.1:8080"))
    }

    /// `old` with `update` applied, as an agent does.
    fn apply(old: &Table, update: &internal::BootUpdate) -> Table {
        let mut t = old.clone();
        t.revision = update.revision;
        for name in &update.removed_networks {
            t.networks.remove(name);
        }
        for n in &update.networks {
            t.networks.insert(n.name.clone(), n.clone());
        }
        for mac in &update.removed_macs {
            t.hosts.remove(mac);
        }
        for h in &update.hosts {
            t.hosts.insert(h.mac.clone(), h.clone());
        }
        t
    }

    #[test]
    fn only_deploying_nodes_with_a_token_boot_the_installer() {
        let t = table(
            1,
            vec![],
            vec![
                host(
                    "52:54:00:00:00:01",
                    "a",
                    ProvisionState::Deploying,
                    Some("tok1"),
                ),
                host(
                    "52:54:00:00:00:02",
                    "b",
                    ProvisionState::Available,
                    Some("tok2"),
                ),
                host("52:54:00:00:00:03", "c", ProvisionState::WaitCallback, None),
            ],
        );
        let action = |mac: &str| t.hosts[mac].action.clone().unwrap();
        let Action::Install(install) = action("52:54:00:00:00:01") else {
            panic!("a deploying node boots its installer");
        };
        assert_eq!(
            install.kernel,
            "http://10.0.0.1:8080/trees/abc/images/pxeboot/vmlinuz"
        );
        assert!(install.cmdline.contains("tok1"), "{}", install.cmdline);
        assert!(matches!(action("52:54:00:00:00:02"), Action::Local(_)));
        assert!(matches!(action("52:54:00:00:00:03"), Action::Local(_)));
        // Without an image service nobody is sent to an installer.
        let rows = BootTable {
            revision: 1,
            networks: vec![],
            hosts: vec![host(
                "52:54:00:00:00:01",
                "a",
                ProvisionState::Deploying,
                Some("t"),
            )],
        };
        let t = Table::build(rows, &[image()], None);
        assert!(matches!(
            t.hosts["52:54:00:00:00:01"].action,
            Some(Action::Local(_))
        ));
    }

    #[test]
    fn the_diff_carries_exactly_what_changed() {
        let old = table(
            4,
            vec![network("a", "10.0.0.0"), network("b", "10.1.0.0")],
            vec![
                host("52:54:00:00:00:01", "n1", ProvisionState::Available, None),
                host("52:54:00:00:00:02", "n2", ProvisionState::Available, None),
                host("52:54:00:00:00:03", "n3", ProvisionState::Available, None),
            ],
        );
        assert_eq!(old.diff(&old), None, "no change, no update");
        let mut b = network("b", "10.1.0.0");
        b.mtu = Some(9000);
        let new = table(
            5,
            vec![b, network("c", "10.2.0.0")],
            vec![
                host("52:54:00:00:00:01", "n1", ProvisionState::Available, None),
                host(
                    "52:54:00:00:00:02",
                    "n2",
                    ProvisionState::Deploying,
                    Some("t"),
                ),
                host("52:54:00:00:00:04", "n4", ProvisionState::Available, None),
            ],
        );
        let update = old.diff(&new).unwrap();
        assert_eq!(update.revision, 5);
        assert!(!update.snapshot);
        let mut names: Vec<&str> = update.networks.iter().map(|n| n.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["b", "c"]);
        assert_eq!(update.removed_networks, ["a"]);
        let mut macs: Vec<&str> = update.hosts.iter().map(|h| h.mac.as_str()).collect();
        macs.sort_unstable();
        assert_eq!(macs, ["52:54:00:00:00:02", "52:54:00:00:00:04"]);
        assert_eq!(update.removed_macs, ["52:54:00:00:00:03"]);
        // An agent that applies it holds the new table, and a snapshot says the same.
        assert_eq!(apply(&old, &update), new);
        assert_eq!(apply(&Table::default(), &new.snapshot()), new);
        // A new revision that changes nothing an agent sees sends nothing.
        let mut same = new.clone();
        same.revision = 6;
        assert_eq!(new.diff(&same), None);
    }

    #[test]
    fn a_patch_changes_what_a_rebuild_would_and_reports_the_same_update() {
        let old = table(
            4,
            vec![network("a", "10.0.0.0"), network("b", "10.1.0.0")],
            vec![
                host("52:54:00:00:00:01", "n1", ProvisionState::Available, None),
                host("52:54:00:00:00:02", "n2", ProvisionState::Available, None),
                host("52:54:00:00:00:03", "n3", ProvisionState::Available, None),
                host("52:54:00:00:00:13", "n3", ProvisionState::Available, None),
            ],
        );
        // n2 starts deploying, n3 is deleted, n4 is created, n1 is rewritten unchanged, and a
        // network is replaced by another.
        let new = table(
            7,
            vec![network("b", "10.1.0.0"), network("c", "10.2.0.0")],
            vec![
                host("52:54:00:00:00:01", "n1", ProvisionState::Available, None),
                host(
                    "52:54:00:00:00:02",
                    "n2",
                    ProvisionState::Deploying,
                    Some("t"),
                ),
                host("52:54:00:00:00:04", "n4", ProvisionState::Available, None),
            ],
        );
        let touched = ["n1", "n2", "n3", "n4"];
        let patch = Patch {
            base: 4,
            revision: 7,
            networks: Some(new.networks.clone()),
            nodes: touched.iter().map(|n| (*n).to_owned()).collect(),
            hosts: new
                .hosts
                .values()
                .filter(|h| touched.contains(&h.node.as_str()))
                .cloned()
                .collect(),
        };
        let sorted = |mut u: internal::BootUpdate| {
            u.hosts.sort_by(|a, b| a.mac.cmp(&b.mac));
            u.removed_macs.sort();
            u.networks.sort_by(|a, b| a.name.cmp(&b.name));
            u
        };
        let mut patched = old.clone();
        let update = patched.patch(patch.clone()).unwrap().unwrap();
        assert_eq!(patched, new);
        assert_eq!(sorted(update), sorted(old.diff(&new).unwrap()));
        // At another revision than its base, a patch changes nothing.
        let mut moved = old.clone();
        moved.revision = 5;
        assert_eq!(moved.patch(patch.clone()), None);
        assert_eq!(moved.hosts, old.hosts);
        // Applied again (nothing left to change), it sends nothing.
        let again = Patch {
            base: 7,
            revision: 8,
            ..patch
        };
        assert_eq!(patched.patch(again), Some(None));
        assert_eq!(patched.revision, 8);
    }
}
