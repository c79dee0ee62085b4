//! Nodes and their NICs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QuerySelect,
};
use xcat3_types::{Control, Nic, Node, home_network, is_secret};

use crate::entity::{deploy, nic, node};
use crate::netboot::Touched;
use crate::networks::networks_in;
use crate::{
    Error, KEYS_PER_QUERY, ROWS_PER_STATEMENT, Result, SealingKeys, Store, corrupt, now_ms,
};

/// A node as stored, with its revision and timestamps (Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub node: Node,
    /// Grows by one with every inventory change; [`Store::save_nodes`] checks it.
    pub revision: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The field a control secret is sealed for (the associated data that binds it there).
fn control_field(key: &str) -> String {
    format!("control.{key}")
}

/// The control parameters as stored: secrets sealed (when a key is configured).
fn stored_control(n: &Node, keys: &SealingKeys) -> String {
    let control: BTreeMap<&str, String> = n
        .control
        .entries()
        .map(|(k, v)| {
            let v = if is_secret(k) {
                keys.seal(&control_field(k), v)
            } else {
                v.to_owned()
            };
            (k, v)
        })
        .collect();
    serde_json::to_string(&control).unwrap_or_else(|_| "{}".into())
}

/// Applies `f` to each secret of a stored control map, in place; `what` names the node.
fn map_secrets(
    stored: &str,
    what: &dyn Fn() -> String,
    mut f: impl FnMut(&str, &mut String) -> std::result::Result<(), crate::sealing::SealError>,
) -> Result<BTreeMap<String, String>> {
    let mut map: BTreeMap<String, String> =
        serde_json::from_str(stored).map_err(|e| corrupt(what(), e))?;
    for (k, v) in map.iter_mut() {
        if is_secret(k) {
            let field = control_field(k);
            f(&field, v).map_err(|e| corrupt(format!("{}: {field}", what()), e))?;
        }
    }
    Ok(map)
}

/// Opens the sealed secrets of a stored control map.
fn open_control(stored: &str, keys: &SealingKeys, what: &dyn Fn() -> String) -> Result<Control> {
    let map = map_secrets(stored, what, |field, v| {
        *v = keys.open(field, v)?;
        Ok(())
    })?;
    Ok(Control::from_stored(map))
}

/// A stored control map with every secret sealed with the current key, or `None` when it
/// already is (`Store::reseal_secrets`).
pub(crate) fn reseal_control(
    stored: &str,
    keys: &SealingKeys,
    what: &dyn Fn() -> String,
) -> Result<Option<String>> {
    let mut changed = false;
    let map = map_secrets(stored, what, |field, v| {
        if let Some(resealed) = keys.reseal(field, v)? {
            *v = resealed;
            changed = true;
        }
        Ok(())
    })?;
    Ok(changed.then(|| serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())))
}

fn to_active(
    n: &Node,
    keys: &SealingKeys,
    revision: i64,
    created_at: i64,
    updated_at: i64,
) -> node::ActiveModel {
    node::ActiveModel {
        name: Set(n.name.clone()),
        groups: Set(n.groups.join(",")),
        mgt: Set(n.mgt.map(|m| m.to_string())),
        netboot: Set(n.netboot.to_string()),
        arch: Set(n.arch.to_string()),
        control: Set(stored_control(n, keys)),
        osimage: Set(n.osimage.clone()),
        provision_state: Set(n.provision_state.to_string()),
        power_state: Set(n.power_state.to_string()),
        labels: Set(serde_json::to_string(&n.labels).unwrap_or_else(|_| "{}".into())),
        revision: Set(revision),
        created_at: Set(created_at),
        updated_at: Set(updated_at),
    }
}

/// A stored row's groups column (`a,b`) as a list.
fn split_groups((name, groups): (String, String)) -> (String, Vec<String>) {
    let groups = groups
        .split(',')
        .filter(|g| !g.is_empty())
        .map(String::from)
        .collect();
    (name, groups)
}

fn nic_rows(n: &Node) -> impl Iterator<Item = nic::ActiveModel> + '_ {
    n.nics
        .iter()
        .enumerate()
        .map(move |(i, nic)| nic::ActiveModel {
            mac: Set(nic.mac.to_string()),
            node: Set(n.name.clone()),
            name: Set(nic.name.clone()),
            ip: Set(nic.ip.map(|ip| ip.to_string())),
            is_primary: Set(nic.primary),
            position: Set(i as i32),
        })
}

/// A `nodes` row as [`crate::json_rows`] reads it: the columns of [`node::Model`], in order.
#[derive(serde::Deserialize)]
struct NodeJson(
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    i64,
    i64,
    i64,
);

impl From<NodeJson> for node::Model {
    fn from(r: NodeJson) -> Self {
        node::Model {
            name: r.0,
            groups: r.1,
            mgt: r.2,
            netboot: r.3,
            arch: r.4,
            control: r.5,
            osimage: r.6,
            provision_state: r.7,
            power_state: r.8,
            labels: r.9,
            revision: r.10,
            created_at: r.11,
            updated_at: r.12,
        }
    }
}

/// A `nics` row as [`crate::json_rows`] reads it: the columns of [`nic::Model`], in order.
#[derive(serde::Deserialize)]
struct NicJson(
    String,
    String,
    String,
    Option<String>,
    #[serde(deserialize_with = "crate::json_flag")] bool,
    i32,
);

impl From<NicJson> for nic::Model {
    fn from(r: NicJson) -> Self {
        nic::Model {
            mac: r.0,
            node: r.1,
            name: r.2,
            ip: r.3,
            is_primary: r.4,
            position: r.5,
        }
    }
}

fn from_row(m: node::Model, mut nics: Vec<nic::Model>, keys: &SealingKeys) -> Result<NodeRecord> {
    let what = || format!("node {}", m.name);
    let mut n = Node::new(m.name.clone());
    n.groups = m
        .groups
        .split(',')
        .filter(|g| !g.is_empty())
        .map(String::from)
        .collect();
    n.mgt = m
        .mgt
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e| corrupt(what(), e))?;
    n.netboot = m.netboot.parse().map_err(|e| corrupt(what(), e))?;
    n.arch = m.arch.parse().map_err(|e| corrupt(what(), e))?;
    n.control = open_control(&m.control, keys, &what)?;
    n.osimage = m.osimage;
    n.provision_state = m.provision_state.parse().map_err(|e| corrupt(what(), e))?;
    n.power_state = m.power_state.parse().map_err(|e| corrupt(what(), e))?;
    n.labels = serde_json::from_str(&m.labels).map_err(|e| corrupt(what(), e))?;
    nics.sort_by_key(|n| n.position);
    n.nics = nics
        .into_iter()
        .map(|row| {
            Ok(Nic {
                name: row.name,
                mac: row.mac.parse().map_err(|e| corrupt(what(), e))?,
                ip: row
                    .ip
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(|e| corrupt(what(), e))?,
                primary: row.is_primary,
            })
        })
        .collect::<Result<_>>()?;
    Ok(NodeRecord {
        node: n,
        revision: m.revision,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

async fn insert_node_rows<C: ConnectionTrait>(
    db: &C,
    nodes: &[Node],
    keys: &SealingKeys,
    now: i64,
) -> Result<()> {
    for chunk in nodes.chunks(ROWS_PER_STATEMENT) {
        node::Entity::insert_many(chunk.iter().map(|n| to_active(n, keys, 1, now, now)))
            .exec_without_returning(db)
            .await?;
    }
    insert_nic_rows(db, nodes).await
}

async fn insert_nic_rows<C: ConnectionTrait>(db: &C, nodes: &[Node]) -> Result<()> {
    let rows: Vec<nic::ActiveModel> = nodes.iter().flat_map(nic_rows).collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        nic::Entity::insert_many(chunk.iter().cloned())
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

async fn delete_nic_rows<C: ConnectionTrait>(db: &C, names: &[String]) -> Result<()> {
    for chunk in names.chunks(KEYS_PER_QUERY) {
        nic::Entity::delete_many()
            .filter(nic::Column::Node.is_in(chunk.iter().cloned()))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// Every static NIC address of `nodes`, with its node.
fn static_addresses<'a>(nodes: impl Iterator<Item = &'a Node>) -> Vec<(Ipv4Addr, &'a str)> {
    nodes
        .flat_map(|n| {
            n.nics
                .iter()
                .filter_map(move |nic| Some((nic.ip?, n.name.as_str())))
        })
        .collect()
}

/// Checks, inside a write's transaction, that each of `addresses` (see [`static_addresses`])
/// still has its home network ([`home_network`]). The api checked before writing, but a network
/// may have been changed or deleted since; network writes check the other way round under the
/// same lock.
async fn recheck_addresses<C: ConnectionTrait>(
    db: &C,
    addresses: &[(Ipv4Addr, &str)],
) -> Result<()> {
    if addresses.is_empty() {
        return Ok(());
    }
    let networks = networks_in(db).await?;
    for (ip, node) in addresses {
        home_network(&networks, *ip)
            .map_err(|reason| Error::Stale(format!("node {node}: {reason}")))?;
    }
    Ok(())
}

impl Store {
    /// Inserts new nodes and their NICs in one transaction: all of them, or none.
    pub async fn create_nodes(&self, nodes: &[Node]) -> Result<()> {
        let txn = self.begin_inventory_write().await?;
        recheck_addresses(&txn, &static_addresses(nodes.iter())).await?;
        insert_node_rows(&txn, nodes, &self.keys, now_ms()).await?;
        let names = nodes.iter().map(|n| n.name.clone()).collect();
        self.commit_inventory(txn, Touched::Nodes(names)).await?;
        Ok(())
    }

    /// Writes back changed nodes in one transaction; each comes with the revision it was read at.
    /// Nodes changed or deleted by someone else since are not written: their names are returned.
    /// With `all_or_nothing`, any such node means nothing is written. Their NICs are replaced when
    /// `nics_changed`. Provision and power state are left as they are in the database: they belong
    /// to the conductors.
    pub async fn save_nodes(
        &self,
        nodes: &[(Node, i64)],
        nics_changed: bool,
        all_or_nothing: bool,
    ) -> Result<Vec<String>> {
        let now = now_ms();
        let txn = self.begin_inventory_write().await?;
        // SQLite: BEGIN IMMEDIATE already holds the write lock. PostgreSQL: lock the rows.
        let lock = txn.get_database_backend() == DbBackend::Postgres;
        let mut current: HashMap<String, i64> = HashMap::with_capacity(nodes.len());
        for chunk in nodes.chunks(KEYS_PER_QUERY) {
            let mut query = node::Entity::find()
                .select_only()
                .column(node::Column::Name)
                .column(node::Column::Revision)
                .filter(node::Column::Name.is_in(chunk.iter().map(|(n, _)| n.name.clone())));
            if lock {
                query = query.lock_exclusive();
            }
            let rows: Vec<(String, i64)> = query.into_tuple().all(&txn).await?;
            current.extend(rows);
        }
        let is_fresh = |(n, rev): &&(Node, i64)| current.get(&n.name) == Some(rev);
        let fresh: Vec<&(Node, i64)> = nodes.iter().filter(is_fresh).collect();
        let conflicts: Vec<String> = nodes
            .iter()
            .filter(|entry| !is_fresh(entry))
            .map(|(n, _)| n.name.clone())
            .collect();
        if fresh.is_empty() || all_or_nothing && !conflicts.is_empty() {
            txn.rollback().await?;
            return Ok(conflicts);
        }
        let update_cols = [
            node::Column::Groups,
            node::Column::Mgt,
            node::Column::Netboot,
            node::Column::Arch,
            node::Column::Control,
            node::Column::Osimage,
            node::Column::Labels,
            node::Column::Revision,
            node::Column::UpdatedAt,
        ];
        for chunk in fresh.chunks(ROWS_PER_STATEMENT) {
            node::Entity::insert_many(
                chunk
                    .iter()
                    .map(|(n, rev)| to_active(n, &self.keys, rev + 1, now, now)),
            )
            .on_conflict(
                OnConflict::column(node::Column::Name)
                    .update_columns(update_cols)
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        }
        if nics_changed {
            let addresses = static_addresses(fresh.iter().map(|(n, _)| n));
            recheck_addresses(&txn, &addresses).await?;
            let names: Vec<String> = fresh.iter().map(|(n, _)| n.name.clone()).collect();
            delete_nic_rows(&txn, &names).await?;
            let written: Vec<Node> = fresh.iter().map(|(n, _)| n.clone()).collect();
            insert_nic_rows(&txn, &written).await?;
        }
        let names = fresh.iter().map(|(n, _)| n.name.clone()).collect();
        self.commit_inventory(txn, Touched::Nodes(names)).await?;
        Ok(conflicts)
    }

    /// Deletes nodes and their NICs in one transaction; returns how many nodes were deleted.
    pub async fn delete_nodes(&self, names: &[String]) -> Result<u64> {
        let txn = self.begin_inventory_write().await?;
        delete_nic_rows(&txn, names).await?;
        Store::delete_events(&txn, names).await?;
        for chunk in names.chunks(KEYS_PER_QUERY) {
            deploy::Entity::delete_many()
                .filter(deploy::Column::Node.is_in(chunk.iter().cloned()))
                .exec(&txn)
                .await?;
        }
        let mut deleted = 0;
        for chunk in names.chunks(KEYS_PER_QUERY) {
            deleted += node::Entity::delete_many()
                .filter(node::Column::Name.is_in(chunk.iter().cloned()))
                .exec(&txn)
                .await?
                .rows_affected;
        }
        self.commit_inventory(txn, Touched::Deleted(names.to_vec()))
            .await?;
        Ok(deleted)
    }

    /// Every node's name.
    pub async fn node_names(&self) -> Result<Vec<String>> {
        Ok(node::Entity::find()
            .select_only()
            .column(node::Column::Name)
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// How many nodes are in each (provision state, power state): the fleet at a glance.
    pub async fn node_state_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = self
            .db
            .query_all_raw(sea_orm::Statement::from_string(
                self.db.get_database_backend(),
                "SELECT provision_state, power_state, COUNT(*) FROM nodes \
                 GROUP BY provision_state, power_state",
            ))
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get_by_index(0)?,
                    r.try_get_by_index(1)?,
                    r.try_get_by_index(2)?,
                ))
            })
            .collect()
    }

    /// Every node name with its groups: what a noderange is resolved against.
    pub async fn node_names_and_groups(&self) -> Result<Vec<(String, Vec<String>)>> {
        let rows: Vec<(String, String)> =
            crate::json_rows(&self.db, "name, groups", "nodes", Vec::new(), "nodes").await?;
        Ok(rows.into_iter().map(split_groups).collect())
    }

    /// The groups of the named nodes (those that exist).
    pub async fn node_groups(&self, names: &[String]) -> Result<Vec<(String, Vec<String>)>> {
        let mut out = Vec::with_capacity(names.len());
        for chunk in names.chunks(KEYS_PER_QUERY) {
            let rows: Vec<(String, String)> = self
                .pairs_in("name, groups", "nodes", "name", chunk)
                .await?;
            out.extend(rows.into_iter().map(split_groups));
        }
        Ok(out)
    }

    /// `columns` (two text columns) of the rows of `table` whose `key` is one of `keys`, read
    /// as aggregated JSON ([`crate::json_rows`]).
    async fn pairs_in<T: serde::de::DeserializeOwned>(
        &self,
        columns: &str,
        table: &str,
        key: &str,
        keys: &[String],
    ) -> Result<Vec<T>> {
        let marks = crate::bind_marks(self.db.get_database_backend(), keys.len());
        crate::json_rows(
            &self.db,
            columns,
            &format!("{table} WHERE {key} IN ({marks})"),
            keys.iter().map(|k| k.clone().into()).collect(),
            table,
        )
        .await
    }

    /// The nodes named, in the order given; names not in the inventory are left out. Read as
    /// aggregated JSON ([`crate::json_rows`]): two rows per [`KEYS_PER_QUERY`] names.
    pub async fn get_nodes(&self, names: &[String]) -> Result<Vec<NodeRecord>> {
        let backend = self.db.get_database_backend();
        let mut rows = HashMap::with_capacity(names.len());
        let mut nics: HashMap<String, Vec<nic::Model>> = HashMap::new();
        for chunk in names.chunks(KEYS_PER_QUERY) {
            let marks = crate::bind_marks(backend, chunk.len());
            let values = || chunk.iter().map(|n| n.clone().into()).collect();
            let nodes: Vec<NodeJson> = crate::json_rows(
                &self.db,
                "name, groups, mgt, netboot, arch, control, osimage, provision_state, \
                 power_state, labels, revision, created_at, updated_at",
                &format!("nodes WHERE name IN ({marks})"),
                values(),
                "nodes",
            )
            .await?;
            for m in nodes.into_iter().map(node::Model::from) {
                rows.insert(m.name.clone(), m);
            }
            let found: Vec<NicJson> = crate::json_rows(
                &self.db,
                "mac, node, name, ip, is_primary, position",
                &format!("nics WHERE node IN ({marks})"),
                values(),
                "NICs",
            )
            .await?;
            for n in found.into_iter().map(nic::Model::from) {
                nics.entry(n.node.clone()).or_default().push(n);
            }
        }
        names
            .iter()
            .filter_map(|name| rows.remove(name))
            .map(|m| {
                let node_nics = nics.remove(&m.name).unwrap_or_default();
                from_row(m, node_nics, &self.keys)
            })
            .collect()
    }

    /// Of `names`, those that are nodes already.
    pub async fn existing_node_names(&self, names: &[String]) -> Result<HashSet<String>> {
        let mut found = HashSet::new();
        for chunk in names.chunks(KEYS_PER_QUERY) {
            let rows: Vec<(String,)> = self.pairs_in("name", "nodes", "name", chunk).await?;
            found.extend(rows.into_iter().map(|(name,)| name));
        }
        Ok(found)
    }

    /// The owners (node names) of the NICs with these MAC addresses (lowercase `aa:bb:...`).
    pub async fn nic_owners_by_mac(&self, macs: &[String]) -> Result<HashMap<String, String>> {
        let mut owners = HashMap::new();
        for chunk in macs.chunks(KEYS_PER_QUERY) {
            let rows: Vec<(String, String)> =
                self.pairs_in("mac, node", "nics", "mac", chunk).await?;
            owners.extend(rows);
        }
        Ok(owners)
    }

    /// The owners (node names) of these IP addresses.
    pub async fn nic_owners_by_ip(&self, ips: &[String]) -> Result<HashMap<String, String>> {
        let mut owners = HashMap::new();
        for chunk in ips.chunks(KEYS_PER_QUERY) {
            let rows: Vec<(String, String)> =
                self.pairs_in("ip, node", "nics", "ip", chunk).await?;
            owners.extend(rows);
        }
        Ok(owners)
    }
}
